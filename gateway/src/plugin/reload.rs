//! Triggers for reloading the chain besides `POST /admin/plugins/reload`:
//! changes to the plugin files and SIGHUP ([`crate::triggers`]). The
//! reload itself is [`PluginChain::reload`]: compile off the request path,
//! swap atomically, keep the old version of a plugin that fails.

use std::time::Duration;

use super::chain::PluginChain;
pub use crate::triggers::FileWatch;

/// Quiet time after a file event before reloading, so a file written in
/// several steps is read once, complete.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Reloads the chain when one of the plugin files changes.
pub fn watch_files(chain: PluginChain) -> notify::Result<FileWatch> {
    let files = chain.paths();
    crate::triggers::watch_files(files, DEBOUNCE, move || {
        let chain = chain.clone();
        async move {
            tracing::info!("plugin file changed, reloading");
            chain.reload().await;
        }
    })
}

/// Reloads the chain on every SIGHUP, for as long as the process runs.
pub fn reload_on_sighup(chain: PluginChain) -> std::io::Result<()> {
    crate::triggers::on_sighup(move || {
        let chain = chain.clone();
        async move {
            tracing::info!("SIGHUP: reloading plugins");
            chain.reload().await;
        }
    })
}
