//! Shared helpers: process guards, readiness polling, the gateway binary,
//! HTTP clients and backends.

pub mod backend;
pub mod certs;
pub mod cluster;
pub mod curator;
pub mod eventually;
pub mod failover;
pub mod fleet;
pub mod gateway;
pub mod http;
pub mod output;
pub mod plugins;
pub mod process;
pub mod relay;
pub mod sim;
pub mod watchers;
pub mod zookeeper;

pub use eventually::{eventually, eventually_async};
pub use process::{ChildGuard, RefusingPort, free_port, run_with_deadline, target_bin};
