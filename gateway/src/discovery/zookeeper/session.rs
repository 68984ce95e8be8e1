//! One ZooKeeper session's worth of following the cluster: reads with
//! one-shot watches (ZooKeeper 3.4 compatible), re-reads exactly what a
//! fired watch names, resyncs after a reconnect, and publishes a view only
//! when it changed. It owns the removal-grace timer: the state decides who
//! departed and until when, this loop wakes at the deadline (only while
//! connected) and republishes. The session ends on expiry, close or failed
//! auth; the caller then connects a new client (one cannot be reused after
//! expiry).

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use zookeeper_client::{
    Client, Error, EventType, OneshotWatcher, SessionState, Stat, WatchedEvent,
};

use super::CONNECTED_METRIC;
use super::election::{Election, leader_znode};
use super::paths::{Paths, join};
use super::state::{DEPARTING_METRIC, HostKey, Known};
use crate::config::ZookeeperSettings;
use crate::discovery::Resolver;
use crate::view::{JobRouting, LeaderInfo, Node, ViewPublisher};

/// How long a round waits for new hosts to resolve before publishing them
/// as unresolved (they are republished when the lookup finishes).
const RESOLVE_WAIT: Duration = Duration::from_millis(200);
/// Retry interval for reads that failed while connected (e.g. `NoAuth`).
const READ_RETRY: Duration = Duration::from_secs(2);
/// How long a failed DNS lookup is trusted before it is retried.
const RESOLVE_RETRY: Duration = Duration::from_secs(30);
/// How long a successful DNS lookup is used before it is refreshed.
const RESOLVE_REFRESH: Duration = Duration::from_secs(300);

/// What a watch or a read is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    /// A service directory, by index into [`Paths::services`].
    Service(usize),
    /// An instance znode, by full path.
    Instance(String),
    /// The election directory.
    Election,
}

type WatchFuture = Pin<Box<dyn Future<Output = (Key, WatchedEvent)> + Send>>;

/// Watches armed in this session. A key is armed at most once so a resync
/// does not stack duplicate watchers.
#[derive(Default)]
struct Watches {
    armed: HashSet<Key>,
    pending: FuturesUnordered<WatchFuture>,
}

impl Watches {
    fn arm(&mut self, key: Key, watcher: OneshotWatcher) {
        self.armed.insert(key.clone());
        self.pending
            .push(Box::pin(async move { (key, watcher.changed().await) }));
    }

    fn is_armed(&self, key: &Key) -> bool {
        self.armed.contains(key)
    }

    /// Disarms a fired watch and marks its key dirty (unless the event was
    /// only about the session), with whatever else already fired.
    fn take_fired(&mut self, first: (Key, WatchedEvent), dirty: &mut BTreeSet<Key>) {
        let mut fired = Some(first);
        while let Some((key, event)) = fired {
            self.armed.remove(&key);
            if event.event_type != EventType::Session {
                dirty.insert(key);
            }
            fired = futures_util::FutureExt::now_or_never(self.pending.next()).flatten();
        }
    }
}

/// Why a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    Expired,
    AuthFailed,
    Closed,
}

impl SessionEnd {
    /// For the event timeline.
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionEnd::Expired => "expired",
            SessionEnd::AuthFailed => "auth-failed",
            SessionEnd::Closed => "closed",
        }
    }
}

/// State that outlives sessions: knowledge, resolution cache, last view.
pub struct Follower {
    settings: ZookeeperSettings,
    paths: Paths,
    publisher: ViewPublisher,
    resolver: Resolver,
    known: Known,
    resolved_tx: mpsc::UnboundedSender<(HostKey, Result<SocketAddr, String>)>,
    resolved_rx: mpsc::UnboundedReceiver<(HostKey, Result<SocketAddr, String>)>,
    /// Nodes, leader and job routing last published (`None` before the
    /// first view).
    published: Option<(Vec<Node>, LeaderInfo, JobRouting)>,
    connected: bool,
}

impl Follower {
    pub fn new(settings: ZookeeperSettings, publisher: ViewPublisher) -> Follower {
        let (resolved_tx, resolved_rx) = mpsc::unbounded_channel();
        let paths = Paths::with_kylin5_base(
            &settings.base_path,
            &settings.kylin5_base_path,
            settings.layout,
        );
        Follower {
            resolver: Resolver::new(settings.address_map.clone()),
            known: Known::new(settings.default_mode)
                .with_removal_grace(settings.removal_grace)
                .with_layout(settings.layout, &paths),
            paths,
            settings,
            publisher,
            resolved_tx,
            resolved_rx,
            published: None,
            connected: false,
        }
    }

