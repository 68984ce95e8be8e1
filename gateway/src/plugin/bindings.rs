//! The generated side of the `wit/` world `routing-plugin`: the only place
//! `bindgen!` runs, so generated names stay out of the rest of the host.

// Exports are called the async way (see `runtime::drive` for why), imports
// (`host.log`) stay plain functions.
wasmtime::component::bindgen!({
    path: "../wit",
    world: "routing-plugin",
    exports: { default: async },
});

// `self::`: the WIT namespace `kylin-gateway` generates a module named like
// this crate, which is ambiguous wherever the crate is also an extern
// (doctests).

pub use self::kylin_gateway::plugin::host::{
    Host as HostImports, add_to_linker as add_host_to_linker,
};
#[cfg(test)]
pub use self::kylin_gateway::plugin::types::Rejection;
pub use self::kylin_gateway::plugin::types::{LogLevel, Node, NodeLoad, Route, TrafficClass};
