//! What the simulator writes to ZooKeeper, as pure functions: the instance
//! and election paths of each Kylin/KAP layout, the ServiceInstance JSON
//! that Curator's serializer produces (field order included; Kylin 5's with
//! Spring Cloud ZooKeeper's `ZookeeperInstance` payload), the
//! LeaderSelector's protected lock-node names, and the candidate ordering
//! Curator's `StandardLockInternalsDriver` uses (by the number after
//! `lock-`, not by the whole name).

use serde::Serialize;

/// Which Kylin/KAP release the simulator imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// KAP 2.4: Curator 2.7, service `kylin`, no `enabled`, payload
    /// `host:port`, election data is the bare IP.
    #[value(name = "kap-2.4")]
    Kap24,
    /// Kylin 3.0.x: service `kylin`, payload `host:port:mode`.
    #[value(name = "kylin-3.0")]
    Kylin30,
    /// Kylin 3.1.x self-discovery: service `cluster_servers`, payload the
    /// raw `kylin.server.mode`.
    #[value(name = "kylin-3.1")]
    Kylin31,
    /// Kylin 5: Spring Cloud ZooKeeper discovery (Curator 5), one
    /// directory per mode (`services/<mode>`), payload a Spring
    /// `ZookeeperInstance` with `metadata.instance_status`; no election.
    #[value(name = "kylin-5")]
    Kylin5,
}

impl Layout {
    /// The ServiceDiscovery service name of a Kylin 3.x/KAP node (the znode
    /// under `service/`); Kylin 5's is the mode (see [`instance_dir`]).
    pub fn service_name(self) -> &'static str {
        match self {
            Layout::Kap24 | Layout::Kylin30 => "kylin",
            Layout::Kylin31 | Layout::Kylin5 => "cluster_servers",
        }
    }

    /// Curator 2.7 (KAP) has no `enabled` field in ServiceInstance.
    fn has_enabled_field(self) -> bool {
        self != Layout::Kap24
    }

    /// Whether job-capable nodes campaign in a `LeaderSelector` election
    /// (Kylin 5 owns jobs per project instead).
    pub fn elects(self) -> bool {
        self != Layout::Kylin5
    }

    /// Curator 2.7's `creatingParentsIfNeeded` made persistent parents;
    /// container parents arrived with Curator 2.9 (Kylin 3.x uses 2.12).
    pub fn parents_are_containers(self) -> bool {
        self != Layout::Kap24
    }

    /// `payload.description` as this release writes it.
    pub fn description(self, host: &str, port: u16, mode: &str) -> String {
        match self {
            Layout::Kap24 => format!("{host}:{port}"),
            Layout::Kylin30 => format!("{host}:{port}:{mode}"),
            Layout::Kylin31 | Layout::Kylin5 => mode.to_string(),
        }
    }

    /// The LeaderSelector id written as the lock node's data: Kylin 3.x
    /// sets `host:port`; KAP sets none, so Curator writes its default data,
    /// the local IP address.
    pub fn election_data(self, host: &str, port: u16) -> String {
        match self {
            Layout::Kap24 => host.to_string(),
            Layout::Kylin30 | Layout::Kylin31 | Layout::Kylin5 => format!("{host}:{port}"),
        }
    }

    /// Whether the node exposes `/kylin/api/service_discovery/state/is_active_job_node`.
    pub fn has_active_job_node_endpoint(self) -> bool {
        matches!(self, Layout::Kylin30 | Layout::Kylin31)
    }
}

/// `<base>/service/<service name>`: the directory of instance znodes.
pub fn service_dir(base: &str, layout: Layout) -> String {
    format!(
        "{}/service/{}",
        base.trim_end_matches('/'),
        layout.service_name()
    )
}

/// The directory a node's instance znode goes in: `service/<name>`, or for
/// Kylin 5 `services/<mode>` (Spring's service name is the server mode).
pub fn instance_dir(base: &str, layout: Layout, mode: &str) -> String {
    match layout {
        Layout::Kylin5 => format!("{}/services/{mode}", base.trim_end_matches('/')),
        _ => service_dir(base, layout),
    }
}

/// `<base>/job_engine/leader`: the LeaderSelector's mutex directory.
pub fn leader_dir(base: &str) -> String {
    format!("{}/job_engine/leader", base.trim_end_matches('/'))
}

/// The create path of a protected lock node (`withProtection()` puts
/// `_c_<uuid>-` before the node name `lock-`); the server appends the
/// 10-digit sequence.
pub fn protected_lock_prefix(leader_dir: &str, protection_uuid: &str) -> String {
    format!("{leader_dir}/_c_{protection_uuid}-lock-")
}

/// Whether `child` is the node created with `protection_uuid` (Curator
/// looks for it this way after a connection loss during create).
pub fn is_protected_by(child: &str, protection_uuid: &str) -> bool {
    child.starts_with(&format!("_c_{protection_uuid}-"))
}

/// The sequence number of a lock child: the digits after the last `lock-`.
pub fn lock_sequence(child: &str) -> Option<i64> {
    let at = child.rfind("lock-")?;
    child[at + "lock-".len()..].parse().ok()
}

