//! Kylin 5 and Kylin 4.0 end to end: the real gateway discovering simulated
//! nodes from a real ZooKeeper. Kylin 5 registers like Spring Cloud
//! ZooKeeper (`/kylin/<unique id>/services/<mode>/<uuid>`) and elects no job
//! leader: the gateway finds it with `layout = "auto"` and the base path
//! derived from a Kylin 5 `kylin.properties`, sends queries only to
//! query-serving nodes and job calls only to job-capable ones (spread over
//! them), follows nodes leaving and joining, and says on `/admin/leader`
//! why there is no leader. Kylin 4.0 keeps Kylin 3.1's layout with a JDBC
//! metadata URL.

use std::collections::BTreeMap;
use std::time::Duration;

use kylin_gateway_tests::support::cluster::{leader, metric, nodes, poll_until};
use kylin_gateway_tests::support::gateway::{Gateway, TempDir};
use kylin_gateway_tests::support::http::{TestClient, client, send};
use kylin_gateway_tests::support::sim::{SimConfig, SimNode};
use kylin_gateway_tests::support::zookeeper::{self, ZkServer};
use zookeeper_client::{Acls, CreateMode};

const WAIT: Duration = Duration::from_secs(20);

/// Kylin 5's default PostgreSQL metastore URL, and the base path Kylin 5
/// derives from it (`KylinConfigBase.getMetadataUrlUniqueId`).
const KYLIN5_METADATA_URL: &str = "kylin_metadata@jdbc,driverClassName=org.postgresql.Driver,url=jdbc:postgresql://localhost:5432/kylin,username=postgres,password=";
const KYLIN5_BASE: &str = "/kylin/kylin_metadata_jdbc_postgresql___localhost_5432_kylin";

const NO_ELECTION: &str = "Kylin 5: per-project epochs; jobs go to any job-capable node";

/// Writes a `kylin.properties` naming ZooKeeper and the metadata URL.
fn kylin_properties(dir: &TempDir, connect: &str, metadata_url: &str) -> String {
    let path = dir.path.join("kylin.properties");
    std::fs::write(
        &path,
        format!(
            "# written by the test\nkylin.env.zookeeper-connect-string={connect}\n\
             kylin.metadata.url={metadata_url}\nkylin.server.mode=all\n"
        ),
    )
    .expect("write kylin.properties");
    path.display().to_string()
}

/// A gateway with `layout` and `discovery_extra` (e.g. `kylin_properties`).
fn gateway(layout: &str, discovery_extra: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
[discovery]
kind = "zookeeper"
layout = "{layout}"
session_timeout_ms = 4000
removal_grace_ms = 0
{discovery_extra}

[routing]
job_hold_ms = 15000
"#
    ))
}

fn kylin5_node(zk: &str, name: &str, mode: &str) -> SimNode {
    SimNode::start(
        zk,
        &SimConfig::new(name, mode)
            .layout("kylin-5")
            .base_path(KYLIN5_BASE),
    )
}

/// `(name, modes)` of the nodes in the view, by address → name.
async fn modes_in_view(
    c: &TestClient,
    gateway: &Gateway,
    names: &BTreeMap<String, String>,
) -> BTreeMap<String, Vec<String>> {
    nodes(c, gateway)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.enabled)
        .map(|n| {
            let name = names.get(&n.address).cloned().unwrap_or(n.address);
            (name, n.modes)
        })
        .collect()
}

/// Sends `count` requests and counts which node answered each; every
/// answer must be a 200 from a simulated node.
async fn spread(
    c: &TestClient,
    gateway: &Gateway,
    method: &str,
    path: &str,
    count: usize,
) -> BTreeMap<String, usize> {
    let mut by_node = BTreeMap::new();
    for _ in 0..count {
        let reply = send(
            c,
            method,
            &gateway.url(path),
            &[("content-type", "application/json")],
            r#"{"project":"learn_kylin","sql":"select 1"}"#,
        )
        .await
        .expect("request through the gateway");
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text());
        let node = reply.json()["node"].as_str().unwrap_or("?").to_string();
        *by_node.entry(node).or_insert(0) += 1;
    }
    by_node
}

