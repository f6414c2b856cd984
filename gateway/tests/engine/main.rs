//! The engine in-process (`strait_gateway::testing::Harness`): started from YAML on
//! free loopback ports in the test's own process, with real echo backends and real
//! TLS. Scenarios here need no process of their own (the binary's signals, folder
//! and command line are tested in `tests/e2e`); some need the engine at hand, such
//! as applying configuration and endpoints while requests flow.

mod actions;
mod apply;
mod balancing;
#[path = "../common/mod.rs"]
mod common;
mod cors;
mod harness;
mod k6;
mod routing;
