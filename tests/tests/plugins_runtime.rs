//! The plugin runtime used as a library: instance pooling under concurrent
//! calls and the replacement of instances that failed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};
use kylin_gateway::classify::TrafficClass;
use kylin_gateway::config::{OnError, PluginRuntime, PluginSource, PluginSpec};
use kylin_gateway::plugin::{
    FailureKind, LoadedPlugin, MemoryBounds, PluginStats, RequestFacts, RequestTime, Route,
    Runtime, RuntimeOptions, sample_snapshot,
};
use kylin_gateway_tests::support::plugins::built;

fn load(path: &std::path::Path, config: &str) -> (Runtime, LoadedPlugin) {
    load_with(RuntimeOptions::default(), path, config)
}

fn load_with(
    options: RuntimeOptions,
    path: &std::path::Path,
    config: &str,
) -> (Runtime, LoadedPlugin) {
    let settings = PluginRuntime {
        deadline: Duration::from_millis(100),
        memory_bytes: 16 << 20,
        cache_dir: None,
        watch_files: false,
        ..PluginRuntime::default()
    };
    let runtime = Runtime::with_options(&settings, 1, options).unwrap();
    let spec = PluginSpec {
        name: "t".into(),
        source: PluginSource::File(path.to_path_buf()),
        config: config.into(),
        on_error: OnError::Fallback,
    };
    let bytes = std::fs::read(path).unwrap();
    let plugin = runtime
        .load(&spec, &bytes, Arc::new(PluginStats::new("t")))
        .unwrap();
    (runtime, plugin)
}

fn facts<'a>(headers: &'a HeaderMap, query: Option<&'a str>, body: &'a [u8]) -> RequestFacts<'a> {
    RequestFacts {
        method: &Method::POST,
        path: "/kylin/api/query",
        query,
        headers,
        class: TrafficClass::Query,
        client: SocketAddr::from(([127, 0, 0, 1], 1)),
        body_prefix: body,
        time: RequestTime::now(),
    }
}

#[test]
fn concurrent_calls_each_borrow_an_instance_and_give_it_back() {
    let (_runtime, plugin) = load(&built().query_affinity, "");
    let snapshot = sample_snapshot(8);
    let headers = HeaderMap::new();
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let (plugin, snapshot, headers) = (&plugin, &snapshot, &headers);
            scope.spawn(move || {
                for i in 0..100 {
                    let body = format!(r#"{{"project":"p","sql":"select {thread}, {i}"}}"#);
                    let decision = plugin
                        .call(&facts(headers, None, body.as_bytes()), snapshot)
                        .unwrap();
                    assert!(matches!(decision.route, Route::Prefer(ref ids) if ids.len() == 3));
                }
            });
        }
    });
    assert_eq!(plugin.stats.calls(), 400);
    let idle = plugin.idle_instances();
    assert!(
        (1..=4).contains(&idle),
        "instances are kept, one per concurrent caller at most: {idle}"
    );
}

#[test]
fn a_failed_call_discards_its_instance_and_the_next_call_gets_a_fresh_one() {
    let (_runtime, plugin) = load(&built().misbehave, "panic");
    let snapshot = sample_snapshot(2);
    let headers = HeaderMap::new();
    assert_eq!(plugin.idle_instances(), 1, "the instance made at load time");
    let failure = plugin
        .call(&facts(&headers, None, b""), &snapshot)
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Trap);
    assert_eq!(plugin.idle_instances(), 0, "the trapped instance is gone");
    // `?calm` makes the same component behave.
    let decision = plugin
        .call(&facts(&headers, Some("calm"), b""), &snapshot)
        .unwrap();
    assert_eq!(decision.route, Route::Default);
    assert_eq!(decision.add_headers[0].0.as_str(), "x-misbehave");
    assert_eq!(plugin.idle_instances(), 1);
    assert_eq!(plugin.stats.failures(FailureKind::Trap), 1);
}

#[test]
fn an_instance_sees_a_new_view_after_a_publish() {
    let (_runtime, plugin) = load(&built().canary, r#"{"nodes": ["node-3"], "percent": 100}"#);
    let headers = HeaderMap::new();
    let with_canary = sample_snapshot(4);
    let decision = plugin
        .call(&facts(&headers, None, b""), &with_canary)
        .unwrap();
    assert_eq!(decision.route, Route::Prefer(vec!["node-3".into()]));
    // A view without node-3: the canary is gone, the built-in choice stays.
    let without = sample_snapshot(2);
    let decision = plugin.call(&facts(&headers, None, b""), &without).unwrap();
    assert_eq!(decision.route, Route::Default);
}

/// The epoch ticker sleeps while no call runs; a call that loops forever
/// after it fell asleep must still wake it and be cut off at its deadline.
#[test]
fn a_looping_call_after_the_ticker_slept_is_still_cut_off() {
    let (runtime, plugin) = load(&built().misbehave, "loop");
    kylin_gateway_tests::support::eventually(
        "the ticker sleeps with no call running",
        Duration::from_secs(10),
        || runtime.ticker_sleeping().then_some(()),
    );
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let headers = HeaderMap::new();
        let result = plugin.call(&facts(&headers, None, b""), &sample_snapshot(2));
        let _ = done.send(result.map(|_| ()).map_err(|f| f.kind));
    });
    // Without a tick the call would spin for ever: fail instead of hanging.
    let result = finished
        .recv_timeout(Duration::from_secs(20))
        .expect("the looping call was never interrupted");
    assert_eq!(result, Err(FailureKind::Deadline));
}

/// Guard pages replace the bounds checks where the address space allows:
/// an access past the memory's end must then fault and trap just as a
/// failed check does, and the plugin's next call get a fresh instance.
#[test]
fn a_read_past_the_memory_traps_with_guard_pages_and_with_bounds_checks() {
    for bounds in [MemoryBounds::GuardPages, MemoryBounds::Checked] {
        let options = RuntimeOptions {
            memory_bounds: Some(bounds),
            ..RuntimeOptions::default()
        };
        let (runtime, plugin) = load_with(options, &built().misbehave, "out-of-bounds");
        assert_eq!(runtime.memory_bounds(), bounds);
        let snapshot = sample_snapshot(2);
        let headers = HeaderMap::new();
        for _ in 0..3 {
            let failure = plugin
                .call(&facts(&headers, None, b""), &snapshot)
                .unwrap_err();
            assert_eq!(failure.kind, FailureKind::Trap, "{bounds:?}: {failure:?}");
            assert!(
                failure.detail.contains("out of bounds"),
                "{bounds:?}: {}",
                failure.detail
            );
            let calm = plugin
                .call(&facts(&headers, Some("calm"), b""), &snapshot)
                .unwrap();
            assert_eq!(calm.route, Route::Default, "{bounds:?}");
        }
        assert_eq!(plugin.stats.failures(FailureKind::Trap), 3, "{bounds:?}");
    }
}

/// Without an address-space limit (the tests run without one, as
/// `plugins_examples` checks through `/admin/plugins` too) the runtime
/// picks guard pages by itself.
#[test]
fn an_unlimited_address_space_gets_guard_pages() {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    assert!(
        limits
            .lines()
            .any(|line| line.starts_with("Max address space") && line.contains("unlimited")),
        "{limits}"
    );
    let (runtime, _plugin) = load(&built().misbehave, "calm");
    assert_eq!(runtime.memory_bounds(), MemoryBounds::GuardPages);
}
