//! What the provider knows between reads: service directory listings, the
//! parsed instance znodes keyed by path and modification zxid (so a re-read
//! of an unchanged znode costs no parse and no second warning), the election
//! as last read, and resolved addresses per advertised `host:port`. Building
//! a [`ClusterView`] from it is pure; the session module does the reading.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::election::{self, Candidate, Election};
use super::instance::{Instance, parse_instance};
use super::paths::join;
use crate::view::{ClusterView, LeaderInfo, Modes, Node};

/// Counter of instance znodes skipped as malformed (once per znode version).
pub const MALFORMED_METRIC: &str = "kgw_discovery_malformed_znodes_total";

/// An instance znode as last read.
#[derive(Clone, Debug)]
struct Znode {
    /// `mzxid` of the data parsed below: a new version has another.
    mzxid: i64,
    /// Session that created the (ephemeral) znode.
    owner: i64,
    /// `None` when the data was malformed.
    instance: Option<Instance>,
}

/// Where resolving an advertised `host:port` stands.
#[derive(Clone, Debug)]
enum Resolution {
    Pending,
    /// Resolved, and when it was last looked up.
    Resolved(SocketAddr, Instant),
    Failed(Arc<str>, Instant),
}

/// Advertised `host:port`, the key of the resolution cache.
pub type HostKey = (Arc<str>, u16);

/// The provider's knowledge of the cluster.
#[derive(Debug)]
pub struct Known {
    default_mode: Modes,
    /// Children of each service directory (`None` while it does not exist).
    listings: BTreeMap<String, BTreeSet<String>>,
    /// Instance znodes by full path.
    znodes: HashMap<String, Znode>,
    /// `(path, mzxid)` already warned about as malformed.
    warned: HashSet<(String, i64)>,
    pub election: Election,
    hosts: HashMap<HostKey, Resolution>,
}

impl Known {
    pub fn new(default_mode: Modes) -> Known {
        Known {
            default_mode,
            listings: BTreeMap::new(),
            znodes: HashMap::new(),
            warned: HashSet::new(),
            election: Election::Absent,
            hosts: HashMap::new(),
        }
    }

    /// Records a service directory's children (`None`: the directory does
    /// not exist) and forgets instances that left. Returns the children's
    /// full paths.
    pub fn set_children(&mut self, dir: &str, children: Option<Vec<String>>) -> Vec<String> {
        let children: BTreeSet<String> = children.into_iter().flatten().collect();
        let paths: Vec<String> = children.iter().map(|c| join(dir, c)).collect();
        let prefix = join(dir, "");
        self.znodes.retain(|path, _| {
            path.strip_prefix(&prefix)
                .is_none_or(|name| children.contains(name))
        });
        self.warned.retain(|(path, _)| {
            path.strip_prefix(&prefix)
                .is_none_or(|name| children.contains(name))
        });
        self.listings.insert(dir.to_string(), children);
        paths
    }

