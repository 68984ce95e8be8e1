//! The admin listener: health and readiness probes, the cluster as the
//! gateway sees it, plugin and certificate control, Prometheus metrics and
//! a live status page, and the event timeline.
//! It reads the same snapshots as the data path and never blocks it.

pub mod auth;
mod metrics_export;
mod status_page;

pub use metrics_export::install_recorder;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;

use crate::balance::health::now_ms;
use crate::discovery::leader_check::LeaderCheckStatus;
use crate::plugin::PluginControl;
use crate::quota::ProjectQuotas;
use crate::tls::{CertStore, Verification};
use crate::view::{Snapshot, ViewPublisher};

/// What the admin API serves from.
#[derive(Clone)]
pub struct Admin {
    pub views: ViewPublisher,
    pub metrics: Option<PrometheusHandle>,
    pub plugins: Option<Arc<dyn PluginControl>>,
    /// The leader drift check's last result.
    pub leader_check: LeaderCheckStatus,
    /// True once shutdown began: `/readyz` then answers 503 so load
    /// balancers stop sending while open requests drain.
    pub draining: tokio::sync::watch::Receiver<bool>,
    /// With a token, every endpoint but the probes (and, if public,
    /// `/metrics`) needs `Authorization: Bearer <token>`.
    pub token: Option<auth::AdminToken>,
    pub public_metrics: bool,
    /// The HTTPS listener's certificates, when it is configured.
    pub tls: Option<Arc<CertStore>>,
    /// How TLS nodes' certificates are checked (`/admin/nodes`).
    pub upstream_tls: Verification,
    /// The gateways sharing this one's ZooKeeper, when the fleet is on.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
    /// The proxy's per-project quotas (`/admin/limits`).
    pub quotas: Arc<ProjectQuotas>,
}

type AdminResponse = Response<Full<Bytes>>;

impl Admin {
    /// Serves admin requests on `listener` until `shutdown` resolves.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let admin = Arc::new(self);
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
                () = &mut shutdown => return,
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(request).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    pub async fn handle(&self, request: Request<Incoming>) -> AdminResponse {
        if !self.authorized(&request) {
            return unauthorized();
        }
        let snapshot = self.views.snapshot();
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/readyz") => self.readiness(&snapshot),
            (&Method::GET, "/admin/nodes") => {
                json_response(StatusCode::OK, &nodes_json(&snapshot, self.upstream_tls))
            }
            (&Method::GET, "/admin/tls") => match &self.tls {
                Some(store) => json_response(StatusCode::OK, &store.status()),
                None => no_tls(),
            },
            (&Method::POST, "/admin/tls/reload") => match &self.tls {
                Some(store) => json_response(StatusCode::OK, &store.reload("admin").await),
                None => no_tls(),
            },
            (&Method::GET, "/admin/leader") => {
                let mut leader = leader_json(&snapshot);
                leader["active_job_node_check"] = json!(self.leader_check.get());
                json_response(StatusCode::OK, &leader)
            }
            (&Method::GET, "/admin/events") => {
                let since = since_param(request.uri().query());
                json_response(StatusCode::OK, &crate::events::global().json(since))
            }
            (&Method::GET, "/admin/limits") => json_response(StatusCode::OK, &self.quotas.status()),
            (&Method::GET, "/admin/view") => json_response(StatusCode::OK, &view_json(&snapshot)),
            (&Method::GET, "/admin/fleet") => match &self.fleet {
                Some(fleet) => json_response(StatusCode::OK, &fleet.status()),
                None => json_response(StatusCode::OK, &json!({"enabled": false})),
            },
            (&Method::GET, "/admin/plugins") => match &self.plugins {
                Some(p) => json_response(StatusCode::OK, &p.status()),
                None => json_response(StatusCode::OK, &json!([])),
            },
            (&Method::POST, "/admin/plugins/reload") => match &self.plugins {
                Some(p) => json_response(StatusCode::OK, &p.reload().await),
                None => json_response(StatusCode::OK, &json!([])),
            },
            (&Method::GET, "/metrics") => self.metrics(&snapshot),
            (&Method::GET, path) if let Some(asset) = status_page::asset(path) => {
                with_content_type(text(StatusCode::OK, asset.body), asset.content_type)
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// `/readyz`: ready once a view has a routable query-serving node, and
    /// until the gateway drains.
    fn readiness(&self, snapshot: &Snapshot) -> AdminResponse {
        if *self.draining.borrow() {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        } else if snapshot.ready() {
            text(StatusCode::OK, "ready\n")
        } else if !snapshot.has_view {
            text(StatusCode::SERVICE_UNAVAILABLE, "no cluster view yet\n")
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "no routable query-serving node\n",
            )
        }
    }

    /// `/metrics`: the gauges read from live state are set just before the
    /// exporter renders; the request-duration histogram is the gateway's
    /// own and is appended.
    fn metrics(&self, snapshot: &Snapshot) -> AdminResponse {
        let Some(handle) = &self.metrics else {
            return text(StatusCode::NOT_FOUND, "metrics are not enabled\n");
        };
        export_node_gauges(snapshot);
        if let Some(store) = &self.tls {
            store.export_gauges();
        }
        self.quotas.export_gauges();
        let mut body = handle.render();
        crate::proxy::durations::render(&mut body);
        with_content_type(text(StatusCode::OK, body), "text/plain; version=0.0.4")
    }
}

/// 401, with the scheme the client should use.
fn unauthorized() -> AdminResponse {
    metrics::counter!("kgw_admin_unauthorized_total").increment(1);
    let mut response = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

fn no_tls() -> AdminResponse {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"error": "no [tls] configured"}),
    )
}

