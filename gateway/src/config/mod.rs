//! Configuration: one TOML file, parsed into [`raw`] structs that reject
//! unknown keys, then validated once into the typed [`Config`]. Errors are a
//! single line naming the key and the problem. This module never reads files;
//! the binary does.

pub mod kylin_properties;
mod raw;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::balance::health::Ejection;
use crate::classify::{ApiGeneration, Rule};
use crate::view::Modes;

pub(crate) use validate::digest_auth;
pub use validate::{parse, parse_with_kylin_properties};

/// A configuration problem: which key, and what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// The validated configuration. It serializes (for `check-config`) with
/// the same keys and shape as the input file, so the printed effective config
/// is itself a valid config file.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub listen: Listen,
    pub tls: Option<TlsSettings>,
    pub discovery: Discovery,
    pub routing: Routing,
    pub upstream: Upstream,
    #[serde(serialize_with = "ser_ejection")]
    pub health: Ejection,
    #[serde(rename = "shutdown", serialize_with = "ser_shutdown")]
    pub drain_timeout: Duration,
    pub plugins: Vec<PluginSpec>,
    pub plugin_runtime: PluginRuntime,
    pub admin: AdminSettings,
    pub limits: Limits,
    pub runtime: RuntimeSettings,
    pub fleet: FleetSettings,
}

impl Config {
    /// Makes every relative path in the config (plugins, certificates and
    /// CA bundles, the admin token file, the plugin cache, `kylin.properties`)
    /// relative to `base`, the directory of the config file, as nginx and
    /// HAProxy do: the gateway then reads the same files whatever directory
    /// it was started from. Absolute paths are kept.
    pub fn resolve_paths(&mut self, base: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        let resolve_opt = |path: &mut Option<PathBuf>| {
            if let Some(path) = path {
                resolve(path);
            }
        };
        if let Some(tls) = &mut self.tls {
            resolve_opt(&mut tls.cert);
            resolve_opt(&mut tls.key);
            resolve_opt(&mut tls.client_ca);
            for pair in &mut tls.certs {
                resolve(&mut pair.cert);
                resolve(&mut pair.key);
            }
        }
        if let Discovery::Zookeeper(settings) = &mut self.discovery {
            resolve_opt(&mut settings.kylin_properties);
        }
        resolve_opt(&mut self.upstream.tls_ca);
        for plugin in &mut self.plugins {
            if let PluginSource::File(path) = &mut plugin.source {
                resolve(path);
            }
        }
        resolve_opt(&mut self.plugin_runtime.cache_dir);
        resolve_opt(&mut self.admin.token_file);
    }

    /// The ZooKeeper the fleet registers in and plugins are published to:
    /// `fleet.connect` when set, else discovery's ensemble (after
    /// `kylin.properties` was applied), with the fleet's session timeout.
    /// `None` when the fleet is off or no ZooKeeper is known.
    pub fn fleet_zookeeper(&self) -> Option<FleetZookeeper> {
        if !self.fleet.enabled {
            return None;
        }
        let discovery = match &self.discovery {
            Discovery::Zookeeper(settings) => Some(settings),
            Discovery::Static(_) => None,
        };
        let (hosts, chroot, digest_auth) = match &self.fleet.connect {
            Some((hosts, chroot)) => (hosts.clone(), chroot.clone(), self.fleet.auth.clone()),
            None => {
                let d = discovery?;
                (d.hosts.clone(), d.chroot.clone(), d.digest_auth.clone())
            }
        };
        let base_path = match (&self.fleet.base_path, discovery) {
            (Some(path), _) => path.clone(),
            (None, Some(d)) => d.base_path.clone(),
            (None, None) => DEFAULT_BASE_PATH.to_string(),
        };
        Some(FleetZookeeper {
            hosts,
            chroot,
            base_path,
            digest_auth,
            session_timeout: self.fleet.session_timeout,
            connect_timeout: discovery.map_or(Duration::from_secs(5), |d| d.connect_timeout),
        })
    }
}

/// Kylin's default metadata base path (`/kylin/kylin_metadata`).
pub const DEFAULT_BASE_PATH: &str = "/kylin/kylin_metadata";

