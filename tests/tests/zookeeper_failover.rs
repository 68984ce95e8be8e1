//! Job-engine leadership through the real gateway: a clean stop of the
//! leader (SIGTERM) moves job traffic to the next candidate with no failed
//! job request; a crashed leader (SIGKILL) is replaced once its session
//! expires; the gateway's own session expiring is followed by a full
//! re-read. Switch times are printed for the record.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kylin_gateway_tests::support::cluster::{
    addresses, leader_address, median, metric, poll_until, zookeeper_gateway,
};
use kylin_gateway_tests::support::eventually_async;
use kylin_gateway_tests::support::http::{TestClient, client, send};
use kylin_gateway_tests::support::sim::{SimConfig, SimNode};
use kylin_gateway_tests::support::zookeeper::ZkServer;

const WAIT: Duration = Duration::from_secs(15);

/// One job request's outcome.
#[derive(Debug, Clone)]
struct JobReply {
    at: Instant,
    status: u16,
    node: String,
}

/// Job requests sent back to back from some tasks until stopped.
struct JobTraffic {
    replies: Arc<Mutex<Vec<JobReply>>>,
    stop: tokio::sync::watch::Sender<bool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl JobTraffic {
    /// Replies after `since`.
    fn replies_after(&self, since: Instant) -> Vec<JobReply> {
        self.replies
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.at > since)
            .cloned()
            .collect()
    }

    /// Stops the workers and waits for the requests still in flight, so
    /// every request sent is in the list (a request held or hanging at
    /// the gateway is not lost, and fails the wait if it never ends).
    async fn finish(self) -> Vec<JobReply> {
        self.stop.send(true).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for worker in self.workers {
            tokio::time::timeout_at(deadline, worker)
                .await
                .expect("a job request still in flight 30 s after the traffic stopped")
                .expect("a traffic worker panicked");
        }
        self.replies.lock().unwrap().clone()
    }
}

