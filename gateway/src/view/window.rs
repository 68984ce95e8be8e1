//! A per-node rolling window of answered requests: 60 one-second buckets of
//! counts and a coarse log2 latency histogram (for the last minute's rate
//! and p50/p99), and 30 ten-second buckets of counts (a 5-minute series
//! for the status page's sparkline). Recording is a handful of relaxed
//! atomic operations: no lock, no allocation.
//!
//! # Notable behaviors
//! A bucket is reused when its second comes round again: the first
//! recorder to see a stale tag claims it with a compare-exchange and zeroes
//! it. A request recorded concurrently into the same slot in that instant
//! may be lost or counted in the new second; the window is for operators'
//! eyes, not for billing.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Latency histogram classes: class `i` holds latencies below
/// `BASE_US << i` (class 0: under 128 µs; the last one: everything else,
/// from about 33 s).
const CLASSES: usize = 19;
const BASE_US: u64 = 128;
const SECONDS: usize = 60;
/// The sparkline: 30 buckets of 10 s.
pub const SERIES_BUCKETS: usize = 30;
pub const SERIES_STEP_S: u64 = 10;

#[derive(Debug)]
struct Second {
    /// The second (on the caller's clock) this bucket counts, plus one
    /// (0 = never used).
    tag: AtomicU64,
    count: AtomicU32,
    latency: [AtomicU32; CLASSES],
}

#[derive(Debug)]
struct Step {
    tag: AtomicU64,
    count: AtomicU32,
}

/// The window. Times are whole seconds on any monotonic clock; the proxy
/// uses the process clock of [`crate::balance::health::now_ms`].
#[derive(Debug)]
pub struct RollingWindow {
    seconds: [Second; SECONDS],
    steps: [Step; SERIES_BUCKETS],
}

impl Default for RollingWindow {
    fn default() -> Self {
        RollingWindow {
            seconds: std::array::from_fn(|_| Second {
                tag: AtomicU64::new(0),
                count: AtomicU32::new(0),
                latency: std::array::from_fn(|_| AtomicU32::new(0)),
            }),
            steps: std::array::from_fn(|_| Step {
                tag: AtomicU64::new(0),
                count: AtomicU32::new(0),
            }),
        }
    }
}

/// What the window says at one moment (for `/admin/nodes`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct WindowStats {
    /// Requests answered per second, averaged over the last 60 s.
    pub requests_per_second: f64,
    /// Upper bounds of the log2 latency classes holding the median and the
    /// 99th percentile of the last 60 s, in milliseconds; `None` without
    /// requests.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Requests per 10 s over the last 5 minutes, oldest first; the last
    /// bucket is the current (partial) one.
    pub series: Vec<u32>,
}

fn class_of(micros: u64) -> usize {
    let scaled = micros / BASE_US;
    // 0 → 0, 1 → 1, 2..3 → 2, 4..7 → 3, ...
    ((u64::BITS - scaled.leading_zeros()) as usize).min(CLASSES - 1)
}

/// The upper bound of a latency class, in milliseconds.
fn class_upper_ms(class: usize) -> f64 {
    (BASE_US << class) as f64 / 1000.0
}

