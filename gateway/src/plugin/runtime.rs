//! Loading and calling one plugin: the shared engine and linker, a plugin
//! compiled once into an `InstancePre`, and a pool of ready instances so
//! concurrent requests each borrow their own store instead of contending for
//! one. A call that fails throws its instance away; the next call builds a
//! fresh one from the `InstancePre`.
//!
//! Why reuse (`benches/plugin_call.rs`, query-affinity, 16 nodes, 1 KiB body,
//! release build): a call on a reused instance takes 4.2 µs median, one on a
//! fresh instance 42 µs with the pooling allocator and 71 µs without it. A
//! plugin's globals therefore persist between the calls of one instance; the
//! WIT documents that instances are many and replaceable.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{HeaderName, HeaderValue, StatusCode};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};

use super::bindings::{self, RoutingPlugin, RoutingPluginPre};
use super::host::{HostState, PluginLog};
use super::limits::{EpochTicker, Limits, MemoryBounds, TickerHandle, thread_cpu_time};
use super::policy::{Decision, RequestFacts, Route};
use crate::classify::TrafficClass;
use crate::config::{OnError, PluginRuntime, PluginSpec};
use crate::view::Snapshot;

/// Upper bound on `needs.body-prefix-len`.
pub const MAX_BODY_PREFIX: usize = 64 * 1024;
/// `init` and `needs` run once per instance and may parse config; they get
/// this much CPU time instead of the per-request deadline.
const INIT_DEADLINE: Duration = Duration::from_secs(1);

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("not a valid component: {0:#}")]
    Compile(wasmtime::Error),
    #[error("does not implement world kylin-gateway:plugin/routing-plugin@0.1.0: {0:#}")]
    World(wasmtime::Error),
    #[error("cannot instantiate: {0:#}")]
    Instantiate(wasmtime::Error),
    #[error("init failed: {0}")]
    Init(String),
    #[error("needs: {0}")]
    Needs(String),
}

/// How a call failed; the `kind` label of `kgw_plugin_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The guest trapped (panic, unreachable, bad memory access, ...).
    Trap,
    /// The call ran past the epoch deadline.
    Deadline,
    /// The guest tried to grow memory past the cap.
    Memory,
    /// The decision could not be used (bad status, bad header, only
    /// unknown node ids).
    Malformed,
    /// No instance could be made for the call.
    Instantiate,
    /// One node id in a `prefer` list is not in the view (ignored, the call
    /// itself succeeds).
    UnknownNode,
}

impl FailureKind {
    pub const ALL: [FailureKind; 6] = [
        FailureKind::Trap,
        FailureKind::Deadline,
        FailureKind::Memory,
        FailureKind::Malformed,
        FailureKind::Instantiate,
        FailureKind::UnknownNode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Deadline => "deadline",
            FailureKind::Memory => "memory",
            FailureKind::Malformed => "malformed",
            FailureKind::Instantiate => "instantiate",
            FailureKind::UnknownNode => "unknown_node",
        }
    }
}

/// A failed call.
#[derive(Debug)]
pub struct CallFailure {
    pub kind: FailureKind,
    pub detail: String,
}

/// Per-plugin counters, kept across reloads (keyed by plugin name) and
/// mirrored into `/metrics`.
pub struct PluginStats {
    calls: AtomicU64,
    failures: [AtomicU64; FailureKind::ALL.len()],
    calls_metric: metrics::Counter,
    failure_metrics: [metrics::Counter; FailureKind::ALL.len()],
    last_failure: Mutex<Option<String>>,
}

impl PluginStats {
    pub fn new(plugin: &str) -> PluginStats {
        let name: Arc<str> = plugin.into();
        PluginStats {
            calls: AtomicU64::new(0),
            failures: Default::default(),
            calls_metric: metrics::counter!("kgw_plugin_calls_total", "plugin" => name.clone()),
            failure_metrics: FailureKind::ALL.map(|kind| {
                metrics::counter!(
                    "kgw_plugin_failures_total",
                    "plugin" => name.clone(),
                    "kind" => kind.as_str(),
                )
            }),
            last_failure: Mutex::new(None),
        }
    }

