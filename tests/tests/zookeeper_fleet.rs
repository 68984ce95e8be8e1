//! The fleet, end to end: gateway processes sharing a real ZooKeeper
//! register themselves (real Curator lists them as ServiceInstances) and see
//! each other join and leave.

use std::time::{Duration, Instant};

use kylin_gateway_tests::support::backend::Backend;
use kylin_gateway_tests::support::curator::CuratorNode;
use kylin_gateway_tests::support::eventually_async;
use kylin_gateway_tests::support::fleet::{BASE, SESSION_MS, fleet, fleet_gateway, sees};
use kylin_gateway_tests::support::gateway::Gateway;
use kylin_gateway_tests::support::http::{client, get, send};
use kylin_gateway_tests::support::zookeeper::ZkServer;

/// A request the gateway is reading the body of (it asked for it with
/// `100 Continue`), so a drain waits for it.
fn request_in_progress(port: u16) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(
            b"POST /kylin/api/query HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\
              Expect: 100-continue\r\n\r\n",
        )
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = [0u8; 25];
    stream.read_exact(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    stream.write_all(b"{").unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_register_as_curator_instances_and_leave_with_their_session() {
    let zk = ZkServer::start();
    let backend = Backend::start("node", 0).await;
    let mut gateways: Vec<Gateway> = (0..3).map(|_| fleet_gateway(&zk, &backend, "")).collect();
    let c = client();
    for gateway in &gateways {
        sees(&c, gateway, 3, Duration::from_secs(10)).await;
    }
    let view = fleet(&c, &gateways[0]).await;
    assert_eq!(view["consistent"], true, "{view}");
    let own = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["self"] == true)
        .unwrap()
        .clone();
    assert_eq!(own["port"], gateways[0].http_port, "{own}");
    assert_eq!(
        own["listen"]["admin"],
        format!("127.0.0.1:{}", gateways[0].admin_port)
    );

    // Real Curator reads the records as ServiceInstances of kylin_gateway.
    let curator = CuratorNode::start(&zk.connect_string(), BASE, "reader", "query");
    let listed = get(&c, &curator.url("/curator/instances?service=kylin_gateway"))
        .await
        .unwrap()
        .json();
    let mut ports: Vec<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["name"], "kylin_gateway", "{i}");
            i["port"].as_u64().unwrap()
        })
        .collect();
    ports.sort();
    let mut expected: Vec<u64> = gateways.iter().map(|g| u64::from(g.http_port)).collect();
    expected.sort();
    assert_eq!(ports, expected, "Curator lists {listed}");

    // SIGTERM: the record goes when the drain starts, while a request is
    // still open, not when the process (or its session) ends.
    let _open = request_in_progress(gateways[2].http_port);
    let stopped = Instant::now();
    gateways[2].process.signal("TERM");
    let seen = sees(&c, &gateways[0], 2, Duration::from_secs(5)).await;
    assert!(
        seen - stopped < Duration::from_millis(SESSION_MS),
        "a stopped gateway left the fleet after {:?}",
        seen - stopped
    );
    assert!(
        gateways[2].process.try_wait().is_none(),
        "the gateway had exited: the record went with the process, not the drain"
    );
    // SIGKILL: the record goes when its session expires.
    let killed = Instant::now();
    gateways[1].process.kill();
    let seen = sees(&c, &gateways[0], 1, Duration::from_millis(SESSION_MS * 3)).await;
    let took = seen - killed;
    println!("killed gateway left the fleet after {took:?}");
    // ZooKeeper expires a session on its next tick (200 ms here) after the
    // timeout; the watch then fires at once.
    assert!(
        took < Duration::from_millis(SESSION_MS + 1000),
        "a killed gateway left the fleet after {took:?}"
    );
}

/// Three gateways share `max_concurrent = 6` of project `held`: each
/// allows ⌈6/3⌉ = 2, so a third held query at one gateway is refused with
/// 429 naming this gateway's share; when a gateway leaves, the others
/// allow ⌈6/2⌉ = 3 and the same query is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_quotas_are_shared_out_between_the_live_gateways() {
    let zk = ZkServer::start();
    let backend = Backend::start("node", 0).await;
    let quotas = r#"
[[limits.projects]]
name = "held"
max_concurrent = 6
[[routing.rules]]
methods = ["POST"]
path = "/__kgw/sleep"
class = "query"
"#;
    let mut gateways: Vec<Gateway> = (0..3)
        .map(|_| fleet_gateway(&zk, &backend, quotas))
        .collect();
    let c = client();
    let allowed =
        |limits: &serde_json::Value| limits["projects"][0]["allowed"]["max_concurrent"].clone();
    for gateway in &gateways {
        sees(&c, gateway, 3, Duration::from_secs(10)).await;
    }
    let limits = get(&c, &gateways[0].admin_url("/admin/limits"))
        .await
        .unwrap()
        .json();
    assert_eq!(limits["gateways"], 3, "{limits}");
    assert_eq!(allowed(&limits), 2, "{limits}");

    let held = backend
        .hold_queries(&gateways[0].url("/__kgw/sleep?ms=3000"), 2)
        .await;
    let body = r#"{"sql": "select 1", "project": "held"}"#;
    let refused = send(&c, "POST", &gateways[0].url("/kylin/api/query"), &[], body)
        .await
        .unwrap();
    assert_eq!(refused.status, 429, "{}", refused.text());
    let answer = refused.json();
    assert_eq!(answer["allowed"], 2, "{answer}");
    assert_eq!(answer["configured"], 6, "{answer}");
    assert_eq!(answer["gateways"], 3, "{answer}");

    gateways[2].process.kill();
    eventually_async(
        "a share of 3 after a gateway left",
        Duration::from_millis(SESSION_MS * 3),
        || async {
            let limits = get(&c, &gateways[0].admin_url("/admin/limits"))
                .await
                .unwrap()
                .json();
            (allowed(&limits) == 3).then_some(())
        },
    )
    .await;
    let admitted = send(&c, "POST", &gateways[0].url("/kylin/api/query"), &[], body)
        .await
        .unwrap();
    assert_eq!(admitted.status, 200, "{}", admitted.text());
    for request in held {
        assert_eq!(request.await.unwrap().status, 200);
    }
    let limits = get(&c, &gateways[0].admin_url("/admin/limits"))
        .await
        .unwrap()
        .json();
    assert_eq!(
        limits["projects"][0]["rejected"]["max_concurrent"], 1,
        "{limits}"
    );
}
