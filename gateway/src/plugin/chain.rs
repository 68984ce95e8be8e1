//! The plugins of the config, in order, as one [`RoutingPolicy`]: each is
//! asked in turn (if it wants the request's class) and the first decisive
//! answer wins; headers from every plugin asked are added. The loaded
//! versions live in an `ArcSwap`, so a reload swaps them without a lock on
//! the request path and calls in flight finish on the version they started.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::StatusCode;

use super::policy::{Decision, PluginControl, RequestFacts, Route, RoutingPolicy};
use super::runtime::{LoadError, LoadedPlugin, PluginStats, Runtime};
use crate::classify::TrafficClass;
use crate::config::{OnError, PluginSpec};
use crate::view::Snapshot;

/// A plugin that failed to load, by name.
#[derive(Debug, thiserror::Error)]
#[error("plugin '{name}' ({path}): {error}")]
pub struct PluginLoadError {
    pub name: String,
    pub path: String,
    pub error: LoadError,
}

/// The chain of plugins; cheap to clone (one shared inner).
#[derive(Clone)]
pub struct PluginChain {
    inner: Arc<ChainInner>,
}

struct ChainInner {
    runtime: Runtime,
    specs: Vec<PluginSpec>,
    /// Per spec, kept across reloads.
    stats: Vec<Arc<PluginStats>>,
    current: ArcSwap<ChainState>,
    /// Per spec: why the last reload of that plugin failed, if it did.
    reload_errors: Mutex<Vec<Option<String>>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

/// One loaded version of every plugin, with what the chain as a whole wants.
struct ChainState {
    plugins: Vec<Arc<LoadedPlugin>>,
    /// Indexed by `TrafficClass as usize`.
    wants: [bool; 3],
    body_prefix_len: [usize; 3],
}

impl ChainState {
    fn new(plugins: Vec<Arc<LoadedPlugin>>) -> ChainState {
        let mut wants = [false; 3];
        let mut body_prefix_len = [0; 3];
        for class in TrafficClass::ALL {
            for plugin in plugins.iter().filter(|p| p.wants(class)) {
                wants[class as usize] = true;
                body_prefix_len[class as usize] =
                    body_prefix_len[class as usize].max(plugin.body_prefix_len());
            }
        }
        ChainState {
            plugins,
            wants,
            body_prefix_len,
        }
    }
}

/// What happened to one plugin on reload.
#[derive(Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    Unchanged,
    Reloaded,
    /// The old version keeps running.
    Failed(String),
}