    pub fn settings(&self) -> &ZookeeperSettings {
        &self.settings
    }

    /// Marks the last view stale: the source is gone for now.
    pub fn lost(&mut self) {
        self.connected = false;
        metrics::gauge!(CONNECTED_METRIC).set(0.0);
        self.publisher.set_stale(true);
    }

    /// Follows the cluster on `client` until the session ends.
    pub async fn follow(&mut self, client: &Client) -> SessionEnd {
        let mut state = client.state_watcher();
        let mut watches = Watches::default();
        let mut dirty = self.everything();
        let mut failed: BTreeSet<Key> = BTreeSet::new();
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut resolve_retry = tokio::time::interval(RESOLVE_RETRY);
        resolve_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.connected = true;
        metrics::gauge!(CONNECTED_METRIC).set(1.0);
        loop {
            if self.connected && !dirty.is_empty() {
                let keys = std::mem::take(&mut dirty);
                if let Err(e) = self.sync(client, keys, &mut watches, &mut failed).await {
                    return match e {
                        Error::AuthFailed => SessionEnd::AuthFailed,
                        Error::ClientClosed => SessionEnd::Closed,
                        _ => SessionEnd::Expired,
                    };
                }
                self.refresh().await;
                self.publisher.set_stale(false);
            }
            if failed.is_empty() {
                retry_at = None;
            } else if retry_at.is_none() {
                retry_at = Some(tokio::time::Instant::now() + READ_RETRY);
            }
            let departure = self.departure_deadline();
            tokio::select! {
                Some(fired) = watches.pending.next() => watches.take_fired(fired, &mut dirty),
                changed = state.changed() => {
                    if let Some(end) = self.on_state(changed, &mut dirty, &mut failed) {
                        return end;
                    }
                }
                Some((key, result)) = self.resolved_rx.recv() => {
                    self.known.resolved(key, result);
                    self.publish_if_changed();
                }
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)),
                    if retry_at.is_some() =>
                {
                    retry_at = None;
                    dirty.append(&mut failed);
                }
                _ = tokio::time::sleep_until(departure.unwrap_or_else(tokio::time::Instant::now)),
                    if departure.is_some() =>
                {
                    self.publish_if_changed();
                }
                _ = resolve_retry.tick() => {
                    for key in self.known.due_for_refresh(RESOLVE_REFRESH) {
                        self.spawn_lookup(key);
                    }
                    if self.known.forget_failures(RESOLVE_RETRY) {
                        self.refresh().await;
                    }
                }
            }
        }
    }

    /// Reacts to a session state change; `Some` when the session is over.
    fn on_state(
        &mut self,
        changed: SessionState,
        dirty: &mut BTreeSet<Key>,
        failed: &mut BTreeSet<Key>,
    ) -> Option<SessionEnd> {
        match changed {
            SessionState::Disconnected => {
                tracing::warn!("ZooKeeper disconnected; serving the last view, marked stale");
                crate::events::zookeeper_session(
                    "disconnected",
                    "ZooKeeper disconnected; serving the last view, marked stale",
                );
                self.lost();
            }
            SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                tracing::info!(state = %changed, "ZooKeeper reconnected; resyncing");
                crate::events::zookeeper_session(
                    "connected",
                    format!("ZooKeeper reconnected ({changed}); resyncing"),
                );
                self.connected = true;
                metrics::gauge!(CONNECTED_METRIC).set(1.0);
                // Watches were re-registered by the client and fire for what
                // changed meanwhile; re-listing directories is cheap insurance.
                dirty.extend(self.everything());
                dirty.append(failed);
            }
            SessionState::Expired => return Some(SessionEnd::Expired),
            SessionState::AuthFailed => return Some(SessionEnd::AuthFailed),
            SessionState::Closed => return Some(SessionEnd::Closed),
        }
        None
    }

    /// When the next departed instance's removal grace ends. Only while
    /// connected: a partition must not shrink the last view.
    fn departure_deadline(&self) -> Option<tokio::time::Instant> {
        self.known
            .next_departure()
            .filter(|_| self.connected)
            .map(tokio::time::Instant::from_std)
    }

    /// Every directory this provider reads.
    fn everything(&self) -> BTreeSet<Key> {
        let election = self.paths.elects.then_some(Key::Election);
        (0..self.paths.services.len())
            .map(Key::Service)
            .chain(election)
            .collect()
    }

    /// Re-reads `keys`: directories first, then the data of instances that
    /// are new or whose watch fired, then the election. Errors other than
    /// terminal ones park the key in `failed` for a retry.
    async fn sync(
        &mut self,
        client: &Client,
        keys: BTreeSet<Key>,
        watches: &mut Watches,
        failed: &mut BTreeSet<Key>,
    ) -> Result<(), Error> {
        let mut fetch: BTreeSet<String> = BTreeSet::new();
        let mut election = false;
        for key in keys {
            match key {
                Key::Service(index) => {
                    let dir = self.paths.services[index].clone();
                    match read_children(client, &key, &dir, watches).await {
                        Ok(children) => {
                            for path in self.known.set_children(&dir, children) {
                                let key = Key::Instance(path.clone());
                                if !watches.is_armed(&key) || !self.known.has_instance(&path) {
                                    fetch.insert(path);
                                }
                            }
                        }
                        Err(e) => park(e, key, failed)?,
                    }
                }
                Key::Instance(path) => {
                    fetch.insert(path);
                }
                Key::Election => election = true,
            }
        }
        let reads = fetch.into_iter().map(|path| {
            let arm = !watches.is_armed(&Key::Instance(path.clone()));
            read_data(client, path, arm)
        });
        for (path, result) in join_all(reads).await {
            match result {
                Ok((data, stat, watcher)) => {
                    if let Some(watcher) = watcher {
                        watches.arm(Key::Instance(path.clone()), watcher);
                    }
                    self.known
                        .store_instance(&path, &data, stat.mzxid, stat.ephemeral_owner);
                }
                Err(Error::NoNode) => self.known.remove_instance(&path),
                Err(e) => park(e, Key::Instance(path), failed)?,
            }
        }
        if election && let Err(e) = self.read_election(client, watches).await {
            park(e, Key::Election, failed)?;
        }
        Ok(())
    }

    /// Reads the election directory and the leading znode's data. The data
    /// of a lock znode never changes, so it is read once per leader.
    async fn read_election(&mut self, client: &Client, watches: &mut Watches) -> Result<(), Error> {
        let dir = self.paths.election.clone();
        let children = read_children(client, &Key::Election, &dir, watches).await?;
        let Some(znode) = children
            .as_deref()
            .and_then(leader_znode)
            .map(str::to_string)
        else {
            let legacy = client.check_stat(&self.paths.legacy_lock).await?.is_some();
            self.known.election = if legacy {
                Election::LegacyLock
            } else {
                Election::Absent
            };
            return Ok(());
        };
        if let Election::Leader {
            znode: known,
            data: Some(_),
            ..
        } = &self.known.election
            && *known == znode
        {
            return Ok(());
        }
        self.known.election = match client.get_data(&join(&dir, &znode)).await {
            Ok((data, stat)) => Election::Leader {
                znode,
                data: Some(String::from_utf8_lossy(&data).trim().to_string()),
                owner: stat.ephemeral_owner,
            },
            // Gone between the listing and the read: the children watch
            // fires and the next leader is read then.
            Err(Error::NoNode) => Election::Leader {
                znode,
                data: None,
                owner: 0,
            },
            Err(e) => return Err(e),
        };
        Ok(())
    }

    /// Starts lookups for new hosts, waits briefly for them, publishes.
    async fn refresh(&mut self) {
        for key in self.known.unresolved() {
            let (host, port) = self.resolver.mapped(&key.0, key.1);
            if let Ok(ip) = host.parse::<IpAddr>() {
                self.known.resolved(key, Ok(SocketAddr::new(ip, port)));
                continue;
            }
            self.known.mark_pending(key.clone());
            self.spawn_lookup(key);
        }
        let deadline = tokio::time::Instant::now() + RESOLVE_WAIT;
        while self.known.is_pending() {
            match tokio::time::timeout_at(deadline, self.resolved_rx.recv()).await {
                Ok(Some((key, result))) => self.known.resolved(key, result),
                _ => break,
            }
        }
        self.publish_if_changed();
    }

    /// Looks `key` up off the event loop; the answer arrives on
    /// `resolved_rx`.
    fn spawn_lookup(&self, key: HostKey) {
        let resolver = self.resolver.clone();
        let tx = self.resolved_tx.clone();
        tokio::spawn(async move {
            let result = resolver.resolve(&key.0, key.1).await;
            let _ = tx.send((key, result));
        });
    }

    /// Publishes the view if nodes or leader changed since the last publish.
    /// While connected, departed instances whose grace ended leave first.
    fn publish_if_changed(&mut self) {
        if self.connected {
            self.known.expire_departed(std::time::Instant::now());
        }
        metrics::gauge!(DEPARTING_METRIC).set(self.known.departing() as f64);
        let view = self.known.build_view(
            self.settings.leader_address.as_deref(),
            &self.paths.election,
            !self.connected,
        );
        let current = (view.nodes.clone(), view.leader.clone(), view.job_routing);
        if self.published.as_ref() == Some(&current) {
            return;
        }
        let leader_changed = self
            .published
            .as_ref()
            .is_none_or(|(_, l, _)| *l != view.leader);
        if leader_changed {
            let leader = &view.leader;
            let node = leader.node_id.as_deref().unwrap_or("-");
            let participant = leader.participant.as_deref().unwrap_or("-");
            let znode = leader.znode.as_deref().unwrap_or("-");
            let reason = leader.reason.as_deref().unwrap_or("");
            // A mapped leader with a note was ambiguous, session-mapped or
            // pinned: worth an operator's attention.
            if leader.node_id.is_some() && leader.reason.is_some() {
                tracing::warn!(node, participant, znode, reason, "job-engine leader");
            } else {
                tracing::info!(node, participant, znode, reason, "job-engine leader");
            }
        }
        tracing::debug!(nodes = view.nodes.len(), "publishing ZooKeeper view");
        self.published = Some(current);
        self.publisher.publish(view);
    }
}

