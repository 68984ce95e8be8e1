//! Curator `ServiceInstance` JSON → a Kylin [`Instance`], leniently: every
//! Curator and Kylin version writes a slightly different document (no
//! `enabled` before Curator 2.12, `@class` in the payload with Curator 5's
//! serializer, four forms of `payload.description`), so unknown fields are
//! ignored and missing ones fall back to what the rest of the document says.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::discovery::split_host_port;
use crate::view::Modes;

/// One registered Kylin instance as its znode describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Curator's instance id (a UUID), or the znode name when absent.
    pub id: Arc<str>,
    pub host: Arc<str>,
    pub port: u16,
    pub ssl_port: Option<u16>,
    pub modes: Modes,
    /// `false` only when the document says `"enabled": false`.
    pub enabled: bool,
}

/// Why a znode's data is not a usable instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedInstance {
    #[error("data is not JSON: {0}")]
    NotJson(String),
    #[error("data is not a JSON object")]
    NotObject,
    #[error("no address (neither 'address' nor a host:port description)")]
    NoAddress,
    #[error("no usable port (neither 'port' nor a host:port description)")]
    NoPort,
}

/// Parses the data of the instance znode `znode_name`. A payload that names
/// no known mode gets `default_mode`.
pub fn parse_instance(
    znode_name: &str,
    data: &[u8],
    default_mode: Modes,
) -> Result<Instance, MalformedInstance> {
    parse_document(znode_name, &json_object(data)?, default_mode)
}

/// Instance znode data as a JSON object.
pub fn json_object(data: &[u8]) -> Result<Map<String, Value>, MalformedInstance> {
    match serde_json::from_slice(data).map_err(|e| MalformedInstance::NotJson(e.to_string()))? {
        Value::Object(doc) => Ok(doc),
        _ => Err(MalformedInstance::NotObject),
    }
}

/// [`parse_instance`] on an already parsed document.
pub fn parse_document(
    znode_name: &str,
    doc: &Map<String, Value>,
    default_mode: Modes,
) -> Result<Instance, MalformedInstance> {
    let description = doc
        .get("payload")
        .and_then(description)
        .map(str::trim)
        .unwrap_or("");
    // KAP 2.4 and 3.0 describe themselves as `host:port[:mode]`: a fallback
    // for a missing address or port.
    let described = described_address(description);
    let host = match doc.get("address").and_then(Value::as_str).map(str::trim) {
        Some(host) if !host.is_empty() => host,
        _ => described
            .map(|(h, _)| h)
            .ok_or(MalformedInstance::NoAddress)?,
    };
    let port = match doc.get("port").and_then(port_number) {
        Some(port) => port,
        None => described.map(|(_, p)| p).ok_or(MalformedInstance::NoPort)?,
    };
    let id = match doc.get("id").and_then(Value::as_str).map(str::trim) {
        Some(id) if !id.is_empty() => id,
        _ => znode_name,
    };
    Ok(Instance {
        id: id.into(),
        host: host.into(),
        port,
        ssl_port: doc.get("sslPort").and_then(port_number),
        modes: modes_from_description(description).unwrap_or(default_mode),
        enabled: doc.get("enabled").and_then(Value::as_bool).unwrap_or(true),
    })
}

/// The roles a `payload.description` names, in any of its forms: `all`,
/// `query,job` (3.1), `host:port:mode` (3.0.0-alpha2 to 3.0.2). `host:port`
/// (KAP 2.4, 3.0.0-alpha) names none.
pub fn modes_from_description(description: &str) -> Option<Modes> {
    Modes::parse(description).or_else(|| {
        let (_, last) = description.rsplit_once(':')?;
        Modes::parse(last)
    })
}

/// `payload.description`: Curator serializes Kylin's payload map as an
/// object (with `@class` under Curator 5); tolerate a bare string too.
fn description(payload: &Value) -> Option<&str> {
    match payload {
        Value::String(s) => Some(s),
        Value::Object(map) => map.get("description").and_then(Value::as_str),
        _ => None,
    }
}

/// `host:port` at the start of a description (`host:port` or
/// `host:port:mode`).
fn described_address(description: &str) -> Option<(&str, u16)> {
    let address = match description.matches(':').count() {
        1 => description,
        2 => description.rsplit_once(':')?.0,
        _ => return None,
    };
    split_host_port(address)
}

/// A port as Jackson writes it (a number), or leniently a numeric string.
fn port_number(value: &Value) -> Option<u16> {
    match value {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|&p| p != 0)
}
