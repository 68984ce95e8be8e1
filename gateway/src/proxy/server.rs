//! Accepting downstream connections (HTTP/1.1 and h2c, or TLS), bounding
//! them (`[limits]`: connection cap, first-head deadline, idle timeout) and
//! draining them on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::limits::{ClientIo, FirstRequest, first_request_within};
use super::{Downstream, Proxy};
use crate::config::Limits;

/// Serves `listener` until `shutdown` resolves, then stops accepting and
/// waits up to `drain` for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    limits: Limits,
) {
    let graceful = GracefulShutdown::new();
    let builder = connection_builder(&limits);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let refused = metrics::counter!("kgw_connections_refused_total");
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Past the cap, closed at once (not left in the backlog).
        let Ok(permit) = open.clone().try_acquire_owned() else {
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
        let connection = serve_one(accepted, &proxy, tls.clone(), builder.clone(), &graceful);
        tokio::spawn(first_request_within(
            limits.header_read_timeout,
            connection.first,
            connection.future,
        ));
    }
    drop(listener);
    tracing::info!("stopped accepting; draining open connections");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "drain deadline passed; closing remaining connections"
        );
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
    tls: Option<TlsAcceptor>,
    stop: tokio::sync::watch::Receiver<bool>,
    drain: Duration,
    limits: Limits,
) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    // Every thread keeps its runtime (and the upstream connections it
    // drives, which other threads may be using) until all have drained.
    let drained = Arc::new(tokio::sync::Barrier::new(threads));
    let mut bound = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    for index in 0..threads {
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        bound.push(bound_rx);
        let (proxy, tls, mut stop, drained, limits) = (
            proxy.clone(),
            tls.clone(),
            stop.clone(),
            drained.clone(),
            limits.clone(),
        );
        let serve_thread = move || {
            crate::upstream::enter_shard(index);
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = bound_tx.send(Err(error));
                    return;
                }
            };
            runtime.block_on(async move {
                match reuseport_listener(address) {
                    Ok(listener) => {
                        let _ = bound_tx.send(Ok(()));
                        let shutdown = async move {
                            let _ = stop.wait_for(|stop| *stop).await;
                        };
                        serve(listener, proxy, tls, shutdown, drain, limits).await;
                    }
                    Err(error) => {
                        let _ = bound_tx.send(Err(error));
                    }
                }
                drained.wait().await;
            });
        };
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

/// HTTP/1.1 and h2c (and both over TLS), bounded by `limits`.
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
fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(limits.h2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.h2_max_local_error_reset_streams);
    builder
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

fn serve_one(
    accepted: Accepted,
    proxy: &Arc<Proxy>,
    tls: Option<TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
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
    let arrived = first.clone();
    let io_first = first.clone();
    let proxy = proxy.clone();
    let service = service_fn(move |request| {
        arrived.arrived();
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(request, downstream).await) }
    });
    let watcher = graceful.watcher();
    let future = async move {
        let _permit = permit;
        let result = match tls {
            None => {
                let io = ClientIo::new(stream, io_first);
                let connection = builder.serve_connection(TokioIo::new(io), service);
                watcher.watch(connection.into_owned()).await
            }
            Some(acceptor) => {
                let Some(stream) = handshake(&acceptor, stream, client).await else {
                    return;
                };
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                watcher.watch(connection.into_owned()).await
            }
        };
        if let Err(error) = result {
            tracing::debug!(%client, error = %error, "connection ended with an error");
        }
    };
    Connection { first, future }
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
