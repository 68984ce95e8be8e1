//! Failure handling end to end: retries after refused connections are
//! invisible to clients, failing nodes are ejected and re-admitted, and the
//! gateway answers 503 with a reason and `Retry-After` when nothing can serve.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kylin_gateway_tests::support::backend::Backend;
use kylin_gateway_tests::support::eventually_async;
use kylin_gateway_tests::support::gateway::{
    Gateway, leader_then_query_nodes, metric_value, static_discovery,
};
use kylin_gateway_tests::support::http::{client, get, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_causes_no_client_visible_error() {
    let nodes = Backend::start_each(&["a", "b", "c"]).await;
    let gateway = Gateway::start(&leader_then_query_nodes(&nodes));
    gateway.wait_ready().await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for worker in 0..3 {
        let (stop, done) = (stop.clone(), done.clone());
        let c = client();
        let get_url = gateway.url("/kylin/api/projects");
        let post_url = gateway.url("/kylin/api/query");
        loops.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // One loop also posts bodies: they are retried intact.
                let reply = if worker == 0 {
                    send(&c, "POST", &post_url, &[], "{\"sql\":\"select 1\"}").await
                } else {
                    get(&c, &get_url).await
                };
                match reply {
                    Ok(r) if r.status == 200 => {
                        if worker == 0 {
                            assert_eq!(r.json()["body_len"], 18);
                        }
                    }
                    Ok(r) => failures.push(format!("{}: {}", r.status, r.text())),
                    Err(e) => failures.push(e.to_string()),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }
    let wait_for = |n: u64| {
        let done = done.clone();
        eventually_async("requests to flow", Duration::from_secs(30), move || {
            let done = done.clone();
            async move { (done.load(Ordering::Relaxed) >= n).then_some(()) }
        })
    };
    wait_for(150).await;
    nodes[1].stop();
    let at_stop = done.load(Ordering::Relaxed);
    wait_for(at_stop + 300).await;
    let b_hits = nodes[1].hits();
    nodes[2].stop();
    let at_stop = done.load(Ordering::Relaxed);
    wait_for(at_stop + 300).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        let failures = l.await.unwrap();
        assert!(failures.is_empty(), "client-visible failures: {failures:?}");
    }
    assert_eq!(nodes[1].hits(), b_hits, "a stopped node got traffic");
    let metrics = get(&client(), &gateway.admin_url("/metrics"))
        .await
        .unwrap()
        .text();
    let retries = metric_value(&metrics, "kgw_retries_total", &[]).unwrap_or(0.0);
    assert!(retries >= 1.0, "no retry counted:\n{metrics}");
}

fn node_json(nodes: &serde_json::Value, address: &str) -> serde_json::Value {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["address"] == address)
        .unwrap_or_else(|| panic!("{address} not in {nodes}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_node_is_ejected_and_readmitted_after_backoff() {
    let good = Backend::start("good", 0).await;
    let flaky = Backend::start("flaky", 0).await;
    let flaky_addr = flaky.addr;
    flaky.stop();
    drop(flaky);
    // The first ejection lasts 4 s: long enough for every request below to
    // be sent while the node is still ejected, on any machine.
    let gateway = Gateway::start(&format!(
        "{}\n[health]\neject_after = 2\neject_base_ms = 4000\n",
        static_discovery(&[(good.addr, "all", true), (flaky_addr, "query", false)])
    ));
    gateway.wait_ready().await;
    let c = client();
    let flaky_label = flaky_addr.to_string();
    // Requests keep succeeding while the refusing node gets ejected.
    let ejected_at = eventually_async("flaky ejected", Duration::from_secs(10), || async {
        let r = get(&c, &gateway.url("/kylin/api/projects")).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let nodes = get(&c, &gateway.admin_url("/admin/nodes"))
            .await
            .unwrap()
            .json();
        (node_json(&nodes, &flaky_label)["ejected"] == true).then(Instant::now)
    })
    .await;
    let nodes = get(&c, &gateway.admin_url("/admin/nodes"))
        .await
        .unwrap()
        .json();
    let flaky_json = node_json(&nodes, &flaky_label);
    assert_eq!(flaky_json["healthy"], false);
    assert_eq!(node_json(&nodes, &good.addr.to_string())["ejected"], false);
    let metrics = get(&c, &gateway.admin_url("/metrics"))
        .await
        .unwrap()
        .text();
    let ejections = metric_value(
        &metrics,
        "kgw_ejections_total",
        &[&format!("upstream=\"{flaky_label}\"")],
    );
    assert_eq!(ejections, Some(1.0), "{metrics}");

    // The node comes back on the same port: while it is ejected it gets
    // nothing, though it answers; after the backoff it is tried again and,
    // answering, re-admitted.
    let back = Backend::start("flaky", flaky_addr.port()).await;
    let mut sent_while_ejected = 0;
    for _ in 0..20 {
        assert_eq!(
            get(&c, &gateway.url("/kylin/api/projects"))
                .await
                .unwrap()
                .status,
            200
        );
        // Still ejected after the request, so it was when the request was
        // routed (an ejection only ends, or grows on a failure).
        let nodes = get(&c, &gateway.admin_url("/admin/nodes"))
            .await
            .unwrap()
            .json();
        if node_json(&nodes, &flaky_label)["ejected"] == true {
            sent_while_ejected += 1;
            assert_eq!(back.hits(), 0, "an ejected node got traffic");
        }
    }
    assert_eq!(
        sent_while_ejected, 20,
        "the 4 s ejection ended within 20 requests"
    );
    eventually_async("flaky readmitted", Duration::from_secs(10), || async {
        get(&c, &gateway.url("/kylin/api/projects")).await.unwrap();
        (back.hits() > 0).then_some(())
    })
    .await;
    assert!(ejected_at.elapsed() >= Duration::from_millis(3500));
    let nodes = get(&c, &gateway.admin_url("/admin/nodes"))
        .await
        .unwrap()
        .json();
    assert_eq!(node_json(&nodes, &flaky_label)["ejected"], false);
    assert_eq!(node_json(&nodes, &flaky_label)["healthy"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_available_node_answers_503_json_with_retry_after() {
    // Every query node refuses connections.
    let dead = Backend::start("dead", 0).await;
    let dead_addr = dead.addr;
    drop(dead);
    let job_only = Backend::start("job", 0).await;
    let gateway = Gateway::start(&format!(
        "{}\n[routing]\nretry_after_s = 7\n",
        static_discovery(&[(dead_addr, "query", false), (job_only.addr, "job", true)])
    ));
    gateway.wait_ready().await;
    let c = client();
    for (method, path, class) in [
        ("POST", "/kylin/api/query", "query"),
        ("GET", "/kylin/api/projects", "other"),
    ] {
        let r = send(&c, method, &gateway.url(path), &[], "").await.unwrap();
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.headers["retry-after"], "7");
        assert_eq!(r.headers["content-type"], "application/json");
        let body = r.json();
        assert_eq!(body["class"], class);
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert_eq!(job_only.hits(), 0, "a query reached a job-only node");
    // Jobs still reach the leader.
    let r = send(
        &c,
        "PUT",
        &gateway.url("/kylin/api/cubes/c/build"),
        &[],
        "{}",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["node"], "job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_requests_wait_for_a_leader_then_get_503() {
    let node = Backend::start("q", 0).await;
    let gateway = Gateway::start(&format!(
        "{}\n[routing]\njob_hold_ms = 400\n",
        static_discovery(&[(node.addr, "all", false)])
    ));
    gateway.wait_ready().await;
    let c = client();
    let started = Instant::now();
    let r = send(
        &c,
        "PUT",
        &gateway.url("/kylin/api/cubes/c/rebuild"),
        &[],
        "{\"buildType\":\"BUILD\"}",
    )
    .await
    .unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["class"], "job");
    assert!(r.headers.contains_key("retry-after"));
    assert!(
        waited >= Duration::from_millis(400),
        "answered after {waited:?}, before the hold ended"
    );
    assert!(waited < Duration::from_secs(5), "held for {waited:?}");
    assert_eq!(node.hits(), 0, "a job went to a non-leader");
    // Queries are not held.
    let r = send(&c, "POST", &gateway.url("/kylin/api/query"), &[], "{}")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_reached_a_node_are_resent_only_when_safe_and_at_most_retries_times() {
    let nodes = Backend::start_each(&["a", "b", "c", "d"]).await;
    let gateway = Gateway::start(&format!(
        "{}\n[upstream]\nretries = 2\n[health]\neject_after = 100\n",
        leader_then_query_nodes(&nodes)
    ));
    gateway.wait_ready().await;
    let c = client();
    let total = || nodes.iter().map(Backend::hits).sum::<u64>();

    // A POST that is not a query may have had effects: never sent twice.
    let r = send(&c, "POST", &gateway.url("/__kgw/close"), &[], "{\"x\":1}")
        .await
        .unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(total(), 1, "a non-idempotent request was resent");

    // Saved-query writes are `query` class but may have had effects too.
    let r = send(
        &c,
        "POST",
        &gateway.url("/kylin/api/saved_queries"),
        &[("x-kgw-close", "1")],
        "{\"name\":\"q\",\"sql\":\"select 1\"}",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(total(), 2, "a saved-query write was resent");

    // Query execution only reads: resent to another node.
    let r = send(
        &c,
        "POST",
        &gateway.url("/kylin/api/query"),
        &[("x-kgw-close", "1")],
        "{\"sql\":\"select 1\"}",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(total(), 2 + 3, "a query is tried on three nodes");

    // A GET is resent, to other nodes, `retries` times and no more.
    let r = get(&c, &gateway.url("/__kgw/close")).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(total(), 5 + 3, "expected one attempt and two retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_answer_in_time_gives_504() {
    let node = Backend::start("slow", 0).await;
    let gateway = Gateway::start(&format!(
        "{}\n[upstream]\nresponse_header_timeout_ms = 300\n",
        static_discovery(&[(node.addr, "all", true)])
    ));
    gateway.wait_ready().await;
    let c = client();
    let started = Instant::now();
    let r = get(&c, &gateway.url("/__kgw/sleep?ms=5000")).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        waited >= Duration::from_millis(300),
        "504 after {waited:?}: before the 300 ms timeout"
    );
    assert!(waited < Duration::from_secs(3), "504 only after {waited:?}");
    assert_eq!(r.json()["class"], "other");
    // A slow answer is not retried elsewhere: the query may still run.
    assert_eq!(node.hits(), 1);
    let r = get(&c, &gateway.url("/__kgw/sleep?ms=10")).await.unwrap();
    assert_eq!(r.status, 200);
}

/// In-process gateway (library, not binary) so the test can publish views:
/// a job held through a leaderless window goes to the leader once elected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_job_request_goes_to_the_leader_once_one_is_elected() {
    use kylin_gateway::proxy::{Proxy, server};
    use kylin_gateway::view::{ClusterView, LeaderInfo, Modes, Node, ViewPublisher};

    // The proxy runs in this process: its metrics (the hold counter) are
    // read from a recorder installed here, the only one of this binary.
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let metrics = recorder.snapshotter();
    recorder
        .install()
        .expect("the only metrics recorder of this test binary");
    let job_holds = || -> u64 {
        metrics
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == "kgw_job_holds_total")
            .map(|(.., value)| match value {
                metrics_util::debugging::DebugValue::Counter(n) => n,
                _ => 0,
            })
            .sum()
    };
    let query = Backend::start("query", 0).await;
    let job = Backend::start("job", 0).await;
    let config = kylin_gateway::config::parse(&format!(
        "[routing]\njob_hold_ms = 10000\n{}",
        static_discovery(&[(query.addr, "query", false)])
    ))
    .unwrap();
    let node = |id: &str, addr: std::net::SocketAddr, modes| Node {
        id: id.into(),
        host: "127.0.0.1".into(),
        port: addr.port(),
        ssl_port: None,
        modes,
        enabled: true,
        addr: Some(addr),
        resolve_error: None,
    };
    let nodes = vec![
        node("query", query.addr, Modes::QUERY),
        node("job", job.addr, Modes::JOB),
    ];
    let views = ViewPublisher::new();
    views.publish(ClusterView {
        nodes: nodes.clone(),
        leader: LeaderInfo::default(),
        job_routing: Default::default(),
        stale: false,
        source: "test",
    });
    let upstream_tls = kylin_gateway::tls::UpstreamTls::from_config(&config.upstream).unwrap();
    let proxy = std::sync::Arc::new(Proxy::new(&config, views.clone(), None, upstream_tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server::serve(
        listener,
        proxy,
        None,
        async {
            let _ = stop_rx.await;
        },
        Duration::from_secs(1),
        config.limits,
    ));

    let c = client();
    let url = format!("http://127.0.0.1:{port}/kylin/api/cubes/c1/build");
    let started = Instant::now();
    let held = tokio::spawn(async move { send(&c, "PUT", &url, &[], "{\"startTime\":0}").await });
    // Held at the gateway: it counted the hold, and the request is neither
    // answered nor at a node.
    eventually_async(
        "the gateway holding the job",
        Duration::from_secs(10),
        || async {
            assert!(
                !held.is_finished(),
                "the job request was answered, not held"
            );
            (job_holds() == 1).then_some(())
        },
    )
    .await;
    assert!(
        !held.is_finished(),
        "the job request was answered, not held"
    );
    assert_eq!(query.hits() + job.hits(), 0, "the held job reached a node");
    views.publish(ClusterView {
        nodes,
        leader: LeaderInfo {
            node_id: Some("job".into()),
            ..LeaderInfo::default()
        },
        job_routing: Default::default(),
        stale: false,
        source: "test",
    });
    let r = held.await.unwrap().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["node"], "job");
    assert_eq!(
        r.json()["body_len"],
        15,
        "the held body was not forwarded whole"
    );
    // Released by the publish, well before the 10 s hold ran out.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(query.hits(), 0);
    let _ = stop_tx.send(());
    serving.await.unwrap();
}

/// A node that dies in the middle of its answer to a write (seen in the
/// Curator crash failovers: a leader killed after its answer's head went
/// out). The write may have been applied, so it is not sent again; the
/// client gets a clean 502, never a 200 whose body then breaks off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_dying_mid_answer_to_a_write_gives_a_clean_502() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicU64::new(0));
    let count = answered.clone();
    let node = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head).await;
            if !head.starts_with(b"PUT") {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                    .await;
                continue;
            }
            count.fetch_add(1, Ordering::Relaxed);
            // The head and half the body, then the process is gone.
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{\"code\":\"000\",")
                .await;
        }
    });
    let gateway = Gateway::start(&static_discovery(&[(addr, "all", true)]));
    let c = client();
    let reply = send(
        &c,
        "PUT",
        &gateway.url("/kylin/api/cubes/sales/build"),
        &[],
        "{}",
    )
    .await;
    node.abort();
    match reply {
        Ok(reply) => assert_eq!(reply.status, 502, "{}", reply.text()),
        Err(error) => panic!("a truncated answer reached the client: {error:#}"),
    }
    assert_eq!(
        answered.load(Ordering::Relaxed),
        1,
        "the write was sent again"
    );
}
