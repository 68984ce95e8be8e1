//! Triggers for reloading the served certificates besides
//! `POST /admin/tls/reload`: changes to the certificate, key and client CA
//! files, and SIGHUP ([`crate::triggers`]). The reload itself is [`CertStore::reload`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::store::CertStore;
use crate::config::CertSpec;
pub use crate::triggers::FileWatch;

/// Quiet time after a file event before reloading: a certificate and its
/// key are usually written one after the other, and should be read as a
/// pair.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Reloads when a certificate, key or client CA file changes.
pub fn watch_files(
    store: Arc<CertStore>,
    specs: &[CertSpec],
    client_ca: Option<&Path>,
) -> notify::Result<FileWatch> {
    let files = specs
        .iter()
        .flat_map(|s| [s.files.cert.clone(), s.files.key.clone()])
        .chain(client_ca.map(Path::to_path_buf));
    crate::triggers::watch_files(files, DEBOUNCE, move || {
        let store = store.clone();
        async move {
            store.reload("file").await;
        }
    })
}

/// Reloads on every SIGHUP, for as long as the process runs.
pub fn reload_on_sighup(store: Arc<CertStore>) -> std::io::Result<()> {
    crate::triggers::on_sighup(move || {
        let store = store.clone();
        async move {
            store.reload("sighup").await;
        }
    })
}