/// `[fleet]`: this gateway's membership in the fleet of gateways that share
/// a ZooKeeper (`crate::fleet`).
#[derive(Clone, Serialize)]
pub struct FleetSettings {
    pub enabled: bool,
    /// `fleet.connect` split into hosts and chroot; discovery's when unset.
    #[serde(serialize_with = "ser_fleet_connect")]
    pub connect: Option<(String, Option<String>)>,
    /// Digest credentials `user:pass` for `fleet.connect`. Not printed.
    #[serde(skip)]
    pub auth: Option<String>,
    /// Above `service/kylin_gateway` and `gateway/plugins`; discovery's base
    /// path when unset.
    pub base_path: Option<String>,
    /// This gateway's id in the fleet; a new random one per process when
    /// unset (as Curator's instances).
    pub id: Option<String>,
    /// The host name other gateways and operators see; the host's name
    /// when unset.
    pub advertise: Option<String>,
    #[serde(rename = "session_timeout_ms", with = "ms")]
    pub session_timeout: Duration,
}

impl std::fmt::Debug for FleetSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSettings")
            .field("enabled", &self.enabled)
            .field("connect", &self.connect)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .field("base_path", &self.base_path)
            .field("id", &self.id)
            .field("advertise", &self.advertise)
            .field("session_timeout", &self.session_timeout)
            .finish()
    }
}

fn ser_fleet_connect<S: serde::Serializer>(
    connect: &Option<(String, Option<String>)>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match connect {
        Some((hosts, chroot)) => {
            s.serialize_str(&format!("{hosts}{}", chroot.as_deref().unwrap_or("")))
        }
        None => s.serialize_none(),
    }
}

/// The fleet's ZooKeeper, resolved ([`Config::fleet_zookeeper`]).
#[derive(Clone)]
pub struct FleetZookeeper {
    pub hosts: String,
    pub chroot: Option<String>,
    pub base_path: String,
    pub digest_auth: Option<String>,
    pub session_timeout: Duration,
    pub connect_timeout: Duration,
}

impl FleetZookeeper {
    /// The connect string with chroot, as the client parses it.
    pub fn connect_string(&self) -> String {
        format!("{}{}", self.hosts, self.chroot.as_deref().unwrap_or(""))
    }
}

/// `[runtime]`: the shape of the async runtime serving requests.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RuntimeSettings {
    pub kind: RuntimeKind,
    /// Worker threads of the multi-thread runtime, or serving threads of
    /// the current-thread shape; 0: one per core the process may run on.
    pub threads: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    /// tokio's work-stealing runtime.
    MultiThread,
    /// Thread per core: each serving thread runs a current-thread runtime
    /// on its own `SO_REUSEPORT` socket, and a connection stays on the
    /// thread that accepted it.
    CurrentThread,
}

/// `[admin]`: who may use the admin API. The token itself is not part of
/// the config: the binary reads it (`crate::admin::auth`).
#[derive(Clone, Debug, Serialize)]
pub struct AdminSettings {
    pub token_file: Option<PathBuf>,
    /// Whether `/metrics` answers without the token.
    pub public_metrics: bool,
}

