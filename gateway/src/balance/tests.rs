use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::health::Ejection;
use super::*;
use crate::view::{ClusterView, Modes, Node, ViewPublisher};

fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        host: id.into(),
        port: 7070,
        ssl_port: None,
        modes: Modes::ALL,
        enabled: true,
        addr: Some(([127, 0, 0, 1], 7070).into()),
        resolve_error: None,
    }
}

fn snapshot(ids: &[&str]) -> std::sync::Arc<Snapshot> {
    let publisher = ViewPublisher::new();
    publisher.publish(ClusterView {
        nodes: ids.iter().map(|id| node(id)).collect(),
        ..Default::default()
    });
    publisher.snapshot()
}

fn spread(balancer: &Balancer, s: &Snapshot, n: usize) -> HashMap<usize, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let i = balancer
            .pick(s, &s.query_nodes, None, &Tried::default(), 1)
            .unwrap();
        *counts.entry(i).or_default() += 1;
    }
    counts
}

#[test]
fn round_robin_visits_each_node_equally() {
    let s = snapshot(&["a", "b", "c"]);
    let counts = spread(&Balancer::RoundRobin(AtomicUsize::new(0)), &s, 300);
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![100; 3]);
}

#[test]
fn power_of_two_prefers_the_less_loaded_node() {
    let s = snapshot(&["a", "b"]);
    s.nodes[0].state.in_flight.store(10, Ordering::Relaxed);
    let counts = spread(&Balancer::PowerOfTwoChoices, &s, 100);
    assert_eq!(counts.get(&1), Some(&100));
    let s = snapshot(&["a", "b", "c", "d"]);
    let counts = spread(&Balancer::PowerOfTwoChoices, &s, 4000);
    assert_eq!(counts.len(), 4, "every node gets traffic: {counts:?}");
}

#[test]
fn tried_nodes_are_skipped() {
    let s = snapshot(&["a", "b"]);
    let mut tried = Tried::default();
    tried.insert(&s.nodes[0].node.id);
    for balancer in [
        Balancer::PowerOfTwoChoices,
        Balancer::RoundRobin(AtomicUsize::new(0)),
        Balancer::BoundedConsistentHash { load_factor: 1.25 },
    ] {
        for key in 0..50u64 {
            let pick = balancer.pick(&s, &s.query_nodes, Some(key * 7919), &tried, 1);
            assert_eq!(pick, Some(1));
        }
    }
    tried.insert(&s.nodes[1].node.id);
    assert_eq!(
        Balancer::PowerOfTwoChoices.pick(&s, &s.query_nodes, None, &tried, 1),
        None
    );
}

#[test]
fn a_tried_node_is_known_by_id_in_a_later_snapshot() {
    // "b" failed while it was second; a node joining in front moves it to
    // third, and the node now second ("a2") was never tried.
    let before = snapshot(&["a", "b", "c"]);
    let after = snapshot(&["a", "a2", "b", "c"]);
    let mut tried = Tried::default();
    tried.insert(&before.nodes[1].node.id);
    assert!(tried.contains_node(&after, 2), "b, now third, is tried");
    assert!(!tried.contains_node(&after, 1), "a2, now second, is not");
    let rr = Balancer::RoundRobin(AtomicUsize::new(0));
    let picks: Vec<usize> = (0..8)
        .filter_map(|_| rr.pick(&after, &after.query_nodes, None, &tried, 1))
        .collect();
    assert!(!picks.contains(&2) && picks.contains(&1), "{picks:?}");
}

