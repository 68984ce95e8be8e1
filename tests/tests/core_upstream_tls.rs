//! TLS to Kylin nodes end to end: a node with an `sslPort` (static
//! `ssl_port`, or registered in ZooKeeper by the simulator) is reached over
//! TLS, verified against `upstream.tls_ca` by its advertised host name (or
//! IP); a node whose certificate nobody trusts is refused without reaching
//! it, and reached only with an explicit `upstream.tls_insecure`, which is
//! logged and shown on `/admin/nodes`. The nodes are real TLS servers with
//! certificates made at test time.

use std::time::Duration;

use kylin_gateway_tests::support::backend::Backend;
use kylin_gateway_tests::support::certs::{TestCa, server_config};
use kylin_gateway_tests::support::cluster::{leader, poll_until};
use kylin_gateway_tests::support::gateway::{Gateway, Launch, TempDir};
use kylin_gateway_tests::support::http::{client, get};
use kylin_gateway_tests::support::sim::{SimConfig, SimNode};
use kylin_gateway_tests::support::zookeeper::ZkServer;

const WAIT: Duration = Duration::from_secs(20);
/// The name the TLS node advertises; mapped to loopback by `address_map`,
/// so the certificate is checked against the name, not the IP.
const NODE_HOST: &str = "kylin-tls.test";

/// One static node advertised as `NODE_HOST:7070` with `ssl_port`, and
/// `[upstream]` settings.
fn static_tls_config(ssl_port: u16, upstream: &str) -> String {
    format!(
        r#"[discovery]
kind = "static"
[[discovery.nodes]]
address = "{NODE_HOST}:7070"
ssl_port = {ssl_port}
mode = "all"
leader = true
[discovery.address_map]
"{NODE_HOST}" = "127.0.0.1"

[upstream]
retries = 0
{upstream}
"#
    )
}

async fn admin_nodes(gateway: &Gateway) -> serde_json::Value {
    get(&client(), &gateway.admin_url("/admin/nodes"))
        .await
        .unwrap()
        .json()
}

