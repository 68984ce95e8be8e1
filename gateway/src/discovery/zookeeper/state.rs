//! What the provider knows between reads: service directory listings, the
//! parsed instance znodes keyed by path and modification zxid (so a re-read
//! of an unchanged znode costs no parse and no second warning), the election
//! as last read, resolved addresses per advertised `host:port`, and the
//! instances that left within the removal grace. Building a [`ClusterView`]
//! from it is pure; the session module does the reading and owns the timers.
//!
//! # Removal grace
//! Curator re-registers an instance by delete-then-create after a
//! reconnect. A departed instance therefore stays in the view for
//! `discovery.removal_grace_ms`, and a re-created znode of the same path (or
//! an instance of the same id) takes its place without a gap; only
//! [`Known::expire_departed`] removes it for good. The grace never touches
//! leadership: the leader comes from the election znodes, and a departed
//! instance can be mapped to it only when the lock znode is owned by the
//! very session that registered the instance (the election still says so).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::election::{self, Candidate, Election};
use super::instance::{Instance, MalformedInstance, parse_instance};
use super::kylin5;
use super::paths::{Paths, join};
use crate::config::Layout;
use crate::view::{ClusterView, JobRouting, LeaderInfo, Modes, Node};

/// Counter of instance znodes skipped as malformed (once per znode version).
pub const MALFORMED_METRIC: &str = "kgw_discovery_malformed_znodes_total";
/// Counter of departed instances that came back within the removal grace
/// (a re-registration blip that routing never saw).
pub const REREGISTERED_METRIC: &str = "kgw_discovery_reregistered_within_grace_total";
/// Gauge: departed instances still in the view, in their removal grace.
pub const DEPARTING_METRIC: &str = "kgw_discovery_departing";

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
    /// Which layout is read (decides where job traffic goes).
    layout: Layout,
    /// Kylin 5's `services/<mode>` directories and the mode each gives.
    kylin5_dirs: Vec<(String, Modes)>,
    /// Children of each service directory (empty while it does not exist).
    listings: BTreeMap<String, BTreeSet<String>>,
    /// The service directories that exist (Curator containers come and go).
    present: HashSet<String>,
    /// Instance znodes by full path.
    znodes: HashMap<String, Znode>,
    /// `(path, mzxid)` already warned about as malformed.
    warned: HashSet<(String, i64)>,
    pub election: Election,
    hosts: HashMap<HostKey, Resolution>,
    /// How long a departed instance stays in the view.
    grace: Duration,
    /// Departed instances by full path, each with when it leaves the view.
    departed: HashMap<String, (Znode, Instant)>,
}

impl Known {
    pub fn new(default_mode: Modes) -> Known {
        Known {
            default_mode,
            layout: Layout::Auto,
            kylin5_dirs: Vec::new(),
            listings: BTreeMap::new(),
            present: HashSet::new(),
            znodes: HashMap::new(),
            warned: HashSet::new(),
            election: Election::Absent,
            hosts: HashMap::new(),
            grace: Duration::ZERO,
            departed: HashMap::new(),
        }
    }

    /// Keeps departed instances in the view for `grace` (zero: they leave
    /// at once).
    pub fn with_removal_grace(mut self, grace: Duration) -> Known {
        self.grace = grace;
        self
    }

    /// Reads `layout` at `paths`: Kylin 5's directories give their
    /// instances' modes, and decide where job traffic goes.
    pub fn with_layout(mut self, layout: Layout, paths: &Paths) -> Known {
        self.layout = layout;
        self.kylin5_dirs = paths.kylin5_services.clone();
        self
    }

    /// Records a service directory's children (`None`: the directory does
    /// not exist); instances that left depart (see the module doc). Returns
    /// the children's full paths.
    pub fn set_children(&mut self, dir: &str, children: Option<Vec<String>>) -> Vec<String> {
        if children.is_some() {
            self.present.insert(dir.to_string());
        } else {
            self.present.remove(dir);
        }
        let children: BTreeSet<String> = children.into_iter().flatten().collect();
        let paths: Vec<String> = children.iter().map(|c| join(dir, c)).collect();
        let prefix = join(dir, "");
        let gone: Vec<String> = self
            .znodes
            .keys()
            .filter(|path| {
                path.strip_prefix(&prefix)
                    .is_some_and(|name| !children.contains(name))
            })
            .cloned()
            .collect();
        let now = Instant::now();
        for path in gone {
            self.depart(&path, now);
        }
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
        let instance = match self.parse(path, data) {
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
        self.revive(path, instance.as_ref());
        self.znodes.insert(
            path.to_string(),
            Znode {
                mzxid,
                owner,
                instance,
            },
        );
    }

    /// Parses an instance znode: Spring's form in a Kylin 5 directory (the
    /// directory gives the mode), Curator's Kylin 3.x/KAP form elsewhere.
    fn parse(&self, path: &str, data: &[u8]) -> Result<Instance, MalformedInstance> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        match self.kylin5_dirs.iter().find(|(d, _)| d == dir) {
            Some((_, mode)) => kylin5::parse_spring_instance(name, data, *mode),
            None => parse_instance(name, data, self.default_mode),
        }
    }

