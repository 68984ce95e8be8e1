//! Limits against hostile or broken clients (`[limits]`): the first request
//! head's deadline on a new connection, the open-connection cap and the
//! in-flight request cap. All are counters and timers: nothing here takes
//! a lock or allocates per request.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

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

/// Set by the connection's service once its first request arrived.
#[derive(Clone, Default)]
pub struct FirstRequest(Arc<AtomicBool>);

impl FirstRequest {
    pub fn arrived(&self) {
        self.0.store(true, Ordering::Relaxed);
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
    if first.0.load(Ordering::Relaxed) {
        Some(connection.await)
    } else {
        None
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
