//! One fleet session: register this gateway's record, follow the others'
//! (a children watch on the service directory, a data watch on each
//! record) and follow the pointers of the ZooKeeper plugins, installing
//! each new version. One-shot watches only, so ZooKeeper 3.4 works too.

use std::future::Future;
use std::pin::Pin;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::watch;
use zookeeper_client::{Acls, Client, CreateMode, Error, SessionState, WatchedEvent};

use super::Member;
use super::record::{FleetView, GatewayRecord, SERVICE_NAME};
use super::store::{self, StorePaths};

/// How a session ended.
pub enum End {
    /// The process is stopping; the record was removed.
    Stopped,
    /// Expired, closed or failed: a new session registers again.
    Expired,
}

type Fired<T> = Pin<Box<dyn Future<Output = (T, WatchedEvent)> + Send>>;

/// What outlives sessions.
pub struct State {
    pub member: Member,
    members_dir: String,
    own_path: String,
    store: StorePaths,
    followed: Vec<Followed>,
}

/// One ZooKeeper plugin: its place in the chain, its name, and the version
/// last tried (sha256, config), so a refused one is not tried again and
/// again.
struct Followed {
    index: usize,
    name: String,
    tried: Option<(String, String)>,
}

impl State {
    pub fn new(member: Member) -> State {
        let base = member.zookeeper.base_path.trim_end_matches('/').to_string();
        let members_dir = format!("{base}/service/{SERVICE_NAME}");
        let own_path = format!("{members_dir}/{}", member.fleet.id());
        let followed = member
            .plugins
            .as_ref()
            .map(|chain| {
                chain
                    .zookeeper_plugins()
                    .into_iter()
                    .map(|(index, name)| Followed {
                        index,
                        name,
                        tried: None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        State {
            store: StorePaths::new(&base),
            members_dir,
            own_path,
            followed,
            member,
        }
    }

    fn auth(&self) -> bool {
        self.member.zookeeper.digest_auth.is_some()
    }

    /// Works within `client`'s session until it ends or `stop` turns true.
    pub async fn follow(&mut self, client: &Client, stop: &mut watch::Receiver<bool>) -> End {
        match self.session(client, stop).await {
            Ok(end) => end,
            Err(error) => {
                tracing::warn!("fleet: {error}");
                End::Expired
            }
        }
    }

    async fn session(
        &mut self,
        client: &Client,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<End, Error> {
        let mut state = client.state_watcher();
        let mut plugin_changes = self.member.plugins.as_ref().map(|chain| chain.subscribe());
        self.register(client).await?;
        self.member.fleet.set_connected(true);
        let mut pointers: FuturesUnordered<Fired<usize>> = FuturesUnordered::new();
        for slot in 0..self.followed.len() {
            let watch = self.follow_pointer(client, slot).await?;
            pointers.push(watch);
        }
        self.member.fleet.plugins_synced.send_replace(true);
        let mut members = self.read_members(client).await?;
        loop {
            tokio::select! {
                Some(((), _)) = members.next() => {
                    members = self.read_members(client).await?;
                }
                Some((slot, _)) = pointers.next() => {
                    let watch = self.follow_pointer(client, slot).await?;
                    pointers.push(watch);
                }
                Ok(()) = changed(&mut plugin_changes) => self.register(client).await?,
                now = state.changed() => match now {
                    SessionState::Disconnected => self.member.fleet.set_connected(false),
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                        self.member.fleet.set_connected(true);
                        members = self.read_members(client).await?;
                    }
                    _ => return Ok(End::Expired),
                },
                () = super::stopped(stop) => {
                    // Gone at once for the others, not after the timeout.
                    let _ = client.delete(&self.own_path, None).await;
                    return Ok(End::Stopped);
                }
            }
        }
    }

    /// Creates (or updates) this gateway's ephemeral record. A record of
    /// the same id owned by another session (a previous process whose
    /// session has not expired yet, or a misconfigured twin) is left alone:
    /// the members watch sees it go, and registration is tried again then.
    async fn register(&self, client: &Client) -> Result<(), Error> {
        match self.try_register(client).await {
            // A ZooKeeper this gateway may read but not write (ACLs) still
            // gives it the fleet and the published plugins.
            Err(error) if !ends_session(&error) => {
                tracing::warn!(path = %self.own_path, "fleet: cannot register: {error}");
                Ok(())
            }
            result => result,
        }
    }

    async fn try_register(&self, client: &Client) -> Result<(), Error> {
        let mut record: GatewayRecord = self.member.record.clone();
        if let Some(chain) = &self.member.plugins {
            record.payload.plugins = chain.records();
        }
        let data = record.to_json();
        let acls = if self.auth() {
            Acls::creator_all()
        } else {
            Acls::anyone_all()
        };
        let options = CreateMode::Ephemeral.with_acls(acls);
        // The directories are containers, as Curator makes them: once the
        // last gateway is gone the server deletes them, and Kylin's tree is
        // left as Kylin left it. The server may do so between the mkdir and
        // the create, hence the retry.
        let mut created = Err(Error::NoNode);
        for _ in 0..3 {
            make_directories(client, &self.members_dir, acls).await?;
            created = client.create(&self.own_path, &data, &options).await;
            if !matches!(created, Err(Error::NoNode)) {
                break;
            }
        }
        match created {
            Ok(_) => {
                tracing::info!(id = self.member.fleet.id(), path = %self.own_path, "fleet: registered");
                Ok(())
            }
            Err(Error::NodeExists) => {
                let (_, stat) = client.get_data(&self.own_path).await?;
                if stat.ephemeral_owner == client.session_id().0 {
                    client.set_data(&self.own_path, &data, None).await?;
                } else {
                    tracing::warn!(
                        path = %self.own_path,
                        "fleet: another session holds this gateway's id; registering once it is gone"
                    );
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Reads every record and arms watches on the directory and each
    /// record; registers again if this gateway's record is missing.
    async fn read_members(&self, client: &Client) -> Result<FuturesUnordered<Fired<()>>, Error> {
        let mut watchers = Vec::new();
        let ids = match client.list_and_watch_children(&self.members_dir).await {
            Ok((ids, watcher)) => {
                watchers.push(watcher);
                ids
            }
            Err(Error::NoNode) => {
                let (_, watcher) = client.check_and_watch_stat(&self.members_dir).await?;
                watchers.push(watcher);
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let mut view = FleetView::default();
        for id in ids {
            let path = format!("{}/{id}", self.members_dir);
            match client.get_and_watch_data(&path).await {
                Ok((data, _, watcher)) => {
                    watchers.push(watcher);
                    match GatewayRecord::parse(&data) {
                        Ok(record) => view.members.push(record),
                        Err(problem) => {
                            tracing::warn!(%path, "fleet: skipping a malformed gateway record: {problem}");
                            view.malformed.push(id);
                        }
                    }
                }
                Err(Error::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
        view.members.sort_by(|a, b| a.id.cmp(&b.id));
        let registered = view.members.iter().any(|m| m.id == self.member.fleet.id());
        self.member.fleet.publish(view);
        if !registered {
            self.register(client).await?;
        }
        Ok(watchers
            .into_iter()
            .map(|watcher| -> Fired<()> { Box::pin(async move { ((), watcher.changed().await) }) })
            .collect())
    }

    /// Reads one plugin's pointer (watching it) and installs the version
    /// it names if that is new here.
    async fn follow_pointer(
        &mut self,
        client: &Client,
        slot: usize,
    ) -> Result<Fired<usize>, Error> {
        let path = self.store.pointer(&self.followed[slot].name);
        let (data, watcher) = match client.get_and_watch_data(&path).await {
            Ok((data, _, watcher)) => (Some(data), watcher),
            Err(Error::NoNode) => (None, client.check_and_watch_stat(&path).await?.1),
            Err(e) => return Err(e),
        };
        if let Some(data) = data {
            self.install(client, slot, &data).await?;
        }
        Ok(Box::pin(async move { (slot, watcher.changed().await) }))
    }

    /// Fetches, verifies and installs the version a pointer names, unless
    /// it was already tried.
    async fn install(&mut self, client: &Client, slot: usize, pointer: &[u8]) -> Result<(), Error> {
        let Some(chain) = self.member.plugins.clone() else {
            return Ok(());
        };
        let Followed { index, name, tried } = &mut self.followed[slot];
        let pointer: store::Pointer = match serde_json::from_slice(pointer) {
            Ok(pointer) => pointer,
            Err(problem) => {
                chain.report_error(*index, format!("malformed pointer for '{name}': {problem}"));
                return Ok(());
            }
        };
        let version = (
            pointer.current.sha256.clone(),
            pointer.current.config.clone(),
        );
        if tried.as_ref() == Some(&version) {
            return Ok(());
        }
        *tried = Some(version);
        let fetching = std::time::Instant::now();
        match store::fetch(client, &self.store, &pointer.current.sha256).await {
            Ok(bytes) => {
                tracing::info!(
                    plugin = %name,
                    sha256 = %pointer.current.sha256,
                    bytes = bytes.len(),
                    fetch_ms = fetching.elapsed().as_millis() as u64,
                    "fleet: published version fetched"
                );
                let _ = chain.install(*index, bytes, pointer.current.config).await;
            }
            Err(store::StoreError::Zookeeper(e)) if ends_session(&e) => {
                *tried = None;
                return Err(e);
            }
            Err(problem) => chain.report_error(*index, format!("cannot fetch: {problem}")),
        }
        Ok(())
    }
}

/// `mkdir -p` with container znodes, or persistent ones on a server
/// without containers (ZooKeeper 3.4).
async fn make_directories(client: &Client, path: &str, acls: Acls<'static>) -> Result<(), Error> {
    match client
        .mkdir(path, &CreateMode::Container.with_acls(acls))
        .await
    {
        Err(Error::Unimplemented | Error::UnexpectedErrorCode(_)) => {
            client
                .mkdir(path, &CreateMode::Persistent.with_acls(acls))
                .await
        }
        result => result,
    }
}

/// Whether an error means the session is gone or unusable (start a new
/// one), rather than a refusal of this one operation.
fn ends_session(error: &Error) -> bool {
    matches!(
        error,
        Error::SessionExpired
            | Error::ConnectionLoss
            | Error::ClientClosed
            | Error::SessionMoved
            | Error::AuthFailed
            | Error::Timeout
    )
}

/// Resolves when the plugin chain changed; never without a chain.
async fn changed(
    changes: &mut Option<watch::Receiver<u64>>,
) -> Result<(), watch::error::RecvError> {
    match changes {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}
