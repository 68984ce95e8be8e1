//! Test support for kylin-gateway's end-to-end tests: spawning real
//! processes on loopback and cleaning them up, waiting on readiness instead
//! of sleeping, and small HTTP helpers; and the Kylin node simulator behind
//! the `kylin-sim` binary.

pub mod sim;
pub mod support;
