//! Real ZooKeeper for tests: Debian's `zookeeper` package run as a
//! standalone server or a 3-server quorum on free loopback ports, each with
//! its own temporary data directory, ready once `srvr` reports a mode, and
//! stopped by pid when dropped. tickTime is 200 ms so sessions expire in at
//! most 4 s (maxSessionTimeout = 20 ticks) and expiry tests run fast.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::gateway::TempDir;
use super::process::{ChildGuard, free_port};

/// Where Debian puts the server jar; its manifest's Class-Path names the
/// rest (jute, netty, jackson, slf4j-api), so only a logger binding is added.
pub const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
const SLF4J_BINDING: &str = "/usr/share/java/slf4j-simple.jar";
const TICK_MS: u64 = 200;
/// The server's session-timeout cap (20 ticks): requested timeouts above it
/// are lowered to it.
pub const MAX_SESSION_TIMEOUT_MS: u64 = 20 * TICK_MS;
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Installs Debian's `zookeeper` once per machine if the jar is missing.
/// Guarded by a lock file so parallel tests do not race apt.
pub fn ensure_installed() {
    if Path::new(ZOOKEEPER_JAR).exists() {
        return;
    }
    let status = Command::new("flock")
        .arg("/tmp/kylin-gateway-tests-zookeeper-install.lock")
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "test -f {ZOOKEEPER_JAR} || (apt-get update && apt-get install -y zookeeper)"
        ))
        .status()
        .expect("run apt-get for zookeeper");
    assert!(
        status.success() && Path::new(ZOOKEEPER_JAR).exists(),
        "installing Debian's zookeeper failed ({status})"
    );
}

/// One server process (a standalone server or an ensemble member).
struct ServerProcess {
    client_port: u16,
    dir: PathBuf,
    config: PathBuf,
    jvm_flags: Vec<String>,
    process: Option<ChildGuard>,
}

impl ServerProcess {
    fn new(dir: PathBuf, client_port: u16, extra_config: &str) -> ServerProcess {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("create zookeeper data dir");
        let config = dir.join("zoo.cfg");
        std::fs::write(
            &config,
            format!(
                "tickTime={TICK_MS}\n\
                 initLimit=50\n\
                 syncLimit=25\n\
                 dataDir={}\n\
                 clientPort={client_port}\n\
                 clientPortAddress=127.0.0.1\n\
                 minSessionTimeout={}\n\
                 maxSessionTimeout={MAX_SESSION_TIMEOUT_MS}\n\
                 admin.enableServer=false\n\
                 4lw.commands.whitelist=*\n\
                 {extra_config}",
                data.display(),
                2 * TICK_MS,
            ),
        )
        .expect("write zoo.cfg");
        ServerProcess {
            client_port,
            dir,
            config,
            jvm_flags: Vec::new(),
            process: None,
        }
    }

