//! Helpers for tests that run the engine (the `testing` feature; ztunnel's
//! `test_helpers` are the model): `Harness` runs the engine in-process on free
//! loopback ports from a YAML string, and stops it; `yaml` writes the Istio
//! resources tests would otherwise repeat; `free_ports` picks the ports. Echo
//! backends on port 0 are `crate::echo::EchoServer`.

pub mod harness;
pub mod yaml;

pub use harness::Harness;

/// `n` loopback ports that were free a moment ago. They are held open together
/// while picked, so they differ from each other, and none is handed out twice in
/// one test process: Pingora binds with `SO_REUSEPORT`, so two tests given the
/// same port a moment apart would both bind it and share its connections. Pingora
/// binds its listeners by address (it cannot report the port it got for port 0),
/// hence picking first.
///
/// # Panics
/// If no port can be bound (the test cannot run).
pub fn free_port_list(n: usize) -> Vec<u16> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut held = Vec::new();
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        assert!(held.len() < 10_000, "no fresh loopback port left");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
        let port = listener.local_addr().expect("a bound listener has an address").port();
        if given.insert(port) {
            ports.push(port);
        }
        held.push(listener);
    }
    ports
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
