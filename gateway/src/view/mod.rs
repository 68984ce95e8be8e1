//! The cluster view: what discovery knows about the Kylin nodes, published as
//! immutable snapshots. Discovery providers build a [`ClusterView`] and hand it
//! to a [`ViewPublisher`]; the data path reads the current [`Snapshot`] with one
//! atomic load, never a lock. Per-node runtime state (in-flight count, passive
//! health) lives in [`NodeState`] and survives view updates, keyed by node id.

mod endpoint;
mod node;
mod publish;
mod request_counters;
mod window;

pub use endpoint::{Endpoint, endpoint};
pub use node::{Modes, Node, NodeState};
pub use publish::{RoutableNode, Snapshot, ViewPublisher, ViewWatch};
pub use request_counters::RequestCounters;
pub use window::{RollingWindow, WindowStats};

use std::sync::Arc;

/// What discovery currently believes about the cluster. Built by a provider,
/// never mutated after it is published.
#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    /// Every instance discovery found, routable or not (disabled, unresolvable
    /// nodes are kept so the admin API can show them).
    pub nodes: Vec<Node>,
    /// Why there is no leader, or how the leader was mapped; shown on
    /// `/admin/leader`.
    pub leader: LeaderInfo,
    /// Where job traffic goes: to the leader, or (a cluster that elects
    /// none) to any job-capable node.
    pub job_routing: JobRouting,
    /// True while the provider has lost its source (ZooKeeper disconnected)
    /// and this is the last view it had.
    pub stale: bool,
    /// Which provider built this view (`static`, `zookeeper`).
    pub source: &'static str,
}

/// Where job traffic goes, as discovery found the cluster to work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JobRouting {
    /// To the elected job-engine leader (KAP 2.4, Kylin 3.x and 4.0, static
    /// config); held while none is elected.
    #[default]
    Leader,
    /// To any healthy job-capable (`all`/`job`) node, by the balancer: the
    /// cluster elects no leader (Kylin 5 owns jobs per project, by epochs in
    /// its metastore, and every job-capable node forwards a project's job
    /// calls to its owner). Held while no such node is known.
    AnyJobNode,
}

impl JobRouting {
    /// For `/admin/leader`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobRouting::Leader => "leader",
            JobRouting::AnyJobNode => "any-job-node",
        }
    }
}

/// The job-engine leader as discovery sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderInfo {
    /// Id of the node that leads, if one was mapped to a discovered instance.
    pub node_id: Option<Arc<str>>,
    /// The election znode's raw participant id (`host:port`, a bare IP, ...).
    pub participant: Option<String>,
    /// The election znode name (e.g. `_c_<uuid>-lock-0000000003`).
    pub znode: Option<String>,
    /// Human-readable reason when `node_id` is `None`, or a note on how an
    /// ambiguous mapping was resolved.
    pub reason: Option<String>,
}

impl ClusterView {
    /// The node marked as leader, if any.
    pub fn leader_node(&self) -> Option<&Node> {
        let id = self.leader.node_id.as_deref()?;
        self.nodes.iter().find(|n| &*n.id == id)
    }
}

#[cfg(test)]
mod tests;
