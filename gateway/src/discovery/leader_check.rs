//! The leader drift check (KYLIN-3834: ZooKeeper's leadership and the job
//! scheduler's own state can disagree, and Kylin only logs it). Every
//! `discovery.leader_check_interval_ms` the elected leader is asked
//! `GET /kylin/api/service_discovery/state/is_active_job_node` (bare `true`
//! or `false`; Kylin 3.x and 4.x, not KAP 2.4). A `false` opens a drift
//! episode: shown on `/admin/leader`, counted once and logged once; the
//! episode ends when the leader agrees again or another node leads.
//! Routing still follows ZooKeeper: this only tells the operator. A
//! cluster without election (Kylin 5) has no leader to ask: the check is
//! not run for `layout = "kylin-5"` and says so for a Kylin 5 cluster found
//! by `auto`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use crate::config::Layout;
use crate::discovery::zookeeper::kylin5::NO_ELECTION;
use crate::tls::{NodeConnector, UpstreamTls};
use crate::view::{JobRouting, Snapshot, ViewPublisher};

pub const ACTIVE_JOB_NODE_PATH: &str = "/kylin/api/service_discovery/state/is_active_job_node";
/// Counter: drift episodes (the elected leader said its scheduler is not
/// active).
pub const DRIFT_EPISODES_METRIC: &str = "kgw_leader_drift_episodes_total";
/// Gauge: 1 during a drift episode.
pub const DRIFT_METRIC: &str = "kgw_leader_drift";

/// The last check's result, as `/admin/leader` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Check {
    /// Not configured, or nothing checked yet.
    Off,
    /// The cluster's release has no such endpoint, or no leader is elected.
    NotApplicable {
        reason: String,
    },
    Agrees {
        node: String,
    },
    /// The elected leader says its job scheduler is not active.
    Disagrees {
        node: String,
        answer: String,
        since_unix_ms: u64,
    },
    /// The leader did not answer usefully: not a disagreement.
    Unanswered {
        node: String,
        error: String,
    },
}

/// Shared between the checker and the admin API (read rarely; not on the
/// data path).
#[derive(Clone)]
pub struct LeaderCheckStatus(Arc<Mutex<Check>>);

impl Default for LeaderCheckStatus {
    fn default() -> Self {
        LeaderCheckStatus(Arc::new(Mutex::new(Check::Off)))
    }
}

impl LeaderCheckStatus {
    pub fn get(&self) -> Check {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records that the check does not apply to this cluster at all (it
    /// is not run).
    pub fn set_not_applicable(&self, reason: &str) {
        self.set(Check::NotApplicable {
            reason: reason.into(),
        });
    }

    fn set(&self, check: Check) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = check;
    }
}

/// Whether the leader can be asked: Kylin 3.x/4.x have the endpoint, KAP
/// 2.4 not. With `auto`, a leader whose election data is `host:port` is a
/// Kylin 3.x node (KAP 2.4 writes a bare IP).
pub fn applies(layout: Layout, participant: Option<&str>) -> bool {
    match layout {
        Layout::Kap24 | Layout::Kylin5 => false,
        Layout::Kylin30 | Layout::Kylin31 => true,
        Layout::Auto => participant.is_some_and(|p| crate::discovery::split_host_port(p).is_some()),
    }
}

/// Reads an answer body: Kylin answers a bare `true` or `false`.
pub fn parse_answer(body: &[u8]) -> Result<bool, String> {
    match body.trim_ascii() {
        b"true" => Ok(true),
        b"false" => Ok(false),
        other => Err(format!(
            "unexpected answer {:?}",
            String::from_utf8_lossy(&other[..other.len().min(64)])
        )),
    }
}

/// The next state after asking `node`, and whether a drift episode began
/// (to count and log it once). An episode carries over while the same node
/// keeps disagreeing; an unanswered check neither opens nor closes one.
pub fn next(
    previous: &Check,
    node: &str,
    answer: Result<bool, String>,
    now_unix_ms: u64,
) -> (Check, bool) {
    match answer {
        Ok(true) => (Check::Agrees { node: node.into() }, false),
        Ok(false) => match previous {
            Check::Disagrees {
                node: same,
                since_unix_ms,
                ..
            } if same == node => (
                Check::Disagrees {
                    node: node.into(),
                    answer: "false".into(),
                    since_unix_ms: *since_unix_ms,
                },
                false,
            ),
            _ => (
                Check::Disagrees {
                    node: node.into(),
                    answer: "false".into(),
                    since_unix_ms: now_unix_ms,
                },
                true,
            ),
        },
        Err(error) => match previous {
            Check::Disagrees { node: same, .. } if same == node => (previous.clone(), false),
            _ => (
                Check::Unanswered {
                    node: node.into(),
                    error,
                },
                false,
            ),
        },
    }
}

type CheckClient = Client<NodeConnector, Empty<Bytes>>;

/// Asks the elected leader every `interval` until the process exits.
pub async fn run(
    interval: Duration,
    layout: Layout,
    views: ViewPublisher,
    status: LeaderCheckStatus,
    upstream_tls: UpstreamTls,
) {
    // The same TLS settings as the proxy: a TLS leader is asked over TLS.
    let connector = NodeConnector::new(interval.min(Duration::from_secs(2)), upstream_tls);
    let client: CheckClient = Client::builder(TokioExecutor::new()).build(connector);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let snapshot = views.snapshot();
        let check = check_once(&client, &snapshot, layout, &status.get(), interval).await;
        status.set(check);
    }
}