/// `[limits]`: bounds on what a client may hold of the gateway.
#[derive(Clone, Debug, Serialize)]
pub struct Limits {
    /// A new connection's first request head must be complete in this time.
    #[serde(rename = "header_read_timeout_ms", with = "ms")]
    pub header_read_timeout: Duration,
    /// A keep-alive connection's next request head must be complete this
    /// long after the previous answer.
    #[serde(rename = "idle_timeout_ms", with = "ms")]
    pub idle_timeout: Duration,
    /// A plaintext HTTP/1 connection without a request for this long gives
    /// back its buffers until the client sends again; `None` (0): never.
    #[serde(rename = "idle_release_ms", with = "option_ms")]
    pub idle_release: Option<Duration>,
    /// Open downstream connections per listener; more are closed at once.
    pub max_connections: usize,
    /// Requests being handled at once; more are answered 503.
    pub max_in_flight: usize,
    /// A request body must make progress (a new chunk) this often.
    #[serde(rename = "body_read_timeout_ms", with = "ms")]
    pub body_read_timeout: Duration,
    /// The largest request head (HTTP/1.1 request line and headers, or an
    /// HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Streams one HTTP/2 connection may have open at once.
    pub h2_max_concurrent_streams: u32,
    /// Streams an HTTP/2 client may reset before the gateway accepted them
    /// (a "rapid reset" flood) before the connection is closed.
    pub h2_max_pending_accept_reset_streams: usize,
    /// Streams the gateway may have to reset for one client's protocol
    /// errors before the connection is closed.
    pub h2_max_local_error_reset_streams: usize,
    /// The quota of query traffic of a project not listed in `projects`;
    /// `None`: such projects are not limited. (Tables last: TOML writes
    /// them after plain values.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_default: Option<QuotaLimits>,
    /// Per-project query quotas, fleet totals (`crate::quota`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<ProjectQuota>,
}

/// One project's query quota: configured totals for the whole fleet of
/// gateways (each enforces its share). `None`: that limit is off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QuotaLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<u64>,
    /// Requests a project may send at once above `rate_per_s`; set whenever
    /// `rate_per_s` is (defaults to it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

/// `[[limits.projects]]`: a named project's quota.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProjectQuota {
    pub name: String,
    #[serde(flatten)]
    pub limits: QuotaLimits,
}

#[derive(Clone, Debug, Serialize)]
pub struct Listen {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
}

/// `[tls]`: termination for `listen.https`. Printed with the input's keys
/// (`cert`/`key` for the default pair, `[[tls.certs]]` for the others).
#[derive(Clone, Debug, Serialize)]
pub struct TlsSettings {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub min_version: TlsVersion,
    /// Reload the certificates when their files change.
    pub watch_files: bool,
    /// Last: TOML writes arrays of tables after plain values.
    pub certs: Vec<TlsCertFiles>,
}

/// One certificate chain and key, and the SNI names it answers (`None`:
/// the DNS names of its subjectAltName, read at each load).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TlsCertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
}

/// A certificate pair with the config key it came from, which names it in
/// logs, `/admin/tls` and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSpec {
    pub key: String,
    pub files: TlsCertFiles,
}

impl TlsSettings {
    /// Every pair, the default first: `[tls]` `cert`/`key` when set, else
    /// the first of `[[tls.certs]]`.
    pub fn pairs(&self) -> Vec<CertSpec> {
        let mut pairs = Vec::with_capacity(self.certs.len() + 1);
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            pairs.push(CertSpec {
                key: "tls".into(),
                files: TlsCertFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    names: None,
                },
            });
        }
        for (i, files) in self.certs.iter().enumerate() {
            pairs.push(CertSpec {
                key: format!("tls.certs[{i}]"),
                files: files.clone(),
            });
        }
        pairs
    }
}

/// The lowest TLS version the HTTPS listener accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
// Built once at start-up and read by discovery alone, never per request:
// boxing the ZooKeeper settings would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Discovery {
    Static(StaticDiscovery),
    Zookeeper(ZookeeperSettings),
}

