//! The engine in-process (`strait_gateway::testing::Harness`): started from YAML on
//! free loopback ports in the test's own process, with real echo backends and real
//! TLS. Scenarios here need no process of their own (the binary's signals, folder
//! and command line are tested in `tests/e2e`).

#[path = "../common/mod.rs"]
mod common;
mod harness;
