use super::*;
use crate::view::{ClusterView, Modes, Node};

fn node(id: &str, port: u16) -> Node {
    Node {
        id: id.into(),
        host: "127.0.0.1".into(),
        port,
        ssl_port: None,
        modes: Modes::ALL,
        enabled: true,
        addr: Some(([127, 0, 0, 1], port).into()),
        resolve_error: None,
    }
}

fn view(nodes: &[(&str, u16)], leader: Option<&str>) -> ClusterView {
    let mut view = ClusterView {
        nodes: nodes.iter().map(|&(id, port)| node(id, port)).collect(),
        source: "static",
        ..Default::default()
    };
    view.leader.node_id = leader.map(Into::into);
    view
}

#[test]
fn ring_is_bounded_and_serves_events_newer_than_seq() {
    let events = Events::new(3);
    for i in 1..=5 {
        assert_eq!(events.record(Kind::Plugin, format!("e{i}"), json!({})), i);
    }
    let seqs = |since| {
        events
            .since(since)
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(0), vec![3, 4, 5], "the two oldest fell out");
    assert_eq!(seqs(3), vec![4, 5]);
    assert_eq!(seqs(5), Vec::<u64>::new());
    let served = events.json(4);
    assert_eq!(served["last_seq"], 5);
    assert_eq!(served["events"][0]["message"], "e5");
    assert_eq!(served["events"][0]["kind"], "plugin");
    assert!(served["events"][0]["time_ms"].as_u64().unwrap() > 1_600_000_000_000);
}

#[test]
fn view_diff_records_nodes_leaving_and_leader_changes() {
    let publisher = ViewPublisher::new();
    let events = Events::new(CAPACITY);
    let mut diff = ViewDiff::default();
    let t0 = Instant::now();
    publisher.publish(view(&[("a", 1), ("b", 2)], Some("a")));
    diff.observe(&publisher.snapshot(), &events, t0);
    // Observing the same snapshot again records nothing.
    diff.observe(&publisher.snapshot(), &events, t0);
    assert_eq!(events.since(0).len(), 1);

    publisher.publish(view(&[("b", 2)], None));
    diff.observe(&publisher.snapshot(), &events, t0 + Duration::from_secs(1));
    publisher.publish(view(&[("b", 2), ("c", 3)], Some("b")));
    diff.observe(
        &publisher.snapshot(),
        &events,
        t0 + Duration::from_millis(3_500),
    );

    let got = events.since(1);
    let kinds: Vec<Kind> = got.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![Kind::View, Kind::Leader, Kind::View, Kind::Leader],
        "{got:#?}"
    );
    assert_eq!(got[0].detail["removed"], json!(["a"]));
    assert_eq!(got[1].detail["old"], "a");
    assert_eq!(got[1].detail["new"], Value::Null);
    assert_eq!(got[2].detail["added"], json!(["c"]));
    assert_eq!(got[3].detail["old"], Value::Null);
    assert_eq!(got[3].detail["new"], "b");
    assert_eq!(got[3].detail["leaderless_ms"], 2_500);
    assert!(
        got[3].message.contains("after 2.5 s leaderless"),
        "{}",
        got[3].message
    );
}

#[test]
fn view_diff_records_stale_unroutable_and_readmission() {
    let publisher = ViewPublisher::new();
    let events = Events::new(CAPACITY);
    let mut diff = ViewDiff::default();
    let now = Instant::now();
    publisher.publish(view(&[("a", 1), ("b", 2)], Some("a")));
    diff.observe(&publisher.snapshot(), &events, now);

    let mut next = view(&[("a", 1), ("b", 2)], Some("a"));
    next.nodes[1].enabled = false;
    publisher.publish(next);
    publisher.set_stale(true);
    // An ejection that has already run out by the next look.
    let snapshot = publisher.snapshot();
    snapshot.nodes[0]
        .state
        .ejected_until_ms
        .store(now_ms() + 60_000, std::sync::atomic::Ordering::Relaxed);
    diff.observe(&snapshot, &events, now);
    snapshot.nodes[0]
        .state
        .ejected_until_ms
        .store(0, std::sync::atomic::Ordering::Relaxed);
    diff.observe(&snapshot, &events, now);

    let got = events.since(1);
    assert_eq!(got[0].kind, Kind::View);
    assert_eq!(
        got[0].detail["unroutable"],
        json!([{"id": "b", "reason": "disabled"}])
    );
    assert_eq!(got[0].detail["stale"], true);
    assert_eq!(got[1].kind, Kind::Readmitted, "{got:#?}");
    assert_eq!(got[1].detail["node"], "a");
    assert_eq!(got.len(), 2);
}
