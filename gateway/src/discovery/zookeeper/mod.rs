//! The `zookeeper` provider: follows Curator service discovery and
//! `LeaderSelector` election exactly as Kylin and KAP write them (layouts,
//! JSON and election names in `../shared/kylin-zookeeper.md`), and Kylin
//! 5's Spring Cloud ZooKeeper registrations, with one-shot watches only, so
//! ZooKeeper 3.4 ensembles work too. [`paths`] maps a layout to znode
//! paths, [`instance`] parses instance JSON, [`kylin5`] parses Kylin 5's and
//! decides whether the cluster elects at all, [`election`] picks and maps
//! the leader, [`state`] holds what is known and builds the
//! view, [`session`] reads and watches within one session; this module owns
//! the connection life.
//!
//! # Notable behaviors
//! * **Container parents.** `service/<name>`, `services/<mode>` and
//!   `job_engine/leader` are Curator CONTAINER znodes: absent before the
//!   first registration and deleted by the server about a minute after the
//!   last child leaves. A
//!   missing directory is an empty one with an exists-watch on it; a children
//!   watch that fires because the directory was deleted re-arms as an
//!   exists-watch ([ZOOKEEPER-2163] containers).
//! * **Disconnected is not expired.** While disconnected the last view keeps
//!   serving, marked stale; the client re-registers its watches on reconnect
//!   and the server fires those whose znodes changed meanwhile
//!   ([ZOOKEEPER-43]); directories are re-listed anyway.
//! * **Expiry needs a new client.** An expired session (or one the client
//!   gives up on after the session timeout without a server) cannot be
//!   reused: a new client is connected and everything re-read and
//!   re-watched (the last view serves, stale, meanwhile); instance data is
//!   re-parsed only where its `mzxid` changed, so a malformed znode is not
//!   warned about twice.
//! * **A suspended leader still looks like one.** A Curator leader whose
//!   connection is SUSPENDED stops leading at once, but its lock znode lives
//!   until it reconnects (then releases and requeues) or its session
//!   expires; meanwhile the gateway still names it. Kylin accepts job calls
//!   on any node (the active job engine picks them up from metadata), so
//!   this costs latency, not correctness. The leader is always the lowest
//!   lock znode, whatever the instances say.
//! * **Re-registration is not a departure.** Curator re-registers an
//!   instance by delete-then-create after a reconnect; a departed instance
//!   stays in the view for `discovery.removal_grace_ms` (default 250) and a
//!   re-created one takes its place without a gap. The grace runs only while
//!   connected (a partition never shrinks the last view) and never delays
//!   leadership, which follows the election znodes alone.
//! * **SIGKILLed nodes linger** until their session expires (Kylin asks for
//!   60–120 s, capped by the server at 20 × tickTime): the gateway's passive
//!   health ejects them from routing meanwhile; discovery cannot know.
//!
//! [ZOOKEEPER-2163]: https://issues.apache.org/jira/browse/ZOOKEEPER-2163
//! [ZOOKEEPER-43]: https://issues.apache.org/jira/browse/ZOOKEEPER-43

pub mod election;
pub mod instance;
pub mod kylin5;
pub mod paths;
mod session;
mod state;

use std::time::Duration;

use zookeeper_client::Client;

use crate::config::ZookeeperSettings;
use crate::view::ViewPublisher;
use session::{Follower, SessionEnd};

pub use state::MALFORMED_METRIC;

/// Gauge: 1 while a ZooKeeper session is connected, else 0.
pub const CONNECTED_METRIC: &str = "kgw_zookeeper_connected";
/// Counter: ZooKeeper sessions established.
pub const SESSIONS_METRIC: &str = "kgw_zookeeper_sessions_total";

/// First and last delay between connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Follows ZooKeeper until the process exits. Until the first session is
/// established nothing is published, so `/readyz` stays false.
pub async fn run(settings: ZookeeperSettings, publisher: ViewPublisher) {
    metrics::gauge!(CONNECTED_METRIC).set(0.0);
    let mut follower = Follower::new(settings, publisher);
    let mut backoff = BACKOFF_MIN;
    let mut attempt: u32 = 0;
    loop {
        let client = match connect(follower.settings()).await {
            Ok(client) => client,
            Err(problem) => {
                attempt += 1;
                let delay = jittered(backoff);
                tracing::warn!(
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot connect to ZooKeeper {}: {problem}",
                    connect_string(follower.settings())
                );
                tokio::time::sleep(delay).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        tracing::info!(
            session = %client.session_id(),
            timeout_ms = client.session_timeout().as_millis() as u64,
            "ZooKeeper session established"
        );
        metrics::counter!(SESSIONS_METRIC).increment(1);
        crate::events::zookeeper_session(
            "connected",
            format!("ZooKeeper session {} established", client.session_id()),
        );
        attempt = 0;
        let began = std::time::Instant::now();
        let end = follower.follow(&client).await;
        follower.lost();
        // A session that ends at once (a server that keeps expiring us)
        // must not turn into a reconnect storm.
        if began.elapsed() < BACKOFF_MAX {
            tokio::time::sleep(jittered(backoff)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        } else {
            backoff = BACKOFF_MIN;
        }
        crate::events::zookeeper_session(
            end.as_str(),
            format!("ZooKeeper session {}; starting a new one", end.as_str()),
        );
        match end {
            SessionEnd::Expired => {
                tracing::warn!("ZooKeeper session expired; starting a new one");
            }
            SessionEnd::Closed => tracing::warn!("ZooKeeper session closed; starting a new one"),
            SessionEnd::AuthFailed => {
                tracing::error!("ZooKeeper rejected discovery.auth; retrying");
                tokio::time::sleep(BACKOFF_MAX).await;
            }
        }
    }
}

/// The connect string with chroot, as the client parses it.
fn connect_string(settings: &ZookeeperSettings) -> String {
    format!(
        "{}{}",
        settings.hosts,
        settings.chroot.as_deref().unwrap_or("")
    )
}

/// One connection attempt: every server once, bounded by `connect_timeout`.
async fn connect(settings: &ZookeeperSettings) -> Result<Client, String> {
    connect_to(
        &connect_string(settings),
        settings.session_timeout,
        settings.connect_timeout,
        settings.digest_auth.as_deref(),
    )
    .await
}

/// One connection attempt to `cluster` (hosts and chroot), with digest
/// credentials `user:pass` if given; also the fleet's.
pub(crate) async fn connect_to(
    cluster: &str,
    session_timeout: Duration,
    connect_timeout: Duration,
    digest_auth: Option<&str>,
) -> Result<Client, String> {
    let mut connector = Client::connector()
        .with_session_timeout(session_timeout)
        .with_fail_eagerly();
    if let Some(credentials) = digest_auth {
        connector = connector.with_auth("digest", credentials.as_bytes());
    }
    match tokio::time::timeout(connect_timeout, connector.connect(cluster)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no session within {} ms",
            connect_timeout.as_millis()
        )),
    }
}

/// `delay` plus up to a quarter more, so gateways do not reconnect in step.
fn jittered(delay: Duration) -> Duration {
    let spread = delay.as_millis() as u64 / 4;
    delay + Duration::from_millis(fastrand::u64(0..=spread))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_kylin5;