    fn call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.calls_metric.increment(1);
    }

    pub fn failure(&self, kind: FailureKind, detail: &str) {
        let i = kind as usize;
        self.failures[i].fetch_add(1, Ordering::Relaxed);
        self.failure_metrics[i].increment(1);
        *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(format!("{}: {detail}", kind.as_str()));
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub fn failures(&self, kind: FailureKind) -> u64 {
        self.failures[kind as usize].load(Ordering::Relaxed)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let failures: serde_json::Map<String, serde_json::Value> = FailureKind::ALL
            .iter()
            .map(|&k| (k.as_str().to_string(), self.failures(k).into()))
            .collect();
        serde_json::json!({
            "calls": self.calls(),
            "failures": failures,
            "last_failure": *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()),
        })
    }
}

/// The engine, linker and limits every plugin shares, and the epoch ticker
/// that enforces the deadline.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    memory_bounds: MemoryBounds,
    reuse_instances: bool,
    ticker: EpochTicker,
}

/// Knobs that exist for measurement, not for operators.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeOptions {
    /// Pooling instance allocator (fast instantiation) instead of on-demand.
    pub pooling: bool,
    /// Keep instances for later calls instead of one fresh instance per call.
    pub reuse_instances: bool,
    /// How memory accesses are bounded with pooling; `None`: guard pages
    /// where they fit ([`super::limits::guard_pages_fit`]).
    pub memory_bounds: Option<MemoryBounds>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            pooling: true,
            reuse_instances: true,
            memory_bounds: None,
        }
    }
}

impl Runtime {
    /// A runtime for `plugins` plugins (the instance pool is sized for them).
    pub fn new(settings: &PluginRuntime, plugins: usize) -> wasmtime::Result<Runtime> {
        Runtime::with_options(settings, plugins, RuntimeOptions::default())
    }

    pub fn with_options(
        settings: &PluginRuntime,
        plugins: usize,
        options: RuntimeOptions,
    ) -> wasmtime::Result<Runtime> {
        let limits = Limits::from_runtime(settings, plugins);
        let (engine, memory_bounds) = limits.engine(
            settings.cache_dir.as_deref(),
            options.pooling,
            options.memory_bounds,
        )?;
        tracing::info!(
            target: "plugin",
            pool_slots = limits.pool_slots,
            "plugin memories bounded by {}",
            memory_bounds.as_str()
        );
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::add_host_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )?;
        Ok(Runtime {
            ticker: EpochTicker::start(engine.clone())?,
            engine,
            linker,
            limits,
            memory_bounds,
            reuse_instances: options.reuse_instances,
        })
    }

    /// How the compiled plugins keep their memory accesses in bounds.
    pub fn memory_bounds(&self) -> MemoryBounds {
        self.memory_bounds
    }

    /// Whether the epoch ticker sleeps, no call having run for a while
    /// (for tests).
    pub fn ticker_sleeping(&self) -> bool {
        self.ticker.sleeping()
    }

    /// Compiles, links, instantiates and initialises `bytes` as `spec`.
    /// Blocking (compilation takes milliseconds to seconds): call it off the
    /// request path.
    pub fn load(
        &self,
        spec: &PluginSpec,
        bytes: &[u8],
        stats: Arc<PluginStats>,
    ) -> Result<LoadedPlugin, LoadError> {
        let component = Component::new(&self.engine, bytes).map_err(LoadError::Compile)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(LoadError::World)?;
        let pre = RoutingPluginPre::new(instance_pre).map_err(LoadError::World)?;
        let mut plugin = LoadedPlugin {
            name: spec.name.as_str().into(),
            config: spec.config.clone(),
            on_error: spec.on_error,
            sha256: crate::digest::sha256_hex(bytes),
            loaded_at: SystemTime::now(),
            pre,
            limits: self.limits,
            reuse_instances: self.reuse_instances,
            log: Arc::new(PluginLog::new(spec.name.as_str().into())),
            ticker: self.ticker.handle(),
            stats,
            wants: [false; 3],
            body_prefix_len: 0,
            wants_headers: false,
            idle: Mutex::new(Vec::new()),
        };
        let ticking = self.ticker.enter();
        let mut first = plugin.instantiate()?;
        arm_deadline(&mut first.store, INIT_DEADLINE);
        let needs = drive(first.plugin.call_needs(&mut first.store))
            .map_err(|e| LoadError::Needs(format!("{e:#}")))?;
        drop(ticking);
        for class in &needs.classes {
            plugin.wants[wit_class(*class) as usize] = true;
        }
        plugin.body_prefix_len = (needs.body_prefix_len as usize).min(MAX_BODY_PREFIX);
        plugin.wants_headers = needs.headers;
        plugin.release(first);
        Ok(plugin)
    }
}

