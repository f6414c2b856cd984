//! End-to-end tests: the real gateway binary, real echo backends, real TLS, on loopback.

mod actions;
mod check;
mod k6;
mod limits;
mod reload;
mod routing;
mod shutdown;
mod sni;
mod support;
