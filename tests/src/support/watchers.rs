//! Background loops that run through a disturbance and are judged after
//! it: [`Traffic`] sends requests back to back through the gateway and
//! counts what failed; [`ViewWatch`] polls `/admin/nodes` and
//! `/admin/leader` tightly and remembers every moment the view lacked an
//! expected node or had no leader. Both stop when finished or dropped.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cluster::{leader, nodes};
use super::gateway::Gateway;
use super::http::{TestClient, send};

/// Requests sent one after another until stopped.
pub struct Traffic {
    what: String,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    last_failure: Arc<Mutex<Option<String>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// `method` `path` (with `body`) through the gateway, every 2 ms.
    pub fn start(
        c: &TestClient,
        gateway: &Gateway,
        method: &str,
        path: &str,
        body: &str,
    ) -> Traffic {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let last_failure = Arc::new(Mutex::new(None));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (c, url) = (c.clone(), gateway.url(path));
        let what = format!("{method} {path}");
        let (method, body) = (method.to_string(), body.to_string());
        let (ok_task, failed_task, last_task) = (ok.clone(), failed.clone(), last_failure.clone());
        let task = tokio::spawn(async move {
            while !*stop_rx.borrow() {
                match send(&c, &method, &url, &[], body.clone()).await {
                    Ok(r) if r.status == 200 => {
                        ok_task.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed_task.fetch_add(1, Ordering::Relaxed);
                        *last_task.lock().unwrap() = Some(format!("{other:?}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Traffic {
            what,
            ok,
            failed,
            last_failure,
            stop,
            task: Some(task),
        }
    }

    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the loop and waits (up to 30 s) for the request in flight, so
    /// it is counted too; asserts nothing failed, returns how many
    /// succeeded.
    pub async fn finish(mut self, during: &str) -> u64 {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .unwrap_or_else(|_| panic!("{during}: `{}` still running after 30 s", self.what))
                .expect("traffic task");
        }
        let failed = self.failed.load(Ordering::Relaxed);
        assert_eq!(
            failed,
            0,
            "{during}: {failed} of {} `{}` failed (last: {:?})",
            failed + self.ok(),
            self.what,
            self.last_failure.lock().unwrap()
        );
        self.ok()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// What a [`ViewWatch`] saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// `/admin/nodes` answers read.
    pub samples: u64,
    /// Samples that lacked an expected address, with the set seen and when.
    pub shrank: Vec<(Instant, BTreeSet<String>)>,
    /// Samples in which no leader was named.
    pub leaderless: u64,
}

/// Polls the view about every millisecond until stopped.
pub struct ViewWatch {
    seen: Arc<Mutex<Seen>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ViewWatch {
    /// Watches that every address in `expected` stays in `/admin/nodes`
    /// (and, with `need_leader`, that `/admin/leader` names someone).
    pub fn start(
        c: &TestClient,
        gateway: &Gateway,
        expected: BTreeSet<String>,
        need_leader: bool,
    ) -> ViewWatch {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (c, seen_task) = (c.clone(), seen.clone());
        let nodes_url = gateway.admin_url("/admin/nodes");
        let leader_url = gateway.admin_url("/admin/leader");
        let task = tokio::spawn(async move {
            while !*stop_rx.borrow() {
                let sample = sample(&c, &nodes_url, &leader_url, need_leader).await;
                if let Some((addresses, has_leader)) = sample {
                    let mut seen = seen_task.lock().unwrap();
                    seen.samples += 1;
                    if !expected.is_subset(&addresses) {
                        seen.shrank.push((Instant::now(), addresses));
                    }
                    if need_leader && !has_leader {
                        seen.leaderless += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        ViewWatch {
            seen,
            stop,
            task: Some(task),
        }
    }

    /// What was seen so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Stops polling and returns everything seen.
    pub async fn finish(mut self) -> Seen {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the view watch still running after 30 s")
                .expect("view watch task");
        }
        self.seen()
    }
}

impl Drop for ViewWatch {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// One poll: the addresses in `/admin/nodes` and whether a leader is named.
async fn sample(
    c: &TestClient,
    nodes_url: &str,
    leader_url: &str,
    need_leader: bool,
) -> Option<(BTreeSet<String>, bool)> {
    let list = send(c, "GET", nodes_url, &[], "").await.ok()?.json();
    let addresses = list
        .as_array()?
        .iter()
        .filter_map(|n| n["address"].as_str().map(String::from))
        .collect();
    let has_leader = if need_leader {
        let reply = send(c, "GET", leader_url, &[], "").await.ok()?.json();
        reply["leader"].as_str().is_some()
    } else {
        true
    };
    Some((addresses, has_leader))
}

/// The addresses `/admin/nodes` lists now.
pub async fn address_set(c: &TestClient, gateway: &Gateway) -> BTreeSet<String> {
    nodes(c, gateway)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|n| n.address)
        .collect()
}

/// The id of the node `/admin/leader` names, if any.
pub async fn leader_id(c: &TestClient, gateway: &Gateway) -> Option<String> {
    leader(c, gateway).await["leader"]
        .as_str()
        .map(String::from)
}
