//! TLS termination end to end: certificates reloaded without a restart (on
//! a file change, SIGHUP and `POST /admin/tls/reload`; new handshakes get
//! the new certificate, an open connection keeps working), a bad pair
//! keeping the old one (reported, counted, logged), SNI choosing among
//! several certificates with a default, client-certificate authentication
//! (and its CA bundle rotated without a restart),
//! the lowest protocol version, the expiry gauge, and start-up errors.
//! Certificates are made at test time; the served one is identified by the
//! SHA-256 of its DER.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use kylin_gateway_tests::support::backend::Backend;
use kylin_gateway_tests::support::certs::{
    Leaf, TestCa, probe_config, served_leaf, tls_connect, write_atomically,
};
use kylin_gateway_tests::support::eventually_async;
use kylin_gateway_tests::support::gateway::{
    Gateway, Launch, TempDir, metric_value, static_discovery,
};
use kylin_gateway_tests::support::http::{client, get, send};
use kylin_gateway_tests::support::process::{run_with_deadline, target_bin};

const WAIT: Duration = Duration::from_secs(15);

/// A gateway serving HTTPS with `[tls]` from `tls_section`, in front of
/// one plain node.
struct TlsGateway {
    gateway: Gateway,
    https_port: u16,
    _node: Backend,
}

async fn launch(tls_section: &str) -> TlsGateway {
    let node = Backend::start("n", 0).await;
    let gateway = Gateway::launch(
        &Launch {
            https: true,
            log_to_file: true,
            ..Launch::default()
        },
        &format!(
            "{tls_section}\n\n{}",
            static_discovery(&[(node.addr, "all", true)])
        ),
    );
    gateway.wait_ready().await;
    TlsGateway {
        https_port: gateway.https_port.expect("an HTTPS port"),
        gateway,
        _node: node,
    }
}

/// Files for one pair in a temp dir.
struct PairFiles {
    dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
}

fn pair_files(first: &Leaf) -> PairFiles {
    let dir = TempDir::new("kgw-tls");
    let cert = dir.path.join("cert.pem");
    let key = dir.path.join("key.pem");
    first.write(&cert, &key);
    PairFiles { dir, cert, key }
}

fn tls_section(files: &PairFiles, extra: &str) -> String {
    format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}\n",
        files.cert.display(),
        files.key.display()
    )
}

