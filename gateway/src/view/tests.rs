use super::*;

pub(crate) fn node(id: &str, port: u16, modes: Modes) -> Node {
    Node {
        id: id.into(),
        host: "127.0.0.1".into(),
        port,
        ssl_port: None,
        modes,
        enabled: true,
        addr: Some(([127, 0, 0, 1], port).into()),
        resolve_error: None,
    }
}

#[test]
fn modes_parse_every_kylin_form() {
    assert_eq!(Modes::parse("all"), Some(Modes::ALL));
    assert_eq!(Modes::parse("query"), Some(Modes::QUERY));
    assert_eq!(Modes::parse("JOB"), Some(Modes::JOB));
    assert_eq!(Modes::parse("query,job"), Some(Modes::ALL));
    assert_eq!(
        Modes::parse("query, stream_coordinator"),
        Some(Modes::QUERY)
    );
    assert_eq!(Modes::parse("stream_coordinator"), None);
    assert_eq!(Modes::parse(""), None);
}

#[test]
fn publish_keeps_node_state_across_updates_and_drops_leavers() {
    let publisher = ViewPublisher::new();
    assert!(!publisher.snapshot().has_view);
    let mut view = ClusterView {
        nodes: vec![node("a", 1, Modes::ALL), node("b", 2, Modes::JOB)],
        ..Default::default()
    };
    view.leader.node_id = Some("b".into());
    publisher.publish(view.clone());
    let first = publisher.snapshot();
    assert_eq!(first.query_nodes, vec![0]);
    assert_eq!(first.leader, Some(1));
    first.nodes[0]
        .state
        .in_flight
        .store(7, std::sync::atomic::Ordering::Relaxed);

    view.nodes.push(node("c", 3, Modes::QUERY));
    view.nodes[1].enabled = false;
    publisher.publish(view);
    let second = publisher.snapshot();
    assert_eq!(second.nodes[0].state.in_flight(), 7);
    assert_eq!(second.query_nodes, vec![0, 2]);
    assert_eq!(second.leader, None, "a disabled leader is not routable");
    assert!(second.version > first.version);
}

#[tokio::test]
async fn wait_for_wakes_on_publish() {
    let publisher = ViewPublisher::new();
    let p = publisher.clone();
    let waiter = tokio::spawn(async move {
        p.wait_for(
            std::time::Instant::now() + std::time::Duration::from_secs(5),
            |s| s.leader.is_some(),
        )
        .await
    });
    let mut view = ClusterView {
        nodes: vec![node("a", 1, Modes::ALL)],
        ..Default::default()
    };
    publisher.publish(view.clone());
    view.leader.node_id = Some("a".into());
    publisher.publish(view);
    let got = waiter.await.unwrap().expect("leader seen");
    assert_eq!(got.leader, Some(0));
}
