//! Choosing a query-serving node: power-of-two-choices on in-flight requests
//! (default), round-robin, and consistent hashing with bounded loads on a
//! request key. Passive health (ejection) is consulted here, not decided:
//! see [`health`].

pub mod health;
mod ring;

pub use ring::{HashRing, hash_key};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::view::Snapshot;

/// How query and other traffic is spread over query-serving nodes.
#[derive(Debug)]
pub enum Balancer {
    /// Two random eligible nodes, the one with fewer requests in flight wins.
    PowerOfTwoChoices,
    /// Each eligible node in turn.
    RoundRobin(AtomicUsize),
    /// The node owning the key on a hash ring, moving clockwise past nodes
    /// whose in-flight count exceeds `load_factor` × the average. Keeps
    /// Kylin's per-node query cache warm without overloading one node.
    BoundedConsistentHash { load_factor: f64 },
}

/// Nodes one request already failed on, by node id. A request may wait and
/// retry across several snapshots, and a node's place (index) in one
/// snapshot names another node in the next, so only the id identifies a
/// node across them. Empty, and allocation-free, until a request fails.
#[derive(Clone, Debug, Default)]
pub struct Tried {
    ids: Vec<Arc<str>>,
}

impl Tried {
    pub fn insert(&mut self, id: &Arc<str>) {
        if !self.contains(id) {
            self.ids.push(id.clone());
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.iter().any(|tried| **tried == *id)
    }

    /// Whether the node at `index` of `snapshot` was tried.
    pub fn contains_node(&self, snapshot: &Snapshot, index: usize) -> bool {
        !self.ids.is_empty() && self.contains(&snapshot.nodes[index].node.id)
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl Balancer {
    /// Picks among `candidates` (indices into `snapshot.nodes`). `key` is the
    /// request's hash key for consistent hashing (ignored by the others).
    /// Ejected nodes are used only when every untried candidate is ejected:
    /// a degraded answer beats none.
    pub fn pick(
        &self,
        snapshot: &Snapshot,
        candidates: &[usize],
        key: Option<u64>,
        tried: &Tried,
        now_ms: u64,
    ) -> Option<usize> {
        let healthy = |i: &usize| {
            !tried.contains_node(snapshot, *i) && !snapshot.nodes[*i].state.is_ejected(now_ms)
        };
        self.pick_where(snapshot, candidates, key, &healthy)
            .or_else(|| {
                let untried = |i: &usize| !tried.contains_node(snapshot, *i);
                self.pick_where(snapshot, candidates, key, &untried)
            })
    }

    fn pick_where(
        &self,
        snapshot: &Snapshot,
        candidates: &[usize],
        key: Option<u64>,
        eligible: &dyn Fn(&usize) -> bool,
    ) -> Option<usize> {
        let in_flight = |i: usize| snapshot.nodes[i].state.in_flight();
        match self {
            Balancer::PowerOfTwoChoices => power_of_two(candidates, eligible, in_flight),
            Balancer::RoundRobin(next) => {
                let n = candidates.len();
                if n == 0 {
                    return None;
                }
                let start = next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| candidates[(start + k) % n])
                    .find(|i| eligible(i))
            }
            Balancer::BoundedConsistentHash { load_factor } => match key {
                Some(key) => {
                    let total: u64 = candidates.iter().map(|&i| u64::from(in_flight(i))).sum();
                    let n = candidates.len().max(1) as f64;
                    // +1: the request being placed counts toward the load.
                    let cap = (((total + 1) as f64 / n) * load_factor).ceil() as u32;
                    snapshot
                        .ring
                        .walk(key)
                        .filter(|i| eligible(i))
                        .find(|&i| in_flight(i) < cap.max(1))
                        .or_else(|| snapshot.ring.walk(key).find(|i| eligible(i)))
                }
                // No key on this request: spread like P2C.
                None => power_of_two(candidates, eligible, in_flight),
            },
        }
    }
}

fn power_of_two(
    candidates: &[usize],
    eligible: &dyn Fn(&usize) -> bool,
    in_flight: impl Fn(usize) -> u32,
) -> Option<usize> {
    let n = candidates.len();
    if n == 0 {
        return None;
    }
    // Random start, then the first two eligible nodes from a random stride:
    // uniform enough and allocation-free.
    let start = fastrand::usize(..n);
    let mut found = (0..n)
        .map(|k| candidates[(start + k) % n])
        .filter(|i| eligible(i));
    let first = found.next()?;
    let second = if n > 2 {
        let skip = fastrand::usize(..n - 1);
        (0..n)
            .map(|k| candidates[(start + 1 + skip + k) % n])
            .find(|&i| i != first && eligible(&i))
    } else {
        found.next()
    };
    Some(match second {
        Some(second) if in_flight(second) < in_flight(first) => second,
        _ => first,
    })
}

#[cfg(test)]
mod tests;
