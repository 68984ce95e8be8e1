//! Every resource bound a plugin runs under, in one place: the engine's
//! pooling allocator, sized to the instances the gateway can use at once;
//! the per-call deadline, charged in the calling thread's CPU time; the
//! epoch ticker thread that wakes the deadline check (asleep while no call
//! runs); and the per-store memory cap.
//!
//! The deadline uses epochs, not fuel: epoch checks are a load and compare at
//! function entries and loop back-edges, while fuel counts every basic block
//! and its budget would be in instructions, not time (fuel was not
//! benchmarked here). The compile cache is wasmtime's own (`cache` feature),
//! which keeps `#![forbid(unsafe_code)]`: `Component::deserialize` would need
//! `unsafe`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, StoreLimits,
    StoreLimitsBuilder, UpdateDeadline,
};

use crate::config::PluginRuntime;

/// How often the epoch ticks: how often a running call's CPU time is
/// checked against its deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Versions of one plugin that may hold instances at once: the current one,
/// a new one being loaded and an old one whose last calls are finishing.
const VERSIONS_ALIVE: usize = 3;

/// Bounds derived from `[plugin_runtime]` and the number of plugins.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// CPU time a call may use.
    pub deadline: Duration,
    pub memory_bytes: usize,
    /// Idle instances kept per plugin version.
    pub idle_instances: usize,
    /// Instances the pooling allocator has slots for, across all plugins.
    pub pool_slots: u32,
}

impl Limits {
    /// `plugins`: how many plugins the runtime will hold.
    pub fn from_runtime(runtime: &PluginRuntime, plugins: usize) -> Limits {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        Limits {
            deadline: runtime.deadline,
            memory_bytes: usize::try_from(runtime.memory_bytes).unwrap_or(usize::MAX),
            idle_instances: runtime.idle_instances,
            pool_slots: pool_slots(plugins, runtime.idle_instances, threads),
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
    /// allocator with [`Limits::pool_slots`] slots, compiled code cached on
    /// disk in `cache_dir` when set (wasmtime keys entries by a hash of the
    /// component bytes, the compiler settings and the wasmtime version).
    ///
    /// Memories get guard pages (`bounds: None` chooses by
    /// [`guard_pages_fit`]) unless the address space is too tight for them,
    /// or reserving it fails; they are bounds-checked then. Without pooling
    /// (tests, benches) wasmtime's defaults apply, which are guard pages.
    pub fn engine(
        &self,
        cache_dir: Option<&std::path::Path>,
        pooling: bool,
        bounds: Option<MemoryBounds>,
    ) -> wasmtime::Result<(Engine, MemoryBounds)> {
        if !pooling {
            return Ok((
                self.build_engine(cache_dir, None)?,
                MemoryBounds::GuardPages,
            ));
        }
        let bounds = bounds
            .unwrap_or_else(|| guard_pages_fit(self.pool_slots, address_space_limit()).into());
        if bounds == MemoryBounds::GuardPages {
            match self.build_engine(cache_dir, Some(MemoryBounds::GuardPages)) {
                Ok(engine) => return Ok((engine, bounds)),
                Err(error) => tracing::warn!(
                    "plugin_runtime: reserving guard pages for {} plugin memories failed \
                     ({error:#}); their accesses are bounds-checked instead",
                    self.pool_slots
                ),
            }
        }
        let engine = self.build_engine(cache_dir, Some(MemoryBounds::Checked))?;
        Ok((engine, MemoryBounds::Checked))
    }

    /// `bounds`: the pooling allocator's memories, `None` without pooling.
    fn build_engine(
        &self,
        cache_dir: Option<&std::path::Path>,
        bounds: Option<MemoryBounds>,
    ) -> wasmtime::Result<Engine> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // For profiling plugins: `perf` then names the guest's functions.
        if std::env::var_os("KGW_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if let Some(bounds) = bounds {
            let (reservation, guard) = match bounds {
                MemoryBounds::GuardPages => (GUARDED_RESERVATION, GUARDED_GUARD),
                MemoryBounds::Checked => (self.memory_bytes as u64, CHECKED_GUARD),
            };
            config
                .memory_reservation(reservation)
                .memory_reservation_for_growth(0)
                .memory_guard_size(guard);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(self.pool()));
        }
        if let Some(dir) = cache_dir {
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(wasmtime::Cache::new(cache)?));
        }
        Engine::new(&config)
    }

    fn pool(&self) -> PoolingAllocationConfig {
        let slots = self.pool_slots;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots)
            .total_tables(slots * 4)
            .total_stacks(slots)
            .max_memory_size(self.memory_bytes)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_core_instances_per_component(16);
        pool
    }
}

