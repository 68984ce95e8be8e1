use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use http_body_util::{Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::upstream::wire::BodyFraming;

/// A node that reads each request with `read_request` and answers it with
/// the next of `answers`, on one connection; returns what it read.
async fn node(
    answers: Vec<&'static [u8]>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        for answer in answers {
            let start = seen.len();
            while !request_complete(&seen[start..]) {
                let mut buf = [0u8; 4096];
                match stream.read(&mut buf).await.unwrap() {
                    0 => return seen,
                    n => seen.extend_from_slice(&buf[..n]),
                }
            }
            stream.write_all(answer).await.unwrap();
        }
        seen
    });
    (addr, task)
}

/// Whether `bytes` hold a whole request (head, and a body by length or a
/// chunked body's end).
fn request_complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let head = text[..end].to_ascii_lowercase();
    let body = &text[end + 4..];
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with("0\r\n\r\n");
    }
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |n| n.trim().parse::<usize>().unwrap());
    body.len() >= length
}

async fn connect(addr: std::net::SocketAddr) -> Conn {
    Conn::new(NodeStream::Plain(TcpStream::connect(addr).await.unwrap()))
}

fn request<'a>(method: &'a Method, path: &'a str, headers: &'a HeaderMap) -> RequestHead<'a> {
    RequestHead {
        method,
        path,
        headers,
        host: Some(HeaderValue::from_static("node")),
    }
}

/// `GET /` without a body on `conn`.
async fn get(conn: &mut Conn) -> Result<ResponseHead, SendError> {
    let headers = HeaderMap::new();
    conn.send(
        &request(&Method::GET, "/", &headers),
        Full::new(Bytes::new()),
    )
    .await
}

#[tokio::test]
async fn a_connection_carries_one_answer_after_another() {
    let (addr, node) = node(vec![
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
    ])
    .await;
    let mut conn = connect(addr).await;
    let headers = HeaderMap::new();
    let post = Method::POST;
    let answer = conn
        .send(
            &request(&post, "/q", &headers),
            Full::new(Bytes::from_static(b"select 1")),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.framing, BodyFraming::Chunked);
    let mut body = UpstreamBody::new(conn, &answer);
    assert_eq!(body.read_all().await.unwrap(), "abc");
    let mut conn = body.take_idle().expect("reusable after a clean end");
    assert!(conn.is_open());
    let get = Method::GET;
    let answer = conn
        .send(&request(&get, "/two", &headers), Full::new(Bytes::new()))
        .await
        .unwrap();
    assert_eq!(answer.status, 201);
    let mut body = UpstreamBody::new(conn, &answer);
    assert_eq!(body.read_all().await.unwrap(), "ok");
    drop(body);
    let seen = String::from_utf8(node.await.unwrap()).unwrap();
    assert_eq!(
        seen,
        "POST /q HTTP/1.1\r\nhost: node\r\ncontent-length: 8\r\n\r\nselect 1\
         GET /two HTTP/1.1\r\nhost: node\r\n\r\n"
    );
}

#[tokio::test]
async fn a_body_of_unknown_length_goes_chunked_and_a_large_one_whole() {
    let (addr, node) = node(vec![
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ])
    .await;
    let mut conn = connect(addr).await;
    let headers = HeaderMap::new();
    let post = Method::POST;
    let frames = futures_util::stream::iter([
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"ab"))),
        Ok(Frame::data(Bytes::from_static(b"cde"))),
    ]);
    let answer = conn
        .send(&request(&post, "/", &headers), StreamBody::new(frames))
        .await
        .unwrap();
    assert_eq!(answer.framing, BodyFraming::Empty);
    let mut body = UpstreamBody::new(conn, &answer);
    assert!(body.is_end_stream());
    let mut conn = body.take_idle().unwrap();
    let large = Bytes::from(vec![b'x'; COALESCE_BYTES * 3]);
    conn.send(&request(&post, "/big", &headers), Full::new(large.clone()))
        .await
        .unwrap();
    drop(conn);
    let seen = node.await.unwrap();
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.starts_with("POST / HTTP/1.1\r\nhost: node\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"),
        "{text}"
    );
    assert!(seen.ends_with(&large), "the large body arrives whole");
    assert!(text.contains(&format!("content-length: {}\r\n", large.len())));
}

#[tokio::test]
async fn an_idle_connection_its_node_closed_is_not_open() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut conn = connect(addr).await;
    let (stream, _) = listener.accept().await.unwrap();
    assert!(conn.is_open());
    drop(stream);
    // The close reaches the reactor on its next turn.
    tokio::time::timeout(Duration::from_secs(5), async {
        while conn.is_open() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the close is seen");
}

#[tokio::test]
async fn a_body_until_close_ends_with_the_connection_which_is_not_reused() {
    let (addr, _node) = node(vec![b"HTTP/1.1 200 OK\r\n\r\nall of it"]).await;
    let mut conn = connect(addr).await;
    let answer = get(&mut conn).await.unwrap();
    let mut body = UpstreamBody::new(conn, &answer);
    assert_eq!(body.read_all().await.unwrap(), "all of it");
    assert!(body.take_idle().is_none());
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_and_the_connection_is_not_reused() {
    let (addr, _node) = node(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npart"]).await;
    let mut conn = connect(addr).await;
    let answer = get(&mut conn).await.unwrap();
    let mut body = UpstreamBody::new(conn, &answer);
    assert_eq!(body.size_hint().exact(), Some(100));
    let error = body.read_all().await.unwrap_err();
    assert!(
        matches!(error, BodyError::Wire(WireError::Incomplete)),
        "{error}"
    );
    assert!(body.take_idle().is_none());
}

#[tokio::test]
async fn a_node_that_closes_without_answering_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf).await;
    });
    let mut conn = connect(addr).await;
    let error = get(&mut conn).await.unwrap_err();
    assert!(
        matches!(error, SendError::Wire(WireError::Incomplete)),
        "{error}"
    );
}

#[tokio::test]
async fn what_the_client_sent_reaches_the_node_before_the_rest_of_the_body() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (more, frames) = tokio::sync::mpsc::channel::<Bytes>(4);
    more.send(Bytes::from_static(b"first")).await.unwrap();
    let frames = futures_util::stream::unfold(frames, |mut frames| async move {
        let frame = frames.recv().await?;
        Some((
            Ok::<_, std::convert::Infallible>(Frame::data(frame)),
            frames,
        ))
    });
    let sending = tokio::spawn(async move {
        let mut conn = connect(addr).await;
        let mut headers = HeaderMap::new();
        headers.insert("content-length", HeaderValue::from_static("10"));
        let post = Method::POST;
        let body = StreamBody::new(Box::pin(frames));
        let answer = conn.send(&request(&post, "/", &headers), body).await;
        answer.map(|a| a.status)
    });
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !seen.ends_with(b"\r\n\r\nfirst") {
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the head and the first bytes arrive while the rest is awaited");
    more.send(Bytes::from_static(b"secnd")).await.unwrap();
    let mut rest = [0u8; 5];
    stream.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"secnd");
    stream
        .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(sending.await.unwrap().unwrap(), 204);
}
