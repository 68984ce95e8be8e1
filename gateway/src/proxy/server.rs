//! Accepting downstream connections (HTTP/1.1 and h2c, or TLS), bounding
//! them (`[limits]`: connection cap, first-head deadline, idle timeout) and
//! draining them on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::tls::CertStore;

use super::client_io::ClientIo;
use super::h1;
use super::idle::{Activity, Counted, IdleWatch};
use super::limits::{FirstRequest, first_request_within};
use super::release::{self, Release};
use super::{ClientBody, Downstream, Proxy, ResponseBody};
use crate::BoxError;
use crate::config::Limits;

/// Serves `listener` until `shutdown` resolves, then stops accepting and
/// waits up to `drain` for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<Arc<CertStore>>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    limits: Limits,
) {
    let serving = Serving {
        open: Arc::new(Semaphore::new(limits.max_connections)),
        proxy,
        tls,
        drain,
        limits,
    };
    serve_capped(listener, serving, shutdown).await;
}

/// What the listeners of one address serve with.
#[derive(Clone)]
struct Serving {
    proxy: Arc<Proxy>,
    tls: Option<Arc<CertStore>>,
    /// How long open connections may finish their requests on shutdown.
    drain: Duration,
    limits: Limits,
    /// The places under `limits.max_connections`, which several listeners
    /// may share.
    open: Arc<Semaphore>,
}

/// [`serve`], with connections capped by `serving.open`.
async fn serve_capped(listener: TcpListener, serving: Serving, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let (draining_tx, draining) = tokio::sync::watch::channel(false);
    let builders = Arc::new(Builders::new(&serving.limits));
    let refused = metrics::counter!("kgw_connections_refused_total");
    tokio::pin!(shutdown);
    while let Some((stream, client)) = accept(&listener, shutdown.as_mut()).await {
        // Past the cap, closed at once (not left in the backlog).
        let Ok(permit) = serving.open.clone().try_acquire_owned() else {
            refused.increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let accepted = Accepted {
            stream,
            client,
            permit,
        };
        let drain = Drain {
            graceful: &graceful,
            draining: &draining,
        };
        let connection = serve_one(
            accepted,
            &serving.proxy,
            serving.tls.clone(),
            builders.clone(),
            drain,
        );
        tokio::spawn(first_request_within(
            serving.limits.header_read_timeout,
            connection.first,
            connection.future,
        ));
    }
    drop(listener);
    tracing::info!("stopped accepting; draining open connections");
    let _ = draining_tx.send(true);
    if tokio::time::timeout(serving.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain = ?serving.drain,
            "drain deadline passed; closing remaining connections"
        );
    }
}

/// The next connection, or `None` once `shutdown` resolved.
async fn accept(
    listener: &TcpListener,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => return Some(pair),
                Err(error) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => return None,
        }
    }
}

/// Serves `address` from `threads` threads, each running its own
/// current-thread runtime on its own `SO_REUSEPORT` socket: the kernel
/// spreads new connections over them, and a connection's requests stay on
/// its thread (no work stealing, no cross-thread wake-ups). Returns once
/// every socket is bound (or with the first bind error); the returned
/// future ends when `stop` turned true and every thread has drained.
pub async fn serve_per_core(
    address: SocketAddr,
    threads: usize,
    proxy: Arc<Proxy>,
    tls: Option<Arc<CertStore>>,
    stop: tokio::sync::watch::Receiver<bool>,
    drain: Duration,
    limits: Limits,
) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    // Every thread keeps its runtime (and the upstream connections it
    // drives, which other threads may be using) until all have drained.
    let drained = Arc::new(tokio::sync::Barrier::new(threads));
    // One cap for all threads: the kernel's spread of connections over the
    // sockets is uneven, so a per-thread share would refuse some before the
    // total is reached.
    let serving = Serving {
        open: Arc::new(Semaphore::new(limits.max_connections)),
        proxy,
        tls,
        drain,
        limits,
    };
    ensure_unshared(address)?;
    let mut bound = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    for index in 0..threads {
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        bound.push(bound_rx);
        let thread = ServingThread {
            index,
            address,
            serving: serving.clone(),
            stop: stop.clone(),
            drained: drained.clone(),
        };
        let serve_thread = move || thread.run(bound_tx);
        handles.push(
            std::thread::Builder::new()
                .name(format!("kgw-serve-{index}"))
                .spawn(serve_thread)?,
        );
    }
    for result in bound {
        result
            .await
            .map_err(|_| std::io::Error::other("a serving thread ended before binding"))??;
    }
    Ok(async move {
        for handle in handles {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    })
}

/// One thread of [`serve_per_core`] and what it serves with.
struct ServingThread {
    index: usize,
    address: SocketAddr,
    serving: Serving,
    stop: tokio::sync::watch::Receiver<bool>,
    /// Passed once every thread has drained.
    drained: Arc<tokio::sync::Barrier>,
}

