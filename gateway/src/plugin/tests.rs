//! Unit tests of the host's pure parts: decision validation, argument
//! buffers, limits. Loading real components is tested end to end in
//! `tests/tests/plugins_*.rs`.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::bindings;
use super::check::sample_snapshot;
use super::limits::Limits;
use super::policy::{RequestFacts, RequestTime, Route};
use super::runtime::{
    FailureKind, PluginStats, convert_decision, empty_request, fill_load, fill_request, view_of,
    write_client,
};
use crate::classify::TrafficClass;
use crate::config::PluginRuntime;

fn decision(route: bindings::Route, headers: &[(&str, &str)]) -> bindings::Decision {
    bindings::Decision {
        route,
        add_headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    }
}

#[test]
fn prefer_keeps_known_ids_in_order_and_counts_unknown_ones() {
    let snapshot = sample_snapshot(4);
    let stats = PluginStats::new("t");
    let ids = ["node-3", "ghost", "node-1"].map(String::from).to_vec();
    let converted = convert_decision(
        decision(bindings::Route::Prefer(ids), &[]),
        &snapshot,
        &stats,
    )
    .unwrap();
    assert_eq!(
        converted.route,
        Route::Prefer(vec!["node-3".into(), "node-1".into()])
    );
    assert_eq!(stats.failures(FailureKind::UnknownNode), 1);
}

#[test]
fn prefer_naming_only_unknown_nodes_is_malformed_and_empty_prefer_is_default() {
    let snapshot = sample_snapshot(2);
    let stats = PluginStats::new("t");
    let only_ghosts = bindings::Route::Prefer(vec!["ghost".into()]);
    let failure = convert_decision(decision(only_ghosts, &[]), &snapshot, &stats).unwrap_err();
    assert_eq!(failure.kind, FailureKind::Malformed);
    let empty = convert_decision(
        decision(bindings::Route::Prefer(Vec::new()), &[]),
        &snapshot,
        &stats,
    )
    .unwrap();
    assert_eq!(empty.route, Route::Default);
}

#[test]
fn reject_needs_an_error_status() {
    let snapshot = sample_snapshot(1);
    let stats = PluginStats::new("t");
    let reject = |status| {
        convert_decision(
            decision(
                bindings::Route::Reject(bindings::Rejection {
                    status,
                    message: "m".into(),
                }),
                &[],
            ),
            &snapshot,
            &stats,
        )
    };
    assert_eq!(
        reject(503).unwrap().route,
        Route::Reject {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "m".into()
        }
    );
    for bad in [0, 42, 200, 302, 600, 1000] {
        assert_eq!(
            reject(bad).unwrap_err().kind,
            FailureKind::Malformed,
            "{bad}"
        );
    }
}

#[test]
fn headers_must_be_valid_and_not_framing_headers() {
    let snapshot = sample_snapshot(1);
    let stats = PluginStats::new("t");
    let with = |name: &str, value: &str| {
        convert_decision(
            decision(bindings::Route::Default, &[(name, value)]),
            &snapshot,
            &stats,
        )
    };
    let ok = with("X-Route-Reason", "affinity").unwrap();
    assert_eq!(ok.add_headers[0].0.as_str(), "x-route-reason");
    for (name, value) in [
        ("bad name", "v"),
        ("x-ok", "line\nbreak"),
        ("content-length", "0"),
        ("Host", "evil"),
        ("transfer-encoding", "chunked"),
    ] {
        assert_eq!(
            with(name, value).unwrap_err().kind,
            FailureKind::Malformed,
            "{name}"
        );
    }
}

#[test]
fn request_buffers_are_reused_and_fully_overwritten() {
    let mut headers = HeaderMap::new();
    headers.insert("a", HeaderValue::from_static("1"));
    headers.insert("b", HeaderValue::from_static("2"));
    headers.insert("binary", HeaderValue::from_bytes(b"\xff").unwrap());
    let facts = RequestFacts {
        method: &Method::POST,
        path: "/kylin/api/query",
        query: Some("project=p"),
        headers: &headers,
        class: TrafficClass::Query,
        client: SocketAddr::from(([127, 0, 0, 1], 9)),
        body_prefix: b"{}",
        time: RequestTime {
            unix_ms: 1_700_000_000_123,
            health_ms: 5,
        },
    };
    let mut request = empty_request();
    fill_request(&mut request, &facts, b"{}", true);
    assert_eq!(request.headers.len(), 2, "non-UTF-8 values are left out");
    assert_eq!(request.client, "127.0.0.1:9");
    assert_eq!(request.now_unix_ms, 1_700_000_000_123, "the facts' time");
    let fewer = HeaderMap::new();
    let facts = RequestFacts {
        method: &Method::GET,
        path: "/x",
        query: None,
        headers: &fewer,
        client: SocketAddr::from(([10, 0, 0, 255], 65535)),
        ..facts
    };
    fill_request(&mut request, &facts, b"", true);
    assert!(request.headers.is_empty());
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/x")
    );
    assert_eq!(request.query, None);
    assert!(request.body_prefix.is_empty());
    assert_eq!(request.client, "10.0.0.255:65535");
}