impl PluginChain {
    /// Loads every plugin of `specs`. Blocking: compiles (or reads the
    /// compile cache). Fails on the first plugin that does not load.
    pub fn load(runtime: Runtime, specs: Vec<PluginSpec>) -> Result<PluginChain, PluginLoadError> {
        let stats: Vec<Arc<PluginStats>> = specs
            .iter()
            .map(|s| Arc::new(PluginStats::new(&s.name)))
            .collect();
        let plugins = specs
            .iter()
            .zip(&stats)
            .map(|(spec, stats)| {
                load_one(&runtime, spec, stats.clone())
                    .map(Arc::new)
                    .map_err(|error| PluginLoadError {
                        name: spec.name.clone(),
                        path: spec.path.display().to_string(),
                        error,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for plugin in &plugins {
            crate::events::record(
                crate::events::Kind::Plugin,
                format!("plugin {} loaded", plugin.name),
                serde_json::json!({"plugin": &*plugin.name, "outcome": "loaded",
                                   "sha256": plugin.sha256}),
            );
        }
        Ok(PluginChain {
            inner: Arc::new(ChainInner {
                runtime,
                reload_errors: Mutex::new(vec![None; specs.len()]),
                specs,
                stats,
                current: ArcSwap::from_pointee(ChainState::new(plugins)),
                reloading: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Paths of the plugin files, for the file watcher.
    pub fn paths(&self) -> Vec<std::path::PathBuf> {
        self.inner.specs.iter().map(|s| s.path.clone()).collect()
    }

    /// Reloads every plugin whose file changed, off the runtime's workers;
    /// one reload runs at a time.
    pub async fn reload(&self) -> Vec<(String, ReloadOutcome)> {
        let _one_at_a_time = self.inner.reloading.lock().await;
        let inner = self.inner.clone();
        match tokio::task::spawn_blocking(move || inner.reload_blocking()).await {
            Ok(outcomes) => outcomes,
            Err(error) => self
                .inner
                .specs
                .iter()
                .map(|s| {
                    let why = format!("reload task failed: {error}");
                    (s.name.clone(), ReloadOutcome::Failed(why))
                })
                .collect(),
        }
    }
}

fn load_one(
    runtime: &Runtime,
    spec: &PluginSpec,
    stats: Arc<PluginStats>,
) -> Result<LoadedPlugin, LoadError> {
    let bytes = std::fs::read(&spec.path).map_err(|source| LoadError::Read {
        path: spec.path.display().to_string(),
        source,
    })?;
    runtime.load(spec, &bytes, stats)
}

impl ChainInner {
    fn reload_blocking(&self) -> Vec<(String, ReloadOutcome)> {
        let current = self.current.load_full();
        let mut next = current.plugins.clone();
        let mut changed = false;
        let mut outcomes = Vec::with_capacity(self.specs.len());
        let mut errors = Vec::with_capacity(self.specs.len());
        for (i, spec) in self.specs.iter().enumerate() {
            let outcome = match std::fs::read(&spec.path) {
                Err(error) => {
                    ReloadOutcome::Failed(format!("cannot read {}: {error}", spec.path.display()))
                }
                Ok(bytes) if super::runtime::sha256_hex(&bytes) == current.plugins[i].sha256 => {
                    ReloadOutcome::Unchanged
                }
                Ok(bytes) => match self.runtime.load(spec, &bytes, self.stats[i].clone()) {
                    Ok(plugin) => {
                        next[i] = Arc::new(plugin);
                        changed = true;
                        ReloadOutcome::Reloaded
                    }
                    Err(error) => ReloadOutcome::Failed(error.to_string()),
                },
            };
            match &outcome {
                ReloadOutcome::Failed(why) => {
                    tracing::warn!(plugin = %spec.name, "reload failed, keeping the running version: {why}");
                    crate::events::record(
                        crate::events::Kind::Plugin,
                        format!("plugin {} failed to reload: {why}", spec.name),
                        serde_json::json!({"plugin": spec.name, "outcome": "failed", "error": why}),
                    );
                    errors.push(Some(why.clone()));
                }
                ReloadOutcome::Reloaded => {
                    tracing::info!(plugin = %spec.name, sha256 = %next[i].sha256, "plugin reloaded");
                    crate::events::record(
                        crate::events::Kind::Plugin,
                        format!("plugin {} reloaded", spec.name),
                        serde_json::json!({"plugin": spec.name, "outcome": "reloaded",
                                           "sha256": next[i].sha256}),
                    );
                    errors.push(None);
                }
                ReloadOutcome::Unchanged => errors.push(None),
            }
            outcomes.push((spec.name.clone(), outcome));
        }
        if changed {
            self.current.store(Arc::new(ChainState::new(next)));
        }
        *self.reload_errors.lock().unwrap_or_else(|e| e.into_inner()) = errors;
        outcomes
    }
}

impl RoutingPolicy for PluginChain {
    fn wants(&self, class: TrafficClass) -> bool {
        self.inner.current.load().wants[class as usize]
    }

    fn body_prefix_len(&self, class: TrafficClass) -> usize {
        self.inner.current.load().body_prefix_len[class as usize]
    }

    fn decide(&self, request: &RequestFacts<'_>, snapshot: &Snapshot) -> Decision {
        let state = self.inner.current.load();
        let mut add_headers = Vec::new();
        for plugin in state.plugins.iter().filter(|p| p.wants(request.class)) {
            match plugin.call(request, snapshot) {
                Ok(decision) => {
                    add_headers.extend(decision.add_headers);
                    if decision.route != Route::Default {
                        return Decision {
                            route: decision.route,
                            add_headers,
                        };
                    }
                }
                Err(_) if plugin.on_error == OnError::Fallback => {}
                Err(failure) => {
                    return Decision {
                        route: Route::Reject {
                            status: StatusCode::SERVICE_UNAVAILABLE,
                            message: format!(
                                "routing plugin '{}' failed ({})\n",
                                plugin.name,
                                failure.kind.as_str()
                            ),
                        },
                        add_headers: Vec::new(),
                    };
                }
            }
        }
        Decision {
            route: Route::Default,
            add_headers,
        }
    }
}

impl PluginControl for PluginChain {
    fn status(&self) -> serde_json::Value {
        let state = self.inner.current.load();
        let errors = self
            .inner
            .reload_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let plugins: Vec<serde_json::Value> = state
            .plugins
            .iter()
            .zip(&self.inner.specs)
            .zip(errors)
            .map(|((plugin, spec), reload_error)| {
                let classes: Vec<&str> = TrafficClass::ALL
                    .iter()
                    .filter(|c| plugin.wants(**c))
                    .map(|c| c.as_str())
                    .collect();
                let loaded_at = plugin
                    .loaded_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                serde_json::json!({
                    "name": spec.name,
                    "path": spec.path.display().to_string(),
                    "sha256": plugin.sha256,
                    "loaded_at_unix": loaded_at,
                    "on_error": spec.on_error,
                    "classes": classes,
                    "body_prefix_len": plugin.body_prefix_len(),
                    "idle_instances": plugin.idle_instances(),
                    "stats": plugin.stats.to_json(),
                    "last_reload_error": reload_error,
                })
            })
            .collect();
        serde_json::Value::Array(plugins)
    }

    fn reload(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = serde_json::Value> + Send + '_>> {
        Box::pin(async move {
            let outcomes = PluginChain::reload(self).await;
            serde_json::Value::Array(
                outcomes
                    .into_iter()
                    .map(|(name, outcome)| match outcome {
                        ReloadOutcome::Unchanged => {
                            serde_json::json!({"name": name, "outcome": "unchanged"})
                        }
                        ReloadOutcome::Reloaded => {
                            serde_json::json!({"name": name, "outcome": "reloaded"})
                        }
                        ReloadOutcome::Failed(error) => {
                            serde_json::json!({"name": name, "outcome": "failed", "error": error})
                        }
                    })
                    .collect(),
            )
        })
    }
}
