//! One Kylin instance as discovered, and its runtime state on the data path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::window::RollingWindow;

/// The roles a Kylin node plays, from `kylin.server.mode`
/// (`all`, `job`, `query`, or since 3.1.1 a comma list such as `query,job`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Modes {
    pub query: bool,
    pub job: bool,
}

impl Modes {
    pub const ALL: Modes = Modes {
        query: true,
        job: true,
    };
    pub const QUERY: Modes = Modes {
        query: true,
        job: false,
    };
    pub const JOB: Modes = Modes {
        query: false,
        job: true,
    };

    /// Parses a mode string leniently. `all`, `job`, `query` and comma lists of
    /// them are understood; other entries (`stream_coordinator`, ...) add no
    /// role. Returns `None` when nothing in the string names a known role.
    pub fn parse(text: &str) -> Option<Modes> {
        let mut modes = Modes::default();
        let mut known = false;
        for part in text.split(',').map(str::trim) {
            match part.to_ascii_lowercase().as_str() {
                "all" => {
                    modes = Modes::ALL;
                    known = true;
                }
                "query" => {
                    modes.query = true;
                    known = true;
                }
                "job" => {
                    modes.job = true;
                    known = true;
                }
                _ => {}
            }
        }
        known.then_some(modes)
    }

    /// Canonical names, for the admin API and logs.
    pub fn names(self) -> Vec<&'static str> {
        match (self.query, self.job) {
            (true, true) => vec!["all"],
            (true, false) => vec!["query"],
            (false, true) => vec!["job"],
            (false, false) => vec![],
        }
    }
}

impl std::fmt::Display for Modes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// A Kylin instance as discovery found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Stable id: the Curator instance id (a UUID) for ZooKeeper discovery,
    /// the configured address for static discovery.
    pub id: Arc<str>,
    /// Advertised host (`hostname -f` or `KYLIN_REST_ADDRESS`).
    pub host: Arc<str>,
    pub port: u16,
    pub ssl_port: Option<u16>,
    pub modes: Modes,
    /// `false` when Curator's `enabled` field says so: not routed.
    pub enabled: bool,
    /// The address the gateway connects to, once resolved (after
    /// `address_map`). `None` while unresolved or unresolvable.
    pub addr: Option<SocketAddr>,
    /// Why `addr` is `None`, for `/admin/nodes`.
    pub resolve_error: Option<Arc<str>>,
}

impl Node {
    /// `host:port` as advertised.
    pub fn advertised(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Whether this node may receive traffic at all.
    pub fn routable(&self) -> bool {
        self.enabled && self.addr.is_some()
    }
}

/// Runtime state of one node on the data path: counters and passive health.
/// Shared between snapshots (keyed by node id) so a view update does not
/// reset in-flight counts or ejections. All fields are atomics: requests
/// update them without locks.
#[derive(Debug, Default)]
pub struct NodeState {
    pub in_flight: AtomicU32,
    pub requests: AtomicU64,
    /// Connect failures or gateway-side errors since the last success.
    pub consecutive_failures: AtomicU32,
    /// How many times this node was ejected in a row (backoff exponent).
    pub ejections: AtomicU32,
    /// Milliseconds since the process clock's origin until which the node is
    /// ejected; 0 when not ejected.
    pub ejected_until_ms: AtomicU64,
    /// Exponentially weighted recent latency in microseconds (for plugins
    /// and the status page).
    pub latency_ewma_us: AtomicU64,
    /// The last minute's rate and latency, and a 5-minute series.
    pub window: RollingWindow,
}

impl NodeState {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Folds one observed latency into the moving average (weight 1/8)
    /// and the rolling window (at second `now_s` of the process clock).
    pub fn observe_latency(&self, now_s: u64, micros: u64) {
        self.window.record(now_s, micros);
        let old = self.latency_ewma_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            micros
        } else {
            old - old / 8 + micros / 8
        };
        self.latency_ewma_us.store(new, Ordering::Relaxed);
    }
}
