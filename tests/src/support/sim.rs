//! Simulated Kylin nodes as processes: `kylin-sim` spawned under a
//! [`ChildGuard`], ready once it prints `READY <port>` (HTTP up and the
//! instance registered). Its stderr lines are kept with arrival times so
//! tests can see leadership changes (`KGW_TEST_LOG` also echoes them).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::output::{LogLine, NodeLog};
use super::process::{ChildGuard, target_bin};

/// How to run one simulated node.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub name: String,
    /// all, job, query, query,job.
    pub mode: String,
    /// kap-2.4, kylin-3.0, kylin-3.1, kylin-5.
    pub layout: String,
    pub base_path: String,
    pub host: String,
    pub port: u16,
    pub session_timeout_ms: u64,
    pub curator5: bool,
    pub disabled: bool,
    pub description: Option<String>,
    pub id: Option<String>,
    /// How long the node keeps answering HTTP after deregistering on
    /// SIGTERM (`--drain-ms`; the simulator's default when `None`).
    pub drain_ms: Option<u64>,
    /// Certificate and key files: the node also serves HTTPS and
    /// registers `sslPort` (`--tls-cert`, `--tls-key`).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl SimConfig {
    /// A Kylin 3.1 node in `mode` under the default base path.
    pub fn new(name: &str, mode: &str) -> SimConfig {
        SimConfig {
            name: name.to_string(),
            mode: mode.to_string(),
            layout: "kylin-3.1".to_string(),
            base_path: "/kylin/kylin_metadata".to_string(),
            host: "127.0.0.1".to_string(),
            port: 0,
            session_timeout_ms: 4_000,
            curator5: false,
            disabled: false,
            description: None,
            id: None,
            drain_ms: None,
            tls: None,
        }
    }

    pub fn layout(mut self, layout: &str) -> SimConfig {
        self.layout = layout.to_string();
        self
    }

    pub fn base_path(mut self, base_path: &str) -> SimConfig {
        self.base_path = base_path.to_string();
        self
    }

    pub fn curator5(mut self) -> SimConfig {
        self.curator5 = true;
        self
    }

    pub fn description(mut self, description: &str) -> SimConfig {
        self.description = Some(description.to_string());
        self
    }

    /// The Curator instance id (the gateway orders its view by id).
    pub fn id(mut self, id: &str) -> SimConfig {
        self.id = Some(id.to_string());
        self
    }

    pub fn session_timeout_ms(mut self, ms: u64) -> SimConfig {
        self.session_timeout_ms = ms;
        self
    }

    pub fn drain_ms(mut self, ms: u64) -> SimConfig {
        self.drain_ms = Some(ms);
        self
    }

    /// Serve HTTPS too, with this certificate and key, and register it.
    pub fn tls(mut self, cert: &std::path::Path, key: &std::path::Path) -> SimConfig {
        self.tls = Some((cert.to_path_buf(), key.to_path_buf()));
        self
    }
}

/// A running simulated node.
pub struct SimNode {
    pub name: String,
    pub port: u16,
    /// When `READY` was read.
    pub ready_at: Instant,
    process: ChildGuard,
    log: NodeLog,
}

impl SimNode {
    /// Spawns `kylin-sim` against `zk` and waits (up to 30 s) for `READY`.
    pub fn start(zk: &str, config: &SimConfig) -> SimNode {
        let mut command = Command::new(target_bin("kylin-sim"));
        command
            .arg("--zk")
            .arg(zk)
            .arg("--name")
            .arg(&config.name)
            .arg("--mode")
            .arg(&config.mode)
            .arg("--layout")
            .arg(&config.layout)
            .arg("--base-path")
            .arg(&config.base_path)
            .arg("--host")
            .arg(&config.host)
            .arg("--port")
            .arg(config.port.to_string())
            .arg("--session-timeout-ms")
            .arg(config.session_timeout_ms.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if config.curator5 {
            command.arg("--curator5");
        }
        if config.disabled {
            command.arg("--disabled");
        }
        if let Some(description) = &config.description {
            command.arg("--description").arg(description);
        }
        if let Some(id) = &config.id {
            command.arg("--id").arg(id);
        }
        if let Some(ms) = config.drain_ms {
            command.arg("--drain-ms").arg(ms.to_string());
        }
        if let Some((cert, key)) = &config.tls {
            command
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
        }
        let mut process = ChildGuard::spawn(format!("kylin-sim {}", config.name), &mut command)
            .expect("spawn kylin-sim");
        let child = process.child_mut().expect("child");
        let (log, ready_at, port) = NodeLog::capture(
            child,
            &format!("kylin-sim {}", config.name),
            Duration::from_secs(30),
        );
        SimNode {
            name: config.name.clone(),
            port,
            ready_at,
            process,
            log,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGTERM (the node deletes its znodes and closes its session) and
    /// wait for exit. Returns when the signal was sent and the exit status.
    pub fn terminate(&mut self) -> (Instant, Option<std::process::ExitStatus>) {
        let sent = Instant::now();
        let status = self.process.terminate();
        (sent, status)
    }

    /// Sends SIGTERM without waiting for the exit.
    pub fn process_signal_term(&self) {
        self.process.signal("TERM");
    }

    /// SIGKILL: the znodes stay until the session expires.
    pub fn kill(&mut self) -> Instant {
        let sent = Instant::now();
        self.process.kill();
        sent
    }

    /// Every stderr line so far.
    pub fn log(&self) -> Vec<LogLine> {
        self.log.lines()
    }

    /// The first stderr line after `since` that contains `needle`.
    pub fn logged_since(&self, since: Instant, needle: &str) -> Option<LogLine> {
        self.log.logged_since(since, needle)
    }

    /// Like [`Self::logged_since`], waiting up to `timeout` for the line.
    pub fn wait_logged_since(&self, since: Instant, needle: &str, timeout: Duration) -> LogLine {
        self.log.wait_logged_since(since, needle, timeout)
    }

    /// Waits (up to `timeout`) until the node says it leads.
    pub fn wait_leading(&self, timeout: Duration) {
        super::eventually(&format!("{} leads", self.name), timeout, || {
            self.says_leader().then_some(())
        });
    }

    /// Whether the node currently says it leads (its last LEADER /
    /// NOT LEADER line).
    pub fn says_leader(&self) -> bool {
        self.log.says_leader()
    }
}
