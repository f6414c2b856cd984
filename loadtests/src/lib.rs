//! The benchmark harness's parts: an open-loop HTTP/1.1 load client, process CPU
//! and memory readings from /proc, the proxies under test, the report, and for the
//! sidecar benchmark a mesh of pods built from network namespaces.

pub mod client;
pub mod interrupt;
pub mod mesh;
pub mod netns;
pub mod procstat;
pub mod report;
pub mod targets;
