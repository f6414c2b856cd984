//! Strait's protocols between the controller and its proxies.
//!
//! The push protocol: the reference is `proto/strait/push/v1/push.proto`; `proto`
//! holds the messages and the gRPC client and server generated from it,
//! `endpoints` converts endpoint tables between the config model and their
//! messages, and `parts` sends large messages in parts.
//!
//! The CA protocol, Istio's (`proto/istio/v1/auth/ca.proto`): `ca_proto` holds its
//! generated code, `ca_client` asks a CA for a workload certificate, `csr` makes
//! the key and request, and `tls` makes the TLS channel both protocols use on the
//! controller's TLS port.

pub mod ca_client;
pub mod csr;
pub mod delta;
pub mod endpoints;
pub mod parts;
pub mod tls;

/// The messages, client and server generated from `push.proto`.
#[allow(
    missing_docs,
    unreachable_pub,
    rust_2018_idioms,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used
)]
pub mod proto {
    tonic::include_proto!("strait.push.v1");
}

/// The messages, client and server generated from Istio's `ca.proto`
/// (`istio.v1.auth.IstioCertificateService`).
#[allow(
    missing_docs,
    unreachable_pub,
    rust_2018_idioms,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used
)]
pub mod ca_proto {
    tonic::include_proto!("istio.v1.auth");
}

/// The port the controller serves the push protocol on (plaintext), as Istio's istiod.
pub const DEFAULT_PUSH_PORT: u16 = 15010;

/// The controller's TLS port: the CA and the push protocol, as istiod's 15012.
pub const DEFAULT_SECURE_PORT: u16 = 15012;

/// The audience of the service account tokens workloads send the CA (Istio's).
pub const CA_AUDIENCE: &str = "istio-ca";

/// The name the controller's TLS certificate is for, in `namespace` (a proxy
/// checks it whatever address it dials).
pub fn controller_server_name(namespace: &str) -> String {
    format!("strait-controller.{namespace}.svc")
}
