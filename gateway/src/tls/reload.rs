//! Triggers for reloading the served certificates besides
//! `POST /admin/tls/reload`: changes to the certificate and key files (via
//! `notify`, debounced) and SIGHUP. The reload itself is
//! [`CertStore::reload`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::store::CertStore;
use crate::config::CertSpec;

/// Quiet time after a file event before reloading: a certificate and its
/// key are usually written one after the other, and should be read as a
/// pair.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Keeps the file watcher alive; dropping it stops watching.
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Watches the directories of the certificate and key files (a file
/// replaced by rename is missed by a watch on the file itself) and reloads
/// when one of them changes.
pub fn watch_files(store: Arc<CertStore>, specs: &[CertSpec]) -> notify::Result<FileWatch> {
    let files: HashSet<PathBuf> = specs
        .iter()
        .flat_map(|s| [absolute(&s.files.cert), absolute(&s.files.key)])
        .collect();
    let dirs: HashSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(PathBuf::from))
        .collect();
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
            && event.paths.iter().any(|p| files.contains(&absolute(p)))
        {
            // Full channel: a reload is already pending.
            let _ = tx.try_send(());
        }
    })?;
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            store.reload("file").await;
        }
    });
    Ok(FileWatch { _watcher: watcher })
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Reloads on every SIGHUP, for as long as the process runs.
pub fn reload_on_sighup(store: Arc<CertStore>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            store.reload("sighup").await;
        }
    });
    Ok(())
}
