//! Routing end to end through the real gateway binary: Kylin paths reach the
//! right kind of node, the balancers spread load, consistent hashing sticks
//! and moves minimally, and login sessions stick to the node that issued them.

use std::collections::HashMap;
use std::time::Duration;

use kylin_gateway_tests::support::backend::Backend;
use kylin_gateway_tests::support::eventually_async;
use kylin_gateway_tests::support::gateway::{
    Gateway, leader_then_query_nodes, metric_value, static_discovery,
};
use kylin_gateway_tests::support::http::{TestClient, client, get, send};

async fn node_of(c: &TestClient, method: &str, url: &str, headers: &[(&str, &str)]) -> String {
    let body = if method == "GET" || method == "DELETE" {
        ""
    } else {
        "{}"
    };
    let reply = send(c, method, url, headers, body).await.unwrap();
    assert_eq!(reply.status, 200, "{method} {url}: {}", reply.text());
    reply.json()["node"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kylin_paths_reach_the_leader_or_query_nodes_by_class() {
    let leader = Backend::start("leader", 0).await;
    let q1 = Backend::start("q1", 0).await;
    let q2 = Backend::start("q2", 0).await;
    let gateway = Gateway::start(&static_discovery(&[
        (leader.addr, "job", true),
        (q1.addr, "query", false),
        (q2.addr, "query", false),
    ]));
    gateway.wait_ready().await;
    let c = client();
    let jobs = [
        ("PUT", "/kylin/api/cubes/kylin_sales_cube/build"),
        ("PUT", "/kylin/api/cubes/kylin_sales_cube/rebuild/"),
        ("PUT", "/kylin/api/cubes/c1/build2"),
        ("PUT", "/kylin/api/cubes/c1/purge"),
        ("PUT", "/kylin/api/cubes/c1/enable"),
        ("PUT", "/kylin/api/cubes/c1/segs/seg1/refresh_lookup"),
        (
            "DELETE",
            "/kylin/api/cubes/c1/segs/20120101000000_20130101000000",
        ),
        (
            "GET",
            "/kylin/api/jobs?projectName=learn_kylin&timeFilter=1",
        ),
        ("GET", "/kylin/api/jobs/overview"),
        ("GET", "/kylin/api/jobs/4e7a-11/steps/4e7a-11-00/output"),
        ("PUT", "/kylin/api/jobs/4e7a-11/resume"),
        ("PUT", "/kylin/api/jobs/4e7a-11/cancel/"),
        ("DELETE", "/kylin/api/jobs/4e7a-11/drop"),
        (
            "PUT",
            "/kylin/api/tables/learn_kylin/DEFAULT.KYLIN_SALES/cardinality",
        ),
    ];
    let queries = [
        ("POST", "/kylin/api/query"),
        ("POST", "/kylin/api/query/"),
        ("POST", "/kylin/api/query/prestate"),
        ("GET", "/kylin/api/tables_and_columns?project=learn_kylin"),
        ("GET", "/kylin/api/saved_queries/learn_kylin"),
        ("POST", "/kylin/api/query/format/csv"),
        ("GET", "/kylin/api/query/runningQueries"),
        ("PUT", "/kylin/api/query/q-1/stop"),
        ("POST", "/kylin/api/async_query"),
        ("GET", "/kylin/api/async_query/a-1/status"),
        ("POST", "/kylin/api/sequence_sql/execution"),
    ];
    let others = [
        ("POST", "/kylin/api/user/authentication"),
        ("GET", "/kylin/api/projects"),
        ("GET", "/kylin/api/cubes?projectName=learn_kylin"),
        // A read of a cube is not a job, though its path looks like one.
        ("GET", "/kylin/api/cubes/c1/build"),
        ("GET", "/kylin/"),
    ];
    for (method, path) in jobs {
        let node = node_of(&c, method, &gateway.url(path), &[]).await;
        assert_eq!(node, "leader", "job {method} {path} went to {node}");
    }
    for (method, path) in queries.iter().chain(&others) {
        let node = node_of(&c, method, &gateway.url(path), &[]).await;
        assert!(
            node == "q1" || node == "q2",
            "{method} {path} went to {node}, not a query node"
        );
    }
    let metrics = get(&c, &gateway.admin_url("/metrics"))
        .await
        .unwrap()
        .text();
    let count = |class: &str| {
        metric_value(
            &metrics,
            "kgw_requests_total",
            &[&format!("class=\"{class}\""), "status=\"200\""],
        )
        .unwrap_or(0.0) as usize
    };
    assert_eq!(count("job"), jobs.len(), "{metrics}");
    assert_eq!(count("query"), queries.len(), "{metrics}");
    assert_eq!(count("other"), others.len(), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_evenly_and_never_to_job_nodes() {
    let job = Backend::start("job", 0).await;
    let nodes = [
        Backend::start("a", 0).await,
        Backend::start("b", 0).await,
        Backend::start("c", 0).await,
    ];
    let gateway = Gateway::start(&format!(
        "{}\n[routing]\nbalance = \"round-robin\"\n",
        static_discovery(&[
            (nodes[0].addr, "all", false),
            (job.addr, "job", true),
            (nodes[1].addr, "query", false),
            (nodes[2].addr, "query", false),
        ])
    ));
    gateway.wait_ready().await;
    let c = client();
    for _ in 0..300 {
        node_of(&c, "POST", &gateway.url("/kylin/api/query"), &[]).await;
    }
    for n in &nodes {
        assert_eq!(n.hits(), 100, "node {} got {}", n.name, n.hits());
    }
    assert_eq!(job.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_spreads_sequential_load_and_prefers_the_less_busy_node() {
    let a = Backend::start("a", 0).await;
    let b = Backend::start("b", 0).await;
    let c3 = Backend::start("c", 0).await;
    let gateway = Gateway::start(&static_discovery(&[
        (a.addr, "query", false),
        (b.addr, "query", false),
        (c3.addr, "all", true),
    ]));
    gateway.wait_ready().await;
    let c = client();
    for _ in 0..300 {
        node_of(&c, "POST", &gateway.url("/kylin/api/query"), &[]).await;
    }
    for n in [&a, &b, &c3] {
        assert!(
            (60..=140).contains(&n.hits()),
            "p2c gave {} {} of 300",
            n.name,
            n.hits()
        );
    }
    // P2C follows in-flight load: with a slow request held at one of two
    // nodes, every further request goes to the idle one (P2C always
    // compares both). Round-robin would send every other request to the
    // busy node, a load-blind random pick about half of them.
    drop(gateway);
    let gateway = Gateway::start(&static_discovery(&[
        (a.addr, "all", true),
        (b.addr, "query", false),
    ]));
    gateway.wait_ready().await;
    let (a0, b0) = (a.hits(), b.hits());
    let slow = {
        let (c, url) = (c.clone(), gateway.url("/__kgw/sleep?ms=30000"));
        tokio::spawn(async move { get(&c, &url).await })
    };
    eventually_async(
        "the slow request at a node",
        Duration::from_secs(5),
        || async { (a.hits() + b.hits() - a0 - b0 == 1).then_some(()) },
    )
    .await;
    let (busy, idle) = if a.hits() > a0 { (&a, &b) } else { (&b, &a) };
    for _ in 0..10 {
        // The last answer is out; wait until the gateway counts it done
        // too, so the loads it compares are exactly 1 and 0.
        eventually_async(
            "in-flight counts 1 and 0",
            Duration::from_secs(5),
            || async {
                let nodes = get(&c, &gateway.admin_url("/admin/nodes"))
                    .await
                    .ok()?
                    .json();
                let in_flight = |n: &Backend| {
                    nodes
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|j| j["address"] == n.addr.to_string())
                        .map(|j| j["in_flight"].as_u64())
                };
                (in_flight(busy)? == Some(1) && in_flight(idle)? == Some(0)).then_some(())
            },
        )
        .await;
        let node = node_of(&c, "POST", &gateway.url("/kylin/api/query"), &[]).await;
        assert_eq!(
            node, idle.name,
            "p2c sent a request to the node with one in flight while the other was idle"
        );
    }
    slow.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_sticks_and_moves_only_the_keys_of_a_leaving_node() {
    let nodes = Backend::start_each(&["a", "b", "c", "d"]).await;
    let gateway = Gateway::start(&format!(
        "{}\n[routing]\nbalance = \"consistent-hash\"\nhash_key = \"header:X-Kylin-Project\"\n",
        leader_then_query_nodes(&nodes)
    ));
    gateway.wait_ready().await;
    let c = client();
    let url = gateway.url("/kylin/api/query");
    let keys: Vec<String> = (0..120).map(|i| format!("project-{i}")).collect();
    let mut owner = HashMap::new();
    for key in &keys {
        let node = node_of(&c, "POST", &url, &[("X-Kylin-Project", key)]).await;
        owner.insert(key.clone(), node);
    }
    // Sticks: the same key goes to the same node again.
    for key in &keys {
        let node = node_of(&c, "POST", &url, &[("X-Kylin-Project", key)]).await;
        assert_eq!(owner[key], node, "key {key} moved without a view change");
    }
    let per_node = |name: &str| owner.values().filter(|n| *n == name).count();
    for n in &nodes {
        assert!(per_node(&n.name) >= 10, "ring is lopsided: {owner:?}");
    }
    // Node c leaves: only its keys move (node_of already requires an
    // answer, which a stopped c cannot give), each to one new owner that
    // then sticks, and not all to one node.
    nodes[2].stop();
    let mut moved = HashMap::new();
    for key in &keys {
        let node = node_of(&c, "POST", &url, &[("X-Kylin-Project", key)]).await;
        if owner[key] == "c" {
            moved.insert(key.clone(), node);
        } else {
            assert_eq!(owner[key], node, "key {key} moved though its node stayed");
        }
    }
    for (key, new_owner) in &moved {
        let node = node_of(&c, "POST", &url, &[("X-Kylin-Project", key)]).await;
        assert_eq!(
            &node, new_owner,
            "key {key} of the leaving node did not stick"
        );
    }
    let heirs: std::collections::HashSet<&String> = moved.values().collect();
    assert!(
        heirs.len() >= 2,
        "every key of c went to one node: {moved:?}"
    );

    // A query-parameter key works the same way.
    drop(gateway);
    let gateway = Gateway::start(&format!(
        "{}\n[routing]\nbalance = \"consistent-hash\"\nhash_key = \"query:project\"\n",
        static_discovery(&[
            (nodes[0].addr, "all", true),
            (nodes[1].addr, "query", false)
        ])
    ));
    gateway.wait_ready().await;
    for key in keys.iter().take(20) {
        let url = gateway.url(&format!("/kylin/api/tables_and_columns?project={key}"));
        let first = node_of(&c, "GET", &url, &[]).await;
        for _ in 0..3 {
            assert_eq!(node_of(&c, "GET", &url, &[]).await, first);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sessions_stick_to_their_node_while_it_is_up() {
    let nodes = Backend::start_each(&["a", "b", "c"]).await;
    let gateway = Gateway::start(&format!(
        "{}\n[routing]\nbalance = \"round-robin\"\n",
        leader_then_query_nodes(&nodes)
    ));
    gateway.wait_ready().await;
    let c = client();
    let login = send(
        &c,
        "POST",
        &gateway.url("/kylin/api/user/authentication"),
        &[("Authorization", "Basic QURNSU46S1lMSU4=")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(login.status, 200);
    let login_node = login.json()["node"].as_str().unwrap().to_string();
    let cookies: Vec<String> = login
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect();
    assert!(
        cookies.iter().any(|c| c.starts_with("JSESSIONID=")),
        "{cookies:?}"
    );
    assert!(
        cookies.iter().any(|c| c.starts_with("KYLIN_GW_NODE=")),
        "the gateway did not add its affinity cookie: {cookies:?}"
    );
    let cookie_header = cookies.join("; ");
    let headers = [("Cookie", cookie_header.as_str())];
    for _ in 0..12 {
        let node = node_of(&c, "GET", &gateway.url("/kylin/api/projects"), &headers).await;
        assert_eq!(node, login_node, "a session request left its node");
    }
    // The session's node goes down: requests move, without errors. (That
    // they moved needs no check of its own: node_of requires a 200, which
    // the stopped node cannot give.)
    let down = nodes.iter().find(|n| n.name == login_node).unwrap();
    down.stop();
    for _ in 0..12 {
        node_of(&c, "GET", &gateway.url("/kylin/api/projects"), &headers).await;
    }
}