/// How the compiled code keeps a plugin's loads and stores inside its
/// memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryBounds {
    /// Each memory reserves 4 GiB of address space and a guard after it:
    /// every 32-bit address plus offset lands in the reservation, so the
    /// code checks nothing, and an access past the memory's end faults on a
    /// page that is not mapped (wasmtime turns the fault into a trap).
    GuardPages,
    /// Each memory reserves only `memory_mb` and a small guard, and the code
    /// compares every access with the memory's size: the guest then runs
    /// about a sixth slower (`benches/plugin_call.rs`).
    Checked,
}

impl From<bool> for MemoryBounds {
    /// `true`: guard pages fit.
    fn from(guard_pages_fit: bool) -> Self {
        if guard_pages_fit {
            MemoryBounds::GuardPages
        } else {
            MemoryBounds::Checked
        }
    }
}

impl MemoryBounds {
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryBounds::GuardPages => "guard pages",
            MemoryBounds::Checked => "bounds checks",
        }
    }
}

/// A guarded memory's reservation: all a 32-bit address can reach.
const GUARDED_RESERVATION: u64 = 4 << 30;
/// After a guarded memory: covers the static offset of any load or store
/// the compiler leaves unchecked (wasmtime's default).
const GUARDED_GUARD: u64 = 32 << 20;
/// After a bounds-checked memory: traps an access the check let through
/// with an offset past the end.
const CHECKED_GUARD: u64 = 2 << 20;
/// The most address space the pool may reserve with guard pages: an eighth
/// of x86-64's 128 TiB for user space. Reserved, not used: the kernel
/// neither backs nor (for `vm.overcommit_memory=2`) commits pages that are
/// never made accessible.
const GUARDED_BUDGET: u64 = 16 << 40;

/// Whether `slots` guarded memories may be reserved: within
/// [`GUARDED_BUDGET`] and, under an address-space limit (`ulimit -v`,
/// systemd's `LimitAS=`), within half of it, leaving the rest to the
/// process (1,000 slots of 4 GiB once made a 4 TB process that such a
/// limit refused). Pure: the caller reads the limit.
pub fn guard_pages_fit(slots: u32, address_space_limit: Option<u64>) -> bool {
    let need = u64::from(slots).saturating_mul(GUARDED_RESERVATION + GUARDED_GUARD);
    need <= GUARDED_BUDGET && address_space_limit.is_none_or(|limit| need <= limit / 2)
}

/// The process's address-space limit (`RLIMIT_AS`), `None` if unlimited.
fn address_space_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::As).current
}

/// Pool slots for `plugins` plugins when `threads` worker threads call
/// them: per version, its idle instances plus one in use per thread (a call
/// runs to completion on its thread) plus one being made by a loader.
/// Past the slots an instantiation fails and is counted as `instantiate`.
pub fn pool_slots(plugins: usize, idle_instances: usize, threads: usize) -> u32 {
    let per_version = idle_instances + threads + 1;
    let slots = plugins.max(1) * VERSIONS_ALIVE * per_version;
    u32::try_from(slots).unwrap_or(u32::MAX)
}

/// The deadline of the call running in a store, charged in the CPU time of
/// the thread running it: a call is interrupted once it has run `budget`
/// since the first epoch tick it saw (so it gets between `budget` and
/// `budget + EPOCH_TICK` in all). Time the thread spent preempted is not
/// the plugin's: a wall-clock deadline failed well-behaved calls under
/// load, and those requests lost their routing decision.
///
/// Nothing is measured for the many calls that finish before the next
/// tick; the callback runs at most once per tick.
#[derive(Debug, Default)]
pub struct CpuDeadline {
    budget: Duration,
    /// The thread's CPU time at the first tick of this call.
    started: Option<Duration>,
}

impl CpuDeadline {
    /// A call with `budget` of CPU time starts. Arm the store's epoch
    /// deadline one tick ahead (`store.set_epoch_deadline(1)`).
    pub fn start(&mut self, budget: Duration) {
        self.budget = budget;
        self.started = None;
    }

