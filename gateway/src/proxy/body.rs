//! Body plumbing for the streaming proxy: request bodies that can be taken
//! back after a connect failure, a body prefix read ahead for policies, a
//! client that stops sending its body cut off, and response bodies that
//! release their node's in-flight slot when done.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::limits::deadline;
use crate::upstream::{BodyError, Lease, UpstreamBody};
use crate::view::NodeState;

/// Why a request body could not be read from the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("the client's body failed: {0}")]
    Failed(#[from] hyper::Error),
    #[error("the client sent no body bytes for {0:?}")]
    Stalled(Duration),
}

impl ClientBodyError {
    fn fault(&self) -> ClientFault {
        match self {
            ClientBodyError::Failed(_) => ClientFault::Failed,
            ClientBodyError::Stalled(_) => ClientFault::Stalled,
        }
    }
}

/// What went wrong on the client's side of a request body, if anything:
/// an attempt that failed because of it is the client's fault, not the
/// node's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFault {
    Failed = 1,
    Stalled = 2,
}

/// A request body as the server hands it over: streamed by hyper, or
/// already read whole with its head (the gateway's own HTTP/1.1 server).
pub enum ClientBody {
    Streamed(Incoming),
    Read(Bytes),
}

/// The downstream request body, possibly with bytes already read ahead.
/// Waiting for the client's next bytes longer than `stall_timeout` fails
/// the body (a slow-POST client is cut off).
pub struct RequestBody {
    prefix: Option<Bytes>,
    /// Boxed: rare, and the body is moved from phase to phase.
    trailers: Option<Box<HeaderMap>>,
    inner: Option<Incoming>,
    stall_timeout: Duration,
    /// Armed while waiting for the client, made on the first wait only:
    /// bodies that arrive with their head never allocate one.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame arrived since `stall` was last armed.
    progressed: bool,
}

impl RequestBody {
    pub fn new(client: ClientBody, stall_timeout: Duration) -> RequestBody {
        match client {
            ClientBody::Streamed(inner) => RequestBody {
                prefix: None,
                trailers: None,
                inner: Some(inner),
                stall_timeout,
                stall: None,
                progressed: false,
            },
            ClientBody::Read(bytes) => RequestBody::from_bytes(bytes),
        }
    }

    /// The next frame from the client, failing when it takes longer than
    /// `stall_timeout` to come. `None` once the body ended.
    fn poll_client(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.inner = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                self.progressed = true;
                Poll::Ready(Some(frame.map_err(ClientBodyError::from)))
            }
            Poll::Pending => {
                let progressed = std::mem::take(&mut self.progressed);
                let timeout = self.stall_timeout;
                let stall = match &mut self.stall {
                    Some(stall) => {
                        if progressed {
                            stall
                                .as_mut()
                                .reset(deadline(tokio::time::Instant::now(), timeout));
                        }
                        stall
                    }
                    None => self.stall.insert(Box::pin(tokio::time::sleep(timeout))),
                };
                ready!(stall.as_mut().poll(cx));
                self.inner = None;
                Poll::Ready(Some(Err(ClientBodyError::Stalled(self.stall_timeout))))
            }
        }
    }

    /// Reads until at least `limit` bytes are buffered or the body ends, and
    /// returns what was read (possibly more than `limit`: whole frames are
    /// kept). Those bytes are still sent upstream, first.
    pub async fn read_prefix(&mut self, limit: usize) -> Result<&Bytes, ClientBodyError> {
        if self.inner.is_none() {
            // Nothing more can come (a body read with its head): what is
            // here is all of it, kept as is rather than copied.
            return Ok(self.prefix.get_or_insert_with(Bytes::new));
        }
        let mut buf = BytesMut::new();
        if let Some(prefix) = self.prefix.take() {
            buf.extend_from_slice(&prefix);
        }
        while buf.len() < limit {
            let frame = std::future::poll_fn(|cx| self.poll_client(cx)).await;
            let Some(frame) = frame else {
                break;
            };
            match frame?.into_data() {
                Ok(data) => buf.extend_from_slice(&data),
                Err(frame) => {
                    self.trailers = frame.into_trailers().ok().map(Box::new);
                    self.inner = None;
                }
            }
        }
        Ok(self.prefix.insert(buf.freeze()))
    }

    /// Whether the client has nothing more to send: all of the body there
    /// is, is in [`Self::prefix`].
    pub fn fully_read(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    /// The bytes read ahead so far.
    pub fn prefix(&self) -> &[u8] {
        self.prefix.as_deref().unwrap_or_default()
    }

    /// A body of bytes already in memory.
    pub fn from_bytes(bytes: Bytes) -> RequestBody {
        RequestBody {
            prefix: Some(bytes),
            trailers: None,
            inner: None,
            stall_timeout: Duration::MAX,
            stall: None,
            progressed: false,
        }
    }

    /// The whole body, when all of it has been read ahead (or it is empty):
    /// then it can be sent again.
    pub fn complete(&self) -> Option<Bytes> {
        let drained = self.inner.as_ref().is_none_or(Incoming::is_end_stream);
        (drained && self.trailers.is_none()).then(|| self.prefix.clone().unwrap_or_default())
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        if let Some(prefix) = self.prefix.take().filter(|p| !p.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if self.inner.is_some() {
            match ready!(self.poll_client(cx)) {
                None => {}
                other => return Poll::Ready(other),
            }
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(*t))))
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.as_ref().is_none_or(Bytes::is_empty)
            && self.trailers.is_none()
            && self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let inner = self
            .inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint);
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + prefix);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + prefix);
        }
        hint
    }
}

