//! The simulator's ZooKeeper side, imitating Curator's recipes call by
//! call: ServiceDiscovery registration (EPHEMERAL instance znode, parents
//! created on demand, delete-and-recreate on reconnect so watchers fire),
//! LeaderSelector with autoRequeue over InterProcessMutex (protected
//! EPHEMERAL_SEQUENTIAL node, watch the immediate predecessor, lead when
//! lowest, give leadership up when the connection is suspended and requeue
//! with a new node), a fresh session after expiry, and a clean leave on
//! SIGTERM.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zookeeper_client::{Acls, Client, CreateMode, Error, SessionState, StateWatcher};

use super::http::NodeIdentity;
use super::znodes::{self, Layout, Registration};

/// How to reach ZooKeeper and where to write.
pub struct ZkTarget {
    /// `host:port[,host:port...][/chroot]`.
    pub connect: String,
    pub base_path: String,
    pub session_timeout: Duration,
    /// `user:password` for the `digest` scheme.
    pub digest_auth: Option<String>,
}

/// What the node advertises.
pub struct Advertised {
    pub host: String,
    pub port: u16,
    /// Registered as `sslPort` when the node serves HTTPS.
    pub ssl_port: Option<u16>,
    pub description: String,
    pub curator5: bool,
    pub enabled: bool,
}

/// The znodes this process owns right now, so SIGTERM can remove them
/// even while a session task is mid-operation.
#[derive(Default)]
pub struct Owned {
    client: Option<Client>,
    instance: Option<String>,
    lock_node: Option<String>,
}

pub type SharedOwned = Arc<Mutex<Owned>>;

