//! Raw → typed: defaults, range checks and cross-field checks, each failing
//! with the dotted key it concerns.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderName, Method};

use super::raw::*;
use super::*;
use crate::classify::{PathPattern, TrafficClass};

/// Parses and validates a TOML document.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let raw = parse_raw(text)?;
    validate(raw)
}

/// Like [`parse`], with a `kylin.properties` named outside the file (the
/// command line's `--kylin-properties`): for ZooKeeper discovery it takes
/// the place of `discovery.kylin_properties`, so the file may leave the
/// connect string to it. Static discovery ignores it.
pub fn parse_with_kylin_properties(
    text: &str,
    kylin_properties: Option<&std::path::Path>,
) -> Result<Config, ConfigError> {
    let mut raw = parse_raw(text)?;
    if let Some(path) = kylin_properties
        && raw.discovery.kind.as_deref() == Some("zookeeper")
    {
        raw.discovery.kylin_properties = Some(path.to_string_lossy().into_owned());
    }
    validate(raw)
}

fn parse_raw(text: &str) -> Result<RawConfig, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| toml_error(text, &e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let mut problem = inner.message().trim().to_string();
        if let Some(line) = inner.span().map(|s| line_of(text, s.start)) {
            problem.push_str(&format!(" (line {line})"));
        }
        ConfigError::new(if key == "." { "(document)".into() } else { key }, problem)
    })
}

fn toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
    ConfigError::new("(syntax)", format!("{} (line {line})", e.message().trim()))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

fn addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::new(key, format!("'{value}' is not an IP:port address")))
}

fn ms(key: &str, value: Option<u64>, default: u64, min: u64) -> Result<Duration, ConfigError> {
    let v = value.unwrap_or(default);
    if v < min {
        return Err(ConfigError::new(
            key,
            format!("must be at least {min} ms, got {v}"),
        ));
    }
    Ok(Duration::from_millis(v))
}

/// The longest `discovery.removal_grace_ms`: a departed node must not stay
/// routable for long (a re-registration takes milliseconds).
const MAX_REMOVAL_GRACE_MS: u64 = 10_000;

fn removal_grace(value: Option<u64>) -> Result<Duration, ConfigError> {
    let key = "discovery.removal_grace_ms";
    let grace = ms(key, value, 250, 0)?;
    if grace.as_millis() as u64 > MAX_REMOVAL_GRACE_MS {
        return Err(ConfigError::new(
            key,
            format!(
                "must be at most {MAX_REMOVAL_GRACE_MS} ms, got {}",
                grace.as_millis()
            ),
        ));
    }
    Ok(grace)
}

fn modes(key: &str, value: Option<&str>) -> Result<Modes, ConfigError> {
    match value {
        None => Ok(Modes::ALL),
        Some(text) => Modes::parse(text).ok_or_else(|| {
            ConfigError::new(
                key,
                format!("unknown mode '{text}' (expected all, job, query or a comma list)"),
            )
        }),
    }
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let listen = listen(raw.listen)?;
    let tls = raw.tls.map(tls).transpose()?;
    if listen.https.is_some() && tls.is_none() {
        return Err(ConfigError::new(
            "tls",
            "listen.https is set but [tls] cert and key are missing",
        ));
    }
    let discovery = discovery(raw.discovery)?;
    let fleet = fleet(raw.fleet)?;
    let fleet_zookeeper =
        fleet.enabled && (fleet.connect.is_some() || matches!(discovery, Discovery::Zookeeper(_)));
    Ok(Config {
        listen,
        tls,
        discovery,
        fleet,
        routing: routing(raw.routing)?,
        upstream: upstream(raw.upstream)?,
        health: health(raw.health)?,
        drain_timeout: ms(
            "shutdown.drain_timeout_ms",
            raw.shutdown.drain_timeout_ms,
            30_000,
            0,
        )?,
        runtime: runtime(raw.runtime)?,
        plugins: plugins(raw.plugins, fleet_zookeeper)?,
        plugin_runtime: plugin_runtime(raw.plugin_runtime)?,
        admin: AdminSettings {
            token_file: raw.admin.token_file.map(Into::into),
            public_metrics: raw.admin.public_metrics.unwrap_or(true),
        },
        limits: limits(raw.limits)?,
    })
}