impl Discovery {
    /// Whose REST API the built-in classification rules follow: the
    /// layout's generation when one is named, every generation otherwise.
    pub fn api_generation(&self) -> ApiGeneration {
        match self {
            Discovery::Static(_) => ApiGeneration::Any,
            Discovery::Zookeeper(z) => match z.layout {
                Layout::Auto => ApiGeneration::Any,
                Layout::Kap24 | Layout::Kylin30 | Layout::Kylin31 => ApiGeneration::Kylin3,
                Layout::Kylin5 => ApiGeneration::Kylin5,
            },
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct StaticDiscovery {
    pub nodes: Vec<StaticNode>,
    pub address_map: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StaticNode {
    pub id: String,
    /// `host:port` as a Kylin node would advertise it.
    pub address: String,
    #[serde(rename = "mode", serialize_with = "ser_modes")]
    pub modes: Modes,
    pub leader: bool,
    pub enabled: bool,
    /// The node's HTTPS port: reached over TLS there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_port: Option<u16>,
}

/// Which znode layout to read (see `../shared/kylin-zookeeper.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Layout {
    /// Read every layout at once: both Curator service names (`kylin`,
    /// `cluster_servers`) under the base path and Kylin 5's
    /// `services/{all,job,query}` under the Kylin 5 base path. The cluster
    /// is taken for a Kylin 5 one (no election) while one of the latter
    /// directories exists and no job-engine leader is elected.
    #[serde(rename = "auto")]
    Auto,
    /// KAP 2.4: `service/kylin`, leader data is a bare IP.
    #[serde(rename = "kap-2.4")]
    Kap24,
    /// Kylin 3.0.x: `service/kylin`.
    #[serde(rename = "kylin-3.0")]
    Kylin30,
    /// Kylin 3.1.x and 4.0.x: `service/cluster_servers`.
    #[serde(rename = "kylin-3.1")]
    Kylin31,
    /// Kylin 5: Spring Cloud ZooKeeper's `services/<mode>/<uuid>` under
    /// `/kylin/<metadata url unique id>`; no job-engine election.
    #[serde(rename = "kylin-5")]
    Kylin5,
}

#[derive(Clone)]
pub struct ZookeeperSettings {
    /// Comma-separated `host:port` list, without chroot.
    pub hosts: String,
    /// Chroot from the connect string (`/some/root`), if any.
    pub chroot: Option<String>,
    /// Base path under the chroot, e.g. `/kylin/kylin_metadata`.
    pub base_path: String,
    /// Kylin 5's base path (`/kylin/<unique id>`, above `services/`); the
    /// same as `base_path` unless set or derived from `kylin.properties`.
    pub kylin5_base_path: String,
    pub layout: Layout,
    pub session_timeout: Duration,
    pub connect_timeout: Duration,
    /// Digest credentials `user:pass` (Kylin's `kylin.env.zookeeper.zk-auth`
    /// without the `digest:` scheme). Not printed.
    pub digest_auth: Option<String>,
    /// Mode for instances whose payload names no known mode.
    pub default_mode: Modes,
    /// Pins the leader's address (`host:port` or IP) when election data
    /// cannot be mapped.
    pub leader_address: Option<String>,
    /// How often the elected leader is asked whether its job scheduler is
    /// active (Kylin 3.x); zero: never.
    pub leader_check_interval: Duration,
    /// How long a departed instance stays routable in case it is re-created
    /// (Curator re-registers by delete-then-create after a reconnect).
    pub removal_grace: Duration,
    /// Advertised `host:port` (or host) → address to connect to.
    pub address_map: BTreeMap<String, String>,
    /// An operator's `kylin.properties` to take the connect string, metadata
    /// prefix and auth from (applied by the binary, which reads files).
    pub kylin_properties: Option<PathBuf>,
    /// Whether `base_path` or `metadata_prefix` was set in the gateway's
    /// config (then `kylin.properties` does not override it).
    pub base_path_explicit: bool,
    /// Whether `kylin5_base_path` was set in the gateway's config (then
    /// `kylin.properties` does not override it).
    pub kylin5_base_path_explicit: bool,
}

/// Hand-written so the digest credentials never reach a log line.
impl std::fmt::Debug for ZookeeperSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZookeeperSettings")
            .field("hosts", &self.hosts)
            .field("chroot", &self.chroot)
            .field("base_path", &self.base_path)
            .field("kylin5_base_path", &self.kylin5_base_path)
            .field("layout", &self.layout)
            .field("session_timeout", &self.session_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field(
                "digest_auth",
                &self.digest_auth.as_ref().map(|_| "<redacted>"),
            )
            .field("default_mode", &self.default_mode)
            .field("leader_address", &self.leader_address)
            .field("leader_check_interval", &self.leader_check_interval)
            .field("removal_grace", &self.removal_grace)
            .field("address_map", &self.address_map)
            .field("kylin_properties", &self.kylin_properties)
            .finish_non_exhaustive()
    }
}

/// The request key for consistent hashing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    Header(http::HeaderName),
    QueryParam(String),
    Cookie(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BalanceKind {
    #[serde(rename = "p2c")]
    PowerOfTwoChoices,
    RoundRobin,
    ConsistentHash,
}

#[derive(Clone, Debug, Serialize)]
pub struct Routing {
    pub api_base: String,
    pub balance: BalanceKind,
    #[serde(serialize_with = "ser_hash_key")]
    pub hash_key: Option<HashKey>,
    pub load_factor: f64,
    /// The upstream's session cookie (Kylin: `JSESSIONID`).
    pub session_cookie: String,
    /// The cookie the gateway sets to pin a session to its node.
    pub affinity_cookie: String,
    #[serde(rename = "job_hold_ms", with = "ms")]
    pub job_hold: Duration,
    pub job_hold_body_bytes: u64,
    pub retry_after_s: u64,
    #[serde(serialize_with = "ser_rules")]
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Upstream {
    #[serde(rename = "connect_timeout_ms", with = "ms")]
    pub connect_timeout: Duration,
    #[serde(rename = "response_header_timeout_ms", with = "ms")]
    pub response_header_timeout: Duration,
    pub retries: u32,
    pub replay_response_bytes: usize,
    #[serde(rename = "pool_idle_timeout_ms", with = "ms")]
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Reach every node over TLS (at its `sslPort`, else its port); nodes
    /// that register an `sslPort` are reached over TLS anyway.
    pub tls: bool,
    /// PEM bundle that node certificates must chain to; the system's
    /// roots when unset.
    pub tls_ca: Option<PathBuf>,
    /// No verification of node certificates at all.
    pub tls_insecure: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Use the built-in routing for the request.
    Fallback,
    /// Answer 503.
    Reject,
}

#[derive(Clone, Debug)]
pub struct PluginSpec {
    pub name: String,
    pub source: PluginSource,
    /// The string given to the plugin's `init`. For a ZooKeeper plugin the
    /// published config, unless this gateway overrides it (`config` set).
    pub config: String,
    pub on_error: OnError,
}

/// Where a plugin's component comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginSource {
    /// A file, reloaded when it changes.
    File(PathBuf),
    /// Published to the fleet's ZooKeeper (`kylin-gateway plugin publish`)
    /// under the plugin's name; `local_config`: this gateway's `config`
    /// replaces the published one.
    Zookeeper { local_config: bool },
}

impl PluginSpec {
    /// The file, for file plugins.
    pub fn path(&self) -> Option<&Path> {
        match &self.source {
            PluginSource::File(path) => Some(path),
            PluginSource::Zookeeper { .. } => None,
        }
    }

    /// Where the component comes from, for messages and `/admin/plugins`.
    pub fn origin(&self) -> String {
        match &self.source {
            PluginSource::File(path) => path.display().to_string(),
            PluginSource::Zookeeper { .. } => format!("zookeeper:{}", self.name),
        }
    }
}

/// Printed as the input keys: `path`, or `source = "zookeeper"`.
impl Serialize for PluginSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("plugin", 4)?;
        st.serialize_field("name", &self.name)?;
        match &self.source {
            PluginSource::File(path) => st.serialize_field("path", path)?,
            PluginSource::Zookeeper { local_config } => {
                st.serialize_field("source", "zookeeper")?;
                if !local_config {
                    st.skip_field("config")?;
                    st.serialize_field("on_error", &self.on_error)?;
                    return st.end();
                }
            }
        }
        st.serialize_field("config", &self.config)?;
        st.serialize_field("on_error", &self.on_error)?;
        st.end()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct PluginRuntime {
    #[serde(rename = "deadline_ms", with = "ms")]
    pub deadline: Duration,
    #[serde(rename = "memory_mb", serialize_with = "ser_mebibytes")]
    pub memory_bytes: u64,
    pub cache_dir: Option<PathBuf>,
    pub watch_files: bool,
    /// Idle instances kept per plugin version: more calls at once than
    /// this make instances that are dropped after use. The instance pool
    /// (address space reserved up front) is sized from it.
    pub idle_instances: usize,
}

impl PluginRuntime {
    /// Default `idle_instances`: two per core, since a call runs to the end
    /// on the worker thread that made it.
    pub fn default_idle_instances() -> usize {
        2 * std::thread::available_parallelism().map_or(2, usize::from)
    }
}

impl Default for PluginRuntime {
    fn default() -> Self {
        PluginRuntime {
            deadline: std::time::Duration::from_millis(2),
            memory_bytes: 16 << 20,
            cache_dir: None,
            watch_files: true,
            idle_instances: PluginRuntime::default_idle_instances(),
        }
    }
}

mod ms {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// An optional duration as the milliseconds of its key, 0 for none.
mod option_ms {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.map_or(0, |d| d.as_millis() as u64))
    }
}

fn ser_modes<S: serde::Serializer>(m: &Modes, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(m)
}

fn ser_hash_key<S: serde::Serializer>(k: &Option<HashKey>, s: S) -> Result<S::Ok, S::Error> {
    match k {
        None => s.serialize_none(),
        Some(HashKey::Header(h)) => s.collect_str(&format_args!("header:{h}")),
        Some(HashKey::QueryParam(q)) => s.collect_str(&format_args!("query:{q}")),
        Some(HashKey::Cookie(c)) => s.collect_str(&format_args!("cookie:{c}")),
    }
}

fn ser_ejection<S: serde::Serializer>(e: &Ejection, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("health", 3)?;
    st.serialize_field("eject_after", &e.threshold)?;
    st.serialize_field("eject_base_ms", &(e.base.as_millis() as u64))?;
    st.serialize_field("eject_max_ms", &(e.max.as_millis() as u64))?;
    st.end()
}

fn ser_shutdown<S: serde::Serializer>(drain: &Duration, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("shutdown", 1)?;
    st.serialize_field("drain_timeout_ms", &(drain.as_millis() as u64))?;
    st.end()
}

fn ser_mebibytes<S: serde::Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(bytes >> 20)
}

fn ser_rules<S: serde::Serializer>(rules: &[Rule], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::{SerializeSeq, SerializeStruct};

    struct RuleOut<'a>(&'a Rule);
    impl Serialize for RuleOut<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let methods: Vec<&str> = self.0.methods.iter().map(http::Method::as_str).collect();
            let mut st = s.serialize_struct("rule", 3)?;
            st.serialize_field("methods", &methods)?;
            st.serialize_field("path", self.0.path.as_str())?;
            st.serialize_field("class", self.0.class.as_str())?;
            st.end()
        }
    }
    let mut seq = s.serialize_seq(Some(rules.len()))?;
    for rule in rules {
        seq.serialize_element(&RuleOut(rule))?;
    }
    seq.end()
}

