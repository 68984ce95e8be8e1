//! The gateway's own HTTP/1.1 server on plaintext connections, end to end
//! with raw sockets: pipelined requests in one write are answered in order
//! on one connection (a `HEAD` without a body, a large answer of unknown
//! length chunked); a request body that arrives after its head is left to
//! hyper, which serves it and the connection after it; a client's
//! `Connection: close` is answered with it and the connection closes.

use std::time::Duration;

use kylin_gateway_tests::support::gateway::{metric_value, one_node_with_limits};
use kylin_gateway_tests::support::http::{client, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One answer read off a raw connection.
struct Answer {
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn status(&self) -> &str {
        &self.head[9..12]
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A raw client connection and the bytes read past the last answer.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(port: u16) -> Raw {
        Raw {
            stream: TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn more(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
            .await
            .expect("bytes within 10 s")
            .expect("read");
        assert!(
            n > 0,
            "closed mid-answer: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.extend_from_slice(&chunk[..n]);
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.more().await;
        }
        self.buf.drain(..n).collect()
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.take(at + 2).await;
                return String::from_utf8(line[..at].to_vec()).unwrap();
            }
            self.more().await;
        }
    }

    /// The next answer; `bodiless` for one to a `HEAD` request.
    async fn answer(&mut self, bodiless: bool) -> Answer {
        let mut head = String::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            head.push_str(&line);
            head.push_str("\r\n");
        }
        let mut answer = Answer {
            head,
            body: Vec::new(),
        };
        if bodiless {
            return answer;
        }
        if let Some(length) = answer.header("content-length") {
            answer.body = self.take(length.parse().unwrap()).await;
        } else {
            assert_eq!(answer.header("transfer-encoding"), Some("chunked"));
            loop {
                let size = usize::from_str_radix(&self.line().await, 16).unwrap();
                let mut chunk = self.take(size + 2).await;
                chunk.truncate(size);
                answer.body.extend_from_slice(&chunk);
                if size == 0 {
                    break;
                }
            }
        }
        answer
    }

    /// Waits for the gateway to close the connection, with nothing more
    /// sent.
    async fn closed(&mut self) {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), self.stream.read_to_end(&mut rest))
            .await
            .expect("closed within 5 s")
            .expect("read to the end");
        assert!(
            rest.is_empty() && self.buf.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (node, gateway) = one_node_with_limits("idle_timeout_ms = 30000").await;
    let mut raw = Raw::connect(gateway.http_port).await;
    let requests = concat!(
        "GET /kylin/api/projects?n=1 HTTP/1.1\r\nHost: gateway\r\n\r\n",
        "HEAD /kylin/api/projects?n=2 HTTP/1.1\r\nHost: gateway\r\n\r\n",
        "POST /kylin/api/query HTTP/1.1\r\nHost: gateway\r\nContent-Length: 19\r\n\r\n",
        "{\"sql\": \"select 1\"}",
        "GET /__kgw/download?bytes=300000&chunked=1 HTTP/1.1\r\nHost: gateway\r\n\r\n",
        "GET /kylin/api/projects?n=5 HTTP/1.1\r\nHost: gateway\r\n\r\n",
    );
    raw.stream.write_all(requests.as_bytes()).await.unwrap();

    let first = raw.answer(false).await;
    assert_eq!(first.status(), "200", "{}", first.head);
    assert_eq!(first.body_json()["query"], "n=1");
    assert!(first.header("date").is_some(), "{}", first.head);
    let head = raw.answer(true).await;
    assert_eq!(head.status(), "200", "{}", head.head);
    let query = raw.answer(false).await;
    assert_eq!(query.status(), "200", "{}", query.head);
    assert_eq!(query.body_json()["body_len"], 19);
    assert_eq!(query.body_json()["method"], "POST");
    let download = raw.answer(false).await;
    assert_eq!(download.status(), "200", "{}", download.head);
    assert_eq!(download.header("transfer-encoding"), Some("chunked"));
    assert_eq!(download.body.len(), 300_000);
    let last = raw.answer(false).await;
    assert_eq!(last.body_json()["query"], "n=5");
    assert_eq!(node.hits(), 5);
    assert!(
        raw.buf.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&raw.buf)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_comes_after_its_head_is_served_and_so_is_the_connection() {
    let (node, gateway) = one_node_with_limits("idle_timeout_ms = 30000").await;
    let mut raw = Raw::connect(gateway.http_port).await;
    // A first request on the gateway's own server, then a POST whose body
    // is sent after a pause: the gateway has read its head alone by then.
    raw.stream
        .write_all(b"GET /kylin/api/projects HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(raw.answer(false).await.status(), "200");
    raw.stream
        .write_all(b"POST /kylin/api/query HTTP/1.1\r\nHost: gateway\r\nContent-Length: 19\r\n\r\n{\"sql\"")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    raw.stream.write_all(b": \"select 1\"}").await.unwrap();
    let query = raw.answer(false).await;
    assert_eq!(query.status(), "200", "{}", query.head);
    assert_eq!(query.body_json()["body_len"], 19);
    // A chunked body and a plain GET after it, on the same connection.
    raw.stream
        .write_all(
            b"POST /kylin/api/query HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n\
              GET /kylin/api/projects?after=1 HTTP/1.1\r\nHost: gateway\r\n\r\n",
        )
        .await
        .unwrap();
    let chunked = raw.answer(false).await;
    assert_eq!(chunked.body_json()["body_len"], 5, "{}", chunked.head);
    let after = raw.answer(false).await;
    assert_eq!(after.body_json()["query"], "after=1");
    assert_eq!(node.hits(), 4);
    // Handed to hyper once, at the POST whose body came later; hyper served
    // the chunked POST and the GET after it.
    let metrics = get(&client(), &gateway.admin_url("/metrics"))
        .await
        .unwrap()
        .text();
    assert_eq!(
        metric_value(
            &metrics,
            "kgw_http1_handed_to_hyper_total",
            &["body still on its way"]
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_asks_to_close_is_answered_so_and_closed() {
    let (_node, gateway) = one_node_with_limits("idle_timeout_ms = 30000").await;
    let mut raw = Raw::connect(gateway.http_port).await;
    raw.stream
        .write_all(
            b"GET /kylin/api/projects HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = raw.answer(false).await;
    assert_eq!(answer.status(), "200", "{}", answer.head);
    assert_eq!(
        answer.header("connection"),
        Some("close"),
        "{}",
        answer.head
    );
    raw.closed().await;
}