    /// Where job traffic goes (see [`kylin5::job_routing`]).
    pub fn job_routing(&self) -> JobRouting {
        let kylin5_seen = self
            .kylin5_dirs
            .iter()
            .any(|(dir, _)| self.present.contains(dir));
        kylin5::job_routing(self.layout, kylin5_seen, &self.election)
    }

    /// An instance znode no longer exists: it departs (see the module doc).
    pub fn remove_instance(&mut self, path: &str) {
        self.depart(path, Instant::now());
    }

    /// Moves a known znode to the departed set until `now` + grace, or
    /// forgets it at once when there is no grace or nothing to route to.
    fn depart(&mut self, path: &str, now: Instant) {
        let Some(znode) = self.znodes.remove(path) else {
            return;
        };
        if self.grace.is_zero() || znode.instance.is_none() {
            return;
        }
        tracing::debug!(
            znode = path,
            grace_ms = self.grace.as_millis() as u64,
            "instance departed; in grace"
        );
        self.departed
            .insert(path.to_string(), (znode, now + self.grace));
    }

    /// A znode was (re-)read: a departed entry of the same path, or of the
    /// same instance id, is superseded by it.
    fn revive(&mut self, path: &str, instance: Option<&Instance>) {
        let id = instance.map(|i| i.id.clone());
        let before = self.departed.len();
        self.departed.retain(|p, (z, _)| {
            p != path && (id.is_none() || z.instance.as_ref().map(|i| &i.id) != id.as_ref())
        });
        if self.departed.len() < before && instance.is_some() {
            tracing::info!(
                znode = path,
                "instance re-registered within the removal grace"
            );
            metrics::counter!(REREGISTERED_METRIC).increment(1);
        }
    }

    /// Forgets departed instances whose grace ended by `now`. Returns
    /// whether any was forgotten (the view changed).
    pub fn expire_departed(&mut self, now: Instant) -> bool {
        let before = self.departed.len();
        self.departed.retain(|_, (_, until)| *until > now);
        self.departed.len() != before
    }

    /// How many departed instances are in their grace.
    pub fn departing(&self) -> usize {
        self.departed.len()
    }

    /// When the next departed instance leaves the view.
    pub fn next_departure(&self) -> Option<Instant> {
        self.departed.values().map(|(_, until)| *until).min()
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

    /// Instances in a deterministic order (live by path, then departed by
    /// path), each with its owner session and whether it departed. The
    /// first registration of an id wins when the `auto` layout sees one id
    /// under both service names; a live one always beats a departed one.
    fn instances(&self) -> impl Iterator<Item = (&Instance, i64)> {
        self.instances_with_departed()
            .map(|(i, owner, _)| (i, owner))
    }

    fn instances_with_departed(&self) -> impl Iterator<Item = (&Instance, i64, bool)> {
        let mut live: Vec<(&String, &Znode)> = self.znodes.iter().collect();
        live.sort_by(|a, b| a.0.cmp(b.0));
        let mut departed: Vec<(&String, &Znode)> =
            self.departed.iter().map(|(p, (z, _))| (p, z)).collect();
        departed.sort_by(|a, b| a.0.cmp(b.0));
        let tagged = live
            .into_iter()
            .map(|(_, z)| (z, false))
            .chain(departed.into_iter().map(|(_, z)| (z, true)));
        let mut seen = HashSet::new();
        tagged.filter_map(move |(z, gone)| {
            let instance = z.instance.as_ref()?;
            seen.insert(instance.id.clone())
                .then_some((instance, z.owner, gone))
        })
    }

    /// The view to publish, nodes sorted by id.
    pub fn build_view(
        &self,
        pinned_leader: Option<&str>,
        election_path: &str,
        stale: bool,
    ) -> ClusterView {
        let mut owned: Vec<(Node, i64, bool)> = self
            .instances_with_departed()
            .map(|(instance, owner, gone)| (self.node(instance), owner, gone))
            .collect();
        owned.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        let lock_owner = match &self.election {
            Election::Leader { owner, .. } => *owner,
            _ => 0,
        };
        // A departed instance may lead only if the lock's session is its own.
        let candidates: Vec<Candidate<'_>> = owned
            .iter()
            .filter(|(_, owner, gone)| !gone || (*owner != 0 && *owner == lock_owner))
            .map(|(node, owner, _)| Candidate {
                node,
                owner: *owner,
            })
            .collect();
        let job_routing = self.job_routing();
        let leader = match job_routing {
            JobRouting::AnyJobNode => LeaderInfo {
                reason: Some(kylin5::NO_ELECTION.into()),
                ..LeaderInfo::default()
            },
            JobRouting::Leader => {
                election::leader_info(&self.election, &candidates, pinned_leader, election_path)
            }
        };
        ClusterView {
            nodes: owned.into_iter().map(|(node, _, _)| node).collect(),
            leader,
            job_routing,
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
