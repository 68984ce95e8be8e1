//! The TOML file as written: serde structs that reject unknown keys. Every
//! field is optional here; defaults and checks live in `super::validate`.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listen: RawListen,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub discovery: RawDiscovery,
    #[serde(default)]
    pub routing: RawRouting,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub shutdown: RawShutdown,
    #[serde(default)]
    pub plugins: Vec<RawPlugin>,
    #[serde(default)]
    pub plugin_runtime: RawPluginRuntime,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub runtime: RawRuntime,
    #[serde(default)]
    pub fleet: RawFleet,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub http: Option<String>,
    pub https: Option<String>,
    pub admin: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    #[serde(default)]
    pub certs: Vec<RawTlsCert>,
    pub client_ca: Option<String>,
    pub min_version: Option<String>,
    pub watch_files: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTlsCert {
    pub cert: String,
    pub key: String,
    pub names: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub kind: Option<String>,
    // static
    pub nodes: Option<Vec<RawStaticNode>>,
    // zookeeper
    pub connect: Option<String>,
    pub metadata_prefix: Option<String>,
    pub base_path: Option<String>,
    pub kylin5_base_path: Option<String>,
    pub layout: Option<String>,
    pub session_timeout_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub auth: Option<String>,
    pub kylin_properties: Option<String>,
    pub default_mode: Option<String>,
    pub leader_address: Option<String>,
    pub leader_check_interval_ms: Option<u64>,
    pub removal_grace_ms: Option<u64>,
    // both
    pub address_map: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStaticNode {
    pub address: String,
    pub id: Option<String>,
    pub mode: Option<String>,
    pub leader: Option<bool>,
    pub enabled: Option<bool>,
    pub ssl_port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    pub api_base: Option<String>,
    pub balance: Option<String>,
    pub hash_key: Option<String>,
    pub load_factor: Option<f64>,
    pub session_cookie: Option<String>,
    pub affinity_cookie: Option<String>,
    pub job_hold_ms: Option<u64>,
    pub job_hold_body_bytes: Option<u64>,
    pub retry_after_s: Option<u64>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    #[serde(default)]
    pub methods: Vec<String>,
    pub path: String,
    pub class: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub connect_timeout_ms: Option<u64>,
    pub response_header_timeout_ms: Option<u64>,
    pub retries: Option<u32>,
    pub replay_response_bytes: Option<usize>,
    pub pool_idle_timeout_ms: Option<u64>,
    pub pool_max_idle_per_host: Option<usize>,
    pub tls: Option<bool>,
    pub tls_ca: Option<String>,
    pub tls_insecure: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub eject_after: Option<u32>,
    pub eject_base_ms: Option<u64>,
    pub eject_max_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    pub drain_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugin {
    pub name: String,
    pub path: Option<String>,
    pub source: Option<String>,
    pub config: Option<String>,
    pub on_error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPluginRuntime {
    pub deadline_ms: Option<u64>,
    pub memory_mb: Option<u64>,
    pub cache_dir: Option<String>,
    pub watch_files: Option<bool>,
    pub idle_instances: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub kind: Option<String>,
    pub threads: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub token_file: Option<String>,
    pub public_metrics: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub header_read_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub idle_release_ms: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_in_flight: Option<usize>,
    pub body_read_timeout_ms: Option<u64>,
    pub max_header_bytes: Option<usize>,
    pub h2_max_concurrent_streams: Option<u32>,
    pub h2_max_pending_accept_reset_streams: Option<usize>,
    pub h2_max_local_error_reset_streams: Option<usize>,
    pub project_default: Option<RawQuota>,
    #[serde(default)]
    pub projects: Vec<RawProjectQuota>,
}

/// `[limits.project_default]`: a project's query quota, every limit optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    pub max_concurrent: Option<u64>,
    pub rate_per_s: Option<u64>,
    pub burst: Option<u64>,
}

/// `[[limits.projects]]`: one named project's query quota.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProjectQuota {
    pub name: String,
    pub max_concurrent: Option<u64>,
    pub rate_per_s: Option<u64>,
    pub burst: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    pub enabled: Option<bool>,
    pub connect: Option<String>,
    pub auth: Option<String>,
    pub base_path: Option<String>,
    pub id: Option<String>,
    pub advertise: Option<String>,
    pub session_timeout_ms: Option<u64>,
}
