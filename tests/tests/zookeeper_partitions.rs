//! ZooKeeper partitions and Curator re-registration blips, with real
//! ZooKeeper, `kylin-sim` nodes connected to it directly, and the gateway
//! reaching it through a pausable relay (`support::relay`):
//! * a partition shorter than the session serves the last view, marked
//!   stale (and `kgw_view_stale` 1), with no failed query or job;
//! * a partition longer than the session ends in a new session and a full
//!   resync: nodes that left meanwhile are gone, nodes that joined are
//!   there, the new leader is named;
//! * a flapping link never removes a node ZooKeeper still has;
//! * an instance znode deleted and re-created within
//!   `discovery.removal_grace_ms` never leaves `/admin/nodes`, and a leader
//!   whose lock lives keeps leading meanwhile;
//! * a real departure leaves within the grace plus 50 ms, and leadership
//!   moves the moment the election does, not when a grace ends.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kylin_gateway_tests::support::cluster::{
    leader_address, median, metric, nodes, poll_until, view,
};
use kylin_gateway_tests::support::gateway::Gateway;
use kylin_gateway_tests::support::http::{TestClient, client};
use kylin_gateway_tests::support::relay::Relay;
use kylin_gateway_tests::support::sim::{SimConfig, SimNode};
use kylin_gateway_tests::support::watchers::{Traffic, ViewWatch, address_set, leader_id};
use kylin_gateway_tests::support::zookeeper::{self, ZkServer, four_letter_word};
use zookeeper_client::{Acls, CreateMode};

const WAIT: Duration = Duration::from_secs(30);
const SQL: &str = r#"{"sql":"select 1","project":"p"}"#;
const BASE: &str = "/kylin/kylin_metadata";
const SERVICE_DIR: &str = "/kylin/kylin_metadata/service/cluster_servers";
const SESSIONS: &str = "kgw_zookeeper_sessions_total";
const REREGISTERED: &str = "kgw_discovery_reregistered_within_grace_total";
const DEPARTING: &str = "kgw_discovery_departing";

/// The gateway discovering from `connect` with a 4 s session (the
/// harness's server caps sessions at 4 s) and `extra` `[discovery]` keys.
fn gateway(connect: &str, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "[discovery]\nkind = \"zookeeper\"\nconnect = \"{connect}\"\nlayout = \"auto\"\n\
         session_timeout_ms = 4000\n{extra}\n\n[routing]\njob_hold_ms = 15000\n"
    ))
}

fn server_addr(server: &ZkServer) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port()))
}

async fn stale(c: &TestClient, gateway: &Gateway) -> Option<bool> {
    view(c, gateway).await["stale"].as_bool()
}

fn set<const N: usize>(addresses: [String; N]) -> BTreeSet<String> {
    addresses.into_iter().collect()
}

