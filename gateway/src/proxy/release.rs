//! Plaintext HTTP/1 connections that the gateway's own server
//! ([`super::h1`]) handed to hyper, served by hyper and given back to the
//! socket alone while idle. hyper keeps an 8 KiB read buffer and an 8 KiB
//! head-writing buffer for as long as a connection lives; BI tools and
//! Kylin's JDBC driver keep many connections open and mostly idle. After
//! `limits.idle_release_ms` without a request, the hyper connection is shut
//! down without closing the socket (it is idle, so nothing is lost: bytes
//! it had read are kept, and a connection with unsent answer bytes is never
//! released), its state is freed, and the socket is watched alone until
//! the client sends again; then a fresh hyper connection serves it. A
//! released connection still closes `limits.idle_timeout_ms` after its last
//! answer, and at once when the drain starts.

use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::client_io::ClientIo;
use super::idle::Activity;
use super::limits::deadline;
use super::side_wake::SideWake;

/// When idle connections are released, and when they are closed.
#[derive(Clone, Copy)]
pub struct Release {
    /// `limits.idle_release_ms`; `None`: never released.
    pub after: Option<Duration>,
    /// `limits.idle_timeout_ms`.
    pub idle_timeout: Duration,
}

/// How a hyper connection's run ended.
enum Ran<S> {
    /// Closed (by the client, by hyper's timers, or for the drain).
    Closed(ClientIo),
    /// Quiet for a release period, and shut down with the socket open.
    Released(ClientIo, S),
}

/// Serves `io` to its end: hyper while there is traffic, the socket alone
/// while it is released.
pub async fn serve<S, B>(
    builder: &http1::Builder,
    mut io: ClientIo,
    mut service: S,
    activity: &Activity,
    release: Release,
    mut draining: watch::Receiver<bool>,
) -> hyper::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Unpin,
    S::Future: Unpin,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let connection = builder.serve_connection(TokioIo::new(io), service);
        // Boxed: hyper's connection state is not kept in the task while the
        // connection is released.
        match Box::pin(run(connection, activity, release.after, &mut draining)).await? {
            Ran::Closed(mut io) => {
                let _ = io.shutdown().await;
                return Ok(());
            }
            Ran::Released(released, kept) => {
                (io, service) = (released, kept);
                if !wait_for_client(&io, release, &mut draining).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Runs `connection` until it ends, or until it has been idle for a whole
/// release period: idle at two checks a period apart, with no request in
/// between. It is released between one and two periods after its last
/// answer. The check's timer and the drain signal are polled only after
/// one of them woke the task ([`SideWake`]): the connection's own wake-ups,
/// several per request, do not pay for them.
async fn run<S, B>(
    mut connection: http1::Connection<TokioIo<ClientIo>, S>,
    activity: &Activity,
    release_after: Option<Duration>,
    draining: &mut watch::Receiver<bool>,
) -> hyper::Result<Ran<S>>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Unpin,
    S::Future: Unpin,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let period = release_after.unwrap_or(Duration::MAX);
    let mut check = pin!(tokio::time::sleep_until(deadline(Instant::now(), period)));
    let mut drain = pin!(draining.wait_for(|draining| *draining));
    let mut side = SideWake::new();
    // Only after an answer is hyper's connection idle, so that a shutdown
    // closes it at once (bytes of a next head it has read are handed
    // back); before its first request it would wait for that head and
    // answer `Connection: close`. A head trickled into a fresh connection
    // is bounded by hyper's header read timeout instead.
    let served_before = activity.opened();
    let mut mark = activity.idle_mark();
    let stop = poll_fn(|cx| {
        if let Poll::Ready(ended) = connection.poll_without_shutdown(cx) {
            return Poll::Ready(ended.map(|()| None));
        }
        let Some(mut side_cx) = side.woken(cx) else {
            return Poll::Pending;
        };
        while release_after.is_some() && check.as_mut().poll(&mut side_cx).is_ready() {
            let now = activity.idle_mark();
            if now.is_some_and(|opened| opened > served_before) && now == mark {
                return Poll::Ready(Ok(Some(Stop::Release)));
            }
            mark = now;
            check.as_mut().reset(deadline(Instant::now(), period));
        }
        if drain.as_mut().poll(&mut side_cx).is_ready() {
            return Poll::Ready(Ok(Some(Stop::Drain)));
        }
        Poll::Pending
    })
    .await?;
    if stop.is_some() {
        // An idle connection is closed at once, without touching the
        // socket; a busy one (only when draining) after its answer, which
        // says `Connection: close`.
        Pin::new(&mut connection).graceful_shutdown();
        poll_fn(|cx| connection.poll_without_shutdown(cx)).await?;
    }
    let parts = connection.into_parts();
    let io = parts.io.into_inner();
    Ok(match stop {
        Some(Stop::Release) => Ran::Released(io.replaying(parts.read_buf), parts.service),
        _ => Ran::Closed(io),
    })
}

/// Why a running connection is shut down.
enum Stop {
    Release,
    Drain,
}

/// Waits on the released socket alone: true when the client sends again
/// (or closes, which the next hyper connection reads), false at the idle
/// timeout or the drain.
async fn wait_for_client(
    io: &ClientIo,
    release: Release,
    draining: &mut watch::Receiver<bool>,
) -> bool {
    // The connection had been idle for at least a period before it was
    // released.
    let left = release
        .idle_timeout
        .saturating_sub(release.after.unwrap_or_default());
    let _released = ReleasedMark::new();
    tokio::select! {
        readable = io.readable() => readable.is_ok(),
        () = tokio::time::sleep(left) => false,
        _ = draining.wait_for(|draining| *draining) => false,
    }
}

/// Open connections released while idle.
pub const RELEASED_METRIC: &str = "kgw_connections_idle_released";
/// Times an idle connection was released.
pub const RELEASES_METRIC: &str = "kgw_connections_idle_releases_total";

/// A connection counted as released (in both metrics) until dropped.
pub struct ReleasedMark(());

impl ReleasedMark {
    pub fn new() -> ReleasedMark {
        metrics::counter!(RELEASES_METRIC).increment(1);
        metrics::gauge!(RELEASED_METRIC).increment(1.0);
        ReleasedMark(())
    }
}

impl Drop for ReleasedMark {
    fn drop(&mut self) {
        metrics::gauge!(RELEASED_METRIC).decrement(1.0);
    }
}
