//! The event timeline: a bounded in-memory ring of what happened to the
//! gateway's picture of the cluster (view changes with nodes added and
//! removed, leader changes and how long the cluster was leaderless, node
//! ejections and re-admissions, ZooKeeper session states, plugin and
//! certificate reloads), each with a sequence number and a wall-clock
//! timestamp. `GET /admin/events?since=SEQ` serves it and every event is
//! also logged at `info`. Events are rare: recording takes a mutex, and
//! nothing on the per-request path records except an ejection.
//! View and leader events are derived by [`watch_views`], which diffs
//! consecutive published snapshots.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};

use crate::balance::health::now_ms;
use crate::view::{Snapshot, ViewPublisher};

/// How many events the process-wide ring keeps.
pub const CAPACITY: usize = 1024;

/// What kind of thing happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A new view: nodes added, removed, changed, or stale/fresh.
    View,
    /// The job-engine leader changed (or was lost).
    Leader,
    /// A node was ejected by passive health checking.
    Ejected,
    /// An ejected node's ejection ran out: it takes traffic again.
    Readmitted,
    /// The ZooKeeper session changed state.
    Zookeeper,
    /// A plugin was loaded, reloaded, or failed to reload.
    Plugin,
    /// TLS certificates were reloaded (or failed to).
    Certificate,
}

/// One entry of the timeline.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Increases by one per event, from 1.
    pub seq: u64,
    /// Wall-clock milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub kind: Kind,
    /// One line for a human.
    pub message: String,
    /// Structured details (node ids, old and new leader, reason, ...).
    pub detail: Value,
}

/// A bounded ring of events.
#[derive(Debug)]
pub struct Events {
    capacity: usize,
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    last_seq: u64,
    entries: VecDeque<Event>,
}

impl Events {
    pub fn new(capacity: usize) -> Events {
        Events {
            capacity: capacity.max(1),
            ring: Mutex::new(Ring::default()),
        }
    }

    /// Appends an event (dropping the oldest when full), logs it at `info`,
    /// and returns its sequence number.
    pub fn record(&self, kind: Kind, message: impl Into<String>, detail: Value) -> u64 {
        let message = message.into();
        tracing::info!(event = ?kind, %detail, "{message}");
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.last_seq += 1;
        let seq = ring.last_seq;
        if ring.entries.len() == self.capacity {
            ring.entries.pop_front();
        }
        ring.entries.push_back(Event {
            seq,
            time_ms,
            kind,
            message,
            detail,
        });
        seq
    }

    /// Events newer than `seq`, oldest first.
    pub fn since(&self, seq: u64) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let start = ring.entries.partition_point(|e| e.seq <= seq);
        ring.entries.range(start..).cloned().collect()
    }

    /// `/admin/events`: the events newer than `since`, and the last
    /// sequence number (for the next poll).
    pub fn json(&self, since: u64) -> Value {
        let events = self.since(since);
        let last_seq = self.ring.lock().unwrap_or_else(|e| e.into_inner()).last_seq;
        json!({ "last_seq": last_seq, "events": events })
    }
}

/// The process-wide ring that every part of the gateway records into.
pub fn global() -> &'static Events {
    static EVENTS: OnceLock<Events> = OnceLock::new();
    EVENTS.get_or_init(|| Events::new(CAPACITY))
}

/// Records into the [`global`] ring.
pub fn record(kind: Kind, message: impl Into<String>, detail: Value) -> u64 {
    global().record(kind, message, detail)
}

/// Records a ZooKeeper session state change and remembers it as the
/// session's current state (for `/admin/view`).
pub fn zookeeper_session(state: &str, message: impl Into<String>) {
    *zookeeper_cell().lock().unwrap_or_else(|e| e.into_inner()) = Some(state.to_owned());
    record(Kind::Zookeeper, message, json!({ "state": state }));
}