/// `[listen]`: plain HTTP on 127.0.0.1:7070 unless only HTTPS is set.
fn listen(raw: RawListen) -> Result<Listen, ConfigError> {
    Ok(Listen {
        http: match raw.http.as_deref() {
            Some(v) => Some(addr("listen.http", v)?),
            None if raw.https.is_none() => Some(addr("listen.http", "127.0.0.1:7070")?),
            None => None,
        },
        https: raw
            .https
            .as_deref()
            .map(|v| addr("listen.https", v))
            .transpose()?,
        admin: addr(
            "listen.admin",
            raw.admin.as_deref().unwrap_or("127.0.0.1:7071"),
        )?,
    })
}

/// `[health]`: when a node is ejected, and for how long.
fn health(raw: RawHealth) -> Result<Ejection, ConfigError> {
    Ok(Ejection {
        threshold: match raw.eject_after {
            Some(0) => {
                return Err(ConfigError::new("health.eject_after", "must be at least 1"));
            }
            v => v.unwrap_or(3),
        },
        base: ms("health.eject_base_ms", raw.eject_base_ms, 5_000, 1)?,
        max: ms("health.eject_max_ms", raw.eject_max_ms, 300_000, 1)?,
    })
}

/// `[plugin_runtime]`: the deadline and memory of a call, the compile
/// cache, reloads, the instance pool.
fn plugin_runtime(raw: RawPluginRuntime) -> Result<PluginRuntime, ConfigError> {
    Ok(PluginRuntime {
        deadline: ms("plugin_runtime.deadline_ms", raw.deadline_ms, 2, 1)?,
        memory_bytes: match raw.memory_mb {
            Some(0) => {
                return Err(ConfigError::new(
                    "plugin_runtime.memory_mb",
                    "must be at least 1",
                ));
            }
            v => v.unwrap_or(16) << 20,
        },
        cache_dir: raw.cache_dir.map(Into::into),
        watch_files: raw.watch_files.unwrap_or(true),
        idle_instances: idle_instances(raw.idle_instances)?,
    })
}

/// `[tls]`: at least one pair (`cert`/`key`, or `[[tls.certs]]`), SNI names
/// that are DNS names or `*.` wildcards.
fn tls(raw: RawTls) -> Result<TlsSettings, ConfigError> {
    match (&raw.cert, &raw.key) {
        (Some(_), None) => return Err(ConfigError::new("tls.key", "required with tls.cert")),
        (None, Some(_)) => return Err(ConfigError::new("tls.cert", "required with tls.key")),
        (None, None) if raw.certs.is_empty() => {
            return Err(ConfigError::new(
                "tls.cert",
                "[tls] needs cert and key, or at least one [[tls.certs]]",
            ));
        }
        _ => {}
    }
    let mut certs = Vec::with_capacity(raw.certs.len());
    for (i, c) in raw.certs.into_iter().enumerate() {
        let names = match c.names {
            Some(names) => Some(sni_names(&format!("tls.certs[{i}].names"), names)?),
            None => None,
        };
        certs.push(TlsCertFiles {
            cert: c.cert.into(),
            key: c.key.into(),
            names,
        });
    }
    let min_version = match raw.min_version.as_deref().unwrap_or("1.2") {
        "1.2" => TlsVersion::Tls12,
        "1.3" => TlsVersion::Tls13,
        other => {
            return Err(ConfigError::new(
                "tls.min_version",
                format!("unknown version '{other}' (expected \"1.2\" or \"1.3\")"),
            ));
        }
    };
    Ok(TlsSettings {
        cert: raw.cert.map(Into::into),
        key: raw.key.map(Into::into),
        certs,
        client_ca: raw.client_ca.map(Into::into),
        min_version,
        watch_files: raw.watch_files.unwrap_or(true),
    })
}

