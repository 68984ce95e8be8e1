//! The leader drift check (KYLIN-3834) end to end: the gateway asks the
//! elected leader whether its job scheduler is active; a leader that says
//! no is reported on `/admin/leader` and counted once per episode, while
//! job traffic still follows ZooKeeper. KAP 2.4 nodes, which have no such
//! endpoint, are never asked.

use std::time::{Duration, Instant};

use kylin_gateway_tests::support::cluster::{leader, metric, poll_until, zookeeper_gateway};
use kylin_gateway_tests::support::http::{TestClient, client, send};
use kylin_gateway_tests::support::sim::{SimConfig, SimNode};
use kylin_gateway_tests::support::zookeeper::ZkServer;

const WAIT: Duration = Duration::from_secs(15);

async fn check_state(
    c: &TestClient,
    gateway: &kylin_gateway_tests::support::gateway::Gateway,
) -> serde_json::Value {
    leader(c, gateway).await["active_job_node_check"].clone()
}

async fn tell(c: &TestClient, node: &SimNode, answer: &str) {
    let url = format!("http://{}/sim/active_job_node?answer={answer}", node.addr());
    let reply = send(c, "PUT", &url, &[], "").await.expect("sim control");
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_scheduler_is_idle_is_reported_once_per_episode() {
    let server = ZkServer::start();
    let zk = server.connect_string();
    let elected = SimNode::start(&zk, &SimConfig::new("elected", "all").id("elected"));
    elected.wait_leading(WAIT);
    let _standby = SimNode::start(&zk, &SimConfig::new("standby", "all").id("standby"));
    let gateway = zookeeper_gateway(&zk, "leader_check_interval_ms = 100");
    let c = client();
    poll_until("the leader agrees", WAIT, || async {
        let check = check_state(&c, &gateway).await;
        check["state"] == "agrees" && check["node"] == "elected"
    })
    .await;
    assert_eq!(
        metric(&c, &gateway, "kgw_leader_drift_episodes_total").await,
        0.0
    );

    tell(&c, &elected, "false").await;
    poll_until("drift reported", WAIT, || async {
        check_state(&c, &gateway).await["state"] == "disagrees"
    })
    .await;
    let since = check_state(&c, &gateway).await["since_unix_ms"].clone();
    assert!(since.as_u64().is_some_and(|ms| ms > 0), "{since}");
    // Three more checks: still one episode, begun when it began.
    let asked = Instant::now();
    for n in 1..=3 {
        poll_until("another check", WAIT, || async {
            elected
                .log()
                .iter()
                .filter(|(at, line)| *at >= asked && line.contains("asked is_active_job_node"))
                .count()
                >= n
        })
        .await;
    }
    let check = check_state(&c, &gateway).await;
    assert_eq!(check["state"], "disagrees");
    assert_eq!(check["since_unix_ms"], since);
    assert_eq!(
        metric(&c, &gateway, "kgw_leader_drift_episodes_total").await,
        1.0
    );
    assert_eq!(metric(&c, &gateway, "kgw_leader_drift").await, 1.0);
    // Routing still follows ZooKeeper.
    let reply = send(
        &c,
        "PUT",
        &gateway.url("/kylin/api/jobs/j1/resume"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(reply.json()["node"], "elected");

    tell(&c, &elected, "truth").await;
    poll_until("agreement again", WAIT, || async {
        check_state(&c, &gateway).await["state"] == "agrees"
    })
    .await;
    assert_eq!(metric(&c, &gateway, "kgw_leader_drift").await, 0.0);
    tell(&c, &elected, "false").await;
    poll_until("a second episode", WAIT, || async {
        metric(&c, &gateway, "kgw_leader_drift_episodes_total").await == 2.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kap_nodes_are_never_asked() {
    let server = ZkServer::start();
    let zk = server.connect_string();
    let elected = SimNode::start(&zk, &SimConfig::new("kap", "all").layout("kap-2.4"));
    elected.wait_leading(WAIT);
    let started = Instant::now();
    let gateway = zookeeper_gateway(&zk, "leader_check_interval_ms = 50");
    let c = client();
    poll_until("the check sees a KAP leader", WAIT, || async {
        let check = check_state(&c, &gateway).await;
        check["state"] == "not_applicable"
            && check["reason"]
                .as_str()
                .is_some_and(|r| r.contains("KAP 2.4"))
    })
    .await;
    assert!(
        elected
            .logged_since(started, "asked is_active_job_node")
            .is_none(),
        "a KAP 2.4 node was asked"
    );
}
