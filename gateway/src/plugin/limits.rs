//! Every resource bound a plugin runs under, in one place: the engine's
//! pooling allocator, the per-call epoch deadline and its ticker thread, and
//! the per-store memory cap.
//!
//! The deadline uses epochs, not fuel: epoch checks are a load and compare at
//! function entries and loop back-edges, while fuel counts every basic block
//! and its budget would be in instructions, not time (fuel was not
//! benchmarked here). The compile cache is wasmtime's own (`cache` feature),
//! which keeps `#![forbid(unsafe_code)]`: `Component::deserialize` would need
//! `unsafe`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, StoreLimits,
    StoreLimitsBuilder,
};

use crate::config::PluginRuntime;

/// How often the epoch ticks. The deadline is counted in ticks, so a call
/// is interrupted between `deadline` and `deadline + EPOCH_TICK`.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Component instances the pooling allocator keeps slots for, across all
/// plugins and versions alive at once (old versions live until their last
/// in-flight call ends). Wasmtime's default; slots are address space
/// reserved up front (about 4 GiB of it per memory), not resident memory.
/// Beyond this, instantiation fails and is counted as `instantiate`.
const POOLED_INSTANCES: u32 = 1000;

/// Bounds derived from `[plugin_runtime]`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub deadline_ticks: u64,
    pub memory_bytes: usize,
}

impl Limits {
    pub fn from_runtime(runtime: &PluginRuntime) -> Limits {
        let ticks = runtime
            .deadline
            .as_micros()
            .div_ceil(EPOCH_TICK.as_micros());
        Limits {
            deadline_ticks: u64::try_from(ticks).unwrap_or(u64::MAX).max(1),
            memory_bytes: usize::try_from(runtime.memory_bytes).unwrap_or(usize::MAX),
        }
    }

    /// The memory cap of one store. Growth beyond it traps (rather than
    /// returning -1 to the guest) so the failure is reported as out of
    /// memory instead of as whatever the guest's allocator does next.
    pub fn store_limits(&self) -> StoreLimits {
        StoreLimitsBuilder::new()
            .memory_size(self.memory_bytes)
            .instances(32)
            .tables(32)
            .memories(8)
            .trap_on_grow_failure(true)
            .build()
    }

    /// The engine every plugin shares: epoch interruption on, pooling
    /// allocator sized for [`POOLED_INSTANCES`], compiled code cached on disk
    /// in `cache_dir` when set (wasmtime keys entries by a hash of the
    /// component bytes, the compiler settings and the wasmtime version).
    pub fn engine(
        &self,
        cache_dir: Option<&std::path::Path>,
        pooling: bool,
    ) -> wasmtime::Result<Engine> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        if pooling {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(POOLED_INSTANCES)
                .total_core_instances(POOLED_INSTANCES * 8)
                .total_memories(POOLED_INSTANCES)
                .total_tables(POOLED_INSTANCES * 4)
                .total_stacks(POOLED_INSTANCES)
                .max_memory_size(self.memory_bytes)
                .max_memories_per_component(4)
                .max_tables_per_component(8)
                .max_core_instances_per_component(16);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        if let Some(dir) = cache_dir {
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(wasmtime::Cache::new(cache)?));
        }
        Engine::new(&config)
    }
}

/// Increments the engine's epoch every [`EPOCH_TICK`] on a thread of its
/// own until dropped. A thread rather than a tokio task: the tick must go on
/// when every runtime worker is busy running plugins.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub fn start(engine: Engine) -> std::io::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("kgw-plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
