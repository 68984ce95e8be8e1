//! The streaming reverse proxy: classify, consult the routing policy, pick a
//! node from the current snapshot, forward with retries on connect failure,
//! and stream both bodies through. Per request: one snapshot load, atomics
//! for node state, no lock held across the request.

mod body;
mod error;
mod headers;
pub mod server;

pub use body::{RequestBody, ResponseBody};
pub use error::GatewayError;

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::balance::health::{Ejection, now_ms};
use crate::balance::{Balancer, Tried, hash_key};
use crate::classify::{Classifier, TrafficClass};
use crate::config::{BalanceKind, Config, HashKey, Routing};
use crate::plugin::{Decision, RequestFacts, Route, RoutingPolicy};
use crate::view::{RequestCounters, RoutableNode, Snapshot, ViewPublisher};
use body::{BodySlot, InFlight, Recoverable};

type UpstreamClient = Client<HttpConnector, Recoverable>;

/// Bodies up to this size (by `Content-Length`) of replay-safe requests are
/// read ahead so a retry can resend them; Kylin query bodies are SQL text.
const REPLAY_BODY_LIMIT: usize = 64 * 1024;

/// Everything a request needs, shared by all connections.
pub struct Proxy {
    views: ViewPublisher,
    classifier: Classifier,
    balancer: Balancer,
    routing: Routing,
    ejection: Ejection,
    retries: u32,
    response_header_timeout: Duration,
    client: UpstreamClient,
    policy: Option<Arc<dyn RoutingPolicy>>,
    /// `kgw_requests_total` for requests that reached no node (`upstream="-"`).
    unrouted: Arc<RequestCounters>,
    /// `kgw_request_duration_seconds` by class, registered on first use (the
    /// recorder is installed by then).
    durations: [OnceLock<metrics::Histogram>; TrafficClass::ALL.len()],
}

/// The connection a request arrived on.
#[derive(Clone, Copy, Debug)]
pub struct Downstream {
    pub client: SocketAddr,
    pub tls: bool,
}

