//! What the shape of the plugin interface costs per call, apart from the
//! gateway: the `routing-plugin` world, which pushes the whole request into
//! `route` as a record, against a probe world (`bench/abi/pull.wit`) whose
//! `route` gets a handle and pulls what it reads through host methods; and
//! the async call the gateway makes against a plain synchronous one.
//!
//! Each variant runs one probe plugin (`plugins/probe/`) in one instance,
//! called in a loop with the same request. `empty`: the guest reads nothing
//! and answers `default`; `body`: it hashes the body prefix and prefers a
//! healthy node.
//!
//! ```text
//! cargo bench --bench plugin_abi                  # ns per call, 5 rounds
//! ONLY=pull-body N=20000 target/release/deps/plugin_abi-*   # one pass
//! bench/plugin_abi.sh                             # instructions per call
//! ```
//!
//! The loop keeps every cache warm: in the gateway, between requests, a
//! call costs about three times these nanoseconds (`bench/RESULTS.md`).

mod common;

use std::future::Future;
use std::time::Instant;

use futures_util::FutureExt;
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The contract's world, called the async way as the gateway calls it.
mod push {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "routing-plugin",
        exports: { default: async },
    });
}

/// The contract's world, called synchronously.
mod push_sync {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "routing-plugin",
    });
}

/// The probe's pull world.
mod pull {
    wasmtime::component::bindgen!({
        path: "../bench/abi",
        world: "pull-probe",
        exports: { default: async },
        with: { "kylin-gateway:abi-probe/types.request": super::PulledRequest },
    });
}

use pull::kylin_gateway::abi_probe::types as pull_types;
use push::kylin_gateway::plugin::types as push_types;
use push_sync::kylin_gateway::plugin::types as sync_types;

const NODES: usize = 3;
const BODY: &[u8] = br#"{"project":"learn_kylin","sql":"select part_dt, sum(price) from kylin_sales group by part_dt","offset":0,"limit":500,"acceptPartial":false}"#;

/// The request behind a pull-world handle.
pub struct PulledRequest {
    method: &'static str,
    path: &'static str,
    body: &'static [u8],
    healthy: [bool; NODES],
}

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl push::kylin_gateway::plugin::host::Host for State {
    fn log(&mut self, _: push_types::LogLevel, _: String) {}
}

impl push_sync::kylin_gateway::plugin::host::Host for State {
    fn log(&mut self, _: sync_types::LogLevel, _: String) {}
}

impl pull_types::Host for State {}

impl State {
    fn request(&self, handle: &Resource<PulledRequest>) -> &PulledRequest {
        self.table.get(handle).expect("a live request handle")
    }
}

impl pull_types::HostRequest for State {
    fn method(&mut self, req: Resource<PulledRequest>) -> String {
        self.request(&req).method.to_string()
    }

    fn path(&mut self, req: Resource<PulledRequest>) -> String {
        self.request(&req).path.to_string()
    }

    fn class(&mut self, _: Resource<PulledRequest>) -> pull_types::TrafficClass {
        pull_types::TrafficClass::Query
    }

    fn header(&mut self, _: Resource<PulledRequest>, _: String) -> Option<String> {
        None
    }

    fn body_prefix(&mut self, req: Resource<PulledRequest>, max: u32) -> Vec<u8> {
        let body = self.request(&req).body;
        body[..body.len().min(max as usize)].to_vec()
    }

    fn healthy(&mut self, req: Resource<PulledRequest>) -> Vec<bool> {
        self.request(&req).healthy.to_vec()
    }

    fn drop(&mut self, req: Resource<PulledRequest>) -> wasmtime::Result<()> {
        self.table.delete(req)?;
        Ok(())
    }
}

/// As the gateway's engine: epoch interruption, and a pooling allocator
/// with guard pages unless `UNPOOLED` is set (valgrind cannot reserve the
/// pool's address space).
fn engine() -> Engine {
    let mut config = Config::new();
    config.epoch_interruption(true);
    if std::env::var_os("UNPOOLED").is_some() {
        config
            .memory_reservation(16 << 20)
            .memory_guard_size(2 << 20);
    } else {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(4)
            .total_core_instances(32)
            .total_memories(4)
            .total_tables(16)
            .total_stacks(4);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config).expect("engine")
}

fn store(engine: &Engine) -> Store<State> {
    let mut store = Store::new(
        engine,
        State {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        },
    );
    store.set_epoch_deadline(u64::MAX / 2);
    store
}

/// The first poll completes a call that never waits, as in the gateway.
fn now<T>(call: impl Future<Output = wasmtime::Result<T>>) -> T {
    call.now_or_never()
        .expect("a probe call does not wait")
        .expect("probe call")
}

