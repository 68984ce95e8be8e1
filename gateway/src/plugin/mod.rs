//! Routing plugins: WebAssembly components implementing the `wit/` world,
//! run sandboxed by wasmtime and chained in config order. The proxy sees them
//! only through [`RoutingPolicy`].

mod policy;

pub use policy::{Decision, PluginControl, RequestFacts, Route, RoutingPolicy};
