//! The proxy as a proxy: end-to-end headers pass untouched and hop-by-hop
//! ones are stripped both ways, X-Forwarded-* are set, raw paths and query
//! strings survive, h2c and TLS downstream work, a 1 GiB body streams
//! both ways through flat memory, and each request writes one access line.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kylin_gateway_tests::support::backend::{Backend, Generated};
use kylin_gateway_tests::support::gateway::{Gateway, Launch, TempDir, static_discovery};
use kylin_gateway_tests::support::http::{client, get, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_headers_pass_and_hop_by_hop_headers_do_not() {
    let node = Backend::start("n", 0).await;
    let gateway = Gateway::start(&static_discovery(&[(node.addr, "all", true)]));
    gateway.wait_ready().await;
    let c = client();
    let path =
        "/kylin/api/query/format/csv?sql=select%20*%20from%20%22T%22&a=%2F%3D&b=caf%C3%A9&flag";
    let reply = send(
        &c,
        "POST",
        &gateway.url(path),
        &[
            ("Host", "kylin.example:8080"),
            ("Connection", "keep-alive, X-Hop-Secret"),
            ("X-Hop-Secret", "must not pass"),
            ("Keep-Alive", "timeout=30"),
            ("TE", "trailers"),
            ("Upgrade", "h2c-not-really"),
            ("Proxy-Authorization", "Basic cHJveHk6cHc="),
            ("X-Forwarded-For", "203.0.113.9"),
            ("Authorization", "Basic QURNSU46S1lMSU4="),
            ("Accept", "application/vnd.apache.kylin-v2+json"),
            ("Accept-Language", "en"),
            ("Cookie", "JSESSIONID=abc123; other=1"),
            ("Content-Type", "application/json;charset=utf-8"),
        ],
        "{\"sql\":\"select 1\"}",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/kylin/api/query/format/csv");
    assert_eq!(
        seen["query"],
        "sql=select%20*%20from%20%22T%22&a=%2F%3D&b=caf%C3%A9&flag"
    );
    assert_eq!(seen["body_len"], 18);
    let h = &seen["headers"];
    for gone in [
        "x-hop-secret",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the node: {h}");
    }
    if let Some(connection) = h.get("connection") {
        // hyper may add its own `connection: keep-alive`; never the client's.
        assert!(!connection.as_str().unwrap().contains("X-Hop"), "{h}");
    }
    assert_eq!(h["authorization"], "Basic QURNSU46S1lMSU4=");
    assert_eq!(h["accept"], "application/vnd.apache.kylin-v2+json");
    assert_eq!(h["accept-language"], "en");
    assert_eq!(h["cookie"], "JSESSIONID=abc123; other=1");
    assert_eq!(h["content-type"], "application/json;charset=utf-8");
    assert_eq!(h["host"], "kylin.example:8080");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "kylin.example:8080");

    // Percent-encoded path segments are not decoded on the way.
    let reply = send(
        &c,
        "PUT",
        &gateway.url("/kylin/api/cubes/sales%20cube%2Fv2/build"),
        &[],
        "{}",
    )
    .await
    .unwrap();
    assert_eq!(
        reply.json()["path"],
        "/kylin/api/cubes/sales%20cube%2Fv2/build"
    );

    // Hop-by-hop headers from the node do not reach the client.
    let reply = get(&c, &gateway.url("/__kgw/hop")).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["x-node-public"], "kept");
    for gone in ["x-node-internal", "keep-alive", "proxy-authenticate"] {
        assert!(
            !reply.headers.contains_key(gone),
            "{gone} reached the client: {:?}",
            reply.headers
        );
    }
}

