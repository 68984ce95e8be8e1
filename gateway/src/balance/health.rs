//! Passive outlier ejection: after `threshold` consecutive connect failures
//! or gateway-side errors a node is ejected for `base × 2^(n-1)` (capped at
//! `max`), where `n` counts ejections in a row; it is re-admitted when that
//! time passes, and a success resets both counters.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::view::NodeState;

/// Ejection settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ejection {
    pub threshold: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            threshold: 3,
            base: Duration::from_secs(5),
            max: Duration::from_secs(300),
        }
    }
}

/// Milliseconds on a process-wide monotonic clock (never 0 after start).
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// `instant` on the clock of [`now_ms`], for a caller that has just read
/// the time anyway.
pub fn ms_at(instant: Instant) -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(|| instant);
    instant.saturating_duration_since(origin).as_millis() as u64 + 1
}

impl Ejection {
    /// Records a failure; returns true when this failure ejected the node.
    pub fn record_failure(&self, state: &NodeState, now_ms: u64) -> bool {
        let failures = state.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < self.threshold || state.is_ejected(now_ms) {
            return false;
        }
        let n = state.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let backoff = self.base.saturating_mul(1 << n).min(self.max);
        state
            .ejected_until_ms
            .store(now_ms + backoff.as_millis() as u64, Ordering::Relaxed);
        state.consecutive_failures.store(0, Ordering::Relaxed);
        true
    }

    /// Records a success: the node is healthy again.
    pub fn record_success(&self, state: &NodeState) {
        if state.consecutive_failures.load(Ordering::Relaxed) != 0 {
            state.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if state.ejections.load(Ordering::Relaxed) != 0 {
            state.ejections.store(0, Ordering::Relaxed);
        }
    }
}
