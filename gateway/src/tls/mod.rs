//! TLS both ways. Downstream: termination for `listen.https` with
//! certificates chosen by SNI and reloaded without a restart
//! ([`server`], [`store`], [`reload`]). Upstream: TLS to Kylin nodes that
//! serve HTTPS ([`client`], and [`connector`] for hyper-util's client).

pub mod cert;
pub mod client;
pub mod client_auth;
pub mod connector;
pub mod reload;
pub mod server;
pub mod sni;
pub mod store;

pub use client::{UpstreamTls, Verification};
pub use connector::{NodeConnector, NodeStream, tls_authority};
pub use server::{Termination, termination};
pub use store::CertStore;
