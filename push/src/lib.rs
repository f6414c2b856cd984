//! Strait's push protocol between the controller and its proxies. The reference is
//! `proto/strait/push/v1/push.proto`; `proto` holds the messages and the gRPC client
//! and server generated from it, `endpoints` converts endpoint tables between
//! the config model and their messages, and `parts` sends large messages in parts.

pub mod delta;
pub mod endpoints;
pub mod parts;

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

/// The port the controller serves the push protocol on (plaintext), as Istio's istiod.
pub const DEFAULT_PUSH_PORT: u16 = 15010;
