//! The controller crate's library: what `strait-controller` and `straitctl` share.

pub mod acme;
pub mod admin_client;
pub mod analyze;
pub mod ca;
pub mod controller;
pub mod controller_status;
pub mod folder_source;
pub mod gateway_api_status;
pub mod gateway_deployment;
pub mod http;
pub mod inject;
pub mod istio_status;
pub mod kube_source;
pub mod leader;
pub mod proxy_config;
pub mod proxy_status;
pub mod push;
pub mod store;
pub mod table;
#[cfg(feature = "testing")]
pub mod testing;
pub mod webhook;
pub mod yaml;
