//! Routing plugins: WebAssembly components implementing the `wit/` world,
//! run sandboxed by wasmtime and chained in config order. The proxy sees them
//! only through [`RoutingPolicy`].

mod bindings;
mod chain;
mod check;
mod host;
mod limits;
mod policy;
mod reload;
mod runtime;

pub use chain::{PluginChain, PluginLoadError, PluginRecord, ReloadOutcome};
pub use check::{CheckReport, check, sample_snapshot};
pub use limits::MemoryBounds;
pub use policy::{Decision, PluginControl, RequestFacts, RequestTime, Route, RoutingPolicy};
pub use reload::{FileWatch, reload_on_sighup, watch_files};
pub use runtime::{
    CallFailure, FailureKind, LoadError, LoadedPlugin, PluginStats, Runtime, RuntimeOptions,
};

#[cfg(test)]
mod tests;
