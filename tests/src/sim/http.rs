//! The simulated node's REST side: every request is answered with JSON
//! naming the node (name, instance id, mode, whether it leads the job
//! engine) and echoing what arrived, so tests can see where the gateway
//! sent it. Kylin's own behaviours that routing depends on are kept: a
//! `job`-only node rejects queries with 400, and Kylin 3.x answers
//! `is_active_job_node` with a bare `true`/`false` (and can be told to
//! answer wrongly, `PUT /sim/active_job_node?answer=true|false|truth`, to
//! simulate KYLIN-3834's drift).
//!
//! With a certificate the node also serves HTTPS (on its registered
//! `sslPort`); every answer says whether it came over TLS (`"tls"`).
//!
//! Two query parameters make a request slow, so tests can kill a node while
//! it is in flight: `delay_ms=N` answers after N ms; `stall_ms=N` sends the
//! head and half the body at once and the rest after N ms (a node dying
//! meanwhile leaves the client a truncated answer).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use std::time::Duration;

use bytes::Bytes;
use http_body::Body as _;
use http_body_util::channel::Channel;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::znodes::Layout;

/// What the HTTP side reports about the node.
pub struct NodeIdentity {
    pub name: String,
    pub id: String,
    pub mode: String,
    pub layout: Layout,
    pub leader: AtomicBool,
    /// What `is_active_job_node` answers: the truth (0), or always `true`
    /// (1) or `false` (2), set with `PUT /sim/active_job_node?answer=`.
    pub active_answer: AtomicU8,
}

impl NodeIdentity {
    /// `all`, `query` or a list containing `query` serves queries.
    pub fn serves_queries(&self) -> bool {
        self.mode
            .split(',')
            .any(|m| matches!(m.trim(), "all" | "query"))
    }

    /// `all`, `job` or a list containing `job` campaigns for the job engine.
    pub fn runs_jobs(&self) -> bool {
        self.mode
            .split(',')
            .any(|m| matches!(m.trim(), "all" | "job"))
    }
}

/// Accepts connections until the process exits, over TLS with `tls`.
pub async fn serve(
    listener: TcpListener,
    identity: Arc<NodeIdentity>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let identity = identity.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let over_tls = tls.is_some();
            let service = service_fn(move |request| {
                let identity = identity.clone();
                async move { Ok::<_, Infallible>(answer(&identity, over_tls, request).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let _ = match tls {
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Err(_) => return,
                },
            };
        });
    }
}

const ACTIVE_JOB_NODE_PATH: &str = "/kylin/api/service_discovery/state/is_active_job_node";

/// The simulated node's response body: whole, or sent in two parts.
type Reply = BoxBody<Bytes, Infallible>;

async fn answer(
    identity: &NodeIdentity,
    over_tls: bool,
    request: http::Request<Incoming>,
) -> http::Response<Reply> {
    let (parts, mut body) = request.into_parts();
    let mut body_len = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        body_len += frame.data_ref().map_or(0, |d| d.len() as u64);
    }
    let path = parts.uri.path();
    let query = parts.uri.query();
    if let Some(ms) = query_number(query, "delay_ms") {
        let raw = query.unwrap_or_default();
        super::session::log(identity, &format!("delaying {path} {ms} ms ?{raw}"));
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let leader = identity.leader.load(Ordering::SeqCst);
    if path == ACTIVE_JOB_NODE_PATH && identity.layout.has_active_job_node_endpoint() {
        super::session::log(identity, "asked is_active_job_node");
        let answer = match identity.active_answer.load(Ordering::SeqCst) {
            1 => true,
            2 => false,
            _ => leader,
        };
        return response(http::StatusCode::OK, answer.to_string());
    }
    if path == "/sim/active_job_node" {
        let (code, set) = match query {
            Some("answer=true") => (1, "true"),
            Some("answer=false") => (2, "false"),
            _ => (0, "the truth"),
        };
        identity.active_answer.store(code, Ordering::SeqCst);
        super::session::log(identity, &format!("is_active_job_node answers {set}"));
        return response(http::StatusCode::OK, set.to_string());
    }
    let status = if is_query_call(path) && !identity.serves_queries() {
        // Kylin: "Query is not supported in job mode" from QueryController.
        http::StatusCode::BAD_REQUEST
    } else {
        http::StatusCode::OK
    };
    let reply = serde_json::json!({
        "node": identity.name,
        "id": identity.id,
        "mode": identity.mode,
        "leader": leader,
        "method": parts.method.as_str(),
        "path": path,
        "query": parts.uri.query(),
        "body_len": body_len,
        "tls": over_tls,
    });
    match query_number(query, "stall_ms") {
        Some(ms) => {
            let sent_half = format!(
                "kylin-sim {}: stalled {path} after half the body",
                identity.name
            );
            let response = response(status, reply.to_string());
            stalled(response, Duration::from_millis(ms), move || {
                eprintln!("{sent_half}")
            })
        }
        None => response(status, reply.to_string()),
    }
}

/// `name=<number>` in a query string.
fn query_number(query: Option<&str>, name: &str) -> Option<u64> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .and_then(|value| value.parse().ok())
}

/// Sends the head and the first half of the body now (then calls
/// `sent_half`), the rest after `pause`, with the full `Content-Length`
/// announced.
fn stalled(
    response: http::Response<Reply>,
    pause: Duration,
    sent_half: impl FnOnce() + Send + 'static,
) -> http::Response<Reply> {
    let (mut parts, body) = response.into_parts();
    let length = body.size_hint().exact().unwrap_or_default();
    let (mut sender, channel) = Channel::<Bytes, Infallible>::new(2);
    tokio::spawn(async move {
        let whole = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let half = whole.len() / 2;
        if sender.send_data(whole.slice(..half)).await.is_err() {
            return;
        }
        sent_half();
        tokio::time::sleep(pause).await;
        let _ = sender.send_data(whole.slice(half..)).await;
    });
    parts.headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(length),
    );
    http::Response::from_parts(parts, channel.boxed())
}

fn is_query_call(path: &str) -> bool {
    matches!(path, "/kylin/api/query" | "/kylin/api/query/prestate")
}

fn response(status: http::StatusCode, body: String) -> http::Response<Reply> {
    let mut response = http::Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
