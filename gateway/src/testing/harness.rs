//! The engine in-process, for tests that need no separate process: `Harness::start`
//! builds a configuration from YAML, starts the engine and the Pingora server that
//! serves it (`server::Gateway`, as the binary does) on free loopback ports (the
//! Gateway's ports, admin, health, metrics), and returns once `/healthz/ready`
//! answers 200, that is once every listener accepts connections. The test talks to
//! it over those ports and reaches the `Engine` to `apply` a new configuration or
//! new endpoints, as a configuration source would.
//!
//! The server runs on a thread of its own until a shutdown signal of the harness's
//! (a watch that `stop` or dropping the harness sets) tells Pingora to stop. `stop`
//! returns once the server's runtimes have ended and its ports refuse connections:
//! Pingora's listeners set SO_REUSEPORT, so a server left running would silently
//! take connections meant for a later test on the same port.
//!
//! It serves as `strait-gateway --namespace default --bind-address 127.0.0.1
//! --threads 2` does (the e2e tests' command line): the ingress gateway's labels,
//! the default mesh config and limits, no folder watched, no ACME.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use strait_config::bundle::{load_text, Loaded};
use strait_config::{Built, Diagnostic, Scope};
use tokio::sync::watch;

use crate::downstream::Limits;
use crate::engine::{Engine, EngineSettings};
use crate::server::{Gateway, Serving};

/// How long `start` waits for readiness, and `stop` for the ports to close.
const WAIT: Duration = Duration::from_secs(30);

/// A running engine with its server, stopped when dropped.
pub struct Harness {
    engine: Arc<Engine>,
    /// Gateway port -> loopback port it is served on.
    ports: BTreeMap<u16, u16>,
    /// The admin port (`/config_dump`, `/clusters`, `/stats`, `/logging`).
    pub admin: u16,
    /// The health port (`/healthz/ready`).
    pub health: u16,
    /// The metrics port (`/stats/prometheus`).
    pub metrics: u16,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    /// The engine's ACME store: empty, but its own, so that no challenge answer is
    /// read from a folder another test writes.
    _acme_store: tempfile::TempDir,
}

/// The scope harnesses run with: Istio's ingress gateway (`app=istio-ingressgateway`,
/// `istio=ingressgateway`) in namespace `default`, with the default mesh config.
pub fn scope() -> Scope {
    strait_config::testing::ingress_scope("default")
}

/// Builds `files` (name, YAML text) for `scope`, as the folder source builds a
/// folder holding them: read in name order, each file's name is where its
/// resources come from (`/config_dump`'s `sources`).
pub fn build_for(scope: &Scope, files: &[(&str, &str)]) -> Result<Built, Vec<Diagnostic>> {
    let mut files = files.to_vec();
    files.sort_by_key(|(name, _)| *name);
    let mut loaded = Loaded::default();
    for (name, text) in files {
        load_text(&mut loaded, name, text);
        loaded.bundle.files.push(name.to_string());
    }
    strait_config::build(&loaded, scope, 0)
}

/// Diagnostics one per line, for a panic message.
fn lines(diagnostics: &[Diagnostic]) -> String {
    diagnostics.iter().map(|d| format!("{d}\n")).collect()
}

impl Harness {
    /// Starts the engine on `files` (name, YAML text) for `scope()`.
    ///
    /// # Panics
    /// If the configuration does not build (with its diagnostics), or the server does
    /// not become ready.
    pub fn start(files: &[(&str, &str)]) -> Harness {
        let built =
            build_for(&scope(), files).unwrap_or_else(|d| panic!("the configuration does not build:\n{}", lines(&d)));
        Harness::start_built(built, scope())
    }