    /// Stores an instance znode's data, parsing it unless this version is
    /// known. Malformed data is warned about and counted once per version.
    pub fn store_instance(&mut self, path: &str, data: &[u8], mzxid: i64, owner: i64) {
        if self.znodes.get(path).is_some_and(|z| z.mzxid == mzxid) {
            return;
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        let instance = match parse_instance(name, data, self.default_mode) {
            Ok(instance) => Some(instance),
            Err(problem) => {
                if self.warned.insert((path.to_string(), mzxid)) {
                    tracing::warn!(
                        znode = path,
                        mzxid,
                        "skipping malformed instance znode: {problem}"
                    );
                    metrics::counter!(MALFORMED_METRIC).increment(1);
                }
                None
            }
        };
        self.znodes.insert(
            path.to_string(),
            Znode {
                mzxid,
                owner,
                instance,
            },
        );
    }

    /// Forgets an instance znode that no longer exists.
    pub fn remove_instance(&mut self, path: &str) {
        self.znodes.remove(path);
    }

    /// Whether a listed instance's data has been read.
    pub fn has_instance(&self, path: &str) -> bool {
        self.znodes.contains_key(path)
    }

    /// Advertised addresses with no resolution started yet.
    pub fn unresolved(&self) -> Vec<HostKey> {
        let mut keys: Vec<HostKey> = self
            .instances()
            .map(|(i, _)| (i.host.clone(), i.port))
            .filter(|key| !self.hosts.contains_key(key))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    pub fn mark_pending(&mut self, key: HostKey) {
        self.hosts.insert(key, Resolution::Pending);
    }

    pub fn is_pending(&self) -> bool {
        self.hosts
            .values()
            .any(|r| matches!(r, Resolution::Pending))
    }

    /// Records a resolution. Keeps the cache from growing without bound
    /// while keeping hosts that come and go (a restarting node) cached.
    /// A failed refresh keeps the address already known: DNS flapping must
    /// not take a working node out of routing.
    pub fn resolved(&mut self, key: HostKey, result: Result<SocketAddr, String>) {
        if result.is_err() && matches!(self.hosts.get(&key), Some(Resolution::Resolved(..))) {
            return;
        }
        let resolution = match result {
            Ok(addr) => Resolution::Resolved(addr, Instant::now()),
            Err(e) => Resolution::Failed(e.into(), Instant::now()),
        };
        self.hosts.insert(key, resolution);
        if self.hosts.len() > 4 * self.znodes.len() + 64 {
            let live: HashSet<HostKey> = self
                .instances()
                .map(|(i, _)| (i.host.clone(), i.port))
                .collect();
            self.hosts.retain(|key, _| live.contains(key));
        }
    }

    /// Forgets failed resolutions older than `age` so they are retried.
    /// Returns whether any was forgotten.
    pub fn forget_failures(&mut self, age: Duration) -> bool {
        let before = self.hosts.len();
        self.hosts.retain(|_, r| match r {
            Resolution::Failed(_, at) => at.elapsed() < age,
            _ => true,
        });
        self.hosts.len() != before
    }

    /// Resolved hosts looked up longer than `age` ago, to look up again in
    /// the background (their current address stays in use meanwhile: a node
    /// that moved to another IP is followed without a gap).
    pub fn due_for_refresh(&mut self, age: Duration) -> Vec<HostKey> {
        let mut due = Vec::new();
        for (key, resolution) in &mut self.hosts {
            if let Resolution::Resolved(_, at) = resolution
                && at.elapsed() >= age
            {
                *at = Instant::now();
                due.push(key.clone());
            }
        }
        due
    }

    /// Instances in a deterministic order (by path), each with its owner
    /// session. The first registration of an id wins when the `auto`
    /// layout sees one id under both service names.
    fn instances(&self) -> impl Iterator<Item = (&Instance, i64)> {
        let mut by_path: Vec<(&String, &Znode)> = self.znodes.iter().collect();
        by_path.sort_by(|a, b| a.0.cmp(b.0));
        let mut seen = HashSet::new();
        by_path.into_iter().filter_map(move |(_, z)| {
            let instance = z.instance.as_ref()?;
            seen.insert(instance.id.clone())
                .then_some((instance, z.owner))
        })
    }

    /// The view to publish, nodes sorted by id.
    pub fn build_view(
        &self,
        pinned_leader: Option<&str>,
        election_path: &str,
        stale: bool,
    ) -> ClusterView {
        let mut owned: Vec<(Node, i64)> = self
            .instances()
            .map(|(instance, owner)| (self.node(instance), owner))
            .collect();
        owned.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        let candidates: Vec<Candidate<'_>> = owned
            .iter()
            .map(|(node, owner)| Candidate {
                node,
                owner: *owner,
            })
            .collect();
        let leader: LeaderInfo =
            election::leader_info(&self.election, &candidates, pinned_leader, election_path);
        ClusterView {
            nodes: owned.into_iter().map(|(node, _)| node).collect(),
            leader,
            stale,
            source: "zookeeper",
        }
    }

    fn node(&self, instance: &Instance) -> Node {
        let key = (instance.host.clone(), instance.port);
        let (addr, resolve_error) = match self.hosts.get(&key) {
            Some(Resolution::Resolved(addr, _)) => (Some(*addr), None),
            Some(Resolution::Failed(error, _)) => (None, Some(error.clone())),
            Some(Resolution::Pending) | None => {
                (None, Some(format!("resolving '{}'", instance.host).into()))
            }
        };
        Node {
            id: instance.id.clone(),
            host: instance.host.clone(),
            port: instance.port,
            ssl_port: instance.ssl_port,
            modes: instance.modes,
            enabled: instance.enabled,
            addr,
            resolve_error,
        }
    }
}
