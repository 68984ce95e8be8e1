//! The streaming reverse proxy. A request walks through phases: classify,
//! consult the routing policy, rewrite the head, hold a job request through
//! a leaderless window, read ahead what a retry would resend, then attempt:
//! choose a node from the current snapshot, send, and retry on another when
//! that is safe. Bodies stream both ways (small answers to replay-safe
//! requests are read whole first, so a node failing mid-answer is retried).
//! Per request: one snapshot load, atomics for node state, no lock held
//! across the request.

mod answer;
mod body;
mod client_io;
pub mod durations;
mod error;
mod h1;
mod headers;
mod idle;
mod limits;
mod release;
pub mod server;
mod side_wake;

pub use answer::Answer;
pub use body::{BodySlot, ClientBody, Recoverable, RequestBody, ResponseBody};
pub use error::GatewayError;

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Version};
use http_body::Body;

use crate::access_log;
use crate::balance::health::{Ejection, ms_at, now_ms};
use crate::balance::{Balancer, Tried, hash_key};
use crate::classify::{Classifier, TrafficClass};
use crate::config::{BalanceKind, Config, HashKey, Routing};
use crate::events;
use crate::plugin::{Decision, RequestFacts, RequestTime, Route, RoutingPolicy};
use crate::quota::{ProjectQuotas, QuotaPermit};
use crate::tls::UpstreamTls;
use crate::upstream::wire::{BodyFraming, RequestHead};
use crate::upstream::{NodePool, UpstreamBody, Upstreams};
use crate::view::{JobRouting, RequestCounters, RoutableNode, Snapshot, ViewPublisher};
use body::{ClientFault, InFlight};
use limits::InFlightLimit;

/// Bodies up to this size (by `Content-Length`) of replay-safe requests are
/// read ahead so a retry can resend them; Kylin query bodies are SQL text.
const REPLAY_BODY_LIMIT: usize = 64 * 1024;

/// Of a query body not read ahead (larger, or without `Content-Length`),
/// this much is read to find its project: Kylin clients put `project`
/// next to a short `sql`.
const PROJECT_PREFIX_BYTES: usize = 4 * 1024;