/// SNI names, lower-cased: each a DNS name or `*.` and one.
fn sni_names(key: &str, names: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if names.is_empty() {
        return Err(ConfigError::new(
            key,
            "must name at least one host (or be left out for the certificate's own names)",
        ));
    }
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let lower = name.to_ascii_lowercase();
            if crate::tls::sni::valid_pattern(&lower) {
                Ok(lower)
            } else {
                Err(ConfigError::new(
                    format!("{key}[{i}]"),
                    format!("'{name}' is not a DNS name or a *.wildcard"),
                ))
            }
        })
        .collect()
}

/// `limits.idle_release_ms` by default: a connection between a BI tool's
/// requests keeps its buffers, one idle longer gives them back.
const IDLE_RELEASE_MS: u64 = 1_000;

fn limits(raw: RawLimits) -> Result<Limits, ConfigError> {
    let at_least_one = |key: &str, value: Option<usize>| match value {
        Some(0) => Err(ConfigError::new(key, "must be at least 1")),
        v => Ok(v.unwrap_or(10_000)),
    };
    Ok(Limits {
        header_read_timeout: ms(
            "limits.header_read_timeout_ms",
            raw.header_read_timeout_ms,
            10_000,
            1,
        )?,
        idle_timeout: ms("limits.idle_timeout_ms", raw.idle_timeout_ms, 60_000, 1)?,
        idle_release: match raw.idle_release_ms.unwrap_or(IDLE_RELEASE_MS) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        },
        max_connections: at_least_one("limits.max_connections", raw.max_connections)?,
        max_in_flight: at_least_one("limits.max_in_flight", raw.max_in_flight)?,
        body_read_timeout: ms(
            "limits.body_read_timeout_ms",
            raw.body_read_timeout_ms,
            60_000,
            1,
        )?,
        max_header_bytes: within(
            "limits.max_header_bytes",
            raw.max_header_bytes,
            64 * 1024,
            MIN_HEADER_BYTES..=16 << 20,
        )?,
        h2_max_concurrent_streams: within(
            "limits.h2_max_concurrent_streams",
            raw.h2_max_concurrent_streams,
            128,
            1..=u32::MAX,
        )?,
        h2_max_pending_accept_reset_streams: within(
            "limits.h2_max_pending_accept_reset_streams",
            raw.h2_max_pending_accept_reset_streams,
            20,
            1..=usize::MAX,
        )?,
        h2_max_local_error_reset_streams: within(
            "limits.h2_max_local_error_reset_streams",
            raw.h2_max_local_error_reset_streams,
            1024,
            1..=usize::MAX,
        )?,
        project_default: raw
            .project_default
            .map(|q| {
                quota(
                    "limits.project_default",
                    q.max_concurrent,
                    q.rate_per_s,
                    q.burst,
                )
            })
            .transpose()?,
        projects: project_quotas(raw.projects)?,
    })
}

/// `[[limits.projects]]`: named once each, limits as in [`quota`].
fn project_quotas(raw: Vec<RawProjectQuota>) -> Result<Vec<ProjectQuota>, ConfigError> {
    let mut seen = BTreeMap::new();
    raw.into_iter()
        .enumerate()
        .map(|(i, p)| {
            let key = format!("limits.projects[{i}]");
            if p.name.is_empty() {
                return Err(ConfigError::new(format!("{key}.name"), "must not be empty"));
            }
            if let Some(first) = seen.insert(p.name.clone(), i) {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    format!(
                        "duplicate project '{}' (also limits.projects[{first}])",
                        p.name
                    ),
                ));
            }
            let limits = quota(&key, p.max_concurrent, p.rate_per_s, p.burst)?;
            Ok(ProjectQuota {
                name: p.name,
                limits,
            })
        })
        .collect()
}

