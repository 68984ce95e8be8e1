//! Micro-benchmarks of the per-request routing work: classifying a typical
//! mix of Kylin paths, and each balancer's pick over a 16-node snapshot.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use kylin_gateway::balance::health::now_ms;
use kylin_gateway::balance::{Balancer, Tried, hash_key};
use kylin_gateway::classify::Classifier;
use kylin_gateway::view::{ClusterView, LeaderInfo, Modes, Node, ViewPublisher};

/// A typical traffic mix: mostly queries and UI reads, some job calls.
const PATHS: &[(Method, &str)] = &[
    (Method::POST, "/kylin/api/query"),
    (Method::POST, "/kylin/api/query"),
    (Method::POST, "/kylin/api/query/prestate"),
    (Method::GET, "/kylin/api/projects"),
    (Method::GET, "/kylin/api/cubes"),
    (Method::GET, "/kylin/api/tables_and_columns"),
    (Method::GET, "/kylin/api/jobs"),
    (
        Method::GET,
        "/kylin/api/jobs/0d2cbb5c-6c3e-4b8b-a1c2/steps/3/output",
    ),
    (Method::PUT, "/kylin/api/cubes/kylin_sales_cube/build"),
    (Method::POST, "/kylin/api/user/authentication"),
    (Method::GET, "/kylin/index.html"),
    (Method::GET, "/kylin/api/async_query/q1/status"),
];

fn classify(c: &mut Criterion) {
    let classifier = Classifier::new(Vec::new(), "/kylin/api");
    c.bench_function("classify/typical_path_mix_x12", |b| {
        b.iter(|| {
            for (method, path) in PATHS {
                black_box(classifier.classify(method, black_box(path)));
            }
        })
    });
}

fn sixteen_nodes() -> ViewPublisher {
    let nodes = (0..16)
        .map(|i| Node {
            id: format!("node-{i}").into(),
            host: format!("10.0.0.{i}").into(),
            port: 7070,
            ssl_port: None,
            modes: if i == 0 { Modes::ALL } else { Modes::QUERY },
            enabled: true,
            addr: Some(([10, 0, 0, i as u8], 7070).into()),
            resolve_error: None,
        })
        .collect();
    let publisher = ViewPublisher::new();
    publisher.publish(ClusterView {
        nodes,
        leader: LeaderInfo {
            node_id: Some("node-0".into()),
            ..LeaderInfo::default()
        },
        job_routing: Default::default(),
        stale: false,
        source: "bench",
    });
    publisher
}

fn balance(c: &mut Criterion) {
    let publisher = sixteen_nodes();
    let snapshot = publisher.snapshot();
    // Some load, so the in-flight comparisons are not all ties.
    for (i, n) in snapshot.nodes.iter().enumerate() {
        n.state.in_flight.store((i % 5) as u32, Ordering::Relaxed);
    }
    let now = now_ms();
    let keys: Vec<u64> = (0..64)
        .map(|i| hash_key(format!("project-{i}").as_bytes()))
        .collect();
    let policies = [
        ("p2c", Balancer::PowerOfTwoChoices),
        ("round_robin", Balancer::RoundRobin(AtomicUsize::new(0))),
        (
            "consistent_hash",
            Balancer::BoundedConsistentHash { load_factor: 1.25 },
        ),
    ];
    let mut group = c.benchmark_group("balance_16_nodes");
    for (name, balancer) in &policies {
        let mut k = 0usize;
        group.bench_function(*name, |b| {
            b.iter(|| {
                k = (k + 1) % keys.len();
                black_box(balancer.pick(
                    &snapshot,
                    &snapshot.query_nodes,
                    Some(keys[k]),
                    &Tried::default(),
                    now,
                ))
            })
        });
    }
    group.finish();
    c.bench_function("snapshot_load", |b| {
        b.iter(|| black_box(publisher.snapshot()))
    });
}

criterion_group!(benches, classify, balance);
criterion_main!(benches);
