//! The plugins of the config, in order, as one [`RoutingPolicy`]: each is
//! asked in turn (if it wants the request's class) and the first decisive
//! answer wins; headers from every plugin asked are added. The loaded
//! versions live in an `ArcSwap`, so a reload swaps them without a lock on
//! the request path and calls in flight finish on the version they started.
//! File plugins are reloaded from their files; ZooKeeper plugins are
//! installed by the fleet (`crate::fleet`) as versions are published, and
//! are absent (skipped) until their first version is in.

use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::StatusCode;

use super::policy::{Decision, PluginControl, RequestFacts, Route, RoutingPolicy};
use super::runtime::{LoadError, LoadedPlugin, PluginStats, Runtime};
use crate::classify::TrafficClass;
use crate::config::{OnError, PluginSource, PluginSpec};
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
    /// Per spec: why the last reload or install of that plugin failed, if
    /// it did.
    reload_errors: Mutex<Vec<Option<String>>>,
    /// One reload or install at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Bumped whenever a version or a load error changes, for the fleet
    /// record.
    changes: tokio::sync::watch::Sender<u64>,
}

/// One loaded version of every plugin (`None`: a ZooKeeper plugin with no
/// version installed yet), with what the chain as a whole wants.
struct ChainState {
    plugins: Vec<Option<Arc<LoadedPlugin>>>,
    /// Indexed by `TrafficClass as usize`.
    wants: [bool; 3],
    body_prefix_len: [usize; 3],
}

