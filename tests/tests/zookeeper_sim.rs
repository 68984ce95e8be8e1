//! The simulator against real ZooKeeper and real Curator, without the
//! gateway: its znodes have the paths and JSON Curator writes for each
//! release, it elects a job-engine leader the way LeaderSelector does
//! (failover on SIGTERM at once, on SIGKILL after session expiry), it comes
//! back after a ZooKeeper restart, and Curator's own ServiceDiscovery and
//! LeaderSelector read its znodes as Kylin's would.

use std::time::Duration;

use kylin_gateway_tests::support::curator::CuratorNode;
use kylin_gateway_tests::support::http::{client, get};
use kylin_gateway_tests::support::sim::{SimConfig, SimNode};
use kylin_gateway_tests::support::zookeeper::{self, ZkServer};
use kylin_gateway_tests::support::{eventually, eventually_async};

const BASE: &str = "/kylin/kylin_metadata";

async fn children(zk: &zookeeper_client::Client, path: &str) -> Vec<String> {
    let mut children = zk.list_children(path).await.unwrap_or_default();
    children.sort();
    children
}

async fn json_at(zk: &zookeeper_client::Client, path: &str) -> serde_json::Value {
    let (data, _) = zk.get_data(path).await.expect("get_data");
    serde_json::from_slice(&data).expect("instance JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_znodes_match_each_release() {
    let server = ZkServer::start();
    let zk = zookeeper::client(&server.connect_string()).await;
    let kylin31 = SimNode::start(
        &server.connect_string(),
        &SimConfig::new("k31", "query,job"),
    );
    let kylin30 = SimNode::start(
        &server.connect_string(),
        &SimConfig::new("k30", "job")
            .layout("kylin-3.0")
            .base_path("/kylin/m30"),
    );
    let kap = SimNode::start(
        &server.connect_string(),
        &SimConfig::new("kap", "all")
            .layout("kap-2.4")
            .base_path("/kylin/kap"),
    );
    let curator5 = SimNode::start(
        &server.connect_string(),
        &SimConfig::new("c5", "query")
            .base_path("/kylin/c5")
            .curator5(),
    );
    for node in [&kylin31, &kylin30, &kap] {
        node.wait_leading(Duration::from_secs(10));
    }

    // Kylin 3.1: cluster_servers, raw mode, enabled, container parents.
    let dir = format!("{BASE}/service/cluster_servers");
    let ids = children(&zk, &dir).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    let (data, stat) = zk.get_data(&format!("{dir}/{}", ids[0])).await.unwrap();
    let text = String::from_utf8(data).unwrap();
    assert!(stat.ephemeral_owner > 0, "instance must be EPHEMERAL");
    assert!(
        text.starts_with(&format!(
            r#"{{"name":"cluster_servers","id":"{}","address":"127.0.0.1","port":{},"sslPort":null,"payload":{{"description":"query,job"}},"registrationTimeUTC":"#,
            ids[0], kylin31.port
        )),
        "{text}"
    );
    assert!(
        text.ends_with(r#","serviceType":"DYNAMIC","uriSpec":null,"enabled":true}"#),
        "{text}"
    );
    // The election node: protected name, data host:port.
    let locks = children(&zk, &format!("{BASE}/job_engine/leader")).await;
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert!(
        locks[0].starts_with("_c_") && locks[0].contains("-lock-00000000"),
        "{locks:?}"
    );
    let (lock_data, lock_stat) = zk
        .get_data(&format!("{BASE}/job_engine/leader/{}", locks[0]))
        .await
        .unwrap();
    assert_eq!(String::from_utf8(lock_data).unwrap(), kylin31.addr());
    assert!(lock_stat.ephemeral_owner > 0);

    // Kylin 3.0: service "kylin", description host:port:mode.
    let ids = children(&zk, "/kylin/m30/service/kylin").await;
    let json = json_at(&zk, &format!("/kylin/m30/service/kylin/{}", ids[0])).await;
    assert_eq!(json["name"], "kylin");
    assert_eq!(
        json["payload"]["description"],
        format!("{}:job", kylin30.addr())
    );
    assert_eq!(json["enabled"], true);

    // KAP 2.4: no enabled field, description host:port, election data the bare IP.
    let ids = children(&zk, "/kylin/kap/service/kylin").await;
    let json = json_at(&zk, &format!("/kylin/kap/service/kylin/{}", ids[0])).await;
    assert_eq!(json["payload"]["description"], kap.addr());
    assert!(json.get("enabled").is_none(), "{json}");
    let locks = children(&zk, "/kylin/kap/job_engine/leader").await;
    let (lock_data, _) = zk
        .get_data(&format!("/kylin/kap/job_engine/leader/{}", locks[0]))
        .await
        .unwrap();
    assert_eq!(lock_data, b"127.0.0.1");

    // Curator 5: @class in payload, no election for a query node.
    let ids = children(&zk, "/kylin/c5/service/cluster_servers").await;
    let json = json_at(
        &zk,
        &format!("/kylin/c5/service/cluster_servers/{}", ids[0]),
    )
    .await;
    assert_eq!(json["payload"]["@class"], "java.util.LinkedHashMap");
    assert_eq!(json["payload"]["description"], "query");
    assert!(
        zk.check_stat("/kylin/c5/job_engine")
            .await
            .unwrap()
            .is_none()
    );

    // HTTP side.
    let http = client();
    let reply = get(&http, &format!("http://{}/kylin/api/cubes", kylin31.addr()))
        .await
        .unwrap();
    assert_eq!(reply.json()["node"], "k31");
    assert_eq!(reply.json()["leader"], true);
    let active = get(
        &http,
        &format!(
            "http://{}/kylin/api/service_discovery/state/is_active_job_node",
            kylin31.addr()
        ),
    )
    .await
    .unwrap();
    assert_eq!(active.text(), "true");
    let query = kylin_gateway_tests::support::http::send(
        &http,
        "POST",
        &format!("http://{}/kylin/api/query", kylin30.addr()),
        &[],
        "{}",
    )
    .await
    .unwrap();
    assert_eq!(query.status, 400, "a job-only node rejects queries");
    drop(curator5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_removes_znodes_at_once_and_the_next_candidate_leads() {
    let server = ZkServer::start();
    let zk = zookeeper::client(&server.connect_string()).await;
    let mut first = SimNode::start(&server.connect_string(), &SimConfig::new("first", "all"));
    first.wait_leading(Duration::from_secs(10));
    let second = SimNode::start(&server.connect_string(), &SimConfig::new("second", "all"));
    let _query = SimNode::start(&server.connect_string(), &SimConfig::new("query", "query"));
    eventually("second campaigns", Duration::from_secs(10), || {
        second.logged_since(second.ready_at - Duration::from_secs(5), "candidate ")
    });
    assert!(!second.says_leader());
    assert_eq!(
        children(&zk, &format!("{BASE}/service/cluster_servers"))
            .await
            .len(),
        3
    );
    assert_eq!(
        children(&zk, &format!("{BASE}/job_engine/leader"))
            .await
            .len(),
        2
    );

    let (sent, status) = first.terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "kylin-sim exits 0 on SIGTERM: {status:?}"
    );
    // Its znodes are gone by the time it exits, not after session expiry.
    assert_eq!(
        children(&zk, &format!("{BASE}/service/cluster_servers"))
            .await
            .len(),
        2
    );
    assert_eq!(
        children(&zk, &format!("{BASE}/job_engine/leader"))
            .await
            .len(),
        1
    );
    let (at, _) = eventually("second leads", Duration::from_secs(5), || {
        second.logged_since(sent, ": LEADER ")
    });
    println!("simulator leader switch after SIGTERM: {:?}", at - sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_leaves_znodes_until_the_session_expires() {
    let server = ZkServer::start();
    let zk = zookeeper::client(&server.connect_string()).await;
    let mut first = SimNode::start(
        &server.connect_string(),
        &SimConfig::new("first", "all").session_timeout_ms(2_000),
    );
    first.wait_leading(Duration::from_secs(10));
    let second = SimNode::start(&server.connect_string(), &SimConfig::new("second", "job"));
    let killed = first.kill();
    assert_eq!(
        children(&zk, &format!("{BASE}/service/cluster_servers"))
            .await
            .len(),
        2
    );
    let (at, _) = eventually("second leads after expiry", Duration::from_secs(10), || {
        second.logged_since(killed, ": LEADER ")
    });
    let waited = at - killed;
    println!("simulator leader switch after SIGKILL (session 2 s): {waited:?}");
    assert!(
        waited >= Duration::from_millis(1_500),
        "switched before expiry: {waited:?}"
    );
    assert_eq!(
        children(&zk, &format!("{BASE}/service/cluster_servers"))
            .await
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_come_back_after_a_zookeeper_restart() {
    let mut server = ZkServer::start();
    let node = SimNode::start(&server.connect_string(), &SimConfig::new("n", "all"));
    let since = std::time::Instant::now();
    server.restart();
    eventually("re-registered", Duration::from_secs(15), || {
        node.logged_since(since, "reconnected; registering again")
    });
    let zk = zookeeper::client(&server.connect_string()).await;
    eventually_async(
        "instance and lock back",
        Duration::from_secs(15),
        || async {
            let instances = children(&zk, &format!("{BASE}/service/cluster_servers")).await;
            let locks = children(&zk, &format!("{BASE}/job_engine/leader")).await;
            (instances.len() == 1 && locks.len() == 1 && node.says_leader()).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curator_reads_the_simulators_znodes_and_agrees_on_the_leader() {
    let server = ZkServer::start();
    let leader = SimNode::start(&server.connect_string(), &SimConfig::new("sim-all", "all"));
    leader.wait_leading(Duration::from_secs(10));
    let query = SimNode::start(&server.connect_string(), &SimConfig::new("sim-q", "query"));
    let c5 = SimNode::start(
        &server.connect_string(),
        &SimConfig::new("sim-c5", "query").curator5(),
    );
    // A Curator node that only watches (query mode: no campaign).
    let curator = CuratorNode::start(&server.connect_string(), BASE, "curator-q", "query");
    let http = client();
    let instances = eventually_async(
        "curator sees 4 instances",
        Duration::from_secs(15),
        || async {
            let reply = get(&http, &curator.url("/curator/instances")).await.ok()?;
            let list = reply.json();
            (list.as_array()?.len() == 4).then_some(list)
        },
    )
    .await;
    for (node, mode) in [(&leader, "all"), (&query, "query"), (&c5, "query")] {
        let seen = instances
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["port"] == node.port)
            .unwrap_or_else(|| panic!("Curator does not see {}: {instances}", node.name));
        assert_eq!(seen["address"], "127.0.0.1");
        assert_eq!(seen["description"], mode);
        assert_eq!(seen["enabled"], true);
    }
    let reply = get(&http, &curator.url("/curator/leader"))
        .await
        .unwrap()
        .json();
    assert_eq!(reply["leader"], leader.addr(), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_and_curator_share_one_election() {
    let server = ZkServer::start();
    let mut curator = CuratorNode::start(&server.connect_string(), BASE, "curator-all", "all");
    eventually("curator leads", Duration::from_secs(20), || {
        curator.says_leader().then_some(())
    });
    let joined = std::time::Instant::now();
    let sim = SimNode::start(&server.connect_string(), &SimConfig::new("sim", "all"));
    // The sim has campaigned: it queued behind Curator's lock node (or,
    // wrongly, took the lead), and said so.
    let (_, campaign) = eventually("the sim campaigns", Duration::from_secs(10), || {
        sim.logged_since(joined, ", watching ")
            .or_else(|| sim.logged_since(joined, ": LEADER "))
    });
    assert!(
        !sim.says_leader(),
        "the sim leads while Curator does: {campaign}"
    );
    let http = client();
    let reply = get(&http, &curator.url("/curator/leader"))
        .await
        .unwrap()
        .json();
    assert_eq!(reply["leader"], format!("127.0.0.1:{}", curator.port));
    let since = std::time::Instant::now();
    curator.terminate();
    eventually(
        "sim leads after Curator leaves",
        Duration::from_secs(10),
        || sim.logged_since(since, ": LEADER "),
    );
}

/// ZooKeeper hides a container's type from `stat`, so the proof is the
/// server's container manager: Kylin 3.x parents (Curator 2.12
/// `creatingParentContainersIfNeeded`) vanish once empty; KAP's (Curator
/// 2.7 `creatingParentsIfNeeded`) stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kylin_parents_are_containers_and_kap_parents_persist() {
    let server = ZkServer::start_with_container_check(Duration::from_millis(100));
    let zk = zookeeper::client(&server.connect_string()).await;
    let mut kylin = SimNode::start(&server.connect_string(), &SimConfig::new("k31", "all"));
    let mut kap = SimNode::start(
        &server.connect_string(),
        &SimConfig::new("kap", "all")
            .layout("kap-2.4")
            .base_path("/kap/kylin_metadata"),
    );
    kylin.terminate();
    kap.terminate();
    eventually_async(
        "Kylin 3.1 parents deleted by the server",
        Duration::from_secs(10),
        || async {
            zk.check_stat("/kylin")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    for persistent in [
        "/kap/kylin_metadata/service/kylin",
        "/kap/kylin_metadata/job_engine/leader",
    ] {
        assert!(
            zk.check_stat(persistent).await.unwrap().is_some(),
            "{persistent} vanished"
        );
    }
    // And a node registers again into the void: parents recreated.
    let again = SimNode::start(&server.connect_string(), &SimConfig::new("again", "all"));
    assert_eq!(
        children(&zk, &format!("{BASE}/service/cluster_servers"))
            .await
            .len(),
        1
    );
    again.wait_leading(Duration::from_secs(10));
    assert_eq!(
        children(&zk, &format!("{BASE}/job_engine/leader"))
            .await
            .len(),
        1
    );
}

/// Curator's default: a leader whose connection is SUSPENDED gives up at
/// once; on reconnect it releases its old lock node and requeues behind
/// the others, so leadership moves although no session expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_leader_gives_up_and_requeues_behind_the_others() {
    let mut server = ZkServer::start();
    let first = SimNode::start(&server.connect_string(), &SimConfig::new("first", "all"));
    first.wait_leading(Duration::from_secs(10));
    let second = SimNode::start(&server.connect_string(), &SimConfig::new("second", "all"));
    eventually("second campaigns", Duration::from_secs(10), || {
        second.logged_since(second.ready_at - Duration::from_secs(5), "candidate ")
    });
    let since = std::time::Instant::now();
    server.restart();
    eventually(
        "first gives up on suspension",
        Duration::from_secs(10),
        || first.logged_since(since, ": NOT LEADER (Disconnected)"),
    );
    second.wait_leading(Duration::from_secs(15));
    eventually(
        "first requeued as a candidate",
        Duration::from_secs(10),
        || first.logged_since(since, "candidate "),
    );
    assert!(!first.says_leader());
    let zk = zookeeper::client(&server.connect_string()).await;
    assert_eq!(
        children(&zk, &format!("{BASE}/job_engine/leader"))
            .await
            .len(),
        2
    );
}
