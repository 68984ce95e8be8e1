//! The gateway in front of a ZooKeeper-discovered cluster, as end-to-end
//! tests see it: a `[discovery] kind = "zookeeper"` config, and readers of
//! the admin API (`/admin/nodes`, `/admin/leader`, `/admin/view`,
//! `/metrics`) that poll tightly so the time a change takes to reach the
//! view can be measured.

use std::time::{Duration, Instant};

use super::gateway::Gateway;
use super::http::{TestClient, client, get};
use super::sim::{SimConfig, SimNode};
use super::zookeeper::ZkServer;

/// Starts the gateway discovering from `connect` (layout auto) with
/// `extra` TOML appended to `[discovery]` (e.g. `base_path = "..."`).
pub fn zookeeper_gateway(connect: &str, extra_discovery: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
[discovery]
kind = "zookeeper"
connect = "{connect}"
layout = "auto"
session_timeout_ms = 4000
{extra_discovery}

[routing]
job_hold_ms = 15000
"#
    ))
}

/// One node as `/admin/nodes` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct SeenNode {
    pub id: String,
    pub address: String,
    pub modes: Vec<String>,
    pub enabled: bool,
    pub is_leader: bool,
}

/// `/admin/nodes`, parsed; `None` if the admin API did not answer.
pub async fn nodes(client: &TestClient, gateway: &Gateway) -> Option<Vec<SeenNode>> {
    let reply = get(client, &gateway.admin_url("/admin/nodes")).await.ok()?;
    let list = reply.json();
    Some(
        list.as_array()?
            .iter()
            .map(|n| SeenNode {
                id: n["id"].as_str().unwrap_or_default().to_string(),
                address: n["address"].as_str().unwrap_or_default().to_string(),
                modes: n["modes"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
                enabled: n["enabled"].as_bool().unwrap_or(false),
                is_leader: n["is_leader"].as_bool().unwrap_or(false),
            })
            .collect(),
    )
}

/// The id `/admin/nodes` shows for the node at `address`.
pub async fn node_id(client: &TestClient, gateway: &Gateway, address: &str) -> String {
    let seen = nodes(client, gateway)
        .await
        .expect("/admin/nodes answered with a node list");
    seen.iter()
        .find(|n| n.address == address)
        .map(|n| n.id.clone())
        .unwrap_or_else(|| panic!("{address} not in {seen:#?}"))
}

/// Real ZooKeeper with three simulated nodes, and a gateway (no removal
/// grace) that has all three in its view.
pub struct ThreeNodes {
    /// `all`, the job-engine leader once started.
    pub first: SimNode,
    /// `all`, next in line.
    pub second: SimNode,
    /// `query`.
    pub query: SimNode,
    pub gateway: Gateway,
    /// Last: dropped after the nodes.
    pub server: ZkServer,
}

impl ThreeNodes {
    pub async fn start(wait: Duration) -> ThreeNodes {
        let server = ZkServer::start();
        let zk = server.connect_string();
        let first = SimNode::start(&zk, &SimConfig::new("first", "all"));
        first.wait_leading(wait);
        let second = SimNode::start(&zk, &SimConfig::new("second", "all"));
        let query = SimNode::start(&zk, &SimConfig::new("query", "query"));
        let gateway = zookeeper_gateway(&zk, "removal_grace_ms = 0");
        let c = client();
        poll_until("three nodes in view", wait, || async {
            addresses(&c, &gateway).await.len() == 3
        })
        .await;
        ThreeNodes {
            first,
            second,
            query,
            gateway,
            server,
        }
    }
}

/// Sorted addresses of the nodes in the view. Panics if the admin API does
/// not answer with a node list: an error is not an empty view (a poll for
/// "removed" would pass on it).
pub async fn addresses(client: &TestClient, gateway: &Gateway) -> Vec<String> {
    let mut addresses: Vec<String> = nodes(client, gateway)
        .await
        .expect("/admin/nodes answered with a node list")
        .into_iter()
        .map(|n| n.address)
        .collect();
    addresses.sort();
    addresses
}

/// `/admin/leader`.
pub async fn leader(client: &TestClient, gateway: &Gateway) -> serde_json::Value {
    get(client, &gateway.admin_url("/admin/leader"))
        .await
        .map(|r| r.json())
        .unwrap_or(serde_json::Value::Null)
}

/// The leader's address, if the gateway knows one.
pub async fn leader_address(client: &TestClient, gateway: &Gateway) -> Option<String> {
    leader(client, gateway).await["address"]
        .as_str()
        .map(String::from)
}

/// `/admin/view`.
pub async fn view(client: &TestClient, gateway: &Gateway) -> serde_json::Value {
    get(client, &gateway.admin_url("/admin/view"))
        .await
        .map(|r| r.json())
        .unwrap_or(serde_json::Value::Null)
}

/// When the gateway published its current snapshot (`/admin/view`'s
/// `published_at_us`, on this machine's wall clock).
pub async fn published_at(client: &TestClient, gateway: &Gateway) -> std::time::SystemTime {
    let us = view(client, gateway).await["published_at_us"]
        .as_u64()
        .expect("/admin/view has published_at_us");
    std::time::UNIX_EPOCH + Duration::from_micros(us)
}

/// The value of a Prometheus counter or gauge (summed over label sets),
/// or 0 when it is absent.
pub async fn metric(client: &TestClient, gateway: &Gateway, name: &str) -> f64 {
    let Ok(reply) = get(client, &gateway.admin_url("/metrics")).await else {
        return 0.0;
    };
    reply
        .text()
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `check` about every millisecond until it holds; returns when it
/// first held. Panics with `what` after `timeout`.
pub async fn poll_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Instant
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The median of some durations (for timing assertions that should not
/// fail on one scheduling hiccup of a shared machine).
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}
