//! `kgw_request_duration_seconds`: how long the gateway took from each
//! request's head to its answer's head, by traffic class, as a Prometheus
//! histogram with fixed buckets. Each thread counts into a shard of its own
//! (two relaxed adds a request, no allocation, no cache line shared with
//! another serving thread); `/metrics` sums the shards.
//!
//! Not through the Prometheus exporter: its histograms keep every sample
//! until a scrape or an upkeep drains them. A gateway nobody scraped grew
//! by about 20 bytes a request without end, and the page faults of that
//! growth stalled its serving thread for 20-30 ms at a time
//! (`bench/RESULTS.md`, stop 29).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::classify::TrafficClass;

const HISTOGRAM: &str = "kgw_request_duration_seconds";

/// Upper bounds of the buckets, in microseconds: sub-millisecond proxying up
/// to the minutes a Kylin query or cube-build call may take.
const BOUNDS_US: [u64; 17] = [
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
];

const BUCKETS: usize = BOUNDS_US.len() + 1;
const CLASSES: usize = TrafficClass::ALL.len();

/// Records that a request of `class` took `elapsed` to answer.
pub fn record(class: TrafficClass, elapsed: Duration) {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    // `try_with`: a thread being torn down has no shard left, and a request
    // must never panic for the sake of a metric.
    let _ = OWN_SHARD.try_with(|shard| shard.classes[class.index()].add(us));
}

/// Appends the histogram in Prometheus' text format; classes without a
/// request yet are left out.
pub fn render(out: &mut String) {
    let totals = Totals::sum(&SHARDS.lock().unwrap_or_else(PoisonError::into_inner));
    totals.render(out);
}

/// Which bucket a duration of `us` microseconds counts in (buckets are
/// inclusive of their upper bound, as Prometheus' `le` says).
fn bucket_of(us: u64) -> usize {
    BOUNDS_US
        .iter()
        .position(|&bound| us <= bound)
        .unwrap_or(BOUNDS_US.len())
}

#[derive(Default)]
struct ClassCounts {
    /// Per bucket, not cumulative.
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

impl ClassCounts {
    fn add(&self, us: u64) {
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// Aligned so that no two threads' shards share a cache line.
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    classes: [ClassCounts; CLASSES],
}

/// Every thread's shard that ever recorded, kept after the thread ends so
/// that the counts never go down.
static SHARDS: Mutex<Vec<Arc<Shard>>> = Mutex::new(Vec::new());

thread_local! {
    static OWN_SHARD: Arc<Shard> = {
        let shard = Arc::new(Shard::default());
        SHARDS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(shard.clone());
        shard
    };
}

/// The shards' counts added up, per class.
#[derive(Debug, Default, PartialEq)]
struct Totals {
    buckets: [[u64; BUCKETS]; CLASSES],
    sum_us: [u64; CLASSES],
}

impl Totals {
    fn sum(shards: &[Arc<Shard>]) -> Totals {
        let mut totals = Totals::default();
        for shard in shards {
            for (class, counts) in shard.classes.iter().enumerate() {
                for (total, bucket) in totals.buckets[class].iter_mut().zip(&counts.buckets) {
                    *total += bucket.load(Ordering::Relaxed);
                }
                totals.sum_us[class] += counts.sum_us.load(Ordering::Relaxed);
            }
        }
        totals
    }