/// An HTTP/1.1 keep-alive connection over TLS (certificate not checked).
async fn keep_alive(port: u16) -> SendRequest<Empty<Bytes>> {
    let config = probe_config(None, &[&rustls::version::TLS13, &rustls::version::TLS12]);
    let tls = tls_connect(port, "localhost", config).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

async fn request_on(sender: &mut SendRequest<Empty<Bytes>>) -> u16 {
    sender.ready().await.expect("connection still open");
    let request = http::Request::get("/kylin/api/projects")
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.expect("an answer");
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

async fn wait_served(port: u16, sni: &str, sha256: &str, what: &str) {
    eventually_async(what, WAIT, || async {
        served_leaf(port, sni)
            .await
            .ok()
            .filter(|served| served == sha256)
    })
    .await;
}

async fn admin_tls(gateway: &Gateway) -> serde_json::Value {
    get(&client(), &gateway.admin_url("/admin/tls"))
        .await
        .unwrap()
        .json()
}

async fn post_reload(gateway: &Gateway) -> serde_json::Value {
    let reply = send(
        &client(),
        "POST",
        &gateway.admin_url("/admin/tls/reload"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

async fn metrics(gateway: &Gateway) -> String {
    get(&client(), &gateway.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_certificate_file_is_served_to_new_handshakes_and_open_connections_keep_working()
{
    let ca = TestCa::new("test CA");
    let (first, second) = (ca.leaf(&["localhost"]), ca.leaf(&["localhost"]));
    let files = pair_files(&first);
    let tls = launch(&tls_section(&files, "")).await;
    assert_eq!(
        served_leaf(tls.https_port, "localhost").await.unwrap(),
        first.sha256
    );
    let mut old = keep_alive(tls.https_port).await;
    assert_eq!(request_on(&mut old).await, 200);

    second.write(&files.cert, &files.key);
    wait_served(
        tls.https_port,
        "localhost",
        &second.sha256,
        "the new certificate",
    )
    .await;
    assert_eq!(
        request_on(&mut old).await,
        200,
        "the old connection still works"
    );
    let status = admin_tls(&tls.gateway).await;
    assert_eq!(status["certs"][0]["sha256"], second.sha256.as_str());
    assert!(
        status["certs"][0]["last_reload_error"].is_null(),
        "{status}"
    );
    let text = metrics(&tls.gateway).await;
    let reloads = metric_value(&text, "kgw_tls_reloads_total", &["trigger=\"file\""]);
    assert!(reloads.is_some_and(|n| n >= 1.0), "{text}");
    drop(files.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_post_reload_the_certificates_when_files_are_not_watched() {
    let ca = TestCa::new("test CA");
    let leaves = [
        ca.leaf(&["localhost"]),
        ca.leaf(&["localhost"]),
        ca.leaf(&["localhost"]),
    ];
    let files = pair_files(&leaves[0]);
    let tls = launch(&tls_section(&files, "watch_files = false")).await;
    let mut old = keep_alive(tls.https_port).await;
    assert_eq!(request_on(&mut old).await, 200);

    leaves[1].write(&files.cert, &files.key);
    tls.gateway.process.signal("HUP");
    wait_served(
        tls.https_port,
        "localhost",
        &leaves[1].sha256,
        "the certificate after SIGHUP",
    )
    .await;
    assert_eq!(
        request_on(&mut old).await,
        200,
        "the old connection still works"
    );

    leaves[2].write(&files.cert, &files.key);
    let answer = post_reload(&tls.gateway).await;
    assert_eq!(answer["certs"][0]["sha256"], leaves[2].sha256.as_str());
    // The answer comes once the new set is in place: no waiting.
    assert_eq!(
        served_leaf(tls.https_port, "localhost").await.unwrap(),
        leaves[2].sha256
    );
    assert_eq!(
        request_on(&mut old).await,
        200,
        "the old connection still works"
    );
    let text = metrics(&tls.gateway).await;
    for trigger in ["sighup", "admin"] {
        let needle = format!("trigger=\"{trigger}\"");
        let n = metric_value(&text, "kgw_tls_reloads_total", &[needle.as_str()]);
        assert_eq!(n, Some(1.0), "{trigger}: {text}");
    }
    drop(files.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_pair_keeps_the_old_certificate_and_is_reported_counted_and_logged() {
    let ca = TestCa::new("test CA");
    let (good, other) = (ca.leaf(&["localhost"]), ca.leaf(&["localhost"]));
    let files = pair_files(&good);
    let tls = launch(&tls_section(&files, "watch_files = false")).await;
    let cert_file = files.cert.display().to_string();
    let key_file = files.key.display().to_string();
    type BreakIt<'a> = Box<dyn Fn() + 'a>;
    let bad_pairs: [(&str, BreakIt, &str); 3] = [
        (
            "a key of another certificate",
            Box::new(|| {
                write_atomically(&files.cert, &other.cert_pem);
                write_atomically(&files.key, &good.key_pem);
            }),
            "does not belong to the certificate",
        ),
        (
            "an unparsable certificate",
            Box::new(|| write_atomically(&files.cert, "not a certificate\n")),
            "no CERTIFICATE block",
        ),
        (
            "a missing key file",
            Box::new(|| {
                write_atomically(&files.cert, &other.cert_pem);
                std::fs::remove_file(&files.key).unwrap();
            }),
            "cannot read",
        ),
    ];
    for (n, (what, break_it, why)) in bad_pairs.iter().enumerate() {
        break_it();
        let answer = post_reload(&tls.gateway).await;
        let error = answer["certs"][0]["last_reload_error"]
            .as_str()
            .unwrap_or_default();
        assert!(error.contains(why), "{what}: {answer}");
        let file = if *why == "no CERTIFICATE block" {
            &cert_file
        } else {
            &key_file
        };
        assert!(
            error.contains(file.as_str()),
            "{what} names the file: {error}"
        );
        assert_eq!(answer["certs"][0]["sha256"], good.sha256.as_str(), "{what}");
        assert_eq!(
            served_leaf(tls.https_port, "localhost").await.unwrap(),
            good.sha256,
            "{what}: the old certificate is still served"
        );
        let text = metrics(&tls.gateway).await;
        let failures = metric_value(&text, "kgw_tls_reload_failures_total", &["name=\"tls\""]);
        assert_eq!(failures, Some((n + 1) as f64), "{what}: {text}");
    }
    let log = tls.gateway.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("TLS reload: tls:"))
        .collect();
    assert_eq!(warnings.len(), 3, "{log}");
    assert!(warnings.iter().all(|l| l.contains("WARN")), "{warnings:?}");

    other.write(&files.cert, &files.key);
    let answer = post_reload(&tls.gateway).await;
    assert!(
        answer["certs"][0]["last_reload_error"].is_null(),
        "{answer}"
    );
    assert_eq!(
        served_leaf(tls.https_port, "localhost").await.unwrap(),
        other.sha256
    );
    drop(files.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_the_certificate_and_unknown_or_absent_names_get_the_default() {
    let ca = TestCa::new("test CA");
    let default = ca.leaf(&["default.test"]);
    let exact = ca.leaf_valid_for(&["kylin.example.com"], 30);
    let wildcard = ca.leaf(&["*.apps.example.com"]);
    let listed = ca.leaf(&["not-the-name.test"]);
    let dir = TempDir::new("kgw-sni");
    let mut section = String::from("[tls]\n");
    for (i, leaf) in [&default, &exact, &wildcard, &listed].iter().enumerate() {
        let (cert, key) = (
            dir.path.join(format!("{i}.pem")),
            dir.path.join(format!("{i}.key")),
        );
        leaf.write(&cert, &key);
        let (cert, key) = (cert.display(), key.display());
        section.push_str(&match i {
            0 => format!("cert = \"{cert}\"\nkey = \"{key}\"\n"),
            3 => format!(
                "[[tls.certs]]\ncert = \"{cert}\"\nkey = \"{key}\"\nnames = [\"explicit.test\"]\n"
            ),
            _ => format!("[[tls.certs]]\ncert = \"{cert}\"\nkey = \"{key}\"\n"),
        });
    }
    let tls = launch(&section).await;
    let port = tls.https_port;
    for (sni, leaf) in [
        ("kylin.example.com", &exact),
        ("KYLIN.example.com", &exact),
        ("web.apps.example.com", &wildcard),
        ("explicit.test", &listed),
        ("not-the-name.test", &default),
        ("a.web.apps.example.com", &default),
        ("unknown.test", &default),
        ("127.0.0.1", &default),
    ] {
        assert_eq!(
            served_leaf(port, sni).await.unwrap(),
            leaf.sha256,
            "SNI {sni}"
        );
    }
    let status = admin_tls(&tls.gateway).await;
    assert_eq!(status["certs"].as_array().unwrap().len(), 4, "{status}");
    assert_eq!(status["certs"][1]["name"], "tls.certs[0]");
    assert_eq!(
        status["certs"][1]["sni_names"],
        serde_json::json!(["kylin.example.com"])
    );
    assert_eq!(status["certs"][1]["issuer"], "CN=test CA");
    assert_eq!(status["certs"][1]["subject"], "CN=kylin.example.com");
    assert_eq!(
        status["certs"][3]["sni_names"],
        serde_json::json!(["explicit.test"])
    );
    let text = metrics(&tls.gateway).await;
    let days = metric_value(
        &text,
        "kgw_tls_cert_expiry_days",
        &["name=\"tls.certs[0]\""],
    )
    .unwrap_or_else(|| panic!("no expiry gauge: {text}"));
    assert!((29.9..=30.0).contains(&days), "{days} days left of 30");
    let default_days = metric_value(&text, "kgw_tls_cert_expiry_days", &["name=\"tls\""]);
    assert!(
        default_days.is_some_and(|d| (89.9..=90.0).contains(&d)),
        "{text}"
    );

    // The default minimum is TLS 1.2: a 1.2-only client gets through.
    let tls12 = probe_config(None, &[&rustls::version::TLS12]);
    tls_connect(port, "kylin.example.com", tls12)
        .await
        .expect("TLS 1.2 is accepted by default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ca_rejects_a_client_without_a_certificate_and_accepts_one_signed_by_it() {
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("client CA");
    let strangers = TestCa::new("another CA");
    let files = pair_files(&ca.leaf(&["localhost"]));
    let client_ca = files.dir.path.join("client-ca.pem");
    clients.write(&client_ca);
    let tls = launch(&tls_section(
        &files,
        &format!("client_ca = \"{}\"", client_ca.display()),
    ))
    .await;
    let none = answer_with(tls.https_port, None).await;
    assert!(none.is_err(), "no client certificate: {none:?}");
    let foreign = strangers.leaf(&["client.test"]);
    let foreign = answer_with(tls.https_port, Some(&foreign)).await;
    assert!(foreign.is_err(), "a certificate of another CA: {foreign:?}");
    let ours = clients.leaf(&["client.test"]);
    assert_eq!(answer_with(tls.https_port, Some(&ours)).await.unwrap(), 200);
}

/// The status of one request over a new TLS connection presenting
/// `client_cert`, or the error when the handshake or the first read fails
/// (TLS 1.3: a refused client certificate shows on the first read).
async fn answer_with(port: u16, client_cert: Option<&Leaf>) -> std::io::Result<u16> {
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let stream = tls_connect(port, "localhost", probe_config(client_cert, &versions)).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    let request = http::Request::get("/kylin/api/projects")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)?;
    Ok(response.status().as_u16())
}

/// A rotated client CA bundle is in force after a reload, with no
/// restart: certificates of the old CA are refused, the new CA's accepted.
/// A bundle that fails to load keeps the previous one (reported, counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_client_ca_is_used_after_a_reload_and_a_bad_one_keeps_the_previous() {
    let ca = TestCa::new("server CA");
    let (old_clients, new_clients) = (TestCa::new("old client CA"), TestCa::new("new client CA"));
    let files = pair_files(&ca.leaf(&["localhost"]));
    let client_ca = files.dir.path.join("client-ca.pem");
    old_clients.write(&client_ca);
    let tls = launch(&tls_section(
        &files,
        &format!(
            "client_ca = \"{}\"\nwatch_files = false",
            client_ca.display()
        ),
    ))
    .await;
    let (old_leaf, new_leaf) = (
        old_clients.leaf(&["client.test"]),
        new_clients.leaf(&["client.test"]),
    );
    assert_eq!(
        answer_with(tls.https_port, Some(&old_leaf)).await.unwrap(),
        200
    );
    let first = admin_tls(&tls.gateway).await["client_ca"].clone();
    assert_eq!(first["anchors"], 1, "{first}");

    new_clients.write(&client_ca);
    let reloaded = post_reload(&tls.gateway).await;
    assert!(
        reloaded["client_ca"]["last_reload_error"].is_null(),
        "{reloaded}"
    );
    assert_ne!(
        reloaded["client_ca"]["sha256"], first["sha256"],
        "{reloaded}"
    );
    let old = answer_with(tls.https_port, Some(&old_leaf)).await;
    assert!(
        old.is_err(),
        "the old CA's certificate after rotation: {old:?}"
    );
    assert_eq!(
        answer_with(tls.https_port, Some(&new_leaf)).await.unwrap(),
        200
    );

    std::fs::write(&client_ca, "not a certificate\n").unwrap();
    let failed = post_reload(&tls.gateway).await;
    let error = failed["client_ca"]["last_reload_error"]
        .as_str()
        .unwrap_or("");
    assert!(error.contains("client-ca.pem"), "{failed}");
    assert_eq!(
        failed["client_ca"]["sha256"],
        reloaded["client_ca"]["sha256"]
    );
    assert_eq!(
        answer_with(tls.https_port, Some(&new_leaf)).await.unwrap(),
        200
    );
    let text = metrics(&tls.gateway).await;
    assert_eq!(
        metric_value(
            &text,
            "kgw_tls_reload_failures_total",
            &["name=\"tls.client_ca\""]
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_1_3_rejects_a_tls_1_2_only_client() {
    let ca = TestCa::new("test CA");
    let files = pair_files(&ca.leaf(&["localhost"]));
    let tls = launch(&tls_section(&files, "min_version = \"1.3\"")).await;
    let tls12 = probe_config(None, &[&rustls::version::TLS12]);
    let refused = tls_connect(tls.https_port, "localhost", tls12).await;
    assert!(refused.is_err(), "a TLS 1.2 handshake must fail");
    let tls13 = probe_config(None, &[&rustls::version::TLS13]);
    tls_connect(tls.https_port, "localhost", tls13)
        .await
        .expect("TLS 1.3 is accepted");
}

/// A config problem in `[tls]` is one line naming the key, exit status 2.
#[test]
fn tls_config_errors_name_the_key_and_exit_2() {
    let dir = TempDir::new("kgw-tls-config");
    let missing = dir.path.join("missing.pem");
    for (tls, key) in [
        (
            "min_version = \"1.1\"\ncert = \"c\"\nkey = \"k\"",
            "tls.min_version",
        ),
        ("cert = \"c\"", "tls.key"),
        (
            "[[tls.certs]]\ncert = \"c\"\nkey = \"k\"\nnames = [\"bad name\"]",
            "tls.certs[0].names[0]",
        ),
        (
            &format!(
                "[[tls.certs]]\ncert = \"{0}\"\nkey = \"{0}\"",
                missing.display()
            ),
            "tls.certs[0]",
        ),
    ] {
        let file = dir.path.join("gateway.toml");
        let tls = format!("[tls]\n{tls}");
        std::fs::write(
            &file,
            format!(
                "[listen]\nhttps = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{tls}\n[[discovery.nodes]]\naddress = \"127.0.0.1:1\"\n"
            ),
        )
        .unwrap();
        let output = run_with_deadline(
            "kylin-gateway",
            std::process::Command::new(target_bin("kylin-gateway"))
                .arg("--config")
                .arg(&file),
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{tls}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!("config: {key}")),
            "{tls}: expected {key}: {stderr}"
        );
    }
}
