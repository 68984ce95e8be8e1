//! The arithmetic of a quota: a gateway's share of a fleet total, and a
//! token bucket kept in one atomic. Decisions are pure functions of their
//! inputs (the time is passed in), so tests need no clock.

use std::sync::atomic::{AtomicU64, Ordering};

const NANOS_PER_S: u64 = 1_000_000_000;

/// This gateway's share of a fleet-wide `limit` enforced by `gateways`
/// gateways: ⌈limit / gateways⌉, so the shares add up to at least the
/// limit (a project is never held below its configured total) and never
/// drop to 0.
pub fn share(limit: u64, gateways: usize) -> u64 {
    limit.div_ceil(gateways.max(1) as u64).max(1)
}

/// A token bucket of `burst` tokens refilled at `rate` per second, stored
/// as GCRA's "theoretical arrival time" (TAT): the instant the bucket would
/// be full again if nothing more were taken. One compare-and-swap per
/// request, no lock; rate and burst are passed per call, so a new fleet
/// share applies at once.
#[derive(Default)]
pub struct Bucket {
    tat_ns: AtomicU64,
}

impl Bucket {
    /// Takes one token at `now_ns`, or tells how many nanoseconds until one
    /// is there.
    pub fn take(&self, now_ns: u64, rate: u64, burst: u64) -> Result<(), u64> {
        let mut tat = self.tat_ns.load(Ordering::Relaxed);
        loop {
            let next = gcra(tat, now_ns, rate, burst)?;
            match self
                .tat_ns
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }
}

/// One GCRA step: each token is `interval` of the bucket's time; a request
/// is admitted while the bucket's time runs at most `burst` intervals ahead
/// of `now`. Returns the new TAT, or the wait until a token (at least one
/// nanosecond).
pub fn gcra(tat: u64, now: u64, rate: u64, burst: u64) -> Result<u64, u64> {
    let interval = (NANOS_PER_S / rate.max(1)).max(1);
    let tolerance = interval.saturating_mul(burst.max(1));
    let next = tat.max(now).saturating_add(interval);
    let ahead = next - now;
    if ahead <= tolerance {
        Ok(next)
    } else {
        Err(ahead - tolerance)
    }
}

/// A wait in whole seconds for `Retry-After`: rounded up, at least 1.
pub fn retry_after_s(wait_ns: u64) -> u64 {
    wait_ns.div_ceil(NANOS_PER_S).max(1)
}