/// On either runtime shape (`[runtime] kind`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused() {
    for runtime in ["multi-thread", "current-thread"] {
        let node = Backend::start("n", 0).await;
        let gateway = Gateway::start(&format!(
            "[runtime]\nkind = \"{runtime}\"\n{}",
            static_discovery(&[(node.addr, "all", true)])
        ));
        gateway.wait_ready().await;
        let c = client();
        for _ in 0..50 {
            let r = send(&c, "POST", &gateway.url("/kylin/api/query"), &[], "{}")
                .await
                .unwrap();
            assert_eq!(r.status, 200);
        }
        let opened = node.connections.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            opened <= 2,
            "{runtime}: 50 sequential requests opened {opened} upstream connections"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_downstream() {
    let node = Backend::start("n", 0).await;
    let gateway = Gateway::start(&static_discovery(&[(node.addr, "all", true)]));
    gateway.wait_ready().await;
    let h2: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for _ in 0..3 {
        let request = http::Request::post(gateway.url("/kylin/api/query?project=p"))
            .header("accept", "application/vnd.apache.kylin-v2+json")
            .body(Full::new(Bytes::from_static(b"{\"sql\":\"select 2\"}")))
            .unwrap();
        let response = h2.request(request).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["query"], "project=p");
        assert_eq!(seen["body_len"], 18);
        assert_eq!(
            seen["headers"]["accept"],
            "application/vnd.apache.kylin-v2+json"
        );
        // h2 has no Host header: the gateway sends the :authority.
        assert_eq!(
            seen["headers"]["host"],
            format!("127.0.0.1:{}", gateway.http_port)
        );
    }
    assert_eq!(node.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_with_a_self_signed_certificate() {
    let node = Backend::start("n", 0).await;
    let dir = TempDir::new("kgw-tls");
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path.join("cert.pem");
    let key_path = dir.path.join("key.pem");
    std::fs::write(&cert_path, generated.cert.pem()).unwrap();
    std::fs::write(&key_path, generated.signing_key.serialize_pem()).unwrap();
    // The HTTPS port is picked by Gateway::launch, afresh on every start-up
    // attempt like the others.
    let gateway = Gateway::launch(
        &Launch {
            https: true,
            ..Launch::default()
        },
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n{}",
            cert_path.display(),
            key_path.display(),
            static_discovery(&[(node.addr, "all", true)])
        ),
    );
    gateway.wait_ready().await;
    let https_port = gateway.https_port.expect("an HTTPS port");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(generated.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", https_port))
        .await
        .unwrap();
    let server_name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(server_name, tcp).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    for _ in 0..2 {
        let request = http::Request::get("/kylin/api/projects?x=%20")
            .header("host", "kylin.example")
            .body(Empty::<Bytes>::new())
            .unwrap();
        // Both requests on one TLS connection: keep-alive works over TLS.
        sender.ready().await.expect("TLS connection still open");
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["query"], "x=%20");
        assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
        assert_eq!(seen["headers"]["x-forwarded-host"], "kylin.example");
    }
    // Plain HTTP on the same gateway still says http.
    let reply = get(&client(), &gateway.url("/kylin/api/projects"))
        .await
        .unwrap();
    assert_eq!(reply.json()["headers"]["x-forwarded-proto"], "http");
}

const GIB: u64 = 1 << 30;
const RSS_LIMIT_KIB: u64 = 100 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_streams_both_ways_in_flat_memory() {
    let node = Backend::start("n", 0).await;
    let gateway = Gateway::start(&static_discovery(&[(node.addr, "all", true)]));
    gateway.wait_ready().await;

    // Upload: the request body is generated as it is sent, never held.
    let uploader: Client<_, Generated> = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::post(gateway.url("/kylin/api/upload"))
        .body(Generated::new(GIB))
        .unwrap();
    let response = uploader.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["body_len"], GIB, "the node did not get every byte");
    let (peak_after_upload, _) = gateway.memory_kib();

    // Download: counted frame by frame, never collected.
    let downloader: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::get(gateway.url(&format!("/__kgw/download?bytes={GIB}")))
        .body(Empty::new())
        .unwrap();
    let response = downloader.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, GIB, "the client did not get every byte");
    let (peak, current) = gateway.memory_kib();
    assert!(
        peak < RSS_LIMIT_KIB,
        "gateway peak RSS {peak} KiB (after upload {peak_after_upload} KiB, now {current} KiB)"
    );
    eprintln!(
        "gateway RSS: peak {peak} KiB, after upload {peak_after_upload} KiB, now {current} KiB"
    );
}

/// The access log operators read (`RUST_LOG` at `info`): one line per
/// request with the fields they grep for, in the `tracing` fmt layout; and
/// none when `RUST_LOG` turns target `access` off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_writes_one_access_line_unless_the_target_is_off() {
    let node = Backend::start("n", 0).await;
    let discovery = static_discovery(&[(node.addr, "all", true)]);
    let c = client();
    let mut lines = Vec::new();
    for rust_log in ["info", "info,access=off"] {
        let launch = Launch {
            rust_log: Some(rust_log.into()),
            log_to_file: true,
            ..Launch::default()
        };
        let gateway = Gateway::launch(&launch, &discovery);
        gateway.wait_ready().await;
        let reply = get(&c, &gateway.url("/kylin/api/projects?project=p1"))
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        // The line is written by the log thread, a moment after the answer.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let log = gateway.log();
        lines.push(
            log.lines()
                .filter(|l| l.contains(" INFO access: "))
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(
        lines[0].len(),
        1,
        "one access line with RUST_LOG=info: {lines:?}"
    );
    let line = &lines[0][0];
    let (timestamp, rest) = line.split_once("  INFO access: ").unwrap();
    assert!(
        timestamp.len() == 27 && timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
        "an RFC 3339 UTC timestamp with microseconds: {line}"
    );
    let client_field = rest.split(' ').next().unwrap();
    assert!(client_field.starts_with("client=127.0.0.1:"), "{line}");
    let expected_middle = format!(
        " method=GET path=\"/kylin/api/projects\" class=\"other\" upstream=\"{}\" status=200 duration_ms=",
        node.addr
    );
    assert!(rest.contains(&expected_middle), "{line}");
    assert!(rest.ends_with(" retries=0 error=\"\""), "{line}");
    let duration: f64 = rest
        .split(" duration_ms=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("duration_ms is a number: {line}"));
    assert!(duration > 0.0 && duration < 10_000.0, "{line}");
    assert!(lines[1].is_empty(), "access=off: {:?}", lines[1]);
}