/// One quota under `key`: every limit > 0; `burst` needs `rate_per_s` and
/// defaults to it.
fn quota(
    key: &str,
    max_concurrent: Option<u64>,
    rate_per_s: Option<u64>,
    burst: Option<u64>,
) -> Result<QuotaLimits, ConfigError> {
    for (name, value) in [
        ("max_concurrent", max_concurrent),
        ("rate_per_s", rate_per_s),
        ("burst", burst),
    ] {
        if value == Some(0) {
            return Err(ConfigError::new(format!("{key}.{name}"), "must be > 0"));
        }
    }
    if burst.is_some() && rate_per_s.is_none() {
        return Err(ConfigError::new(
            format!("{key}.burst"),
            "needs rate_per_s (burst is the bucket size of that rate)",
        ));
    }
    Ok(QuotaLimits {
        max_concurrent,
        rate_per_s,
        burst: burst.or(rate_per_s),
    })
}

/// hyper's smallest HTTP/1 read buffer.
const MIN_HEADER_BYTES: usize = 8192;

/// `value` (or `default`) when it lies in `range`.
fn within<T>(
    key: &str,
    value: Option<T>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    let v = value.unwrap_or(default);
    if range.contains(&v) {
        return Ok(v);
    }
    Err(ConfigError::new(
        key,
        format!(
            "must be between {} and {}, got {v}",
            range.start(),
            range.end()
        ),
    ))
}

fn discovery(raw: RawDiscovery) -> Result<Discovery, ConfigError> {
    match raw.kind.as_deref().unwrap_or("static") {
        "static" => static_discovery(raw),
        "zookeeper" => zookeeper_discovery(raw),
        other => Err(ConfigError::new(
            "discovery.kind",
            format!("unknown kind '{other}' (expected static or zookeeper)"),
        )),
    }
}

/// `kind = "static"`: the nodes listed, at most one of them the leader.
fn static_discovery(raw: RawDiscovery) -> Result<Discovery, ConfigError> {
    for (key, set) in [
        ("connect", raw.connect.is_some()),
        ("metadata_prefix", raw.metadata_prefix.is_some()),
        ("base_path", raw.base_path.is_some()),
        ("kylin5_base_path", raw.kylin5_base_path.is_some()),
        ("layout", raw.layout.is_some()),
        ("kylin_properties", raw.kylin_properties.is_some()),
    ] {
        if set {
            return Err(ConfigError::new(
                format!("discovery.{key}"),
                "only valid with kind = \"zookeeper\"",
            ));
        }
    }
    let raw_nodes = raw.nodes.unwrap_or_default();
    if raw_nodes.is_empty() {
        return Err(ConfigError::new(
            "discovery.nodes",
            "static discovery needs at least one node",
        ));
    }
    let nodes = raw_nodes
        .into_iter()
        .enumerate()
        .map(|(i, node)| static_node(i, node))
        .collect::<Result<Vec<_>, _>>()?;
    if nodes.iter().filter(|n| n.leader).count() > 1 {
        return Err(ConfigError::new(
            "discovery.nodes",
            "more than one node has leader = true",
        ));
    }
    Ok(Discovery::Static(StaticDiscovery {
        nodes,
        address_map: address_map(raw.address_map)?,
    }))
}

/// `discovery.address_map`: every target is a host, or host:port with a
/// port there is (a typo would otherwise be looked up as a host name).
fn address_map(
    raw: Option<BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let map = raw.unwrap_or_default();
    for (from, to) in &map {
        let bare_host =
            crate::discovery::is_host_name(to) || to.parse::<std::net::IpAddr>().is_ok();
        if !bare_host && crate::discovery::split_host_port(to).is_none() {
            return Err(ConfigError::new(
                format!("discovery.address_map.\"{from}\""),
                format!("'{to}' is not host or host:port"),
            ));
        }
    }
    Ok(map)
}

/// `discovery.nodes[i]`.
fn static_node(i: usize, n: RawStaticNode) -> Result<StaticNode, ConfigError> {
    let key = format!("discovery.nodes[{i}]");
    if crate::discovery::split_host_port(&n.address).is_none() {
        return Err(ConfigError::new(
            format!("{key}.address"),
            format!("'{}' is not host:port", n.address),
        ));
    }
    let modes = modes(&format!("{key}.mode"), n.mode.as_deref())?;
    let leader = n.leader.unwrap_or(false);
    if leader && !modes.job {
        return Err(ConfigError::new(
            format!("{key}.leader"),
            "a query-only node cannot lead the job engine",
        ));
    }
    if n.ssl_port == Some(0) {
        return Err(ConfigError::new(
            format!("{key}.ssl_port"),
            "must be a port from 1 to 65535",
        ));
    }
    Ok(StaticNode {
        ssl_port: n.ssl_port,
        id: n.id.unwrap_or_else(|| n.address.clone()),
        address: n.address,
        modes,
        leader,
        enabled: n.enabled.unwrap_or(true),
    })
}