/// Lock children in Curator's order (lowest sequence first); children
/// that are not lock nodes are left out.
pub fn sort_candidates(children: Vec<String>) -> Vec<String> {
    let mut candidates: Vec<(i64, String)> = children
        .into_iter()
        .filter_map(|child| lock_sequence(&child).map(|seq| (seq, child)))
        .collect();
    candidates.sort();
    candidates.into_iter().map(|(_, child)| child).collect()
}

/// Curator's `ServiceInstance<Map>` as Jackson serializes it: this field
/// order, `null`s written, `enabled` absent before Curator 2.12.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInstance<'a> {
    pub name: &'a str,
    pub id: &'a str,
    pub address: &'a str,
    pub port: u16,
    pub ssl_port: Option<u16>,
    pub payload: Payload<'a>,
    #[serde(rename = "registrationTimeUTC")]
    pub registration_time_utc: u64,
    pub service_type: &'static str,
    pub uri_spec: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Kylin's payload, a `LinkedHashMap`; Curator 5's default serializer
/// records its class first.
#[derive(Serialize)]
pub struct Payload<'a> {
    #[serde(rename = "@class", skip_serializing_if = "Option::is_none")]
    pub class: Option<&'static str>,
    pub description: &'a str,
}

/// What one registration needs.
pub struct Registration<'a> {
    pub layout: Layout,
    pub id: &'a str,
    pub address: &'a str,
    pub port: u16,
    pub ssl_port: Option<u16>,
    pub description: &'a str,
    pub curator5: bool,
    pub enabled: bool,
    pub registration_time_utc: u64,
}

/// Curator 2.12 always writes `enabled`; Curator 5 (observed with Debian's
/// 5.4) leaves it out while it is `true`; Curator 2.7 has no such field.
fn enabled_field(r: &Registration<'_>) -> Option<bool> {
    if r.curator5 {
        (!r.enabled).then_some(false)
    } else if r.layout.has_enabled_field() {
        Some(r.enabled)
    } else {
        None
    }
}

/// Spring Cloud ZooKeeper's `ServiceInstance<ZookeeperInstance>` as
/// Curator 5's `JsonInstanceSerializer` writes it: `enabled` left out while
/// true, the `uriSpec` Spring registers
/// (`{scheme}://{address}:{port}`), and Spring's own status in
/// `payload.metadata.instance_status`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpringServiceInstance<'a> {
    pub name: &'a str,
    pub id: &'a str,
    pub address: &'a str,
    pub port: u16,
    pub ssl_port: Option<u16>,
    pub payload: SpringPayload<'a>,
    #[serde(rename = "registrationTimeUTC")]
    pub registration_time_utc: u64,
    pub service_type: &'static str,
    pub uri_spec: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Spring's `ZookeeperInstance`, with Curator 5's class marker.
#[derive(Serialize)]
pub struct SpringPayload<'a> {
    #[serde(rename = "@class")]
    pub class: &'static str,
    /// The Spring application context id.
    pub id: String,
    pub name: &'a str,
    pub metadata: SpringMetadata,
}

#[derive(Serialize)]
pub struct SpringMetadata {
    /// `UP`, or `OUT_OF_SERVICE` for a node taken out of rotation.
    pub instance_status: &'static str,
}

/// Kylin 5's instance znode bytes for a node in `mode` (the service name).
/// A disabled node says so the Spring way: `instance_status` not `UP`.
pub fn spring_instance_json(r: &Registration<'_>, mode: &str) -> Vec<u8> {
    let part =
        |value: &str, variable: bool| serde_json::json!({"value": value, "variable": variable});
    let instance = SpringServiceInstance {
        name: mode,
        id: r.id,
        address: r.address,
        port: r.port,
        ssl_port: r.ssl_port,
        payload: SpringPayload {
            class: "org.springframework.cloud.zookeeper.discovery.ZookeeperInstance",
            id: format!("{mode}-{}", r.port),
            name: mode,
            metadata: SpringMetadata {
                instance_status: if r.enabled { "UP" } else { "OUT_OF_SERVICE" },
            },
        },
        registration_time_utc: r.registration_time_utc,
        service_type: "DYNAMIC",
        uri_spec: serde_json::json!({"parts": [
            part("scheme", true),
            part("://", false),
            part("address", true),
            part(":", false),
            part("port", true),
        ]}),
        enabled: None,
    };
    serde_json::to_vec(&instance).expect("ServiceInstance serializes")
}

/// The instance znode's bytes.
pub fn instance_json(r: &Registration<'_>) -> Vec<u8> {
    let instance = ServiceInstance {
        name: r.layout.service_name(),
        id: r.id,
        address: r.address,
        port: r.port,
        ssl_port: r.ssl_port,
        payload: Payload {
            class: r.curator5.then_some("java.util.LinkedHashMap"),
            description: r.description,
        },
        registration_time_utc: r.registration_time_utc,
        service_type: "DYNAMIC",
        uri_spec: None,
        enabled: enabled_field(r),
    };
    serde_json::to_vec(&instance).expect("ServiceInstance serializes")
}

/// A random (version 4) UUID in Java's `UUID.toString()` form.
pub fn random_uuid() -> String {
    let mut bytes: [u8; 16] = fastrand::u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
