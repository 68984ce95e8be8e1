//! The gateway process's life: graceful drain on SIGTERM (and its deadline),
//! `check-config` output and errors, the annotated example config, and the
//! Prometheus metrics the admin listener exports.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kylin_gateway_tests::support::backend::Backend;
use kylin_gateway_tests::support::gateway::{Gateway, TempDir, metric_value, static_discovery};
use kylin_gateway_tests::support::http::{client, get, send};
use kylin_gateway_tests::support::{eventually, eventually_async, run_with_deadline, target_bin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn refuses_connections(port: u16) -> Option<()> {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
        .then_some(())
}

/// On both runtime shapes: thread per core drains every serving thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    drains_in_flight_requests("multi-thread").await;
    drains_in_flight_requests("current-thread").await;
}

async fn drains_in_flight_requests(runtime: &str) {
    let node = Backend::start("n", 0).await;
    let mut gateway = Gateway::start(&format!(
        // Idle connections stay with hyper (not released) here: the drain
        // of released ones is core_limits'.
        "{}\n[limits]\nidle_release_ms = 60000\n[shutdown]\ndrain_timeout_ms = 10000\n[runtime]\nkind = \"{runtime}\"\n",
        static_discovery(&[(node.addr, "all", true)])
    ));
    gateway.wait_ready().await;
    let c = client();
    let slow_url = gateway.url("/__kgw/sleep?ms=1500");
    let slow = tokio::spawn(async move {
        let started = Instant::now();
        let reply = get(&c, &slow_url).await;
        (reply, started.elapsed())
    });
    eventually_async(
        "slow request at the node",
        Duration::from_secs(10),
        || async {
            assert!(!slow.is_finished(), "the slow request ended early");
            (node.hits() >= 1).then_some(())
        },
    )
    .await;
    // A keep-alive connection that was answered and is idle: the drain
    // closes it at once rather than waiting for its client.
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", gateway.http_port))
        .await
        .unwrap();
    idle.write_all(b"GET /kylin/api/projects HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 4096];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    gateway.process.signal("TERM");
    let signalled = Instant::now();
    let http_port = gateway.http_port;
    eventually_async("listener closed", Duration::from_secs(5), || {
        refuses_connections(http_port)
    })
    .await;
    assert!(
        !slow.is_finished(),
        "the slow request ended before new connections were refused"
    );
    // While draining, the admin listener stays up and says not ready.
    let admin = client();
    let readyz = get(&admin, &gateway.admin_url("/readyz")).await.unwrap();
    assert_eq!((readyz.status, readyz.text().as_str()), (503, "draining\n"));
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut answer)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "{runtime}: the idle connection was not closed by the drain: {closed:?}"
    );
    let (reply, took) = slow.await.unwrap();
    let reply = reply.expect("the in-flight request was cut off");
    assert_eq!(reply.status, 200);
    assert!(took >= Duration::from_millis(1500));
    // The answer in flight closes its connection: the client's pool does
    // not keep it, and the gateway need not wait for the drain deadline.
    assert_eq!(
        reply.headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "{runtime}: {:?}",
        reply.headers
    );
    let status = eventually("gateway exit", Duration::from_secs(10), || {
        gateway.process.try_wait()
    });
    assert_eq!(status.code(), Some(0), "{status:?}");
    let exited = signalled.elapsed();
    assert!(
        exited < Duration::from_secs(6),
        "{runtime}: exited {exited:?} after SIGTERM (drain deadline 10 s)"
    );
}

