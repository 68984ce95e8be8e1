//! The host side of a routing policy: what the proxy tells a policy about a
//! request and what a policy may answer. The WebAssembly plugin chain is the
//! implementation; the proxy only sees this trait.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use crate::balance::health::ms_at;
use crate::classify::TrafficClass;
use crate::view::Snapshot;

/// What a policy sees of one request.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    /// Raw query string, without `?`.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub class: TrafficClass,
    pub client: SocketAddr,
    /// Up to [`RoutingPolicy::body_prefix_len`] leading bytes of the body.
    pub body_prefix: &'a [u8],
    /// The request's time, read once: every plugin of a chain is told the
    /// same.
    pub time: RequestTime,
}

/// The time a policy decides at, on both clocks it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestTime {
    /// Wall-clock milliseconds since the Unix epoch (the WIT's
    /// `now-unix-ms`).
    pub unix_ms: u64,
    /// The same moment on the health clock ([`crate::balance::health::now_ms`]),
    /// which node ejections are timed on.
    pub health_ms: u64,
}

impl RequestTime {
    /// The wall clock read now; the health clock at `started`, which the
    /// request path has read already.
    pub fn since(started: Instant) -> RequestTime {
        RequestTime {
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            health_ms: ms_at(started),
        }
    }

    /// Both clocks read now.
    pub fn now() -> RequestTime {
        RequestTime::since(Instant::now())
    }
}

/// A policy's answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub route: Route,
    /// Headers added to the upstream request (whatever the route).
    pub add_headers: Vec<(HeaderName, HeaderValue)>,
}

/// Where the request goes.
#[derive(Debug, Default, PartialEq, Eq)]
pub enum Route {
    /// Keep the gateway's built-in choice.
    #[default]
    Default,
    /// Node ids in order of preference; the first usable one is taken, and
    /// the built-in choice is used when none is.
    Prefer(Vec<Arc<str>>),
    /// Answer the client directly.
    Reject { status: StatusCode, message: String },
    /// Route as if the request were of another class.
    Reclassify(TrafficClass),
}

/// A routing policy consulted per request, after classification and before
/// the built-in balancer.
pub trait RoutingPolicy: Send + Sync + 'static {
    /// How many leading body bytes the policy wants for `class` (0 = none,
    /// and the body is not touched).
    fn body_prefix_len(&self, class: TrafficClass) -> usize;

    /// Whether the policy wants to see requests of `class` at all.
    fn wants(&self, class: TrafficClass) -> bool;

    /// Decides for one request against the current snapshot. Must not block
    /// for long: it runs on the request path.
    fn decide(&self, request: &RequestFacts<'_>, snapshot: &Snapshot) -> Decision;
}

/// What the admin API can ask of the plugin runtime.
pub trait PluginControl: Send + Sync + 'static {
    /// Loaded plugins, their versions and failure counts, as JSON.
    fn status(&self) -> serde_json::Value;

    /// Reloads every plugin from disk; a plugin that fails to load keeps its
    /// old version. Returns the per-plugin outcome as JSON.
    fn reload(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = serde_json::Value> + Send + '_>>;
}