    /// Starts the engine on a configuration already built for `scope`.
    ///
    /// # Panics
    /// If the configuration does not compile, or the server cannot be built or does
    /// not become ready.
    pub fn start_built(built: Built, scope: Scope) -> Harness {
        let acme_store = tempfile::tempdir().expect("a temporary ACME store");
        let settings = EngineSettings {
            jwks_refresh: Duration::from_secs(1200),
            acme_store: acme_store.path().to_path_buf(),
        };
        let engine = Engine::start(built, scope, &settings)
            .unwrap_or_else(|d| panic!("the engine does not start:\n{}", lines(&d)));
        let gateway_ports: Vec<u16> = engine.current().snapshot.listeners.iter().map(|l| l.port).collect();
        let mut picked = crate::testing::free_port_list(gateway_ports.len() + 3);
        let [admin, health, metrics] =
            <[u16; 3]>::try_from(picked.split_off(gateway_ports.len())).expect("three ports for the admin endpoints");
        let ports: BTreeMap<u16, u16> = gateway_ports.into_iter().zip(picked).collect();
        let mesh = &engine.scope.mesh;
        let serving = Serving {
            port_map: ports.iter().map(|(g, p)| (*g, *p)).collect(),
            bind: IpAddr::from([127, 0, 0, 1]),
            admin_port: admin,
            health_port: health,
            metrics_port: metrics,
            drain: Duration::from_secs(10),
            header_timeout_secs: 10,
            threads: 2,
            // Tests run many servers in one process (see `Serving::work_stealing`).
            work_stealing: true,
            limits: Limits {
                normalization: mesh.path_normalization,
                trusted_hops: mesh.num_trusted_proxies,
                ..Limits::default()
            },
            max_requests_per_connection: 1000,
            access_log: None,
            tracing: None,
            capture: Default::default(),
            http1_path: crate::lean_path::Http1Path::from_env(),
        };
        let gateway =
            Gateway::new(engine.clone(), &serving, None).unwrap_or_else(|e| panic!("the server cannot be built: {e}"));
        let (stop, stopped) = watch::channel(false);
        let server = std::thread::Builder::new()
            .name("strait-harness".into())
            .spawn(move || gateway.run_until(Box::new(Stop(stopped))))
            .expect("a thread for the server");
        let harness = Harness {
            engine,
            ports,
            admin,
            health,
            metrics,
            stop,
            server: Some(server),
            _acme_store: acme_store,
        };
        harness.wait_ready();
        harness
    }

    /// Waits until the health port says every listener accepts connections.
    fn wait_ready(&self) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.server.as_ref().is_none_or(|s| s.is_finished()) {
                panic!("the server stopped before it was ready");
            }
            if ready(self.health) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the server was not ready within {WAIT:?}");
    }

    /// The engine: its running configuration, and `apply` / `apply_endpoints`.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Builds `files` (name, YAML text) for this engine's scope, for `apply`.
    pub fn build(&self, files: &[(&str, &str)]) -> Result<Built, Vec<Diagnostic>> {
        build_for(&self.engine.scope, files)
    }

    /// The loopback port serving Gateway port `gateway_port`.
    ///
    /// # Panics
    /// If the configuration the engine started with has no listener on that port
    /// (listeners are fixed at start).
    pub fn port(&self, gateway_port: u16) -> u16 {
        match self.ports.get(&gateway_port) {
            Some(p) => *p,
            None => panic!(
                "no listener for Gateway port {gateway_port}; there are {:?}",
                self.ports.keys()
            ),
        }
    }

    /// The loopback port serving Gateway port 80.
    pub fn http(&self) -> u16 {
        self.port(80)
    }

    /// The loopback port serving Gateway port 443.
    pub fn https(&self) -> u16 {
        self.port(443)
    }

    /// Every port the server listens on: the Gateway's, admin, health, metrics.
    pub fn listening(&self) -> Vec<u16> {
        let mut all: Vec<u16> = self.ports.values().copied().collect();
        all.extend([self.admin, self.health, self.metrics]);
        all
    }

    /// Stops the server and waits until its ports refuse connections.
    ///
    /// # Panics
    /// If the server thread panicked, or a port still accepts connections after it
    /// ended.
    pub fn stop(mut self) {
        if let Err(e) = self.shut_down() {
            panic!("{e}");
        }
    }

    /// Tells the server to stop, waits for its thread, then for its ports to close.
    fn shut_down(&mut self) -> Result<(), String> {
        let Some(server) = self.server.take() else {
            return Ok(());
        };
        self.stop.send_replace(true);
        if server.join().is_err() {
            return Err("the harness's server thread panicked".into());
        }
        // Pingora's runtimes have ended by now, but a worker may still be closing
        // its listener.
        let deadline = Instant::now() + WAIT;
        loop {
            let open: Vec<u16> = self.listening().into_iter().filter(|p| accepts(*p)).collect();
            if open.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "ports {open:?} still accept connections after the server stopped"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Err(e) = self.shut_down() {
            // A second panic while the test unwinds would abort the whole run.
            if std::thread::panicking() {
                eprintln!("{e}");
            } else {
                panic!("{e}");
            }
        }
    }
}

/// Whether something accepts connections on loopback port `port`.
fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(200)).is_ok()
}

/// Whether `/healthz/ready` on loopback port `port` answers 200.
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(1))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /healthz/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// The harness's shutdown signal for Pingora: a graceful stop once the watch is
/// set (or the harness is gone). The engine's own `shutdown::Drain` reacts to Unix
/// signals, which belong to the whole test process.
struct Stop(watch::Receiver<bool>);

#[async_trait]
impl ShutdownSignalWatch for Stop {
    async fn recv(&self) -> ShutdownSignal {
        let mut stopped = self.0.clone();
        // An error means the sender is gone with its harness: stop as well.
        let _ = stopped.wait_for(|stop| *stop).await;
        ShutdownSignal::GracefulTerminate
    }
}
