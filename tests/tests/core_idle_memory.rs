//! Memory per idle keep-alive connection (issue 9 item 5): BI tools and
//! Kylin's JDBC driver keep connections open, so a front door holds many
//! idle ones. 2,000 client connections each send one request and then stay
//! open and idle; once the gateway has released them (given back hyper's
//! buffers, `limits.idle_release_ms`, default 1 s), its resident set must
//! have grown by no more than [`BOUND_KIB`] per connection over what it
//! held after a warm-up.
//!
//! The connections arrive in waves, each released before the next comes,
//! as a BI tool's pool fills over time: what is measured is what an idle
//! connection holds. When all 2,000 arrive within a second, each holds
//! its buffers until it is released, and the allocator (mimalloc) keeps
//! that peak mapped for later connections (the release build's resident
//! set grows by about 7.2 KiB per connection then).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use kylin_gateway_tests::support::backend::Backend;
use kylin_gateway_tests::support::cluster::metric;
use kylin_gateway_tests::support::eventually_async;
use kylin_gateway_tests::support::gateway::{Gateway, static_discovery};
use kylin_gateway_tests::support::http::client;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const IDLE: usize = 2_000;
/// Connections per wave.
const WAVE: usize = 200;
/// Connections opened (and kept) before the baseline is read: the
/// allocator's arenas, the upstream pool and the runtime's buffers reach
/// their working size on these, not on the measured ones.
const WARM_UP: usize = 200;
/// KiB of resident memory per idle connection at most: issue 9's target
/// (8 KB). The release build measures 3.6 KiB (`bench/idle_memory.sh`),
/// with the gateway's own HTTP/1.1 server: its 4 KiB read buffer is given
/// back on release, and its state in the connection's task is 1.3 KB.
/// With hyper's server, 4.3 KiB; before idle connections were released,
/// 12.6 KiB (hyper's 8 KiB read buffer and 8 KiB head-writing buffer, kept
/// for a connection's life); before the idle-connection work, 26.7 KiB.
/// HAProxy holds about 1.1 KiB, nginx 0.5 KiB.
const BOUND_KIB: f64 = 8.0;

/// One client connection the gateway answered once: its request sender and
/// the task driving it, both kept so the connection stays open.
struct Idle {
    _sender: SendRequest<Empty<Bytes>>,
    _driver: tokio::task::JoinHandle<()>,
}

async fn served_once(port: u16) -> Idle {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the gateway");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = http::Request::get("/kylin/api/projects")
        .header("Host", "gateway")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.expect("an answer");
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.expect("the body");
    Idle {
        _sender: sender,
        _driver: driver,
    }
}

/// `count` connections, each answered once, opened 100 at a time.
async fn open_idle(port: u16, count: usize) -> Vec<Idle> {
    let mut open = Vec::with_capacity(count);
    while open.len() < count {
        let mut batch = JoinSet::new();
        for _ in 0..100.min(count - open.len()) {
            batch.spawn(served_once(port));
        }
        open.extend(batch.join_all().await);
    }
    open
}

/// Two file descriptors per connection here and in the gateway (which
/// inherits this limit), plus margin: raised to the hard limit when the soft
/// one is short (with util-linux's `prlimit`, as the gateway's support code
/// does for its address-space limit).
fn ensure_fd_limit(needed: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("an open-files limit");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    if soft == "unlimited" || soft.parse::<u64>().unwrap() >= needed {
        return;
    }
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={hard}:{hard}"))
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit --nofile failed");
    assert!(
        hard == "unlimited" || hard.parse::<u64>().unwrap() >= needed,
        "the open-files hard limit {hard} is below the {needed} this test needs"
    );
}

/// Waits until `count` connections are released while idle.
async fn released(gateway: &Gateway, count: usize) {
    let client = client();
    eventually_async(
        &format!("{count} idle connections released"),
        Duration::from_secs(30),
        || async {
            let released = metric(&client, gateway, "kgw_connections_idle_released").await;
            (released == count as f64).then_some(())
        },
    )
    .await;
}

/// The gateway's resident set once it has settled (two equal readings in a
/// row, or the last of ten).
async fn settled_rss_kib(gateway: &Gateway) -> u64 {
    let mut last = gateway.memory_kib().1;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = gateway.memory_kib().1;
        if now == last {
            break;
        }
        last = now;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_costs_little_memory() {
    ensure_fd_limit(2 * (IDLE + WARM_UP) as u64 + 1_000);
    let node = Backend::start("n", 0).await;
    let gateway = Gateway::start(&format!(
        // Released after a quarter of a second (the default is 1 s): the
        // waves wait for it.
        "[limits]\nmax_connections = {}\nidle_timeout_ms = 600000\nidle_release_ms = 250\n{}",
        IDLE + WARM_UP + 100,
        static_discovery(&[(node.addr, "all", true)])
    ));
    gateway.wait_ready().await;

    let warm = open_idle(gateway.http_port, WARM_UP).await;
    released(&gateway, WARM_UP).await;
    let before = settled_rss_kib(&gateway).await;
    let mut idle = Vec::with_capacity(IDLE);
    while idle.len() < IDLE {
        idle.extend(open_idle(gateway.http_port, WAVE).await);
        released(&gateway, WARM_UP + idle.len()).await;
    }
    let after = settled_rss_kib(&gateway).await;
    let per_connection = after.saturating_sub(before) as f64 / IDLE as f64;
    eprintln!(
        "RSS {before} KiB after {WARM_UP} warm-up connections, {after} KiB with {IDLE} more idle: {per_connection:.2} KiB per idle connection"
    );
    assert!(
        per_connection <= BOUND_KIB,
        "an idle keep-alive connection costs {per_connection:.2} KiB of the gateway's memory (bound {BOUND_KIB} KiB)"
    );
    drop((warm, idle));
}