/// Holds a request body so it can be recovered if the upstream connection
/// fails before a byte of it was sent. The upstream request carries a
/// [`Recoverable`] handle; the body moves into it only on the first poll.
/// A body read completely ahead (small, or empty) is kept instead and
/// every attempt gets its own copy: it can be replayed even after it was sent.
pub struct BodySlot {
    shared: Arc<Shared>,
    replay: Option<Bytes>,
    end_stream: bool,
    size_hint: SizeHint,
}

/// What a request's attempts share: the body until one takes it, and what
/// went wrong reading it from the client.
struct Shared {
    body: Mutex<Option<RequestBody>>,
    /// 0, or a [`ClientFault`].
    fault: AtomicU8,
}

impl BodySlot {
    pub fn new(body: RequestBody) -> BodySlot {
        let replay = body.complete();
        BodySlot {
            end_stream: body.is_end_stream(),
            size_hint: body.size_hint(),
            shared: Arc::new(Shared {
                body: Mutex::new(if replay.is_some() { None } else { Some(body) }),
                fault: AtomicU8::new(0),
            }),
            replay,
        }
    }

    /// A handle to send upstream.
    pub fn handle(&self) -> Recoverable {
        Recoverable {
            shared: self.shared.clone(),
            taken: self.replay.clone().map(RequestBody::from_bytes),
            end_stream: self.end_stream,
            size_hint: self.size_hint,
        }
    }

    /// True while the body can still be sent in full: it is replayable, or
    /// no attempt has started sending it.
    pub fn intact(&self) -> bool {
        self.replay.is_some()
            || self
                .shared
                .body
                .lock()
                .map(|s| s.is_some())
                .unwrap_or(false)
    }

    /// Whether every attempt gets the whole body (it was read ahead).
    pub fn replayable(&self) -> bool {
        self.replay.is_some()
    }

    /// Whether reading the body from the client failed while an attempt
    /// sent it: then that attempt's failure is the client's.
    pub fn client_fault(&self) -> Option<ClientFault> {
        match self.shared.fault.load(Ordering::Relaxed) {
            1 => Some(ClientFault::Failed),
            2 => Some(ClientFault::Stalled),
            _ => None,
        }
    }
}

/// The upstream side of a [`BodySlot`].
pub struct Recoverable {
    shared: Arc<Shared>,
    taken: Option<RequestBody>,
    end_stream: bool,
    size_hint: SizeHint,
}

