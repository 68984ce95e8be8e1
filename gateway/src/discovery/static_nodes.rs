//! The `static` provider: nodes and leader listed in config.

use std::sync::Arc;

use super::{Resolver, split_host_port};
use crate::config::StaticDiscovery;
use crate::view::{ClusterView, JobRouting, LeaderInfo, Node};

/// Builds the view for a static node list, resolving every address.
pub async fn static_view(settings: &StaticDiscovery, resolver: &Resolver) -> ClusterView {
    let mut nodes = Vec::with_capacity(settings.nodes.len());
    let mut leader = LeaderInfo {
        reason: Some("no node has leader = true".into()),
        ..Default::default()
    };
    for n in &settings.nodes {
        let (host, port) = split_host_port(&n.address).expect("validated in config");
        let (addr, resolve_error) = match resolver.resolve(host, port).await {
            Ok(addr) => (Some(addr), None),
            Err(e) => (None, Some(Arc::from(e))),
        };
        let id: Arc<str> = n.id.as_str().into();
        if n.leader {
            leader = LeaderInfo {
                node_id: Some(id.clone()),
                participant: Some(n.address.clone()),
                znode: None,
                reason: Some("static: leader = true in config".into()),
            };
        }
        nodes.push(Node {
            id,
            host: host.into(),
            port,
            ssl_port: n.ssl_port,
            modes: n.modes,
            enabled: n.enabled,
            addr,
            resolve_error,
        });
    }
    ClusterView {
        nodes,
        leader,
        job_routing: JobRouting::Leader,
        stale: false,
        source: "static",
    }
}