#[test]
fn tried_and_ring_walks_work_past_128_nodes() {
    let ids: Vec<String> = (0..300).map(|i| format!("n{i:03}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let s = snapshot(&refs);
    let mut walked: Vec<usize> = s.ring.walk(hash_key(b"k")).collect();
    assert_eq!(walked.len(), 300, "each node once");
    walked.sort_unstable();
    walked.dedup();
    assert_eq!(walked.len(), 300);
    let mut tried = Tried::default();
    for node in &s.nodes[..299] {
        tried.insert(&node.node.id);
    }
    let hash = Balancer::BoundedConsistentHash { load_factor: 1.25 };
    assert_eq!(hash.pick(&s, &s.query_nodes, Some(7), &tried, 1), Some(299));
}

#[test]
fn ejected_nodes_are_avoided_until_readmitted() {
    let s = snapshot(&["a", "b"]);
    let ejection = Ejection {
        threshold: 2,
        base: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
    let state = &s.nodes[0].state;
    assert!(!ejection.record_failure(state, 1000));
    assert!(ejection.record_failure(state, 1000));
    let rr = Balancer::RoundRobin(AtomicUsize::new(0));
    for _ in 0..10 {
        assert_eq!(
            rr.pick(&s, &s.query_nodes, None, &Tried::default(), 1050),
            Some(1)
        );
    }
    // Re-admitted after the backoff.
    let picks: Vec<_> = (0..4)
        .map(|_| {
            rr.pick(&s, &s.query_nodes, None, &Tried::default(), 1101)
                .unwrap()
        })
        .collect();
    assert!(picks.contains(&0));
    // Ejected again right away: the backoff doubles.
    ejection.record_failure(state, 1200);
    ejection.record_failure(state, 1200);
    assert!(state.is_ejected(1399));
    assert!(!state.is_ejected(1400));
    ejection.record_success(state);
    assert_eq!(state.ejections.load(Ordering::Relaxed), 0);
}

#[test]
fn all_ejected_still_routes_rather_than_failing() {
    let s = snapshot(&["a"]);
    s.nodes[0]
        .state
        .ejected_until_ms
        .store(u64::MAX, Ordering::Relaxed);
    assert_eq!(
        Balancer::PowerOfTwoChoices.pick(&s, &s.query_nodes, None, &Tried::default(), 5),
        Some(0)
    );
}

#[test]
fn consistent_hash_sticks_and_moves_minimally() {
    let ids = ["a", "b", "c", "d", "e"];
    let s = snapshot(&ids);
    let chash = Balancer::BoundedConsistentHash { load_factor: 1.25 };
    let keys: Vec<u64> = (0..2000u64)
        .map(|k| hash_key(format!("key-{k}").as_bytes()))
        .collect();
    let owner = |s: &Snapshot, key: u64| {
        let i = chash
            .pick(s, &s.query_nodes, Some(key), &Tried::default(), 1)
            .unwrap();
        s.nodes[i].node.id.clone()
    };
    let before: Vec<_> = keys.iter().map(|&k| owner(&s, k)).collect();
    let again: Vec<_> = keys.iter().map(|&k| owner(&s, k)).collect();
    assert_eq!(before, again, "same key, same node");
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for id in &before {
        *per_node.entry(id).or_default() += 1;
    }
    assert_eq!(per_node.len(), 5);
    assert!(per_node.values().all(|&c| c > 200), "spread: {per_node:?}");

    // "c" leaves: only its keys move.
    let s2 = snapshot(&["a", "b", "d", "e"]);
    let after: Vec<_> = keys.iter().map(|&k| owner(&s2, k)).collect();
    for (b, a) in before.iter().zip(&after) {
        if &**b != "c" {
            assert_eq!(b, a, "a key not owned by the leaver moved");
        }
    }
}

#[test]
fn bounded_load_spills_a_hot_key() {
    let s = snapshot(&["a", "b", "c"]);
    let chash = Balancer::BoundedConsistentHash { load_factor: 1.25 };
    let key = hash_key(b"hot");
    let home = chash
        .pick(&s, &s.query_nodes, Some(key), &Tried::default(), 1)
        .unwrap();
    s.nodes[home].state.in_flight.store(50, Ordering::Relaxed);
    let spill = chash
        .pick(&s, &s.query_nodes, Some(key), &Tried::default(), 1)
        .unwrap();
    assert_ne!(spill, home);
}
