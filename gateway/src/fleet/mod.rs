//! The fleet: gateways that share a ZooKeeper know each other and run the
//! same published plugins. Each gateway registers an ephemeral Curator
//! `ServiceInstance` at `<base>/service/kylin_gateway/<id>` ([`record`])
//! carrying its listen addresses, version and the plugins it runs; follows
//! the other records (so `/admin/fleet` lists the live gateways and flags
//! any whose plugins differ, and per-project limits are shared out between
//! them); and follows the pointers of its `source = "zookeeper"` plugins in
//! the plugin store ([`store`]), installing each published version. The
//! fleet uses its own ZooKeeper session, apart from discovery's: its record
//! lives exactly as long as this process's session.
//!
//! [`session`] does the work within one session; this module owns the
//! connection life and the state others read.

pub mod commands;
pub mod record;
mod session;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::FleetZookeeper;
use crate::plugin::PluginChain;
use record::{FleetView, GatewayRecord};

/// Gauge: live gateways in the fleet, as this gateway last read it.
pub const GATEWAYS_METRIC: &str = "kgw_fleet_gateways";

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What this gateway knows of its fleet; shared with the admin API and the
/// limits that are shared out.
pub struct Fleet {
    id: String,
    view: ArcSwap<FleetView>,
    connected: AtomicBool,
    gateways: watch::Sender<usize>,
    /// True once every ZooKeeper plugin's pointer was read (and its version
    /// installed or refused) in some session.
    plugins_synced: watch::Sender<bool>,
}

impl Fleet {
    pub fn new(id: String) -> Arc<Fleet> {
        Arc::new(Fleet {
            id,
            view: ArcSwap::from_pointee(FleetView::default()),
            connected: AtomicBool::new(false),
            gateways: watch::Sender::new(1),
            plugins_synced: watch::Sender::new(false),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `/admin/fleet`.
    pub fn status(&self) -> serde_json::Value {
        let mut json = self
            .view
            .load()
            .to_json(&self.id, self.connected.load(Ordering::Relaxed));
        json["enabled"] = serde_json::Value::Bool(true);
        json
    }

    /// Live gateways (at least 1); changes when one joins or leaves.
    pub fn gateways(&self) -> watch::Receiver<usize> {
        self.gateways.subscribe()
    }

    /// Waits (up to `timeout`) until the ZooKeeper plugins were first read,
    /// so the gateway starts serving with its published routing in place.
    pub async fn wait_plugins_synced(&self, timeout: Duration) -> bool {
        let mut synced = self.plugins_synced.subscribe();
        tokio::time::timeout(timeout, synced.wait_for(|s| *s))
            .await
            .is_ok()
    }

    fn publish(&self, view: FleetView) {
        let gateways = view.gateways();
        metrics::gauge!(GATEWAYS_METRIC).set(view.members.len() as f64);
        self.view.store(Arc::new(view));
        self.gateways
            .send_if_modified(|n| std::mem::replace(n, gateways) != gateways);
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }
}

/// What one gateway brings to the fleet.
pub struct Member {
    pub fleet: Arc<Fleet>,
    pub zookeeper: FleetZookeeper,
    /// The record as registered, before the plugins are filled in.
    pub record: GatewayRecord,
    pub plugins: Option<PluginChain>,
}

/// Registers and follows until `stop` turns true, then removes the record
/// at once (closing the session), so other gateways see this one leave
/// without waiting for the session timeout.
pub async fn run(member: Member, mut stop: watch::Receiver<bool>) {
    let mut state = session::State::new(member);
    let mut backoff = BACKOFF_MIN;
    loop {
        let zk = &state.member.zookeeper;
        let cluster = zk.connect_string();
        let connected = crate::discovery::zookeeper::connect_to(
            &cluster,
            zk.session_timeout,
            zk.connect_timeout,
            zk.digest_auth.as_deref(),
        );
        let client = tokio::select! {
            client = connected => client,
            () = stopped(&mut stop) => return,
        };
        let client = match client {
            Ok(client) => client,
            Err(problem) => {
                tracing::warn!("fleet: cannot connect to ZooKeeper {cluster}: {problem}");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stopped(&mut stop) => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let began = std::time::Instant::now();
        let end = state.follow(&client, &mut stop).await;
        state.member.fleet.set_connected(false);
        match end {
            session::End::Stopped => return,
            session::End::Expired => {
                tracing::warn!("fleet: ZooKeeper session ended; registering again");
            }
        }
        // Sessions that keep failing at once must not become a storm.
        backoff = if began.elapsed() < BACKOFF_MAX {
            (backoff * 2).min(BACKOFF_MAX)
        } else {
            BACKOFF_MIN
        };
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// Shares the per-project limits out between the live gateways, for as
/// long as the fleet is followed: each gateway allows ⌈limit / n⌉.
pub async fn share_limits(
    mut gateways: watch::Receiver<usize>,
    quotas: Arc<crate::quota::ProjectQuotas>,
) {
    loop {
        let live = *gateways.borrow_and_update();
        quotas.set_gateways(live);
        if gateways.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests;
