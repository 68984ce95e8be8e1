//! A keep-alive connection the node dropped without the gateway noticing
//! (the node restarted, crashed, or timed the connection out, and its FIN
//! or RST is still on the way) must not cost a write. The stand-in node
//! here answers one request per connection, keeps the connection open, and
//! resets it when the next request arrives, unread: exactly what a write
//! sent on a stale pooled connection meets. A write that meets it cannot
//! be resent (the gateway cannot tell it was never read), so writes go on
//! connections of their own.

use std::time::Duration;

use kylin_gateway_tests::support::gateway::{Gateway, static_discovery};
use kylin_gateway_tests::support::http::{client, send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves one request on `stream`, then resets the connection when more
/// data arrives.
async fn one_request_then_reset(mut stream: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let body = br#"{"node":"stale"}"#;
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    if stream.write_all(answer.as_bytes()).await.is_err() || stream.write_all(body).await.is_err() {
        return;
    }
    // The next request is never read: a linger of 0 makes the close an RST.
    if matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
        #[expect(
            deprecated,
            reason = "a zero linger never blocks the close (it resets at once)"
        )]
        let _ = stream.set_linger(Some(Duration::ZERO));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_never_ride_a_keep_alive_connection_the_node_dropped() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let node = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(one_request_then_reset(stream));
        }
    });
    let gateway = Gateway::start(&static_discovery(&[(addr, "all", true)]));
    gateway.wait_ready().await;
    let c = client();
    for n in 0..5 {
        let url = gateway.url(&format!("/kylin/api/cubes/c{n}/build"));
        let reply = send(&c, "PUT", &url, &[], "{}").await.unwrap();
        assert_eq!(reply.status, 200, "write {n}: {}", reply.text());
    }
    node.abort();
}
