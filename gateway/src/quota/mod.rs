//! Per-project quotas of query traffic (`[[limits.projects]]`,
//! `[limits.project_default]`): Kylin's own limits are per node, so one
//! project's storm would starve the others. This module owns which project
//! a query belongs to ([`project`]), each project's state (queries in
//! flight, a token bucket, counters) and the admission decision, made
//! against this gateway's share of a fleet-wide total ([`share`]: each of
//! `n` gateways allows ⌈limit / n⌉; the fleet sets `n` through
//! [`ProjectQuotas::set_gateways`]).
//!
//! Per request: one map lookup by `&str` and a few atomics; no lock, and no
//! allocation for a project seen before. Listed projects live in a map
//! built at start-up; unlisted ones (under `project_default`) are added
//! copy-on-write to a lock-free map, at most [`MAX_TRACKED_PROJECTS`] of
//! them: past that, new projects share one entry, [`OVERFLOW_PROJECT`].

mod bucket;
pub mod project;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use serde_json::json;

pub use bucket::{Bucket, gcra, retry_after_s, share};

use crate::config::{Limits, QuotaLimits};

/// Unlisted projects tracked one by one (each has its own state, its own
/// metric series); this bounds memory and label cardinality.
pub const MAX_TRACKED_PROJECTS: usize = 10_000;

/// The entry every unlisted project past [`MAX_TRACKED_PROJECTS`] shares:
/// together they get one `project_default` quota. Kylin project names
/// cannot contain parentheses, so it never names a real project.
pub const OVERFLOW_PROJECT: &str = "(other)";

/// Which limit a query was over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    MaxConcurrent,
    RatePerS,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::MaxConcurrent => "max_concurrent",
            LimitKind::RatePerS => "rate_per_s",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A query refused by its project's quota: what the 429 answer tells.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "project quota exceeded: project '{project}' is at its {} (this gateway allows {allowed} of {configured} across {gateways} gateways)",
    .limit.as_str()
)]
pub struct Rejection {
    pub project: Arc<str>,
    pub limit: LimitKind,
    /// This gateway's share.
    pub allowed: u64,
    /// The configured fleet total.
    pub configured: u64,
    pub gateways: usize,
    pub retry_after_s: u64,
}

/// The time quotas are measured in: the monotonic clock, or one that tests
/// move by hand.
pub enum Clock {
    Monotonic(Instant),
    Manual(Arc<AtomicU64>),
}

impl Clock {
    fn now_ns(&self) -> u64 {
        match self {
            Clock::Monotonic(start) => start.elapsed().as_nanos() as u64,
            Clock::Manual(ns) => ns.load(Ordering::Relaxed),
        }
    }
}

/// One project's quota and state.
pub struct ProjectState {
    name: Arc<str>,
    limits: QuotaLimits,
    listed: bool,
    in_flight: AtomicU64,
    bucket: Bucket,
    admitted: AtomicU64,
    rejected: [AtomicU64; 2],
    /// Metric handles, registered on first use (the recorder is installed
    /// by then) and kept: no label allocation per request.
    admitted_metric: OnceLock<metrics::Counter>,
    rejected_metric: [OnceLock<metrics::Counter>; 2],
}

impl ProjectState {
    fn new(name: Arc<str>, limits: QuotaLimits, listed: bool) -> ProjectState {
        ProjectState {
            name,
            limits,
            listed,
            in_flight: AtomicU64::new(0),
            bucket: Bucket::default(),
            admitted: AtomicU64::new(0),
            rejected: Default::default(),
            admitted_metric: OnceLock::new(),
            rejected_metric: Default::default(),
        }
    }

    fn reject(&self, limit: LimitKind, rejection: Rejection) -> Rejection {
        self.rejected[limit.index()].fetch_add(1, Ordering::Relaxed);
        self.rejected_metric[limit.index()]
            .get_or_init(|| {
                metrics::counter!("kgw_project_rejected_total",
                    "project" => self.name.clone(), "limit" => limit.as_str())
            })
            .increment(1);
        rejection
    }
}

/// An admitted query's place in its project's concurrency; dropping it
/// (when the answer's head is out) gives the place back.
pub struct QuotaPermit(Arc<ProjectState>);

impl Drop for QuotaPermit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

type Unlisted = HashMap<Arc<str>, Arc<ProjectState>>;