/// Sends job requests back to back from `workers` tasks until stopped.
fn job_traffic(c: &TestClient, url: String, workers: usize) -> JobTraffic {
    let replies = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut handles = Vec::new();
    for _ in 0..workers {
        let c = c.clone();
        let url = url.clone();
        let replies = replies.clone();
        let stop_rx = stop_rx.clone();
        handles.push(tokio::spawn(async move {
            while !*stop_rx.borrow() {
                let reply = send(
                    &c,
                    "PUT",
                    &url,
                    &[("Content-Type", "application/json")],
                    r#"{"buildType":"BUILD"}"#,
                )
                .await;
                let (status, node) = match reply {
                    Ok(r) => {
                        let node = serde_json::from_slice::<serde_json::Value>(&r.body)
                            .ok()
                            .and_then(|j| j["node"].as_str().map(String::from))
                            .unwrap_or_else(|| r.text());
                        (r.status, node)
                    }
                    Err(e) => (0, e.to_string()),
                };
                replies.lock().unwrap().push(JobReply {
                    at: Instant::now(),
                    status,
                    node,
                });
            }
        }));
    }
    JobTraffic {
        replies,
        stop: stop_tx,
        workers: handles,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_leader_stop_moves_jobs_with_no_failed_request() {
    let server = ZkServer::start();
    let zk = server.connect_string();
    let mut candidates = Vec::new();
    for i in 0..4 {
        let node = SimNode::start(&zk, &SimConfig::new(&format!("cand{i}"), "all"));
        if i == 0 {
            node.wait_leading(WAIT);
        }
        candidates.push(node);
    }
    let _query = SimNode::start(&zk, &SimConfig::new("query", "query"));
    let gateway = zookeeper_gateway(&zk, "");
    let c = client();
    let first = candidates[0].addr();
    poll_until("cand0 leads in the gateway", WAIT, || async {
        addresses(&c, &gateway).await.len() == 5
            && leader_address(&c, &gateway).await == Some(first.clone())
    })
    .await;

    let traffic = job_traffic(&c, gateway.url("/kylin/api/cubes/sales/build"), 2);
    let started = Instant::now();
    eventually_async("job traffic flowing", WAIT, || async {
        (traffic.replies_after(started).len() >= 10).then_some(())
    })
    .await;
    let mut from_signal = Vec::new();
    let mut from_lock_deleted = Vec::new();
    for round in 0..3 {
        let next = candidates[round + 1].addr();
        let next_name = candidates[round + 1].name.clone();
        let sent = Instant::now();
        candidates[round].process_signal_term();
        let switched = poll_until("gateway follows the next leader", WAIT, || async {
            leader_address(&c, &gateway).await == Some(next.clone())
        })
        .await;
        let (deleted, _) = candidates[round].wait_logged_since(sent, "/job_engine/leader/", WAIT);
        let (elected, _) = candidates[round + 1].wait_logged_since(sent, ": LEADER ", WAIT);
        from_signal.push(switched - sent);
        from_lock_deleted.push(switched.saturating_duration_since(deleted));
        println!(
            "round {round}: SIGTERM → gateway leader {:?}; lock deleted → gateway {:?}; next sim elected itself after {:?}",
            switched - sent,
            switched.saturating_duration_since(deleted),
            elected.saturating_duration_since(sent),
        );
        // Job traffic lands on the new leader once the view switched.
        let settled = Instant::now() + Duration::from_millis(150);
        let late = eventually_async("job traffic after the switch", WAIT, || async {
            let late = traffic.replies_after(settled);
            (late.len() >= 10).then_some(late)
        })
        .await;
        assert!(
            late.iter().all(|r| r.node == next_name),
            "jobs after the switch went elsewhere: {:?}",
            late.iter()
                .filter(|r| r.node != next_name)
                .take(5)
                .collect::<Vec<_>>()
        );
        candidates[round].terminate();
    }
    let replies = traffic.finish().await;
    let failed: Vec<&JobReply> = replies.iter().filter(|r| r.status != 200).collect();
    println!(
        "{} job requests during 3 failovers, {} failed; SIGTERM → switch {from_signal:?}, lock deleted → switch {from_lock_deleted:?}",
        replies.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "failed job requests: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(
        median(from_signal.clone()) < Duration::from_millis(100),
        "clean leader stop followed in {from_signal:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_leader_is_replaced_after_its_session_expires() {
    let server = ZkServer::start();
    let zk = server.connect_string();
    let mut crashed = SimNode::start(
        &zk,
        &SimConfig::new("crashed", "all").session_timeout_ms(2_000),
    );
    crashed.wait_leading(WAIT);
    let standby = SimNode::start(&zk, &SimConfig::new("standby", "all"));
    let gateway = zookeeper_gateway(&zk, "");
    let c = client();
    poll_until("crashed leads in the gateway", WAIT, || async {
        leader_address(&c, &gateway).await == Some(crashed.addr())
    })
    .await;
    let killed = crashed.kill();
    // Until the session expires the election znode stands: nobody else leads.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(leader_address(&c, &gateway).await, Some(crashed.addr()));
    let switched = poll_until("standby leads after expiry", WAIT, || async {
        leader_address(&c, &gateway).await == Some(standby.addr())
    })
    .await;
    let (elected, _) = standby.wait_logged_since(killed, ": LEADER ", WAIT);
    println!(
        "SIGKILL → gateway leader switch {:?} (session 2 s; standby elected itself at {:?}, gateway {:?} later)",
        switched - killed,
        elected - killed,
        switched.saturating_duration_since(elected)
    );
    poll_until("crashed node gone from the view", WAIT, || async {
        addresses(&c, &gateway).await == vec![standby.addr()]
    })
    .await;
    let reply = send(
        &c,
        "PUT",
        &gateway.url("/kylin/api/jobs/j1/cancel"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["node"], "standby");
}

/// The gateway is frozen (SIGSTOP) past its session timeout while the
/// cluster changes; when it resumes, its session has expired, and it must
/// connect a new one and re-read everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_session_expiry_is_followed_by_a_full_reread() {
    let server = ZkServer::start();
    let zk = server.connect_string();
    let stays = SimNode::start(&zk, &SimConfig::new("stays", "all"));
    stays.wait_leading(WAIT);
    let mut leaves = SimNode::start(&zk, &SimConfig::new("leaves", "query"));
    let gateway = Arc::new(zookeeper_gateway(&zk, ""));
    let c = client();
    poll_until("both discovered", WAIT, || async {
        addresses(&c, &gateway).await.len() == 2
    })
    .await;
    let sessions_before = metric(&c, &gateway, "kgw_zookeeper_sessions_total").await;

    gateway.process.signal("STOP");
    let resume = ContinueOnDrop(gateway.clone());
    leaves.terminate();
    let joins = SimNode::start(&zk, &SimConfig::new("joins", "query"));
    // Longer than the 4 s session the server granted.
    tokio::time::sleep(Duration::from_millis(6_000)).await;
    drop(resume);

    let mut expected = vec![stays.addr(), joins.addr()];
    expected.sort();
    let seen = poll_until("view re-read after expiry", WAIT, || async {
        addresses(&c, &gateway).await == expected
    })
    .await;
    let _ = seen;
    let sessions_after = metric(&c, &gateway, "kgw_zookeeper_sessions_total").await;
    assert!(
        sessions_after > sessions_before,
        "no new session after expiry ({sessions_before} → {sessions_after})"
    );
    assert_eq!(leader_address(&c, &gateway).await, Some(stays.addr()));
    let reply = send(&c, "POST", &gateway.url("/kylin/api/query"), &[], "{}")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
}

/// Sends SIGCONT when dropped, so a failing assertion never leaves the
/// gateway stopped.
struct ContinueOnDrop(Arc<kylin_gateway_tests::support::gateway::Gateway>);

impl Drop for ContinueOnDrop {
    fn drop(&mut self) {
        self.0.process.signal("CONT");
    }
}