/// The ZooKeeper session's last recorded state; `None` without ZooKeeper
/// discovery.
pub fn zookeeper_state() -> Option<String> {
    zookeeper_cell()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

fn zookeeper_cell() -> &'static Mutex<Option<String>> {
    static STATE: OnceLock<Mutex<Option<String>>> = OnceLock::new();
    STATE.get_or_init(|| Mutex::new(None))
}

/// What [`ViewDiff`] remembers of a snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
struct Seen {
    version: u64,
    /// Node id → advertised `host:port`.
    nodes: BTreeMap<Arc<str>, Arc<str>>,
    /// Ids of nodes that cannot take traffic, with why.
    unroutable: BTreeMap<Arc<str>, &'static str>,
    leader: Option<Arc<str>>,
    stale: bool,
}

impl Seen {
    fn of(snapshot: &Snapshot) -> Seen {
        Seen {
            version: snapshot.version,
            nodes: snapshot
                .nodes
                .iter()
                .map(|n| (n.node.id.clone(), n.label.clone()))
                .collect(),
            unroutable: snapshot
                .nodes
                .iter()
                .filter_map(|n| {
                    let why = if !n.node.enabled {
                        "disabled"
                    } else if n.node.addr.is_none() {
                        "unresolvable"
                    } else {
                        return None;
                    };
                    Some((n.node.id.clone(), why))
                })
                .collect(),
            leader: snapshot.leader.map(|i| snapshot.nodes[i].node.id.clone()),
            stale: snapshot.view.stale,
        }
    }
}

/// Turns consecutive snapshots into view and leader events, and notices
/// ejections running out.
#[derive(Debug, Default)]
pub struct ViewDiff {
    seen: Option<Seen>,
    /// When the cluster lost its leader (or when watching began without
    /// one).
    leaderless_since: Option<Instant>,
    /// Ids of nodes that were ejected at the last look.
    ejected: BTreeSet<Arc<str>>,
}

impl ViewDiff {
    /// Compares `snapshot` with the last one seen and records what changed
    /// into `events`.
    pub fn observe(&mut self, snapshot: &Snapshot, events: &Events, now: Instant) {
        self.readmissions(snapshot, events);
        let next = Seen::of(snapshot);
        let Some(prev) = self.seen.replace(next.clone()) else {
            self.first_view(snapshot, &next, events, now);
            return;
        };
        if prev.version == next.version {
            return;
        }
        view_changes(snapshot, &prev, &next, events);
        if prev.leader != next.leader {
            self.leader_change(snapshot, &prev, &next, events, now);
        }
    }

    /// The first snapshot: what the view holds, and since when it has no
    /// leader if it has none.
    fn first_view(&mut self, snapshot: &Snapshot, next: &Seen, events: &Events, now: Instant) {
        if snapshot.has_view {
            let leader = next.leader.as_deref();
            events.record(
                Kind::View,
                format!(
                    "view v{} from {}: {} node(s), leader {}",
                    next.version,
                    snapshot.view.source,
                    next.nodes.len(),
                    leader.unwrap_or("none")
                ),
                json!({"version": next.version, "source": snapshot.view.source,
                       "added": next.nodes.keys().map(|k| &**k).collect::<Vec<_>>(),
                       "leader": leader}),
            );
        }
        if next.leader.is_none() {
            self.leaderless_since = Some(now);
        }
    }

    /// A new leader (with how long the cluster went without one), or the
    /// leader lost (and why).
    fn leader_change(
        &mut self,
        snapshot: &Snapshot,
        prev: &Seen,
        next: &Seen,
        events: &Events,
        now: Instant,
    ) {
        let old = prev.leader.as_deref();
        match next.leader.as_deref() {
            Some(new) => {
                let leaderless_ms = self
                    .leaderless_since
                    .take()
                    .map(|since| now.saturating_duration_since(since).as_millis() as u64);
                let gap = leaderless_ms
                    .map(|ms| format!(" after {} leaderless", human(ms)))
                    .unwrap_or_default();
                events.record(
                    Kind::Leader,
                    format!(
                        "leader {} → {}{gap}",
                        old.unwrap_or("none"),
                        label(prev, next, new)
                    ),
                    json!({"old": old, "new": new, "leaderless_ms": leaderless_ms}),
                );
            }
            None => {
                self.leaderless_since = Some(now);
                let reason = snapshot.view.leader.reason.as_deref();
                events.record(
                    Kind::Leader,
                    format!(
                        "leader {} lost{}",
                        old.map(|id| label(prev, next, id)).unwrap_or_default(),
                        reason.map(|r| format!(": {r}")).unwrap_or_default()
                    ),
                    json!({"old": old, "new": null, "reason": reason}),
                );
            }
        }
    }

