//! Strait's configuration core: the Istio and Kubernetes resource types, loading
//! them from files with positions, compilation and validation, translation into an
//! immutable `Snapshot` for one proxy, and request matching over that snapshot.
//!
//! One flow for every role and every source (`pipeline::build`):
//! files -> `Loaded` bundle -> `compile` (every resource checked and compiled once)
//! + `validate` (across resources) -> `translate(scope)` -> `Snapshot`.
//!
//! Layers, each using only those before it (`tests/layering.rs` keeps it so):
//! - leaves: `yaml`, `diag`, `hosts`, `path`, `duration`, `claims`, `ser`;
//! - `resources` (Istio and Kubernetes types) and `bundle` (loading them);
//! - the model, what snapshots are made of and the pure readers the request path
//!   uses: `snapshot`, `router`, `authz`, `jwt`, `ratelimit`, `ext_authz`,
//!   `tracing`, `acme`, `mesh`, `scope`;
//! - `registry` (services and endpoints of a bundle) and `compile`;
//! - `translate`, `validate`, `analyze`;
//! - `pipeline`.
//!
//! This crate does no I/O besides reading the configuration files.

pub mod acme;
pub mod analyze;
pub mod authz;
pub mod bundle;
pub mod claims;
pub mod compile;
pub mod diag;
pub mod duration;
pub mod ext_authz;
pub mod hosts;
pub mod jwt;
pub mod mesh;
pub mod path;
pub mod pipeline;
pub mod ratelimit;
pub mod registry;
pub mod resources;
pub mod router;
pub mod scope;
pub mod ser;
pub mod snapshot;
pub mod testing;
pub mod tracing;
pub mod translate;
pub mod validate;
pub mod yaml;

pub use bundle::{load_dir, Bundle, Loaded};
pub use diag::{Anchor, Code, Diagnostic, Severity};
pub use pipeline::{build, Built};
pub use scope::{Role, Scope, Workload};
pub use snapshot::Snapshot;
