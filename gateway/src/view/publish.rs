//! Publishing views: discovery pushes a [`ClusterView`], the publisher turns it
//! into a routing [`Snapshot`] and swaps it in atomically.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::endpoint::endpoint;
use super::{ClusterView, JobRouting, Node, NodeState, RequestCounters};
use crate::balance::HashRing;
use crate::upstream::{NodePool, Target};

/// One node of a snapshot with the state the data path updates.
#[derive(Debug)]
pub struct RoutableNode {
    pub node: Node,
    pub state: Arc<NodeState>,
    /// `host:port` as advertised: the `upstream` label in metrics and logs.
    pub label: Arc<str>,
    /// Opaque value of the gateway's affinity cookie for this node.
    pub affinity_tag: Arc<str>,
    /// The authority of upstream request URIs, once resolved: `ip:port`,
    /// or for a TLS node `host@ip:tls_port` (see [`endpoint`]).
    pub authority: Option<http::uri::Authority>,
    /// Reached over TLS (`https` URIs).
    pub tls: bool,
    /// Idle connections to this node's endpoint, once resolved. Carried
    /// over while the endpoint stays the same.
    pub pool: Option<Arc<NodePool>>,
    /// `kgw_requests_total` handles labelled with this node's `label`.
    pub requests: Arc<RequestCounters>,
}

/// An immutable routing table derived from one [`ClusterView`].
#[derive(Debug)]
pub struct Snapshot {
    /// Increases with every publish (including stale-flag changes).
    pub version: u64,
    pub view: Arc<ClusterView>,
    /// Same order as `view.nodes`.
    pub nodes: Vec<RoutableNode>,
    /// Indices into `nodes` of routable nodes that serve queries.
    pub query_nodes: Vec<usize>,
    /// Index into `nodes` of the routable job-engine leader.
    pub leader: Option<usize>,
    /// Indices into `nodes` of routable job-capable nodes: where job
    /// traffic goes when `view.job_routing` is [`JobRouting::AnyJobNode`].
    pub job_nodes: Vec<usize>,
    /// Consistent-hash ring over `query_nodes`.
    pub ring: HashRing,
    /// False until a provider published its first view.
    pub has_view: bool,
    pub published_at: SystemTime,
}

impl Snapshot {
    fn empty() -> Snapshot {
        Snapshot {
            version: 0,
            view: Arc::new(ClusterView::default()),
            nodes: Vec::new(),
            query_nodes: Vec::new(),
            leader: None,
            job_nodes: Vec::new(),
            ring: HashRing::build(&[], &[]),
            has_view: false,
            published_at: SystemTime::now(),
        }
    }

    /// The routing table of `view`, whose nodes are `nodes` (same order):
    /// which serve queries and jobs, the routable leader, the hash ring.
    fn index(version: u64, view: ClusterView, nodes: Vec<RoutableNode>) -> Snapshot {
        let serving = |serves: fn(&Node) -> bool| -> Vec<usize> {
            nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.node.routable() && serves(&n.node))
                .map(|(i, _)| i)
                .collect()
        };
        let query_nodes = serving(|n| n.modes.query);
        let job_nodes = serving(|n| n.modes.job);
        let leader = view
            .leader
            .node_id
            .as_deref()
            .and_then(|id| nodes.iter().position(|n| &*n.node.id == id))
            .filter(|&i| nodes[i].node.routable());
        let ring_ids: Vec<&str> = query_nodes.iter().map(|&i| &*nodes[i].node.id).collect();
        let ring = HashRing::build(&ring_ids, &query_nodes);
        Snapshot {
            version,
            view: Arc::new(view),
            nodes,
            query_nodes,
            leader,
            job_nodes,
            ring,
            has_view: true,
            published_at: SystemTime::now(),
        }
    }

    /// Ready to serve: at least one routable node serves queries.
    pub fn ready(&self) -> bool {
        !self.query_nodes.is_empty()
    }

    /// Whether job traffic has somewhere to go: the leader, or for a
    /// cluster without election any job-capable node.
    pub fn routes_jobs(&self) -> bool {
        match self.view.job_routing {
            JobRouting::Leader => self.leader.is_some(),
            JobRouting::AnyJobNode => !self.job_nodes.is_empty(),
        }
    }

    /// Finds a node by id.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| &*n.node.id == id)
    }
}

/// What a publish carries over from the previous snapshot.
#[derive(Default)]
struct Carried {
    states: HashMap<Arc<str>, Arc<NodeState>>,
    pools: HashMap<Target, Arc<NodePool>>,
}

