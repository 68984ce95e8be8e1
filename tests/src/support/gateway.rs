//! Running the real `kylin-gateway` binary with a config written to a temp
//! file, ready once its admin `/healthz` answers.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::process::{ChildGuard, free_port, target_bin};

/// A running gateway process.
pub struct Gateway {
    pub process: ChildGuard,
    pub http_port: u16,
    pub admin_port: u16,
    /// Set when launched with [`Launch::https`].
    pub https_port: Option<u16>,
    pub config_path: PathBuf,
    /// Where stdout (the gateway's log) goes with [`Launch::log_to_file`].
    log_path: Option<PathBuf>,
    _dir: TempDir,
}

/// How to launch the gateway, beyond its config.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// Also listen for HTTPS (`[listen] https`) on a free port, like the
    /// others picked afresh for every start-up attempt.
    pub https: bool,
    /// `RUST_LOG` for the gateway (default: `KGW_TEST_LOG`, else `warn`).
    pub rust_log: Option<String>,
    /// Keep the gateway's log (stdout, no colours) in a file, read with
    /// [`Gateway::log`].
    pub log_to_file: bool,
    /// Environment variables for the gateway. `KYLIN_GATEWAY_ADMIN_TOKEN`
    /// is not inherited from the test's environment, only set from here.
    pub env: Vec<(String, String)>,
    /// An address-space limit (`RLIMIT_AS`, what `ulimit -v` sets), in
    /// bytes, applied with util-linux's `prlimit`, which then execs the
    /// gateway (same pid).
    pub address_space_limit: Option<u64>,
}

impl Gateway {
    /// Starts the gateway with `[listen]` filled in (free ports) and the
    /// given TOML for everything else. Waits for `/healthz`.
    pub fn start(rest_of_config: &str) -> Gateway {
        Gateway::launch(&Launch::default(), rest_of_config)
    }

