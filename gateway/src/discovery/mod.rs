//! Discovery providers: where the cluster view comes from. A provider runs
//! as a task and pushes whole [`ClusterView`](crate::view::ClusterView)s to the [`ViewPublisher`]; it
//! never touches the data path. `static` lists nodes in config; `zookeeper`
//! follows Curator's service discovery and leader election.

pub mod leader_check;
pub mod resolve;
mod static_nodes;
pub mod zookeeper;

pub use resolve::Resolver;
pub use static_nodes::static_view;

use crate::config::{Discovery, Layout};
use crate::tls::UpstreamTls;
use crate::view::ViewPublisher;
use leader_check::LeaderCheckStatus;

/// Runs the configured provider until the process exits, and for
/// ZooKeeper discovery the leader drift check beside it (reporting to
/// `leader_check`, asking over `upstream_tls` where a leader serves TLS).
pub async fn run(
    config: Discovery,
    publisher: ViewPublisher,
    leader_check: LeaderCheckStatus,
    upstream_tls: UpstreamTls,
) {
    match config {
        Discovery::Static(settings) => {
            let resolver = Resolver::new(settings.address_map.clone());
            let view = static_view(&settings, &resolver).await;
            publisher.publish(view);
        }
        Discovery::Zookeeper(settings) => {
            if settings.layout == Layout::Kylin5 {
                leader_check.set_not_applicable(zookeeper::kylin5::NO_ELECTION);
            } else if !settings.leader_check_interval.is_zero() {
                tokio::spawn(leader_check::run(
                    settings.leader_check_interval,
                    settings.layout,
                    publisher.clone(),
                    leader_check,
                    upstream_tls,
                ));
            }
            zookeeper::run(settings, publisher).await
        }
    }
}

/// Splits `host:port` (or `[v6]:port`) into host and port. Port 0 is no
/// port: nothing can be reached there.
pub fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(':') && !address.starts_with('[') {
        return None;
    }
    let port = port.parse().ok().filter(|&port| port != 0)?;
    Some((host, port))
}

/// Whether `host` is a plain host name or IPv4 address: ASCII letters and
/// digits, dots and dashes, as DNS names are.
pub fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}