impl ServingThread {
    /// Runs a current-thread runtime that binds its own socket (reporting
    /// the outcome on `bound`), serves it until `stop` and then waits for
    /// the other threads to drain.
    fn run(self, bound: tokio::sync::oneshot::Sender<std::io::Result<()>>) {
        crate::upstream::enter_shard(self.index);
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = bound.send(Err(error));
                return;
            }
        };
        runtime.block_on(async move {
            match reuseport_listener(self.address) {
                Ok(listener) => {
                    let _ = bound.send(Ok(()));
                    let mut stop = self.stop;
                    let shutdown = async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    };
                    serve_capped(listener, self.serving, shutdown).await;
                }
                Err(error) => {
                    let _ = bound.send(Err(error));
                }
            }
            self.drained.wait().await;
        });
    }
}

/// Fails with `AddrInUse` when another socket listens on `address`.
/// `SO_REUSEPORT` lets sockets of one user share a port, so without this a
/// second gateway (or any program of the same user using the option, as
/// HAProxy does) would start on a taken port and silently split its
/// connections with the first. Probed with a socket that does not share;
/// the window before the serving threads bind is a few microseconds.
fn ensure_unshared(address: SocketAddr) -> std::io::Result<()> {
    let probe = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // Connections of an earlier process in TIME_WAIT do not count.
    probe.set_reuseaddr(true)?;
    probe.bind(address)
}

/// A listening socket on `address` that other sockets may share
/// (`SO_REUSEPORT`), each getting its share of new connections.
fn reuseport_listener(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

/// HTTP/1.1 and h2c (and both over TLS), bounded by `limits`: one builder
/// per protocol for plaintext connections, which [`speaks_h2c`] tells
/// apart, and the auto-detecting one for TLS.
///
/// hyper's HTTP/1 header read timeout runs from the moment a connection
/// waits for a request head, so on a keep-alive connection it bounds the
/// idle time plus the next head: that is `idle_timeout`. The first head's
/// shorter deadline is [`first_request_within`]. A head past
/// `max_header_bytes` gets hyper's 431 and the connection is closed.
///
/// HTTP/2: a stream cap advertised in SETTINGS, a header-list cap, and
/// hyper's guards against reset floods (streams reset by the client before
/// they were accepted, and streams the gateway had to reset for protocol
/// errors), each closing the connection with GOAWAY past its count.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// `limits.idle_timeout` for multiplexed connections, which hyper's
    /// HTTP/1 timer does not cover ([`IdleWatch`]).
    idle_timeout: Duration,
    /// When idle plaintext HTTP/1 connections hyper serves give back its
    /// buffers.
    release: Release,
    /// The same settings behind hyper's protocol detection, for TLS.
    auto: auto::Builder<TokioExecutor>,
    /// The same settings for the gateway's own HTTP/1.1 server, which
    /// serves plaintext HTTP/1.1 until a request it leaves to `http1`.
    own: h1::Settings,
}

impl Builders {
    fn new(limits: &Limits) -> Builders {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.idle_timeout)
            .max_buf_size(limits.max_header_bytes);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_header_list_size(header_list_size(limits))
            .max_pending_accept_reset_streams(limits.h2_max_pending_accept_reset_streams)
            .max_local_error_reset_streams(limits.h2_max_local_error_reset_streams);
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.idle_timeout)
            .max_buf_size(limits.max_header_bytes);
        auto.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_header_list_size(header_list_size(limits))
            .max_pending_accept_reset_streams(limits.h2_max_pending_accept_reset_streams)
            .max_local_error_reset_streams(limits.h2_max_local_error_reset_streams);
        Builders {
            http1,
            http2,
            idle_timeout: limits.idle_timeout,
            release: Release {
                after: limits.idle_release,
                idle_timeout: limits.idle_timeout,
            },
            auto,
            own: h1::Settings {
                max_head: limits.max_header_bytes,
                idle_timeout: limits.idle_timeout,
                release_after: limits.idle_release,
            },
        }
    }
}

fn header_list_size(limits: &Limits) -> u32 {
    u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX)
}

/// Whether a plaintext client speaks h2c with prior knowledge (its first
/// bytes are the HTTP/2 preface), read with `peek`: the bytes stay in the
/// socket, so hyper's first read takes the whole head into one buffer. (The
/// auto-detecting builder hands the sniffed bytes back as a first short
/// read, after which hyper grows its read buffer to 16 KiB and keeps it
/// for the connection's life.) A client that has sent nothing costs only
/// this wait, no protocol state.
async fn speaks_h2c(stream: &TcpStream) -> std::io::Result<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut start = [0u8; PREFACE.len()];
    loop {
        let read = stream.peek(&mut start).await?;
        // End of stream: hyper's HTTP/1 reads it and ends the connection.
        if read == 0 || start[..read] != PREFACE[..read] {
            return Ok(false);
        }
        if read == PREFACE.len() {
            return Ok(true);
        }
        // Part of the preface: `peek` would return at once again, so wait
        // a little for the rest (bounded by the first head's deadline).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An accepted connection and its place under `limits.max_connections`.
struct Accepted {
    stream: TcpStream,
    client: SocketAddr,
    permit: OwnedSemaphorePermit,
}

/// A connection ready to run, and the flag its first request sets.
struct Connection<F> {
    first: FirstRequest,
    future: F,
}

/// How a listener drains its connections on shutdown: a signal every
/// connection watches (shutting hyper's connection down gracefully: GOAWAY,
/// or `Connection: close` on the answer in progress), and hyper-util's
/// graceful shutdown, which counts the connections still open.
#[derive(Clone, Copy)]
struct Drain<'a> {
    graceful: &'a GracefulShutdown,
    draining: &'a tokio::sync::watch::Receiver<bool>,
}