async fn query_status(gateway: &Gateway) -> (u16, serde_json::Value) {
    let reply = get(&client(), &gateway.url("/kylin/api/projects"))
        .await
        .unwrap();
    let json = serde_json::from_str(&reply.text()).unwrap_or(serde_json::Value::Null);
    (reply.status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_ssl_port_is_reached_over_tls_verified_by_its_advertised_name() {
    let ca = TestCa::new("kylin CA");
    let node = Backend::start_tls("tls-node", server_config(&ca.leaf(&[NODE_HOST]))).await;
    let dir = TempDir::new("kgw-upstream-tls");
    let ca_file = dir.path.join("ca.pem");
    ca.write(&ca_file);
    let gateway = Gateway::start(&static_tls_config(
        node.addr.port(),
        &format!("tls_ca = \"{}\"", ca_file.display()),
    ));
    gateway.wait_ready().await;
    for _ in 0..3 {
        let (status, body) = query_status(&gateway).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["node"], "tls-node");
        // The Host header the node sees is still the client's.
        assert!(
            body["headers"]["host"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")
        );
    }
    assert_eq!(node.hits(), 3);
    let nodes = admin_nodes(&gateway).await;
    assert_eq!(nodes[0]["tls"], "verified", "{nodes}");
    assert_eq!(nodes[0]["ssl_port"], node.addr.port());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_is_refused_even_from_a_trusted_ca() {
    let ca = TestCa::new("kylin CA");
    // Valid for the IP the node resolves to, not for its advertised name.
    let node = Backend::start_tls("tls-node", server_config(&ca.leaf(&["127.0.0.1"]))).await;
    let dir = TempDir::new("kgw-upstream-tls");
    let ca_file = dir.path.join("ca.pem");
    ca.write(&ca_file);
    let gateway = Gateway::start(&static_tls_config(
        node.addr.port(),
        &format!("tls_ca = \"{}\"", ca_file.display()),
    ));
    gateway.wait_ready().await;
    let (status, body) = query_status(&gateway).await;
    assert!(matches!(status, 502 | 503), "{status}: {body}");
    assert_eq!(node.hits(), 0, "no request may reach the node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_node_is_refused_by_default_and_reached_only_with_tls_insecure() {
    let unknown_ca = TestCa::new("nobody trusts this CA");
    let node = Backend::start_tls("tls-node", server_config(&unknown_ca.leaf(&[NODE_HOST]))).await;

    // System roots by default: the node's CA is not among them.
    let strict = Gateway::start(&static_tls_config(node.addr.port(), ""));
    strict.wait_ready().await;
    let (status, body) = query_status(&strict).await;
    assert!(matches!(status, 502 | 503), "{status}: {body}");
    assert_eq!(node.hits(), 0, "no request may reach the node");
    assert_eq!(admin_nodes(&strict).await[0]["tls"], "verified");
    drop(strict);

    let insecure = Gateway::launch(
        &Launch {
            log_to_file: true,
            ..Launch::default()
        },
        &static_tls_config(node.addr.port(), "tls_insecure = true"),
    );
    insecure.wait_ready().await;
    let (status, body) = query_status(&insecure).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node"], "tls-node");
    assert_eq!(admin_nodes(&insecure).await[0]["tls"], "insecure");
    let log = insecure.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("upstream.tls_insecure")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_reaches_a_node_without_ssl_port_over_tls_at_its_port() {
    let ca = TestCa::new("kylin CA");
    let node = Backend::start_tls("tls-node", server_config(&ca.leaf(&["127.0.0.1"]))).await;
    let dir = TempDir::new("kgw-upstream-tls");
    let ca_file = dir.path.join("ca.pem");
    ca.write(&ca_file);
    let gateway = Gateway::start(&format!(
        "[discovery]\nkind = \"static\"\n[[discovery.nodes]]\naddress = \"{}\"\nmode = \"all\"\nleader = true\n\n[upstream]\ntls = true\ntls_ca = \"{}\"\n",
        node.addr,
        ca_file.display()
    ));
    gateway.wait_ready().await;
    let (status, body) = query_status(&gateway).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node"], "tls-node");
    assert_eq!(admin_nodes(&gateway).await[0]["tls"], "verified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zookeeper_node_registering_ssl_port_is_reached_and_leader_checked_over_tls() {
    let ca = TestCa::new("kylin CA");
    let dir = TempDir::new("kgw-upstream-tls");
    let (cert, key, ca_file) = (
        dir.path.join("node.pem"),
        dir.path.join("node.key"),
        dir.path.join("ca.pem"),
    );
    // The simulator advertises 127.0.0.1: verified against the IP SAN.
    ca.leaf(&["127.0.0.1"]).write(&cert, &key);
    ca.write(&ca_file);
    let server = ZkServer::start();
    let zk = server.connect_string();
    let node = SimNode::start(
        &zk,
        &SimConfig::new("tls-sim", "all")
            .id("tls-sim")
            .tls(&cert, &key),
    );
    node.wait_leading(WAIT);
    let gateway = Gateway::start(&format!(
        r#"[discovery]
kind = "zookeeper"
connect = "{zk}"
session_timeout_ms = 4000
leader_check_interval_ms = 100

[upstream]
tls_ca = "{}"
"#,
        ca_file.display()
    ));
    gateway.wait_ready().await;
    let (status, body) = query_status(&gateway).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node"], "tls-sim");
    assert_eq!(body["tls"], true, "the answer came over TLS: {body}");
    let nodes = admin_nodes(&gateway).await;
    assert_eq!(nodes[0]["tls"], "verified", "{nodes}");
    assert!(nodes[0]["ssl_port"].as_u64().is_some(), "{nodes}");
    // The leader drift check asks the leader over TLS too.
    let c = client();
    poll_until("the TLS leader answers the drift check", WAIT, || async {
        leader(&c, &gateway).await["active_job_node_check"]["state"] == "agrees"
    })
    .await;
}
