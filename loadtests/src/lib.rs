//! The benchmark harness's parts: an open-loop HTTP/1.1 load client, process CPU
//! and memory readings from /proc, the proxies under test, and the report.

pub mod client;
pub mod procstat;
pub mod report;
pub mod targets;