    /// An epoch tick passed during the call; `cpu_now` is the thread's CPU
    /// time. Pure: the caller reads the clock.
    pub fn on_tick(&mut self, cpu_now: Duration) -> UpdateDeadline {
        let started = *self.started.get_or_insert(cpu_now);
        if cpu_now.saturating_sub(started) >= self.budget {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Continue(1)
        }
    }
}

/// CPU time used by the calling thread so far (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> Duration {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(time.tv_sec).unwrap_or(0),
        u32::try_from(time.tv_nsec).unwrap_or(0),
    )
}

/// Ticks the ticker waits without a call running before it sleeps.
const IDLE_TICKS_BEFORE_SLEEP: u32 = 100;

/// Increments the engine's epoch every [`EPOCH_TICK`] on a thread of its
/// own while plugin calls run, until dropped. A thread rather than a tokio
/// task: the tick must go on when every runtime worker is busy running
/// plugins. Without a call for [`IDLE_TICKS_BEFORE_SLEEP`] ticks it sleeps
/// until one enters ([`EpochTicker::enter`]): awake, it cost an idle
/// gateway with a plugin about 3% of a core in wake-ups.
pub struct EpochTicker {
    shared: Arc<TickerShared>,
}

struct TickerShared {
    stop: AtomicBool,
    /// Calls in progress.
    running: AtomicUsize,
    sleeping: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
}

impl TickerShared {
    fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    fn enter(&self) -> Ticking<'_> {
        // With the ticker's store of `sleeping` and load of `running`
        // (all SeqCst), one of the two sees the other: either the ticker
        // does not sleep, or this call wakes it.
        self.running.fetch_add(1, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            self.wake();
        }
        Ticking(self)
    }
}

/// A call in progress: the ticker keeps ticking until it is dropped.
pub struct Ticking<'a>(&'a TickerShared);

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Release);
    }
}

impl EpochTicker {
    pub fn start(engine: Engine) -> std::io::Result<EpochTicker> {
        let shared = Arc::new(TickerShared {
            stop: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            sleeping: AtomicBool::new(false),
            thread: OnceLock::new(),
        });
        let ticker = shared.clone();
        let handle = std::thread::Builder::new()
            .name("kgw-plugin-epoch".into())
            .spawn(move || tick_while_calls_run(&engine, &ticker))?;
        let _ = shared.thread.set(handle.thread().clone());
        Ok(EpochTicker { shared })
    }

    /// A handle that calls enter through.
    pub fn handle(&self) -> TickerHandle {
        TickerHandle(self.shared.clone())
    }

    /// As [`TickerHandle::enter`].
    pub fn enter(&self) -> Ticking<'_> {
        self.shared.enter()
    }

    /// Whether the ticker sleeps (no call has run for a while); for tests.
    pub fn sleeping(&self) -> bool {
        self.shared.sleeping.load(Ordering::SeqCst)
    }
}

/// Where a call tells the ticker it runs.
#[derive(Clone)]
pub struct TickerHandle(Arc<TickerShared>);

impl TickerHandle {
    /// Marks a call running until the result is dropped, waking the
    /// ticker if it sleeps. Call before arming a store's deadline.
    pub fn enter(&self) -> Ticking<'_> {
        self.0.enter()
    }
}

