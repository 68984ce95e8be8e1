//! `kylin-gateway plugin check`: load one component the way the gateway
//! would, run `init`, and route a sample query against a sample view, so an
//! operator can try a plugin before deploying it.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};

use super::policy::{Decision, RequestFacts, RequestTime};
use super::runtime::{LoadError, PluginStats, Runtime};
use crate::classify::TrafficClass;
use crate::config::{OnError, PluginRuntime, PluginSpec};
use crate::view::{ClusterView, LeaderInfo, Modes, Node, Snapshot, ViewPublisher};

/// A view of `count` nodes `node-1`..: `node-1` runs mode `all` and leads
/// the job engine, the others serve queries; addresses `10.0.0.N:7070`.
pub fn sample_snapshot(count: usize) -> Arc<Snapshot> {
    let nodes: Vec<Node> = (1..=count)
        .map(|i| Node {
            id: format!("node-{i}").into(),
            host: format!("kylin-{i}.example").into(),
            port: 7070,
            ssl_port: None,
            modes: if i == 1 { Modes::ALL } else { Modes::QUERY },
            enabled: true,
            addr: Some(SocketAddr::from((
                [10, 0, (i / 256) as u8, (i % 256) as u8],
                7070,
            ))),
            resolve_error: None,
        })
        .collect();
    let publisher = ViewPublisher::new();
    publisher.publish(ClusterView {
        leader: LeaderInfo {
            node_id: nodes.first().map(|n| n.id.clone()),
            ..LeaderInfo::default()
        },
        nodes,
        job_routing: Default::default(),
        stale: false,
        source: "sample",
    });
    publisher.snapshot()
}

/// What `plugin check` found.
#[derive(Debug)]
pub struct CheckReport {
    pub sha256: String,
    pub classes: Vec<TrafficClass>,
    pub body_prefix_len: usize,
    pub request: String,
    pub decision: Result<Decision, String>,
}

/// Loads `bytes` with `config`, then routes a sample
/// `POST /kylin/api/query` (with a JSON body naming a project and SQL)
/// against a 4-node sample view.
pub fn check(
    bytes: &[u8],
    config: &str,
    deadline: std::time::Duration,
) -> Result<CheckReport, LoadError> {
    let settings = PluginRuntime {
        deadline,
        memory_bytes: 16 << 20,
        cache_dir: None,
        watch_files: false,
        ..PluginRuntime::default()
    };
    let runtime = Runtime::new(&settings, 1).map_err(LoadError::Compile)?;
    let spec = PluginSpec {
        name: "check".into(),
        source: crate::config::PluginSource::File("check.wasm".into()),
        config: config.to_string(),
        on_error: OnError::Fallback,
    };
    let plugin = runtime.load(&spec, bytes, Arc::new(PluginStats::new("check")))?;
    let body = br#"{"project": "learn_kylin", "sql": "select count(*) from kylin_sales", "offset": 0, "limit": 500}"#;
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let facts = RequestFacts {
        method: &Method::POST,
        path: "/kylin/api/query",
        query: None,
        headers: &headers,
        class: TrafficClass::Query,
        client: SocketAddr::from(([192, 0, 2, 1], 40000)),
        body_prefix: body,
        time: RequestTime::now(),
    };
    let decision = plugin
        .call(&facts, &sample_snapshot(4))
        .map_err(|f| format!("{}: {}", f.kind.as_str(), f.detail));
    Ok(CheckReport {
        sha256: plugin.sha256.clone(),
        classes: TrafficClass::ALL
            .into_iter()
            .filter(|c| plugin.wants(*c))
            .collect(),
        body_prefix_len: plugin.body_prefix_len(),
        request: format!(
            "POST /kylin/api/query {} (class query, 4 nodes: node-1 all+leader, node-2..4 query)",
            String::from_utf8_lossy(body)
        ),
        decision,
    })
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "sha256:   {}", self.sha256)?;
        writeln!(
            f,
            "world:    kylin-gateway:plugin/routing-plugin@0.1.0 ok, init ok"
        )?;
        writeln!(
            f,
            "needs:    classes {:?}, body prefix {} bytes",
            self.classes, self.body_prefix_len
        )?;
        writeln!(f, "request:  {}", self.request)?;
        match &self.decision {
            Ok(decision) => {
                writeln!(f, "decision: {:?}", decision.route)?;
                for (name, value) in &decision.add_headers {
                    let value = value.to_str().unwrap_or("<binary>");
                    writeln!(f, "header:   {name}: {value}")?;
                }
                Ok(())
            }
            Err(failure) => writeln!(f, "decision: FAILED {failure}"),
        }
    }
}
