//! What a client connection is doing ([`Activity`]: its open streams,
//! whether its last write blocked), and the idle timeout of multiplexed
//! connections (HTTP/2, and every TLS connection, served by hyper's
//! auto-detecting builder). hyper bounds an idle HTTP/1 connection by its
//! header read timeout, but has nothing for an HTTP/2 connection whose
//! streams have all ended: it would stay open for as long as the client
//! keeps it. Here each connection counts its open streams (from the request
//! to the end of its answer's body); once none has been open for
//! `limits.idle_timeout_ms`, the connection is shut down gracefully
//! (GOAWAY: the client knows no stream was lost). The same path starts the
//! drain on shutdown. Counting costs two atomics per stream.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::{Notify, watch};

use super::side_wake::SideWake;

/// What one client connection is doing: the streams open on it (an
/// HTTP/1 connection has at most one), and whether its last write blocked.
#[derive(Default)]
pub struct Activity {
    open: AtomicUsize,
    /// Streams ever opened: tells an idle period that saw a stream come and
    /// go from one that saw none.
    opened: AtomicU64,
    /// Woken when the last open stream ends.
    none_open: Notify,
    /// The client's socket took less than it was offered: hyper may still
    /// hold bytes of an answer it has not sent.
    write_blocked: AtomicBool,
}

/// One open stream; its end (drop) is counted.
pub struct OpenStream(Arc<Activity>);

impl Activity {
    pub fn open(self: &Arc<Self>) -> OpenStream {
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenStream(self.clone())
    }

    /// Streams opened so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// When the connection is idle (no stream open, every byte of its
    /// answers taken by the socket), the count of streams opened so far: two
    /// equal marks taken a while apart mean it was idle all along.
    pub fn idle_mark(&self) -> Option<u64> {
        let idle =
            self.open.load(Ordering::Acquire) == 0 && !self.write_blocked.load(Ordering::Relaxed);
        idle.then(|| self.opened())
    }

    pub fn set_write_blocked(&self, blocked: bool) {
        self.write_blocked.store(blocked, Ordering::Relaxed);
    }

    /// Resolves once no stream has been open for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let none_open = self.none_open.notified();
            if self.open.load(Ordering::Acquire) > 0 {
                none_open.await;
                continue;
            }
            let opened = self.opened.load(Ordering::Relaxed);
            tokio::time::sleep(timeout).await;
            if self.open.load(Ordering::Acquire) == 0
                && self.opened.load(Ordering::Relaxed) == opened
            {
                return;
            }
        }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_open.notify_one();
        }
    }
}

/// A response body that keeps its stream counted as open until it has
/// been sent (or dropped).
pub struct Counted<B> {
    body: B,
    _open: OpenStream,
}

impl<B> Counted<B> {
    pub fn new(body: B, open: OpenStream) -> Counted<B> {
        Counted { body, _open: open }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What a multiplexed connection is watched with: its activity, the idle
/// timeout and the listener's drain signal.
pub struct IdleWatch {
    streams: Arc<Activity>,
    timeout: Duration,
    draining: watch::Receiver<bool>,
}

impl IdleWatch {
    pub fn new(
        streams: Arc<Activity>,
        timeout: Duration,
        draining: watch::Receiver<bool>,
    ) -> IdleWatch {
        IdleWatch {
            streams,
            timeout,
            draining,
        }
    }

    /// Serves `connection` to its end, shutting it down gracefully once no
    /// stream has been open for the timeout, or when the drain starts.
    pub async fn serve<C: GracefulConnection>(self, connection: C) -> Result<(), C::Error> {
        let IdleWatch {
            streams,
            timeout,
            mut draining,
        } = self;
        let mut connection = std::pin::pin!(connection);
        let mut idle = std::pin::pin!(streams.idle_for(timeout));
        let mut drain = std::pin::pin!(draining.wait_for(|draining| *draining));
        let mut side = SideWake::new();
        let ended = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            let Some(mut side_cx) = side.woken(cx) else {
                return Poll::Pending;
            };
            if idle.as_mut().poll(&mut side_cx).is_ready() {
                tracing::debug!(?timeout, "closing an idle connection");
                return Poll::Ready(None);
            }
            if drain.as_mut().poll(&mut side_cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        if let Some(result) = ended {
            return result;
        }
        connection.as_mut().graceful_shutdown();
        connection.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_once_no_stream_has_been_open_for_the_timeout() {
        let streams = Arc::new(Activity::default());
        let timeout = Duration::from_secs(60);
        let stream = streams.open();
        let idle = tokio::spawn({
            let streams = streams.clone();
            async move { streams.idle_for(timeout).await }
        });
        tokio::time::sleep(timeout * 3).await;
        assert!(!idle.is_finished(), "idle while a stream was open");
        drop(stream);
        tokio::time::sleep(timeout / 2).await;
        // A stream that comes and goes within the period restarts it.
        drop(streams.open());
        tokio::time::sleep(timeout / 2 + Duration::from_secs(1)).await;
        assert!(!idle.is_finished(), "a stream in the period was missed");
        tokio::time::sleep(timeout).await;
        assert!(idle.is_finished(), "not idle after a quiet period");
    }
}
