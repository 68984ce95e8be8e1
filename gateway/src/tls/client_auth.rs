//! `tls.client_ca`: the trust anchors client certificates are verified
//! against, read at start-up and again on every certificate reload, so a
//! rotated client CA bundle needs no restart. A bundle that fails to load
//! on a reload keeps the previous one in force (reported on `/admin/tls`,
//! counted and logged, as a certificate pair is).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use serde_json::json;

use super::server::roots_from_pem;

/// One version of the bundle, as verified against.
#[derive(Debug, Clone)]
pub struct ClientCa {
    pub path: PathBuf,
    pub verifier: Arc<dyn ClientCertVerifier>,
    /// SHA-256 of the file as read (hex), telling versions apart.
    pub sha256: String,
    /// Trust anchors in it.
    pub anchors: usize,
    pub loaded_at: SystemTime,
    /// The last reload's failure, cleared by a successful one.
    pub last_error: Option<String>,
}

impl ClientCa {
    /// Reads and parses `path`. Blocking: reads the file.
    pub fn load(path: &Path, provider: &Arc<CryptoProvider>) -> Result<ClientCa, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let roots = roots_from_pem(path, &pem)?;
        let anchors = roots.len();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(ClientCa {
            path: path.to_path_buf(),
            verifier,
            sha256: crate::digest::sha256_hex(&pem),
            anchors,
            loaded_at: SystemTime::now(),
            last_error: None,
        })
    }

    /// The version after a reload that read `result`: the new one (keeping
    /// the load time when the file did not change), or this one with the
    /// error.
    pub fn next(&self, result: Result<ClientCa, String>) -> ClientCa {
        match result {
            Ok(loaded) if loaded.sha256 == self.sha256 => ClientCa {
                last_error: None,
                ..self.clone()
            },
            Ok(loaded) => loaded,
            Err(error) => ClientCa {
                last_error: Some(error),
                ..self.clone()
            },
        }
    }

    /// `/admin/tls`'s `client_ca`.
    pub fn status(&self) -> serde_json::Value {
        json!({
            "file": self.path,
            "sha256": self.sha256,
            "anchors": self.anchors,
            "loaded_at_unix_ms": super::store::unix_ms(self.loaded_at),
            "last_reload_error": self.last_error,
        })
    }
}
