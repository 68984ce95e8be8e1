//! A small HTML status page for operators: nodes, leader, plugins.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::balance::health::now_ms;
use crate::view::Snapshot;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn render(snapshot: &Snapshot, plugins: Option<&serde_json::Value>) -> String {
    let now = now_ms();
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=utf-8><title>kylin-gateway</title>\
         <meta http-equiv=refresh content=5><style>body{font-family:sans-serif;margin:2em}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}\
         .bad{color:#b00}.ok{color:#070}</style></head><body><h1>kylin-gateway</h1>",
    );
    let leader = snapshot.leader.map(|i| escape(&snapshot.nodes[i].label));
    let _ = write!(
        html,
        "<p>View v{} from <b>{}</b>{} &middot; job-engine leader: <b>{}</b>{}</p>",
        snapshot.version,
        snapshot.view.source,
        if snapshot.view.stale {
            " <span class=bad>(stale: source lost)</span>"
        } else {
            ""
        },
        leader.as_deref().unwrap_or("none"),
        snapshot
            .view
            .leader
            .reason
            .as_deref()
            .map(|r| format!(" <small>({})</small>", escape(r)))
            .unwrap_or_default(),
    );
    html.push_str(
        "<table><tr><th>node</th><th>address</th><th>modes</th><th>state</th><th>in flight</th>\
         <th>requests</th><th>latency</th></tr>",
    );
    for (i, n) in snapshot.nodes.iter().enumerate() {
        let state = if !n.node.enabled {
            "<span class=bad>disabled</span>".to_string()
        } else if let Some(e) = &n.node.resolve_error {
            format!("<span class=bad>unresolvable: {}</span>", escape(e))
        } else if n.state.is_ejected(now) {
            "<span class=bad>ejected</span>".to_string()
        } else {
            "<span class=ok>healthy</span>".to_string()
        };
        let _ = write!(
            html,
            "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} ms</td></tr>",
            escape(&n.node.id),
            if snapshot.leader == Some(i) {
                " &#9733;"
            } else {
                ""
            },
            escape(&n.label),
            n.node.modes,
            state,
            n.state.in_flight(),
            n.state.requests.load(Ordering::Relaxed),
            n.state.latency_ewma_us.load(Ordering::Relaxed) as f64 / 1000.0,
        );
    }
    html.push_str("</table>");
    if let Some(plugins) = plugins {
        let _ = write!(
            html,
            "<h2>Plugins</h2><pre>{}</pre>",
            escape(&serde_json::to_string_pretty(plugins).unwrap_or_default())
        );
    }
    html.push_str("<p><a href=/metrics>metrics</a> &middot; <a href=/admin/nodes>nodes</a> &middot; <a href=/admin/leader>leader</a></p></body></html>");
    html
}