/// `kind = "zookeeper"`: where to connect, which layouts to read, the
/// timeouts.
fn zookeeper_discovery(raw: RawDiscovery) -> Result<Discovery, ConfigError> {
    if raw.nodes.is_some() {
        return Err(ConfigError::new(
            "discovery.nodes",
            "only valid with kind = \"static\"",
        ));
    }
    let connect = raw.connect.clone().unwrap_or_default();
    if connect.trim().is_empty() && raw.kylin_properties.is_none() {
        return Err(ConfigError::new(
            "discovery.connect",
            "zookeeper discovery needs a connect string (or discovery.kylin_properties)",
        ));
    }
    let (hosts, chroot) = kylin_properties::split_connect(&connect)
        .map_err(|p| ConfigError::new("discovery.connect", p))?;
    let base_path = base_path(&raw)?;
    let layout = layout(raw.layout.as_deref())?;
    let kylin5_base_path = match &raw.kylin5_base_path {
        Some(path) => absolute_path("discovery.kylin5_base_path", path)?,
        None => base_path.clone(),
    };
    if raw.kylin5_base_path.is_some() && !matches!(layout, Layout::Auto | Layout::Kylin5) {
        return Err(ConfigError::new(
            "discovery.kylin5_base_path",
            "only valid with layout \"auto\" or \"kylin-5\"",
        ));
    }
    let digest_auth = digest_auth("discovery.auth", raw.auth.as_deref())?;
    Ok(Discovery::Zookeeper(ZookeeperSettings {
        hosts,
        chroot,
        base_path,
        kylin5_base_path,
        layout,
        session_timeout: ms(
            "discovery.session_timeout_ms",
            raw.session_timeout_ms,
            10_000,
            1_000,
        )?,
        connect_timeout: ms(
            "discovery.connect_timeout_ms",
            raw.connect_timeout_ms,
            5_000,
            100,
        )?,
        digest_auth,
        default_mode: modes("discovery.default_mode", raw.default_mode.as_deref())?,
        leader_address: raw.leader_address.clone(),
        leader_check_interval: ms(
            "discovery.leader_check_interval_ms",
            raw.leader_check_interval_ms,
            10_000,
            0,
        )?,
        removal_grace: removal_grace(raw.removal_grace_ms)?,
        address_map: address_map(raw.address_map.clone())?,
        kylin_properties: raw.kylin_properties.clone().map(Into::into),
        base_path_explicit: raw.base_path.is_some() || raw.metadata_prefix.is_some(),
        kylin5_base_path_explicit: raw.kylin5_base_path.is_some(),
    }))
}

/// `discovery.base_path`, or `/kylin/<metadata_prefix>` (not both).
fn base_path(raw: &RawDiscovery) -> Result<String, ConfigError> {
    match (&raw.base_path, &raw.metadata_prefix) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            "discovery.base_path",
            "set base_path or metadata_prefix, not both",
        )),
        (Some(path), None) => absolute_path("discovery.base_path", path),
        (None, prefix) => Ok(format!(
            "/kylin/{}",
            kylin_properties::metadata_prefix(prefix.as_deref().unwrap_or("kylin_metadata"))
        )),
    }
}

/// A znode path: starts with `/`, no trailing `/` (except the root).
fn absolute_path(key: &str, path: &str) -> Result<String, ConfigError> {
    if !path.starts_with('/') || (path.len() > 1 && path.ends_with('/')) {
        return Err(ConfigError::new(
            key,
            format!("'{path}' must start with '/' and not end with one"),
        ));
    }
    Ok(path.to_string())
}

