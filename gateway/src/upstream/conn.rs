//! One HTTP/1.1 connection to a node, driven by the task of the request
//! that uses it: the request is written and the answer read from that task,
//! and the answer's body is read as the downstream connection polls it. No
//! task per connection, and no channel between a request and its
//! connection. [`super::wire`] does the framing.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::Method;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use crate::tls::NodeStream;

use super::wire::{
    self, Decoded, Decoder, LAST_CHUNK, RequestFraming, RequestHead, ResponseHead, WireError,
};

/// Body bytes up to this size are copied next to their head or chunk line
/// and go out in one write; larger ones are written where they are.
const COALESCE_BYTES: usize = 16 * 1024;

/// The most read from a node at once.
const READ_BYTES: usize = 64 * 1024;

/// A read buffer up to this size stays with an idle connection.
const KEPT_BUFFER_BYTES: usize = 8 * 1024;

/// The least room a read is given.
const MIN_READ_BYTES: usize = 4 * 1024;

/// A connection to a node, idle or carrying one exchange.
pub struct Conn {
    stream: NodeStream,
    /// Bytes read from the node and not yet used (none while the
    /// connection is idle).
    buf: BytesMut,
    /// The last request's head, kept for its room: the next head is
    /// written into it.
    out: Vec<u8>,
}

/// Why an exchange failed before its answer's head was complete.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("writing to the node failed: {0}")]
    Write(#[source] io::Error),
    #[error("reading from the node failed: {0}")]
    Read(#[source] io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("the request body failed: {0}")]
    Body(String),
}

/// Why an answer's body broke off.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the answer from the node failed: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl Conn {
    pub fn new(stream: NodeStream) -> Conn {
        Conn {
            stream,
            buf: BytesMut::new(),
            out: Vec::new(),
        }
    }

    /// Whether an idle connection can take a request: its node has neither
    /// closed it nor sent anything (it has nothing to say between answers).
    /// No syscall unless the reactor saw the socket become readable.
    pub fn is_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut read = ReadBuf::new(&mut byte);
        matches!(
            Pin::new(&mut self.stream).poll_read(&mut cx, &mut read),
            Poll::Pending
        )
    }

    /// Sends a request and reads its answer's head. Body frames already at
    /// hand go out with the head (a small body: one write for all of it).
    pub async fn send<B>(
        &mut self,
        head: &RequestHead<'_>,
        mut body: B,
    ) -> Result<ResponseHead, SendError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        out.reserve(1024);
        let framing = wire::encode_request_head(
            &mut out,
            head,
            body.size_hint().exact(),
            body.is_end_stream(),
        );
        if framing != RequestFraming::Empty {
            self.send_body(&mut out, &mut body, framing).await?;
        }
        self.write_out(&mut out).await?;
        if out.capacity() <= COALESCE_BYTES {
            self.out = out;
        }
        self.read_head(head.method).await
    }

    /// Sends a body's frames after what `out` holds. Frames at hand are
    /// queued; what is queued is written before waiting for the client's
    /// next frame, so the node sees the request as it comes. The body's
    /// end is left queued.
    async fn send_body<B>(
        &mut self,
        out: &mut Vec<u8>,
        body: &mut B,
        framing: RequestFraming,
    ) -> Result<(), SendError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let mut sent = 0u64;
        loop {
            let frame = match body.frame().now_or_never() {
                Some(frame) => frame,
                None => {
                    self.write_out(out).await?;
                    body.frame().await
                }
            };
            if !self.put_frame(out, frame, framing, &mut sent).await? {
                return Ok(());
            }
        }
    }

    /// Writes and flushes what `out` holds, and empties it.
    async fn write_out(&mut self, out: &mut Vec<u8>) -> Result<(), SendError> {
        if !out.is_empty() {
            self.write(out).await?;
            out.clear();
        }
        self.stream.flush().await.map_err(SendError::Write)
    }

    /// Adds one body frame to `out` (writing out what is queued when the
    /// frame is large). False once the body has ended (its end is in `out`).
    async fn put_frame<E: std::fmt::Display>(
        &mut self,
        out: &mut Vec<u8>,
        frame: Option<Result<Frame<Bytes>, E>>,
        framing: RequestFraming,
        sent: &mut u64,
    ) -> Result<bool, SendError> {
        let data = match frame {
            None => {
                return match framing {
                    RequestFraming::Chunked => {
                        out.extend_from_slice(LAST_CHUNK);
                        Ok(false)
                    }
                    RequestFraming::Length(n) if *sent != n => {
                        Err(SendError::Body(format!("ended after {sent} of {n} bytes")))
                    }
                    _ => Ok(false),
                };
            }
            Some(Err(error)) => return Err(SendError::Body(error.to_string())),
            // Trailers are not passed on (they were not before either:
            // `Trailer` is hop-by-hop here).
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => return Ok(true),
            },
        };
        *sent += data.len() as u64;
        match framing {
            RequestFraming::Length(n) if *sent > n => {
                return Err(SendError::Body(format!("more than its {n} bytes")));
            }
            RequestFraming::Chunked => wire::push_chunk_size(out, data.len()),
            _ => {}
        }
        if out.len() + data.len() <= COALESCE_BYTES {
            out.extend_from_slice(&data);
        } else {
            self.write_out(out).await?;
            self.write(&data).await?;
        }
        if framing == RequestFraming::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        let done = matches!(framing, RequestFraming::Length(n) if *sent == n);
        Ok(!done)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.stream.write_all(bytes).await.map_err(SendError::Write)
    }

    /// Reads until an answer's head is complete.
    async fn read_head(&mut self, method: &Method) -> Result<ResponseHead, SendError> {
        loop {
            if let Some(head) = wire::parse_response_head(&mut self.buf, method)? {
                return Ok(head);
            }
            let read = std::future::poll_fn(|cx| self.poll_read(cx, MIN_READ_BYTES)).await;
            match read {
                Ok(0) => return Err(WireError::Incomplete.into()),
                Ok(_) => {}
                Err(error) => return Err(SendError::Read(error)),
            }
        }
    }

    /// Reads what the node has sent into the buffer, with room for at least
    /// `room` bytes.
    fn poll_read(&mut self, cx: &mut Context<'_>, room: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < MIN_READ_BYTES {
            self.buf.reserve(room.clamp(MIN_READ_BYTES, READ_BYTES));
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }
}