impl Proxy {
    pub fn new(
        config: &Config,
        views: ViewPublisher,
        policy: Option<Arc<dyn RoutingPolicy>>,
    ) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.upstream.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.upstream.pool_idle_timeout)
            .pool_max_idle_per_host(config.upstream.pool_max_idle_per_host)
            .build(connector);
        let balancer = match config.routing.balance {
            BalanceKind::PowerOfTwoChoices => Balancer::PowerOfTwoChoices,
            BalanceKind::RoundRobin => Balancer::RoundRobin(AtomicUsize::new(0)),
            BalanceKind::ConsistentHash => Balancer::BoundedConsistentHash {
                load_factor: config.routing.load_factor,
            },
        };
        Proxy {
            views,
            classifier: Classifier::new(config.routing.rules.clone(), &config.routing.api_base),
            balancer,
            routing: config.routing.clone(),
            ejection: config.health,
            retries: config.upstream.retries,
            response_header_timeout: config.upstream.response_header_timeout,
            client,
            policy,
            unrouted: Arc::new(RequestCounters::new(Arc::from("-"))),
            durations: Default::default(),
        }
    }

    pub fn views(&self) -> &ViewPublisher {
        &self.views
    }

    /// Serves one request. Never fails: errors become responses.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        downstream: Downstream,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let method = request.method().clone();
        let mut class = self.classifier.classify(&method, request.uri().path());
        let mut outcome = Outcome::default();
        let response = match self
            .forward(request, downstream, &mut class, &mut outcome)
            .await
        {
            Ok(response) => response,
            Err(error) => {
                if matches!(
                    error,
                    GatewayError::NoUpstream(_)
                        | GatewayError::NoLeader
                        | GatewayError::ConnectFailed
                ) {
                    metrics::counter!("kgw_no_upstream_total", "class" => class.as_str())
                        .increment(1);
                }
                outcome.error = Some(error.to_string());
                error.into_response(class, self.routing.retry_after_s)
            }
        };
        let elapsed = started.elapsed();
        let status = response.status();
        let counters = outcome.upstream.as_ref().unwrap_or(&self.unrouted);
        counters.increment(class, status.as_u16());
        self.durations[class.index()]
            .get_or_init(
                || metrics::histogram!("kgw_request_duration_seconds", "class" => class.as_str()),
            )
            .record(elapsed.as_secs_f64());
        let upstream = counters.upstream();
        tracing::info!(
            target: "access",
            client = %downstream.client,
            method = %method,
            path = outcome.path.as_ref().map_or("", |pq| pq.path()),
            class = class.as_str(),
            upstream = &**upstream,
            status = status.as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            retries = outcome.retries,
            error = outcome.error.as_deref().unwrap_or(""),
        );
        response
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        downstream: Downstream,
        class: &mut TrafficClass,
        outcome: &mut Outcome,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let (mut parts, incoming) = request.into_parts();
        // A reference-counted copy of the request target, not a new string.
        outcome.path = parts.uri.path_and_query().cloned();
        let mut body = RequestBody::new(incoming);
        let mut snapshot = self.views.snapshot();

        // The routing policy (plugins) decides first, if it wants this class.
        let mut decision = Decision::default();
        if let Some(policy) = self.policy.as_ref().filter(|p| p.wants(*class)) {
            let want = policy.body_prefix_len(*class);
            if want > 0 {
                body.read_prefix(want)
                    .await
                    .map_err(|e| GatewayError::ClientBody(e.to_string()))?;
            }
            let facts = RequestFacts {
                method: &parts.method,
                path: parts.uri.path(),
                query: parts.uri.query(),
                headers: &parts.headers,
                class: *class,
                client: downstream.client,
                body_prefix: &body.prefix()[..body.prefix().len().min(want)],
            };
            decision = policy.decide(&facts, &snapshot);
        }
        let preferred = match std::mem::take(&mut decision.route) {
            Route::Default => Vec::new(),
            Route::Prefer(ids) => ids,
            Route::Reject { status, message } => {
                return Err(GatewayError::Rejected { status, message });
            }
            Route::Reclassify(new_class) => {
                *class = new_class;
                Vec::new()
            }
        };
        let class = *class;

        // Upstream request head, built once; only the URI changes per attempt.
        let proto = if downstream.tls { "https" } else { "http" };
        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::set_forwarded(
            &mut parts.headers,
            downstream.client.ip(),
            proto,
            host.clone(),
        );
        if !parts.headers.contains_key(header::HOST)
            && let Some(host) = host
        {
            parts.headers.insert(header::HOST, host);
        }
        for (name, value) in decision.add_headers {
            parts.headers.append(name, value);
        }
        let key = self.request_key(&parts);
        let affinity =
            headers::find_cookie(&parts.headers, &self.routing.affinity_cookie).map(str::to_owned);
        let path_and_query = parts.uri.path_and_query().cloned();

        let hold_deadline = Instant::now() + self.routing.job_hold;
        if class == TrafficClass::Job
            && snapshot.leader.is_none()
            && !self.routing.job_hold.is_zero()
        {
            // Leaderless window: hold the request (its body stays unread,
            // up to the configured size buffered) until a leader is elected.
            if self.routing.job_hold_body_bytes > 0 {
                body.read_prefix(self.routing.job_hold_body_bytes as usize)
                    .await
                    .map_err(|e| GatewayError::ClientBody(e.to_string()))?;
            }
            metrics::counter!("kgw_job_holds_total").increment(1);
            snapshot = self
                .views
                .wait_for(hold_deadline, |s| s.leader.is_some())
                .await
                .ok_or(GatewayError::NoLeader)?;
        }

        // A request that only reads (a safe method, or Kylin's query
        // execution) is retried even after it reached a node that then failed
        // before answering, when its body is small enough to keep: a node
        // dying mid-request costs the client nothing. Anything that may
        // write is never sent twice.
        let replay_safe = self.classifier.replay_safe(&parts.method, parts.uri.path());
        if replay_safe
            && !body.is_end_stream()
            && body
                .size_hint()
                .upper()
                .is_some_and(|n| n <= REPLAY_BODY_LIMIT as u64)
        {
            body.read_prefix(REPLAY_BODY_LIMIT)
                .await
                .map_err(|e| GatewayError::ClientBody(e.to_string()))?;
        }
        let slot = BodySlot::new(body);
        let replay_safe = replay_safe && slot.replayable();
        let mut tried = Tried::default();
        let mut attempt = 0u32;
        loop {
            let node_index = match class {
                TrafficClass::Job => match snapshot.leader.filter(|&i| !tried.contains(i)) {
                    Some(i) => i,
                    None => {
                        // The leader refused: wait for the election to move on.
                        let waited = self
                            .views
                            .wait_for(hold_deadline, |s| {
                                s.leader.is_some_and(|i| !tried.contains(i))
                            })
                            .await;
                        match waited {
                            Some(s) => {
                                snapshot = s;
                                continue;
                            }
                            None if tried.is_empty() => return Err(GatewayError::NoLeader),
                            None => return Err(GatewayError::ConnectFailed),
                        }
                    }
                },
                _ => self
                    .pick_query_node(&snapshot, &preferred, affinity.as_deref(), key, tried)
                    .ok_or(if tried.is_empty() {
                        GatewayError::NoUpstream(class)
                    } else {
                        GatewayError::ConnectFailed
                    })?,
            };
            let node = &snapshot.nodes[node_index];
            outcome.upstream = Some(node.requests.clone());
            let Some(authority) = node.authority.clone() else {
                tried.insert(node_index);
                continue;
            };
            let mut uri = Uri::builder().scheme("http").authority(authority);
            if let Some(pq) = &path_and_query {
                uri = uri.path_and_query(pq.clone());
            }
            let mut upstream_request = Request::new(slot.handle());
            *upstream_request.method_mut() = parts.method.clone();
            *upstream_request.uri_mut() = uri
                .build()
                .map_err(|e| GatewayError::Upstream(e.to_string()))?;
            *upstream_request.version_mut() = Version::HTTP_11;
            *upstream_request.headers_mut() = parts.headers.clone();

            let in_flight = InFlight::start(node.state.clone());
            let sent = Instant::now();
            let result = tokio::time::timeout(
                self.response_header_timeout,
                self.client.request(upstream_request),
            )
            .await;
            match result {
                Ok(Ok(mut response)) => {
                    self.ejection.record_success(&node.state);
                    node.state
                        .observe_latency(sent.elapsed().as_micros() as u64);
                    headers::strip_hop_by_hop(response.headers_mut());
                    if class != TrafficClass::Job
                        && headers::sets_cookie(response.headers(), &self.routing.session_cookie)
                        && let Ok(cookie) = HeaderValue::try_from(format!(
                            "{}={}; Path=/; HttpOnly",
                            self.routing.affinity_cookie, node.affinity_tag
                        ))
                    {
                        response.headers_mut().append(header::SET_COOKIE, cookie);
                    }
                    return Ok(response.map(|inner| ResponseBody::Upstream {
                        inner,
                        _in_flight: in_flight,
                    }));
                }
                Ok(Err(error)) => {
                    drop(in_flight);
                    self.record_failure(node);
                    let retry_safe = (error.is_connect() || replay_safe) && slot.intact();
                    if !retry_safe {
                        return Err(GatewayError::Upstream(error_chain(&error)));
                    }
                    tracing::debug!(upstream = &*node.label, error = %error_chain(&error), "connect failed");
                    tried.insert(node_index);
                    attempt += 1;
                    if attempt > self.retries {
                        return Err(GatewayError::ConnectFailed);
                    }
                    outcome.retries = attempt;
                    metrics::counter!("kgw_retries_total", "class" => class.as_str()).increment(1);
                    snapshot = self.views.snapshot();
                }
                Err(_elapsed) => {
                    drop(in_flight);
                    self.record_failure(node);
                    return Err(GatewayError::UpstreamTimeout);
                }
            }
        }
    }

    /// Counts a gateway-side failure against `node`, ejecting it (counted
    /// and logged) once it has failed too often in a row.
    fn record_failure(&self, node: &RoutableNode) {
        if self.ejection.record_failure(&node.state, now_ms()) {
            metrics::counter!("kgw_ejections_total", "upstream" => node.label.clone()).increment(1);
            tracing::warn!(
                upstream = &*node.label,
                "node ejected after consecutive failures"
            );
        }
    }

    /// Query and other traffic: the policy's preference, then the session's
    /// node, then the balancer.
    fn pick_query_node(
        &self,
        snapshot: &Snapshot,
        preferred: &[Arc<str>],
        affinity: Option<&str>,
        key: Option<u64>,
        tried: Tried,
    ) -> Option<usize> {
        let now = now_ms();
        let usable = |i: usize| {
            !tried.contains(i)
                && !snapshot.nodes[i].state.is_ejected(now)
                && snapshot.query_nodes.contains(&i)
        };
        let from_policy = preferred
            .iter()
            .filter_map(|id| snapshot.position(id))
            .find(|&i| usable(i));
        if let Some(i) = from_policy {
            return Some(i);
        }
        if let Some(tag) = affinity
            && let Some(i) = snapshot
                .query_nodes
                .iter()
                .copied()
                .find(|&i| &*snapshot.nodes[i].affinity_tag == tag)
            && usable(i)
        {
            return Some(i);
        }
        self.balancer
            .pick(snapshot, &snapshot.query_nodes, key, tried, now)
    }

    fn request_key(&self, parts: &http::request::Parts) -> Option<u64> {
        if self.routing.balance != BalanceKind::ConsistentHash {
            return None;
        }
        let value: &[u8] = match self.routing.hash_key.as_ref()? {
            HashKey::Header(name) => parts.headers.get(name)?.as_bytes(),
            HashKey::QueryParam(name) => {
                headers::find_query_param(parts.uri.query(), name)?.as_bytes()
            }
            HashKey::Cookie(name) => headers::find_cookie(&parts.headers, name)?.as_bytes(),
        };
        Some(hash_key(value))
    }
}

/// What happened to a request, for the access log.
#[derive(Default)]
struct Outcome {
    path: Option<PathAndQuery>,
    /// The node last tried, by its request counters (which carry its label).
    upstream: Option<Arc<RequestCounters>>,
    retries: u32,
    error: Option<String>,
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