impl Carried {
    /// `view`'s nodes with their state and connection pool: carried over
    /// by node id and endpoint, new for newcomers; those of nodes that left
    /// are dropped.
    fn routable_nodes(&mut self, view: &ClusterView, tls_everywhere: bool) -> Vec<RoutableNode> {
        let Carried { states, pools } = self;
        let nodes: Vec<RoutableNode> = view
            .nodes
            .iter()
            .map(|node| {
                let state = states
                    .entry(node.id.clone())
                    .or_insert_with(|| Arc::new(NodeState::default()))
                    .clone();
                let label: Arc<str> = node.advertised().into();
                let endpoint = endpoint(node, tls_everywhere);
                let pool = endpoint.as_ref().map(|e| {
                    pools
                        .entry(e.target.clone())
                        .or_insert_with(|| Arc::new(NodePool::new(e.target.clone())))
                        .clone()
                });
                RoutableNode {
                    pool,
                    tls: endpoint.as_ref().is_some_and(|e| e.tls),
                    authority: endpoint.map(|e| e.authority),
                    requests: Arc::new(RequestCounters::new(label.clone())),
                    label,
                    affinity_tag: affinity_tag(&node.id).into(),
                    node: node.clone(),
                    state,
                }
            })
            .collect();
        states.retain(|id, _| view.nodes.iter().any(|n| &n.id == id));
        pools.retain(|target, _| {
            nodes
                .iter()
                .any(|n| n.pool.as_ref().is_some_and(|p| p.target() == target))
        });
        nodes
    }
}

/// Receives a notification whenever a new snapshot is published.
pub type ViewWatch = watch::Receiver<u64>;

/// Where discovery providers publish. Cheap to clone.
#[derive(Clone)]
pub struct ViewPublisher {
    inner: Arc<Shared>,
}

struct Shared {
    current: ArcSwap<Snapshot>,
    /// Node state by id, and connection pools by endpoint; touched only
    /// when publishing, never per request.
    carried: Mutex<Carried>,
    changed: watch::Sender<u64>,
    /// `upstream.tls`: every node over TLS, not only those with an
    /// `sslPort`.
    tls_everywhere: bool,
}

impl Default for ViewPublisher {
    fn default() -> Self {
        Self::new()
    }
}

impl ViewPublisher {
    pub fn new() -> ViewPublisher {
        ViewPublisher::with_upstream_tls(false)
    }

    /// A publisher whose snapshots reach every node over TLS when
    /// `tls_everywhere` (`upstream.tls`), else only nodes with an `sslPort`.
    pub fn with_upstream_tls(tls_everywhere: bool) -> ViewPublisher {
        let (changed, _) = watch::channel(0);
        ViewPublisher {
            inner: Arc::new(Shared {
                current: ArcSwap::from_pointee(Snapshot::empty()),
                carried: Mutex::new(Carried::default()),
                changed,
                tls_everywhere,
            }),
        }
    }

    /// The current snapshot: one atomic load, no lock.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.current.load_full()
    }

    /// Subscribes to publish notifications (the value is the version).
    pub fn watch(&self) -> ViewWatch {
        self.inner.changed.subscribe()
    }

    /// Replaces the view. Node state is carried over by node id, and
    /// connection pools by endpoint; those of nodes that left are dropped
    /// (closing their idle connections).
    pub fn publish(&self, view: ClusterView) {
        let mut carried = self.inner.carried.lock().unwrap_or_else(|e| e.into_inner());
        let nodes = carried.routable_nodes(&view, self.inner.tls_everywhere);
        let version = self.inner.current.load().version + 1;
        self.inner
            .current
            .store(Arc::new(Snapshot::index(version, view, nodes)));
        drop(carried);
        metrics::counter!("kgw_view_updates_total").increment(1);
        self.inner.changed.send_replace(version);
    }

    /// Marks the current view stale (source lost) or fresh again, keeping
    /// its nodes.
    pub fn set_stale(&self, stale: bool) {
        let current = self.snapshot();
        if current.view.stale == stale || !current.has_view {
            return;
        }
        let mut view = (*current.view).clone();
        view.stale = stale;
        self.publish(view);
    }

    /// Waits until `accept` holds for a published snapshot, or `deadline`
    /// passes. Returns the snapshot that satisfied it.
    pub async fn wait_for(
        &self,
        deadline: Instant,
        mut accept: impl FnMut(&Snapshot) -> bool,
    ) -> Option<Arc<Snapshot>> {
        let mut watch = self.watch();
        loop {
            let snapshot = self.snapshot();
            if accept(&snapshot) {
                return Some(snapshot);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left == Duration::ZERO {
                return None;
            }
            match tokio::time::timeout(left, watch.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }
}

/// The affinity cookie value for a node: a short hash of its id, so the
/// cookie does not leak internal addresses.
pub fn affinity_tag(id: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(id.as_bytes()))
}