/// One check of the current leader.
async fn check_once(
    client: &CheckClient,
    snapshot: &Snapshot,
    layout: Layout,
    previous: &Check,
    timeout: Duration,
) -> Check {
    if snapshot.view.job_routing == JobRouting::AnyJobNode {
        end_episode(previous);
        return Check::NotApplicable {
            reason: NO_ELECTION.into(),
        };
    }
    let Some(leader) = snapshot.leader.map(|i| &snapshot.nodes[i]) else {
        end_episode(previous);
        return Check::NotApplicable {
            reason: "no leader is elected".into(),
        };
    };
    if !applies(layout, snapshot.view.leader.participant.as_deref()) {
        return Check::NotApplicable {
            reason: "KAP 2.4 nodes have no is_active_job_node endpoint".into(),
        };
    }
    let Some(authority) = leader.authority.as_ref() else {
        return Check::NotApplicable {
            reason: "the leader's address is not resolved".into(),
        };
    };
    let answer = ask(
        client,
        leader.tls,
        authority,
        timeout.min(Duration::from_secs(5)),
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let node = &*leader.node.id;
    if !matches!(previous, Check::Disagrees { node: same, .. } if same == node) {
        end_episode(previous);
    }
    let (check, began) = next(previous, node, answer, now);
    if began {
        metrics::counter!(DRIFT_EPISODES_METRIC).increment(1);
        metrics::gauge!(DRIFT_METRIC).set(1.0);
        tracing::warn!(
            leader = node,
            upstream = &*leader.label,
            "leader drift: ZooKeeper names this node the job-engine leader, but it says its job scheduler is not active (KYLIN-3834); routing still follows ZooKeeper"
        );
    } else if matches!(check, Check::Agrees { .. }) {
        end_episode(previous);
    }
    check
}

/// Logs and clears the gauge when a drift episode ends.
fn end_episode(previous: &Check) {
    if let Check::Disagrees { node, .. } = previous {
        metrics::gauge!(DRIFT_METRIC).set(0.0);
        tracing::info!(leader = &**node, "leader drift ended");
    }
}

async fn ask(
    client: &CheckClient,
    tls: bool,
    authority: &http::uri::Authority,
    timeout: Duration,
) -> Result<bool, String> {
    let uri = http::Uri::builder()
        .scheme(if tls { "https" } else { "http" })
        .authority(authority.clone())
        .path_and_query(ACTIVE_JOB_NODE_PATH)
        .build()
        .map_err(|e| e.to_string())?;
    let call = async {
        let response = client.get(uri).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        parse_answer(&body.to_bytes())
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kylin_3_layouts_are_asked() {
        assert!(!applies(Layout::Kap24, Some("10.0.0.5:7070")));
        assert!(!applies(Layout::Kylin5, Some("10.0.0.5:7070")));
        assert!(applies(Layout::Kylin30, Some("10.0.0.5")));
        assert!(applies(Layout::Kylin31, None));
        assert!(applies(Layout::Auto, Some("node1:7070")));
        assert!(
            !applies(Layout::Auto, Some("10.0.0.5")),
            "KAP 2.4 writes a bare IP"
        );
        assert!(!applies(Layout::Auto, None));
    }

    #[test]
    fn answers_are_bare_booleans() {
        assert_eq!(parse_answer(b"true"), Ok(true));
        assert_eq!(parse_answer(b" false\n"), Ok(false));
        assert!(parse_answer(b"{\"code\":\"999\"}").is_err());
    }

    #[test]
    fn an_episode_begins_once_and_ends_on_agreement_or_a_new_leader() {
        let (first, began) = next(&Check::Off, "a", Ok(false), 10);
        assert!(began);
        let (second, began) = next(&first, "a", Ok(false), 20);
        assert!(!began, "the same episode goes on");
        assert_eq!(second, first, "since stays at the episode's start");
        let (unanswered, began) = next(&second, "a", Err("reset".into()), 30);
        assert!(!began);
        assert_eq!(unanswered, first, "an unanswered check keeps the episode");
        let (agreed, _) = next(&unanswered, "a", Ok(true), 40);
        assert_eq!(agreed, Check::Agrees { node: "a".into() });
        let (again, began) = next(&agreed, "a", Ok(false), 50);
        assert!(began, "a new episode after agreement");
        let (other, began) = next(&again, "b", Ok(false), 60);
        assert!(began, "another leader disagreeing is another episode");
        assert!(matches!(
            other,
            Check::Disagrees {
                since_unix_ms: 60,
                ..
            }
        ));
    }
}
