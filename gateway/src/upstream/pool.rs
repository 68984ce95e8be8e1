//! Idle HTTP/1.1 connections to one node endpoint, newest first. A pool
//! belongs to the endpoint (address, and TLS name if any) and is carried
//! from snapshot to snapshot with it, so a request finds it on its node
//! without hashing anything. With thread-per-core serving, each serving
//! thread has its own idle list in every pool (its shard): a connection
//! is driven by the thread that opened it and only that thread reuses it,
//! so a request costs no cross-thread wake-up and its lock is uncontended.
//! A lock is held for a push or a pop, never across an await.

use std::cell::Cell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::conn::Conn;

/// How many idle lists each pool has: one per serving thread.
static SHARDS: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// The idle list this thread uses in every pool.
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Gives every pool made from now on `shards` idle lists. Called once at
/// start-up, before the first view is published.
pub fn set_shards(shards: usize) {
    SHARDS.store(shards.max(1), Ordering::Relaxed);
}

/// Makes this serving thread use idle list `shard` of every pool.
pub fn enter_shard(shard: usize) {
    SHARD.with(|s| s.set(shard));
}

/// Where a node's connections go.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub addr: SocketAddr,
    /// The name to verify the node's certificate against (its advertised
    /// host); `None` for plain HTTP.
    pub tls_name: Option<Arc<str>>,
}

/// The idle connections to one node endpoint.
pub struct NodePool {
    target: Target,
    /// One idle list per serving thread. Each is ordered oldest at the
    /// front, newest at the back (taken first: the warmest connection, and
    /// the old ones age out).
    shards: Box<[Mutex<VecDeque<Idle>>]>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl std::fmt::Debug for NodePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodePool")
            .field("target", &self.target)
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl NodePool {
    pub fn new(target: Target) -> NodePool {
        NodePool::with_shards(target, SHARDS.load(Ordering::Relaxed))
    }

    /// A pool with `shards` idle lists (at least one).
    pub fn with_shards(target: Target, shards: usize) -> NodePool {
        let shards = shards.max(1);
        NodePool {
            target,
            shards: (0..shards).map(|_| Mutex::new(VecDeque::new())).collect(),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// This thread's idle list.
    fn idle(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        let shard = SHARD.with(Cell::get) % self.shards.len();
        lock(&self.shards[shard])
    }

    /// The newest idle connection that is still open and has been idle at
    /// most `max_idle_time`. Older ones are dropped on the way (outside the
    /// lock: closing a socket is a syscall).
    pub fn take(&self, now: Instant, max_idle_time: Duration) -> Option<Conn> {
        let mut dropped = Vec::new();
        let found = {
            let mut idle = self.idle();
            loop {
                let Some(mut entry) = idle.pop_back() else {
                    break None;
                };
                if now.saturating_duration_since(entry.since) > max_idle_time {
                    // Everything in front of it is older still.
                    dropped.push(entry);
                    dropped.extend(idle.drain(..));
                    break None;
                }
                if !entry.conn.is_open() {
                    dropped.push(entry);
                    continue;
                }
                break Some(entry.conn);
            }
        };
        drop(dropped);
        found
    }

    /// Keeps a connection whose last exchange ended cleanly, up to
    /// `max_idle` per node (the oldest goes first).
    pub fn put(&self, conn: Conn, now: Instant, max_idle: usize) {
        if max_idle == 0 {
            return;
        }
        let evicted = {
            let mut idle = self.idle();
            let evicted = (idle.len() >= max_idle).then(|| idle.pop_front()).flatten();
            idle.push_back(Idle { conn, since: now });
            evicted
        };
        drop(evicted);
    }

    /// Drops connections idle longer than `max_idle_time`, or closed by the
    /// node, from every shard. Returns how many remain.
    pub fn reap(&self, now: Instant, max_idle_time: Duration) -> usize {
        let mut remaining = 0;
        for shard in &self.shards {
            let mut dropped = Vec::new();
            {
                let mut idle = lock(shard);
                for mut entry in std::mem::take(&mut *idle) {
                    let expired = now.saturating_duration_since(entry.since) > max_idle_time;
                    if expired || !entry.conn.is_open() {
                        dropped.push(entry);
                    } else {
                        idle.push_back(entry);
                    }
                }
                remaining += idle.len();
            }
            drop(dropped);
        }
        remaining
    }

    /// Idle connections in every shard.
    pub fn idle_count(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }
}

fn lock(shard: &Mutex<VecDeque<Idle>>) -> MutexGuard<'_, VecDeque<Idle>> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}