/// One loaded version of one plugin.
pub struct LoadedPlugin {
    pub name: Arc<str>,
    pub config: String,
    pub on_error: OnError,
    pub sha256: String,
    pub loaded_at: SystemTime,
    pre: RoutingPluginPre<HostState>,
    limits: Limits,
    reuse_instances: bool,
    log: Arc<PluginLog>,
    /// Kept awake while a call of this plugin runs.
    ticker: TickerHandle,
    pub stats: Arc<PluginStats>,
    /// Indexed by `TrafficClass as usize`.
    wants: [bool; 3],
    body_prefix_len: usize,
    wants_headers: bool,
    idle: Mutex<Vec<Instance>>,
}

/// A ready instance with its own store and reusable argument buffers.
struct Instance {
    store: Store<HostState>,
    plugin: RoutingPlugin,
    /// The snapshot whose view the guest last got through `view-changed`.
    seen_view: Option<(u64, SystemTime)>,
    request: bindings::Request,
    load: bindings::ViewLoad,
}

impl LoadedPlugin {
    pub fn wants(&self, class: TrafficClass) -> bool {
        self.wants[class as usize]
    }

    pub fn body_prefix_len(&self) -> usize {
        self.body_prefix_len
    }

    /// Idle instances right now (for status and tests).
    pub fn idle_instances(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A new instance: instantiated from the `InstancePre`, `init` run.
    fn instantiate(&self) -> Result<Instance, LoadError> {
        let mut store = Store::new(
            self.pre.engine(),
            HostState::new(self.limits.store_limits(), self.log.clone()),
        );
        store.limiter(|state| state as &mut dyn ResourceLimiter);
        store.epoch_deadline_callback(|mut store| {
            Ok(store.data_mut().deadline.on_tick(thread_cpu_time()))
        });
        arm_deadline(&mut store, INIT_DEADLINE);
        let plugin =
            drive(self.pre.instantiate_async(&mut store)).map_err(LoadError::Instantiate)?;
        drive(plugin.call_init(&mut store, &self.config))
            .map_err(|e| LoadError::Init(format!("{e:#}")))?
            .map_err(LoadError::Init)?;
        Ok(Instance {
            store,
            plugin,
            seen_view: None,
            request: empty_request(),
            load: bindings::ViewLoad {
                version: 0,
                nodes: Vec::new(),
            },
        })
    }

    fn acquire(&self) -> Result<Instance, CallFailure> {
        if self.reuse_instances
            && let Some(instance) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
        {
            return Ok(instance);
        }
        self.instantiate().map_err(|e| CallFailure {
            kind: FailureKind::Instantiate,
            detail: e.to_string(),
        })
    }

    fn release(&self, instance: Instance) {
        if !self.reuse_instances {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.limits.idle_instances {
            idle.push(instance);
        }
    }

    /// Runs `route` for one request. Counts the call and any failure.
    pub fn call(
        &self,
        facts: &RequestFacts<'_>,
        snapshot: &Snapshot,
    ) -> Result<Decision, CallFailure> {
        self.stats.call();
        let result = self.call_uncounted(facts, snapshot);
        if let Err(failure) = &result {
            self.stats.failure(failure.kind, &failure.detail);
            tracing::warn!(
                target: "plugin",
                plugin = &*self.name,
                kind = failure.kind.as_str(),
                "plugin call failed: {}",
                failure.detail
            );
        }
        result
    }

    fn call_uncounted(
        &self,
        facts: &RequestFacts<'_>,
        snapshot: &Snapshot,
    ) -> Result<Decision, CallFailure> {
        // Before `acquire`: making an instance runs `init` under a deadline.
        let _ticking = self.ticker.enter();
        let mut instance = self.acquire()?;
        let Instance {
            store,
            plugin,
            seen_view,
            request,
            load,
        } = &mut instance;
        let view_key = (snapshot.version, snapshot.published_at);
        if *seen_view != Some(view_key) {
            arm_deadline(store, self.limits.deadline);
            drive(plugin.call_view_changed(&mut *store, &view_of(snapshot)))
                .map_err(|error| failure_of(store, error))?;
            *seen_view = Some(view_key);
        }
        let prefix = &facts.body_prefix[..facts.body_prefix.len().min(self.body_prefix_len)];
        fill_request(request, facts, prefix, self.wants_headers);
        fill_load(load, snapshot, facts.time.health_ms);
        arm_deadline(store, self.limits.deadline);
        // On error the instance is dropped: its state may be corrupt.
        let decision = drive(plugin.call_route(&mut *store, request, load))
            .map_err(|error| failure_of(store, error))?;
        self.release(instance);
        convert_decision(decision, snapshot, &self.stats)
    }
}

/// Classifies a failed call.
/// Starts a call's CPU-time deadline; the store's epoch callback checks it
/// at each tick ([`super::limits::CpuDeadline`]).
fn arm_deadline(store: &mut Store<HostState>, budget: Duration) {
    store.data_mut().deadline.start(budget);
    store.set_epoch_deadline(1);
}

fn failure_of(store: &Store<HostState>, error: wasmtime::Error) -> CallFailure {
    let kind = if store.data().hit_memory_cap() {
        FailureKind::Memory
    } else if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        FailureKind::Deadline
    } else {
        FailureKind::Trap
    };
    CallFailure {
        kind,
        detail: format!("{error:#}"),
    }
}

/// Runs a call into the guest to completion on the current thread.
///
/// Calls are made the async way only because wasmtime-wasi's synchronous
/// bindings block on a tokio runtime (`Handle::block_on`) for stream
/// operations — a panicking guest writing its message to stderr — which
/// panics on a tokio worker thread, where the proxy calls plugins. With
/// async bindings nothing in this sandbox ever waits (stdio is empty or
/// discarded, no sockets or files, the deadline traps instead of yielding),
/// so the first poll completes the call; a call that would wait anyway is
/// abandoned (its instance is discarded) rather than blocking the thread.
fn drive<T>(call: impl std::future::Future<Output = wasmtime::Result<T>>) -> wasmtime::Result<T> {
    use futures_util::FutureExt;
    call.now_or_never().unwrap_or_else(|| {
        Err(wasmtime::format_err!(
            "the plugin waited on the host, which a routing plugin must not do"
        ))
    })
}

pub(super) fn empty_request() -> bindings::Request {
    bindings::Request {
        method: String::new(),
        path: String::new(),
        query: None,
        headers: Vec::new(),
        class: bindings::TrafficClass::Other,
        client: String::new(),
        body_prefix: Vec::new(),
        now_unix_ms: 0,
    }
}

fn set_string(target: &mut String, value: &str) {
    target.clear();
    target.push_str(value);
}

/// Copies the request into `target`, reusing its buffers.
pub(super) fn fill_request(
    target: &mut bindings::Request,
    facts: &RequestFacts<'_>,
    prefix: &[u8],
    with_headers: bool,
) {
    set_string(&mut target.method, facts.method.as_str());
    set_string(&mut target.path, facts.path);
    match (facts.query, &mut target.query) {
        (None, query) => *query = None,
        (Some(q), Some(query)) => set_string(query, q),
        (Some(q), query) => *query = Some(q.to_string()),
    }
    let mut used = 0;
    let headers = facts.headers.iter().filter(|_| with_headers);
    for (name, value) in headers {
        let Ok(value) = value.to_str() else { continue };
        if used == target.headers.len() {
            target.headers.push((String::new(), String::new()));
        }
        let (n, v) = &mut target.headers[used];
        set_string(n, name.as_str());
        set_string(v, value);
        used += 1;
    }
    target.headers.truncate(used);
    target.class = class_to_wit(facts.class);
    write_client(&mut target.client, facts.client);
    target.body_prefix.clear();
    target.body_prefix.extend_from_slice(prefix);
    target.now_unix_ms = facts.time.unix_ms;
}

/// Writes `addr` as `Display` does, without `fmt` for IPv4
/// ([`crate::text::push_socket_addr`]), reusing `target`'s buffer.
pub(super) fn write_client(target: &mut String, addr: SocketAddr) {
    let mut bytes = std::mem::take(target).into_bytes();
    bytes.clear();
    crate::text::push_socket_addr(&mut bytes, addr);
    // `push_socket_addr` writes ASCII only.
    *target = String::from_utf8(bytes).unwrap_or_default();
}

/// The view as `view-changed` gets it.
pub(super) fn view_of(snapshot: &Snapshot) -> bindings::View {
    bindings::View {
        version: snapshot.version,
        nodes: snapshot
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| bindings::Node {
                id: n.node.id.to_string(),
                address: n.node.addr.map(|a| a.to_string()),
                serves_query: n.node.modes.query,
                serves_job: n.node.modes.job,
                is_leader: snapshot.leader == Some(i),
            })
            .collect(),
    }
}