    /// Records nodes whose ejection ran out since the last look.
    fn readmissions(&mut self, snapshot: &Snapshot, events: &Events) {
        let now = now_ms();
        let ejected: BTreeSet<Arc<str>> = snapshot
            .nodes
            .iter()
            .filter(|n| n.state.is_ejected(now))
            .map(|n| n.node.id.clone())
            .collect();
        for node in &snapshot.nodes {
            if self.ejected.contains(&node.node.id) && !ejected.contains(&node.node.id) {
                events.record(
                    Kind::Readmitted,
                    format!("node {} ({}) re-admitted", node.node.id, node.label),
                    json!({"node": &*node.node.id, "address": &*node.label,
                           "reason": "ejection ran out"}),
                );
            }
        }
        self.ejected = ejected;
    }
}

/// Nodes added, removed or newly unroutable, and the view going stale or
/// fresh again, as one view event (none if nothing of that changed).
fn view_changes(snapshot: &Snapshot, prev: &Seen, next: &Seen, events: &Events) {
    let added = only_in(next, prev);
    let removed = only_in(prev, next);
    let unroutable: Vec<Value> = next
        .unroutable
        .iter()
        .filter(|(id, why)| prev.unroutable.get(*id) != Some(why))
        .map(|(id, why)| json!({"id": &**id, "reason": why}))
        .collect();
    let mut parts = Vec::new();
    for (what, ids) in [("added", &added), ("removed", &removed)] {
        if !ids.is_empty() {
            let labels: Vec<String> = ids.iter().map(|id| label(prev, next, id)).collect();
            parts.push(format!("{what} {}", labels.join(", ")));
        }
    }
    if !unroutable.is_empty() {
        parts.push(format!("{} node(s) not routable", unroutable.len()));
    }
    if prev.stale != next.stale {
        parts.push(if next.stale { "stale" } else { "fresh again" }.to_owned());
    }
    if !parts.is_empty() {
        events.record(
            Kind::View,
            format!("view v{}: {}", next.version, parts.join("; ")),
            json!({"version": next.version, "source": snapshot.view.source,
                   "added": added, "removed": removed, "unroutable": unroutable,
                   "stale": next.stale}),
        );
    }
}

/// Ids of the nodes `this` holds and `other` does not.
fn only_in<'a>(this: &'a Seen, other: &Seen) -> Vec<&'a str> {
    this.nodes
        .keys()
        .filter(|id| !other.nodes.contains_key(*id))
        .map(|id| &**id)
        .collect()
}

/// A node as events name it: `id (host:port)`, from the newer snapshot if
/// it is still there.
fn label(prev: &Seen, next: &Seen, id: &str) -> String {
    next.nodes
        .get(id)
        .or_else(|| prev.nodes.get(id))
        .map(|l| format!("{id} ({l})"))
        .unwrap_or_else(|| id.to_owned())
}

fn human(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// Diffs every published snapshot into the [`global`] ring, and looks for
/// ejections running out once a second. Runs until the publisher is gone.
pub async fn watch_views(views: ViewPublisher) {
    let mut watch = views.watch();
    let mut diff = ViewDiff::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        diff.observe(&views.snapshot(), global(), Instant::now());
        tokio::select! {
            changed = watch.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
    }
}

#[cfg(test)]
mod tests;