/// Every project's quota on this gateway. Shared (`Arc`) by the proxy, the
/// admin API and the fleet membership, which calls [`Self::set_gateways`].
pub struct ProjectQuotas {
    listed: HashMap<Arc<str>, Arc<ProjectState>>,
    /// Config order, for `/admin/limits`.
    listed_order: Vec<Arc<ProjectState>>,
    default: Option<QuotaLimits>,
    unlisted: ArcSwap<Unlisted>,
    /// Serializes copy-on-write inserts; readers never take it.
    insert: Mutex<()>,
    overflow: Option<Arc<ProjectState>>,
    /// Queries of projects counted under [`OVERFLOW_PROJECT`].
    overflowed: AtomicU64,
    max_tracked: usize,
    gateways: AtomicUsize,
    clock: Clock,
}

impl ProjectQuotas {
    /// The quotas of `[limits]`, one gateway, the monotonic clock.
    pub fn new(limits: &Limits) -> ProjectQuotas {
        ProjectQuotas::with_clock(
            limits,
            Clock::Monotonic(Instant::now()),
            MAX_TRACKED_PROJECTS,
        )
    }

    /// With another clock and cap on tracked unlisted projects (tests).
    pub fn with_clock(limits: &Limits, clock: Clock, max_tracked: usize) -> ProjectQuotas {
        let listed_order: Vec<_> = limits
            .projects
            .iter()
            .map(|p| {
                Arc::new(ProjectState::new(
                    Arc::from(p.name.as_str()),
                    p.limits,
                    true,
                ))
            })
            .collect();
        let listed = listed_order
            .iter()
            .map(|s| (s.name.clone(), s.clone()))
            .collect();
        let overflow = limits
            .project_default
            .map(|d| Arc::new(ProjectState::new(Arc::from(OVERFLOW_PROJECT), d, false)));
        ProjectQuotas {
            listed,
            listed_order,
            default: limits.project_default,
            unlisted: ArcSwap::from_pointee(HashMap::new()),
            insert: Mutex::new(()),
            overflow,
            overflowed: AtomicU64::new(0),
            max_tracked,
            gateways: AtomicUsize::new(1),
            clock,
        }
    }

    /// Whether any project is limited: without quotas the proxy skips the
    /// project lookup (and reading a body prefix for it).
    pub fn enabled(&self) -> bool {
        !self.listed.is_empty() || self.default.is_some()
    }

    /// The number of live gateways sharing the configured totals (at least
    /// 1); every share follows at the next request.
    pub fn set_gateways(&self, n: usize) {
        let n = n.max(1);
        let before = self.gateways.swap(n, Ordering::Relaxed);
        if before != n {
            metrics::gauge!("kgw_quota_gateways").set(n as f64);
            tracing::info!(gateways = n, "project quota shares recomputed");
        }
    }

    pub fn gateways(&self) -> usize {
        self.gateways.load(Ordering::Relaxed)
    }

    /// Admits one query of `project`, or says which limit it is over.
    /// `Ok(None)`: the project is not limited.
    pub fn admit(&self, project: &str) -> Result<Option<QuotaPermit>, Box<Rejection>> {
        let Some(state) = self.state_of(project) else {
            return Ok(None);
        };
        let n = self.gateways();
        let limits = state.limits;
        let in_flight = state.in_flight.fetch_add(1, Ordering::Relaxed);
        // From here the permit gives the place back on every path.
        let permit = QuotaPermit(state);
        let state = &permit.0;
        if let Some(max) = limits.max_concurrent {
            let allowed = share(max, n);
            if in_flight >= allowed {
                let rejection = rejection(state, LimitKind::MaxConcurrent, allowed, max, n, 1);
                return Err(Box::new(state.reject(LimitKind::MaxConcurrent, rejection)));
            }
        }
        if let Some(rate) = limits.rate_per_s {
            let (allowed, burst) = (share(rate, n), share(limits.burst.unwrap_or(rate), n));
            if let Err(wait) = state.bucket.take(self.clock.now_ns(), allowed, burst) {
                let rejection = rejection(
                    state,
                    LimitKind::RatePerS,
                    allowed,
                    rate,
                    n,
                    retry_after_s(wait),
                );
                return Err(Box::new(state.reject(LimitKind::RatePerS, rejection)));
            }
        }
        state.admitted.fetch_add(1, Ordering::Relaxed);
        state
            .admitted_metric
            .get_or_init(
                || metrics::counter!("kgw_project_admitted_total", "project" => state.name.clone()),
            )
            .increment(1);
        Ok(Some(permit))
    }

