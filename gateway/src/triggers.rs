//! Reload triggers shared by everything the gateway reloads without a
//! restart (plugins, certificates): changes to a set of files, debounced,
//! and SIGHUP. What a reload does is the caller's.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Keeps a file watcher alive; dropping it stops watching.
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Watches the directories of `files` (a file replaced by rename is missed
/// by a watch on the file itself) and runs `reload` once the events about
/// those files have been quiet for `debounce`: a file written in several
/// steps, or a certificate and its key written one after the other, is
/// read once, complete. Reloads never overlap.
pub fn watch_files<R, F>(
    files: impl IntoIterator<Item = PathBuf>,
    debounce: Duration,
    mut reload: R,
) -> notify::Result<FileWatch>
where
    R: FnMut() -> F + Send + 'static,
    F: Future<Output = ()> + Send,
{
    let files: HashSet<PathBuf> = files.into_iter().map(|f| absolute(&f)).collect();
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
                match tokio::time::timeout(debounce, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            reload().await;
        }
    });
    Ok(FileWatch { _watcher: watcher })
}

/// Runs `reload` on every SIGHUP, for as long as the process runs.
pub fn on_sighup<R, F>(mut reload: R) -> std::io::Result<()>
where
    R: FnMut() -> F + Send + 'static,
    F: Future<Output = ()> + Send,
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            reload().await;
        }
    });
    Ok(())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
