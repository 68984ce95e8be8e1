//! Certificates made at test time with rcgen: a CA, leaves it signs (DNS or
//! IP subjectAltNames, a chosen lifetime), written as PEM files the way an
//! operator rotates them (write aside, then rename); and a TLS probe that
//! tells which certificate a server presented (SHA-256 of the leaf's DER,
//! as `/admin/tls` shows it).

use std::path::Path;
use std::sync::Arc;

use kylin_gateway::tls::client::NoVerification;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, SupportedProtocolVersion};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A certificate authority for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
    pub der: CertificateDer<'static>,
}

/// A leaf certificate and its key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    /// Lower-case hex SHA-256 of the DER.
    pub sha256: String,
}

impl TestCa {
    pub fn new(common_name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names` (IP addresses become IP SANs), valid 90 days.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_valid_for(names, 90)
    }

    /// A leaf for `names` that expires `days` from now.
    pub fn leaf_valid_for(&self, names: &[&str], days: i64) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().unwrap()),
            })
            .collect();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(days);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            sha256: sha256_hex(cert.der()),
            der: cert.der().clone(),
        }
    }

    pub fn write(&self, path: &Path) {
        write_atomically(path, &self.pem);
    }
}

impl Leaf {
    /// Writes the pair, key first, each by rename.
    pub fn write(&self, cert: &Path, key: &Path) {
        write_atomically(key, &self.key_pem);
        write_atomically(cert, &self.cert_pem);
    }
}

/// Replaces `path` by writing a sibling and renaming it over.
pub fn write_atomically(path: &Path, contents: &str) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, contents).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

pub fn sha256_hex(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A client configuration that accepts any server certificate (the probe
/// reports which one was presented), with an optional client certificate
/// and a choice of protocol versions.
pub fn probe_config(
    client_cert: Option<&Leaf>,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerification(provider)));
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some(leaf) => {
            let key = rustls_pemfile::private_key(&mut leaf.key_pem.as_bytes())
                .unwrap()
                .unwrap();
            builder
                .with_client_auth_cert(vec![leaf.der.clone()], key)
                .unwrap()
        }
    };
    Arc::new(config)
}

/// Connects to `127.0.0.1:port` with SNI `sni` (an IP sends none).
pub async fn tls_connect(
    port: u16,
    sni: &str,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// The SHA-256 of the leaf a new handshake with SNI `sni` is served.
pub async fn served_leaf(port: u16, sni: &str) -> std::io::Result<String> {
    let config = probe_config(None, &[&rustls::version::TLS13, &rustls::version::TLS12]);
    let stream = tls_connect(port, sni, config).await?;
    let (_, connection) = stream.get_ref();
    let leaf = connection
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| std::io::Error::other("no certificate presented"))?;
    Ok(sha256_hex(leaf))
}

/// A rustls server configuration serving `leaf` (for TLS backends).
pub fn server_config(leaf: &Leaf) -> Arc<rustls::ServerConfig> {
    let key = rustls_pemfile::private_key(&mut leaf.key_pem.as_bytes())
        .unwrap()
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], key)
        .unwrap();
    Arc::new(config)
}
