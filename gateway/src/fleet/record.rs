//! A gateway's fleet record: the Curator `ServiceInstance` JSON it
//! registers at `<base>/service/kylin_gateway/<id>` (so Curator's service
//! discovery lists gateways like any service), and the fleet as
//! `/admin/fleet` shows it. Pure: building, parsing and comparing records.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::plugin::PluginRecord;

/// Curator's service name for gateways.
pub const SERVICE_NAME: &str = "kylin_gateway";

/// The Curator `ServiceInstance` JSON of one gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRecord {
    pub name: String,
    pub id: String,
    pub address: String,
    pub port: Option<u16>,
    pub ssl_port: Option<u16>,
    pub payload: Payload,
    #[serde(rename = "registrationTimeUTC")]
    pub registration_time_utc: u64,
    pub service_type: String,
    pub uri_spec: Option<serde_json::Value>,
}

/// What the record says beyond Curator's fields. `@class` lets Curator 5's
/// serializer read it as a map, as it reads Kylin's payloads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    #[serde(rename = "@class", default = "map_class")]
    pub class: String,
    pub version: String,
    pub started_at_ms: u64,
    pub listen: Listening,
    pub plugins: Vec<PluginRecord>,
}

fn map_class() -> String {
    "java.util.LinkedHashMap".to_string()
}

/// The addresses a gateway listens on, as configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Listening {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
}

impl GatewayRecord {
    pub fn new(id: &str, address: &str, listen: Listening, started_at_ms: u64) -> GatewayRecord {
        GatewayRecord {
            name: SERVICE_NAME.to_string(),
            id: id.to_string(),
            address: address.to_string(),
            port: listen.http.map(|a| a.port()),
            ssl_port: listen.https.map(|a| a.port()),
            payload: Payload {
                class: map_class(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at_ms,
                listen,
                plugins: Vec::new(),
            },
            registration_time_utc: started_at_ms,
            service_type: "DYNAMIC".to_string(),
            uri_spec: None,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record serializes")
    }

    pub fn parse(data: &[u8]) -> Result<GatewayRecord, String> {
        serde_json::from_slice(data).map_err(|e| e.to_string())
    }

    /// Whether a plugin's last new version failed to load here.
    pub fn has_load_error(&self) -> bool {
        self.payload.plugins.iter().any(|p| p.error.is_some())
    }

    /// The plugin set, as compared across the fleet: name → sha256.
    pub fn plugin_set(&self) -> BTreeMap<&str, Option<&str>> {
        self.payload
            .plugins
            .iter()
            .map(|p| (p.name.as_str(), p.sha256.as_deref()))
            .collect()
    }
}

/// The live gateways, as last read.
#[derive(Clone, Debug, Default)]
pub struct FleetView {
    pub members: Vec<GatewayRecord>,
    /// Member znodes whose data did not parse, by id.
    pub malformed: Vec<String>,
}

impl FleetView {
    /// Live gateways (at least 1: this one, even before it has read the
    /// fleet), for sharing out limits.
    pub fn gateways(&self) -> usize {
        self.members.len().max(1)
    }

    /// The plugin set most gateways run without a load error (ties: the
    /// set with more plugins running, then the smallest, so the choice is
    /// the same on every gateway). `None` when no gateway qualifies.
    fn reference_set(&self) -> Option<BTreeMap<&str, Option<&str>>> {
        let mut counts: BTreeMap<BTreeMap<&str, Option<&str>>, usize> = BTreeMap::new();
        for member in self.members.iter().filter(|m| !m.has_load_error()) {
            *counts.entry(member.plugin_set()).or_default() += 1;
        }
        let running =
            |set: &BTreeMap<&str, Option<&str>>| set.values().filter(|s| s.is_some()).count();
        counts
            .into_iter()
            .max_by(|(a, n), (b, m)| n.cmp(m).then(running(a).cmp(&running(b))).then(b.cmp(a)))
            .map(|(set, _)| set)
    }

    /// Ids of the gateways whose plugin set differs from the most common
    /// one, or that failed to load a published version.
    pub fn differing(&self) -> Vec<&str> {
        let reference = self.reference_set();
        self.members
            .iter()
            .filter(|m| Some(m.plugin_set()) != reference || m.has_load_error())
            .map(|m| m.id.as_str())
            .collect()
    }

    /// `/admin/fleet`.
    pub fn to_json(&self, own_id: &str, connected: bool) -> serde_json::Value {
        let differing = self.differing();
        let members: Vec<serde_json::Value> = self
            .members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.id,
                    "self": m.id == own_id,
                    "address": m.address,
                    "port": m.port,
                    "ssl_port": m.ssl_port,
                    "version": m.payload.version,
                    "started_at_ms": m.payload.started_at_ms,
                    "listen": m.payload.listen,
                    "plugins": m.payload.plugins,
                    "plugins_differ": differing.contains(&m.id.as_str()),
                })
            })
            .collect();
        serde_json::json!({
            "self": own_id,
            "connected": connected,
            "gateways": self.members.len(),
            "consistent": differing.is_empty(),
            "members": members,
            "malformed": self.malformed,
        })
    }
}

/// A random id in Curator's UUID format.
pub fn random_id() -> String {
    let a = fastrand::u64(..);
    let b = fastrand::u64(..);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}
