//! One certificate pair as loaded from its PEM files: the chain and key
//! rustls serves, and what `/admin/tls` shows about the leaf (subject,
//! issuer, validity, SHA-256 of its DER, subjectAltNames). Every error is
//! one line naming the file and why.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::Serialize;
use x509_parser::extensions::GeneralName;

use crate::config::TlsCertFiles;

/// A pair ready to serve.
#[derive(Debug)]
pub struct LoadedCert {
    pub certified: Arc<CertifiedKey>,
    pub info: CertInfo,
    /// SNI names it answers: the configured ones, else its SAN DNS names.
    pub names: Vec<String>,
}

/// The leaf certificate as an operator wants to see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    pub not_after_unix: i64,
    /// Lower-case hex SHA-256 of the leaf's DER: what `openssl x509
    /// -fingerprint -sha256` prints, without the colons.
    pub sha256: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<String>,
}

impl CertInfo {
    /// Days from `now_unix` until the leaf expires (negative once expired).
    pub fn days_left(&self, now_unix: i64) -> f64 {
        (self.not_after_unix - now_unix) as f64 / 86_400.0
    }
}

/// Reads both files. Blocking: call at start-up or from `spawn_blocking`.
pub fn read_pair(files: &TlsCertFiles) -> Result<(Vec<u8>, Vec<u8>), String> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
    };
    Ok((read(&files.cert)?, read(&files.key)?))
}

/// Reads and parses a pair: PEM, then the key through the provider, then
/// whether the key belongs to the leaf.
pub fn load(files: &TlsCertFiles, provider: &CryptoProvider) -> Result<LoadedCert, String> {
    let (cert_pem, key_pem) = read_pair(files)?;
    parse_pair(files, &cert_pem, &key_pem, provider)
}

/// Parses PEM text of a chain (leaf first) and a private key.
pub fn parse_pair(
    files: &TlsCertFiles,
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<LoadedCert, String> {
    let cert_file = files.cert.display();
    let key_file = files.key.display();
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert_file}: not PEM: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err(format!("{cert_file}: no CERTIFICATE block found"));
    };
    let info = cert_info(leaf).map_err(|e| format!("{cert_file}: {e}"))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| format!("{key_file}: not PEM: {e}"))?
        .ok_or_else(|| format!("{key_file}: no PRIVATE KEY block found"))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            format!("{key_file}: the key does not belong to the certificate in {cert_file}")
        }
        other => format!("{key_file}: unusable key: {other}"),
    })?;
    let names = match &files.names {
        Some(names) => names.clone(),
        None => info
            .dns_names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect(),
    };
    Ok(LoadedCert {
        certified: Arc::new(certified),
        info,
        names,
    })
}

/// Reads the fields `/admin/tls` shows from a DER certificate.
pub fn cert_info(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let validity = cert.validity();
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => dns_names.push(dns.to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        ip_addresses.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: rfc2822(&validity.not_before),
        not_after: rfc2822(&validity.not_after),
        not_after_unix: validity.not_after.timestamp(),
        sha256: crate::digest::sha256_hex(der.as_ref()),
        dns_names,
        ip_addresses,
    })
}

fn rfc2822(time: &x509_parser::time::ASN1Time) -> String {
    time.to_rfc2822().unwrap_or_else(|_| time.to_string())
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => Some(<[u8; 4]>::try_from(bytes).ok()?.into()),
        16 => Some(<[u8; 16]>::try_from(bytes).ok()?.into()),
        _ => None,
    }
}
