//! Strait's engine on Pingora. The edge/egress gateway binary and (later) the
//! sidecar run this same engine with different scopes.
//!
//! - The engine's state: `engine` (one `apply` for every source, the running
//!   `runtime` swapped atomically, endpoints swapped on their own), `runtime` (what
//!   requests read, compiled before a swap: `certs`, `upstream_tls`, `client_auth`,
//!   `jwks`, `upstreams`), `sources` (where configuration comes from: the folder),
//!   `shutdown`, `server` (the Pingora server for the gateway role).
//! - Connection fronts: `app` (HTTP/1 sessions: `lean_path` over `idle_pool` and
//!   `hop_by_hop` for the routes `route_paths` gives it), `tls_front`, `h2_front`,
//!   `relay_stream` (head deadline, TLS flushes), `l4`, with the per-connection `conn`.
//! - The request path: `proxy` (Pingora's phases as lists of steps) over `context`,
//!   `request`, `reply`, `downstream`, `authz` (`authn`, `ext_authz`), `actions`,
//!   `upstream` (`balance`, `retry`), `mirror` and `telemetry` (`metrics`,
//!   `access_log`, `trace`); every upstream is reached through `upstream_client`.
//! - Beside it: `admin`, `acme`, `dns`, `pem`, `ratelimit`, and `testing` (an
//!   in-process harness, behind the `testing` feature).

pub mod access_log;
pub mod acme;
pub mod actions;
pub mod admin;
pub mod app;
pub mod authn;
pub mod authz;
pub mod balance;
pub mod capture;
pub mod certs;
pub mod client_auth;
pub mod client_hello;
pub mod conn;
pub mod context;
pub mod cors;
pub mod dns;
pub mod downstream;
pub mod echo;
pub mod engine;
pub mod ext_authz;
pub mod flags;
pub mod h2_front;
pub mod header_ops;
pub mod hop_by_hop;
pub mod identity;
pub mod idle_pool;
pub mod jwks;
pub mod l4;
pub mod lean_path;
pub mod memory;
pub mod metrics;
pub mod mirror;
pub mod pem;
pub mod proxy;
pub mod ratelimit;
pub mod relay_stream;
pub mod reply;
pub mod request;
pub mod request_copy;
pub mod retry;
pub mod rfc3339;
pub mod route_paths;
pub mod runtime;
pub mod serve_args;
pub mod server;
pub mod shutdown;
pub mod sources;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls_front;
pub mod trace;
pub mod upstream;
pub mod upstream_client;
pub mod upstream_tls;
pub mod upstreams;