/// The whole ZooKeeper life of the node: sessions one after another until
/// the future is dropped. `registered` fires after the first registration.
pub async fn run(
    target: Arc<ZkTarget>,
    advertised: Arc<Advertised>,
    identity: Arc<NodeIdentity>,
    owned: SharedOwned,
    registered: tokio::sync::oneshot::Sender<()>,
) {
    let mut registered = Some(registered);
    let mut backoff = Duration::from_millis(50);
    loop {
        let client = match connect(&target).await {
            Ok(client) => client,
            Err(err) => {
                log(&identity, &format!("cannot connect to ZooKeeper: {err}"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        log(
            &identity,
            &format!(
                "session {:x} (timeout {} ms)",
                client.session_id().0,
                client.session_timeout().as_millis()
            ),
        );
        owned.lock().unwrap().client = Some(client.clone());
        let session = Session {
            client,
            target: target.clone(),
            advertised: advertised.clone(),
            identity: identity.clone(),
            owned: owned.clone(),
        };
        if let Err(err) = session.register().await {
            log(&identity, &format!("registration failed: {err}"));
            tokio::time::sleep(backoff).await;
            continue;
        }
        if let Some(registered) = registered.take() {
            let _ = registered.send(());
        }
        let end = session.live().await;
        identity.leader.store(false, Ordering::SeqCst);
        log(
            &identity,
            &format!("session ended ({end:?}); starting a new one"),
        );
        *owned.lock().unwrap() = Owned::default();
    }
}

/// SIGTERM: delete our lock node and instance at once, then close the
/// session (which would remove them anyway, but a close is not instant
/// when the server is slow).
pub async fn leave(owned: &SharedOwned, identity: &NodeIdentity) {
    let owned = std::mem::take(&mut *owned.lock().unwrap());
    identity.leader.store(false, Ordering::SeqCst);
    let Some(client) = owned.client else {
        return;
    };
    let deadline = Duration::from_secs(2);
    for path in owned.lock_node.iter().chain(owned.instance.iter()) {
        match tokio::time::timeout(deadline, client.delete(path, None)).await {
            Ok(Ok(()) | Err(Error::NoNode)) => log(identity, &format!("deleted {path}")),
            Ok(Err(err)) => log(identity, &format!("could not delete {path}: {err}")),
            Err(_) => log(identity, &format!("timed out deleting {path}")),
        }
    }
    let mut state = client.state_watcher();
    drop(client);
    let _ = tokio::time::timeout(deadline, async {
        while !state.state().is_terminated() {
            state.changed().await;
        }
    })
    .await;
    log(identity, "session closed");
}

async fn connect(target: &ZkTarget) -> Result<Client, Error> {
    let mut connector = Client::connector().with_session_timeout(target.session_timeout);
    if let Some(credentials) = &target.digest_auth {
        connector = connector.with_auth("digest", credentials.as_bytes());
    }
    connector.connect(&target.connect).await
}

struct Session {
    client: Client,
    target: Arc<ZkTarget>,
    advertised: Arc<Advertised>,
    identity: Arc<NodeIdentity>,
    owned: SharedOwned,
}

/// Why a step could not finish in this session.
#[derive(Debug)]
enum Interrupted {
    /// The session is over (expired, closed, auth failed).
    SessionGone(SessionState),
}

impl Session {
    fn layout(&self) -> Layout {
        self.identity.layout
    }

    fn parent_mode(&self) -> CreateMode {
        if self.layout().parents_are_containers() {
            CreateMode::Container
        } else {
            CreateMode::Persistent
        }
    }

    fn instance_path(&self) -> String {
        format!(
            "{}/{}",
            znodes::instance_dir(&self.target.base_path, self.layout(), &self.identity.mode),
            self.identity.id
        )
    }

    /// `ServiceDiscoveryImpl.internalRegisterService`: create the
    /// EPHEMERAL instance (parents as needed); if it already exists,
    /// delete it and create again so that watchers fire.
    async fn register(&self) -> Result<(), Error> {
        let path = self.instance_path();
        let registration_time_utc = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let registration = Registration {
            layout: self.layout(),
            id: &self.identity.id,
            address: &self.advertised.host,
            port: self.advertised.port,
            ssl_port: self.advertised.ssl_port,
            description: &self.advertised.description,
            curator5: self.advertised.curator5,
            enabled: self.advertised.enabled,
            registration_time_utc,
        };
        let data = match self.layout() {
            Layout::Kylin5 => znodes::spring_instance_json(&registration, &self.identity.mode),
            _ => znodes::instance_json(&registration),
        };
        let mut tries = 0;
        loop {
            let options = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
            match self.client.create(&path, &data, &options).await {
                Ok(_) => break,
                Err(Error::NoNode) => self.make_parents(&path).await?,
                Err(Error::NodeExists) if tries < 2 => {
                    tries += 1;
                    match self.client.delete(&path, None).await {
                        Ok(()) | Err(Error::NoNode) => {}
                        Err(err) => return Err(err),
                    }
                }
                Err(err) => return Err(err),
            }
        }
        self.owned.lock().unwrap().instance = Some(path.clone());
        log(&self.identity, &format!("registered {path}"));
        Ok(())
    }

    /// `creatingParentContainersIfNeeded` (persistent parents for KAP's
    /// Curator 2.7).
    async fn make_parents(&self, path: &str) -> Result<(), Error> {
        let parent = &path[..path.rfind('/').unwrap_or(0)];
        let options = self.parent_mode().with_acls(Acls::anyone_all());
        self.client.mkdir(parent, &options).await
    }

    /// Runs until the session ends: re-registers after every reconnect
    /// and, for job-capable nodes, campaigns for the job engine.
    async fn live(&self) -> SessionState {
        let reregister = async {
            let mut state = self.client.state_watcher();
            let mut suspended = false;
            loop {
                match state.changed().await {
                    SessionState::Disconnected => {
                        suspended = true;
                        log(&self.identity, "connection suspended");
                    }
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly if suspended => {
                        suspended = false;
                        log(&self.identity, "reconnected; registering again");
                        if let Err(err) = self.register().await {
                            log(&self.identity, &format!("re-registration failed: {err}"));
                        }
                    }
                    s if s.is_terminated() => return s,
                    _ => {}
                }
            }
        };
        let campaign = async {
            if self.identity.runs_jobs() && self.layout().elects() {
                self.campaign().await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            end = reregister => end,
            Interrupted::SessionGone(end) = campaign => end,
        }
    }

    /// LeaderSelector with autoRequeue: one InterProcessMutex acquisition
    /// after another for as long as the session lives.
    async fn campaign(&self) -> Interrupted {
        let dir = znodes::leader_dir(&self.target.base_path);
        let data = self
            .layout()
            .election_data(&self.advertised.host, self.advertised.port);
        let mut state = self.client.state_watcher();
        loop {
            let result = async {
                let ours = self
                    .create_lock_node(&dir, data.as_bytes(), &mut state)
                    .await?;
                self.owned.lock().unwrap().lock_node = Some(ours.clone());
                self.acquire_and_hold(&dir, &ours, &mut state).await?;
                // Curator's release is a guaranteed delete: retried until
                // the connection is back.
                wait_connected(&mut state).await?;
                match self.client.delete(&ours, None).await {
                    Ok(()) | Err(Error::NoNode) => {}
                    Err(err) => log(&self.identity, &format!("release of {ours} failed: {err}")),
                }
                self.owned.lock().unwrap().lock_node = None;
                Ok::<(), Interrupted>(())
            }
            .await;
            if let Err(gone) = result {
                return gone;
            }
        }
    }

    /// `withProtection().withMode(EPHEMERAL_SEQUENTIAL)`, parents as
    /// containers; after a connection loss, finds the node by its
    /// protection prefix instead of creating a second one.
    async fn create_lock_node(
        &self,
        dir: &str,
        data: &[u8],
        state: &mut StateWatcher,
    ) -> Result<String, Interrupted> {
        let protection = znodes::random_uuid();
        let prefix = znodes::protected_lock_prefix(dir, &protection);
        let options = CreateMode::EphemeralSequential.with_acls(Acls::anyone_all());
        loop {
            wait_connected(state).await?;
            match self.client.create(&prefix, data, &options).await {
                Ok((_, sequence)) => return Ok(format!("{prefix}{sequence}")),
                Err(Error::NoNode) => {
                    let parents = self.parent_mode().with_acls(Acls::anyone_all());
                    if let Err(err) = self.client.mkdir(dir, &parents).await {
                        self.retry_after(err, state).await?;
                    }
                }
                Err(Error::ConnectionLoss) => {
                    wait_connected(state).await?;
                    if let Ok(children) = self.client.list_children(dir).await
                        && let Some(child) = children
                            .iter()
                            .find(|c| znodes::is_protected_by(c, &protection))
                    {
                        return Ok(format!("{dir}/{child}"));
                    }
                }
                Err(err) => self.retry_after(err, state).await?,
            }
        }
    }

    /// `LockInternals.internalLockLoop`, then leadership until the
    /// connection is suspended or lost. Returns when leadership (or the
    /// attempt) is over and the node should be released and requeued.
    async fn acquire_and_hold(
        &self,
        dir: &str,
        ours: &str,
        state: &mut StateWatcher,
    ) -> Result<(), Interrupted> {
        let our_name = &ours[dir.len() + 1..];
        loop {
            wait_connected(state).await?;
            let children = match self.client.list_children(dir).await {
                Ok(children) => children,
                Err(err) => {
                    self.retry_after(err, state).await?;
                    continue;
                }
            };
            let candidates = znodes::sort_candidates(children);
            match candidates.iter().position(|c| c == our_name) {
                // "Sequential path not found": the attempt failed; requeue.
                None => {
                    log(
                        &self.identity,
                        &format!("lock node {ours} vanished; requeueing"),
                    );
                    return Ok(());
                }
                Some(0) => return self.lead(ours, state).await,
                Some(i) => {
                    let predecessor = format!("{dir}/{}", candidates[i - 1]);
                    let watcher = match self.client.get_and_watch_data(&predecessor).await {
                        Ok((_, _, watcher)) => watcher,
                        Err(Error::NoNode) => continue,
                        Err(err) => {
                            self.retry_after(err, state).await?;
                            continue;
                        }
                    };
                    log(
                        &self.identity,
                        &format!("candidate {our_name}, watching {predecessor}"),
                    );
                    tokio::select! {
                        _ = watcher.changed() => {}
                        changed = state.changed() => {
                            if changed.is_terminated() {
                                return Err(Interrupted::SessionGone(changed));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Holds leadership like Kylin's `takeLeadership` (which blocks until
    /// interrupted); the default LeaderSelectorListenerAdapter cancels it
    /// on SUSPENDED or LOST.
    async fn lead(&self, ours: &str, state: &mut StateWatcher) -> Result<(), Interrupted> {
        self.identity.leader.store(true, Ordering::SeqCst);
        log(
            &self.identity,
            &format!("LEADER {ours} at_ms={}", unix_ms()),
        );
        let end = loop {
            match state.changed().await {
                SessionState::SyncConnected | SessionState::ConnectedReadOnly => continue,
                other => break other,
            }
        };
        self.identity.leader.store(false, Ordering::SeqCst);
        log(
            &self.identity,
            &format!("NOT LEADER ({end:?}) at_ms={}", unix_ms()),
        );
        if end.is_terminated() {
            return Err(Interrupted::SessionGone(end));
        }
        Ok(())
    }

    /// Curator's RetryLoop: on a connection problem wait for the
    /// connection; a dead session ends the attempt; anything else is
    /// logged and retried after a pause.
    async fn retry_after(&self, err: Error, state: &mut StateWatcher) -> Result<(), Interrupted> {
        match err {
            Error::SessionExpired | Error::ClientClosed | Error::AuthFailed => {
                Err(Interrupted::SessionGone(state.peek_state()))
            }
            Error::ConnectionLoss => wait_connected(state).await,
            other => {
                log(
                    &self.identity,
                    &format!("ZooKeeper error {other}; retrying"),
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(())
            }
        }
    }
}

/// Waits until the session is connected; fails when it is over.
async fn wait_connected(state: &mut StateWatcher) -> Result<(), Interrupted> {
    loop {
        match state.state() {
            SessionState::SyncConnected | SessionState::ConnectedReadOnly => return Ok(()),
            s if s.is_terminated() => return Err(Interrupted::SessionGone(s)),
            _ => {
                state.changed().await;
            }
        }
    }
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Leadership and session changes go to stderr, one line each, prefixed
/// with the node name (tests read the `LEADER` lines).
pub fn log(identity: &NodeIdentity, message: &str) {
    eprintln!("kylin-sim {}: {message}", identity.name);
}