    fn spawn(&mut self) {
        assert!(self.process.is_none(), "zookeeper already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("zookeeper.log"))
            .expect("open zookeeper log");
        let process = ChildGuard::spawn(
            format!("zookeeper:{}", self.client_port),
            Command::new("java")
                .arg("-Xmx256m")
                .arg("-XX:+UseSerialGC")
                .arg("-cp")
                .arg(format!("{ZOOKEEPER_JAR}:{SLF4J_BINDING}"))
                .arg("-Dzookeeper.jmx.log4j.disable=true")
                .args(&self.jvm_flags)
                .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
                .arg(&self.config)
                .stdout(Stdio::from(log.try_clone().expect("dup log")))
                .stderr(Stdio::from(log)),
        )
        .expect("spawn java for zookeeper");
        self.process = Some(process);
    }

    fn wait_serving(&mut self) {
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            if srvr_mode(self.client_port).is_some() {
                return;
            }
            if let Some(status) = self.process.as_mut().and_then(ChildGuard::try_wait) {
                panic!(
                    "zookeeper on port {} exited ({status}):\n{}",
                    self.client_port,
                    self.log_tail()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "zookeeper on port {} not serving after {READY_TIMEOUT:?}:\n{}",
                self.client_port,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no clean shutdown, like a crashed server.
    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("zookeeper.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Asks a server `srvr`; returns its `Mode:` (standalone, leader, follower)
/// when it is serving, `None` when it is down or not serving yet.
pub fn srvr_mode(port: u16) -> Option<String> {
    let four_letter = four_letter_word(port, "srvr")?;
    four_letter
        .lines()
        .find_map(|line| line.strip_prefix("Mode: "))
        .map(|mode| mode.trim().to_string())
}

/// Sends a four-letter command and returns the whole answer.
pub fn four_letter_word(port: u16, command: &str) -> Option<String> {
    let addr = ("127.0.0.1", port);
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(command.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// A standalone ZooKeeper server on a free loopback port.
pub struct ZkServer {
    server: ServerProcess,
    _dir: TempDir,
}

impl ZkServer {
    /// Starts a server and waits until `srvr` answers with a mode.
    pub fn start() -> ZkServer {
        ZkServer::start_with_jvm_flags(&[])
    }

    /// Starts a server whose container manager deletes empty container
    /// znodes every `interval` (ZooKeeper's default is a minute), so tests
    /// see Curator's parents vanish as they do in production.
    pub fn start_with_container_check(interval: Duration) -> ZkServer {
        ZkServer::start_with_jvm_flags(&[&format!(
            "-Dznode.container.checkIntervalMs={}",
            interval.as_millis()
        )])
    }

    /// Starts a server with extra JVM flags (`-Dzookeeper...` properties).
    pub fn start_with_jvm_flags(flags: &[&str]) -> ZkServer {
        ensure_installed();
        let dir = TempDir::new("kgw-zk");
        let mut server = ServerProcess::new(dir.path.clone(), free_port(), "");
        server.jvm_flags = flags.iter().map(|f| f.to_string()).collect();
        server.spawn();
        server.wait_serving();
        ZkServer { server, _dir: dir }
    }

    pub fn port(&self) -> u16 {
        self.server.client_port
    }

    /// `127.0.0.1:<port>`, for clients and gateway configs.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    pub fn pid(&self) -> Option<u32> {
        self.server.process.as_ref().map(ChildGuard::pid)
    }

    /// Kills the server (SIGKILL, as a crash); data stays.
    pub fn stop(&mut self) {
        self.server.kill();
    }

    /// Starts the stopped server again on the same port and data, so
    /// sessions that have not expired survive.
    pub fn start_again(&mut self) {
        self.server.spawn();
        self.server.wait_serving();
    }

    /// `stop` then `start_again`.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    pub fn log_tail(&self) -> String {
        self.server.log_tail()
    }
}

/// A quorum of servers on loopback (`server.N=127.0.0.1:peer:election`).
pub struct ZkEnsemble {
    members: Vec<ServerProcess>,
    _dir: TempDir,
}

impl ZkEnsemble {
    /// Starts `size` servers and waits until every one serves (a leader
    /// was elected).
    pub fn start(size: usize) -> ZkEnsemble {
        ensure_installed();
        let dir = TempDir::new("kgw-zk-ensemble");
        let ports: Vec<(u16, u16, u16)> = (0..size)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let servers: String = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer, election))| {
                format!("server.{}=127.0.0.1:{peer}:{election}\n", i + 1)
            })
            .collect();
        let mut members: Vec<ServerProcess> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, _, _))| {
                let member_dir = dir.path.join(format!("server{}", i + 1));
                let member = ServerProcess::new(member_dir.clone(), *client, &servers);
                std::fs::write(member_dir.join("data").join("myid"), format!("{}\n", i + 1))
                    .expect("write myid");
                member
            })
            .collect();
        for member in &mut members {
            member.spawn();
        }
        for member in &mut members {
            member.wait_serving();
        }
        ZkEnsemble { members, _dir: dir }
    }

    /// Every member, comma-separated, as Kylin's connect string lists them.
    pub fn connect_string(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn port(&self, member: usize) -> u16 {
        self.members[member].client_port
    }

    /// Kills one member (SIGKILL).
    pub fn stop(&mut self, member: usize) {
        self.members[member].kill();
    }

    /// Starts a stopped member again; waits for it to serve only if
    /// `wait` (it cannot serve while the quorum is lost).
    pub fn start_member(&mut self, member: usize, wait: bool) {
        self.members[member].spawn();
        if wait {
            self.members[member].wait_serving();
        }
    }

    /// The `srvr` mode of each member (`None` when down or not serving).
    pub fn modes(&self) -> Vec<Option<String>> {
        self.members
            .iter()
            .map(|m| srvr_mode(m.client_port))
            .collect()
    }
}

/// A plain ZooKeeper client for tests to read and write znodes directly.
pub async fn client(connect: &str) -> zookeeper_client::Client {
    zookeeper_client::Client::connector()
        .with_session_timeout(Duration::from_millis(MAX_SESSION_TIMEOUT_MS))
        .connect(connect)
        .await
        .unwrap_or_else(|e| panic!("connect to ZooKeeper {connect}: {e}"))
}
