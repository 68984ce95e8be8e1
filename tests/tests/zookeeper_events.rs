//! The event timeline and per-node rates end to end: simulated Kylin nodes
//! registered in real ZooKeeper, the gateway discovering them. A node
//! leaving and a leader change appear on `/admin/events` (and only events
//! newer than `since` are served); traffic shows as a rate and latency
//! quantiles on `/admin/nodes`.

use std::time::Duration;

use kylin_gateway_tests::support::cluster::{ThreeNodes, node_id, poll_until};
use kylin_gateway_tests::support::http::{TestClient, client, get, send};

const WAIT: Duration = Duration::from_secs(20);

async fn admin_json(c: &TestClient, url: &str) -> serde_json::Value {
    get(c, url).await.expect("admin API").json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_leaving_and_leader_change_appear_on_the_timeline() {
    let ThreeNodes {
        mut first,
        second,
        mut query,
        gateway,
        server: _zookeeper,
    } = ThreeNodes::start(WAIT).await;
    let c = client();
    let first_id = node_id(&c, &gateway, &first.addr()).await;
    let second_id = node_id(&c, &gateway, &second.addr()).await;
    let query_id = node_id(&c, &gateway, &query.addr()).await;
    poll_until("first leads in the gateway's view", WAIT, || async {
        let leader = admin_json(&c, &gateway.admin_url("/admin/leader")).await;
        leader["leader"] == first_id.as_str()
    })
    .await;

    // Traffic shows as a rate and latency quantiles.
    for _ in 0..30 {
        let reply = send(
            &c,
            "POST",
            &gateway.url("/kylin/api/query"),
            &[],
            r#"{"sql":"select 1","project":"p"}"#,
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let nodes = admin_json(&c, &gateway.admin_url("/admin/nodes")).await;
    let windows: Vec<&serde_json::Value> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["window"])
        .collect();
    let rate: f64 = windows
        .iter()
        .map(|w| w["requests_per_second"].as_f64().unwrap())
        .sum();
    assert!(
        (rate - 30.0 / 60.0).abs() < 1e-9,
        "30 requests in the last minute: {nodes:#}"
    );
    let served: Vec<_> = windows
        .iter()
        .filter(|w| w["requests_per_second"].as_f64().unwrap() > 0.0)
        .collect();
    for w in &served {
        assert!(w["p50_ms"].as_f64().unwrap() > 0.0, "{w}");
        assert!(w["p99_ms"].as_f64().unwrap() >= w["p50_ms"].as_f64().unwrap());
        assert_eq!(w["series"].as_array().unwrap().len(), 30);
    }
    let in_series: u64 = served
        .iter()
        .flat_map(|w| w["series"].as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(in_series, 30, "{nodes:#}");

    let events_url = |since: u64| gateway.admin_url(&format!("/admin/events?since={since}"));
    let before = admin_json(&c, &events_url(0)).await;
    let mark = before["last_seq"].as_u64().unwrap();
    assert!(
        before["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "zookeeper" && e["detail"]["state"] == "connected"),
        "the session's start is on the timeline: {before:#}"
    );

    // A node leaves.
    query.terminate();
    poll_until("removal on the timeline", WAIT, || async {
        let page = admin_json(&c, &events_url(mark)).await;
        page["events"].as_array().unwrap().iter().any(|e| {
            e["kind"] == "view"
                && e["detail"]["removed"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|id| id == query_id.as_str()))
        })
    })
    .await;

    // The leader leaves: the other job node takes over.
    first.terminate();
    poll_until("leader change on the timeline", WAIT, || async {
        let page = admin_json(&c, &events_url(mark)).await;
        page["events"].as_array().unwrap().iter().any(|e| {
            e["kind"] == "leader" && e["detail"]["new"] == second_id.as_str() && {
                // Either straight from the old leader, or after a
                // leaderless gap recorded with the old one's loss.
                e["detail"]["old"] == first_id.as_str() || e["detail"]["leaderless_ms"].is_u64()
            }
        })
    })
    .await;
    let page = admin_json(&c, &events_url(mark)).await;
    let events = page["events"].as_array().unwrap();
    assert!(
        events.iter().all(|e| e["seq"].as_u64().unwrap() > mark),
        "only events after since={mark}: {page:#}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "leader" && e["detail"]["old"] == first_id.as_str()),
        "the old leader is named: {page:#}"
    );
    let last = page["last_seq"].as_u64().unwrap();
    let none = admin_json(&c, &events_url(last)).await;
    assert_eq!(none["events"], serde_json::json!([]), "{none:#}");
}
