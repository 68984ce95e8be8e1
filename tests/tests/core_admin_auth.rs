//! The admin API's token: an admin listener beyond loopback refuses to
//! start without one (exit 2, one line naming the key); with one, every
//! endpoint but the probes (and, unless `admin.public_metrics = false`,
//! `/metrics`) answers 401 + `WWW-Authenticate: Bearer` without the right
//! bearer token, counted; the token comes from a file or the environment
//! and `check-config` never prints it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kylin_gateway_tests::support::backend::Backend;
use kylin_gateway_tests::support::gateway::{
    Gateway, Launch, TempDir, metric_value, static_discovery,
};
use kylin_gateway_tests::support::http::{TestClient, client, get, send};
use kylin_gateway_tests::support::{run_with_deadline, target_bin};

const TOKEN: &str = "s3cret-admin-token";

/// Runs the gateway (or `check-config`) once on `config` and returns exit
/// code, stdout and stderr. The test's own environment never leaks a token.
fn run_once(args: &[&str], config: &Path, env: Option<&str>) -> (i32, String, String) {
    let mut command = Command::new(target_bin("kylin-gateway"));
    command
        .args(args)
        .arg(config)
        .env_remove("KYLIN_GATEWAY_ADMIN_TOKEN");
    if let Some(token) = env {
        command.env("KYLIN_GATEWAY_ADMIN_TOKEN", token);
    }
    let output = run_with_deadline("kylin-gateway", &mut command, Duration::from_secs(30));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A config whose admin listener is on every address (port 0: nothing
/// ever connects to it; only start-up is exercised).
fn everywhere_config(dir: &TempDir, admin_section: &str) -> std::path::PathBuf {
    let file = dir.path.join("gateway.toml");
    std::fs::write(
        &file,
        format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"0.0.0.0:0\"\n{admin_section}\n\
             [[discovery.nodes]]\naddress = \"127.0.0.1:7081\"\n"
        ),
    )
    .unwrap();
    file
}

fn assert_refused(code: i32, stderr: &str, key: &str) {
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.contains(key), "{stderr} does not name {key}");
}

#[test]
fn a_non_loopback_admin_listener_without_a_token_does_not_start() {
    let dir = TempDir::new("kgw-auth-start");
    let bare = everywhere_config(&dir, "");
    // Serving, bounded: if the check regressed, this gateway would serve.
    let (code, _, stderr) = run_once(&["--config"], &bare, None);
    assert_refused(code, &stderr, "admin.token_file");
    let (code, _, stderr) = run_once(&["check-config"], &bare, None);
    assert_refused(code, &stderr, "admin.token_file");
    // An empty token is no token, from either source.
    let (code, _, stderr) = run_once(&["--config"], &bare, Some("  "));
    assert_refused(code, &stderr, "KYLIN_GATEWAY_ADMIN_TOKEN");
    let empty = dir.path.join("empty-token");
    std::fs::write(&empty, "\n \n").unwrap();
    let with_empty = everywhere_config(
        &dir,
        &format!("[admin]\ntoken_file = \"{}\"\n", empty.display()),
    );
    let (code, _, stderr) = run_once(&["--config"], &with_empty, None);
    assert_refused(code, &stderr, "admin.token_file");
}

#[test]
fn check_config_accepts_a_token_and_never_prints_it() {
    let dir = TempDir::new("kgw-auth-check");
    let token_file = dir.path.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let config = everywhere_config(
        &dir,
        &format!("[admin]\ntoken_file = \"{}\"\n", token_file.display()),
    );
    let (code, stdout, stderr) = run_once(&["check-config"], &config, None);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("token_file = "), "{stdout}");
    assert!(!stdout.contains(TOKEN), "the token was printed:\n{stdout}");
    let from_env = everywhere_config(&dir, "");
    let (code, stdout, stderr) = run_once(&["check-config"], &from_env, Some(TOKEN));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains(TOKEN), "the token was printed:\n{stdout}");
}

