//! In-process HTTP backends that stand in for Kylin nodes where ZooKeeper is
//! not involved: each answers with JSON naming itself and echoing what it
//! received (method, path, query, headers, body length).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running backend; stops when dropped.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Starts a backend on `127.0.0.1:0` (or `port`).
    pub async fn start(name: &str, port: u16) -> Backend {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let name_owned = name.to_string();
        let hits_task = hits.clone();
        let task = tokio::spawn(async move {
            // Connections live in this task's set: stopping the backend
            // closes them too, as a dying process would.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while connections.try_join_next().is_some() {}
                let name = name_owned.clone();
                let hits = hits_task.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let name = name.clone();
                        let hits = hits.clone();
                        async move { Ok::<_, Infallible>(answer(&name, &hits, request).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            hits,
            task,
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Stops accepting and closes open connections (the port then refuses
    /// connections).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a backend answers with.
pub type BackendBody = Either<Full<Bytes>, Generated>;

async fn answer(
    name: &str,
    hits: &AtomicU64,
    request: http::Request<Incoming>,
) -> http::Response<BackendBody> {
    hits.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = request.into_parts();
    let param = |key: &str| -> Option<u64> {
        parts
            .uri
            .query()?
            .split('&')
            .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    match parts.uri.path() {
        "/__kgw/sleep" => {
            tokio::time::sleep(Duration::from_millis(param("ms").unwrap_or(1000))).await;
        }
        "/__kgw/download" => {
            let size = param("bytes").unwrap_or(0);
            return http::Response::new(Either::Right(Generated::new(size)));
        }
        _ => {}
    }
    // Count the body without keeping it: streams of any size.
    let mut body = body;
    let mut length = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => length += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
        .collect();
    let reply = serde_json::json!({
        "node": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_len": length,
    });
    let mut response = http::Response::new(Either::Left(Full::new(Bytes::from(reply.to_string()))));
    if parts.uri.path() == "/__kgw/hop" {
        // Hop-by-hop headers on the way back, for the gateway to strip.
        for (name, value) in [
            ("connection", "x-node-internal"),
            ("x-node-internal", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-authenticate", "Basic realm=\"node\""),
            ("x-node-public", "kept"),
        ] {
            response.headers_mut().insert(
                http::HeaderName::from_static(name),
                http::HeaderValue::from_static(value),
            );
        }
    }
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if parts.uri.path().ends_with("/user/authentication") {
        response.headers_mut().insert(
            http::header::SET_COOKIE,
            http::HeaderValue::from_str(&format!(
                "JSESSIONID={name}-session; Path=/kylin; HttpOnly"
            ))
            .unwrap(),
        );
    }
    response
}

/// A body of `size` generated bytes, streamed in 64 KiB frames that share
/// one buffer: gigabytes without the memory.
pub struct Generated {
    chunk: Bytes,
    remaining: u64,
}

impl Generated {
    pub fn new(size: u64) -> Generated {
        Generated {
            chunk: Bytes::from(vec![b'k'; 64 * 1024]),
            remaining: size,
        }
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64);
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
