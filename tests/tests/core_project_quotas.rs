//! Per-project query quotas against a real gateway process: with
//! `max_concurrent = 2`, two held queries of a project make the third a
//! 429 (JSON body naming the project and the limit, `Retry-After`) while
//! another project is served, and the place comes back once they answer;
//! a project past its burst gets 429 for its rate; `/admin/limits` and
//! `/metrics` count the rejections.

use kylin_gateway_tests::support::gateway::{Gateway, metric_value, one_node_with_limits};
use kylin_gateway_tests::support::http::{Reply, client, get, send};

/// The quotas under test; `/__kgw/sleep` (the backend answers it after
/// `ms`) is classed `query` so a query can be held at the node.
const QUOTAS: &str = r#"
[[limits.projects]]
name = "held"
max_concurrent = 2
[[limits.projects]]
name = "bursty"
rate_per_s = 1
burst = 3
[[routing.rules]]
methods = ["POST"]
path = "/__kgw/sleep"
class = "query"
"#;

/// A Kylin query of `project`, named in the JSON body as Kylin clients do,
/// after a SQL text and a nested map that both mention "held" as a
/// project: a scan fooled by either would count the query against "held".
async fn query(gateway: &Gateway, path: &str, project: &str) -> Reply {
    let body = format!(
        r#"{{"sql": "select '\"project\": \"held\"' from t", "backdoorToggles": {{"project": "held"}}, "project": "{project}", "limit": 10}}"#
    );
    send(
        &client(),
        "POST",
        &gateway.url(path),
        &[("content-type", "application/json")],
        body,
    )
    .await
    .unwrap()
}

async fn admin_json(gateway: &Gateway, path: &str) -> serde_json::Value {
    get(&client(), &gateway.admin_url(path))
        .await
        .unwrap()
        .json()
}

fn project<'a>(limits: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    limits["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no project {name} in {limits}"))
}

/// `kgw_project_rejected_total{project, limit}` on `/metrics` is 1.
async fn assert_rejected_once(gateway: &Gateway, project: &str, limit: &str) {
    let metrics = get(&client(), &gateway.admin_url("/metrics"))
        .await
        .unwrap()
        .text();
    let labels = [
        format!("project=\"{project}\""),
        format!("limit=\"{limit}\""),
    ];
    let labels = [labels[0].as_str(), labels[1].as_str()];
    let rejected = metric_value(&metrics, "kgw_project_rejected_total", &labels);
    assert_eq!(rejected, Some(1.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_concurrent_a_query_gets_429_and_other_projects_are_served() {
    let (node, gateway) = one_node_with_limits(QUOTAS).await;
    let hits_before = node.hits();
    let held = node
        .hold_queries(&gateway.url("/__kgw/sleep?ms=4000"), 2)
        .await;

    // The third, naming its project in the query string this time.
    let refused = send(
        &client(),
        "POST",
        &gateway.url("/__kgw/sleep?ms=1&project=held"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(
        refused.json(),
        serde_json::json!({"error": "project quota exceeded", "project": "held",
            "limit": "max_concurrent", "allowed": 2, "configured": 2, "gateways": 1})
    );
    assert_eq!(
        node.hits(),
        hits_before + 2,
        "the refused query reached the node"
    );
    // Another project (not listed, no default quota) is not held back,
    // though its SQL text names "held".
    let other = query(&gateway, "/kylin/api/query", "learn_kylin").await;
    assert_eq!(other.status, 200, "{}", other.text());
    let limits = admin_json(&gateway, "/admin/limits").await;
    assert_eq!(limits["gateways"], 1);
    assert_eq!(project(&limits, "held")["in_flight"], 2);
    assert_eq!(project(&limits, "held")["rejected"]["max_concurrent"], 1);
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "a held query ended before the checks"
    );

    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
    let after = query(&gateway, "/kylin/api/query", "held").await;
    assert_eq!(
        after.status,
        200,
        "the places were not given back: {}",
        after.text()
    );
    let limits = admin_json(&gateway, "/admin/limits").await;
    assert_eq!(project(&limits, "held")["in_flight"], 0);
    assert_eq!(project(&limits, "held")["admitted"], 3);
    assert_rejected_once(&gateway, "held", "max_concurrent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_burst_a_project_gets_429_for_its_rate() {
    let (_node, gateway) = one_node_with_limits(QUOTAS).await;
    // The burst (3) is admitted back to back; the rate (1/s) then refuses
    // within a few more, however slow the machine.
    let mut statuses = Vec::new();
    let refused = loop {
        let reply = query(&gateway, "/kylin/api/query", "bursty").await;
        if reply.status != 200 || statuses.len() > 10 {
            break reply;
        }
        statuses.push(reply.status);
    };
    assert!(
        statuses.len() >= 3,
        "refused within the burst: {statuses:?}"
    );
    assert_eq!(refused.status, 429, "{}", refused.text());
    let body = refused.json();
    assert_eq!(body["project"], "bursty");
    assert_eq!(body["limit"], "rate_per_s");
    assert_eq!(
        (body["allowed"].as_u64(), body["configured"].as_u64()),
        (Some(1), Some(1))
    );
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1, "the next token is at most 1 s away");
    // "held" was named only inside the SQL text of these queries: untouched.
    let limits = admin_json(&gateway, "/admin/limits").await;
    assert_eq!(project(&limits, "bursty")["rejected"]["rate_per_s"], 1);
    assert_eq!(project(&limits, "held")["admitted"], 0);
    assert_rejected_once(&gateway, "bursty", "rate_per_s").await;
}
