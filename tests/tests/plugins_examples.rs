//! The three example plugins end to end: real components loaded by the real
//! gateway in front of in-process backends.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kylin_gateway_tests::support::RefusingPort;
use kylin_gateway_tests::support::backend::Backend;
use kylin_gateway_tests::support::gateway::Gateway;
use kylin_gateway_tests::support::http::{TestClient, client, get, send};
use kylin_gateway_tests::support::plugins::{built, plugin_toml, runtime_toml};

/// Three backends `a` (mode all, job leader), `b`, `c` (query), with
/// node ids equal to their names.
async fn cluster() -> Vec<Backend> {
    vec![
        Backend::start("a", 0).await,
        Backend::start("b", 0).await,
        Backend::start("c", 0).await,
    ]
}

fn static_toml(nodes: &[Backend]) -> String {
    static_toml_with_dead(nodes, &[])
}

/// Like [`static_toml`], plus query nodes `dead-<i>` on ports that refuse
/// connections (held, so no other test can start listening there).
fn static_toml_with_dead(nodes: &[Backend], dead: &[RefusingPort]) -> String {
    let mut toml = "[discovery]\nkind = \"static\"\n".to_string();
    for (i, port) in dead.iter().enumerate() {
        toml.push_str(&format!(
            "[[discovery.nodes]]\naddress = \"{}\"\nid = \"dead-{i}\"\nmode = \"query\"\n",
            port.addr()
        ));
    }
    for (i, node) in nodes.iter().enumerate() {
        let (mode, leader) = if i == 0 {
            ("all", true)
        } else {
            ("query", false)
        };
        toml.push_str(&format!(
            "[[discovery.nodes]]\naddress = \"{}\"\nid = \"{}\"\nmode = \"{mode}\"\nleader = {leader}\n",
            node.addr, node.name
        ));
    }
    toml
}

async fn ready(c: &TestClient, gateway: &Gateway) {
    kylin_gateway_tests::support::eventually_async("ready", Duration::from_secs(10), || async {
        get(c, &gateway.admin_url("/readyz"))
            .await
            .ok()
            .filter(|r| r.status == 200)
    })
    .await;
}

