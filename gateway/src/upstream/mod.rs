//! Connections to Kylin nodes. Each node endpoint has its own
//! [`NodePool`] of idle HTTP/1.1 connections, carried in the view's
//! snapshot next to the node's health state. A request takes the newest
//! idle connection of its node (or connects: TCP, then TLS for a TLS
//! node), sends on it with hyper's `client::conn::http1`, and its response
//! body puts the connection back when the answer ended cleanly ([`Lease`]).
//! No shared pool map, no URI hashing, no task per returned connection.

mod pool;

pub use pool::{NodePool, Sender, Target, enter_shard, set_shards};

use std::io;
use std::time::{Duration, Instant};

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::Upstream;
use crate::tls::{NodeIo, UpstreamTls};
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
    pub sender: Sender,
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
    /// else (or when none is ready) a new one.
    pub async fn checkout(&self, pool: &NodePool, reuse: bool) -> io::Result<Checkout> {
        if reuse {
            while let Some(mut sender) = pool.take(Instant::now(), self.idle_timeout) {
                if self.ready(&mut sender).await {
                    return Ok(Checkout {
                        sender,
                        reused: true,
                    });
                }
            }
        }
        // Boxed: connecting (TCP, TLS, hyper's handshake) is a large future
        // that a request on a pooled connection never runs; inline, its
        // size would be in every request's future, copied at every move.
        let sender = Box::pin(self.connect(pool.target())).await?;
        Ok(Checkout {
            sender,
            reused: false,
        })
    }

    /// Whether an idle connection can take a request. One just put back
    /// may need its connection task to run once more first.
    async fn ready(&self, sender: &mut Sender) -> bool {
        sender.is_ready()
            || matches!(
                tokio::time::timeout(self.connect_timeout, sender.ready()).await,
                Ok(Ok(()))
            )
    }

    /// Opens a connection to `target` (TCP, then TLS when it has a name),
    /// each step bounded by the connect timeout, and runs it in its own
    /// task.
    async fn connect(&self, target: &Target) -> io::Result<Sender> {
        let timed_out =
            |what: &str| io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"));
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(target.addr))
            .await
            .map_err(|_| timed_out("connect"))??;
        tcp.set_nodelay(true)?;
        let io = match &target.tls_name {
            None => NodeIo::Plain(TokioIo::new(tcp)),
            Some(name) => {
                let stream =
                    tokio::time::timeout(self.connect_timeout, self.tls.connect(tcp, name))
                        .await
                        .map_err(|_| timed_out("TLS handshake"))??;
                NodeIo::Tls(Box::new(TokioIo::new(stream)))
            }
        };
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// A lease on `sender` for one exchange with `pool`'s node.
    pub fn lease(&self, pool: Arc<NodePool>, sender: Sender) -> Lease {
        Lease {
            pool,
            sender,
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

/// A connection in use by one exchange. [`Lease::finish`] puts it back in
/// its node's pool once the answer has been read to its end; dropped
/// instead (the answer broke off, or the client went away mid-body), the
/// connection closes.
pub struct Lease {
    pool: Arc<NodePool>,
    sender: Sender,
    max_idle: usize,
}

impl Lease {
    pub fn finish(self) {
        self.pool.put(self.sender, Instant::now(), self.max_idle);
    }
}

#[cfg(test)]
mod tests;