    /// The state `project` counts against: its own when listed, else (under
    /// `project_default`) its tracked entry, made on first sight.
    fn state_of(&self, project: &str) -> Option<Arc<ProjectState>> {
        if let Some(state) = self.listed.get(project) {
            return Some(state.clone());
        }
        let default = self.default?;
        if let Some(state) = self.unlisted.load().get(project) {
            return Some(state.clone());
        }
        Some(self.track(project, default))
    }

    /// Adds an unlisted project (copy-on-write: readers keep the old map
    /// until the swap), or past the cap counts it under the overflow entry.
    fn track(&self, project: &str, default: QuotaLimits) -> Arc<ProjectState> {
        let _one_writer = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.unlisted.load_full();
        if let Some(state) = current.get(project) {
            return state.clone();
        }
        if current.len() >= self.max_tracked
            && let Some(overflow) = &self.overflow
        {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("kgw_project_quota_overflow_total").increment(1);
            return overflow.clone();
        }
        let state = Arc::new(ProjectState::new(Arc::from(project), default, false));
        let mut next = Unlisted::clone(&current);
        next.insert(state.name.clone(), state.clone());
        self.unlisted.store(Arc::new(next));
        state
    }

    /// `/admin/limits`: the fleet size and, per project, its configured
    /// totals, this gateway's shares, queries in flight and counts.
    pub fn status(&self) -> serde_json::Value {
        let n = self.gateways();
        let unlisted = self.unlisted.load();
        let mut others: Vec<_> = unlisted.values().collect();
        others.sort_by(|a, b| a.name.cmp(&b.name));
        let overflow = self.overflow.iter().filter(|o| {
            o.admitted.load(Ordering::Relaxed) > 0
                || o.rejected.iter().any(|r| r.load(Ordering::Relaxed) > 0)
        });
        let projects: Vec<_> = self
            .listed_order
            .iter()
            .chain(others)
            .chain(overflow)
            .map(|s| project_json(s, n))
            .collect();
        json!({
            "gateways": n,
            "project_default": self.default.map(|d| limits_json(&d, None)),
            "tracked_projects": unlisted.len(),
            "max_tracked_projects": self.max_tracked,
            "overflowed": self.overflowed.load(Ordering::Relaxed),
            "projects": projects,
        })
    }

    /// `kgw_project_in_flight{project}`, refreshed at scrape time so the
    /// data path does not pay for it.
    pub fn export_gauges(&self) {
        let unlisted = self.unlisted.load();
        for state in self
            .listed_order
            .iter()
            .chain(unlisted.values())
            .chain(&self.overflow)
        {
            metrics::gauge!("kgw_project_in_flight", "project" => state.name.clone())
                .set(state.in_flight.load(Ordering::Relaxed) as f64);
        }
        metrics::gauge!("kgw_quota_gateways").set(self.gateways() as f64);
    }
}

fn rejection(
    state: &ProjectState,
    limit: LimitKind,
    allowed: u64,
    configured: u64,
    gateways: usize,
    retry_after_s: u64,
) -> Rejection {
    Rejection {
        project: state.name.clone(),
        limit,
        allowed,
        configured,
        gateways,
        retry_after_s,
    }
}

/// Configured limits, or (with `gateways`) this gateway's shares of them.
fn limits_json(limits: &QuotaLimits, gateways: Option<usize>) -> serde_json::Value {
    let of = |v: Option<u64>| v.map(|v| gateways.map_or(v, |n| share(v, n)));
    json!({
        "max_concurrent": of(limits.max_concurrent),
        "rate_per_s": of(limits.rate_per_s),
        "burst": of(limits.burst),
    })
}

fn project_json(state: &ProjectState, gateways: usize) -> serde_json::Value {
    let rejected = |kind: LimitKind| state.rejected[kind.index()].load(Ordering::Relaxed);
    json!({
        "name": &*state.name,
        "listed": state.listed,
        "configured": limits_json(&state.limits, None),
        "allowed": limits_json(&state.limits, Some(gateways)),
        "in_flight": state.in_flight.load(Ordering::Relaxed),
        "admitted": state.admitted.load(Ordering::Relaxed),
        "rejected": {
            "max_concurrent": rejected(LimitKind::MaxConcurrent),
            "rate_per_s": rejected(LimitKind::RatePerS),
        },
    })
}