fn layout(raw: Option<&str>) -> Result<Layout, ConfigError> {
    Ok(match raw.unwrap_or("auto") {
        "auto" => Layout::Auto,
        "kap-2.4" => Layout::Kap24,
        "kylin-3.0" => Layout::Kylin30,
        "kylin-3.1" => Layout::Kylin31,
        "kylin-5" => Layout::Kylin5,
        other => {
            return Err(ConfigError::new(
                "discovery.layout",
                format!(
                    "unknown layout '{other}' (expected auto, kap-2.4, kylin-3.0, kylin-3.1 or kylin-5)"
                ),
            ));
        }
    })
}

fn routing(raw: RawRouting) -> Result<Routing, ConfigError> {
    let api_base = raw.api_base.unwrap_or_else(|| "/kylin/api".into());
    if !api_base.starts_with('/') {
        return Err(ConfigError::new("routing.api_base", "must start with '/'"));
    }
    let balance = balance_kind(raw.balance.as_deref())?;
    let hash_key = raw.hash_key.as_deref().map(parse_hash_key).transpose()?;
    if balance == BalanceKind::ConsistentHash && hash_key.is_none() {
        return Err(ConfigError::new(
            "routing.hash_key",
            "consistent-hash needs a key: header:NAME, query:NAME or cookie:NAME",
        ));
    }
    let load_factor = raw.load_factor.unwrap_or(1.25);
    if !(load_factor >= 1.0 && load_factor.is_finite()) {
        return Err(ConfigError::new(
            "routing.load_factor",
            "must be a number >= 1.0",
        ));
    }
    let rules = raw
        .rules
        .into_iter()
        .enumerate()
        .map(|(i, rule)| routing_rule(i, rule))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Routing {
        api_base,
        balance,
        hash_key,
        load_factor,
        session_cookie: cookie_name("routing.session_cookie", raw.session_cookie, "JSESSIONID")?,
        affinity_cookie: cookie_name(
            "routing.affinity_cookie",
            raw.affinity_cookie,
            "KYLIN_GW_NODE",
        )?,
        job_hold: ms("routing.job_hold_ms", raw.job_hold_ms, 15_000, 0)?,
        job_hold_body_bytes: raw.job_hold_body_bytes.unwrap_or(1 << 20),
        retry_after_s: raw.retry_after_s.unwrap_or(5).max(1),
        rules,
    })
}

/// `routing.balance`.
fn balance_kind(name: Option<&str>) -> Result<BalanceKind, ConfigError> {
    match name.unwrap_or("p2c") {
        "p2c" | "power-of-two-choices" => Ok(BalanceKind::PowerOfTwoChoices),
        "round-robin" => Ok(BalanceKind::RoundRobin),
        "consistent-hash" => Ok(BalanceKind::ConsistentHash),
        other => Err(ConfigError::new(
            "routing.balance",
            format!("unknown balancer '{other}' (expected p2c, round-robin or consistent-hash)"),
        )),
    }
}

