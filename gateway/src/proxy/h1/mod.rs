//! The gateway's own HTTP/1.1 server for plaintext connections. A request
//! whose body came whole with its head (every GET, a query POST) is parsed
//! here ([`head`]), handed to the proxy, and its answer written to the
//! socket from the connection's own task: no dispatcher, no channel to a
//! body, no per-request timer. The first request of another shape is left
//! to hyper with the bytes read so far, and hyper serves the connection
//! from then on ([`super::release`]).
//!
//! What hyper's server did is kept:
//! - the idle timeout bounds the wait for a next head (partial or none);
//!   the first head's shorter deadline is [`super::limits`]'s;
//! - an idle connection gives back its buffers after
//!   `limits.idle_release_ms` ([`super::release`]'s metrics);
//! - the drain closes an idle connection at once and a busy one after its
//!   answer, which says `Connection: close`;
//! - a client that closes while its request is in flight cancels it.
//!
//! The timer and the drain signal are side futures ([`SideWake`]), polled
//! only when one of them woke: a request costs them nothing. The timer is
//! not reset per request either; when it fires, [`on_timer`] decides from
//! when the connection began to wait.

mod head;
#[cfg(test)]
mod tests;

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use bytes::BytesMut;
use futures_util::FutureExt;
use http::{Method, Request};
use http_body::Body;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;

use super::client_io::ClientIo;
use super::limits::{FirstRequest, deadline};
use super::release::ReleasedMark;
use super::side_wake::SideWake;
use super::{Answer, ClientBody, Downstream, Proxy, ResponseBody};
use crate::BoxError;
use crate::upstream::wire::{LAST_CHUNK, push_chunk_size};
use head::{Framing, Head};

/// Connections handed to hyper, by why: how often the slower path serves.
pub const HANDED_TO_HYPER_METRIC: &str = "kgw_http1_handed_to_hyper_total";

/// Room made in the read buffer before a read.
const READ_CHUNK: usize = 4 * 1024;

/// `[limits]` as this server applies them.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// The largest request head.
    pub max_head: usize,
    /// How long a next head may take, counted from the previous answer.
    pub idle_timeout: Duration,
    /// When an idle connection gives back its buffers; `None`: never.
    pub release_after: Option<Duration>,
}

/// Serves `io` until the client closes, the idle timeout or the drain
/// (`drain` resolves when it starts); from the first request it does not
/// take, `hyper` serves the rest.
pub async fn serve<D, H, F>(
    io: ClientIo,
    proxy: &Proxy,
    downstream: Downstream,
    first: FirstRequest,
    settings: Settings,
    drain: Pin<&mut D>,
    hyper: H,
) -> Result<(), BoxError>
where
    D: Future,
    H: FnOnce(ClientIo) -> F,
    F: Future<Output = Result<(), BoxError>>,
{
    let mut conn = Connection {
        io,
        buf: BytesMut::new(),
        out: Vec::new(),
        side: Side {
            wake: SideWake::new(),
            drain,
            drained: false,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            released: None,
        },
        waiting: Waiting::default(),
        settings,
    };
    let mut served = false;
    // What follows the last request is decided in the loop and done after
    // it: a value matched on would be kept in the connection's state
    // across the awaits of its arms.
    let handed_over = loop {
        let request = match conn.next_request(served).await {
            Next::Request(request) => request,
            Next::Close => break None,
            Next::Hyper(why) => break Some(why),
        };
        first.arrived();
        // Boxed: an idle connection's task would otherwise keep room for
        // the request path's state (several KB) for its whole life.
        match Box::pin(conn.exchange(request, proxy, downstream)).await? {
            Exchanged::KeepAlive => served = true,
            Exchanged::Close => break None,
            Exchanged::ClientGone => return Ok(()),
        }
    };
    let Some(why) = handed_over else {
        conn.close().await;
        return Ok(());
    };
    tracing::trace!(why, "request left to hyper");
    metrics::counter!(HANDED_TO_HYPER_METRIC, "why" => why).increment(1);
    let replay = conn.buf.split().freeze();
    Box::pin(hyper(conn.io.replaying(replay))).await
}

/// How a request's exchange ended, for its connection.
enum Exchanged {
    /// Answered; the connection can serve another request.
    KeepAlive,
    /// Answered (or cut short); the connection closes.
    Close,
    /// The client closed before the answer.
    ClientGone,
}

/// What the connection does next.
// Returned once per request and matched at once: boxing the request
// would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(head::Request),
    Close,
    /// hyper serves the connection from here.
    Hyper(&'static str),
}