/// Thread per core binds one `SO_REUSEPORT` socket per thread; a second
/// gateway on the same port must not join them and split the first one's
/// connections, on either runtime shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_on_a_taken_port_exits_naming_it() {
    let node = Backend::start("n", 0).await;
    let nodes = static_discovery(&[(node.addr, "all", true)]);
    let first = Gateway::start(&nodes);
    first.wait_ready().await;
    let dir = TempDir::new("kgw-second");
    for runtime in ["current-thread", "multi-thread"] {
        let config = dir.path.join(format!("{runtime}.toml"));
        std::fs::write(
            &config,
            format!(
                "[listen]\nhttp = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:0\"\n\n{nodes}\n[runtime]\nkind = \"{runtime}\"\n",
                first.http_port
            ),
        )
        .unwrap();
        let output = run_with_deadline(
            "second kylin-gateway",
            Command::new(target_bin("kylin-gateway"))
                .arg("--config")
                .arg(&config)
                .env("RUST_LOG", "warn"),
            Duration::from_secs(20),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{runtime}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "listen.http: cannot bind 127.0.0.1:{}",
                first.http_port
            )),
            "{runtime}: {stderr}"
        );
    }
    // The first one still has the port to itself.
    for _ in 0..8 {
        let reply = get(&client(), &first.url("/kylin/api/projects"))
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
    }
    assert_eq!(node.hits(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_cuts_off_requests_that_outlast_it() {
    let node = Backend::start("n", 0).await;
    let mut gateway = Gateway::start(&format!(
        "{}\n[shutdown]\ndrain_timeout_ms = 300\n",
        static_discovery(&[(node.addr, "all", true)])
    ));
    gateway.wait_ready().await;
    let c = client();
    let slow_url = gateway.url("/__kgw/sleep?ms=20000");
    let slow = tokio::spawn(async move { get(&c, &slow_url).await });
    eventually_async(
        "slow request at the node",
        Duration::from_secs(10),
        || async {
            assert!(!slow.is_finished(), "the slow request ended early");
            (node.hits() >= 1).then_some(())
        },
    )
    .await;
    let signalled = Instant::now();
    gateway.process.signal("TERM");
    let status = eventually("gateway exit", Duration::from_secs(10), || {
        gateway.process.try_wait()
    });
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM with a 300 ms drain deadline"
    );
    let cut = slow.await.unwrap();
    assert!(
        cut.is_err(),
        "a request outlasting the drain deadline completed: {cut:?}"
    );
}

fn check_config(file: &Path) -> (i32, String, String) {
    let output = run_with_deadline(
        "kylin-gateway check-config",
        Command::new(target_bin("kylin-gateway"))
            .arg("check-config")
            .arg(file),
        Duration::from_secs(30),
    );
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_the_effective_config_in_the_input_keys() {
    let dir = TempDir::new("kgw-check");
    let file = dir.path.join("gateway.toml");
    std::fs::write(
        &file,
        r#"
[listen]
http = "127.0.0.1:7070"
admin = "127.0.0.1:7071"
[discovery]
kind = "static"
[[discovery.nodes]]
address = "127.0.0.1:7081"
mode = "all"
leader = true
[routing]
job_hold_ms = 2000
"#,
    )
    .unwrap();
    let (code, stdout, stderr) = check_config(&file);
    assert_eq!(code, 0, "{stderr}");
    for expected in [
        "job_hold_ms = 2000",
        "retries = 2",
        "drain_timeout_ms = 30000",
        "connect_timeout_ms = 1000",
        "mode = \"all\"",
        "balance = \"p2c\"",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?}:\n{stdout}");
    }
    // The printed config is a valid config that prints the same.
    let printed = dir.path.join("printed.toml");
    std::fs::write(&printed, &stdout).unwrap();
    let (code, again, stderr) = check_config(&printed);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(again, stdout);
}

#[test]
fn bad_configs_exit_2_with_one_line_naming_the_key() {
    let dir = TempDir::new("kgw-bad");
    let cases = [
        ("[routing]\nbalance = \"fastest\"\n", "routing.balance"),
        ("[upstream]\nretries = -1\n", "upstream.retries"),
        ("[listen]\nhttp = \"localhost\"\n", "listen.http"),
        ("[routing]\njob_hold = 10\n", "routing.job_hold"),
        (
            "[[discovery.nodes]]\naddress = \"127.0.0.1:1\"\nmode = \"everything\"\n",
            "discovery.nodes[0].mode",
        ),
        ("[routing\n", "(syntax)"),
    ];
    let node = "[[discovery.nodes]]\naddress = \"127.0.0.1:7081\"\n";
    for (text, key) in cases {
        let file = dir.path.join("bad.toml");
        let text = if text.contains("discovery") {
            text.to_string()
        } else {
            format!("{text}{node}")
        };
        std::fs::write(&file, &text).unwrap();
        let (code, stdout, stderr) = check_config(&file);
        assert_eq!(code, 2, "{text:?}: {stdout}{stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{text:?}: not one line: {stderr}"
        );
        assert!(
            stderr.contains(key),
            "{text:?}: {stderr} does not name {key}"
        );
    }
    // Serving with a bad config fails the same way. Bounded, and on ports
    // of its own: if validation regressed, this gateway would serve.
    let file = dir.path.join("bad.toml");
    std::fs::write(
        &file,
        format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[health]\neject_after = 0\n{node}"
        ),
    )
    .unwrap();
    let output = run_with_deadline(
        "kylin-gateway",
        Command::new(target_bin("kylin-gateway"))
            .arg("--config")
            .arg(&file),
        Duration::from_secs(30),
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("health.eject_after"), "{stderr}");
}

