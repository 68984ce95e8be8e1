//! The HTTPS listener's rustls configuration: certificates from the
//! reloadable [`CertStore`], the lowest protocol version allowed, and
//! optional client-certificate authentication against `tls.client_ca`.
//! Built once at start-up; only the certificates change afterwards.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio_rustls::TlsAcceptor;

use super::store::CertStore;
use crate::config::{TlsSettings, TlsVersion};

/// The HTTPS side, ready to serve: the acceptor and the store to reload.
pub struct Termination {
    pub acceptor: TlsAcceptor,
    pub store: Arc<CertStore>,
}

/// The provider every TLS configuration of the gateway uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads the certificates (and `client_ca`) and builds the acceptor.
/// Blocking: reads files. Errors are one line naming the config key.
pub fn termination(settings: &TlsSettings) -> Result<Termination, String> {
    let provider = provider();
    let store = Arc::new(CertStore::load(settings.pairs(), provider.clone())?);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(settings.min_version))
        .map_err(|e| format!("tls.min_version: {e}"))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = Arc::new(root_store(path).map_err(|e| format!("tls.client_ca: {e}"))?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("tls.client_ca: {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(store.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Termination {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        store,
    })
}

static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

/// The versions allowed from `min` up.
pub fn versions(min: TlsVersion) -> &'static [&'static SupportedProtocolVersion] {
    match min {
        TlsVersion::Tls12 => rustls::ALL_VERSIONS,
        TlsVersion::Tls13 => &TLS13_ONLY,
    }
}

/// Every certificate of a PEM bundle as a trust anchor. Blocking.
pub fn root_store(path: &Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert = cert.map_err(|e| format!("{}: not PEM: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no CERTIFICATE block found", path.display()));
    }
    Ok(roots)
}
