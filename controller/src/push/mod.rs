//! The push server: proxies connect over gRPC (`strait_push`'s protocol), say who
//! they are, and are sent their configuration, built from the store's latest state
//! for their scope, then what changes for them. Their answers feed the status
//! (`/debug/proxies`, `straitctl proxy-status --controller`) and the metrics.

pub mod builds;
pub mod digest;
pub mod identity;
pub mod metrics;
pub mod server;
pub mod session;
pub mod status;