fn tick_while_calls_run(engine: &Engine, shared: &TickerShared) {
    let mut idle_ticks = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.running.load(Ordering::Relaxed) > 0 {
            idle_ticks = 0;
        } else {
            idle_ticks += 1;
        }
        if idle_ticks >= IDLE_TICKS_BEFORE_SLEEP {
            shared.sleeping.store(true, Ordering::SeqCst);
            // Spurious wake-ups just go round again.
            if shared.running.load(Ordering::SeqCst) == 0 && !shared.stop.load(Ordering::SeqCst) {
                std::thread::park();
            }
            shared.sleeping.store(false, Ordering::SeqCst);
            idle_ticks = 0;
        }
        std::thread::sleep(EPOCH_TICK);
        engine.increment_epoch();
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn continues(update: UpdateDeadline) -> bool {
        matches!(update, UpdateDeadline::Continue(1))
    }

    #[test]
    fn preemption_is_not_charged_to_the_call() {
        let mut deadline = CpuDeadline::default();
        deadline.start(Duration::from_millis(2));
        let ms = Duration::from_millis;
        assert!(continues(deadline.on_tick(ms(100))), "first tick");
        // Many ticks passed while the thread was preempted: 0.1 ms of CPU.
        assert!(continues(deadline.on_tick(ms(100) + ms(1) / 10)));
        assert!(continues(deadline.on_tick(ms(101))));
        assert!(matches!(
            deadline.on_tick(ms(102)),
            UpdateDeadline::Interrupt
        ));
    }

    #[test]
    fn a_new_call_starts_a_new_budget() {
        let mut deadline = CpuDeadline::default();
        deadline.start(Duration::from_millis(2));
        deadline.on_tick(Duration::from_millis(10));
        deadline.start(Duration::from_millis(2));
        assert!(continues(deadline.on_tick(Duration::from_millis(50))));
        assert!(continues(deadline.on_tick(Duration::from_millis(51))));
    }

    #[test]
    fn the_thread_cpu_clock_advances_with_work() {
        let before = thread_cpu_time();
        let wall = std::time::Instant::now();
        let mut x = 0u64;
        while thread_cpu_time() <= before && wall.elapsed() < Duration::from_secs(5) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(
            thread_cpu_time() > before,
            "no CPU time counted in 5 s of work"
        );
    }

    #[test]
    fn the_ticker_sleeps_without_calls_and_ticks_while_one_runs() {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let ticker = EpochTicker::start(Engine::new(&config).unwrap()).unwrap();
        let asleep = || {
            let wall = std::time::Instant::now();
            while !ticker.sleeping() {
                assert!(wall.elapsed() < Duration::from_secs(10), "never slept");
                std::thread::sleep(EPOCH_TICK);
            }
        };
        asleep();
        let call = ticker.enter();
        let wall = std::time::Instant::now();
        while ticker.sleeping() {
            assert!(wall.elapsed() < Duration::from_secs(10), "not woken");
            std::thread::yield_now();
        }
        // Longer than the idle period: a running call keeps it awake.
        std::thread::sleep(EPOCH_TICK * IDLE_TICKS_BEFORE_SLEEP * 3);
        assert!(!ticker.sleeping(), "slept while a call ran");
        drop(call);
        asleep();
    }

    /// Guard pages forced where they do not fit: reserving them fails, and
    /// the engine is made bounds-checked instead of not at all. Run in a
    /// child process of this test binary under a 32 GiB address-space
    /// limit (`prlimit`), so that no other test runs under it.
    #[test]
    fn a_guarded_pool_that_cannot_be_reserved_falls_back_to_bounds_checks() {
        let child = "plugin::limits::tests::guarded_pool_under_a_32_gib_limit";
        let out = std::process::Command::new("prlimit")
            .arg(format!("--as={}", 32u64 << 30))
            .arg(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", child, "--test-threads=1"])
            .output()
            .expect("prlimit (util-linux)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    #[ignore = "run by a_guarded_pool_that_cannot_be_reserved_falls_back_to_bounds_checks"]
    fn guarded_pool_under_a_32_gib_limit() {
        // 10 guarded slots need 40 GiB.
        let limits = Limits {
            deadline: Duration::from_millis(2),
            memory_bytes: 1 << 20,
            idle_instances: 1,
            pool_slots: 10,
        };
        let (_engine, bounds) = limits
            .engine(None, true, Some(MemoryBounds::GuardPages))
            .unwrap();
        assert_eq!(bounds, MemoryBounds::Checked);
    }

    #[test]
    fn guard_pages_fit_the_address_space_left_to_them() {
        // One plugin on two cores: 21 slots, 84.7 GiB.
        assert!(guard_pages_fit(21, None));
        assert!(guard_pages_fit(21, Some(170 << 30)));
        assert!(!guard_pages_fit(21, Some(169 << 30)), "half of the limit");
        // Three plugins under `ulimit -v 64 GiB`.
        assert!(!guard_pages_fit(pool_slots(3, 4, 2), Some(64 << 30)));
        // Seven plugins on 64 cores: 4,053 slots, 15.96 TiB; eight: 18.2.
        assert!(guard_pages_fit(pool_slots(7, 128, 64), None));
        assert!(!guard_pages_fit(pool_slots(8, 128, 64), None), "the budget");
        assert!(!guard_pages_fit(u32::MAX, None));
    }

    #[test]
    fn pool_slots_follow_plugins_idle_instances_and_threads() {
        assert_eq!(pool_slots(1, 4, 2), 3 * 7);
        assert_eq!(pool_slots(3, 4, 2), 3 * 3 * 7);
        assert_eq!(pool_slots(0, 4, 2), pool_slots(1, 4, 2));
    }
}
