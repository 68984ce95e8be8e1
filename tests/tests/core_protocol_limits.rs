//! `[limits]` at the protocol level, driven by clients that misbehave on
//! purpose: oversized request heads (HTTP/1.1 and HTTP/2), the HTTP/2
//! stream cap, a "rapid reset" flood (CVE-2023-44487), and ambiguous
//! HTTP/1.1 framing (request smuggling). Each time the gateway keeps
//! serving other clients.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use kylin_gateway_tests::support::gateway::{Gateway, one_node_with_limits};
use kylin_gateway_tests::support::http::{client, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Another client is still served.
async fn others_are_served(gateway: &Gateway) {
    let reply = get(&client(), &gateway.url("/kylin/api/projects"))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// Everything the gateway sends on `stream` until it closes it.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the gateway did not close the connection")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

/// An h2c connection of the test's own (prior knowledge), its connection
/// driven until the gateway's SETTINGS have been applied.
async fn h2c(
    port: u16,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
    usize,
) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (send, mut connection) = h2::client::handshake(tcp).await.unwrap();
    // A PING answered means every frame the gateway sent before it, its
    // SETTINGS among them, has been read.
    let mut ping = connection.ping_pong().expect("ping_pong taken once");
    tokio::select! {
        pong = ping.ping(h2::Ping::opaque()) => { pong.unwrap(); }
        ended = &mut connection => panic!("the connection ended: {ended:?}"),
    }
    let streams = connection.max_concurrent_send_streams();
    let driver = tokio::spawn(connection);
    (send, driver, streams)
}

fn h2_get(path: &str) -> Request<()> {
    Request::get(format!("http://gateway{path}"))
        .body(())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_http1_head_gets_431_and_the_connection_is_closed() {
    let (node, gateway) = one_node_with_limits("max_header_bytes = 16384").await;
    let hits_before = node.hits();
    let mut stream = TcpStream::connect(("127.0.0.1", gateway.http_port))
        .await
        .unwrap();
    let big = "x".repeat(32 * 1024);
    stream
        .write_all(
            format!("GET /kylin/api/projects HTTP/1.1\r\nHost: g\r\nX-Big: {big}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    assert_eq!(node.hits(), hits_before, "the request reached the node");
    // A head under the limit is fine.
    let mut fine = TcpStream::connect(("127.0.0.1", gateway.http_port))
        .await
        .unwrap();
    let small = "x".repeat(8 * 1024);
    fine.write_all(
        format!("GET /kylin/api/projects HTTP/1.1\r\nHost: g\r\nX-Big: {small}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut fine).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_advertises_the_stream_cap_and_refuses_an_oversized_header_list() {
    let (node, gateway) =
        one_node_with_limits("max_header_bytes = 16384\nh2_max_concurrent_streams = 7").await;
    let (mut send, _driver, streams) = h2c(gateway.http_port).await;
    assert_eq!(streams, 7, "SETTINGS_MAX_CONCURRENT_STREAMS");

    let ok = send
        .send_request(h2_get("/kylin/api/projects"), true)
        .unwrap()
        .0;
    assert_eq!(ok.await.unwrap().status(), 200);

    let hits_before = node.hits();
    let mut big = h2_get("/kylin/api/projects");
    big.headers_mut()
        .insert("x-big", "x".repeat(32 * 1024).parse().unwrap());
    let answer = match send.send_request(big, true) {
        Ok((response, _)) => response.await.map(|r| r.status().as_u16()),
        Err(error) => Err(error),
    };
    assert!(
        matches!(answer, Ok(431) | Err(_)),
        "an oversized header list was answered {answer:?}"
    );
    assert_eq!(node.hits(), hits_before, "the request reached the node");
    others_are_served(&gateway).await;
}

/// Streams opened and at once reset by the client, all in one write, so
/// that the gateway reads each reset before it has accepted its stream:
/// past `h2_max_pending_accept_reset_streams` the connection is closed with
/// GOAWAY (ENHANCE_YOUR_CALM). Sent through h2's client one stream at a
/// time, the flood raced the gateway: on a busy machine the gateway
/// accepted each stream before its reset came, and took them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_closes_its_connection_only() {
    let (_node, gateway) = one_node_with_limits("h2_max_pending_accept_reset_streams = 10").await;
    let mut flood = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    push_frame(&mut flood, FRAME_SETTINGS, 0, 0, &[]);
    // GET /kylin/api/projects, authority "gateway" (HPACK: static-table
    // indexes and literals without indexing).
    let mut get = vec![0x82, 0x86, 0x04, 19];
    get.extend_from_slice(b"/kylin/api/projects");
    get.extend_from_slice(&[0x01, 7]);
    get.extend_from_slice(b"gateway");
    for n in 0..100u32 {
        let stream = 2 * n + 1;
        push_frame(
            &mut flood,
            FRAME_HEADERS,
            END_STREAM | END_HEADERS,
            stream,
            &get,
        );
        push_frame(
            &mut flood,
            FRAME_RST_STREAM,
            0,
            stream,
            &CANCEL.to_be_bytes(),
        );
    }
    let mut tcp = TcpStream::connect(("127.0.0.1", gateway.http_port))
        .await
        .unwrap();
    tcp.write_all(&flood).await.unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut received))
        .await
        .expect("the flooding connection was still open")
        .ok();
    assert_eq!(
        goaway_error(&received),
        Some(ENHANCE_YOUR_CALM),
        "no GOAWAY(ENHANCE_YOUR_CALM) in {} bytes",
        received.len()
    );
    others_are_served(&gateway).await;
}

const FRAME_HEADERS: u8 = 0x1;
const FRAME_RST_STREAM: u8 = 0x3;
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Appends an HTTP/2 frame (RFC 9113 §4.1) to `out`.
fn push_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// The error code of the first GOAWAY frame in `frames`.
fn goaway_error(mut frames: &[u8]) -> Option<u32> {
    while frames.len() >= 9 {
        let length = u32::from_be_bytes([0, frames[0], frames[1], frames[2]]) as usize;
        let payload = frames.get(9..9 + length)?;
        if frames[3] == FRAME_GOAWAY {
            return Some(u32::from_be_bytes(payload.get(4..8)?.try_into().ok()?));
        }
        frames = &frames[9 + length..];
    }
    None
}

/// `Content-Length` and `Transfer-Encoding: chunked` together: a front
/// door that trusts one and a node that trusts the other disagree on where
/// the next request starts. The gateway (hyper) frames the body by the
/// chunked encoding, forwards it with framing of its own, so the node never
/// sees both headers, and closes the client's connection after answering,
/// so bytes past the chunked body are never read as a second request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_never_forwarded_and_closes_the_connection() {
    let (node, gateway) = one_node_with_limits("").await;
    let hits_before = node.hits();
    let mut stream = TcpStream::connect(("127.0.0.1", gateway.http_port))
        .await
        .unwrap();
    // Read by Content-Length, the body would be "0\r\n\r\nGET /smuggled...";
    // read as chunked, it is empty and a second request follows.
    let smuggled = "GET /kylin/api/smuggled HTTP/1.1\r\nHost: g\r\n\r\n";
    let body = format!("0\r\n\r\n{smuggled}");
    stream
        .write_all(
            format!(
                "POST /kylin/api/query HTTP/1.1\r\nHost: g\r\nContent-Length: {}\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    let answers = answer.matches("HTTP/1.1 ").count();
    assert_eq!(
        answers, 1,
        "one answer, then the connection closed: {answer}"
    );
    let (head, json) = answer.split_once("\r\n\r\n").unwrap();
    if head.starts_with("HTTP/1.1 200") {
        let seen: serde_json::Value = serde_json::from_str(json.trim()).unwrap_or_default();
        assert_eq!(seen["body_len"], 0, "{json}");
        assert!(
            seen["headers"].get("content-length").is_none()
                || seen["headers"].get("transfer-encoding").is_none(),
            "the node saw both framings: {json}"
        );
        assert_eq!(
            node.hits(),
            hits_before + 1,
            "the smuggled request reached the node"
        );
    } else {
        assert!(head.starts_with("HTTP/1.1 400"), "{head}");
        assert_eq!(node.hits(), hits_before);
    }
    others_are_served(&gateway).await;
}

/// HTTP/2 request heads the `h2` crate lets through but RFC 9113 calls
/// malformed: a `Host` naming another authority than `:authority`, and a
/// field value with leading or trailing whitespace. Answered 400, never
/// forwarded; a well-formed head on the same connection is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http2_heads_get_400_and_never_reach_a_node() {
    let (node, gateway) = one_node_with_limits("").await;
    let (mut send, _driver, _) = h2c(gateway.http_port).await;
    let hits_before = node.hits();
    let mut mismatched = h2_get("/kylin/api/projects");
    mismatched
        .headers_mut()
        .insert("host", "elsewhere.example".parse().unwrap());
    let mut padded = h2_get("/kylin/api/projects");
    padded
        .headers_mut()
        .insert("x-project", " learn_kylin".parse().unwrap());
    for request in [mismatched, padded] {
        let (response, _) = send.send_request(request, true).unwrap();
        assert_eq!(response.await.unwrap().status(), 400);
    }
    assert_eq!(
        node.hits(),
        hits_before,
        "a malformed head reached the node"
    );
    let (ok, _) = send
        .send_request(h2_get("/kylin/api/projects"), true)
        .unwrap();
    assert_eq!(ok.await.unwrap().status(), 200);
}

/// HTTP/2 has no head to wait for between requests, so hyper's idle
/// timer (HTTP/1's) never runs on it: the gateway counts the streams open
/// on each connection and, once none has been open for `idle_timeout_ms`,
/// sends GOAWAY and closes. A stream open longer than that (a slow query)
/// keeps its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_gets_goaway_but_a_long_stream_keeps_it_open() {
    let (_node, gateway) = one_node_with_limits("idle_timeout_ms = 1000").await;
    let (mut send, driver, _) = h2c(gateway.http_port).await;
    // Two and a half idle timeouts at the node, on an otherwise idle
    // connection.
    let (slow, _) = send
        .send_request(h2_get("/__kgw/sleep?ms=2500"), true)
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("no answer to the slow request");
    assert_eq!(answer.expect("the slow stream was cut off").status(), 200);
    let idle_since = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("the idle HTTP/2 connection was still open after 5 s")
        .unwrap();
    let took = idle_since.elapsed();
    assert!(ended.is_ok(), "not a graceful GOAWAY: {ended:?}");
    assert!(took >= Duration::from_millis(900), "closed early: {took:?}");
    others_are_served(&gateway).await;
}

/// CONNECT asks for a tunnel; a Kylin front door opens none, over HTTP/1.1
/// or HTTP/2, and the node never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_with_501_and_never_reaches_a_node() {
    let (node, gateway) = one_node_with_limits("").await;
    let hits_before = node.hits();
    let mut stream = TcpStream::connect(("127.0.0.1", gateway.http_port))
        .await
        .unwrap();
    stream
        .write_all(b"CONNECT internal.example:22 HTTP/1.1\r\nHost: internal.example:22\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut head))
        .await
        .expect("no answer to CONNECT")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..read]);
    assert!(head.starts_with("HTTP/1.1 501"), "{head}");

    let (mut send, _driver, _) = h2c(gateway.http_port).await;
    let connect = Request::connect("internal.example:22").body(()).unwrap();
    let (response, _) = send.send_request(connect, false).unwrap();
    assert_eq!(response.await.unwrap().status(), 501);
    assert_eq!(node.hits(), hits_before, "CONNECT reached the node");
    others_are_served(&gateway).await;
}