/// Waits until `/admin/nodes` lists exactly `expected`, fresh.
async fn wait_view(c: &TestClient, gateway: &Gateway, expected: &BTreeSet<String>) {
    poll_until("the expected nodes, fresh", WAIT, || async {
        address_set(c, gateway).await == *expected && stale(c, gateway).await == Some(false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_shorter_than_the_session_serves_the_last_view_marked_stale() {
    let server = ZkServer::start();
    let zk = server.connect_string();
    let leader = SimNode::start(&zk, &SimConfig::new("leader", "all"));
    leader.wait_leading(WAIT);
    let q1 = SimNode::start(&zk, &SimConfig::new("q1", "query"));
    let relay = Relay::start(server_addr(&server));
    let gateway = gateway(&relay.connect_string(), "");
    let c = client();
    let expected = set([leader.addr(), q1.addr()]);
    wait_view(&c, &gateway, &expected).await;
    let sessions = metric(&c, &gateway, SESSIONS).await;
    let queries = Traffic::start(&c, &gateway, "POST", "/kylin/api/query", SQL);
    let jobs = Traffic::start(&c, &gateway, "GET", "/kylin/api/jobs", "");
    let watch = ViewWatch::start(&c, &gateway, expected.clone(), true);

    let paused = Instant::now();
    relay.pause();
    let stale_at = poll_until("view marked stale", WAIT, || async {
        stale(&c, &gateway).await == Some(true)
    })
    .await;
    assert_eq!(metric(&c, &gateway, "kgw_view_stale").await, 1.0);
    assert_eq!(metric(&c, &gateway, "kgw_zookeeper_connected").await, 0.0);
    let (q0, j0) = (queries.ok(), jobs.ok());
    poll_until(
        "queries and jobs served while partitioned",
        WAIT,
        || async { queries.ok() > q0 + 20 && jobs.ok() > j0 + 20 },
    )
    .await;
    assert_eq!(stale(&c, &gateway).await, Some(true), "still partitioned");
    let resumed = Instant::now();
    relay.resume();
    let fresh_at = poll_until("view fresh again", WAIT, || async {
        stale(&c, &gateway).await == Some(false)
    })
    .await;
    assert_eq!(metric(&c, &gateway, "kgw_view_stale").await, 0.0);
    assert_eq!(metric(&c, &gateway, "kgw_zookeeper_connected").await, 1.0);
    assert_eq!(
        metric(&c, &gateway, SESSIONS).await,
        sessions,
        "a partition shorter than the session keeps the session"
    );
    let seen = watch.finish().await;
    assert!(seen.shrank.is_empty(), "the view shrank: {:?}", seen.shrank);
    assert_eq!(seen.leaderless, 0, "the leader was lost in {seen:?}");
    let served = (
        queries.finish("partition").await,
        jobs.finish("partition").await,
    );
    println!(
        "partition {:?}: stale after {:?}, fresh {:?} after resume; {} samples; \
         served {served:?} (queries, jobs), none failed",
        resumed - paused,
        stale_at - paused,
        fresh_at - resumed,
        seen.samples
    );
}

/// Waits until the server dropped the watches of the gateway's session on
/// the service directory (nobody else watches it): it expired the session.
async fn wait_session_expired(server: &ZkServer) {
    let port = server.port();
    kylin_gateway_tests::support::eventually_async(
        "ZooKeeper expiring the gateway's session",
        WAIT,
        || async move {
            four_letter_word(port, "wchp")
                .is_some_and(|watches| !watches.contains(SERVICE_DIR))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_longer_than_the_session_ends_in_a_new_session_and_a_full_resync() {
    let server = ZkServer::start();
    let zk = server.connect_string();
    let mut old_leader = SimNode::start(&zk, &SimConfig::new("old-leader", "all"));
    old_leader.wait_leading(WAIT);
    let stays = SimNode::start(&zk, &SimConfig::new("stays", "query"));
    let mut leaves = SimNode::start(&zk, &SimConfig::new("leaves", "query"));
    let relay = Relay::start(server_addr(&server));
    let gateway = gateway(&relay.connect_string(), "");
    let c = client();
    let before = set([old_leader.addr(), stays.addr(), leaves.addr()]);
    wait_view(&c, &gateway, &before).await;
    assert_eq!(leader_address(&c, &gateway).await, Some(old_leader.addr()));
    let sessions = metric(&c, &gateway, SESSIONS).await;
    let queries = Traffic::start(&c, &gateway, "POST", "/kylin/api/query", SQL);

    let paused = Instant::now();
    relay.pause();
    poll_until("view marked stale", WAIT, || async {
        stale(&c, &gateway).await == Some(true)
    })
    .await;
    // Meanwhile the cluster changes: a node and the leader leave, a new
    // node joins and leads.
    leaves.terminate();
    old_leader.terminate();
    let joins = SimNode::start(&zk, &SimConfig::new("joins", "all"));
    joins.wait_leading(WAIT);
    wait_session_expired(&server).await;
    assert_eq!(address_set(&c, &gateway).await, before, "the last view");
    assert_eq!(stale(&c, &gateway).await, Some(true));
    let ok_partitioned = queries.ok();

    let resumed = Instant::now();
    relay.resume();
    let after = set([stays.addr(), joins.addr()]);
    let synced = poll_until("a full resync", WAIT, || async {
        address_set(&c, &gateway).await == after
            && leader_address(&c, &gateway).await == Some(joins.addr())
            && stale(&c, &gateway).await == Some(false)
    })
    .await;
    let new_sessions = metric(&c, &gateway, SESSIONS).await;
    assert!(
        new_sessions > sessions,
        "a new session ({sessions} → {new_sessions})"
    );
    // Queries to the departed nodes were retried on live ones.
    let served = queries.finish("long partition").await;
    println!(
        "partition {:?}; full resync {:?} after resume; {served} queries served \
         ({ok_partitioned} before the resume), none failed",
        resumed - paused,
        synced - resumed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_link_never_removes_a_node_zookeeper_still_has() {
    let server = ZkServer::start();
    let zk = server.connect_string();
    let leader = SimNode::start(&zk, &SimConfig::new("leader", "all"));
    leader.wait_leading(WAIT);
    let q1 = SimNode::start(&zk, &SimConfig::new("q1", "query"));
    let q2 = SimNode::start(&zk, &SimConfig::new("q2", "query"));
    let relay = Relay::start(server_addr(&server));
    let gateway = gateway(&relay.connect_string(), "");
    let c = client();
    let expected = set([leader.addr(), q1.addr(), q2.addr()]);
    wait_view(&c, &gateway, &expected).await;
    let connections = relay.accepted();
    let queries = Traffic::start(&c, &gateway, "POST", "/kylin/api/query", SQL);
    let watch = ViewWatch::start(&c, &gateway, expected.clone(), true);

    // Ten 200 ms silences; every other one ends with the connection reset,
    // so the client also sees the link drop and reconnects. The sleeps are
    // the disturbance itself.
    for flap in 0..10 {
        relay.pause();
        tokio::time::sleep(Duration::from_millis(200)).await;
        if flap % 2 == 1 {
            relay.cut();
        }
        relay.resume();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_view(&c, &gateway, &expected).await;
    let seen = watch.finish().await;
    let reconnects = relay.accepted() - connections;
    assert!(reconnects >= 5, "the client reconnected {reconnects} times");
    assert!(seen.samples > 100, "only {} samples", seen.samples);
    assert!(seen.shrank.is_empty(), "the view shrank: {:?}", seen.shrank);
    assert_eq!(seen.leaderless, 0, "the leader was lost in {seen:?}");
    let served = queries.finish("flapping link").await;
    println!(
        "10 flaps: {reconnects} reconnects, {} view samples never short of a node, \
         {served} queries served, none failed",
        seen.samples
    );
}

/// Polls `metric` until it reaches `at_least`, for up to 3 s;
/// returns whether it did (the caller's assertions say what went wrong).
async fn metric_reaches(c: &TestClient, gateway: &Gateway, name: &str, at_least: f64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if metric(c, gateway, name).await >= at_least {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// The instance znode of the node at `address`, as `/admin/nodes` names it.
async fn instance_path(c: &TestClient, gateway: &Gateway, address: &str) -> String {
    let listed = nodes(c, gateway).await.unwrap_or_default();
    let node = listed
        .iter()
        .find(|n| n.address == address)
        .unwrap_or_else(|| panic!("{address} not in {listed:?}"));
    format!("{SERVICE_DIR}/{}", node.id)
}

/// Curator's re-registration: delete the instance znode, wait `gap`, create
/// it again with the same data (ephemeral, owned by `zk`'s session).
async fn blip(zk: &zookeeper_client::Client, path: &str, gap: Duration) {
    let (data, _) = zk.get_data(path).await.expect("read instance znode");
    zk.delete(path, None).await.expect("delete instance znode");
    tokio::time::sleep(gap).await;
    let options = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
    zk.create(path, &data, &options)
        .await
        .expect("re-create instance znode");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reregistration_within_the_grace_keeps_the_node_routable() {
    let server = ZkServer::start();
    let zk = server.connect_string();
    let leader = SimNode::start(&zk, &SimConfig::new("leader", "all"));
    leader.wait_leading(WAIT);
    let q1 = SimNode::start(&zk, &SimConfig::new("q1", "query"));
    // The default grace (250 ms).
    let gateway = gateway(&zk, "");
    let c = client();
    let expected = set([leader.addr(), q1.addr()]);
    wait_view(&c, &gateway, &expected).await;
    let leader_path = instance_path(&c, &gateway, &leader.addr()).await;
    let query_path = instance_path(&c, &gateway, &q1.addr()).await;
    let client = zookeeper::client(&zk).await;
    let queries = Traffic::start(&c, &gateway, "POST", "/kylin/api/query", SQL);
    let jobs = Traffic::start(&c, &gateway, "GET", "/kylin/api/jobs", "");
    let watch = ViewWatch::start(&c, &gateway, expected.clone(), true);

    // The leader first (its lock, in its own session, lives on), then the
    // query node four times, with gaps of 50 to 200 ms.
    let paths = [
        &leader_path,
        &query_path,
        &query_path,
        &query_path,
        &query_path,
    ];
    let mut counted = 0;
    for (i, path) in paths.into_iter().enumerate() {
        blip(
            &client,
            path,
            Duration::from_millis(50 + 50 * (i as u64 % 4)),
        )
        .await;
        // The gateway saw the deletion and took the new znode in grace.
        if metric_reaches(&c, &gateway, REREGISTERED, (i + 1) as f64).await {
            counted += 1;
        }
    }
    let seen = watch.finish().await;
    assert!(
        seen.shrank.is_empty(),
        "a re-registered node left the view: {:?}",
        seen.shrank
    );
    assert_eq!(seen.leaderless, 0, "the leader was lost in {seen:?}");
    assert_eq!(counted, paths.len(), "every blip seen and absorbed");
    let served = (queries.finish("blips").await, jobs.finish("blips").await);
    println!(
        "{} blips absorbed; {} view samples; served {served:?} (queries, jobs), none failed",
        paths.len(),
        seen.samples
    );
}

/// Asserts `/admin/leader` names `id` throughout `how_long`; returns when
/// it stopped looking.
async fn keeps_leading(c: &TestClient, gateway: &Gateway, id: &str, how_long: Duration) -> Instant {
    let until = Instant::now() + how_long;
    loop {
        assert_eq!(leader_id(c, gateway).await.as_deref(), Some(id));
        let now = Instant::now();
        if now >= until {
            return now;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departed_leader_keeps_leading_only_while_its_lock_lives() {
    const GRACE_MS: u64 = 1000;
    let server = ZkServer::start();
    let zk = server.connect_string();
    let mut a = SimNode::start(&zk, &SimConfig::new("a", "all"));
    a.wait_leading(WAIT);
    let b = SimNode::start(&zk, &SimConfig::new("b", "all"));
    let gateway = gateway(&zk, &format!("removal_grace_ms = {GRACE_MS}"));
    let c = client();
    wait_view(&c, &gateway, &set([a.addr(), b.addr()])).await;
    assert_eq!(leader_address(&c, &gateway).await, Some(a.addr()));
    let a_id = leader_id(&c, &gateway).await.expect("a leads");
    let path = instance_path(&c, &gateway, &a.addr()).await;
    let client = zookeeper::client(&zk).await;

    // a's instance goes; its lock (its own session) stays: the election
    // still names a, so a leads, in grace, until the lock goes.
    let watch = ViewWatch::start(&c, &gateway, set([a.addr()]), true);
    client
        .delete(&path, None)
        .await
        .expect("delete a's instance");
    let deleted = Instant::now();
    let term_sent = keeps_leading(&c, &gateway, &a_id, Duration::from_millis(300)).await;
    a.process_signal_term();
    let moved = poll_until("b named leader", WAIT, || async {
        leader_address(&c, &gateway).await == Some(b.addr())
    })
    .await;
    let lock_gone = a
        .wait_logged_since(term_sent, &format!("deleted {BASE}/job_engine"), WAIT)
        .0;
    let in_view_after_move = address_set(&c, &gateway).await.contains(&a.addr());
    let seen = watch.finish().await;
    let gone = poll_until("a leaves the view", WAIT, || async {
        !address_set(&c, &gateway).await.contains(&a.addr())
    })
    .await;
    a.terminate();
    let leadership = moved.saturating_duration_since(lock_gone);
    let departure = gone - deleted;
    println!(
        "grace {GRACE_MS} ms: leadership moved {leadership:?} after the lock went \
         ({:?} after the instance), a left the view {departure:?} after its instance",
        moved - deleted
    );
    assert!(
        leadership < Duration::from_millis(100),
        "leadership waited {leadership:?}"
    );
    assert!(
        in_view_after_move,
        "a was still in its grace when b took over"
    );
    assert!(
        seen.shrank.is_empty() && seen.leaderless == 0,
        "before the lock went a stayed, leading: {seen:?}"
    );
    // One sample on a shared machine: the grace + 50 ms bound is asserted
    // on a median in `real_departure_leaves_within_the_grace_plus_50ms`.
    assert!(
        departure >= Duration::from_millis(GRACE_MS - 20)
            && departure <= Duration::from_millis(GRACE_MS + 150),
        "departure after {departure:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_departure_leaves_within_the_grace_plus_50ms() {
    let server = ZkServer::start();
    let zk = server.connect_string();
    let leader = SimNode::start(&zk, &SimConfig::new("leader", "all"));
    leader.wait_leading(WAIT);
    // The default grace (250 ms).
    let gateway = gateway(&zk, "");
    let c = client();
    wait_view(&c, &gateway, &set([leader.addr()])).await;
    let queries = Traffic::start(&c, &gateway, "POST", "/kylin/api/query", SQL);
    let mut departures = Vec::new();
    for round in 0..5 {
        // The node answers through its grace: a node that stops earlier
        // costs connect failures that only retries hide.
        let config = SimConfig::new(&format!("n{round}"), "query").drain_ms(400);
        let mut node = SimNode::start(&zk, &config);
        let addr = node.addr();
        poll_until("registration in view", WAIT, || async {
            address_set(&c, &gateway).await.contains(&addr)
        })
        .await;
        let sent = Instant::now();
        node.process_signal_term();
        let gone = poll_until("departure from the view", WAIT, || async {
            !address_set(&c, &gateway).await.contains(&addr)
        })
        .await;
        let deleted = node
            .wait_logged_since(sent, &format!("deleted {SERVICE_DIR}/"), WAIT)
            .0;
        departures.push(gone.saturating_duration_since(deleted));
        node.terminate();
    }
    let served = queries.finish("departures").await;
    println!(
        "instance deleted → gone from /admin/nodes: {departures:?}; {served} queries, none failed"
    );
    let typical = median(departures.clone());
    assert!(
        typical <= Duration::from_millis(300) && typical >= Duration::from_millis(230),
        "departures {departures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departure_pending_when_the_link_drops_waits_for_the_resync() {
    const GRACE: Duration = Duration::from_millis(500);
    let server = ZkServer::start();
    let zk = server.connect_string();
    let leader = SimNode::start(&zk, &SimConfig::new("leader", "all"));
    leader.wait_leading(WAIT);
    let q1 = SimNode::start(&zk, &SimConfig::new("q1", "query"));
    let relay = Relay::start(server_addr(&server));
    let gateway = gateway(&relay.connect_string(), "removal_grace_ms = 500");
    let c = client();
    let expected = set([leader.addr(), q1.addr()]);
    wait_view(&c, &gateway, &expected).await;
    let path = instance_path(&c, &gateway, &q1.addr()).await;
    let client = zookeeper::client(&zk).await;
    let (data, _) = client.get_data(&path).await.expect("read q1's instance");
    let watch = ViewWatch::start(&c, &gateway, expected.clone(), true);

    // q1's znode goes; the gateway sees it and starts the grace; then the
    // link drops (silent, and the connection reset so the client knows).
    client
        .delete(&path, None)
        .await
        .expect("delete q1's instance");
    let deleted = Instant::now();
    poll_until("q1 departing, in its grace", WAIT, || async {
        metric(&c, &gateway, DEPARTING).await == 1.0
    })
    .await;
    relay.pause();
    relay.cut();
    poll_until("view marked stale", WAIT, || async {
        stale(&c, &gateway).await == Some(true)
    })
    .await;
    // Well past the grace, still partitioned: q1 stays (nobody can tell
    // whether it came back). It does come back meanwhile.
    poll_until("the grace long over", WAIT, || async {
        Instant::now() > deleted + GRACE + Duration::from_millis(300)
    })
    .await;
    let options = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
    client
        .create(&path, &data, &options)
        .await
        .expect("re-create q1's instance");
    relay.resume();
    wait_view(&c, &gateway, &expected).await;
    let revived = metric_reaches(&c, &gateway, REREGISTERED, 1.0).await
        && metric(&c, &gateway, DEPARTING).await == 0.0;
    let seen = watch.finish().await;
    assert!(
        seen.shrank.is_empty(),
        "q1 left during the partition: {:?}",
        seen.shrank
    );
    assert!(revived, "the resync found q1 re-created and kept it");
    println!(
        "partitioned {:?} after the deletion; {} view samples, q1 never left",
        Instant::now() - deleted,
        seen.samples
    );
}
