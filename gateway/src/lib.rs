//! kylin-gateway: the front door of an Apache Kylin / KAP cluster.
//!
//! Data flows one way: [`discovery`] → [`view`] snapshot → router
//! ([`classify`], [`plugin`], [`balance`]) → [`proxy`] (with per-project
//! [`quota`]s) → [`upstream`] connections.
//! [`admin`], [`events`], [`access_log`] and metrics observe; [`config`] and [`tls`] set things up;
//! [`fleet`] ties gateways sharing a ZooKeeper together.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod classify;
pub mod config;
pub mod digest;
pub mod discovery;
pub mod events;
pub mod fleet;
pub mod plugin;
pub mod proxy;
pub mod quota;
pub mod text;
pub mod tls;
pub mod triggers;
pub mod upstream;
pub mod view;

/// The error of a connection served or made, whatever its protocol layer
/// (hyper's, rustls', the gateway's own HTTP/1.1 server).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
