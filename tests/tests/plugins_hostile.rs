//! Hostile plugins cannot take the gateway down: loops, panics, memory
//! bombs and malformed decisions cost their request only the fallback (or a
//! 503 with `on_error = "reject"`), are counted per plugin, and broken
//! components are refused at load with a message naming the plugin.

use std::process::Command;
use std::time::Duration;

use kylin_gateway_tests::support::backend::Backend;
use kylin_gateway_tests::support::gateway::{Gateway, Launch, TempDir};
use kylin_gateway_tests::support::http::{TestClient, client, get, send};
use kylin_gateway_tests::support::plugins::{built, plugin_toml, runtime_toml};
use kylin_gateway_tests::support::{run_with_deadline, target_bin};

fn static_toml(node: &Backend) -> String {
    format!(
        "[discovery]\nkind = \"static\"\n[[discovery.nodes]]\naddress = \"{}\"\nid = \"{}\"\nmode = \"all\"\nleader = true\n",
        node.addr, node.name
    )
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

/// Every misbehaviour, chained with `on_error = "fallback"`: each request
/// runs all of them, each fails, and the request is served anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_plugins_fall_back_and_are_counted() {
    let files = built();
    let node = Backend::start("a", 0).await;
    let modes = ["loop", "panic", "oom", "unknown-node", "bad-status"];
    let mut toml = format!("{}\n{}\n", static_toml(&node), runtime_toml(false));
    for mode in modes {
        toml.push_str(&plugin_toml(mode, &files.misbehave, mode, "fallback"));
    }
    let gateway = Gateway::start(&toml);
    let c = client();
    ready(&c, &gateway).await;

    const REQUESTS: u64 = 6;
    for _ in 0..REQUESTS {
        let reply = send(
            &c,
            "POST",
            &gateway.url("/kylin/api/query"),
            &[],
            "{\"sql\":\"select 1\"}",
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["node"], "a");
    }

    let status = get(&c, &gateway.admin_url("/admin/plugins"))
        .await
        .unwrap()
        .json();
    let failures =
        |plugin: usize, kind: &str| status[plugin]["stats"]["failures"][kind].as_u64().unwrap();
    for (i, mode) in modes.iter().enumerate() {
        assert_eq!(status[i]["name"], *mode);
        assert_eq!(status[i]["stats"]["calls"], REQUESTS, "{mode}: {status}");
    }
    assert_eq!(failures(0, "deadline"), REQUESTS, "loop: {status}");
    assert_eq!(failures(1, "trap"), REQUESTS, "panic: {status}");
    assert_eq!(failures(2, "memory"), REQUESTS, "oom: {status}");
    assert_eq!(
        failures(3, "unknown_node"),
        REQUESTS,
        "unknown-node: {status}"
    );
    assert_eq!(failures(3, "malformed"), REQUESTS, "unknown-node: {status}");
    assert_eq!(failures(4, "malformed"), REQUESTS, "bad-status: {status}");
    assert!(
        status[0]["stats"]["last_failure"]
            .as_str()
            .unwrap()
            .starts_with("deadline"),
        "{status}"
    );

    let metrics = get(&c, &gateway.admin_url("/metrics"))
        .await
        .unwrap()
        .text();
    for line in [
        format!("kgw_plugin_failures_total{{plugin=\"loop\",kind=\"deadline\"}} {REQUESTS}"),
        format!("kgw_plugin_failures_total{{plugin=\"panic\",kind=\"trap\"}} {REQUESTS}"),
        format!("kgw_plugin_failures_total{{plugin=\"oom\",kind=\"memory\"}} {REQUESTS}"),
        format!("kgw_plugin_calls_total{{plugin=\"loop\"}} {REQUESTS}"),
    ] {
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
    // Still serving, still healthy.
    assert_eq!(
        get(&c, &gateway.admin_url("/healthz"))
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_reject_answers_503_and_later_calls_get_a_fresh_instance() {
    let files = built();
    let node = Backend::start("a", 0).await;
    let gateway = Gateway::start(&format!(
        "{}\n{}\n{}",
        static_toml(&node),
        runtime_toml(false),
        plugin_toml("strict", &files.misbehave, "panic", "reject"),
    ));
    let c = client();
    ready(&c, &gateway).await;
    for _ in 0..3 {
        let reply = send(&c, "POST", &gateway.url("/kylin/api/query"), &[], "{}")
            .await
            .unwrap();
        assert_eq!(reply.status, 503);
        assert!(reply.text().contains("strict"), "{}", reply.text());
        // The plugin behaves on `?calm`: the broken instance was
        // replaced, so the next call works.
        let reply = send(&c, "POST", &gateway.url("/kylin/api/query?calm"), &[], "{}")
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["headers"]["x-misbehave"], "calm");
    }
    assert_eq!(node.hits(), 3, "rejected requests never reached the node");
}

/// Components that must not load: the gateway refuses to start and says
/// which plugin and why.
#[test]
fn broken_components_are_refused_at_start_with_the_reason() {
    let files = built();
    let dir = TempDir::new("kgw-hostile");
    let core_module = dir.path.join("core.wasm");
    // The smallest valid core module: magic and version, no sections.
    std::fs::write(&core_module, b"\0asm\x01\0\0\0").unwrap();
    let garbage = dir.path.join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm").unwrap();
    let missing = dir.path.join("missing.wasm");
    let cases = [
        (core_module.as_path(), "", "not a valid component"),
        (garbage.as_path(), "", "not a valid component"),
        (
            files.other_world.as_path(),
            "",
            "does not implement world kylin-gateway:plugin/routing-plugin",
        ),
        (
            files.misbehave.as_path(),
            "init-fail",
            "init failed: init-fail",
        ),
        (
            files.canary.as_path(),
            "{\"percent\": 10}",
            "canary config: missing field `nodes`",
        ),
        (missing.as_path(), "", "cannot read"),
    ];
    for (i, (path, config, expected)) in cases.iter().enumerate() {
        let config_path = dir.path.join(format!("gateway-{i}.toml"));
        std::fs::write(
            &config_path,
            format!(
                "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[discovery]\nkind = \"static\"\n[[discovery.nodes]]\naddress = \"127.0.0.1:9\"\n{}",
                plugin_toml(&format!("p{i}"), path, config, "fallback")
            ),
        )
        .unwrap();
        // Bounded: a gateway that starts anyway would serve forever.
        let output = run_with_deadline(
            "kylin-gateway",
            Command::new(target_bin("kylin-gateway"))
                .arg("--config")
                .arg(&config_path),
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "case {i} started");
        assert!(
            stderr.contains(&format!("plugin 'p{i}'")) && stderr.contains(expected),
            "case {i}: expected {expected:?} in {stderr}"
        );
    }
}

#[test]
fn plugin_check_prints_the_decision_or_the_failure() {
    let files = built();
    let run_within = |path: &std::path::Path, config: &str, deadline_ms: &str| {
        let output = run_with_deadline(
            "kylin-gateway plugin check",
            Command::new(target_bin("kylin-gateway"))
                .args(["plugin", "check"])
                .arg(path)
                .args(["--config", config, "--deadline-ms", deadline_ms]),
            Duration::from_secs(60),
        );
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let run = |path: &std::path::Path, config: &str| run_within(path, config, "100");
    let (ok, out) = run(&files.canary, r#"{"nodes": ["node-3"], "percent": 100}"#);
    assert!(ok, "{out}");
    assert!(out.contains("decision: Prefer([\"node-3\"])"), "{out}");
    let (ok, out) = run(&files.misbehave, "loop");
    assert!(!ok, "{out}");
    assert!(out.contains("FAILED deadline"), "{out}");
    // The memory bomb meets the memory cap well inside the default
    // deadline: a bomb that wrote its memory took ~10 ms of faulting fresh
    // pages, and once, under CI's load, over 100 ms, failing as `deadline`
    // in `misbehaving_plugins_fall_back_and_are_counted`.
    let (ok, out) = run_within(&files.misbehave, "oom", "2");
    assert!(!ok, "{out}");
    assert!(out.contains("FAILED memory"), "{out}");
    let (ok, out) = run(&files.other_world, "");
    assert!(!ok, "{out}");
    assert!(out.contains("does not implement world"), "{out}");
}

/// `host.log` lines carry the plugin's name, and a plugin logging on every
/// request is cut down to a trickle with the suppressed lines counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_log_lines_are_tagged_and_rate_limited() {
    let files = built();
    let node = Backend::start("a", 0).await;
    // Gateway::launch: fresh ports on every start-up attempt, the log kept
    // in a file.
    let gateway = Gateway::launch(
        &Launch {
            rust_log: Some("warn,plugin=info".into()),
            log_to_file: true,
            ..Launch::default()
        },
        &format!(
            "{}\n{}\n{}",
            static_toml(&node),
            runtime_toml(false),
            plugin_toml("chatty", &files.misbehave, "chatty", "fallback")
        ),
    );
    let c = client();
    let url = |path: &str| gateway.url(path);
    gateway.wait_ready().await;

    const REQUESTS: usize = 100;
    for _ in 0..REQUESTS {
        let reply = send(&c, "POST", &url("/kylin/api/query"), &[], "{}")
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
    }
    let chatty_lines = || -> Vec<String> {
        gateway
            .log()
            .lines()
            .filter(|l| l.contains("chatty: routing /kylin/api/query"))
            .map(String::from)
            .collect()
    };
    let burst = chatty_lines();
    assert!(burst.len() >= 20, "the burst is logged: {burst:?}");
    assert!(
        burst.len() < REQUESTS,
        "not rate-limited: {} lines",
        burst.len()
    );
    assert!(
        burst.iter().all(|l| l.contains("plugin=\"chatty\"")),
        "{burst:?}"
    );
    // Once the bucket refills, the next line admitted reports how many
    // were dropped.
    let report = kylin_gateway_tests::support::eventually_async(
        "a line reporting suppressed lines",
        Duration::from_secs(10),
        || async {
            send(&c, "POST", &url("/kylin/api/query"), &[], "{}")
                .await
                .unwrap();
            chatty_lines()
                .into_iter()
                .find(|l| l.contains("suppressed=") && !l.contains("suppressed=0"))
        },
    )
    .await;
    assert!(report.contains("plugin=\"chatty\""), "{report}");
}