    /// Like [`Gateway::start`], with the options of `launch`.
    pub fn launch(launch: &Launch, rest_of_config: &str) -> Gateway {
        // A port picked free can be taken by another test (or handed out
        // twice) before the gateway binds it; the gateway then exits at
        // start-up saying it cannot bind. Such a start is retried with fresh
        // ports; a gateway that fails to start every time still fails.
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let mut ports = Vec::new();
            while ports.len() < if launch.https { 3 } else { 2 } {
                let port = free_port();
                if !ports.contains(&port) {
                    ports.push(port);
                }
            }
            let (http_port, admin_port) = (ports[0], ports[1]);
            let https_port = ports.get(2).copied();
            let extra_listen = https_port
                .map(|p| format!("https = \"127.0.0.1:{p}\"\n"))
                .unwrap_or_default();
            let dir = TempDir::new("kgw");
            let config = format!(
                "[listen]\nhttp = \"127.0.0.1:{http_port}\"\nadmin = \"127.0.0.1:{admin_port}\"\n{extra_listen}\n\n{rest_of_config}"
            );
            let config_path = dir.path.join("gateway.toml");
            std::fs::write(&config_path, config).expect("write config");
            let rust_log = launch
                .rust_log
                .clone()
                .unwrap_or_else(|| std::env::var("KGW_TEST_LOG").unwrap_or_else(|_| "warn".into()));
            let mut command = match launch.address_space_limit {
                None => Command::new(target_bin("kylin-gateway")),
                Some(bytes) => {
                    let mut prlimit = Command::new("prlimit");
                    prlimit
                        .arg(format!("--as={bytes}"))
                        .arg(target_bin("kylin-gateway"));
                    prlimit
                }
            };
            command
                .arg("--config")
                .arg(&config_path)
                .env("RUST_LOG", rust_log)
                .env_remove("KYLIN_GATEWAY_ADMIN_TOKEN")
                .envs(launch.env.iter().map(|(k, v)| (k, v)));
            let log_path = launch.log_to_file.then(|| dir.path.join("gateway.log"));
            if let Some(path) = &log_path {
                command
                    .env("NO_COLOR", "1")
                    .stdout(std::fs::File::create(path).expect("create gateway log"));
            }
            let process =
                ChildGuard::spawn("kylin-gateway", &mut command).expect("spawn kylin-gateway");
            let mut gateway = Gateway {
                process,
                http_port,
                admin_port,
                https_port,
                config_path,
                log_path,
                _dir: dir,
            };
            let started = super::eventually("gateway listeners", Duration::from_secs(30), || {
                if let Some(status) = gateway.process.try_wait() {
                    return Some(Err(status));
                }
                for port in [Some(admin_port), Some(http_port), https_port]
                    .into_iter()
                    .flatten()
                {
                    std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
                }
                Some(Ok(()))
            });
            match started {
                Ok(()) => return gateway,
                Err(status) if attempt < ATTEMPTS => {
                    eprintln!(
                        "kylin-gateway exited during start-up ({status}); retrying on other ports"
                    );
                }
                Err(status) => panic!("kylin-gateway exited during start-up: {status}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The gateway's log so far (launched with [`Launch::log_to_file`]).
    pub fn log(&self) -> String {
        let path = self
            .log_path
            .as_ref()
            .expect("launched without Launch::log_to_file");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// Waits until `/readyz` answers 200 (a query-serving node is known).
    pub async fn wait_ready(&self) {
        let client = super::http::client();
        let url = self.admin_url("/readyz");
        super::eventually_async("gateway /readyz", Duration::from_secs(20), || async {
            super::http::get(&client, &url)
                .await
                .ok()
                .filter(|r| r.status == 200)
        })
        .await;
    }

    /// The process's peak and current resident set size in KiB
    /// (`VmHWM`, `VmRSS` from `/proc/<pid>/status`).
    pub fn memory_kib(&self) -> (u64, u64) {
        (self.status_kib("VmHWM:"), self.status_kib("VmRSS:"))
    }

    /// A `kB` field of `/proc/<pid>/status` (`"VmSize:"`, ...).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }
}

/// A temporary directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A `[discovery]` section for static nodes: `(address, mode, leader)`.
pub fn static_discovery(nodes: &[(std::net::SocketAddr, &str, bool)]) -> String {
    let mut text = String::from("[discovery]\nkind = \"static\"\n");
    for (address, mode, leader) in nodes {
        text.push_str(&format!(
            "[[discovery.nodes]]\naddress = \"{address}\"\nmode = \"{mode}\"\nleader = {leader}\n"
        ));
    }
    text
}

/// The common test cluster: the first backend is an `all` node that leads
/// the job engine, every other one a `query` node.
pub fn leader_then_query_nodes(nodes: &[super::backend::Backend]) -> String {
    let roles: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if i == 0 {
                (n.addr, "all", true)
            } else {
                (n.addr, "query", false)
            }
        })
        .collect();
    static_discovery(&roles)
}

/// The value of a Prometheus sample whose line starts with `series`
/// (name and labels as the exporter writes them, labels in any order are
/// matched by containment: every `needle` must appear in the line), summed
/// over the matching lines; `None` when no line matches.
pub fn metric_value(metrics: &str, name: &str, needles: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("not a sample: {l}"))
        })
        // No matching series is `None`, not a sum of nothing: a gauge that
        // is never exported must not read as 0.
        .fold(None, |sum, v| Some(sum.unwrap_or(0.0) + v))
}

/// One `all` node leading the job engine behind a gateway with the given
/// `[limits]` lines, ready to serve.
pub async fn one_node_with_limits(limits: &str) -> (super::backend::Backend, Gateway) {
    let node = super::backend::Backend::start("n", 0).await;
    let gateway = Gateway::start(&format!(
        "[limits]\n{limits}\n{}",
        static_discovery(&[(node.addr, "all", true)])
    ));
    gateway.wait_ready().await;
    (node, gateway)
}