/// Claims `tag` for `want` (zeroing through `reset`) if it holds another.
fn claim(tag: &AtomicU64, want: u64, reset: impl FnOnce()) {
    let seen = tag.load(Ordering::Relaxed);
    if seen != want
        && tag
            .compare_exchange(seen, want, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    {
        reset();
    }
}

impl RollingWindow {
    /// Records one answered request that took `micros`, at second `now_s`.
    pub fn record(&self, now_s: u64, micros: u64) {
        let second = &self.seconds[(now_s % SECONDS as u64) as usize];
        claim(&second.tag, now_s + 1, || {
            second.count.store(0, Ordering::Relaxed);
            for class in &second.latency {
                class.store(0, Ordering::Relaxed);
            }
        });
        second.count.fetch_add(1, Ordering::Relaxed);
        second.latency[class_of(micros)].fetch_add(1, Ordering::Relaxed);
        let step_no = now_s / SERIES_STEP_S;
        let step = &self.steps[(step_no % SERIES_BUCKETS as u64) as usize];
        claim(&step.tag, step_no + 1, || {
            step.count.store(0, Ordering::Relaxed)
        });
        step.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The last minute and the last five, as seen at second `now_s`.
    pub fn stats(&self, now_s: u64) -> WindowStats {
        let mut total = 0u64;
        let mut latency = [0u64; CLASSES];
        for second in &self.seconds {
            let tag = second.tag.load(Ordering::Relaxed);
            // Seconds now-59 ..= now.
            if tag == 0 || tag > now_s + 1 || tag + SECONDS as u64 <= now_s + 1 {
                continue;
            }
            total += u64::from(second.count.load(Ordering::Relaxed));
            for (sum, class) in latency.iter_mut().zip(&second.latency) {
                *sum += u64::from(class.load(Ordering::Relaxed));
            }
        }
        let quantile = |q: f64| -> Option<f64> {
            let counted: u64 = latency.iter().sum();
            if counted == 0 {
                return None;
            }
            let rank = ((counted as f64 * q).ceil() as u64).max(1);
            let mut seen = 0;
            latency.iter().enumerate().find_map(|(class, n)| {
                seen += n;
                (seen >= rank).then(|| class_upper_ms(class))
            })
        };
        let now_step = now_s / SERIES_STEP_S;
        let series = (0..SERIES_BUCKETS as u64)
            .rev()
            .map(|back| {
                let Some(step_no) = now_step.checked_sub(back) else {
                    return 0;
                };
                let step = &self.steps[(step_no % SERIES_BUCKETS as u64) as usize];
                if step.tag.load(Ordering::Relaxed) == step_no + 1 {
                    step.count.load(Ordering::Relaxed)
                } else {
                    0
                }
            })
            .collect();
        WindowStats {
            requests_per_second: total as f64 / SECONDS as f64,
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            series,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_classes_are_log2_of_128us() {
        assert_eq!(class_of(0), 0);
        assert_eq!(class_of(127), 0);
        assert_eq!(class_of(128), 1);
        assert_eq!(class_of(255), 1);
        assert_eq!(class_of(256), 2);
        assert_eq!(class_of(1_000), 3); // < 1.024 ms
        assert_eq!(class_of(u64::MAX), CLASSES - 1);
        assert_eq!(class_upper_ms(3), 1.024);
    }

    #[test]
    fn empty_window_has_no_rate_and_no_quantiles() {
        let stats = RollingWindow::default().stats(1_000);
        assert_eq!(stats.requests_per_second, 0.0);
        assert_eq!(stats.p50_ms, None);
        assert_eq!(stats.series, vec![0; SERIES_BUCKETS]);
    }

    #[test]
    fn rate_counts_the_last_sixty_seconds_only() {
        let window = RollingWindow::default();
        for s in 100..160 {
            window.record(s, 500);
            window.record(s, 500);
        }
        assert_eq!(window.stats(159).requests_per_second, 2.0);
        // Ten seconds on, the first ten seconds have left the window.
        assert_eq!(window.stats(169).requests_per_second, 100.0 / 60.0);
        // A minute after the last request, nothing is left.
        assert_eq!(window.stats(219).requests_per_second, 0.0);
        // A bucket reused for a new second forgets its old count.
        window.record(220, 500);
        assert_eq!(window.stats(220).requests_per_second, 1.0 / 60.0);
    }

    #[test]
    fn quantiles_report_the_class_upper_bound() {
        let window = RollingWindow::default();
        for _ in 0..98 {
            window.record(10, 1_000); // class 3, < 1.024 ms
        }
        window.record(10, 100_000); // class 10, < 131.072 ms
        window.record(11, 100_000);
        let stats = window.stats(11);
        assert_eq!(stats.p50_ms, Some(1.024));
        assert_eq!(stats.p99_ms, Some(131.072));
    }

    #[test]
    fn series_is_oldest_first_in_ten_second_steps() {
        let window = RollingWindow::default();
        window.record(1_000, 1); // step 100
        window.record(1_005, 1); // step 100
        window.record(1_012, 1); // step 101
        let series = window.stats(1_015).series;
        assert_eq!(series.len(), SERIES_BUCKETS);
        assert_eq!(&series[SERIES_BUCKETS - 2..], &[2, 1]);
        assert_eq!(series[..SERIES_BUCKETS - 2].iter().sum::<u32>(), 0);
        // Five minutes later both steps are out of the series.
        assert_eq!(
            window.stats(1_015 + 300).series.iter().sum::<u32>(),
            0,
            "stale steps must not show"
        );
    }
}
