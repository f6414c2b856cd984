//! The controller crate's library: what `strait-controller` and `straitctl` share.

pub mod admin_client;
pub mod analyze;
pub mod proxy_config;
pub mod proxy_status;
pub mod store;
pub mod table;
pub mod yaml;
