//! Triggers for reloading the chain besides `POST /admin/plugins/reload`:
//! changes to the plugin files (via `notify`, debounced) and SIGHUP. The
//! reload itself is [`PluginChain::reload`]: compile off the request path,
//! swap atomically, keep the old version of a plugin that fails.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::chain::PluginChain;

/// Quiet time after a file event before reloading, so a file written in
/// several steps is read once, complete.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Keeps the file watcher alive; dropping it stops watching.
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Watches the directories of the plugin files (files are often replaced by
/// rename, which a watch on the file itself misses) and reloads the chain
/// when one of the plugin files changes.
pub fn watch_files(chain: PluginChain) -> notify::Result<FileWatch> {
    let files: HashSet<PathBuf> = chain.paths().iter().map(|p| absolute(p)).collect();
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
            // Let the writer finish, then coalesce the events it caused.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            tracing::info!("plugin file changed, reloading");
            chain.reload().await;
        }
    });
    Ok(FileWatch { _watcher: watcher })
}

fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Reloads the chain on every SIGHUP, for as long as the process runs.
pub fn reload_on_sighup(chain: PluginChain) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading plugins");
            chain.reload().await;
        }
    });
    Ok(())
}
