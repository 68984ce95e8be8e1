//! One routing-plugin call as the proxy makes it: `query-affinity` deciding
//! for a `POST /kylin/api/query` with a 1 KiB body prefix against a 16-node
//! view. Compares a reused pooled instance (its memory kept in bounds by
//! guard pages, or by checks) with a fresh instance per call (pooling
//! allocator and on-demand allocation).
//!
//! Needs the plugins built: `cd plugins && cargo build --release --target
//! wasm32-wasip2` (done here if the file is missing).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use kylin_gateway::classify::TrafficClass;
use kylin_gateway::config::{OnError, PluginRuntime, PluginSource, PluginSpec};
use kylin_gateway::plugin::{
    LoadedPlugin, MemoryBounds, PluginStats, RequestFacts, RequestTime, Route, Runtime,
    RuntimeOptions, sample_snapshot,
};

fn query_affinity_wasm() -> PathBuf {
    common::built_plugin("query_affinity")
}

fn load(options: RuntimeOptions) -> (Runtime, LoadedPlugin) {
    load_file(options, query_affinity_wasm(), "")
}

fn load_file(options: RuntimeOptions, path: PathBuf, config: &str) -> (Runtime, LoadedPlugin) {
    let settings = PluginRuntime {
        deadline: Duration::from_millis(2),
        memory_bytes: 16 << 20,
        cache_dir: None,
        watch_files: false,
        ..PluginRuntime::default()
    };
    let runtime = Runtime::with_options(&settings, 1, options).expect("runtime");
    let spec = PluginSpec {
        name: "affinity".into(),
        source: PluginSource::File(path.clone()),
        config: config.to_string(),
        on_error: OnError::Fallback,
    };
    let bytes = std::fs::read(&path).expect("read plugin");
    let plugin = runtime
        .load(&spec, &bytes, Arc::new(PluginStats::new("affinity")))
        .expect("load plugin");
    (runtime, plugin)
}

/// The query `bench/proxy.sh` posts.
const PROXY_SH_BODY: &str = r#"{"project":"learn_kylin","sql":"select part_dt, sum(price) from kylin_sales group by part_dt","limit":500}"#;

/// A Kylin query body padded to exactly 1 KiB.
fn body_1k() -> Vec<u8> {
    let head = r#"{"project":"learn_kylin","offset":0,"limit":50000,"acceptPartial":true,"sql":"select part_dt, lstg_format_name, sum(price) as gmv, count(distinct seller_id) as sellers from kylin_sales inner join kylin_cal_dt on kylin_sales.part_dt = kylin_cal_dt.cal_dt where part_dt between '2012-01-01' and '2012-12-31' group by part_dt, lstg_format_name order by gmv desc"#;
    let mut body = head.to_string();
    body.push_str(&" ".repeat(1024 - head.len() - 2));
    body.push_str("\"}");
    assert_eq!(body.len(), 1024);
    body.into_bytes()
}

fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "kylin.example:7070"),
        ("content-type", "application/json;charset=utf-8"),
        ("accept", "application/json, text/plain, */*"),
        ("authorization", "Basic QURNSU46S1lMSU4="),
        ("user-agent", "kylin-jdbc/4.0"),
        ("content-length", "1024"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
}

fn bench(c: &mut Criterion) {
    let snapshot = sample_snapshot(16);
    let body = body_1k();
    let headers = headers();
    let facts = RequestFacts {
        method: &Method::POST,
        path: "/kylin/api/query",
        query: None,
        headers: &headers,
        class: TrafficClass::Query,
        client: SocketAddr::from(([10, 1, 2, 3], 51234)),
        body_prefix: &body,
        time: RequestTime::now(),
    };
    let mut group = c.benchmark_group("plugin_call");
    for (name, options) in [
        ("reused_instance", RuntimeOptions::default()),
        (
            "reused_instance_bounds_checked",
            RuntimeOptions {
                memory_bounds: Some(MemoryBounds::Checked),
                ..RuntimeOptions::default()
            },
        ),
        (
            "fresh_instance_pooling",
            RuntimeOptions {
                pooling: true,
                reuse_instances: false,
                ..RuntimeOptions::default()
            },
        ),
        (
            "fresh_instance_on_demand",
            RuntimeOptions {
                pooling: false,
                reuse_instances: false,
                ..RuntimeOptions::default()
            },
        ),
    ] {
        let (_runtime, plugin) = load(options);
        let decision = plugin.call(&facts, &snapshot).expect("call");
        assert!(matches!(decision.route, Route::Prefer(ref ids) if ids.len() == 3));
        // A failed call (deadline, trap) is fast and would be timed as a
        // decision: every timed call must succeed.
        group.bench_function(name, |b| {
            b.iter(|| {
                plugin
                    .call(std::hint::black_box(&facts), &snapshot)
                    .expect("plugin call")
            })
        });
    }
    // The call `bench/proxy.sh` makes: its small query body, one node.
    {
        let (_runtime, plugin) = load(RuntimeOptions::default());
        let snapshot = sample_snapshot(1);
        let body = PROXY_SH_BODY.as_bytes();
        let facts = RequestFacts {
            body_prefix: body,
            ..facts
        };
        let decision = plugin.call(&facts, &snapshot).expect("call");
        assert!(matches!(decision.route, Route::Prefer(ref ids) if ids.len() == 1));
        group.bench_function("proxy_sh_query_1_node", |b| {
            b.iter(|| {
                plugin
                    .call(std::hint::black_box(&facts), &snapshot)
                    .expect("plugin call")
            })
        });
    }
    // What the call costs without the plugin's own work: a plugin that
    // reads nothing and answers `default`, against 16 nodes and 1 node.
    let calm = common::built_plugin("misbehave");
    let (_runtime, plugin) = load_file(RuntimeOptions::default(), calm, "calm");
    for nodes in [16, 1] {
        let snapshot = sample_snapshot(nodes);
        let decision = plugin.call(&facts, &snapshot).expect("call");
        assert!(matches!(decision.route, Route::Default));
        group.bench_function(format!("trivial_plugin_{nodes}_nodes"), |b| {
            b.iter(|| {
                plugin
                    .call(std::hint::black_box(&facts), &snapshot)
                    .expect("plugin call")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