    fn render(&self, out: &mut String) {
        let seen: Vec<TrafficClass> = TrafficClass::ALL
            .into_iter()
            .filter(|class| self.buckets[class.index()].iter().any(|&n| n > 0))
            .collect();
        if seen.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP {HISTOGRAM} Seconds from a request's head to its answer's head (retries and the job hold included), by traffic class."
        );
        let _ = writeln!(out, "# TYPE {HISTOGRAM} histogram");
        for class in seen {
            let label = class.as_str();
            let mut cumulative = 0;
            for (bucket, count) in self.buckets[class.index()].iter().enumerate() {
                cumulative += count;
                let _ = write!(out, "{HISTOGRAM}_bucket{{class=\"{label}\",le=\"");
                match BOUNDS_US.get(bucket) {
                    // Seconds as Prometheus writes them: 0.0005, 1, 2.5.
                    Some(&us) => {
                        let _ = write!(out, "{}", us as f64 / 1e6);
                    }
                    None => out.push_str("+Inf"),
                }
                let _ = writeln!(out, "\"}} {cumulative}");
            }
            let seconds = self.sum_us[class.index()] as f64 / 1e6;
            let _ = writeln!(out, "{HISTOGRAM}_sum{{class=\"{label}\"}} {seconds}");
            let _ = writeln!(out, "{HISTOGRAM}_count{{class=\"{label}\"}} {cumulative}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_durations_up_to_its_bound() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(500), 0, "le=0.0005 includes 500 µs");
        assert_eq!(bucket_of(501), 1);
        assert_eq!(bucket_of(2_500), 2);
        assert_eq!(bucket_of(300_000_000), BOUNDS_US.len() - 1);
        assert_eq!(bucket_of(300_000_001), BOUNDS_US.len(), "+Inf");
        assert_eq!(bucket_of(u64::MAX), BOUNDS_US.len());
    }

    #[test]
    fn le_labels_are_the_bounds_in_seconds() {
        let mut totals = Totals::default();
        totals.buckets[TrafficClass::Query.index()][0] = 1;
        let mut out = String::new();
        totals.render(&mut out);
        let labels: Vec<&str> = out
            .lines()
            .filter_map(|line| line.split("le=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(
            labels,
            [
                "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
                "0.5", "1", "2.5", "5", "10", "30", "60", "300", "+Inf",
            ]
        );
    }

    #[test]
    fn renders_cumulative_buckets_sum_and_count_for_classes_seen() {
        let mut totals = Totals::default();
        let job = TrafficClass::Job.index();
        totals.buckets[job][0] = 2;
        totals.buckets[job][3] = 1;
        totals.buckets[job][BUCKETS - 1] = 1;
        totals.sum_us[job] = 400_004_200;
        let mut out = String::new();
        totals.render(&mut out);
        assert!(out.contains("# TYPE kgw_request_duration_seconds histogram\n"));
        for line in [
            "kgw_request_duration_seconds_bucket{class=\"job\",le=\"0.0005\"} 2\n",
            "kgw_request_duration_seconds_bucket{class=\"job\",le=\"0.0025\"} 2\n",
            "kgw_request_duration_seconds_bucket{class=\"job\",le=\"0.005\"} 3\n",
            "kgw_request_duration_seconds_bucket{class=\"job\",le=\"300\"} 3\n",
            "kgw_request_duration_seconds_bucket{class=\"job\",le=\"+Inf\"} 4\n",
            "kgw_request_duration_seconds_sum{class=\"job\"} 400.0042\n",
            "kgw_request_duration_seconds_count{class=\"job\"} 4\n",
        ] {
            assert!(out.contains(line), "{line} missing from:\n{out}");
        }
        assert!(!out.contains("class=\"query\""), "no query yet:\n{out}");
        assert_eq!(out.lines().count(), 2 + BUCKETS + 2);
    }

    #[test]
    fn nothing_is_rendered_before_the_first_request() {
        let mut out = String::new();
        Totals::default().render(&mut out);
        assert_eq!(out, "");
    }

    #[test]
    fn shards_add_up() {
        let shards: Vec<Arc<Shard>> = (0..2).map(|_| Arc::new(Shard::default())).collect();
        for (shard, us) in shards.iter().zip([700, 40_000]) {
            shard.classes[TrafficClass::Query.index()].add(us);
        }
        let totals = Totals::sum(&shards);
        let query = TrafficClass::Query.index();
        assert_eq!(totals.buckets[query][1], 1);
        assert_eq!(totals.buckets[query][6], 1);
        assert_eq!(totals.sum_us[query], 40_700);
        assert_eq!(totals.buckets[TrafficClass::Job.index()], [0; BUCKETS]);
    }
}
