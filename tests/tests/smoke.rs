//! The static shape from the README routes queries to query-serving nodes
//! and jobs to the leader.

use std::time::Duration;

use kylin_gateway_tests::support::backend::Backend;
use kylin_gateway_tests::support::gateway::Gateway;
use kylin_gateway_tests::support::http::{client, get, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_cluster_routes_queries_and_jobs() {
    let all = Backend::start("all", 0).await;
    let query = Backend::start("query", 0).await;
    let job = Backend::start("job", 0).await;
    let gateway = Gateway::start(&format!(
        r#"
[discovery]
kind = "static"
[[discovery.nodes]]
address = "{}"
mode = "all"
leader = false
[[discovery.nodes]]
address = "{}"
mode = "query"
[[discovery.nodes]]
address = "{}"
mode = "job"
leader = true
"#,
        all.addr, query.addr, job.addr
    ));
    let c = client();
    kylin_gateway_tests::support::eventually_async("ready", Duration::from_secs(10), || async {
        get(&c, &gateway.admin_url("/readyz"))
            .await
            .ok()
            .filter(|r| r.status == 200)
    })
    .await;
    for _ in 0..40 {
        let r = send(
            &c,
            "POST",
            &gateway.url("/kylin/api/query"),
            &[],
            "{\"sql\":\"select 1\"}",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
        assert_ne!(r.json()["node"], "job", "a query reached a job-only node");
    }
    assert!(all.hits() > 0 && query.hits() > 0);
    let r = send(
        &c,
        "PUT",
        &gateway.url("/kylin/api/cubes/c1/build"),
        &[],
        "{}",
    )
    .await
    .unwrap();
    assert_eq!(r.json()["node"], "job");
}
