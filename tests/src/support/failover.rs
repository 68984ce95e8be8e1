//! Driving job-engine failovers through the gateway, for the crash tests
//! and `bench/failover.sh`: job clients that never stop, job-engine
//! candidates queued in election order (ids sorting in the same order, so
//! each successor takes its leader's place in the gateway's view), and one
//! round: slow job requests in flight at the leader (one half answered),
//! the leader crashed or stopped, every in-flight request's answer taken.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::cluster::nodes;
use super::gateway::Gateway;
use super::http::{TestClient, client, send};
use super::output::LogLine;

const WAIT: Duration = Duration::from_secs(30);

/// One answered request.
#[derive(Debug)]
pub struct Answer {
    pub what: String,
    pub status: u16,
    /// The node that answered, from its JSON.
    pub node: String,
    /// `None` when the body was whole JSON; else why not.
    pub broken: Option<String>,
    pub sent: Instant,
    pub at: Instant,
}

impl Answer {
    /// A whole 200 answer.
    pub fn ok(&self) -> bool {
        self.status == 200 && self.broken.is_none()
    }
}

/// Sends one request and reads its whole answer.
pub async fn ask(c: &TestClient, method: &str, url: &str, headers: &[(&str, &str)]) -> Answer {
    let what = format!("{method} {url}");
    let sent = Instant::now();
    match send(c, method, url, headers, "").await {
        Ok(reply) => {
            let parsed = serde_json::from_slice::<serde_json::Value>(&reply.body);
            Answer {
                what,
                status: reply.status,
                node: parsed
                    .as_ref()
                    .ok()
                    .and_then(|j| j["node"].as_str().map(String::from))
                    .unwrap_or_default(),
                broken: parsed.err().map(|e| format!("{e}: {}", reply.text())),
                sent,
                at: Instant::now(),
            }
        }
        Err(e) => Answer {
            what,
            status: 0,
            node: String::new(),
            broken: Some(format!("{e:#}")),
            sent,
            at: Instant::now(),
        },
    }
}

/// A write cut by a crash: one in flight while a leader was dying (sent
/// before the process was gone, answered after the kill) may have been
/// applied, so it must not be sent again, and its answer is a 502.
/// `crashes` are those windows, from the kill signal until the process was
/// reaped.
pub fn cut_by_a_crash(answer: &Answer, crashes: &[(Instant, Instant)]) -> bool {
    !answer.what.starts_with("GET ")
        && answer.status == 502
        && crashes
            .iter()
            .any(|(killed, reaped)| answer.sent <= *reaped && answer.at >= *killed)
}

/// Panics listing the first failures if any answer is not a whole 200,
/// except writes [cut by a crash](cut_by_a_crash).
pub fn assert_nothing_lost(answers: &[Answer], crashes: &[(Instant, Instant)]) {
    let failed: Vec<&Answer> = answers
        .iter()
        .filter(|a| !a.ok() && !cut_by_a_crash(a, crashes))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
}

/// Job requests sent back to back by a few clients until stopped; each
/// client keeps its connection to the gateway alive between requests.
pub struct JobClients {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<Vec<Answer>>>,
}

impl JobClients {
    /// Two clients reading jobs, one submitting builds.
    pub fn start(gateway: &Gateway) -> JobClients {
        JobClients::start_many(gateway, 1)
    }

    /// `copies` times two clients reading jobs and one submitting builds.
    pub fn start_many(gateway: &Gateway, copies: usize) -> JobClients {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let calls = [
            ("GET", gateway.url("/kylin/api/jobs?limit=1")),
            ("GET", gateway.url("/kylin/api/jobs/steady")),
            ("PUT", gateway.url("/kylin/api/cubes/sales/build")),
        ];
        let tasks = calls
            .iter()
            .cycle()
            .take(calls.len() * copies)
            .cloned()
            .map(|(method, url)| {
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    let c = client();
                    let mut answers = Vec::new();
                    while !*stopped.borrow() {
                        answers.push(ask(&c, method, &url, &[]).await);
                    }
                    answers
                })
            })
            .collect();
        JobClients { stop, tasks }
    }

    /// Stops the clients and returns every answer, each client joined
    /// within a deadline (a request still in flight is counted).
    pub async fn finish(self) -> Vec<Answer> {
        self.stop.send_replace(true);
        let mut all = Vec::new();
        for task in self.tasks {
            let answers = tokio::time::timeout(WAIT, task)
                .await
                .expect("a job client did not finish")
                .expect("job client task");
            all.extend(answers);
        }
        all
    }
}

