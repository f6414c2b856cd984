//! Strait's engine on Pingora: listeners built from a snapshot, the proxy phases,
//! certificates, admin endpoints and reloads. The edge/egress gateway binary and
//! (later) the sidecar run this same engine with different scopes.

pub mod access_log;
pub mod acme;
pub mod actions;
pub mod admin;
pub mod app;
pub mod authn;
pub mod authz;
pub mod balance;
pub mod certs;
pub mod client_auth;
pub mod client_hello;
pub mod conn;
pub mod context;
pub mod cors;
pub mod dns;
pub mod downstream;
pub mod echo;
pub mod ext_authz;
pub mod flags;
pub mod h2_front;
pub mod header_ops;
pub mod jwks;
pub mod l4;
pub mod memory;
pub mod metrics;
pub mod mirror;
pub mod proxy;
pub mod ratelimit;
pub mod relay_stream;
pub mod reload;
pub mod request_copy;
pub mod reply;
pub mod request;
pub mod retry;
pub mod rfc3339;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls_front;
pub mod trace;
pub mod upstream;
pub mod upstream_client;
pub mod upstream_tls;
pub mod upstreams;
