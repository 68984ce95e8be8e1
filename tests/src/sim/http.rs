//! The simulated node's REST side: every request is answered with JSON
//! naming the node (name, instance id, mode, whether it leads the job
//! engine) and echoing what arrived, so tests can see where the gateway
//! sent it. Kylin's own behaviours that routing depends on are kept: a
//! `job`-only node rejects queries with 400, and Kylin 3.x answers
//! `is_active_job_node` with a bare `true`/`false`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
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

/// Accepts connections until the process exits.
pub async fn serve(listener: TcpListener, identity: Arc<NodeIdentity>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let identity = identity.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let identity = identity.clone();
                async move { Ok::<_, Infallible>(answer(&identity, request).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

const ACTIVE_JOB_NODE_PATH: &str = "/kylin/api/service_discovery/state/is_active_job_node";

async fn answer(
    identity: &NodeIdentity,
    request: http::Request<Incoming>,
) -> http::Response<Full<Bytes>> {
    let (parts, mut body) = request.into_parts();
    let mut body_len = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        body_len += frame.data_ref().map_or(0, |d| d.len() as u64);
    }
    let path = parts.uri.path();
    let leader = identity.leader.load(Ordering::SeqCst);
    if path == ACTIVE_JOB_NODE_PATH && identity.layout.has_active_job_node_endpoint() {
        return response(http::StatusCode::OK, leader.to_string());
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
    });
    response(status, reply.to_string())
}

fn is_query_call(path: &str) -> bool {
    matches!(path, "/kylin/api/query" | "/kylin/api/query/prestate")
}

fn response(status: http::StatusCode, body: String) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
