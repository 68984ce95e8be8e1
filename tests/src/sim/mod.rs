//! `kylin-sim`: a stand-in for one Kylin/KAP node. It serves HTTP like a
//! node, registers in ZooKeeper exactly as Curator's ServiceDiscovery does
//! for the chosen release, campaigns for the job engine exactly as Curator's
//! LeaderSelector does, and leaves at once on SIGTERM (a SIGKILL leaves its
//! znodes to session expiry, like a crashed JVM).

pub mod http;
pub mod session;
pub mod znodes;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;

use self::http::NodeIdentity;
use self::session::{Advertised, ZkTarget};
pub use self::znodes::Layout;

/// Command line of `kylin-sim`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "kylin-sim",
    about = "A simulated Kylin node for tests and demos"
)]
pub struct SimOptions {
    /// ZooKeeper connect string, `host:port[,host:port...][/chroot]`.
    #[arg(long)]
    pub zk: String,
    /// Kylin's ZooKeeper base path (`/kylin/<metadata prefix>`; for Kylin 5
    /// `/kylin/<metadata url unique id>`).
    #[arg(long, default_value = "/kylin/kylin_metadata")]
    pub base_path: String,
    /// Which release's znodes to write.
    #[arg(long, value_enum, default_value = "kylin-3.1")]
    pub layout: Layout,
    /// `kylin.server.mode`: all, job, query, or a comma list like query,job.
    #[arg(long, default_value = "all")]
    pub mode: String,
    /// The name the node answers with (defaults to host:port).
    #[arg(long)]
    pub name: Option<String>,
    /// The advertised address (`kylin.server.host-address`).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// HTTP port; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Requested session timeout (the server caps it).
    #[arg(long, default_value_t = 120_000)]
    pub session_timeout_ms: u64,
    /// Write Curator 5's payload form (`"@class":"java.util.LinkedHashMap"`).
    #[arg(long)]
    pub curator5: bool,
    /// Register with `enabled: false` (Curator: do not route to it); Kylin
    /// 5 writes `instance_status: OUT_OF_SERVICE` instead.
    #[arg(long)]
    pub disabled: bool,
    /// Override `payload.description` (to test other payload forms).
    #[arg(long)]
    pub description: Option<String>,
    /// The instance id (a random UUID by default).
    #[arg(long)]
    pub id: Option<String>,
    /// After deregistering on SIGTERM, keep answering HTTP this long (a
    /// clean stop: requests routed before the gateway saw the change
    /// still complete).
    #[arg(long, default_value_t = 200)]
    pub drain_ms: u64,
    /// Digest credentials `user:password` (`kylin.env.zookeeper.zk-auth`).
    #[arg(long)]
    pub auth: Option<String>,
    /// PEM certificate chain: also serve HTTPS and register its port as
    /// `sslPort` (with `--tls-key`).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// HTTPS port with `--tls-cert`; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub ssl_port: u16,
}

/// Runs the node until SIGTERM or SIGINT; prints `READY <port>` on stdout
/// once HTTP is up and the instance is registered. On SIGTERM it
/// deregisters, drains HTTP for `--drain-ms`, and exits 0.
pub async fn run(options: SimOptions) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", options.port)).await?;
    let port = listener.local_addr()?.port();
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| format!("{}:{port}", options.host));
    let identity = Arc::new(NodeIdentity {
        name,
        id: options.id.clone().unwrap_or_else(znodes::random_uuid),
        mode: options.mode.clone(),
        layout: options.layout,
        leader: AtomicBool::new(false),
        active_answer: Default::default(),
    });
    let description = options.description.clone().unwrap_or_else(|| {
        options
            .layout
            .description(&options.host, port, &options.mode)
    });
    let target = Arc::new(ZkTarget {
        connect: options.zk.clone(),
        base_path: options.base_path.clone(),
        session_timeout: Duration::from_millis(options.session_timeout_ms),
        digest_auth: options.auth.clone(),
    });
    let ssl_port = match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => {
            let acceptor = tls_acceptor(cert, key)?;
            let listener = TcpListener::bind(("0.0.0.0", options.ssl_port)).await?;
            let ssl_port = listener.local_addr()?.port();
            tokio::spawn(http::serve(listener, identity.clone(), Some(acceptor)));
            Some(ssl_port)
        }
        _ => None,
    };
    let advertised = Arc::new(Advertised {
        host: options.host.clone(),
        port,
        ssl_port,
        description,
        curator5: options.curator5,
        enabled: !options.disabled,
    });
    tokio::spawn(http::serve(listener, identity.clone(), None));

    let owned = session::SharedOwned::default();
    let (registered_tx, registered_rx) = tokio::sync::oneshot::channel();
    let zookeeper = session::run(
        target,
        advertised,
        identity.clone(),
        owned.clone(),
        registered_tx,
    );
    let announce = async {
        if registered_rx.await.is_ok() {
            println!("READY {port}");
            std::future::pending::<()>().await;
        }
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = zookeeper => {}
        () = announce => {}
        _ = terminate.recv() => session::log(&identity, "SIGTERM: leaving"),
        _ = tokio::signal::ctrl_c() => session::log(&identity, "SIGINT: leaving"),
    }
    session::leave(&owned, &identity).await;
    tokio::time::sleep(Duration::from_millis(options.drain_ms)).await;
    Ok(())
}

/// A rustls acceptor for the node's HTTPS side.
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let chain =
        rustls_pemfile::certs(&mut &std::fs::read(cert)?[..]).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut &std::fs::read(key)?[..])?
        .ok_or_else(|| anyhow::anyhow!("no private key in {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