/// Lists a directory's children and watches it. A Curator container parent
/// may not exist (yet, or any more): then an exists-watch waits for its
/// creation and `None` is returned. An already armed key is re-read without
/// a new watch.
async fn read_children(
    client: &Client,
    key: &Key,
    path: &str,
    watches: &mut Watches,
) -> Result<Option<Vec<String>>, Error> {
    if watches.is_armed(key) {
        return match client.list_children(path).await {
            Ok(children) => Ok(Some(children)),
            Err(Error::NoNode) => Ok(None),
            Err(e) => Err(e),
        };
    }
    // Bounded: each pass loses a race against a create/delete of `path`.
    for _ in 0..8 {
        match client.list_and_watch_children(path).await {
            Ok((children, watcher)) => {
                watches.arm(key.clone(), watcher);
                return Ok(Some(children));
            }
            Err(Error::NoNode) => {}
            Err(e) => return Err(e),
        }
        match client.check_and_watch_stat(path).await? {
            (None, watcher) => {
                watches.arm(key.clone(), watcher);
                return Ok(None);
            }
            // Created meanwhile; dropping the watcher unregisters it.
            (Some(_), _) => continue,
        }
    }
    Err(Error::UnexpectedError(format!(
        "{path} kept appearing and vanishing while read"
    )))
}