fn serve_one(
    accepted: Accepted,
    proxy: &Arc<Proxy>,
    tls: Option<Arc<CertStore>>,
    builders: Arc<Builders>,
    drain: Drain<'_>,
) -> Connection<impl Future<Output = ()> + Send + 'static> {
    let Accepted {
        stream,
        client,
        permit,
    } = accepted;
    let downstream = Downstream {
        client,
        tls: tls.is_some(),
    };
    let first = FirstRequest::default();
    let watcher = drain.graceful.watcher();
    let client_connection = ClientConnection {
        service: ProxyService {
            proxy: proxy.clone(),
            downstream,
            first: first.clone(),
            activity: Arc::new(Activity::default()),
        },
        builders,
        draining: drain.draining.clone(),
    };
    // HTTP/1 is served inline; h2c and TLS connections (rare: BI tools and
    // the JDBC driver speak plaintext HTTP/1.1) are boxed, so their larger
    // state does not size every connection's task.
    let future = async move {
        let _permit = permit;
        // Counted by the drain until the connection ends.
        let _watcher = watcher;
        let result = match tls {
            None => client_connection.serve_plaintext(stream).await,
            Some(certs) => Box::pin(client_connection.serve_tls(&certs, stream)).await,
        };
        if let Err(error) = result {
            tracing::debug!(%client, error = %error, "connection ended with an error");
        }
    };
    Connection { first, future }
}

/// The service hyper's servers call for each request of a connection:
/// hands it to `proxy`, marks the connection's first request arrived and
/// counts the request open until its response body ends.
#[derive(Clone)]
struct ProxyService {
    proxy: Arc<Proxy>,
    downstream: Downstream,
    first: FirstRequest,
    activity: Arc<Activity>,
}

type ProxyResponse = Response<Counted<ResponseBody>>;

impl Service<Request<Incoming>> for ProxyService {
    type Response = ProxyResponse;
    type Error = Infallible;
    // Boxed: hyper keeps one slot the size of this future per connection
    // for the connection's life (about 6 KB of request-path state); boxed,
    // an idle connection holds a pointer instead.
    type Future = Pin<Box<dyn Future<Output = Result<ProxyResponse, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.first.arrived();
        let open = self.activity.open();
        let proxy = self.proxy.clone();
        let downstream = self.downstream;
        Box::pin(async move {
            let response = proxy
                .handle(request.map(ClientBody::Streamed), downstream)
                .await
                .into_response();
            Ok(response.map(|body| Counted::new(body, open)))
        })
    }
}

/// One client connection and what serving it takes, whichever protocol it
/// speaks.
struct ClientConnection {
    service: ProxyService,
    builders: Arc<Builders>,
    draining: tokio::sync::watch::Receiver<bool>,
}

impl ClientConnection {
    /// Plaintext: HTTP/1.1 on the gateway's own server (handing over to
    /// hyper's for what it leaves), or h2c with prior knowledge.
    async fn serve_plaintext(self, stream: TcpStream) -> Result<(), BoxError> {
        let ClientConnection {
            service,
            builders,
            draining,
        } = self;
        let first = service.first.clone();
        let activity = service.activity.clone();
        if speaks_h2c(&stream).await? {
            let io = TokioIo::new(ClientIo::new(stream, first, activity.clone()));
            let idle = IdleWatch::new(activity, builders.idle_timeout, draining);
            let connection = builders.http2.serve_connection(io, service);
            return Box::pin(idle.serve(connection)).await.map_err(Into::into);
        }
        let (proxy, downstream) = (service.proxy.clone(), service.downstream);
        let io = ClientIo::new(stream, first.clone(), activity.clone());
        let mut own_draining = draining.clone();
        let drain = std::pin::pin!(own_draining.wait_for(|draining| *draining));
        let release = builders.release;
        let hyper = |io| async {
            release::serve(&builders.http1, io, service, &activity, release, draining)
                .await
                .map_err(Into::into)
        };
        h1::serve(io, &proxy, downstream, first, builders.own, drain, hyper).await
    }

    /// TLS: the handshake, then HTTP/1.1 or HTTP/2 as ALPN or the client's
    /// first bytes say.
    async fn serve_tls(self, certs: &CertStore, stream: TcpStream) -> Result<(), BoxError> {
        let ClientConnection {
            service,
            builders,
            draining,
        } = self;
        let client = service.downstream.client;
        let Some(stream) = handshake(&certs.acceptor(), stream, client).await else {
            return Ok(());
        };
        let idle = IdleWatch::new(service.activity.clone(), builders.idle_timeout, draining);
        let connection = builders
            .auto
            .serve_connection(TokioIo::new(stream), service);
        idle.serve(connection.into_owned()).await
    }
}

async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    client: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%client, %error, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}