impl Body for Recoverable {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        if self.taken.is_none() {
            // Uncontended: only this request touches its slot.
            let body = self.shared.body.lock().ok().and_then(|mut s| s.take());
            match body {
                Some(body) => self.taken = Some(body),
                None => return Poll::Ready(None),
            }
        }
        let body = self.taken.as_mut().expect("set above");
        let frame = ready!(Pin::new(body).poll_frame(cx));
        if let Some(Err(error)) = &frame {
            self.shared
                .fault
                .store(error.fault() as u8, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.taken {
            Some(body) => body.is_end_stream(),
            None => self.end_stream,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.taken {
            Some(body) => body.size_hint(),
            None => self.size_hint,
        }
    }
}

/// Releases a node's in-flight slot when dropped (when the response body
/// has been fully sent, or the client went away).
pub struct InFlight {
    state: Arc<NodeState>,
}

impl InFlight {
    pub fn start(state: Arc<NodeState>) -> InFlight {
        state
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        state
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight { state }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What the gateway answers with: an upstream body streamed through, or a
/// small body of its own.
pub enum ResponseBody {
    Upstream {
        inner: UpstreamBody,
        _in_flight: InFlight,
        /// The connection it comes on, back to its pool once the body has
        /// ended.
        lease: Option<Lease>,
    },
    Full(Option<Bytes>),
}

impl ResponseBody {
    /// An upstream body to stream through. An empty one gives its
    /// connection back at once (the server may never poll it).
    pub fn upstream(mut inner: UpstreamBody, in_flight: InFlight, lease: Lease) -> ResponseBody {
        let lease = if inner.is_end_stream() {
            if let Some(conn) = inner.take_idle() {
                lease.finish(conn, Instant::now());
            }
            None
        } else {
            Some(lease)
        };
        ResponseBody::Upstream {
            inner,
            _in_flight: in_flight,
            lease,
        }
    }

    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        ResponseBody::Full(Some(bytes.into()))
    }

    pub fn empty() -> ResponseBody {
        ResponseBody::Full(None)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ResponseBody::Upstream { inner, lease, .. } => {
                let frame = ready!(Pin::new(&mut *inner).poll_frame(cx));
                // Ended cleanly (hyper stops polling once the end is
                // announced, so check after each frame): the connection
                // can take another request.
                let clean = match &frame {
                    None => true,
                    Some(Ok(_)) => inner.is_end_stream(),
                    Some(Err(_)) => {
                        lease.take();
                        false
                    }
                };
                if clean
                    && let Some(lease) = lease.take()
                    && let Some(conn) = inner.take_idle()
                {
                    lease.finish(conn, Instant::now());
                }
                Poll::Ready(frame)
            }
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { inner, .. } => inner.is_end_stream(),
            ResponseBody::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { inner, .. } => inner.size_hint(),
            ResponseBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn collect(body: Recoverable) -> Bytes {
        body.collect().await.expect("body").to_bytes()
    }

    #[tokio::test]
    async fn a_body_read_with_its_head_is_its_own_prefix_without_a_copy() {
        let sent = Bytes::from(b"{\"sql\": \"select 1\"}".to_vec());
        let mut body = RequestBody::from_bytes(sent.clone());
        let prefix = body.read_prefix(64 * 1024).await.unwrap();
        assert_eq!(prefix, &sent);
        assert_eq!(prefix.as_ptr(), sent.as_ptr(), "the same bytes, not a copy");
        let slot = BodySlot::new(body);
        assert_eq!(collect(slot.handle()).await, sent, "sent once, whole");
    }

    #[tokio::test]
    async fn a_complete_body_is_replayed_to_every_attempt() {
        let slot = BodySlot::new(RequestBody::from_bytes(Bytes::from_static(b"select 1")));
        assert!(slot.replayable());
        assert_eq!(collect(slot.handle()).await, "select 1");
        assert!(
            slot.intact(),
            "a replayable body stays intact after sending"
        );
        assert_eq!(collect(slot.handle()).await, "select 1");
    }
}
