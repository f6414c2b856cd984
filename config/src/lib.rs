//! Strait's configuration core: the Istio and Kubernetes resource types, loading
//! them from files with positions, validation, translation into an immutable
//! `Snapshot` for one proxy, and request routing over that snapshot.
//!
//! The flow, shared by every role and source:
//! files -> `Bundle` -> `validate` -> `translate(scope)` -> `Snapshot`.
//! This crate does no I/O besides reading the configuration files.

pub mod acme;
pub mod analyze;
pub mod authz;
pub mod bundle;
pub mod claims;
pub mod cluster_policy;
pub mod diag;
pub mod duration;
pub mod ext_authz;
pub mod hosts;
pub mod jwt;
pub mod mesh;
pub mod path;
pub mod policy;
pub mod ratelimit;
pub mod registry;
pub mod resources;
pub mod router;
pub mod server_tls;
pub mod snapshot;
pub mod testing;
pub mod tracing;
pub mod translate;
pub mod validate;
pub mod yaml;

pub use bundle::{load_dir, Bundle, Loaded};
pub use diag::{Code, Diagnostic, Severity};
pub use snapshot::Snapshot;
pub use translate::{translate, Role, Scope};