fn nanos_per_call(calls: u64, mut call: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        call();
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

fn push_view() -> push_types::View {
    push_types::View {
        version: 1,
        nodes: (0..NODES)
            .map(|i| push_types::Node {
                id: format!("n{i}"),
                address: Some(format!("127.0.0.1:70{i:02}")),
                serves_query: true,
                serves_job: true,
                is_leader: i == 0,
            })
            .collect(),
    }
}

fn run_push(body: bool, calls: u64) -> f64 {
    let engine = engine();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("wasi");
    push::kylin_gateway::plugin::host::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
        .expect("host");
    let component =
        Component::from_file(&engine, common::built_plugin("push_probe")).expect("compile");
    let mut store = store(&engine);
    let plugin = now(push::RoutingPlugin::instantiate_async(
        &mut store, &component, &linker,
    ));
    now(plugin.call_init(&mut store, if body { "body" } else { "" })).expect("init");
    now(plugin.call_view_changed(&mut store, &push_view()));
    let request = push_types::Request {
        method: "POST".into(),
        path: "/kylin/api/query".into(),
        query: None,
        headers: Vec::new(),
        class: push_types::TrafficClass::Query,
        client: "127.0.0.1:50000".into(),
        body_prefix: if body { BODY.to_vec() } else { Vec::new() },
        now_unix_ms: 0,
    };
    let load = push_types::ViewLoad {
        version: 1,
        nodes: vec![
            push_types::NodeLoad {
                healthy: true,
                in_flight: 0,
                latency_us: 0,
            };
            NODES
        ],
    };
    nanos_per_call(calls, || {
        std::hint::black_box(now(plugin.call_route(&mut store, &request, &load)));
    })
}

fn run_push_sync(calls: u64) -> f64 {
    let engine = engine();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("wasi");
    push_sync::kylin_gateway::plugin::host::add_to_linker::<State, HasSelf<State>>(
        &mut linker,
        |s| s,
    )
    .expect("host");
    let component =
        Component::from_file(&engine, common::built_plugin("push_probe")).expect("compile");
    let mut store = store(&engine);
    let plugin = push_sync::RoutingPlugin::instantiate(&mut store, &component, &linker)
        .expect("instantiate");
    plugin
        .call_init(&mut store, "")
        .expect("init")
        .expect("init");
    let request = sync_types::Request {
        method: "POST".into(),
        path: "/kylin/api/query".into(),
        query: None,
        headers: Vec::new(),
        class: sync_types::TrafficClass::Query,
        client: "127.0.0.1:50000".into(),
        body_prefix: Vec::new(),
        now_unix_ms: 0,
    };
    let load = sync_types::ViewLoad {
        version: 1,
        nodes: vec![
            sync_types::NodeLoad {
                healthy: true,
                in_flight: 0,
                latency_us: 0,
            };
            NODES
        ],
    };
    nanos_per_call(calls, || {
        std::hint::black_box(
            plugin
                .call_route(&mut store, &request, &load)
                .expect("route"),
        );
    })
}

fn run_pull(body: bool, calls: u64) -> f64 {
    let engine = engine();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("wasi");
    pull_types::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s).expect("host");
    let component =
        Component::from_file(&engine, common::built_plugin("pull_probe")).expect("compile");
    let mut store = store(&engine);
    let plugin = now(pull::PullProbe::instantiate_async(
        &mut store, &component, &linker,
    ));
    now(plugin.call_init(&mut store, if body { "body" } else { "" })).expect("init");
    nanos_per_call(calls, || {
        // A handle per request, as a gateway would make one.
        let request = PulledRequest {
            method: "POST",
            path: "/kylin/api/query",
            body: BODY,
            healthy: [true; NODES],
        };
        let owned = store.data_mut().table.push(request).expect("table");
        let borrowed = Resource::<PulledRequest>::new_borrow(owned.rep());
        std::hint::black_box(now(plugin.call_route(&mut store, borrowed)));
        store.data_mut().table.delete(owned).expect("delete");
    })
}

const VARIANTS: [&str; 5] = [
    "push-empty",
    "pull-empty",
    "push-body",
    "pull-body",
    "push-empty-sync",
];

fn run(variant: &str, calls: u64) -> f64 {
    match variant {
        "push-empty" => run_push(false, calls),
        "push-body" => run_push(true, calls),
        "pull-empty" => run_pull(false, calls),
        "pull-body" => run_pull(true, calls),
        "push-empty-sync" => run_push_sync(calls),
        other => panic!("unknown variant {other}; one of {VARIANTS:?}"),
    }
}

fn main() {
    let calls = std::env::var("N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    if let Ok(variant) = std::env::var("ONLY") {
        println!("{variant}: {:.0} ns per call", run(&variant, calls));
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let rounds = if std::env::args().any(|a| a == "--bench") {
        5
    } else {
        1
    };
    let calls = if rounds == 1 { 1_000 } else { calls };
    println!("ns per call, {calls} calls per variant and round:");
    for round in 1..=rounds {
        let line: Vec<String> = VARIANTS
            .iter()
            .map(|variant| format!("{variant} {:.0}", run(variant, calls)))
            .collect();
        println!("round {round}: {}", line.join(", "));
    }
}
