//! Heap allocations per proxied request (issue 9): a counting global
//! allocator around the system one, the gateway's proxy and accept loop
//! in-process on loopback, a node answering 1 KiB of JSON, and one
//! keep-alive client sending Kylin query POSTs. The same client against the
//! node directly is subtracted, so what remains is the gateway's own.
//!
//!   cargo bench -p kylin-gateway --bench allocations
//!
//! A count, not a time: it does not depend on the machine's load.

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kylin_gateway::discovery::{self, leader_check::LeaderCheckStatus};
use kylin_gateway::proxy::{Proxy, server};
use kylin_gateway::tls::UpstreamTls;
use kylin_gateway::view::ViewPublisher;
use tokio::net::{TcpListener, TcpStream};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; the
// counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const REQUESTS: u64 = 20_000;
const WARM_UP: u64 = 1_000;
const QUERY: &str = r#"{"project":"learn_kylin","sql":"select part_dt, sum(price) from kylin_sales group by part_dt","limit":500}"#;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let node = start_node().await;
        let gateway = start_gateway(node).await;
        let direct = per_request(node).await;
        let proxied = per_request(gateway).await;
        println!("allocations per request, {REQUESTS} query POSTs on one keep-alive connection:");
        println!(
            "  client → node directly:  {:6.1} allocations, {:7.0} bytes",
            direct.0, direct.1
        );
        println!(
            "  client → gateway → node: {:6.1} allocations, {:7.0} bytes",
            proxied.0, proxied.1
        );
        println!(
            "  the gateway's own:       {:6.1} allocations, {:7.0} bytes",
            proxied.0 - direct.0,
            proxied.1 - direct.1
        );
    });
}

/// A node answering every request with 1 KiB of JSON.
async fn start_node() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let answer = Bytes::from(format!("{{\"results\":\"{}\"}}", "x".repeat(1000)));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let answer = answer.clone();
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let answer = answer.clone();
                async move {
                    let _ = request.into_body().collect().await;
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(answer)))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// The gateway's proxy and accept loop, with one static node, and the
/// metrics recorder installed as the binary installs it (without it, every
/// metric is a no-op and what a metric allocates goes uncounted).
async fn start_gateway(node: SocketAddr) -> SocketAddr {
    let _metrics = kylin_gateway::admin::install_recorder();
    let config = kylin_gateway::config::parse(&format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         [discovery]\nkind = \"static\"\n[[discovery.nodes]]\naddress = \"{node}\"\nmode = \"all\"\nleader = true\n"
    ))
    .expect("config");
    let upstream_tls = UpstreamTls::from_config(&config.upstream).expect("upstream TLS");
    let views = ViewPublisher::new();
    discovery::run(
        config.discovery.clone(),
        views.clone(),
        LeaderCheckStatus::default(),
        upstream_tls.clone(),
    )
    .await;
    let proxy = Arc::new(Proxy::new(&config, views, None, upstream_tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server::serve(
        listener,
        proxy,
        None,
        std::future::pending(),
        config.drain_timeout,
        config.limits,
    ));
    addr
}

/// Allocations and bytes allocated per request (the whole process: client,
/// and whatever serves `target`), after a warm-up.
async fn per_request(target: SocketAddr) -> (f64, f64) {
    let stream = TcpStream::connect(target).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    for _ in 0..WARM_UP {
        one_query(&mut sender).await;
    }
    let (allocations, bytes) = (counted(&ALLOCATIONS), counted(&BYTES));
    for _ in 0..REQUESTS {
        one_query(&mut sender).await;
    }
    (
        (counted(&ALLOCATIONS) - allocations) as f64 / REQUESTS as f64,
        (counted(&BYTES) - bytes) as f64 / REQUESTS as f64,
    )
}

/// One query POST, its answer read whole.
async fn one_query(sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>) {
    let request = hyper::Request::post("/kylin/api/query")
        .header("host", "gateway")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(QUERY.as_bytes())))
        .expect("request");
    sender.ready().await.expect("connection ready");
    let response = sender.send_request(request).await.expect("an answer");
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.expect("the body");
}

fn counted(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
