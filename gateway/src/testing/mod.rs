//! Helpers for tests that run the engine (the `testing` feature; ztunnel's
//! `test_helpers` are the model): `Harness` runs the engine in-process on free
//! loopback ports from a YAML string, and stops it; `yaml` writes the Istio
//! resources tests would otherwise repeat; `free_ports` picks the ports. Echo
//! backends on port 0 are `crate::echo::EchoServer`.

pub mod harness;
pub mod yaml;

pub use harness::Harness;

/// `n` loopback ports that were free a moment ago. They are held open together
/// while picked, so they differ from each other. Pingora binds its listeners by
/// address (it cannot report the port it got for port 0), hence picking first.
///
/// # Panics
/// If no port can be bound (the test cannot run).
pub fn free_port_list(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound listener has an address").port())
        .collect()
}

/// `N` loopback ports that were free a moment ago, all different.
///
/// # Panics
/// If no port can be bound (the test cannot run).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let mut out = [0u16; N];
    out.copy_from_slice(&free_port_list(N));
    out
}