/// A Kylin node process the failover driver can crash or stop.
pub trait JobNode {
    fn name(&self) -> &str;
    /// SIGKILL: its znodes stay until its session expires.
    fn crash(&mut self);
    /// SIGTERM, not waiting for the exit: it deregisters and leaves.
    fn stop(&mut self);
    /// The first stderr line after `since` containing `needle`.
    fn wait_logged(&self, since: Instant, needle: &str, timeout: Duration) -> LogLine;
}

/// How the leader goes away in one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Death {
    Crash,
    CleanStop,
}

/// The job-engine candidates in election order. Their ids are
/// `<prefix><sequence>`, sorting in start order and (with a prefix below
/// every other node's id) first in the gateway's view: the leader is
/// first, and its successor moves into its place when it leaves.
pub struct Candidates<N> {
    /// ZooKeeper connect string and the directory the candidates register
    /// in, to watch a leader's registration go.
    zk: String,
    registry: String,
    prefix: String,
    started: usize,
    start: Box<dyn FnMut(&str) -> N>,
    pub queue: VecDeque<N>,
}

impl<N: JobNode> Candidates<N> {
    /// `start(id)` starts a candidate with that id (and name), registered
    /// in ZooKeeper `zk` under `registry` (a service directory).
    pub fn new(
        zk: &str,
        registry: &str,
        prefix: &str,
        start: impl FnMut(&str) -> N + 'static,
    ) -> Candidates<N> {
        Candidates {
            zk: zk.to_string(),
            registry: registry.to_string(),
            prefix: prefix.to_string(),
            started: 0,
            start: Box::new(start),
            queue: VecDeque::new(),
        }
    }

    /// Starts the next candidate; it queues behind the others.
    pub fn add(&mut self) {
        let id = format!("{}{:03}", self.prefix, self.started);
        self.queue.push_back((self.start)(&id));
        self.started += 1;
    }

    pub fn leader(&self) -> &N {
        &self.queue[0]
    }
}

/// The slow requests of one round.
#[derive(Clone, Copy, Debug)]
pub struct SlowRequests {
    /// Job requests each taking `delay_ms` at the node.
    pub in_flight: usize,
    pub delay_ms: u64,
    /// One more whose answer stops half way for this long.
    pub stall_ms: u64,
}

/// What one round saw.
#[derive(Debug)]
pub struct Round {
    pub death: Death,
    /// Every request that was in flight at the leader.
    pub in_flight: Vec<InFlight>,
    pub killed: Instant,
    /// For a crash, from the kill signal until the process was reaped.
    pub dying: Option<(Instant, Instant)>,
    /// When ZooKeeper deleted the dead leader's registration (as a watching
    /// client saw it): at once for a clean stop, at session expiry for a
    /// crash.
    pub gone: Instant,
    /// The node expected to answer them: the successor (or, for a clean
    /// stop, the leader itself while it drains).
    pub successor: String,
    pub dead: String,
}

/// A request that was in flight at the leader when it died.
#[derive(Debug)]
pub struct InFlight {
    pub answer: Answer,
    /// How long a node takes for it (its delay or stall).
    pub slow: Duration,
    /// When it reached the successor (the successor logged it), if it did.
    pub reached_successor: Option<Instant>,
}

impl Round {
    /// From the registration's deletion until the last in-flight request
    /// reached the successor.
    pub fn reaction(&self) -> Duration {
        self.in_flight
            .iter()
            .filter_map(|r| r.reached_successor)
            .map(|at| at.saturating_duration_since(self.gone))
            .max()
            .unwrap_or_default()
    }

    /// From the kill until the last in-flight request was answered, less
    /// the time the node itself took for it.
    pub fn gap(&self) -> Duration {
        self.in_flight
            .iter()
            .map(|r| (r.answer.at - self.killed).saturating_sub(r.slow))
            .max()
            .unwrap_or_default()
    }
}

