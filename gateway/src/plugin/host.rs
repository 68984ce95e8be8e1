//! What a plugin's store holds and the functions the host offers it: the
//! sandboxed WASI context (no preopens, network, environment or stdio) and
//! `host.log`, tagged with the plugin name and rate-limited per plugin.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{HostImports, LogLevel};
use super::limits::CpuDeadline;

/// A burst of this many lines, then [`LOG_LINES_PER_SECOND`].
const LOG_BURST: f64 = 20.0;
const LOG_LINES_PER_SECOND: f64 = 10.0;
/// Longer messages are cut (at a char boundary) to keep the log readable.
const LOG_MAX_CHARS: usize = 1024;

/// The data of one plugin instance's store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    hit_memory_cap: bool,
    log: Arc<PluginLog>,
    /// The running call's deadline, checked by the store's epoch callback.
    pub deadline: CpuDeadline,
}

impl HostState {
    pub fn new(limits: StoreLimits, log: Arc<PluginLog>) -> HostState {
        HostState {
            wasi: sandboxed_wasi(),
            table: ResourceTable::new(),
            limits,
            hit_memory_cap: false,
            log,
            deadline: CpuDeadline::default(),
        }
    }

    /// Whether a memory growth was refused since the store was made; tells
    /// an out-of-memory trap from other traps.
    pub fn hit_memory_cap(&self) -> bool {
        self.hit_memory_cap
    }
}

/// The store's memory cap, remembering when it refused a growth.
impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.hit_memory_cap = true;
        }
        allowed
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.hit_memory_cap = true;
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// WASI as a std guest needs it to link, granting nothing: no preopened
/// directories, no environment or arguments, empty stdin, stdout and stderr
/// discarded, every socket use denied. Clocks and random stay available
/// (std needs them for `Instant` and `HashMap` seeds); plugins get the
/// request time from the host in `request.now-unix-ms`.
fn sandboxed_wasi() -> WasiCtx {
    WasiCtx::builder()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HostImports for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        self.log.write(level, &message);
    }
}

/// The log sink shared by every instance of one plugin: a token bucket, so
/// a plugin logging on every request cannot flood the gateway's log.
pub struct PluginLog {
    plugin: Arc<str>,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
}

impl PluginLog {
    pub fn new(plugin: Arc<str>) -> PluginLog {
        PluginLog {
            plugin,
            bucket: Mutex::new(Bucket {
                tokens: LOG_BURST,
                refilled: Instant::now(),
                suppressed: 0,
            }),
        }
    }

    /// Admits a line or counts it as suppressed; returns how many lines were
    /// suppressed before this admitted one.
    fn admit(&self, now: Instant) -> Option<u64> {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * LOG_LINES_PER_SECOND).min(LOG_BURST);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Some(std::mem::take(&mut bucket.suppressed))
        } else {
            bucket.suppressed += 1;
            None
        }
    }

    pub fn write(&self, level: LogLevel, message: &str) {
        let Some(suppressed) = self.admit(Instant::now()) else {
            metrics::counter!("kgw_plugin_log_suppressed_total", "plugin" => self.plugin.clone())
                .increment(1);
            return;
        };
        let message = match message.char_indices().nth(LOG_MAX_CHARS) {
            Some((cut, _)) => &message[..cut],
            None => message,
        };
        let plugin = &*self.plugin;
        match level {
            LogLevel::Trace => tracing::trace!(target: "plugin", plugin, suppressed, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "plugin", plugin, suppressed, "{message}"),
            LogLevel::Info => tracing::info!(target: "plugin", plugin, suppressed, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "plugin", plugin, suppressed, "{message}"),
            LogLevel::Error => tracing::error!(target: "plugin", plugin, suppressed, "{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn log_bucket_admits_a_burst_then_refills_and_reports_suppressed_lines() {
        let log = PluginLog::new("p".into());
        let start = Instant::now();
        for _ in 0..20 {
            assert_eq!(log.admit(start), Some(0));
        }
        assert_eq!(log.admit(start), None);
        assert_eq!(log.admit(start), None);
        // 100 ms later one token has come back; it reports the two dropped.
        assert_eq!(log.admit(start + Duration::from_millis(100)), Some(2));
        assert_eq!(log.admit(start + Duration::from_millis(100)), None);
    }
}