/// One plaintext connection: its socket, the bytes read and not yet
/// parsed, the bytes to write, and its side futures.
struct Connection<'d, D> {
    io: ClientIo,
    buf: BytesMut,
    /// Answer heads and chunk framing, reused.
    out: Vec<u8>,
    side: Side<'d, D>,
    waiting: Waiting,
    settings: Settings,
}

/// The connection's timer and drain signal.
struct Side<'d, D> {
    wake: SideWake,
    drain: Pin<&'d mut D>,
    /// The drain has started (its future is done: not polled again).
    drained: bool,
    /// Fires at the next moment [`on_timer`] has something to decide.
    timer: Pin<Box<Sleep>>,
    /// Held while released (counted in the release metrics).
    released: Option<ReleasedMark>,
}

/// Where the connection stands for its timer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Waiting {
    /// Since when it has waited for a head; `None` while a request is in
    /// flight.
    since: Option<Instant>,
    /// It may give back its buffers in this wait (it answered a request
    /// and has not been released since).
    releasable: bool,
}

/// What the connection's timer asks for when it fires.
#[derive(Debug, PartialEq, Eq)]
pub enum TimerAction {
    /// Nothing is due: fire again then.
    Reset(Instant),
    /// Give back the buffers.
    Release,
    /// The idle timeout passed: close.
    TimeOut,
}

/// The decision when the timer fires at `now`. It fires at least once a
/// period (the shorter of the release and idle periods), since a wait can
/// begin at any moment without touching it.
pub fn on_timer(now: Instant, waiting: Waiting, settings: &Settings) -> TimerAction {
    let period = settings
        .release_after
        .map_or(settings.idle_timeout, |release| {
            release.min(settings.idle_timeout)
        });
    let next_check = deadline(now, period);
    let Some(since) = waiting.since else {
        // Busy: no deadline runs while a request is in flight.
        return TimerAction::Reset(next_check);
    };
    let timeout_at = deadline(since, settings.idle_timeout);
    if now >= timeout_at {
        return TimerAction::TimeOut;
    }
    let release_at = settings
        .release_after
        .filter(|_| waiting.releasable)
        .map(|release| deadline(since, release));
    match release_at {
        Some(at) if now >= at => TimerAction::Release,
        Some(at) => TimerAction::Reset(at.min(timeout_at)),
        None => TimerAction::Reset(timeout_at.min(next_check)),
    }
}

/// An event of the side futures.
enum SideEvent {
    TimedOut,
    Drained,
}

