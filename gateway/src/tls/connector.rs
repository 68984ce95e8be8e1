//! The upstream connector for hyper-util's legacy client: plain TCP for
//! `http://` URIs; for `https://` ones TCP, then [`UpstreamTls::connect`].
//! A TLS node's URI authority is `<server name>@<ip>:<port>`
//! ([`tls_authority`]): the client's pool keys connections by it, and the
//! connector takes the name to verify from it, so a request carries all its
//! connection needs and nothing is looked up per connect.
//! [`NodeStream`], the byte stream to a node, plain or TLS, is shared with
//! the gateway's own client (`upstream/conn.rs`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, Scheme};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tower::Service;

use super::client::UpstreamTls;
use crate::BoxError;

/// Plain or TLS connections to nodes.
#[derive(Clone)]
pub struct NodeConnector {
    http: HttpConnector,
    tls: UpstreamTls,
    /// Bounds the TLS handshake like the TCP connect before it.
    handshake_timeout: Duration,
}

impl NodeConnector {
    pub fn new(connect_timeout: Duration, tls: UpstreamTls) -> NodeConnector {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(true);
        NodeConnector {
            http,
            tls,
            handshake_timeout: connect_timeout,
        }
    }
}

impl Service<Uri> for NodeConnector {
    type Response = TokioIo<NodeStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TokioIo<NodeStream>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let tls = self.tls.clone();
        let timeout = self.handshake_timeout;
        Box::pin(async move {
            if uri.scheme() != Some(&Scheme::HTTPS) {
                let tcp = http.call(uri).await?.into_inner();
                return Ok(TokioIo::new(NodeStream::Plain(tcp)));
            }
            let (name, plain) = split_tls_uri(&uri)?;
            let tcp = http.call(plain).await?.into_inner();
            let stream = tokio::time::timeout(timeout, tls.connect(tcp, &name))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Ok(TokioIo::new(NodeStream::Tls(Box::new(stream))))
        })
    }
}

/// The authority of a TLS node's URIs: `host` (percent-encoded where a
/// URI's userinfo needs it) as userinfo, then the address to connect to.
pub fn tls_authority(host: &str, addr: SocketAddr) -> Option<Authority> {
    let mut text = String::with_capacity(host.len() + 24);
    for b in host.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            text.push(b as char);
        } else {
            text.push_str(&format!("%{b:02X}"));
        }
    }
    text.push('@');
    text.push_str(&addr.to_string());
    Authority::try_from(text).ok()
}

/// The server name and the plain `http://ip:port/` to connect TCP to, from
/// a URI built with [`tls_authority`].
fn split_tls_uri(uri: &Uri) -> io::Result<(String, Uri)> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidInput, "TLS node URI without a name");
    let authority = uri.authority().ok_or_else(invalid)?.as_str();
    let (encoded, address) = authority.rsplit_once('@').ok_or_else(invalid)?;
    let plain = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(address)
        .path_and_query("/")
        .build()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    Ok((percent_decode(encoded).ok_or_else(invalid)?, plain))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A connection to a node, plain or TLS (boxed: rustls' state is over a
/// kilobyte, and plain connections should not carry that). The gateway's
/// own client reads and writes it directly; the leader check's hyper client
/// gets it in a [`TokioIo`].
pub enum NodeStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for NodeStream {
    fn connected(&self) -> Connected {
        match self {
            NodeStream::Plain(s) => s.connected(),
            NodeStream::Tls(s) => s.get_ref().0.connected(),
        }
    }
}

impl AsyncRead for NodeStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NodeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            NodeStream::Plain(s) => s.is_write_vectored(),
            NodeStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_flush(cx),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_travels_in_the_authority() {
        let addr: SocketAddr = "10.0.0.1:7443".parse().unwrap();
        for host in ["kylin-1.example.com", "10.0.0.9", "::1", "odd host_1"] {
            let authority = tls_authority(host, addr).expect(host);
            let uri = Uri::builder()
                .scheme("https")
                .authority(authority)
                .path_and_query("/kylin/api/query")
                .build()
                .unwrap();
            let (name, plain) = split_tls_uri(&uri).unwrap();
            assert_eq!(name, host);
            assert_eq!(plain.to_string(), "http://10.0.0.1:7443/");
            assert_eq!(uri.host(), Some("10.0.0.1"));
        }
    }
}