/// Waits until the gateway lists the current leader first and names it
/// leader, with its successor second.
pub async fn wait_leader_first<N: JobNode>(
    c: &TestClient,
    gateway: &Gateway,
    candidates: &Candidates<N>,
) {
    let (leader, next) = (candidates.queue[0].name(), candidates.queue[1].name());
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = nodes(c, gateway).await.unwrap_or_default();
        if seen.len() >= 2 && seen[0].id == leader && seen[0].is_leader && seen[1].id == next {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waited {WAIT:?} for {leader} to lead, first in the view, and {next} second; the gateway has {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One round: slow requests sent and seen arriving at the leader, the
/// leader killed or stopped, a new candidate queued, every slow request's
/// answer collected.
pub async fn failover_round<N: JobNode>(
    gateway: &Gateway,
    candidates: &mut Candidates<N>,
    death: Death,
    slow: SlowRequests,
    tag: &str,
) -> Round {
    let c = client();
    wait_leader_first(&c, gateway, candidates).await;
    let since = Instant::now();
    let mut calls: Vec<(String, Duration, String)> = (0..slow.in_flight)
        .map(|k| {
            let path = format!("/kylin/api/jobs/{tag}-{k}");
            let url = gateway.url(&format!("{path}?delay_ms={}", slow.delay_ms));
            (
                url,
                Duration::from_millis(slow.delay_ms),
                format!("delaying {path} "),
            )
        })
        .collect();
    let path = format!("/kylin/api/jobs/{tag}-stalled");
    calls.push((
        gateway.url(&format!("{path}?stall_ms={}", slow.stall_ms)),
        Duration::from_millis(slow.stall_ms),
        format!("stalled {path} "),
    ));
    let tasks: Vec<(JoinHandle<Answer>, Duration)> = calls
        .iter()
        .map(|(url, slow, _)| {
            let url = url.clone();
            let task = tokio::spawn(async move { ask(&client(), "GET", &url, &[]).await });
            (task, *slow)
        })
        .collect();
    let mut dying = candidates.queue.pop_front().expect("a leader");
    for (_, _, arrived) in &calls {
        dying.wait_logged(since, arrived, WAIT);
    }
    let dying_name = dying.name().to_string();
    let registration = format!("{}/{dying_name}", candidates.registry);
    let gone = watch_deletion(&candidates.zk, &registration).await;
    let (killed, crash) = put_down(&mut dying, death);
    let successor = candidates.leader().name().to_string();
    let mut in_flight = Vec::new();
    for ((task, slow), (_, _, arrived)) in tasks.into_iter().zip(&calls) {
        let answer = tokio::time::timeout(WAIT, task)
            .await
            .expect("an in-flight request was not answered")
            .expect("request task");
        let reached_successor = (answer.node == successor)
            .then(|| candidates.leader().wait_logged(killed, arrived, WAIT).0);
        in_flight.push(InFlight {
            answer,
            slow,
            reached_successor,
        });
    }
    let gone = tokio::time::timeout(WAIT, gone)
        .await
        .expect("the dead leader's registration was never deleted")
        .expect("watch task");
    drop(dying);
    candidates.add();
    Round {
        death,
        in_flight,
        killed,
        dying: crash,
        gone,
        successor,
        dead: dying_name,
    }
}

/// Crashes or stops `leader`. Returns when the signal went, and for a crash
/// the window from then until the process was reaped.
pub fn put_down<N: JobNode>(leader: &mut N, death: Death) -> (Instant, Option<(Instant, Instant)>) {
    let signalled = Instant::now();
    match death {
        Death::Crash => {
            leader.crash();
            (signalled, Some((signalled, Instant::now())))
        }
        Death::CleanStop => {
            leader.stop();
            (signalled, None)
        }
    }
}

/// Watches `path` (which must exist) and resolves to when it was deleted.
async fn watch_deletion(zk: &str, path: &str) -> JoinHandle<Instant> {
    let client = super::zookeeper::client(zk).await;
    let (stat, watcher) = client
        .check_and_watch_stat(path)
        .await
        .unwrap_or_else(|e| panic!("watch {path}: {e}"));
    assert!(stat.is_some(), "{path} is not registered");
    tokio::spawn(async move {
        let event = watcher.changed().await;
        let at = Instant::now();
        assert_eq!(
            event.event_type,
            zookeeper_client::EventType::NodeDeleted,
            "{event:?}"
        );
        drop(client);
        at
    })
}

/// Both node kinds name these the same way.
macro_rules! job_node {
    ($($node:ty),*) => {$(
        impl JobNode for $node {
            fn name(&self) -> &str {
                &self.name
            }

            fn crash(&mut self) {
                self.kill();
            }

            fn stop(&mut self) {
                self.process_signal_term();
            }

            fn wait_logged(&self, since: Instant, needle: &str, timeout: Duration) -> LogLine {
                self.wait_logged_since(since, needle, timeout)
            }
        }
    )*};
}

job_node!(super::sim::SimNode, super::curator::CuratorNode);
