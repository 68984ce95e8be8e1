//! A plaintext client connection as hyper sees it: the socket, plus what
//! the connection's keepers need to know of it. Cut off at the first head's
//! deadline after it sent part of a head, it is answered `408 Request
//! Timeout` as it closes (as HAProxy does; a connection that sent nothing
//! is closed silently, as browsers' pre-connects expect). A write the
//! socket did not take whole is noted in the connection's [`Activity`], so
//! an idle connection is never released while hyper holds unsent bytes
//! (`super::release`), and bytes a released hyper connection had read are
//! read again first by the next.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::idle::Activity;
use super::limits::FirstRequest;

pub struct ClientIo {
    stream: TcpStream,
    first: FirstRequest,
    activity: Arc<Activity>,
    sent_bytes: bool,
    /// Read from the socket by a released hyper connection but not parsed
    /// (part of a head): given to the next one before the socket's bytes.
    replay: Bytes,
}

const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

impl ClientIo {
    pub fn new(stream: TcpStream, first: FirstRequest, activity: Arc<Activity>) -> ClientIo {
        ClientIo {
            stream,
            first,
            activity,
            sent_bytes: false,
            replay: Bytes::new(),
        }
    }

    /// `unparsed` (what hyper had read and not used: part of a head, as
    /// hyper parses whatever it can) is read first. Copied: the original
    /// holds hyper's whole read buffer.
    pub fn replaying(mut self, unparsed: Bytes) -> ClientIo {
        self.replay = Bytes::copy_from_slice(&unparsed);
        self
    }

    /// Resolves when the client sent more (or closed).
    pub async fn readable(&self) -> io::Result<()> {
        self.stream.readable().await
    }

    /// Ready when the socket has bytes (or its end) to read.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.poll_read_ready(cx)
    }

    /// Notes whether a write went through whole: hyper's flush writes until
    /// its buffer is empty or the socket blocks.
    fn note_write<T>(&self, polled: &Poll<io::Result<T>>, whole: impl FnOnce(&T) -> bool) {
        let blocked = match polled {
            Poll::Pending => true,
            Poll::Ready(Ok(written)) => !whole(written),
            Poll::Ready(Err(_)) => false,
        };
        self.activity.set_write_blocked(blocked);
    }
}

impl Drop for ClientIo {
    fn drop(&mut self) {
        if self.sent_bytes && self.first.timed_out() {
            // Best effort and never blocking: a full send buffer drops it.
            let _ = self.stream.try_write(REQUEST_TIMEOUT);
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            buf.put_slice(&self.replay[..n]);
            self.replay.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.sent_bytes = true;
        }
        polled
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.note_write(&polled, |&n| n == buf.len());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.note_write(&polled, |&n| {
            n == bufs.iter().map(|b| b.len()).sum::<usize>()
        });
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An idle mark (which a release needs) only while every byte offered
    /// was taken by the socket.
    #[tokio::test]
    async fn a_write_the_socket_did_not_take_keeps_the_connection_busy() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let activity = Arc::new(Activity::default());
        let mut io = ClientIo::new(stream, FirstRequest::default(), activity.clone());
        assert!(activity.idle_mark().is_some());

        // The peer reads nothing: writes go through until the socket is full.
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0;
        loop {
            let polled =
                std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut io).poll_write(cx, &chunk)))
                    .await;
            match polled {
                Poll::Ready(result) => written += result.unwrap(),
                Poll::Pending => break,
            }
        }
        assert!(activity.idle_mark().is_none(), "idle with unsent bytes");

        // Once the peer has read it all, a whole write makes it idle again.
        let mut received = vec![0; written];
        peer.read_exact(&mut received).await.unwrap();
        io.write_all(b"end").await.unwrap();
        assert!(activity.idle_mark().is_some());
    }
}
