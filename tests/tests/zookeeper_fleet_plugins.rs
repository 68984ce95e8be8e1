//! Plugins published once for the fleet, end to end: `kylin-gateway plugin
//! publish` stores a component in a real ZooKeeper and gateway processes
//! install it within a second, under load, with nothing dropped; a refused
//! version is reported where it was refused; rollback goes back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kylin_gateway_tests::support::backend::Backend;
use kylin_gateway_tests::support::eventually_async;
use kylin_gateway_tests::support::fleet::{
    BASE, fleet, fleet_gateway, plugin_command, pointer, publish, routing, runs, sees, sha256_of,
};
use kylin_gateway_tests::support::gateway::TempDir;
use kylin_gateway_tests::support::http::{TestClient, client, send};
use kylin_gateway_tests::support::plugins::built;
use kylin_gateway_tests::support::zookeeper;
use kylin_gateway_tests::support::zookeeper::ZkServer;

/// `component` with a custom section of `size` bytes appended: the same
/// plugin, a different sha256, as large as needed.
fn with_custom_section(component: &[u8], size: usize) -> Vec<u8> {
    let name = b"kgw-padding";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.resize(payload.len() + size, 0);
    let mut out = component.to_vec();
    out.push(0); // custom section id
    let mut len = payload.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&payload);
    out
}

/// Sends queries to every gateway until stopped; counts answers that are
/// not 200.
fn load(
    gateways: Vec<(String, TestClient)>,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<(u64, u64)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let running = stop.clone();
    let task = tokio::spawn(async move {
        let (mut sent, mut failed) = (0u64, 0u64);
        while !running.load(Ordering::Relaxed) {
            for (url, c) in &gateways {
                let body = r#"{"project":"learn_kylin","sql":"select 1"}"#;
                let reply = send(
                    c,
                    "POST",
                    url,
                    &[("content-type", "application/json")],
                    body,
                )
                .await;
                sent += 1;
                if !matches!(&reply, Ok(r) if r.status == 200) {
                    failed += 1;
                    eprintln!("failed during rollout: {reply:?}");
                }
            }
        }
        (sent, failed)
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_plugin_rolls_out_to_every_gateway_under_load() {
    let files = built();
    let zk = ZkServer::start();
    let backend = Backend::start("node", 0).await;
    let affinity = sha256_of(&files.query_affinity);
    let published = publish(&zk, &files.query_affinity, "");
    assert!(published.status.success(), "{published:?}");

    let plugin = "[[plugins]]\nname = \"routing\"\nsource = \"zookeeper\"\n";
    let one = fleet_gateway(&zk, &backend, plugin);
    let two = fleet_gateway(&zk, &backend, plugin);
    // This gateway overrides the config with one every version refuses.
    let refusing = fleet_gateway(&zk, &backend, &format!("{plugin}config = \"init-fail\"\n"));
    let c = client();
    // The published version is in place when the gateway starts serving.
    assert_eq!(routing(&c, &one).await["sha256"], affinity.as_str());
    assert_eq!(routing(&c, &two).await["sha256"], affinity.as_str());
    let refused = routing(&c, &refusing).await;
    assert_eq!(refused["pending"], true, "{refused}");
    assert!(
        refused["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("init failed"),
        "{refused}"
    );
    sees(&c, &one, 3, Duration::from_secs(10)).await;
    let view = fleet(&c, &one).await;
    assert_eq!(view["consistent"], false, "{view}");
    for member in view["members"].as_array().unwrap() {
        let is_refusing = member["port"] == refusing.http_port;
        assert_eq!(member["plugins_differ"], is_refusing, "{member}");
    }

    let (stop, traffic) = load(
        [&one, &two, &refusing]
            .iter()
            .map(|g| (g.url("/kylin/api/query"), client()))
            .collect(),
    );
    // A new version: every gateway that can run it does, within a second of
    // the pointer's move.
    let calm = sha256_of(&files.misbehave);
    let published = publish(&zk, &files.misbehave, "calm");
    assert!(published.status.success(), "{published:?}");
    let moved_at = pointer(&zk).await["current"]["published_at_ms"]
        .as_u64()
        .unwrap();
    for gateway in [&one, &two] {
        let plugin = runs(&c, gateway, &calm, Duration::from_secs(10)).await;
        let took = plugin["loaded_at_ms"]
            .as_u64()
            .unwrap()
            .saturating_sub(moved_at);
        println!("installed {took} ms after the publish");
        assert!(took <= 1000, "installed {took} ms after the publish");
    }
    let reply = send(
        &c,
        "POST",
        &one.url("/kylin/api/query"),
        &[],
        r#"{"sql":"select 1"}"#,
    )
    .await
    .unwrap();
    assert_eq!(
        reply.json()["headers"]["x-misbehave"],
        "calm",
        "{}",
        reply.text()
    );

    // Larger than ZooKeeper's 1 MB jute.maxbuffer: stored in chunks, and
    // installed like any other version (not timed: fetching 1.5 MB and
    // compiling on three debug-built gateways at once is the slow case).
    let dir = TempDir::new("kgw-fleet");
    let large = dir.path.join("misbehave-large.wasm");
    let padded = with_custom_section(&std::fs::read(&files.misbehave).unwrap(), 1_500_000);
    std::fs::write(&large, padded).unwrap();
    let published = publish(&zk, &large, "calm");
    assert!(published.status.success(), "{published:?}");
    assert!(
        String::from_utf8_lossy(&published.stdout).contains("in 3 chunks"),
        "{published:?}"
    );
    for gateway in [&one, &two] {
        runs(&c, gateway, &sha256_of(&large), Duration::from_secs(10)).await;
    }

    // A component that fails its checks is not published.
    let broken = publish(&zk, &files.misbehave, "init-fail");
    assert!(
        !broken.status.success(),
        "a failing component was published"
    );
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains("not published"),
        "{broken:?}"
    );
    assert_eq!(pointer(&zk).await["current"]["config"], "calm");

    // Rollback: back to the version before the large one everywhere it runs.
    let rolled = plugin_command(&zk, &["rollback", "--name", "routing"]);
    assert!(rolled.status.success(), "{rolled:?}");
    for gateway in [&one, &two] {
        runs(&c, gateway, &calm, Duration::from_secs(10)).await;
    }
    // The fleet records follow the installs: `plugin list` shows the two
    // gateways on the current version and the refusing one on none.
    eventually_async(
        "plugin list to show the rollback",
        Duration::from_secs(5),
        || async {
            let listed = plugin_command(&zk, &["list"]);
            let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
            (listed.matches("(current)").count() == 2 && listed.contains("(none)")).then_some(())
        },
    )
    .await;

    stop.store(true, Ordering::Relaxed);
    // Publishing again with --keep 1 drops every other stored version.
    let affinity_file = files.query_affinity.to_str().unwrap();
    let args = ["publish", affinity_file, "--name", "routing", "--keep", "1"];
    let republished = plugin_command(&zk, &args);
    assert!(republished.status.success(), "{republished:?}");
    let stored = zookeeper::client(&zk.connect_string())
        .await
        .list_children(&format!("{BASE}/gateway/plugins/sha256"))
        .await
        .unwrap();
    assert_eq!(
        stored,
        std::slice::from_ref(&affinity),
        "stored versions after --keep 1"
    );

    let (sent, failed) = traffic.await.unwrap();
    assert!(sent > 30, "only {sent} requests during the rollout");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during the rollout"
    );
}