/// Reads one instance znode, with a data watch when `arm`.
async fn read_data(
    client: &Client,
    path: String,
    arm: bool,
) -> (
    String,
    Result<(Vec<u8>, Stat, Option<OneshotWatcher>), Error>,
) {
    let result = if arm {
        client
            .get_and_watch_data(&path)
            .await
            .map(|(data, stat, watcher)| (data, stat, Some(watcher)))
    } else {
        client
            .get_data(&path)
            .await
            .map(|(data, stat)| (data, stat, None))
    };
    (path, result)
}

/// Parks a failed read for a retry, or ends the session on terminal errors.
/// A missing permission (`NoAuth`: ACLs without `discovery.auth`) is worth a
/// warning; connection losses are not (the session state says it all).
fn park(error: Error, key: Key, failed: &mut BTreeSet<Key>) -> Result<(), Error> {
    match error {
        Error::SessionExpired | Error::AuthFailed | Error::ClientClosed | Error::SessionMoved => {
            Err(error)
        }
        Error::NoAuth => {
            tracing::warn!(
                ?key,
                "ZooKeeper denies reading it (check discovery.auth); will retry"
            );
            failed.insert(key);
            Ok(())
        }
        error => {
            tracing::debug!(?key, %error, "ZooKeeper read failed; will retry");
            failed.insert(key);
            Ok(())
        }
    }
}