impl ChainState {
    fn new(plugins: Vec<Option<Arc<LoadedPlugin>>>) -> ChainState {
        let mut wants = [false; 3];
        let mut body_prefix_len = [0; 3];
        for class in TrafficClass::ALL {
            for plugin in plugins.iter().flatten().filter(|p| p.wants(class)) {
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
    /// Loads every file plugin of `specs` (ZooKeeper plugins start empty).
    /// Blocking: compiles (or reads the compile cache). Fails on the first
    /// plugin that does not load.
    pub fn load(runtime: Runtime, specs: Vec<PluginSpec>) -> Result<PluginChain, PluginLoadError> {
        let stats: Vec<Arc<PluginStats>> = specs
            .iter()
            .map(|s| Arc::new(PluginStats::new(&s.name)))
            .collect();
        let plugins = specs
            .iter()
            .zip(&stats)
            .map(|(spec, stats)| {
                let Some(path) = spec.path() else {
                    return Ok(None);
                };
                load_file(&runtime, spec, path, stats.clone())
                    .map(|plugin| Some(Arc::new(plugin)))
                    .map_err(|error| PluginLoadError {
                        name: spec.name.clone(),
                        path: spec.origin(),
                        error,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for plugin in plugins.iter().flatten() {
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
                changes: tokio::sync::watch::Sender::new(0),
            }),
        })
    }

    /// Paths of the plugin files, for the file watcher.
    pub fn paths(&self) -> Vec<std::path::PathBuf> {
        self.inner
            .specs
            .iter()
            .filter_map(|s| s.path().map(Path::to_path_buf))
            .collect()
    }

    /// The ZooKeeper plugins, by position in the chain and name.
    pub fn zookeeper_plugins(&self) -> Vec<(usize, String)> {
        self.inner
            .specs
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.source, PluginSource::Zookeeper { .. }))
            .map(|(i, s)| (i, s.name.clone()))
            .collect()
    }

    /// The sha256 of the version running at `index`, if any.
    pub fn running_sha256(&self, index: usize) -> Option<String> {
        let state = self.inner.current.load();
        state.plugins.get(index)?.as_ref().map(|p| p.sha256.clone())
    }

    /// What runs, per plugin: for the fleet record.
    pub fn records(&self) -> Vec<PluginRecord> {
        let state = self.inner.current.load();
        let errors = self.inner.errors();
        self.inner
            .specs
            .iter()
            .zip(&state.plugins)
            .zip(errors)
            .map(|((spec, plugin), error)| PluginRecord {
                name: spec.name.clone(),
                source: match spec.source {
                    PluginSource::File(_) => "file",
                    PluginSource::Zookeeper { .. } => "zookeeper",
                }
                .to_string(),
                sha256: plugin.as_ref().map(|p| p.sha256.clone()),
                error,
            })
            .collect()
    }

    /// Changes whenever a version is swapped in or a load fails.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Records why a published version of the plugin at `index` could not
    /// even be fetched; the running version stays.
    pub fn report_error(&self, index: usize, error: String) {
        tracing::warn!(plugin = %self.inner.specs[index].name, "{error}");
        self.inner.set_error(index, Some(error));
        self.inner.changes.send_modify(|n| *n += 1);
    }

    /// Compiles `bytes` as the plugin at `index` (a ZooKeeper plugin) with
    /// the published `config` (unless this gateway overrides it), off the
    /// runtime's workers, and swaps it in. A version that fails to compile
    /// or init leaves the running one in place; the error shows on
    /// `/admin/plugins` and in the fleet record until a version loads.
    pub async fn install(
        &self,
        index: usize,
        bytes: Vec<u8>,
        config: String,
    ) -> Result<(), String> {
        let _one_at_a_time = self.inner.reloading.lock().await;
        let inner = self.inner.clone();
        let loaded =
            tokio::task::spawn_blocking(move || inner.install_blocking(index, &bytes, config))
                .await
                .unwrap_or_else(|error| Err(format!("install task failed: {error}")));
        self.inner.changes.send_modify(|n| *n += 1);
        loaded
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

/// One plugin as the fleet record shows it: what runs, and why the last
/// new version did not load, if it did not.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PluginRecord {
    pub name: String,
    /// `file` or `zookeeper`.
    pub source: String,
    /// `None`: nothing runs (a ZooKeeper plugin not yet installed).
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn load_file(
    runtime: &Runtime,
    spec: &PluginSpec,
    path: &Path,
    stats: Arc<PluginStats>,
) -> Result<LoadedPlugin, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    runtime.load(spec, &bytes, stats)
}

impl ChainInner {
    fn errors(&self) -> Vec<Option<String>> {
        self.reload_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_error(&self, index: usize, error: Option<String>) {
        self.reload_errors.lock().unwrap_or_else(|e| e.into_inner())[index] = error;
    }

    fn install_blocking(&self, index: usize, bytes: &[u8], config: String) -> Result<(), String> {
        let mut spec = self.specs[index].clone();
        if let PluginSource::Zookeeper {
            local_config: false,
        } = spec.source
        {
            spec.config = config;
        }
        let loading = std::time::Instant::now();
        match self.runtime.load(&spec, bytes, self.stats[index].clone()) {
            Ok(plugin) => {
                let plugin = Arc::new(plugin);
                let load_ms = loading.elapsed().as_millis() as u64;
                let mut next = self.current.load().plugins.clone();
                next[index] = Some(plugin.clone());
                self.current.store(Arc::new(ChainState::new(next)));
                self.set_error(index, None);
                tracing::info!(plugin = %spec.name, sha256 = %plugin.sha256, load_ms, "published plugin version installed");
                crate::events::record(
                    crate::events::Kind::Plugin,
                    format!("plugin {} installed from ZooKeeper", spec.name),
                    serde_json::json!({"plugin": spec.name, "outcome": "installed",
                                       "sha256": plugin.sha256}),
                );
                Ok(())
            }
            Err(error) => {
                let why = error.to_string();
                tracing::warn!(plugin = %spec.name, "published version failed to load, keeping the running one: {why}");
                crate::events::record(
                    crate::events::Kind::Plugin,
                    format!("plugin {} failed to install: {why}", spec.name),
                    serde_json::json!({"plugin": spec.name, "outcome": "failed", "error": why}),
                );
                self.set_error(index, Some(why.clone()));
                Err(why)
            }
        }
    }

    fn reload_blocking(&self) -> Vec<(String, ReloadOutcome)> {
        let current = self.current.load_full();
        let mut next = current.plugins.clone();
        let mut changed = false;
        let mut outcomes = Vec::with_capacity(self.specs.len());
        let mut errors = self.errors();
        for (i, spec) in self.specs.iter().enumerate() {
            // ZooKeeper plugins change when a version is published.
            let Some(path) = spec.path() else {
                outcomes.push((spec.name.clone(), ReloadOutcome::Unchanged));
                continue;
            };
            let running = current.plugins[i].as_ref().map(|p| p.sha256.as_str());
            let outcome = match std::fs::read(path) {
                Err(error) => {
                    ReloadOutcome::Failed(format!("cannot read {}: {error}", path.display()))
                }
                Ok(bytes) if Some(crate::digest::sha256_hex(&bytes).as_str()) == running => {
                    ReloadOutcome::Unchanged
                }
                Ok(bytes) => match self.runtime.load(spec, &bytes, self.stats[i].clone()) {
                    Ok(plugin) => {
                        next[i] = Some(Arc::new(plugin));
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
                    errors[i] = Some(why.clone());
                }
                ReloadOutcome::Reloaded => {
                    let sha256 = next[i].as_ref().map_or("", |p| p.sha256.as_str());
                    tracing::info!(plugin = %spec.name, sha256, "plugin reloaded");
                    crate::events::record(
                        crate::events::Kind::Plugin,
                        format!("plugin {} reloaded", spec.name),
                        serde_json::json!({"plugin": spec.name, "outcome": "reloaded",
                                           "sha256": sha256}),
                    );
                    errors[i] = None;
                }
                ReloadOutcome::Unchanged => errors[i] = None,
            }
            outcomes.push((spec.name.clone(), outcome));
        }
        if changed {
            self.current.store(Arc::new(ChainState::new(next)));
        }
        *self.reload_errors.lock().unwrap_or_else(|e| e.into_inner()) = errors;
        self.changes.send_modify(|n| *n += 1);
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
        for plugin in state
            .plugins
            .iter()
            .flatten()
            .filter(|p| p.wants(request.class))
        {
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
        let errors = self.inner.errors();
        let plugins: Vec<serde_json::Value> = state
            .plugins
            .iter()
            .zip(&self.inner.specs)
            .zip(errors)
            .map(|((plugin, spec), reload_error)| {
                let Some(plugin) = plugin else {
                    return serde_json::json!({
                        "name": spec.name,
                        "source": "zookeeper",
                        "sha256": null,
                        "pending": true,
                        "last_reload_error": reload_error,
                    });
                };
                let classes: Vec<&str> = TrafficClass::ALL
                    .iter()
                    .filter(|c| plugin.wants(**c))
                    .map(|c| c.as_str())
                    .collect();
                let loaded_at = plugin
                    .loaded_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                serde_json::json!({
                    "name": spec.name,
                    "source": if spec.path().is_some() { "file" } else { "zookeeper" },
                    "path": spec.origin(),
                    "sha256": plugin.sha256,
                    "loaded_at_unix": loaded_at.as_secs(),
                    "loaded_at_ms": loaded_at.as_millis() as u64,
                    "on_error": spec.on_error,
                    "classes": classes,
                    "body_prefix_len": plugin.body_prefix_len(),
                    "idle_instances": plugin.idle_instances(),
                    "memory_bounds": self.inner.runtime.memory_bounds().as_str(),
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