impl<D: Future> Connection<'_, D> {
    /// Waits for the next request head (with its body).
    async fn next_request(&mut self, served: bool) -> Next {
        self.waiting = Waiting {
            since: Some(Instant::now()),
            releasable: served,
        };
        loop {
            if !self.buf.is_empty() {
                match head::take_request(&mut self.buf, self.settings.max_head) {
                    Head::Ready(request) => {
                        self.waiting.since = None;
                        return Next::Request(request);
                    }
                    Head::Elsewhere(why) => return Next::Hyper(why),
                    Head::Partial => {}
                }
            }
            match poll_fn(|cx| self.poll_more(cx)).await {
                Ok(true) => {}
                Ok(false) | Err(SideEvent::TimedOut | SideEvent::Drained) => return Next::Close,
            }
        }
    }

    /// Reads more of a head: `Ok(false)` when the client closed.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, SideEvent>> {
        // A released connection holds no buffer until the client sends.
        let ready = self.side.released.is_none() || self.io.poll_read_ready(cx).is_ready();
        if ready {
            self.side.released = None;
            match self.poll_read(cx) {
                Poll::Ready(read) => return Poll::Ready(Ok(read)),
                Poll::Pending => {}
            }
        }
        match self.poll_side(cx) {
            Some(event) => Poll::Ready(Err(event)),
            None => Poll::Pending,
        }
    }

    /// Reads into the buffer: true when bytes came, false at the end of
    /// the stream or an error.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
            .map(|read| matches!(read, Ok(n) if n > 0))
    }

    /// Polls the side futures if one of them woke.
    fn poll_side(&mut self, cx: &mut Context<'_>) -> Option<SideEvent> {
        let side = &mut self.side;
        let mut side_cx = side.wake.woken(cx)?;
        if !side.drained && side.drain.as_mut().poll(&mut side_cx).is_ready() {
            side.drained = true;
        }
        if side.drained && self.waiting.since.is_some() {
            return Some(SideEvent::Drained);
        }
        while side.timer.as_mut().poll(&mut side_cx).is_ready() {
            match on_timer(Instant::now(), self.waiting, &self.settings) {
                TimerAction::Reset(at) => side.timer.as_mut().reset(at),
                TimerAction::TimeOut => return Some(SideEvent::TimedOut),
                TimerAction::Release => {
                    self.waiting.releasable = false;
                    // Bytes of a next head read with the last request are
                    // kept, in a buffer of their size.
                    self.buf = BytesMut::from(&self.buf[..]);
                    self.out = Vec::new();
                    side.released = Some(ReleasedMark::new());
                }
            }
        }
        None
    }

    /// Hands `request` to the proxy and writes its answer.
    async fn exchange(
        &mut self,
        request: head::Request,
        proxy: &Proxy,
        downstream: Downstream,
    ) -> Result<Exchanged, BoxError> {
        let method = request.parts.method.clone();
        let client_close = request.close;
        let request = Request::from_parts(request.parts, ClientBody::Read(request.body));
        // Pinned where it is made: passed by value, the request path's
        // state (several KB) would be copied at every move. Scoped, so
        // that the answer's writing reuses its space in this future.
        let answer = {
            let handling = pin!(proxy.handle(request, downstream));
            self.in_flight(handling).await
        };
        let Some(answer) = answer else {
            return Ok(Exchanged::ClientGone);
        };
        Ok(if self.answer(&method, answer, client_close).await? {
            Exchanged::KeepAlive
        } else {
            Exchanged::Close
        })
    }

    /// Runs the request's handling until its answer, reading ahead for the
    /// client's end of stream: `None` when the client closed meanwhile
    /// (the handling is dropped, cancelling its upstream request).
    async fn in_flight<F>(&mut self, mut handling: Pin<&mut F>) -> Option<Answer>
    where
        F: Future<Output = Answer>,
    {
        // Bytes already here are the next request's: no end is coming first.
        let mut watch_end = self.buf.is_empty();
        poll_fn(|cx| {
            if let Poll::Ready(response) = handling.as_mut().poll(cx) {
                return Poll::Ready(Some(response));
            }
            if watch_end && let Poll::Ready(read) = self.poll_read(cx) {
                if !read {
                    return Poll::Ready(None);
                }
                watch_end = false;
            }
            let _ = self.poll_side(cx);
            Poll::Pending
        })
        .await
    }

    /// Writes `response` to a `method` request: true when the connection
    /// can serve another request.
    async fn answer(
        &mut self,
        method: &Method,
        answer: Answer,
        client_close: bool,
    ) -> Result<bool, BoxError> {
        self.out.clear();
        let written = head::encode_response_head(
            &mut self.out,
            method,
            &answer,
            answer.body.size_hint().exact(),
            client_close || self.side.drained,
        );
        let body = answer.into_body();
        let complete = match written.framing {
            Framing::Bodiless => true,
            framing => self.send_body(body, framing).await?,
        };
        self.write_out(&[], &[]).await?;
        Ok(complete && !written.close)
    }

    /// Sends `body` after the head in `out`: true when it went out whole.
    /// A frame at hand goes in one write with what is queued; the head is
    /// written before waiting for a body that is not.
    async fn send_body(
        &mut self,
        mut body: ResponseBody,
        framing: Framing,
    ) -> Result<bool, BoxError> {
        let chunked = framing == Framing::Chunked;
        let mut sent = 0u64;
        loop {
            let next = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
            let frame = match next.now_or_never() {
                Some(frame) => frame,
                None => {
                    self.write_out(&[], &[]).await?;
                    poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                }
            };
            let data = match frame {
                None => break,
                // The answer is cut short: the client sees it end early.
                Some(Err(_)) => return Ok(false),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    // Trailers are not sent (nor announced).
                    Err(_) => continue,
                },
            };
            // The body says when it has ended; it is not polled after that
            // (its node connection has gone back to the pool).
            let last = body.is_end_stream();
            sent += data.len() as u64;
            if chunked {
                if !data.is_empty() {
                    push_chunk_size(&mut self.out, data.len());
                    self.write_out(&data, b"\r\n").await?;
                }
            } else {
                self.write_out(&data, &[]).await?;
            }
            if last {
                break;
            }
        }
        match framing {
            Framing::Length(n) => Ok(sent == n),
            _ => {
                self.out.extend_from_slice(LAST_CHUNK);
                Ok(true)
            }
        }
    }

    /// Writes what `out` holds, then `data` and `tail`, and empties `out`:
    /// one vectored write when the socket takes it all.
    async fn write_out(&mut self, data: &[u8], tail: &[u8]) -> io::Result<()> {
        let mut queued = (&self.out[..]).chain(data).chain(tail);
        self.io.write_all_buf(&mut queued).await?;
        self.out.clear();
        Ok(())
    }

    async fn close(&mut self) {
        let _ = self.io.shutdown().await;
    }
}