/// Everything a request needs, shared by all connections.
pub struct Proxy {
    views: ViewPublisher,
    classifier: Classifier,
    balancer: Balancer,
    routing: Routing,
    ejection: Ejection,
    retries: u32,
    response_header_timeout: Duration,
    /// `limits.body_read_timeout_ms`: a request body that stalls this long
    /// is cut off.
    body_read_timeout: Duration,
    /// Answers up to this size are read whole before they are forwarded
    /// (0: never).
    replay_response_bytes: usize,
    /// Connections to nodes. Requests that may be sent again take idle
    /// keep-alive connections. Requests that must not be sent twice get a
    /// new connection: an idle one may have been closed by its node (a
    /// crash, a restart) in a way the gateway learns of only after writing
    /// on it, and a write sent that way could be neither answered nor
    /// retried. A new connection to a dead node is refused instead: nothing
    /// was sent, and the request goes on to another node or waits for the
    /// next leader.
    upstreams: Upstreams,
    policy: Option<Arc<dyn RoutingPolicy>>,
    /// `kgw_requests_total` for requests that reached no node (`upstream="-"`).
    unrouted: Arc<RequestCounters>,
    /// `limits.max_in_flight`: requests past it are shed with a 503.
    in_flight: InFlightLimit,
    /// `kgw_requests_shed_total`, registered on first use.
    shed: OnceLock<metrics::Counter>,
    /// Per-project query quotas; the fleet membership sets their share.
    quotas: Arc<ProjectQuotas>,
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
        upstream_tls: UpstreamTls,
    ) -> Proxy {
        let balancer = match config.routing.balance {
            BalanceKind::PowerOfTwoChoices => Balancer::PowerOfTwoChoices,
            BalanceKind::RoundRobin => Balancer::RoundRobin(AtomicUsize::new(0)),
            BalanceKind::ConsistentHash => Balancer::BoundedConsistentHash {
                load_factor: config.routing.load_factor,
            },
        };
        Proxy {
            views,
            classifier: Classifier::for_generation(
                config.routing.rules.clone(),
                &config.routing.api_base,
                config.discovery.api_generation(),
            ),
            balancer,
            routing: config.routing.clone(),
            ejection: config.health,
            retries: config.upstream.retries,
            response_header_timeout: config.upstream.response_header_timeout,
            body_read_timeout: config.limits.body_read_timeout,
            replay_response_bytes: config.upstream.replay_response_bytes,
            upstreams: Upstreams::new(&config.upstream, upstream_tls),
            policy,
            unrouted: Arc::new(RequestCounters::new(Arc::from("-"))),
            in_flight: InFlightLimit::new(config.limits.max_in_flight),
            shed: OnceLock::new(),
            quotas: Arc::new(ProjectQuotas::new(&config.limits)),
        }
    }

    /// The per-project quotas: `/admin/limits` reads them, the fleet
    /// membership calls `set_gateways` on them.
    pub fn quotas(&self) -> &Arc<ProjectQuotas> {
        &self.quotas
    }

    pub fn views(&self) -> &ViewPublisher {
        &self.views
    }

    /// The node connections, for the idle reaper.
    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// Serves one request. Never fails: errors become responses.
    pub async fn handle(&self, request: Request<ClientBody>, downstream: Downstream) -> Answer {
        let started = Instant::now();
        let method = request.method().clone();
        let mut class = self.classifier.classify(&method, request.uri().path());
        let mut outcome = Outcome::default();
        // Held until the answer's head is out; past the cap, shed at once.
        let admitted = self.in_flight.try_enter();
        let result = if admitted.is_some() {
            self.forward(request, downstream, started, &mut class, &mut outcome)
                .await
        } else {
            Err(GatewayError::Overloaded)
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                if matches!(error, GatewayError::Overloaded) {
                    self.shed
                        .get_or_init(|| metrics::counter!("kgw_requests_shed_total"))
                        .increment(1);
                }
                if matches!(error, GatewayError::ClientStalled(_)) {
                    metrics::counter!("kgw_client_body_timeouts_total").increment(1);
                }
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
                Answer::from(error.into_response(class, self.routing.retry_after_s))
            }
        };
        let elapsed = started.elapsed();
        let status = response.status();
        let counters = outcome.upstream.as_ref().unwrap_or(&self.unrouted);
        counters.increment(class, status.as_u16());
        durations::record(class, elapsed);
        let upstream = counters.upstream();
        // Formatted and written on the access log's thread, not here.
        access_log::emit(|| access_log::Record {
            at: SystemTime::now(),
            client: downstream.client,
            method,
            path: outcome.path,
            class,
            upstream: upstream.clone(),
            status: status.as_u16(),
            elapsed,
            retries: outcome.retries,
            error: outcome.error,
        });
        response
    }

    /// The request's phases: the routing policy, the upstream head, the
    /// leaderless hold, read-ahead for replay, then attempts until a node
    /// answers or retrying is no longer safe.
    async fn forward(
        &self,
        request: Request<ClientBody>,
        downstream: Downstream,
        started: Instant,
        class: &mut TrafficClass,
        outcome: &mut Outcome,
    ) -> Result<Answer, GatewayError> {
        let (mut parts, incoming) = request.into_parts();
        // A reference-counted copy of the request target, not a new string.
        outcome.path = parts.uri.path_and_query().cloned();
        if parts.method == Method::CONNECT {
            return Err(GatewayError::Tunnel);
        }
        if parts.version == Version::HTTP_2
            && let Some(why) = headers::malformed_h2_head(&parts)
        {
            return Err(GatewayError::Malformed(why));
        }
        let mut body = RequestBody::new(incoming, self.body_read_timeout);
        let mut snapshot = self.views.snapshot();

        let decision = self
            .consult_policy(&parts, &mut body, downstream, *class, &snapshot, started)
            .await?;
        let preferred = match decision.route {
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
        headers::rewrite_request_head(
            &mut parts.headers,
            &parts.uri,
            downstream.client.ip(),
            downstream.tls,
        );
        for (name, value) in decision.add_headers {
            parts.headers.append(name, value);
        }
        let target = Target {
            class,
            key: self.request_key(&parts),
            affinity: headers::find_cookie(&parts.headers, &self.routing.affinity_cookie)
                .map(str::to_owned),
            preferred,
            hold_deadline: started + self.routing.job_hold,
        };
        if class == TrafficClass::Job && !snapshot.routes_jobs() && !self.routing.job_hold.is_zero()
        {
            snapshot = self
                .hold_for_leader(&mut body, target.hold_deadline)
                .await?;
        }
        let replay_safe = self.read_ahead_small_body(&parts, &mut body).await?;
        // Held until the answer's head is out, like the in-flight place.
        let _quota = self.admit_project(&parts, &mut body, class).await?;
        let slot = BodySlot::new(body);
        let replay_safe = replay_safe && slot.replayable();
        self.attempts(&parts, &slot, replay_safe, &target, snapshot, outcome)
            .await
    }

    /// The policy phase: plugins see the request (and, if they ask, the
    /// first bytes of its body) and decide first, for classes they want.
    async fn consult_policy(
        &self,
        parts: &http::request::Parts,
        body: &mut RequestBody,
        downstream: Downstream,
        class: TrafficClass,
        snapshot: &Snapshot,
        started: Instant,
    ) -> Result<Decision, GatewayError> {
        let Some(policy) = self.policy.as_ref().filter(|p| p.wants(class)) else {
            return Ok(Decision::default());
        };
        let want = policy.body_prefix_len(class);
        if want > 0 {
            body.read_prefix(want).await.map_err(GatewayError::from)?;
        }
        let facts = RequestFacts {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            class,
            client: downstream.client,
            body_prefix: &body.prefix()[..body.prefix().len().min(want)],
            time: RequestTime::since(started),
        };
        Ok(policy.decide(&facts, snapshot))
    }

    /// Leaderless window: holds a job request (its body unread, up to the
    /// configured size buffered) until a leader is elected (in a cluster
    /// without election: until a job-capable node is known).
    async fn hold_for_leader(
        &self,
        body: &mut RequestBody,
        deadline: Instant,
    ) -> Result<Arc<Snapshot>, GatewayError> {
        if self.routing.job_hold_body_bytes > 0 {
            body.read_prefix(self.routing.job_hold_body_bytes as usize)
                .await
                .map_err(GatewayError::from)?;
        }
        metrics::counter!("kgw_job_holds_total").increment(1);
        self.views
            .wait_for(deadline, Snapshot::routes_jobs)
            .await
            .ok_or(GatewayError::NoLeader)
    }

    /// A body small enough to keep (by `Content-Length`) is read whole
    /// before a node is chosen. Two reasons: a request that only reads (a
    /// safe method, or Kylin's query execution) can then be retried even
    /// after it reached a node that failed before answering, so a node
    /// dying mid-request costs the client nothing; and a client that
    /// trickles a small body (a slow POST) holds only the gateway, never a
    /// node's request thread, as nginx's request buffering does. Anything
    /// that may write is still never sent twice. Returns whether the
    /// request is replay-safe.
    async fn read_ahead_small_body(
        &self,
        parts: &http::request::Parts,
        body: &mut RequestBody,
    ) -> Result<bool, GatewayError> {
        let replay_safe = self.classifier.replay_safe(&parts.method, parts.uri.path());
        if !body.is_end_stream()
            && body
                .size_hint()
                .upper()
                .is_some_and(|n| n <= REPLAY_BODY_LIMIT as u64)
        {
            body.read_prefix(REPLAY_BODY_LIMIT)
                .await
                .map_err(GatewayError::from)?;
        }
        Ok(replay_safe)
    }

    /// The quota phase: a query counts against its project's quota, or is
    /// refused (429) before any node sees it. A body too large to have been
    /// read ahead is read this far only when quotas are configured.
    async fn admit_project(
        &self,
        parts: &http::request::Parts,
        body: &mut RequestBody,
        class: TrafficClass,
    ) -> Result<Option<QuotaPermit>, GatewayError> {
        if class != TrafficClass::Query || !self.quotas.enabled() {
            return Ok(None);
        }
        if body.prefix().len() < PROJECT_PREFIX_BYTES && !body.fully_read() {
            body.read_prefix(PROJECT_PREFIX_BYTES)
                .await
                .map_err(GatewayError::from)?;
        }
        let project = crate::quota::project::project_of(
            body.prefix(),
            parts.uri.query(),
            parts.uri.path(),
            &self.routing.api_base,
        );
        match project {
            Some(project) => self
                .quotas
                .admit(&project)
                .map_err(GatewayError::ProjectQuota),
            // Without a project there is no quota to count against.
            None => Ok(None),
        }
    }

    /// Sends to a chosen node, and after a failure that is safe to retry,
    /// to another (for jobs: the next leader, waiting for it within the
    /// hold). Failed nodes are remembered by id, valid in every later
    /// snapshot.
    async fn attempts(
        &self,
        parts: &http::request::Parts,
        slot: &BodySlot,
        replay_safe: bool,
        target: &Target,
        mut snapshot: Arc<Snapshot>,
        outcome: &mut Outcome,
    ) -> Result<Answer, GatewayError> {
        // Small answers are read whole before their head goes out: a node
        // dying mid-answer is then retried (reads) or answered with a clean
        // 502 (writes), never a truncated 200. HEAD answers announce a
        // length but carry no body: nothing to keep.
        let buffer_limit = (self.replay_response_bytes > 0 && parts.method != http::Method::HEAD)
            .then_some(self.replay_response_bytes);
        let mut tried = Tried::default();
        let mut attempt = 0u32;
        loop {
            let (next, index) = self.choose(snapshot, target, &tried).await?;
            snapshot = next;
            let node = &snapshot.nodes[index];
            outcome.upstream = Some(node.requests.clone());
            let Some(pool) = node.pool.as_ref() else {
                tried.insert(&node.node.id);
                continue;
            };
            let head = upstream_head(parts, pool);
            let exchange = Exchange {
                head: &head,
                body: slot.handle(),
                reuse: replay_safe,
                class: target.class,
                buffer_limit,
            };
            // Awaited where it is made: a future kept in a local first is
            // stored twice in this one's state (rustc does not overlap
            // them), and the doubling compounds level by level.
            let failure = match self.send(node, pool, exchange).await {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            };
            // The client stopped sending (or broke) its body: the node saw
            // an aborted request and is not to blame.
            if let Some(fault) = slot.client_fault() {
                return Err(match fault {
                    ClientFault::Stalled => GatewayError::ClientStalled(self.body_read_timeout),
                    ClientFault::Failed => GatewayError::ClientBody(failure.to_string()),
                });
            }
            self.record_failure(node, &failure);
            let retry = match &failure {
                Failure::Connect(_) => slot.intact(),
                Failure::Broke(_) => replay_safe && slot.intact(),
                Failure::Timeout => false,
            };
            if !retry {
                return Err(failure.into());
            }
            tracing::debug!(upstream = &*node.label, error = %failure, "attempt failed, retrying");
            tried.insert(&node.node.id);
            attempt += 1;
            if attempt > self.retries {
                return Err(GatewayError::ConnectFailed);
            }
            outcome.retries = attempt;
            metrics::counter!("kgw_retries_total", "class" => target.class.as_str()).increment(1);
            snapshot = self.views.snapshot();
        }
    }

    /// The choose phase: a node of `snapshot` not yet tried. Job traffic
    /// goes to the leader (or, without election, a job-capable node); when
    /// none is untried, it waits (within the hold) for a snapshot that
    /// names one, and returns that snapshot.
    async fn choose(
        &self,
        snapshot: Arc<Snapshot>,
        target: &Target,
        tried: &Tried,
    ) -> Result<(Arc<Snapshot>, usize), GatewayError> {
        let exhausted = || {
            if tried.is_empty() {
                GatewayError::NoUpstream(target.class)
            } else {
                GatewayError::ConnectFailed
            }
        };
        if target.class != TrafficClass::Job {
            let index = self
                .pick_query_node(&snapshot, target, tried)
                .ok_or_else(exhausted)?;
            return Ok((snapshot, index));
        }
        if let Some(index) = self.pick_job_node(&snapshot, tried) {
            return Ok((snapshot, index));
        }
        let snapshot = self
            .views
            .wait_for(target.hold_deadline, |s| {
                self.pick_job_node(s, tried).is_some()
            })
            .await
            .ok_or(if tried.is_empty() {
                GatewayError::NoLeader
            } else {
                GatewayError::ConnectFailed
            })?;
        let index = self
            .pick_job_node(&snapshot, tried)
            .ok_or(GatewayError::NoLeader)?;
        Ok((snapshot, index))
    }

    /// Job traffic: the untried leader; in a cluster without election
    /// (Kylin 5), an untried job-capable node by the balancer. Consistent
    /// hashing has no key here (Kylin 5 forwards a job call to its
    /// project's owner anyway), so it spreads like P2C.
    fn pick_job_node(&self, snapshot: &Snapshot, tried: &Tried) -> Option<usize> {
        match snapshot.view.job_routing {
            JobRouting::Leader => snapshot
                .leader
                .filter(|&i| !tried.contains_node(snapshot, i)),
            JobRouting::AnyJobNode => {
                self.balancer
                    .pick(snapshot, &snapshot.job_nodes, None, tried, now_ms())
            }
        }
    }

    /// The send phase: one attempt at one node (a failure is counted
    /// against the node by the caller, unless the client caused it). For a
    /// replay-safe request (`buffer_limit` set) a response whose
    /// `Content-Length` fits is read whole before its head goes
    /// downstream, so a node failing mid-answer is retried rather than
    /// truncating it.
    async fn send(
        &self,
        node: &RoutableNode,
        pool: &Arc<NodePool>,
        exchange: Exchange<'_>,
    ) -> Result<Answer, Failure> {
        let in_flight = InFlight::start(node.state.clone());
        let sent = Instant::now();
        let deadline = tokio::time::Instant::from_std(sent + self.response_header_timeout);
        // One deadline for the connection and the answer's head; the
        // checkout is ready at once when an idle connection is at hand.
        let mut conn = tokio::time::timeout_at(
            deadline,
            self.upstreams.checkout(pool, exchange.reuse, sent),
        )
        .await
        .map_err(|_elapsed| Failure::Timeout)?
        .map_err(|error| Failure::Connect(error_chain(&error)))?
        .conn;
        let answer = match tokio::time::timeout_at(
            deadline,
            conn.send(exchange.head, exchange.body),
        )
        .await
        {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => return Err(Failure::Broke(error_chain(&error))),
            Err(_elapsed) => return Err(Failure::Timeout),
        };
        let mut upstream = UpstreamBody::new(conn, &answer);
        let lease = self.upstreams.lease(pool.clone());
        let read_whole = matches!(
            (answer.framing, exchange.buffer_limit),
            (BodyFraming::Length(n), Some(limit)) if n <= limit as u64
        );
        let (body, answered) = if read_whole {
            match tokio::time::timeout_at(deadline, upstream.read_all()).await {
                Ok(Ok(whole)) => {
                    let answered = Instant::now();
                    if let Some(conn) = upstream.take_idle() {
                        lease.finish(conn, answered);
                    }
                    (ResponseBody::full(whole), answered)
                }
                Ok(Err(error)) => return Err(Failure::Broke(error_chain(&error))),
                Err(_elapsed) => return Err(Failure::Timeout),
            }
        } else {
            let body = ResponseBody::upstream(upstream, in_flight, lease);
            (body, Instant::now())
        };
        self.ejection.record_success(&node.state);
        node.state.observe_latency(
            ms_at(answered) / 1000,
            answered.saturating_duration_since(sent).as_micros() as u64,
        );
        // The node's connection fields were left out as its head was read.
        let mut answer = Answer::from_node(answer.status, answer.version, answer.fields, body);
        if exchange.class != TrafficClass::Job {
            self.pin_session(&mut answer, node);
        }
        Ok(answer)
    }

    /// When a node opens a Kylin session (`JSESSIONID`), adds the gateway's
    /// affinity cookie so the session's later requests reach the same node.
    fn pin_session(&self, answer: &mut Answer, node: &RoutableNode) {
        if answer.fields.sets_cookie(&self.routing.session_cookie)
            && let Ok(cookie) = HeaderValue::try_from(format!(
                "{}={}; Path=/; HttpOnly",
                self.routing.affinity_cookie, node.affinity_tag
            ))
        {
            answer.parts.headers.append(header::SET_COOKIE, cookie);
        }
    }

    /// Counts a gateway-side failure against `node`, ejecting it (counted
    /// and logged) once it has failed too often in a row.
    fn record_failure(&self, node: &RoutableNode, failure: &Failure) {
        let now = now_ms();
        if self.ejection.record_failure(&node.state, now) {
            metrics::counter!("kgw_ejections_total", "upstream" => node.label.clone()).increment(1);
            tracing::warn!(
                upstream = &*node.label,
                "node ejected after consecutive failures"
            );
            let for_ms = node
                .state
                .ejected_until_ms
                .load(std::sync::atomic::Ordering::Relaxed)
                .saturating_sub(now);
            events::record(
                events::Kind::Ejected,
                format!(
                    "node {} ({}) ejected for {} s: {failure}",
                    node.node.id,
                    node.label,
                    for_ms / 1000
                ),
                serde_json::json!({"node": &*node.node.id, "address": &*node.label,
                                   "for_ms": for_ms, "reason": failure.to_string()}),
            );
        }
    }

    /// Query and other traffic: the policy's preference, then the session's
    /// node, then the balancer.
    fn pick_query_node(
        &self,
        snapshot: &Snapshot,
        target: &Target,
        tried: &Tried,
    ) -> Option<usize> {
        let now = now_ms();
        let usable = |i: usize| {
            !tried.contains_node(snapshot, i)
                && !snapshot.nodes[i].state.is_ejected(now)
                && snapshot.query_nodes.contains(&i)
        };
        let from_policy = target
            .preferred
            .iter()
            .filter_map(|id| snapshot.position(id))
            .find(|&i| usable(i));
        if let Some(i) = from_policy {
            return Some(i);
        }
        if let Some(tag) = target.affinity.as_deref()
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
            .pick(snapshot, &snapshot.query_nodes, target.key, tried, now)
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

/// Where a request may go, decided before its first attempt.
struct Target {
    class: TrafficClass,
    /// Consistent-hash key.
    key: Option<u64>,
    /// The gateway affinity cookie's value, if the client sent one.
    affinity: Option<String>,
    /// Node ids the routing policy prefers, in order.
    preferred: Vec<Arc<str>>,
    /// Until when a job request may wait for a leader.
    hold_deadline: Instant,
}

/// Why one attempt at a node failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// No connection: nothing reached the node.
    #[error("connect failed: {0}")]
    Connect(String),
    /// The node failed after the request (or part of it) was sent, before
    /// its answer was complete.
    #[error("{0}")]
    Broke(String),
    #[error("no answer in time")]
    Timeout,
}

impl From<Failure> for GatewayError {
    fn from(failure: Failure) -> GatewayError {
        match failure {
            Failure::Connect(_) => GatewayError::ConnectFailed,
            Failure::Broke(text) => GatewayError::Upstream(text),
            Failure::Timeout => GatewayError::UpstreamTimeout,
        }
    }
}

/// The upstream request for one attempt: the rewritten head, in origin
/// form. A request that came without a `Host` (HTTP/1.0) names the node.
/// The head of `parts` as sent to `pool`'s node (the headers as the
/// rewrite left them, with a `Host` of the node's when they carry none).
fn upstream_head<'a>(parts: &'a http::request::Parts, pool: &NodePool) -> RequestHead<'a> {
    let host = if parts.headers.contains_key(header::HOST) {
        None
    } else {
        let target = pool.target();
        match &target.tls_name {
            Some(name) => HeaderValue::from_str(name).ok(),
            None => HeaderValue::try_from(target.addr.to_string()).ok(),
        }
    };
    RequestHead {
        method: &parts.method,
        path: parts.uri.path_and_query().map_or("/", PathAndQuery::as_str),
        headers: &parts.headers,
        host,
    }
}

/// One attempt's request and how to treat its answer.
struct Exchange<'a> {
    head: &'a RequestHead<'a>,
    body: Recoverable,
    /// It may go on an idle connection (it may be sent again).
    reuse: bool,
    class: TrafficClass,
    /// Answers up to this size are read whole first.
    buffer_limit: Option<usize>,
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
