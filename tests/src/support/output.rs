//! The output of a node process under test (`kylin-sim`, the Curator node):
//! stderr lines kept with the time the test read them, and the `READY
//! <port>` line on stdout that says the node is up. `KGW_TEST_LOG` echoes
//! stderr.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One stderr line and when the test read it.
pub type LogLine = (Instant, String);

/// Stderr lines of one process, read by a background thread.
#[derive(Clone, Default)]
pub struct NodeLog {
    lines: Arc<Mutex<Vec<LogLine>>>,
}

impl NodeLog {
    /// Takes the child's piped stdout and stderr, and waits up to `timeout`
    /// for `READY <port>`. Panics with the node's stderr if it never comes.
    pub fn capture(child: &mut Child, name: &str, timeout: Duration) -> (NodeLog, Instant, u16) {
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = NodeLog::default();
        let writer = log.lines.clone();
        let echo = std::env::var_os("KGW_TEST_LOG").is_some();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("{line}");
                }
                writer.lock().unwrap().push((Instant::now(), line));
            }
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("READY ") {
                    let _ = ready_tx.send((Instant::now(), port.trim().parse::<u16>()));
                }
            }
        });
        match ready_rx.recv_timeout(timeout) {
            Ok((at, Ok(port))) => (log, at, port),
            other => panic!(
                "{name} did not print READY ({other:?}); stderr:\n{}",
                log.text()
            ),
        }
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<LogLine> {
        self.lines.lock().unwrap().clone()
    }

    /// Every line so far, joined.
    pub fn text(&self) -> String {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .map(|l| l.1.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The first line read at or after `since` that contains `needle`.
    pub fn logged_since(&self, since: Instant, needle: &str) -> Option<LogLine> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|(at, line)| *at >= since && line.contains(needle))
            .cloned()
    }

    /// Like [`Self::logged_since`], waiting up to `timeout` for the line: the
    /// reader thread may not have seen it yet when another process already
    /// reacted to what it reports.
    pub fn wait_logged_since(&self, since: Instant, needle: &str, timeout: Duration) -> LogLine {
        super::eventually(&format!("a log line {needle:?}"), timeout, || {
            self.logged_since(since, needle)
        })
    }

    /// Whether the node's last `LEADER` / `NOT LEADER` line says it leads.
    pub fn says_leader(&self) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|(_, line)| {
                if line.contains(": NOT LEADER") {
                    Some(false)
                } else if line.contains(": LEADER") {
                    Some(true)
                } else {
                    None
                }
            })
            .unwrap_or(false)
    }
}
