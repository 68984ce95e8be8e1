//! Body plumbing for the streaming proxy: request bodies that can be taken
//! back after a connect failure, a body prefix read ahead for policies, and
//! response bodies that release their node's in-flight slot when done.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::view::NodeState;

/// The downstream request body, possibly with bytes already read ahead.
pub struct RequestBody {
    prefix: Option<Bytes>,
    trailers: Option<HeaderMap>,
    inner: Option<Incoming>,
}

impl RequestBody {
    pub fn new(inner: Incoming) -> RequestBody {
        RequestBody {
            prefix: None,
            trailers: None,
            inner: Some(inner),
        }
    }

    /// Reads until at least `limit` bytes are buffered or the body ends, and
    /// returns what was read (possibly more than `limit`: whole frames are
    /// kept). Those bytes are still sent upstream, first.
    pub async fn read_prefix(&mut self, limit: usize) -> Result<&Bytes, hyper::Error> {
        let mut buf = BytesMut::new();
        if let Some(prefix) = self.prefix.take() {
            buf.extend_from_slice(&prefix);
        }
        while buf.len() < limit {
            let Some(inner) = self.inner.as_mut() else {
                break;
            };
            match inner.frame().await {
                None => {
                    self.inner = None;
                    break;
                }
                Some(frame) => match frame?.into_data() {
                    Ok(data) => buf.extend_from_slice(&data),
                    Err(frame) => {
                        self.trailers = frame.into_trailers().ok();
                        self.inner = None;
                    }
                },
            }
        }
        Ok(self.prefix.insert(buf.freeze()))
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
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(prefix) = self.prefix.take().filter(|p| !p.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if let Some(inner) = self.inner.as_mut() {
            match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(None) => self.inner = None,
                other => return other,
            }
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
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
    slot: Arc<Mutex<Option<RequestBody>>>,
    replay: Option<Bytes>,
    end_stream: bool,
    size_hint: SizeHint,
}

impl BodySlot {
    pub fn new(body: RequestBody) -> BodySlot {
        let replay = body.complete();
        BodySlot {
            end_stream: body.is_end_stream(),
            size_hint: body.size_hint(),
            slot: Arc::new(Mutex::new(if replay.is_some() { None } else { Some(body) })),
            replay,
        }
    }

    /// A handle to send upstream.
    pub fn handle(&self) -> Recoverable {
        Recoverable {
            slot: self.slot.clone(),
            taken: self.replay.clone().map(RequestBody::from_bytes),
            end_stream: self.end_stream,
            size_hint: self.size_hint,
        }
    }

    /// True while the body can still be sent in full: it is replayable, or
    /// no attempt has started sending it.
    pub fn intact(&self) -> bool {
        self.replay.is_some() || self.slot.lock().map(|s| s.is_some()).unwrap_or(false)
    }

    /// Whether every attempt gets the whole body (it was read ahead).
    pub fn replayable(&self) -> bool {
        self.replay.is_some()
    }
}

/// The upstream side of a [`BodySlot`].
pub struct Recoverable {
    slot: Arc<Mutex<Option<RequestBody>>>,
    taken: Option<RequestBody>,
    end_stream: bool,
    size_hint: SizeHint,
}

impl Body for Recoverable {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.taken.is_none() {
            // Uncontended: only this request touches its slot.
            let body = self.slot.lock().ok().and_then(|mut s| s.take());
            match body {
                Some(body) => self.taken = Some(body),
                None => return Poll::Ready(None),
            }
        }
        let body = self.taken.as_mut().expect("set above");
        Pin::new(body).poll_frame(cx)
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
        inner: Incoming,
        _in_flight: InFlight,
    },
    Full(Option<Bytes>),
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        ResponseBody::Full(Some(bytes.into()))
    }

    pub fn empty() -> ResponseBody {
        ResponseBody::Full(None)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ResponseBody::Upstream { inner, .. } => Pin::new(inner).poll_frame(cx),
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

    async fn collect(body: Recoverable) -> Bytes {
        body.collect().await.expect("body").to_bytes()
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