/// `routing.rules[i]`.
fn routing_rule(i: usize, r: RawRule) -> Result<Rule, ConfigError> {
    let key = format!("routing.rules[{i}]");
    let class = TrafficClass::parse(&r.class).ok_or_else(|| {
        ConfigError::new(
            format!("{key}.class"),
            format!("unknown class '{}' (expected query, job or other)", r.class),
        )
    })?;
    let path = PathPattern::parse(&r.path)
        .map_err(|e| ConfigError::new(format!("{key}.path"), e.to_string()))?;
    let methods = r
        .methods
        .iter()
        .map(|m| {
            Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                ConfigError::new(
                    format!("{key}.methods"),
                    format!("'{m}' is not an HTTP method"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Rule {
        methods,
        path,
        class,
    })
}

/// A cookie name setting (`key`), `default` when unset.
fn cookie_name(key: &str, value: Option<String>, default: &str) -> Result<String, ConfigError> {
    let v = value.unwrap_or_else(|| default.to_string());
    if v.is_empty()
        || !v
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
    {
        return Err(ConfigError::new(
            key,
            format!("'{v}' is not a valid cookie name"),
        ));
    }
    Ok(v)
}

fn parse_hash_key(text: &str) -> Result<HashKey, ConfigError> {
    let err = || {
        ConfigError::new(
            "routing.hash_key",
            format!("'{text}' is not header:NAME, query:NAME or cookie:NAME"),
        )
    };
    let (kind, name) = text.split_once(':').ok_or_else(err)?;
    if name.is_empty() {
        return Err(err());
    }
    match kind {
        "header" => Ok(HashKey::Header(
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| err())?,
        )),
        "query" => Ok(HashKey::QueryParam(name.to_string())),
        "cookie" => Ok(HashKey::Cookie(name.to_string())),
        _ => Err(err()),
    }
}

fn upstream(raw: RawUpstream) -> Result<Upstream, ConfigError> {
    let tls_insecure = raw.tls_insecure.unwrap_or(false);
    if tls_insecure && raw.tls_ca.is_some() {
        return Err(ConfigError::new(
            "upstream.tls_insecure",
            "set tls_ca (verify against it) or tls_insecure (verify nothing), not both",
        ));
    }
    Ok(Upstream {
        tls: raw.tls.unwrap_or(false),
        tls_ca: raw.tls_ca.map(Into::into),
        tls_insecure,
        connect_timeout: ms(
            "upstream.connect_timeout_ms",
            raw.connect_timeout_ms,
            1_000,
            1,
        )?,
        // Kylin queries can run for minutes; the default follows Kylin's own
        // query timeout ceiling rather than a web default.
        response_header_timeout: ms(
            "upstream.response_header_timeout_ms",
            raw.response_header_timeout_ms,
            300_000,
            1,
        )?,
        retries: raw.retries.unwrap_or(2),
        replay_response_bytes: replay_response_bytes(raw.replay_response_bytes)?,
        pool_idle_timeout: ms(
            "upstream.pool_idle_timeout_ms",
            raw.pool_idle_timeout_ms,
            90_000,
            0,
        )?,
        pool_max_idle_per_host: raw.pool_max_idle_per_host.unwrap_or(64),
    })
}

fn runtime(raw: RawRuntime) -> Result<RuntimeSettings, ConfigError> {
    let kind = match raw.kind.as_deref().unwrap_or("current-thread") {
        "multi-thread" => RuntimeKind::MultiThread,
        "current-thread" => RuntimeKind::CurrentThread,
        other => {
            return Err(ConfigError::new(
                "runtime.kind",
                format!("'{other}' is not multi-thread or current-thread"),
            ));
        }
    };
    let threads = raw.threads.unwrap_or(0);
    if threads > 1024 {
        return Err(ConfigError::new(
            "runtime.threads",
            format!("must be at most 1024, got {threads}"),
        ));
    }
    Ok(RuntimeSettings { kind, threads })
}

/// At most 16 MiB: each buffered answer is held in memory whole.
fn replay_response_bytes(raw: Option<usize>) -> Result<usize, ConfigError> {
    const MAX: usize = 16 << 20;
    match raw.unwrap_or(64 << 10) {
        n if n > MAX => Err(ConfigError::new(
            "upstream.replay_response_bytes",
            format!("{n} is more than {MAX} (16 MiB)"),
        )),
        n => Ok(n),
    }
}

fn plugins(raw: Vec<RawPlugin>, fleet_zookeeper: bool) -> Result<Vec<PluginSpec>, ConfigError> {
    let mut seen = BTreeMap::new();
    raw.into_iter()
        .enumerate()
        .map(|(i, p)| {
            let key = format!("plugins[{i}]");
            if p.name.is_empty() {
                return Err(ConfigError::new(format!("{key}.name"), "must not be empty"));
            }
            if seen.insert(p.name.clone(), i).is_some() {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    format!("duplicate plugin name '{}'", p.name),
                ));
            }
            let on_error = match p.on_error.as_deref().unwrap_or("fallback") {
                "fallback" => OnError::Fallback,
                "reject" => OnError::Reject,
                other => {
                    return Err(ConfigError::new(
                        format!("{key}.on_error"),
                        format!("unknown value '{other}' (expected fallback or reject)"),
                    ));
                }
            };
            let source = plugin_source(&key, p.source.as_deref(), p.path, fleet_zookeeper)?;
            let source = match source {
                PluginSource::Zookeeper { .. } => PluginSource::Zookeeper {
                    local_config: p.config.is_some(),
                },
                file => file,
            };
            Ok(PluginSpec {
                name: p.name,
                source,
                config: p.config.unwrap_or_default(),
                on_error,
            })
        })
        .collect()
}

