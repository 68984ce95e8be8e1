//! Real Apache Curator in tests: `tests/java/CuratorNode.java` compiled at
//! test time with the machine's `javac` against Debian's Curator jars
//! (installed with apt when missing), run as a Kylin 3.1-style node that
//! registers with ServiceDiscovery and campaigns with LeaderSelector, and
//! asked over HTTP what Curator itself sees (`/curator/instances`,
//! `/curator/leader`).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::output::NodeLog;
use super::process::ChildGuard;

const JAVA_DIR: &str = "/usr/share/java";
/// The jars the program compiles and runs against (their manifests name
/// netty and the rest of ZooKeeper's dependencies).
const JARS: &[&str] = &[
    "curator-x-discovery",
    "curator-recipes",
    "curator-framework",
    "curator-client",
    "zookeeper",
    "zookeeper-jute",
    "guava",
    "jackson-databind",
    "jackson-core",
    "jackson-annotations",
    "slf4j-api",
    "slf4j-simple",
];

fn classpath_jars() -> String {
    JARS.iter()
        .map(|jar| format!("{JAVA_DIR}/{jar}.jar"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Installs Debian's Curator packages once if a jar is missing (lock file
/// guarded, like ZooKeeper's install).
fn ensure_installed() {
    let missing = JARS
        .iter()
        .any(|jar| !Path::new(&format!("{JAVA_DIR}/{jar}.jar")).exists());
    if !missing {
        return;
    }
    let status = Command::new("flock")
        .arg("/tmp/kylin-gateway-tests-curator-install.lock")
        .arg("sh")
        .arg("-c")
        .arg(
            "test -f /usr/share/java/curator-x-discovery.jar || (apt-get update && apt-get install -y \
             libcurator-discovery-java libcurator-recipes-java libslf4j-java zookeeper)",
        )
        .status()
        .expect("run apt-get for curator");
    assert!(
        status.success(),
        "installing Debian's Curator jars failed ({status})"
    );
}

/// Compiles CuratorNode.java once per source version into the target dir
/// (`curator-node-<hash>/`); concurrent test processes each compile into
/// their own directory and the first rename wins.
pub fn compiled_classes() -> PathBuf {
    static CLASSES: OnceLock<PathBuf> = OnceLock::new();
    CLASSES
        .get_or_init(|| {
            ensure_installed();
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("java/CuratorNode.java");
            let text = std::fs::read(&source).expect("read CuratorNode.java");
            let mut hasher = DefaultHasher::new();
            text.hash(&mut hasher);
            let target_dir = target_bin_dir();
            let classes = target_dir.join(format!("curator-node-{:016x}", hasher.finish()));
            if classes.join("CuratorNode.class").exists() {
                return classes;
            }
            let staging = target_dir.join(format!("curator-node-build-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&staging);
            std::fs::create_dir_all(&staging).expect("create javac output dir");
            let output = Command::new("javac")
                .arg("-d")
                .arg(&staging)
                .arg("-cp")
                .arg(classpath_jars())
                .arg(&source)
                .output()
                .expect("run javac (is a JDK installed?)");
            assert!(
                output.status.success(),
                "javac CuratorNode.java failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            if std::fs::rename(&staging, &classes).is_err() {
                // Another process got there first.
                let _ = std::fs::remove_dir_all(&staging);
            }
            classes
        })
        .clone()
}

fn target_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf()
}

/// A running Curator node.
pub struct CuratorNode {
    pub name: String,
    pub port: u16,
    pub ready_at: Instant,
    process: ChildGuard,
    log: NodeLog,
}

impl CuratorNode {
    /// Starts a node in `mode` (all, job, query) under `base` and waits for
    /// `READY` (up to 60 s: the JVM is slow on a busy machine).
    pub fn start(zk: &str, base: &str, name: &str, mode: &str) -> CuratorNode {
        CuratorNode::start_with(zk, base, name, mode, &["--session-timeout-ms", "4000"])
    }

    /// A job-engine candidate whose instance id is `id` (also its name),
    /// with the given session timeout.
    pub fn start_candidate(zk: &str, base: &str, id: &str, session_timeout_ms: u64) -> CuratorNode {
        let timeout = session_timeout_ms.to_string();
        let args = ["--id", id, "--session-timeout-ms", &timeout];
        CuratorNode::start_with(zk, base, id, "all", &args)
    }

    /// Starts a node with more command-line arguments.
    fn start_with(zk: &str, base: &str, name: &str, mode: &str, more: &[&str]) -> CuratorNode {
        let classes = compiled_classes();
        let mut command = Command::new("java");
        command
            .arg("-Xmx128m")
            .arg("-XX:+UseSerialGC")
            .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
            .arg("-cp")
            .arg(format!("{}:{}", classes.display(), classpath_jars()))
            .arg("CuratorNode")
            .args(["--zk", zk, "--base", base, "--name", name, "--mode", mode])
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(more)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut process =
            ChildGuard::spawn(format!("curator-node {name}"), &mut command).expect("spawn java");
        let child = process.child_mut().expect("child");
        let (log, ready_at, port) = NodeLog::capture(
            child,
            &format!("curator node {name}"),
            Duration::from_secs(60),
        );
        CuratorNode {
            name: name.to_string(),
            port,
            ready_at,
            process,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Whether Curator's takeLeadership is running in this node.
    pub fn says_leader(&self) -> bool {
        self.log.says_leader()
    }

    /// The first stderr line after `since` that contains `needle`, with
    /// the time the test read it.
    pub fn logged_since(&self, since: Instant, needle: &str) -> Option<(Instant, String)> {
        self.log.logged_since(since, needle)
    }

    /// Like [`Self::logged_since`], waiting up to `timeout` for the line.
    pub fn wait_logged_since(
        &self,
        since: Instant,
        needle: &str,
        timeout: Duration,
    ) -> (Instant, String) {
        self.log.wait_logged_since(since, needle, timeout)
    }

    /// SIGKILL: a crashed JVM; its znodes stay until its session expires.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Sends SIGTERM without waiting for the exit.
    pub fn process_signal_term(&self) {
        self.process.signal("TERM");
    }

    /// SIGTERM; the shutdown hook closes the selector, the discovery and
    /// the client.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.process.terminate()
    }
}