async fn query(
    c: &TestClient,
    gateway: &Gateway,
    headers: &[(&str, &str)],
    body: &str,
) -> serde_json::Value {
    let reply = send(
        c,
        "POST",
        &gateway.url("/kylin/api/query"),
        headers,
        body.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

fn sql_body(project: &str, sql: &str) -> String {
    serde_json::json!({"project": project, "sql": sql, "offset": 0, "limit": 50000}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_affinity_pins_each_query_to_one_node_and_spreads_queries() {
    let files = built();
    let nodes = cluster().await;
    let dead = [RefusingPort::new(), RefusingPort::new()];
    let gateway = Gateway::start(&format!(
        "{}\n{}\n{}\n{}",
        // Two nodes in the view are down: keys ranked to them must still
        // be served, each by one stable other node.
        static_toml_with_dead(&nodes, &dead),
        // Once ejected, they stay ejected for the rest of the test.
        "[health]\neject_base_ms = 600000",
        runtime_toml(false),
        plugin_toml(
            "affinity",
            &files.query_affinity,
            r#"{"header": "x-kylin-affinity"}"#,
            "fallback"
        ),
    ));
    let c = client();
    ready(&c, &gateway).await;

    // The same query, however it is laid out, lands on one node.
    let layouts = [
        "select part_dt, sum(price) from kylin_sales group by part_dt",
        "  select part_dt,  sum(price)\n from kylin_sales\tgroup by part_dt ",
        "select part_dt, sum(price)\nfrom kylin_sales\ngroup by part_dt",
    ];
    let mut seen = BTreeSet::new();
    for i in 0..12 {
        let reply = query(&c, &gateway, &[], &sql_body("learn_kylin", layouts[i % 3])).await;
        assert!(
            reply["headers"]["x-kylin-affinity"].is_string(),
            "the plugin's header reached the node: {reply}"
        );
        seen.insert(reply["node"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 1, "one query, one node: {seen:?}");

    // The same SQL in another project is another key; different queries
    // spread over all three nodes.
    let mut per_node: BTreeMap<String, u32> = BTreeMap::new();
    let mut first_pass = Vec::new();
    for i in 0..60 {
        let reply = query(
            &c,
            &gateway,
            &[],
            &sql_body("learn_kylin", &format!("select {i} from t")),
        )
        .await;
        let node = reply["node"].as_str().unwrap().to_string();
        *per_node.entry(node.clone()).or_default() += 1;
        first_pass.push(node);
    }
    assert_eq!(
        per_node.len(),
        3,
        "60 distinct queries use every live node: {per_node:?}"
    );
    assert!(
        per_node.values().all(|&n| n >= 5),
        "roughly even: {per_node:?}"
    );

    // Again, now that the dead nodes are ejected (the plugin sees them
    // unhealthy): every query keeps its node.
    let view = get(&c, &gateway.admin_url("/admin/nodes"))
        .await
        .unwrap()
        .json();
    for id in ["dead-0", "dead-1"] {
        let node = view
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {view}"));
        assert_eq!(node["ejected"], true, "{id} is not ejected: {node}");
        assert_eq!(node["healthy"], false, "{node}");
    }
    for (i, node) in first_pass.iter().enumerate() {
        let reply = query(
            &c,
            &gateway,
            &[],
            &sql_body("learn_kylin", &format!("select {i} from t")),
        )
        .await;
        assert_eq!(reply["node"].as_str().unwrap(), node, "query {i} moved");
    }

    let status = get(&c, &gateway.admin_url("/admin/plugins"))
        .await
        .unwrap()
        .json();
    assert_eq!(status[0]["name"], "affinity");
    // No address-space limit here: the memories are guarded, not checked.
    assert_eq!(status[0]["memory_bounds"], "guard pages", "{status}");
    assert!(
        status[0]["stats"]["calls"].as_u64().unwrap() >= 130,
        "{status}"
    );
    assert_eq!(status[0]["stats"]["failures"]["trap"], 0, "{status}");
    assert_eq!(status[0]["stats"]["failures"]["deadline"], 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_takes_its_share_and_every_flagged_request() {
    let files = built();
    let nodes = cluster().await;
    let gateway = Gateway::start(&format!(
        "{}\n{}\n{}",
        static_toml(&nodes),
        runtime_toml(false),
        plugin_toml(
            "canary",
            &files.canary,
            r#"{"nodes": ["c"], "percent": 25, "header": "x-kylin-canary", "tag": "x-canary-routed"}"#,
            "fallback"
        ),
    ));
    let c = client();
    ready(&c, &gateway).await;

    // Sequential requests reuse one instance, whose counter makes the share
    // exact: 10 of 40.
    let mut to_canary = 0;
    for i in 0..40 {
        let reply = query(&c, &gateway, &[], &sql_body("p", &format!("select {i}"))).await;
        if reply["headers"]["x-canary-routed"] == "1" {
            assert_eq!(
                reply["node"], "c",
                "a canary request went elsewhere: {reply}"
            );
            to_canary += 1;
        }
    }
    assert_eq!(to_canary, 10, "25% of 40");

    for _ in 0..5 {
        let reply = query(
            &c,
            &gateway,
            &[("x-kylin-canary", "yes")],
            &sql_body("p", "select 1"),
        )
        .await;
        assert_eq!(reply["node"], "c");
        assert_eq!(reply["headers"]["x-canary-routed"], "1");
    }
    for _ in 0..8 {
        let reply = query(
            &c,
            &gateway,
            &[("x-kylin-canary", "0")],
            &sql_body("p", "select 1"),
        )
        .await;
        assert!(
            reply["headers"]["x-canary-routed"].is_null(),
            "opted out: {reply}"
        );
    }
}

/// `HH:MM` of now + `hours` (UTC).
fn utc_hhmm_in(hours: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let minute_of_day = (now / 60 + hours * 60) % (24 * 60);
    format!("{:02}:{:02}", minute_of_day / 60, minute_of_day % 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_window_rejects_job_submissions_only_inside_the_window() {
    let files = built();
    let nodes = cluster().await;
    let inside = Gateway::start(&format!(
        "{}\n{}\n{}",
        static_toml(&nodes),
        runtime_toml(false),
        plugin_toml(
            "maintenance",
            &files.maintenance_window,
            r#"{"windows": [{"start": "00:00", "end": "24:00"}], "message": "HBase upgrade"}"#,
            "fallback"
        ),
    ));
    let outside = Gateway::start(&format!(
        "{}\n{}\n{}",
        static_toml(&nodes),
        runtime_toml(false),
        plugin_toml(
            "maintenance",
            &files.maintenance_window,
            &format!(
                r#"{{"windows": [{{"start": "{}", "end": "{}"}}]}}"#,
                utc_hhmm_in(6),
                utc_hhmm_in(7)
            ),
            "fallback"
        ),
    ));
    let c = client();
    ready(&c, &inside).await;
    ready(&c, &outside).await;

    for path in [
        "/kylin/api/cubes/sales/build",
        "/kylin/api/cubes/sales/rebuild",
        "/kylin/api/cubes/sales/rebuild2",
        "/kylin/api/cubes/sales/segs/seg1/refresh_lookup",
    ] {
        let reply = send(&c, "PUT", &inside.url(path), &[], "{}").await.unwrap();
        assert_eq!(reply.status, 503, "{path}: {}", reply.text());
        assert!(reply.text().contains("HBase upgrade"), "{}", reply.text());
        let reply = send(&c, "PUT", &outside.url(path), &[], "{}")
            .await
            .unwrap();
        assert_eq!(
            reply.status,
            200,
            "{path} outside the window: {}",
            reply.text()
        );
        assert_eq!(reply.json()["node"], "a", "jobs go to the leader");
    }
    // Job monitoring and queries pass inside the window.
    let reply = get(&c, &inside.url("/kylin/api/jobs?projectName=p"))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    query(&c, &inside, &[], &sql_body("p", "select 1")).await;
}
