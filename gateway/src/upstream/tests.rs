//! The per-node pool against a real HTTP/1.1 server on loopback that counts
//! the connections it accepts.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::*;
use crate::proxy::{BodySlot, RequestBody};

/// A node answering `ok` to everything; `?close` answers with
/// `Connection: close`. Counts accepted connections.
async fn node() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
                let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                if request.uri().query() == Some("close") {
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, "close".parse().unwrap());
                }
                Ok::<_, Infallible>(response)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, accepted)
}

fn upstreams(max_idle: usize, idle_timeout: Duration) -> Upstreams {
    let mut config = crate::config::parse(
        "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         [discovery]\nkind = \"static\"\n[[discovery.nodes]]\naddress = \"127.0.0.1:1\"\nmode = \"all\"\n",
    )
    .unwrap()
    .upstream;
    config.pool_max_idle_per_host = max_idle;
    config.pool_idle_timeout = idle_timeout;
    let tls = UpstreamTls::from_config(&config).unwrap();
    Upstreams::new(&config, tls)
}

fn pool(addr: SocketAddr) -> Arc<NodePool> {
    Arc::new(NodePool::new(Target {
        addr,
        tls_name: None,
    }))
}

/// One GET on a connection from `pool`, read to its end, the connection
/// handed back as the proxy does. Returns whether it was reused.
async fn exchange(upstreams: &Upstreams, pool: &Arc<NodePool>, reuse: bool, path: &str) -> bool {
    let Checkout { mut conn, reused } = upstreams
        .checkout(pool, reuse, Instant::now())
        .await
        .unwrap();
    let body = BodySlot::new(RequestBody::from_bytes(Bytes::new())).handle();
    let headers = http::HeaderMap::new();
    let head = wire::RequestHead {
        method: &http::Method::GET,
        path,
        headers: &headers,
        host: Some(http::HeaderValue::from_static("node")),
    };
    let answer = conn.send(&head, body).await.expect("the node answers");
    let mut body = UpstreamBody::new(conn, &answer);
    assert_eq!(body.read_all().await.unwrap(), "ok");
    if let Some(conn) = body.take_idle() {
        upstreams.lease(pool.clone()).finish(conn, Instant::now());
    }
    reused
}

#[tokio::test]
async fn a_connection_is_reused_after_a_clean_answer() {
    let (addr, accepted) = node().await;
    let upstreams = upstreams(8, Duration::from_secs(60));
    let pool = pool(addr);
    assert!(!exchange(&upstreams, &pool, true, "/a").await);
    for _ in 0..5 {
        assert!(exchange(&upstreams, &pool, true, "/a").await);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle_count(), 1);
}

#[tokio::test]
async fn requests_that_must_not_be_sent_twice_get_a_new_connection() {
    let (addr, accepted) = node().await;
    let upstreams = upstreams(8, Duration::from_secs(60));
    let pool = pool(addr);
    for _ in 0..3 {
        assert!(!exchange(&upstreams, &pool, false, "/write").await);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    // Each came back clean and is kept for requests that may reuse one.
    assert_eq!(pool.idle_count(), 3);
}

#[tokio::test]
async fn a_connection_the_node_closes_is_not_reused() {
    let (addr, accepted) = node().await;
    let upstreams = upstreams(8, Duration::from_secs(60));
    let pool = pool(addr);
    exchange(&upstreams, &pool, true, "/a?close").await;
    assert!(!exchange(&upstreams, &pool, true, "/a").await);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn idle_connections_age_out_and_are_capped_per_node() {
    let (addr, _) = node().await;
    let upstreams = upstreams(2, Duration::from_secs(60));
    let pool = pool(addr);
    for _ in 0..3 {
        exchange(&upstreams, &pool, false, "/a").await;
    }
    assert_eq!(pool.idle_count(), 2, "the cap per node");

    let later = Instant::now() + Duration::from_secs(61);
    assert!(pool.take(later, Duration::from_secs(60)).is_none());
    assert_eq!(pool.idle_count(), 0, "expired connections are dropped");

    exchange(&upstreams, &pool, false, "/a").await;
    assert_eq!(pool.reap(Instant::now(), Duration::from_secs(60)), 1);
    assert_eq!(pool.reap(later, Duration::from_secs(60)), 0);
}

#[tokio::test]
async fn a_refused_connect_is_an_error_not_a_hang() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let upstreams = upstreams(8, Duration::from_secs(60));
    let error = upstreams
        .checkout(&pool(addr), true, Instant::now())
        .await
        .err()
        .unwrap();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
}

/// Two serving threads, each on a runtime of its own that stays up (and
/// drives its connections) until both are done: the first exchanges, then
/// the second, then both end.
#[test]
fn each_serving_thread_reuses_only_its_own_connections() {
    use tokio::sync::oneshot;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (addr, accepted) = runtime.block_on(node());
    let upstreams = upstreams(8, Duration::from_secs(60));
    let pool = Arc::new(NodePool::with_shards(
        Target {
            addr,
            tls_name: None,
        },
        2,
    ));
    let serving_thread = |shard: usize,
                          start: oneshot::Receiver<()>,
                          done: oneshot::Sender<()>,
                          end: oneshot::Receiver<()>| {
        let (upstreams, pool) = (upstreams.clone(), pool.clone());
        std::thread::spawn(move || {
            enter_shard(shard);
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let _ = start.await;
                    let reused = exchange(&upstreams, &pool, true, "/a").await;
                    let _ = done.send(());
                    let _ = end.await;
                    reused
                })
        })
    };
    let (start_first, first_start) = oneshot::channel();
    let (first_done, second_start) = oneshot::channel();
    let (second_done, both_done) = oneshot::channel();
    let (end_first, first_end) = oneshot::channel();
    let (end_second, second_end) = oneshot::channel();
    let first = serving_thread(0, first_start, first_done, first_end);
    let second = serving_thread(1, second_start, second_done, second_end);
    start_first.send(()).unwrap();
    runtime.block_on(both_done).unwrap();
    end_first.send(()).unwrap();
    end_second.send(()).unwrap();
    assert!(!first.join().unwrap());
    assert!(!second.join().unwrap(), "shard 1 took shard 0's connection");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
