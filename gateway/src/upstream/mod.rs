//! Connections to Kylin nodes. Each node endpoint has its own
//! [`NodePool`] of idle HTTP/1.1 connections, carried in the view's
//! snapshot next to the node's health state. A request takes the newest
//! idle connection of its node (or connects: TCP, then TLS for a TLS
//! node), sends on it from the request's own task ([`Conn`]), and its
//! response body puts the connection back when the answer ended cleanly
//! ([`Lease`]).
//! No shared pool map, no URI hashing, no task per connection.

mod conn;
pub mod fields;
mod pool;
pub mod wire;

pub use conn::{BodyError, Conn, SendError, UpstreamBody};
pub use pool::{NodePool, Target, enter_shard, set_shards};

use std::io;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::config::Upstream;
use crate::tls::{NodeStream, UpstreamTls};
use crate::view::ViewPublisher;

use std::sync::Arc;

/// How the gateway opens and keeps connections to nodes.
#[derive(Clone)]
pub struct Upstreams {
    connect_timeout: Duration,
    tls: UpstreamTls,
    /// `upstream.pool_idle_timeout_ms`.
    idle_timeout: Duration,
    /// `upstream.pool_max_idle_per_host`: idle connections kept per node.
    max_idle: usize,
}

/// A connection ready for one request.
pub struct Checkout {
    pub conn: Conn,
    /// Taken from the pool (it may have been closed by its node while
    /// idle), rather than opened for this request.
    pub reused: bool,
}

impl Upstreams {
    pub fn new(config: &Upstream, tls: UpstreamTls) -> Upstreams {
        Upstreams {
            connect_timeout: config.connect_timeout,
            tls,
            idle_timeout: config.pool_idle_timeout,
            max_idle: config.pool_max_idle_per_host,
        }
    }

    /// A connection to `pool`'s node: its newest idle one when `reuse`,
    /// else (or when none is open) a new one. `now`: the caller's clock
    /// reading, for the idle connections' age.
    pub async fn checkout(
        &self,
        pool: &NodePool,
        reuse: bool,
        now: Instant,
    ) -> io::Result<Checkout> {
        if reuse && let Some(conn) = pool.take(now, self.idle_timeout) {
            return Ok(Checkout { conn, reused: true });
        }
        // Boxed: connecting (TCP, TLS) is a large future that a request on
        // a pooled connection never runs; inline, its size would be in
        // every request's future, copied at every move.
        let conn = Box::pin(self.connect(pool.target())).await?;
        Ok(Checkout {
            conn,
            reused: false,
        })
    }

    /// Opens a connection to `target` (TCP, then TLS when it has a name),
    /// each step bounded by the connect timeout.
    async fn connect(&self, target: &Target) -> io::Result<Conn> {
        let timed_out =
            |what: &str| io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"));
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(target.addr))
            .await
            .map_err(|_| timed_out("connect"))??;
        tcp.set_nodelay(true)?;
        let stream = match &target.tls_name {
            None => NodeStream::Plain(tcp),
            Some(name) => {
                let stream =
                    tokio::time::timeout(self.connect_timeout, self.tls.connect(tcp, name))
                        .await
                        .map_err(|_| timed_out("TLS handshake"))??;
                NodeStream::Tls(Box::new(stream))
            }
        };
        Ok(Conn::new(stream))
    }

    /// A lease on `pool` for one exchange with its node.
    pub fn lease(&self, pool: Arc<NodePool>) -> Lease {
        Lease {
            pool,
            max_idle: self.max_idle,
        }
    }

    /// Drops idle connections past the idle timeout (or closed by their
    /// node) in every pool of the current view, periodically. A pool that
    /// sees traffic ages its connections out as it goes; this is for those
    /// that do not.
    pub async fn reap_idle(self, views: ViewPublisher) {
        let period = (self.idle_timeout / 2).max(Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Instant::now();
            for node in &views.snapshot().nodes {
                if let Some(pool) = &node.pool {
                    pool.reap(now, self.idle_timeout);
                }
            }
        }
    }
}

/// Where a connection in use by one exchange goes back. [`Lease::finish`]
/// puts it in its node's pool once the answer has been read to its end;
/// a connection not given back (the answer broke off, or the client went
/// away mid-body) closes when dropped.
pub struct Lease {
    pool: Arc<NodePool>,
    max_idle: usize,
}

impl Lease {
    /// Gives `conn` back, idle from `now` (the caller's clock reading).
    pub fn finish(self, conn: Conn, now: Instant) {
        self.pool.put(conn, now, self.max_idle);
    }
}

#[cfg(test)]
mod tests;