fn names_of(nodes: &[&SimNode]) -> BTreeMap<String, String> {
    nodes.iter().map(|n| (n.addr(), n.name.clone())).collect()
}

/// Discovery of all three modes with `layout = "auto"` and the base path
/// from a Kylin 5 `kylin.properties` (the connect string too); an
/// `OUT_OF_SERVICE` node and a malformed znode are not routed; queries
/// never reach a `job` node; job calls never reach a `query` node and
/// spread over every job-capable one; `/admin/leader` says why no node
/// leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kylin5_cluster_routes_queries_and_jobs_by_mode() {
    let server = ZkServer::start();
    let zk = server.connect_string();
    let dir = TempDir::new("kylin5-props");
    let props = kylin_properties(&dir, &zk, KYLIN5_METADATA_URL);
    let all = kylin5_node(&zk, "all1", "all");
    let job1 = kylin5_node(&zk, "job1", "job");
    let job2 = kylin5_node(&zk, "job2", "job");
    let query1 = kylin5_node(&zk, "query1", "query");
    let query2 = kylin5_node(&zk, "query2", "query");
    let mut out_of_service = SimConfig::new("query-oos", "query")
        .layout("kylin-5")
        .base_path(KYLIN5_BASE);
    out_of_service.disabled = true;
    let out_of_service = SimNode::start(&zk, &out_of_service);
    let gateway = gateway("auto", &format!("kylin_properties = \"{props}\""));
    let c = client();
    let names = names_of(&[&all, &job1, &job2, &query1, &query2, &out_of_service]);

    let expected: BTreeMap<String, Vec<String>> = [
        ("all1", "all"),
        ("job1", "job"),
        ("job2", "job"),
        ("query1", "query"),
        ("query2", "query"),
    ]
    .into_iter()
    .map(|(name, mode)| (name.to_string(), vec![mode.to_string()]))
    .collect();
    poll_until(
        "the five enabled Kylin 5 nodes in the view",
        WAIT,
        || async { modes_in_view(&c, &gateway, &names).await == expected },
    )
    .await;
    let seen = nodes(&c, &gateway).await.unwrap();
    assert_eq!(seen.len(), 6, "the OUT_OF_SERVICE node is listed: {seen:?}");
    assert!(seen.iter().all(|n| !n.is_leader), "{seen:?}");

    // A malformed registration is skipped and counted; the rest serves.
    let zk_client = zookeeper::client(&zk).await;
    let before = metric(&c, &gateway, "kgw_discovery_malformed_znodes_total").await;
    zk_client
        .create(
            &format!("{KYLIN5_BASE}/services/query/not-json"),
            b"{oops",
            &CreateMode::Ephemeral.with_acls(Acls::anyone_all()),
        )
        .await
        .expect("create a malformed instance znode");
    poll_until("the malformed znode counted", WAIT, || async {
        metric(&c, &gateway, "kgw_discovery_malformed_znodes_total").await >= before + 1.0
    })
    .await;

    let leader = leader(&c, &gateway).await;
    assert_eq!(leader["leader"], serde_json::Value::Null, "{leader}");
    assert_eq!(leader["reason"], NO_ELECTION, "{leader}");
    assert_eq!(leader["job_routing"], "any-job-node", "{leader}");

    let queries = spread(&c, &gateway, "POST", "/kylin/api/query", 60).await;
    assert!(
        queries
            .keys()
            .all(|n| ["all1", "query1", "query2"].contains(&n.as_str())),
        "a query reached a node that does not serve queries: {queries:?}"
    );
    let mut jobs = spread(&c, &gateway, "PUT", "/kylin/api/models/m1/segments", 45).await;
    for (node, count) in spread(&c, &gateway, "PUT", "/kylin/api/jobs/status", 45).await {
        *jobs.entry(node).or_insert(0) += count;
    }
    assert_eq!(
        jobs.keys().collect::<Vec<_>>(),
        ["all1", "job1", "job2"],
        "job calls must reach every job-capable node and no other: {jobs:?}"
    );
}