/// `plugins[i].source` and `.path`: a file (the default) needs its path; a
/// ZooKeeper plugin has none and needs the fleet's ZooKeeper.
fn plugin_source(
    key: &str,
    source: Option<&str>,
    path: Option<String>,
    fleet_zookeeper: bool,
) -> Result<PluginSource, ConfigError> {
    match (source.unwrap_or("file"), path) {
        ("file", Some(path)) => Ok(PluginSource::File(path.into())),
        ("file", None) => Err(ConfigError::new(
            format!("{key}.path"),
            "missing (or set source = \"zookeeper\")",
        )),
        ("zookeeper", Some(_)) => Err(ConfigError::new(
            format!("{key}.path"),
            "a plugin with source = \"zookeeper\" has no path",
        )),
        ("zookeeper", None) if !fleet_zookeeper => Err(ConfigError::new(
            format!("{key}.source"),
            "\"zookeeper\" needs the fleet's ZooKeeper: zookeeper discovery or fleet.connect, \
             and fleet.enabled not false",
        )),
        ("zookeeper", None) => Ok(PluginSource::Zookeeper {
            local_config: false,
        }),
        (other, _) => Err(ConfigError::new(
            format!("{key}.source"),
            format!("unknown source '{other}' (expected file or zookeeper)"),
        )),
    }
}

/// `[fleet]`: on unless `enabled = false`; `connect` as discovery's.
fn fleet(raw: RawFleet) -> Result<FleetSettings, ConfigError> {
    let connect = match raw.connect.as_deref() {
        None => None,
        Some(text) if text.trim().is_empty() => {
            return Err(ConfigError::new("fleet.connect", "must not be empty"));
        }
        Some(text) => Some(
            kylin_properties::split_connect(text)
                .map_err(|p| ConfigError::new("fleet.connect", p))?,
        ),
    };
    if let Some(id) = &raw.id
        && (id.is_empty() || id.contains('/'))
    {
        return Err(ConfigError::new(
            "fleet.id",
            format!("'{id}' must be non-empty and without '/'"),
        ));
    }
    Ok(FleetSettings {
        enabled: raw.enabled.unwrap_or(true),
        connect,
        auth: digest_auth("fleet.auth", raw.auth.as_deref())?,
        base_path: raw
            .base_path
            .as_deref()
            .map(|p| absolute_path("fleet.base_path", p))
            .transpose()?,
        id: raw.id,
        advertise: raw.advertise,
        session_timeout: ms(
            "fleet.session_timeout_ms",
            raw.session_timeout_ms,
            10_000,
            1_000,
        )?,
    })
}

/// `digest:user:password` → `user:password`.
pub(crate) fn digest_auth(key: &str, raw: Option<&str>) -> Result<Option<String>, ConfigError> {
    raw.map(|a| {
        a.strip_prefix("digest:")
            .filter(|c| c.contains(':'))
            .map(str::to_string)
            .ok_or_else(|| ConfigError::new(key, "expected digest:user:password"))
    })
    .transpose()
}

/// `plugin_runtime.idle_instances`: 1 to 1024.
fn idle_instances(raw: Option<u64>) -> Result<usize, ConfigError> {
    match raw {
        None => Ok(PluginRuntime::default_idle_instances()),
        Some(n @ 1..=1024) => Ok(n as usize),
        Some(n) => Err(ConfigError::new(
            "plugin_runtime.idle_instances",
            format!("must be between 1 and 1024, got {n}"),
        )),
    }
}
