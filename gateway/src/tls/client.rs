//! TLS to Kylin nodes: one rustls client configuration (node certificates
//! verified against `upstream.tls_ca`, else the system's trust store, or,
//! only with an explicit `upstream.tls_insecure`, not at all), and
//! [`UpstreamTls::connect`]: a TCP stream to a node in, a TLS stream out,
//! with SNI and verification by the node's advertised host. It knows
//! nothing of pools: any connection pool can call it.

use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::Upstream;

/// How node certificates are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Against `upstream.tls_ca` or the system's roots.
    Verified,
    /// Not at all (`upstream.tls_insecure = true`).
    Insecure,
}

impl Verification {
    /// As `/admin/nodes` shows it for a TLS node.
    pub fn as_str(self) -> &'static str {
        match self {
            Verification::Verified => "verified",
            Verification::Insecure => "insecure",
        }
    }
}

/// The client side of TLS to nodes. Cheap to share.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    verification: Verification,
}

impl UpstreamTls {
    /// Builds the client configuration from `[upstream]`. Blocking: reads
    /// `tls_ca` or the system's trust store. Errors name the config key.
    pub fn from_config(upstream: &Upstream) -> Result<UpstreamTls, String> {
        let provider = super::server::provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("upstream.tls: {e}"))?;
        let (config, verification) = if upstream.tls_insecure {
            let verifier = Arc::new(NoVerification(provider));
            let config = builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            (config, Verification::Insecure)
        } else {
            let roots = match &upstream.tls_ca {
                Some(path) => {
                    super::server::root_store(path).map_err(|e| format!("upstream.tls_ca: {e}"))?
                }
                None => system_roots(),
            };
            let config = builder.with_root_certificates(roots).with_no_client_auth();
            (config, Verification::Verified)
        };
        let mut config = config;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(UpstreamTls {
            connector: TlsConnector::from(Arc::new(config)),
            verification,
        })
    }

    pub fn verification(&self) -> Verification {
        self.verification
    }

    /// The TLS handshake on a connected stream. `host` is the node's
    /// advertised host: sent as SNI when it is a name, and the name (or IP
    /// address) the certificate must be valid for.
    pub async fn connect(&self, tcp: TcpStream, host: &str) -> io::Result<TlsStream<TcpStream>> {
        let name = server_name(host)?;
        self.connector.connect(name, tcp).await
    }
}

/// A node's advertised host as rustls wants it: an IP address (verified
/// against the certificate's IP SANs, no SNI sent) or a DNS name.
pub fn server_name(host: &str) -> io::Result<ServerName<'static>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_string()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{host}' cannot name a TLS server: {e}"),
        )
    })
}

/// The operating system's trust store (what `update-ca-certificates`
/// maintains), where operators put their internal CAs. Unreadable entries
/// are skipped; none at all is logged, as every verified node would fail.
fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            errors = ?found.errors,
            "no system CA certificates found: TLS nodes cannot be verified unless upstream.tls_ca is set"
        );
    }
    roots
}

/// `upstream.tls_insecure`: accepts any certificate, but still checks the
/// handshake's signatures (so the connection is at least to whoever holds
/// the presented key). Public for test clients that probe what a listener
/// serves.
#[derive(Debug)]
pub struct NoVerification(pub Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