/// With `layout = "kylin-5"` and an explicit base path: job calls follow
/// job-capable nodes as they leave and join; with none left a job call is
/// held (never sent to the query node) until one joins; the leader drift
/// check is off and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kylin5_job_nodes_leave_and_join() {
    let server = ZkServer::start();
    let zk = server.connect_string();
    let mut job1 = kylin5_node(&zk, "job1", "job");
    let query1 = kylin5_node(&zk, "query1", "query");
    let gateway = gateway(
        "kylin-5",
        &format!("connect = \"{zk}\"\nbase_path = \"{KYLIN5_BASE}\""),
    );
    let c = client();
    let names = names_of(&[&job1, &query1]);
    poll_until("job1 and query1 in the view", WAIT, || async {
        modes_in_view(&c, &gateway, &names).await.len() == 2
    })
    .await;
    let leader = leader(&c, &gateway).await;
    assert_eq!(leader["reason"], NO_ELECTION, "{leader}");
    assert_eq!(
        leader["active_job_node_check"]["state"], "not_applicable",
        "{leader}"
    );
    assert_eq!(leader["active_job_node_check"]["reason"], NO_ELECTION);
    let jobs = spread(&c, &gateway, "PUT", "/kylin/api/jobs/j1/resume", 10).await;
    assert_eq!(jobs.keys().collect::<Vec<_>>(), ["job1"], "{jobs:?}");

    // The only job node leaves: a job call waits for the next one.
    job1.terminate();
    poll_until("job1 gone from the view", WAIT, || async {
        modes_in_view(&c, &gateway, &names).await.len() == 1
    })
    .await;
    let url = gateway.url("/kylin/api/models/m1/segments");
    let held = tokio::spawn({
        let c = c.clone();
        async move { send(&c, "POST", &url, &[], r#"{"project":"p"}"#).await }
    });
    poll_until("the job call held", WAIT, || async {
        metric(&c, &gateway, "kgw_job_holds_total").await >= 1.0
    })
    .await;
    assert!(!held.is_finished(), "a job call went out with no job node");
    let job2 = kylin5_node(&zk, "job2", "job");
    let reply = held.await.unwrap().expect("the held job call answered");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["node"], "job2", "{}", reply.text());
    let jobs = spread(&c, &gateway, "DELETE", "/kylin/api/jobs", 10).await;
    assert_eq!(jobs.keys().collect::<Vec<_>>(), ["job2"], "{jobs:?}");
    drop(job2);
}

/// Kylin 4.0: Kylin 3.1's `service/cluster_servers` and `job_engine/leader`
/// under `/kylin/<identifier>`, the identifier taken from a JDBC metadata
/// URL (whose password holds an `@`); job calls go to the elected leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kylin4_on_the_31_layout_with_a_jdbc_metadata_url() {
    let server = ZkServer::start();
    let zk = server.connect_string();
    let dir = TempDir::new("kylin4-props");
    let props = kylin_properties(
        &dir,
        &zk,
        "kylin_metadata@jdbc,url=jdbc:mysql://localhost:3306/kylin,username=root,password=p@ss/w",
    );
    let leader_node = SimNode::start(&zk, &SimConfig::new("k4-all", "all"));
    leader_node.wait_leading(WAIT);
    let query = SimNode::start(&zk, &SimConfig::new("k4-query", "query"));
    let gateway = gateway("auto", &format!("kylin_properties = \"{props}\""));
    let c = client();
    poll_until("the Kylin 4 leader in the view", WAIT, || async {
        leader(&c, &gateway).await["address"] == leader_node.addr().as_str()
    })
    .await;
    let seen = leader(&c, &gateway).await;
    assert_eq!(seen["job_routing"], "leader", "{seen}");
    let names = names_of(&[&leader_node, &query]);
    assert_eq!(modes_in_view(&c, &gateway, &names).await.len(), 2);
    let jobs = spread(&c, &gateway, "PUT", "/kylin/api/cubes/c1/rebuild", 10).await;
    assert_eq!(jobs.keys().collect::<Vec<_>>(), ["k4-all"], "{jobs:?}");
}
