//! The HTTPS listener's rustls configuration: certificates from the
//! reloadable [`CertStore`], the lowest protocol version allowed, and
//! optional client-certificate authentication against `tls.client_ca`.
//! The store rebuilds it when a reload brings a new client CA bundle; the
//! certificates change under it without a rebuild.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::ResolvesServerCert;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};

use super::store::CertStore;
use crate::config::{TlsSettings, TlsVersion};

/// The HTTPS side, ready to serve: the store that hands out acceptors and
/// reloads.
pub struct Termination {
    pub store: Arc<CertStore>,
}

/// The provider every TLS configuration of the gateway uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads the certificates (and `client_ca`) and builds the configuration.
/// Blocking: reads files. Errors are one line naming the config key.
pub fn termination(settings: &TlsSettings) -> Result<Termination, String> {
    let store = CertStore::load(
        settings.pairs(),
        settings.client_ca.as_deref(),
        versions(settings.min_version),
        provider(),
    )?;
    Ok(Termination {
        store: Arc::new(store),
    })
}

/// The server configuration: `versions` from the lowest allowed, client
/// certificates checked by `client_auth` when set, certificates from
/// `certs`, ALPN h2 then HTTP/1.1.
pub fn server_config(
    provider: &Arc<CryptoProvider>,
    versions: &'static [&'static SupportedProtocolVersion],
    client_auth: Option<Arc<dyn ClientCertVerifier>>,
    certs: Arc<dyn ResolvesServerCert>,
) -> Result<ServerConfig, String> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls.min_version: {e}"))?;
    let builder = match client_auth {
        None => builder.with_no_client_auth(),
        Some(verifier) => builder.with_client_cert_verifier(verifier),
    };
    let mut config = builder.with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
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
    roots_from_pem(path, &pem)
}

/// Every certificate of `pem` (read from `path`) as a trust anchor.
pub fn roots_from_pem(path: &Path, pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &*pem) {
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
