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
    for (i, in_flight) in [(0, 7), (1, 5)] {
        first.nodes[i]
            .state
            .in_flight
            .store(in_flight, std::sync::atomic::Ordering::Relaxed);
    }

    view.nodes.push(node("c", 3, Modes::QUERY));
    view.nodes[1].enabled = false;
    publisher.publish(view.clone());
    let second = publisher.snapshot();
    assert_eq!(second.nodes[0].state.in_flight(), 7);
    assert_eq!(second.nodes[1].state.in_flight(), 5, "b's state is kept");
    assert_eq!(second.query_nodes, vec![0, 2]);
    assert_eq!(second.leader, None, "a disabled leader is not routable");
    assert!(second.version > first.version);

    // b leaves: its state goes with it, so a node that later registers
    // under the same id starts afresh.
    view.nodes.remove(1);
    publisher.publish(view.clone());
    let third = publisher.snapshot();
    assert_eq!(third.position("b"), None);
    assert_eq!(third.nodes[0].state.in_flight(), 7, "a stayed");
    view.nodes.push(node("b", 2, Modes::JOB));
    publisher.publish(view);
    let fourth = publisher.snapshot();
    let b = fourth.position("b").expect("b is back");
    assert_eq!(
        fourth.nodes[b].state.in_flight(),
        0,
        "a node that left came back with the state of its old self"
    );
    assert!(!Arc::ptr_eq(&fourth.nodes[b].state, &second.nodes[1].state));
}

/// Polls `future` once; whether it is still pending.
async fn pending_after_one_poll(future: &mut (impl std::future::Future + Unpin)) -> bool {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx).is_pending())
    })
    .await
}

#[tokio::test]
async fn wait_for_wakes_on_publish() {
    let publisher = ViewPublisher::new();
    let waiter = publisher.wait_for(
        std::time::Instant::now() + std::time::Duration::from_secs(5),
        |s| s.leader.is_some(),
    );
    tokio::pin!(waiter);
    // The waiter has looked at the snapshot and blocks on the watch before
    // anything is published, so only a publish can wake it.
    assert!(
        pending_after_one_poll(&mut waiter).await,
        "nothing published yet, the waiter must wait"
    );
    let mut view = ClusterView {
        nodes: vec![node("a", 1, Modes::ALL)],
        ..Default::default()
    };
    // A publish that does not satisfy it: it checks and waits again.
    publisher.publish(view.clone());
    assert!(
        pending_after_one_poll(&mut waiter).await,
        "a view without a leader must not end the wait"
    );
    view.leader.node_id = Some("a".into());
    publisher.publish(view);
    let got = tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
        .await
        .expect("the publish did not wake the waiter")
        .expect("leader seen");
    assert_eq!(got.leader, Some(0));
}

#[test]
fn a_node_is_reached_over_tls_at_its_ssl_port_verified_by_its_advertised_host() {
    let mut plain = node("a", 7070, Modes::ALL);
    plain.host = "kylin-1.internal".into();
    plain.addr = Some(([10, 0, 0, 1], 7070).into());
    let e = endpoint(&plain, false).unwrap();
    assert!(!e.tls);
    assert_eq!(e.authority.as_str(), "10.0.0.1:7070");

    let mut with_ssl = plain.clone();
    with_ssl.ssl_port = Some(7443);
    let e = endpoint(&with_ssl, false).unwrap();
    assert!(e.tls);
    assert_eq!(e.authority.as_str(), "kylin-1.internal@10.0.0.1:7443");
    assert_eq!(e.authority.host(), "10.0.0.1");

    // upstream.tls: every node, at its sslPort or else its port.
    let e = endpoint(&plain, true).unwrap();
    assert!(e.tls);
    assert_eq!(e.authority.as_str(), "kylin-1.internal@10.0.0.1:7070");
    assert_eq!(
        endpoint(&with_ssl, true).unwrap().authority.port_u16(),
        Some(7443)
    );

    let mut unresolved = with_ssl.clone();
    unresolved.addr = None;
    assert_eq!(endpoint(&unresolved, true), None);
}

#[test]
fn the_snapshot_carries_how_each_node_is_reached() {
    let mut tls_node = node("b", 2, Modes::ALL);
    tls_node.ssl_port = Some(4443);
    let view = ClusterView {
        nodes: vec![node("a", 1, Modes::ALL), tls_node],
        ..Default::default()
    };
    let publisher = ViewPublisher::new();
    publisher.publish(view.clone());
    let snapshot = publisher.snapshot();
    assert!(!snapshot.nodes[0].tls);
    assert!(snapshot.nodes[1].tls);
    assert_eq!(
        snapshot.nodes[1].authority.as_ref().unwrap().as_str(),
        "127.0.0.1@127.0.0.1:4443"
    );
    let everywhere = ViewPublisher::with_upstream_tls(true);
    everywhere.publish(view);
    assert!(everywhere.snapshot().nodes.iter().all(|n| n.tls));
}