async fn status(c: &TestClient, url: &str, token: Option<&str>) -> u16 {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("Authorization", b.as_str()))
        .collect();
    let reply = send(c, "GET", url, &headers, "").await.expect(url);
    if reply.status == 401 {
        assert_eq!(
            reply.headers.get("www-authenticate").map(|v| v.as_bytes()),
            Some(&b"Bearer"[..]),
            "{url}: 401 without WWW-Authenticate: Bearer"
        );
    }
    reply.status
}

async fn unauthorized_count(c: &TestClient, gateway: &Gateway) -> f64 {
    let metrics = send(
        c,
        "GET",
        &gateway.admin_url("/metrics"),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
    .await
    .unwrap()
    .text();
    metric_value(&metrics, "kgw_admin_unauthorized_total", &[]).unwrap_or(0.0)
}

/// Starts a gateway with a token from a file (whitespace around it).
fn with_token_file(dir: &TempDir, node: &Backend, admin_extra: &str) -> Gateway {
    let token_file = dir.path.join("token");
    std::fs::write(&token_file, format!("  {TOKEN}\n")).unwrap();
    Gateway::start(&format!(
        "[admin]\ntoken_file = \"{}\"\n{admin_extra}\n{}",
        token_file.display(),
        static_discovery(&[(node.addr, "all", true)])
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_admin_endpoints_need_it_and_probes_do_not() {
    let node = Backend::start("n", 0).await;
    let dir = TempDir::new("kgw-auth");
    let gateway = with_token_file(&dir, &node, "");
    gateway.wait_ready().await;
    let c = client();
    let private = [
        "/admin/nodes",
        "/admin/leader",
        "/admin/view",
        "/admin/plugins",
        "/admin/events",
        "/admin/limits",
    ];
    for path in private {
        let url = gateway.admin_url(path);
        assert_eq!(status(&c, &url, None).await, 401, "{path} without a token");
        assert_eq!(status(&c, &url, Some("wrong")).await, 401, "{path}");
        let prefix = &TOKEN[..TOKEN.len() - 1];
        assert_eq!(status(&c, &url, Some(prefix)).await, 401, "{path}");
        assert_eq!(status(&c, &url, Some(TOKEN)).await, 200, "{path}");
    }
    let reload = gateway.admin_url("/admin/plugins/reload");
    assert_eq!(
        send(&c, "POST", &reload, &[], "").await.unwrap().status,
        401
    );
    // The status page's files carry no data; its script sends the token.
    for path in ["/healthz", "/readyz", "/metrics", "/", "/status.js"] {
        let reply = get(&c, &gateway.admin_url(path)).await.unwrap();
        assert_eq!(reply.status, 200, "{path} is public: {}", reply.text());
    }
    let expected = (private.len() * 3 + 1) as f64;
    assert_eq!(unauthorized_count(&c, &gateway).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_private() {
    let node = Backend::start("n", 0).await;
    let dir = TempDir::new("kgw-auth-metrics");
    let gateway = with_token_file(&dir, &node, "public_metrics = false\n");
    gateway.wait_ready().await;
    let c = client();
    let metrics = gateway.admin_url("/metrics");
    assert_eq!(status(&c, &metrics, None).await, 401);
    assert_eq!(status(&c, &metrics, Some("wrong")).await, 401);
    assert_eq!(status(&c, &metrics, Some(TOKEN)).await, 200);
    assert_eq!(status(&c, &gateway.admin_url("/healthz"), None).await, 200);
    assert_eq!(unauthorized_count(&c, &gateway).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_can_come_from_the_environment() {
    let node = Backend::start("n", 0).await;
    let gateway = Gateway::launch(
        &Launch {
            env: vec![("KYLIN_GATEWAY_ADMIN_TOKEN".into(), format!("{TOKEN}\n"))],
            ..Launch::default()
        },
        &static_discovery(&[(node.addr, "all", true)]),
    );
    gateway.wait_ready().await;
    let c = client();
    let nodes = gateway.admin_url("/admin/nodes");
    assert_eq!(status(&c, &nodes, None).await, 401);
    assert_eq!(status(&c, &nodes, Some("wrong")).await, 401);
    assert_eq!(status(&c, &nodes, Some(TOKEN)).await, 200);
}