#[test]
fn the_annotated_example_config_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway.example.toml");
    let (code, stdout, stderr) = check_config(&example);
    assert_eq!(code, 0, "gateway.example.toml: {stderr}");
    assert!(stdout.contains("[discovery]"), "{stdout}");
    // Every key the config parser accepts is documented there.
    let text = std::fs::read_to_string(&example).unwrap();
    let raw = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/src/config/raw.rs"),
    )
    .unwrap();
    let keys: Vec<&str> = raw
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub ")?.split_once(':'))
        .map(|(name, _)| name)
        .filter(|name| !name.contains(' '))
        .collect();
    assert!(keys.len() > 40, "parsed too few keys from raw.rs: {keys:?}");
    for key in keys {
        let documented = text.contains(&format!("{key} ="))
            || text.contains(&format!("[{key}]"))
            || text.contains(&format!(".{key}]"));
        assert!(
            documented,
            "config key `{key}` is not in gateway.example.toml"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_latency_retries_ejections_and_view_updates() {
    let node = Backend::start("n", 0).await;
    let dead = Backend::start("dead", 0).await;
    let dead_addr = dead.addr;
    drop(dead);
    let gateway = Gateway::start(&format!(
        "{}\n[health]\neject_after = 1\n",
        static_discovery(&[(node.addr, "all", true), (dead_addr, "query", false)])
    ));
    gateway.wait_ready().await;
    let c = client();
    for _ in 0..10 {
        let r = send(&c, "POST", &gateway.url("/kylin/api/query"), &[], "{}")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let r = send(
        &c,
        "PUT",
        &gateway.url("/kylin/api/jobs/j1/cancel"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let metrics = get(&c, &gateway.admin_url("/metrics"))
        .await
        .unwrap()
        .text();
    let upstream = format!("upstream=\"{}\"", node.addr);
    // Every series asserted on must be exported: a missing one fails
    // rather than reading as 0.
    let value = |name: &str, labels: &[&str]| {
        metric_value(&metrics, name, labels)
            .unwrap_or_else(|| panic!("no {name} series with {labels:?} in:\n{metrics}"))
    };
    assert_eq!(
        value(
            "kgw_requests_total",
            &["class=\"query\"", "status=\"200\"", &upstream]
        ),
        10.0,
        "{metrics}"
    );
    assert_eq!(
        value(
            "kgw_requests_total",
            &["class=\"job\"", "status=\"200\"", &upstream]
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        value("kgw_request_duration_seconds_count", &["class=\"query\""]),
        10.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("kgw_request_duration_seconds_bucket{"),
        "{metrics}"
    );
    assert!(
        value("kgw_retries_total", &["class=\"query\""]) >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        value(
            "kgw_ejections_total",
            &[&format!("upstream=\"{dead_addr}\"")]
        ),
        1.0,
        "{metrics}"
    );
    assert!(value("kgw_view_updates_total", &[]) >= 1.0, "{metrics}");
    assert_eq!(
        value(
            "kgw_upstream_ejected",
            &[&format!("upstream=\"{dead_addr}\"")]
        ),
        1.0
    );
    assert_eq!(value("kgw_upstream_in_flight", &[&upstream]), 0.0);
}

/// Runs `kylin-gateway ARGS…` in `cwd`, bounded.
fn gateway_in(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let output = run_with_deadline(
        "kylin-gateway",
        Command::new(target_bin("kylin-gateway"))
            .args(args)
            .current_dir(cwd),
        Duration::from_secs(30),
    );
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_config_takes_kylin_properties_before_or_after_the_subcommand() {
    let dir = TempDir::new("kgw-props");
    std::fs::write(
        dir.path.join("gateway.toml"),
        "[listen]\nhttp = \"127.0.0.1:7070\"\nadmin = \"127.0.0.1:7071\"\n[discovery]\nkind = \"zookeeper\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path.join("kylin.properties"),
        "kylin.env.zookeeper-connect-string=zk-from-props:2181\nkylin.metadata.url=kylin_meta_props@hbase\n",
    )
    .unwrap();
    let after = [
        "check-config",
        "gateway.toml",
        "--kylin-properties",
        "kylin.properties",
    ];
    let before = [
        "--kylin-properties",
        "kylin.properties",
        "check-config",
        "gateway.toml",
    ];
    for args in [&after, &before] {
        let (code, stdout, stderr) = gateway_in(&dir.path, args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(
            stdout.contains("connect = \"zk-from-props:2181\""),
            "{args:?}: connect string not taken from kylin.properties:\n{stdout}"
        );
        assert!(
            stdout.contains("/kylin/kylin_meta_props"),
            "{args:?}: base path not taken from kylin.properties:\n{stdout}"
        );
    }
}

/// Relative paths in the config are relative to the config file, not to
/// the working directory: an admin token file and CA bundle (read by
/// `check-config`) and a plugin (loaded when serving), with the gateway
/// started from another directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_paths_in_the_config_resolve_against_its_directory() {
    use kylin_gateway_tests::support::certs::TestCa;
    use kylin_gateway_tests::support::plugins;
    use kylin_gateway_tests::support::process::{ChildGuard, free_port};

    let config_dir = TempDir::new("kgw-conf");
    let elsewhere = TempDir::new("kgw-cwd");
    std::fs::create_dir_all(config_dir.path.join("secrets")).unwrap();
    std::fs::create_dir_all(config_dir.path.join("plugins")).unwrap();
    std::fs::write(config_dir.path.join("secrets/admin-token"), "s3cret\n").unwrap();
    TestCa::new("nodes CA").write(&config_dir.path.join("nodes-ca.pem"));
    std::fs::copy(
        &plugins::built().query_affinity,
        config_dir.path.join("plugins/affinity.wasm"),
    )
    .unwrap();

    let node = Backend::start("n", 0).await;
    let (http_port, admin_port) = (free_port(), free_port());
    let config = format!(
        "[listen]\nhttp = \"127.0.0.1:{http_port}\"\nadmin = \"127.0.0.1:{admin_port}\"\n\
         [admin]\ntoken_file = \"secrets/admin-token\"\n\
         [upstream]\ntls_ca = \"nodes-ca.pem\"\n\
         {}\n\
         [[plugins]]\nname = \"affinity\"\npath = \"plugins/affinity.wasm\"\nconfig = '{{\"hash\": \"project+sql\"}}'\n",
        static_discovery(&[(node.addr, "all", true)])
    );
    let file = config_dir.path.join("gateway.toml");
    std::fs::write(&file, config).unwrap();
    let file_arg = file.to_str().unwrap();

    // check-config reads the token file and the CA bundle.
    let (code, stdout, stderr) = gateway_in(&elsewhere.path, &["check-config", file_arg]);
    assert_eq!(code, 0, "check-config from another directory: {stderr}");
    let expected = config_dir.path.join("plugins/affinity.wasm");
    assert!(
        stdout.contains(expected.to_str().unwrap()),
        "the plugin path is not resolved against the config's directory:\n{stdout}"
    );
    // The same from the config's parent, naming the config relatively.
    let parent = config_dir.path.parent().unwrap();
    let relative = file.strip_prefix(parent).unwrap().to_str().unwrap();
    let (code, _, stderr) = gateway_in(parent, &["check-config", relative]);
    assert_eq!(code, 0, "check-config {relative} from its parent: {stderr}");

    // Serving loads the plugin from the config's directory.
    let mut command = Command::new(target_bin("kylin-gateway"));
    command
        .args(["--config", file_arg])
        .current_dir(&elsewhere.path)
        .env("RUST_LOG", "warn");
    let mut gateway = ChildGuard::spawn("kylin-gateway", &mut command).unwrap();
    let c = client();
    let plugins_url = format!("http://127.0.0.1:{admin_port}/admin/plugins");
    let reply = eventually_async(
        "the gateway serves /admin/plugins",
        Duration::from_secs(60),
        || {
            let c = c.clone();
            let url = plugins_url.clone();
            async move {
                send(&c, "GET", &url, &[("Authorization", "Bearer s3cret")], "")
                    .await
                    .ok()
                    .filter(|r| r.status == 200)
            }
        },
    )
    .await;
    assert!(reply.text().contains("affinity"), "{}", reply.text());
    assert_eq!(gateway.terminate().and_then(|s| s.code()), Some(0));
}