/// Printed as the input keys: `connect` joins hosts and chroot again; the
/// digest credentials are never printed.
impl Serialize for ZookeeperSettings {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let connect = format!("{}{}", self.hosts, self.chroot.as_deref().unwrap_or(""));
        let mut st = s.serialize_struct("zookeeper", 12)?;
        st.serialize_field("connect", &connect)?;
        st.serialize_field("base_path", &self.base_path)?;
        st.serialize_field("kylin5_base_path", &self.kylin5_base_path)?;
        st.serialize_field("layout", &self.layout)?;
        st.serialize_field(
            "session_timeout_ms",
            &(self.session_timeout.as_millis() as u64),
        )?;
        st.serialize_field(
            "connect_timeout_ms",
            &(self.connect_timeout.as_millis() as u64),
        )?;
        st.serialize_field("default_mode", &self.default_mode.to_string())?;
        st.serialize_field("leader_address", &self.leader_address)?;
        st.serialize_field(
            "leader_check_interval_ms",
            &(self.leader_check_interval.as_millis() as u64),
        )?;
        st.serialize_field("removal_grace_ms", &(self.removal_grace.as_millis() as u64))?;
        st.serialize_field("address_map", &self.address_map)?;
        st.serialize_field("kylin_properties", &self.kylin_properties)?;
        st.end()
    }
}
