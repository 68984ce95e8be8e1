//! Limits against hostile or broken clients (`[limits]`): the first request
//! head's deadline on a new connection (answered 408 when the client sent
//! part of a head), the open-connection cap and the in-flight request cap.
//! All are counters and timers: nothing here takes a lock or allocates per
//! request.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

/// `period` after `from`; a period too long to add is as good as none (a
/// year is far enough). The deadline of every connection and body timer.
pub fn deadline(from: tokio::time::Instant, period: Duration) -> tokio::time::Instant {
    from.checked_add(period)
        .unwrap_or_else(|| from + Duration::from_secs(365 * 86_400))
}

/// Requests being handled at once, capped: past the cap a request is shed
/// (503) instead of queued.
pub struct InFlightLimit {
    count: AtomicUsize,
    max: usize,
}

/// One admitted request; leaving it frees its place.
pub struct InFlightSlot<'a>(&'a AtomicUsize);

impl InFlightLimit {
    pub fn new(max: usize) -> InFlightLimit {
        InFlightLimit {
            count: AtomicUsize::new(0),
            max,
        }
    }

    /// A place for one more request, or `None` when all are taken.
    pub fn try_enter(&self) -> Option<InFlightSlot<'_>> {
        if self.count.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.count.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(InFlightSlot(&self.count))
    }
}

impl Drop for InFlightSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a connection stands with its first request: set to arrived by the
/// connection's service, to timed out by [`first_request_within`].
#[derive(Clone, Default)]
pub struct FirstRequest(Arc<AtomicU8>);

const WAITING: u8 = 0;
const ARRIVED: u8 = 1;
const TIMED_OUT: u8 = 2;

impl FirstRequest {
    pub fn arrived(&self) {
        self.0.store(ARRIVED, Ordering::Relaxed);
    }

    /// The deadline passed first; false when the request won the race.
    fn time_out(&self) -> bool {
        self.0
            .compare_exchange(WAITING, TIMED_OUT, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    pub(super) fn timed_out(&self) -> bool {
        self.0.load(Ordering::Relaxed) == TIMED_OUT
    }
}

/// Runs `connection` but drops it (closing the socket) if no request
/// arrived within `deadline`: a client that connects and sends nothing, or
/// trickles its first request head, holds a connection no longer than that.
/// Later heads on the connection are hyper's `header_read_timeout` (the
/// idle timeout); this covers the first, including the HTTP/1-or-h2c
/// sniffing that runs before hyper's timer starts.
pub async fn first_request_within<F: Future>(
    deadline: Duration,
    first: FirstRequest,
    connection: F,
) -> Option<F::Output> {
    tokio::pin!(connection);
    tokio::select! {
        output = &mut connection => return Some(output),
        () = tokio::time::sleep(deadline) => {}
    }
    if first.time_out() {
        None
    } else {
        Some(connection.await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_slots_are_capped_and_given_back() {
        let limit = InFlightLimit::new(2);
        let a = limit.try_enter().expect("first");
        let b = limit.try_enter().expect("second");
        assert!(limit.try_enter().is_none());
        drop(a);
        let c = limit.try_enter().expect("freed by the first");
        assert!(limit.try_enter().is_none());
        drop((b, c));
        assert_eq!(limit.count.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_connection_without_a_first_request_is_dropped() {
        let first = FirstRequest::default();
        let silent = first_request_within(
            Duration::from_millis(20),
            first.clone(),
            std::future::pending::<()>(),
        );
        assert!(silent.await.is_none());
        first.arrived();
        let served = first_request_within(Duration::from_millis(20), first, async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            7
        });
        assert_eq!(served.await, Some(7));
    }
}
