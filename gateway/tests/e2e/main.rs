//! End-to-end tests: the real gateway binary as a process, real echo backends, real
//! TLS, on loopback. Scenarios that need no process of their own run the engine
//! in-process (`tests/engine`).

mod access_log;
mod acme;
mod acme_kube;
mod admin;
mod authz;
mod check;
#[path = "../common/mod.rs"]
mod common;
mod connection_abuse;
mod controller;
mod controller_kube;
mod demo;
mod egress;
mod ext_authz;
mod gateway_api;
mod grpc;
mod h2_floods;
mod jwt;
mod l4;
mod limits;
mod metrics;
mod mirror;
mod mtls;
#[path = "../otlp/mod.rs"]
mod otlp;
mod protocols;
mod ratelimit;
mod reload;
mod resilience;
mod shutdown;
mod sni;
mod support;
mod tracing;
