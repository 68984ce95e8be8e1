//! The ZooKeeper provider against a real ZooKeeper (Debian's `zookeeper`
//! package, started here on a free loopback port with its own data directory
//! and killed by pid on drop): registrations, removals, data changes,
//! container parents, malformed znodes, the election, a server restart and a
//! session expiry, all observed through the published view. Znodes are
//! written with `zookeeper-client` the way Curator lays them out; the full
//! simulator and the real-Curator interop live in the `tests` package.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kylin_gateway::config::{Layout, ZookeeperSettings};
use kylin_gateway::discovery::zookeeper;
use kylin_gateway::view::{Modes, Snapshot, ViewPublisher};
use zookeeper_client::{Acls, Client, CreateMode};

const BASE: &str = "/kylin/kylin_metadata";
const WAIT: Duration = Duration::from_secs(10);

/// A standalone ZooKeeper owned by the test: killed (SIGKILL, by pid) and
/// its directory removed on drop, even when the test fails.
struct ZooKeeper {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl ZooKeeper {
    fn start() -> ZooKeeper {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("kgw-zk-provider-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).expect("create ZooKeeper dir");
        // tickTime 200 ms: sessions of 0.4–4 s keep expiry tests short.
        let config = format!(
            "tickTime=200\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
             admin.enableServer=false\n4lw.commands.whitelist=*\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("zoo.cfg"), config).expect("write zoo.cfg");
        let mut zk = ZooKeeper {
            child: None,
            dir,
            port,
        };
        zk.spawn();
        zk
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("zookeeper.log")).expect("log file");
        let child = Command::new("java")
            .args([
                "-Xmx128m",
                "-cp",
                "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar",
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            ])
            .arg(self.dir.join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("java (Debian's zookeeper package) must be installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.serving() {
            assert!(
                Instant::now() < deadline,
                "ZooKeeper did not answer srvr on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Readiness: the `srvr` four-letter word answers with a mode.
    fn serving(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = String::new();
        stream.write_all(b"srvr").is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.contains("Mode:")
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status();
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn settings(connect: &str, layout: Layout) -> ZookeeperSettings {
    ZookeeperSettings {
        hosts: connect.to_string(),
        chroot: None,
        base_path: BASE.into(),
        kylin5_base_path: BASE.into(),
        layout,
        session_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        digest_auth: None,
        default_mode: Modes::ALL,
        leader_address: None,
        leader_check_interval: Duration::ZERO,
        removal_grace: Duration::ZERO,
        address_map: Default::default(),
        kylin_properties: None,
        base_path_explicit: true,
        kylin5_base_path_explicit: false,
    }
}

/// Starts the provider on its own publisher.
fn follow(settings: ZookeeperSettings) -> ViewPublisher {
    follow_logged(settings).0
}

/// Like [`follow`], with the provider's log lines kept (a subscriber of
/// its own, so tests running side by side do not mix their lines).
fn follow_logged(settings: ZookeeperSettings) -> (ViewPublisher, Logs) {
    use tracing::instrument::WithSubscriber;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "kylin_gateway=info".into()),
        )
        .with_test_writer()
        .try_init();
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let publisher = ViewPublisher::new();
    tokio::spawn(zookeeper::run(settings, publisher.clone()).with_subscriber(subscriber));
    (publisher, logs)
}

/// What one provider logged.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The ids of the ZooKeeper sessions the provider established, in order.
    fn sessions(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains("ZooKeeper session established"))
            .filter_map(|l| {
                let id = l.split("session=").nth(1)?;
                Some(id.split_whitespace().next()?.to_string())
            })
            .collect()
    }

    /// Waits up to [`WAIT`] for a line containing `needle`.
    async fn wait_for_line(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the provider never logged {needle:?}; it logged:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn wait_for(
    publisher: &ViewPublisher,
    what: &str,
    accept: impl FnMut(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    match publisher.wait_for(Instant::now() + WAIT, accept).await {
        Some(snapshot) => snapshot,
        None => panic!(
            "timed out waiting for {what}; last view: {:#?}",
            publisher.snapshot().view
        ),
    }
}

fn ids(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .view
        .nodes
        .iter()
        .map(|n| n.id.to_string())
        .collect()
}

fn instance(id: &str, port: u16, description: &str, enabled: bool) -> Vec<u8> {
    format!(
        r#"{{"name":"cluster_servers","id":"{id}","address":"127.0.0.1","port":{port},"sslPort":null,"payload":{{"@class":"java.util.LinkedHashMap","description":"{description}"}},"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":null,"enabled":{enabled}}}"#
    )
    .into_bytes()
}

/// Creates `path`'s ancestors as Curator does (containers), then `path`.
async fn create(client: &Client, path: &str, data: &[u8], mode: CreateMode) -> String {
    let parent = &path[..path.rfind('/').unwrap()];
    let mut at = String::new();
    for part in parent.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        match client
            .create(
                &at,
                &[],
                &CreateMode::Container.with_acls(Acls::anyone_all()),
            )
            .await
        {
            Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
            Err(e) => panic!("create {at}: {e}"),
        }
    }
    let (_, sequence) = client
        .create(path, data, &mode.with_acls(Acls::anyone_all()))
        .await
        .unwrap_or_else(|e| panic!("create {path}: {e}"));
    if matches!(mode, CreateMode::EphemeralSequential) {
        format!("{path}{sequence}")
    } else {
        path.to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_membership_data_and_leader() {
    let zk = ZooKeeper::start();
    let writer = Client::connect(&zk.connect_string()).await.unwrap();
    let views = follow(settings(&zk.connect_string(), Layout::Auto));

    // No parents yet: an empty view, published once the session is up.
    let first = wait_for(&views, "the first view", |s| s.has_view).await;
    assert!(first.view.nodes.is_empty());
    assert!(!first.view.stale);
    assert!(
        first
            .view
            .leader
            .reason
            .as_deref()
            .unwrap()
            .contains("no job-engine election")
    );

    let services = format!("{BASE}/service/cluster_servers");
    let started = Instant::now();
    create(
        &writer,
        &format!("{services}/a"),
        &instance("a", 7070, "all", true),
        CreateMode::Ephemeral,
    )
    .await;
    wait_for(&views, "a registered", |s| ids(s) == ["a"]).await;
    eprintln!("registration → view: {:?}", started.elapsed());
    create(
        &writer,
        &format!("{services}/b"),
        &instance("b", 7071, "query", true),
        CreateMode::Ephemeral,
    )
    .await;
    let both = wait_for(&views, "b registered", |s| ids(s) == ["a", "b"]).await;
    assert_eq!(both.view.nodes[1].modes, Modes::QUERY);
    assert_eq!(both.query_nodes.len(), 2);

    // The KAP 2.4 / 3.0 service name is read too under `auto`.
    let kap = format!("{BASE}/service/kylin");
    let kap_json = br#"{"name":"kylin","id":"k","address":"127.0.0.1","port":7072,"sslPort":null,"payload":{"description":"127.0.0.1:7072"},"registrationTimeUTC":1,"serviceType":"DYNAMIC","uriSpec":null}"#;
    create(
        &writer,
        &format!("{kap}/k"),
        kap_json,
        CreateMode::Ephemeral,
    )
    .await;
    wait_for(&views, "the KAP node", |s| ids(s) == ["a", "b", "k"]).await;

    // A malformed znode is skipped; the rest of the view stands.
    create(
        &writer,
        &format!("{services}/bad"),
        b"{not json",
        CreateMode::Ephemeral,
    )
    .await;
    create(
        &writer,
        &format!("{services}/c"),
        &instance("c", 7073, "job", true),
        CreateMode::Ephemeral,
    )
    .await;
    wait_for(&views, "c despite bad", |s| ids(s) == ["a", "b", "c", "k"]).await;

    // Data change: Curator's updateService toggling `enabled`.
    writer
        .set_data(
            &format!("{services}/a"),
            &instance("a", 7070, "all", false),
            None,
        )
        .await
        .unwrap();
    wait_for(&views, "a disabled", |s| {
        s.view
            .nodes
            .first()
            .is_some_and(|n| &*n.id == "a" && !n.enabled)
    })
    .await;

    // Election: lowest sequence leads; data host:port maps to c.
    let election = format!("{BASE}/job_engine/leader");
    let first_lock = create(
        &writer,
        &format!("{election}/_c_6f1f0f7f-lock-"),
        b"127.0.0.1:7073",
        CreateMode::EphemeralSequential,
    )
    .await;
    create(
        &writer,
        &format!("{election}/_c_00000000-lock-"),
        b"127.0.0.1:7070",
        CreateMode::EphemeralSequential,
    )
    .await;
    let led = wait_for(&views, "c leads", |s| {
        s.view.leader.node_id.as_deref() == Some("c")
    })
    .await;
    assert!(led.leader.is_some(), "the leader is routable");
    let started = Instant::now();
    writer.delete(&first_lock, None).await.unwrap();
    wait_for(&views, "a leads after c's lock is gone", |s| {
        s.view.leader.node_id.as_deref() == Some("a")
    })
    .await;
    eprintln!("leader change → view: {:?}", started.elapsed());

    // Removal, then the container parent vanishing and coming back.
    let started = Instant::now();
    writer.delete(&format!("{services}/b"), None).await.unwrap();
    wait_for(&views, "b removed", |s| ids(s) == ["a", "c", "k"]).await;
    eprintln!("removal → view: {:?}", started.elapsed());
    for child in ["a", "bad", "c"] {
        writer
            .delete(&format!("{services}/{child}"), None)
            .await
            .unwrap();
    }
    writer.delete(&services, None).await.unwrap();
    wait_for(&views, "only k left", |s| ids(s) == ["k"]).await;
    create(
        &writer,
        &format!("{services}/d"),
        &instance("d", 7074, "all", true),
        CreateMode::Ephemeral,
    )
    .await;
    wait_for(&views, "d under a recreated parent", |s| {
        ids(s) == ["d", "k"]
    })
    .await;
    drop(zk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_zookeeper_then_survives_restart_and_expiry() {
    let mut zk = ZooKeeper::start();
    zk.stop();
    let (views, logs) = follow_logged(settings(&zk.connect_string(), Layout::Kylin31));
    // Unreachable at start: nothing published, so /readyz stays false.
    assert!(
        views
            .wait_for(Instant::now() + Duration::from_millis(700), |s| s.has_view)
            .await
            .is_none(),
        "a view was published without ZooKeeper"
    );
    zk.spawn();
    let writer = Client::connect(&zk.connect_string()).await.unwrap();
    let services = format!("{BASE}/service/cluster_servers");
    create(
        &writer,
        &format!("{services}/a"),
        &instance("a", 7070, "all", true),
        CreateMode::Persistent,
    )
    .await;
    wait_for(&views, "a once ZooKeeper is up", |s| {
        ids(s) == ["a"] && !s.view.stale
    })
    .await;

    // Restart: the last view keeps serving, marked stale, then resyncs.
    zk.stop();
    let stale = wait_for(&views, "stale while ZooKeeper is down", |s| s.view.stale).await;
    assert_eq!(ids(&stale), ["a"], "the last view is kept");
    assert_eq!(stale.query_nodes.len(), 1, "and still routed");
    zk.spawn();
    wait_for(&views, "fresh after restart", |s| !s.view.stale).await;
    let writer = Client::connect(&zk.connect_string()).await.unwrap();
    create(
        &writer,
        &format!("{services}/b"),
        &instance("b", 7071, "all", true),
        CreateMode::Persistent,
    )
    .await;
    wait_for(&views, "b after restart", |s| ids(s) == ["a", "b"]).await;

    // Expiry: a frozen server outlives the 2 s session; the provider needs
    // a new session and a full reread.
    let sessions = logs.sessions();
    let old_session = sessions
        .last()
        .expect("a session before the freeze")
        .clone();
    zk.signal("STOP");
    wait_for(&views, "stale while frozen", |s| s.view.stale).await;
    // Time itself is what expires the session (on the server's clock, which
    // runs on while it is frozen): nothing to poll for.
    tokio::time::sleep(Duration::from_secs(3)).await;
    zk.signal("CONT");
    wait_for(&views, "fresh after expiry", |s| !s.view.stale).await;
    // The old session did not survive the freeze: the provider saw it
    // expire and follows on a new one.
    logs.wait_for_line("ZooKeeper session expired").await;
    let deadline = Instant::now() + WAIT;
    while logs.sessions().len() <= sessions.len() {
        assert!(Instant::now() < deadline, "no new session: {}", logs.text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let new_session = logs.sessions().last().unwrap().clone();
    assert_ne!(new_session, old_session, "{}", logs.text());
    let writer = Client::connect(&zk.connect_string()).await.unwrap();
    writer.delete(&format!("{services}/a"), None).await.unwrap();
    create(
        &writer,
        &format!("{services}/c"),
        &instance("c", 7072, "all", true),
        CreateMode::Persistent,
    )
    .await;
    wait_for(&views, "watches re-armed in the new session", |s| {
        ids(s) == ["b", "c"]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chroot_digest_auth_and_hostnames() {
    let zk = ZooKeeper::start();
    let writer = Client::connector()
        .with_auth("digest", b"kylin:secret")
        .connect(&zk.connect_string())
        .await
        .unwrap();
    // Everything under a chroot; the service directory readable only by
    // the `kylin` digest user (Kylin's kylin.env.zookeeper.zk-auth).
    let services = format!("/chrooted{BASE}/service/cluster_servers");
    create(
        &writer,
        &format!("{services}/placeholder"),
        b"",
        CreateMode::Persistent,
    )
    .await;
    writer
        .delete(&format!("{services}/placeholder"), None)
        .await
        .unwrap();
    writer.delete(&services, None).await.unwrap();
    writer
        .create(
            &services,
            &[],
            &CreateMode::Container.with_acls(Acls::creator_all()),
        )
        .await
        .unwrap();
    let register = |id: &'static str, host: &'static str, port: u16| {
        let json = format!(
            r#"{{"name":"cluster_servers","id":"{id}","address":"{host}","port":{port},"payload":{{"description":"all"}},"enabled":true}}"#
        );
        let path = format!("{services}/{id}");
        let writer = &writer;
        async move {
            writer
                .create(
                    &path,
                    json.as_bytes(),
                    &CreateMode::Ephemeral.with_acls(Acls::creator_all()),
                )
                .await
                .unwrap();
        }
    };
    register("n1", "localhost", 7070).await;
    register("n2", "kylin-node-2.invalid", 7071).await;
    register("n3", "no-such-host.invalid", 7072).await;

    let mut with_auth = settings(&zk.connect_string(), Layout::Kylin31);
    with_auth.chroot = Some("/chrooted".into());
    with_auth.digest_auth = Some("kylin:secret".into());
    with_auth
        .address_map
        .insert("kylin-node-2.invalid".into(), "127.0.0.2".into());
    let mut without_auth = with_auth.clone();
    without_auth.digest_auth = None;
    let views = follow(with_auth);
    let (denied, denied_logs) = follow_logged(without_auth);

    let resolved = wait_for(&views, "all three, resolution settled", |s| {
        ids(s) == ["n1", "n2", "n3"]
            && s.view.nodes[2]
                .resolve_error
                .as_deref()
                .is_some_and(|e| !e.starts_with("resolving"))
    })
    .await;
    let nodes = &resolved.view.nodes;
    assert!(
        nodes[0].addr.is_some_and(|a| a.ip().is_loopback()),
        "{:?}",
        nodes[0]
    );
    assert_eq!(nodes[1].addr, Some("127.0.0.2:7071".parse().unwrap()));
    assert_eq!(nodes[2].addr, None, "unresolvable: kept, not routed");
    assert_eq!(resolved.query_nodes.len(), 2);

    let seen = wait_for(&denied, "a view without credentials", |s| s.has_view).await;
    assert!(
        seen.view.nodes.is_empty(),
        "ACLs must hide the nodes: {:?}",
        seen.view.nodes
    );
    // Empty because ZooKeeper refused the read (NoAuth), not for some other
    // reason (a wrong path, a lost session).
    denied_logs
        .wait_for_line("ZooKeeper denies reading it (check discovery.auth)")
        .await;
    assert!(
        denied_logs.text().contains("Service(0)"),
        "the denied read is the service directory: {}",
        denied_logs.text()
    );
}
