//! `kgw_request_duration_seconds` is recorded on every request: recording
//! must not allocate, or an unscraped gateway grows with every request (it
//! did, through the Prometheus exporter's histograms: `bench/RESULTS.md`,
//! stop 29). A global allocator counts each thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use kylin_gateway::classify::TrafficClass;
use kylin_gateway::proxy::durations;

struct CountingPerThread;

thread_local! {
    // `const`: no lazy initialisation, so reading it never allocates.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the
// counter is a const thread-local cell.
unsafe impl GlobalAlloc for CountingPerThread {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingPerThread = CountingPerThread;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn value(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
}

// The only test in this binary: the histogram is process-wide.
#[test]
fn recording_allocates_nothing_and_every_request_is_counted_once() {
    // As the binary does: a histogram recorded through this recorder would
    // allocate as its samples pile up.
    let _handle = kylin_gateway::admin::install_recorder().expect("the first recorder");
    // A thread's first record registers its shard: that one allocates.
    durations::record(TrafficClass::Query, Duration::from_micros(300));
    let before = allocations();
    for i in 0..200_000u64 {
        durations::record(TrafficClass::Query, Duration::from_micros(i % 4_000));
    }
    assert_eq!(
        allocations() - before,
        0,
        "recording 200,000 durations allocated"
    );

    std::thread::spawn(|| {
        for _ in 0..1_000 {
            durations::record(TrafficClass::Job, Duration::from_millis(20));
        }
    })
    .join()
    .expect("recording thread");

    let mut metrics = String::new();
    durations::render(&mut metrics);
    assert_eq!(
        value(
            &metrics,
            "kgw_request_duration_seconds_count{class=\"query\"}"
        ),
        200_001
    );
    // 0..=500 µs of every 4,000: 501 of them, 50 times over, and the first.
    assert_eq!(
        value(
            &metrics,
            "kgw_request_duration_seconds_bucket{class=\"query\",le=\"0.0005\"}"
        ),
        501 * 50 + 1
    );
    assert_eq!(
        value(
            &metrics,
            "kgw_request_duration_seconds_bucket{class=\"query\",le=\"0.005\"}"
        ),
        200_001
    );
    // The other thread's shard outlives the thread.
    assert_eq!(
        value(
            &metrics,
            "kgw_request_duration_seconds_count{class=\"job\"}"
        ),
        1_000
    );
    assert_eq!(
        value(
            &metrics,
            "kgw_request_duration_seconds_bucket{class=\"job\",le=\"0.01\"}"
        ),
        0
    );
    assert_eq!(
        value(
            &metrics,
            "kgw_request_duration_seconds_bucket{class=\"job\",le=\"0.025\"}"
        ),
        1_000
    );
    assert!(!metrics.contains("class=\"other\""), "{metrics}");
}