#[test]
fn view_marks_the_leader_and_load_follows_the_nodes() {
    let four = sample_snapshot(4);
    let view = view_of(&four);
    assert_eq!(view.nodes.len(), 4);
    assert!(view.nodes[0].is_leader && view.nodes[0].serves_job);
    assert!(
        view.nodes[1..]
            .iter()
            .all(|n| !n.is_leader && n.serves_query)
    );
    let mut load = bindings::ViewLoad {
        version: 0,
        nodes: Vec::new(),
    };
    four.nodes[2]
        .state
        .in_flight
        .store(7, std::sync::atomic::Ordering::Relaxed);
    fill_load(&mut load, &four, 1_000);
    assert_eq!(load.version, four.version);
    assert!(load.nodes.iter().all(|n| n.healthy));
    assert_eq!(load.nodes[2].in_flight, 7);
    fill_load(&mut load, &sample_snapshot(2), 1_000);
    assert_eq!(load.nodes.len(), 2);
}

#[test]
fn load_health_is_judged_at_the_requests_time() {
    let two = sample_snapshot(2);
    two.nodes[1]
        .state
        .ejected_until_ms
        .store(2_000, std::sync::atomic::Ordering::Relaxed);
    let mut load = bindings::ViewLoad {
        version: 0,
        nodes: Vec::new(),
    };
    fill_load(&mut load, &two, 1_999);
    assert!(!load.nodes[1].healthy, "still ejected at 1,999 ms");
    fill_load(&mut load, &two, 2_000);
    assert!(load.nodes[1].healthy, "back at 2,000 ms");
}

proptest::proptest! {
    #[test]
    fn the_client_is_written_as_display_writes_it(
        v4 in proptest::prelude::any::<std::net::SocketAddrV4>(),
        v6 in proptest::prelude::any::<std::net::SocketAddrV6>(),
    ) {
        let mut written = String::from("old");
        for addr in [SocketAddr::V4(v4), SocketAddr::V6(v6)] {
            write_client(&mut written, addr);
            proptest::prop_assert_eq!(&written, &addr.to_string());
        }
    }
}

#[test]
fn the_pool_is_sized_by_plugins_and_idle_instances() {
    let runtime = PluginRuntime {
        idle_instances: 4,
        ..PluginRuntime::default()
    };
    let one = Limits::from_runtime(&runtime, 1).pool_slots;
    let three = Limits::from_runtime(&runtime, 3).pool_slots;
    assert_eq!(three, 3 * one);
    assert!(one < 100, "a few instances per core, not wasmtime's 1000");
}

mod properties {
    //! Decision conversion fed arbitrary guest answers (the stand-in for
    //! fuzzing it; see `gateway/tests/properties.rs`): a guest can return
    //! anything the WIT types allow, and nothing it returns may panic the
    //! host or pass through invalid.
    use proptest::prelude::*;

    use super::*;

    fn route() -> impl Strategy<Value = bindings::Route> {
        prop_oneof![
            Just(bindings::Route::Default),
            prop::collection::vec(prop_oneof!["node-[0-5]", any::<String>()], 0..6)
                .prop_map(bindings::Route::Prefer),
            (any::<u16>(), any::<String>()).prop_map(|(status, message)| {
                bindings::Route::Reject(bindings::Rejection { status, message })
            }),
            prop::sample::select(vec![
                bindings::TrafficClass::Query,
                bindings::TrafficClass::Job,
                bindings::TrafficClass::Other,
            ])
            .prop_map(bindings::Route::Reclassify),
        ]
    }

    fn header() -> impl Strategy<Value = (String, String)> {
        (
            prop_oneof![
                "x-[a-z-]{1,12}",
                prop::sample::select(vec!["host", "Content-Length", "te", "x ", ""])
                    .prop_map(String::from),
                any::<String>(),
            ],
            prop_oneof!["[ -~]{0,20}", any::<String>()],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_guest_decision_converts_to_a_valid_one_or_is_malformed(
            route in route(),
            add_headers in prop::collection::vec(header(), 0..4),
        ) {
            let snapshot = sample_snapshot(4);
            let stats = PluginStats::new("p");
            let decision = bindings::Decision { route, add_headers };
            match convert_decision(decision, &snapshot, &stats) {
                Ok(converted) => {
                    match converted.route {
                        Route::Prefer(ids) => {
                            prop_assert!(!ids.is_empty());
                            prop_assert!(ids.iter().all(|id| snapshot.position(id).is_some()));
                        }
                        Route::Reject { status, .. } => {
                            prop_assert!((400..=599).contains(&status.as_u16()));
                        }
                        Route::Default | Route::Reclassify(_) => {}
                    }
                    for (name, _) in &converted.add_headers {
                        prop_assert!(!["host", "content-length", "transfer-encoding", "connection", "upgrade", "te"]
                            .contains(&name.as_str()));
                    }
                }
                Err(failure) => prop_assert_eq!(failure.kind, FailureKind::Malformed),
            }
        }
    }
}