/// Fills `target` with the live state of `snapshot`'s nodes at `now` (on
/// the health clock), reusing its buffer.
pub(super) fn fill_load(target: &mut bindings::ViewLoad, snapshot: &Snapshot, now: u64) {
    target.version = snapshot.version;
    target.nodes.clear();
    target
        .nodes
        .extend(snapshot.nodes.iter().map(|n| bindings::NodeLoad {
            healthy: n.node.routable() && !n.state.is_ejected(now),
            in_flight: n.state.in_flight(),
            latency_us: n.state.latency_ewma_us.load(Ordering::Relaxed),
        }));
}

/// Headers a plugin may not set: they belong to the connection or framing.
const RESERVED_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
];

/// Checks and converts a guest decision. Unknown node ids are dropped and
/// counted; anything else unusable makes the whole decision malformed.
pub(super) fn convert_decision(
    decision: bindings::Decision,
    snapshot: &Snapshot,
    stats: &PluginStats,
) -> Result<Decision, CallFailure> {
    let malformed = |detail: String| CallFailure {
        kind: FailureKind::Malformed,
        detail,
    };
    let route = match decision.route {
        bindings::Route::Default => Route::Default,
        bindings::Route::Prefer(ids) if ids.is_empty() => Route::Default,
        bindings::Route::Prefer(ids) => {
            let mut known = Vec::with_capacity(ids.len());
            for id in &ids {
                match snapshot.position(id) {
                    Some(i) => known.push(snapshot.nodes[i].node.id.clone()),
                    None => stats.failure(FailureKind::UnknownNode, &format!("node '{id}'")),
                }
            }
            if known.is_empty() {
                return Err(malformed(format!(
                    "prefer names no node of the view: {ids:?}"
                )));
            }
            Route::Prefer(known)
        }
        bindings::Route::Reject(rejection) => {
            let status = StatusCode::from_u16(rejection.status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .ok_or_else(|| {
                    malformed(format!(
                        "reject status {} is not 400..=599",
                        rejection.status
                    ))
                })?;
            Route::Reject {
                status,
                message: rejection.message,
            }
        }
        bindings::Route::Reclassify(class) => Route::Reclassify(wit_class(class)),
    };
    let mut add_headers = Vec::with_capacity(decision.add_headers.len());
    for (name, value) in decision.add_headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .ok()
            .filter(|n| !RESERVED_HEADERS.contains(&n.as_str()))
            .ok_or_else(|| malformed(format!("header name '{name}' is invalid or reserved")))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| malformed(format!("header '{name}' has an invalid value")))?;
        add_headers.push((name, value));
    }
    Ok(Decision { route, add_headers })
}

pub fn class_to_wit(class: TrafficClass) -> bindings::TrafficClass {
    match class {
        TrafficClass::Query => bindings::TrafficClass::Query,
        TrafficClass::Job => bindings::TrafficClass::Job,
        TrafficClass::Other => bindings::TrafficClass::Other,
    }
}

pub fn wit_class(class: bindings::TrafficClass) -> TrafficClass {
    match class {
        bindings::TrafficClass::Query => TrafficClass::Query,
        bindings::TrafficClass::Job => TrafficClass::Job,
        bindings::TrafficClass::Other => TrafficClass::Other,
    }
}