/// An answer's body, read from its connection as it is polled.
pub struct UpstreamBody {
    conn: Option<Conn>,
    decoder: Decoder,
    keep_alive: bool,
}

impl UpstreamBody {
    pub fn new(conn: Conn, head: &ResponseHead) -> UpstreamBody {
        UpstreamBody {
            conn: Some(conn),
            decoder: Decoder::new(head.framing),
            keep_alive: head.keep_alive,
        }
    }

    /// The connection, once the body has ended cleanly and the connection
    /// can carry another request (nothing more was sent on it). Its read
    /// buffer stays when small: once the answer's bytes are written
    /// downstream, the next answer reuses it in place.
    pub fn take_idle(&mut self) -> Option<Conn> {
        if !(self.decoder.is_end() && self.keep_alive) {
            return None;
        }
        let mut conn = self.conn.take()?;
        if !conn.buf.is_empty() {
            return None;
        }
        if conn.buf.capacity() > KEPT_BUFFER_BYTES {
            conn.buf = BytesMut::new();
        }
        Some(conn)
    }

    /// The whole body.
    pub async fn read_all(&mut self) -> Result<Bytes, BodyError> {
        Ok(self.collect().await?.to_bytes())
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut conn.buf) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::NeedMore) => {}
                Err(error) => return Poll::Ready(Some(Err(error.into()))),
            }
            let room = this
                .decoder
                .remaining()
                .map_or(READ_BYTES, |n| usize::try_from(n).unwrap_or(READ_BYTES));
            match ready!(conn.poll_read(cx, room)) {
                Ok(0) => {
                    this.keep_alive = false;
                    if let Err(error) = this.decoder.closed() {
                        return Poll::Ready(Some(Err(error.into())));
                    }
                }
                Ok(_) => {}
                Err(error) => return Poll::Ready(Some(Err(error.into()))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_end()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