fn with_content_type(mut response: AdminResponse, content_type: &'static str) -> AdminResponse {
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

impl Admin {
    /// Whether the request may see its endpoint: a public one, no token
    /// configured, or the token presented.
    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let public = match request.uri().path() {
            "/healthz" | "/readyz" => true,
            "/metrics" => self.public_metrics,
            // The status page's files carry no data; its script sends the
            // token with every API call.
            path => request.method() == Method::GET && status_page::asset(path).is_some(),
        };
        public
            || token.authorizes(
                request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .map(|v| v.as_bytes()),
            )
    }
}

/// `/admin/nodes`: every discovered node with its runtime state, and how it
/// is reached (`"tls"`: `none`, `verified` or `insecure`).
pub fn nodes_json(snapshot: &Snapshot, upstream_tls: Verification) -> serde_json::Value {
    let now = now_ms();
    let nodes: Vec<_> = snapshot
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let ejected = n.state.is_ejected(now);
            json!({
                "id": &*n.node.id,
                "address": &*n.label,
                "connect": n.node.addr.map(|a| a.to_string()),
                "ssl_port": n.node.ssl_port,
                "tls": if n.tls { upstream_tls.as_str() } else { "none" },
                "resolve_error": n.node.resolve_error.as_deref(),
                "modes": n.node.modes.names(),
                "enabled": n.node.enabled,
                "healthy": n.node.routable() && !ejected,
                "ejected": ejected,
                "in_flight": n.state.in_flight(),
                "requests": n.state.requests.load(Ordering::Relaxed),
                "latency_ewma_ms": n.state.latency_ewma_us.load(Ordering::Relaxed) as f64 / 1000.0,
                "ejected_for_ms": n.state.ejected_until_ms.load(Ordering::Relaxed).saturating_sub(now),
                "window": n.state.window.stats(now / 1000),
                "is_leader": snapshot.leader == Some(i),
            })
        })
        .collect();
    json!(nodes)
}

/// `/admin/leader`: the leader, or why there is none.
pub fn leader_json(snapshot: &Snapshot) -> serde_json::Value {
    let info = &snapshot.view.leader;
    let node = snapshot.leader.map(|i| &snapshot.nodes[i]);
    json!({
        "leader": node.map(|n| &*n.node.id),
        "address": node.map(|n| &*n.label),
        "participant": info.participant,
        "znode": info.znode,
        "reason": info.reason,
        "job_routing": snapshot.view.job_routing.as_str(),
        "stale": snapshot.view.stale,
    })
}

fn view_json(snapshot: &Snapshot) -> serde_json::Value {
    json!({
        "version": snapshot.version,
        "source": snapshot.view.source,
        "stale": snapshot.view.stale,
        "has_view": snapshot.has_view,
        "ready": snapshot.ready(),
        "published_at_ms": snapshot.published_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
        "zookeeper_session": crate::events::zookeeper_state(),
        "published_at_us": snapshot.published_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0),
    })
}

/// Gauges that describe the current snapshot, refreshed at scrape time so
/// the data path does not pay for them.
fn export_node_gauges(snapshot: &Snapshot) {
    let now = now_ms();
    for n in &snapshot.nodes {
        metrics::gauge!("kgw_upstream_in_flight", "upstream" => n.label.clone())
            .set(n.state.in_flight() as f64);
        metrics::gauge!("kgw_upstream_ejected", "upstream" => n.label.clone())
            .set(if n.state.is_ejected(now) { 1.0 } else { 0.0 });
    }
    metrics::gauge!("kgw_view_nodes").set(snapshot.nodes.len() as f64);
    metrics::gauge!("kgw_view_query_nodes").set(snapshot.query_nodes.len() as f64);
    metrics::gauge!("kgw_view_has_leader").set(if snapshot.leader.is_some() { 1.0 } else { 0.0 });
    metrics::gauge!("kgw_view_stale").set(if snapshot.view.stale { 1.0 } else { 0.0 });
}

/// `since=SEQ` from a query string; 0 (everything) when absent or invalid.
fn since_param(query: Option<&str>) -> u64 {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("since="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> AdminResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> AdminResponse {
    with_content_type(text(status, value.to_string()), "application/json")
}
