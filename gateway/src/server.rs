//! Assembles the Pingora server for the gateway role, in two steps: `Gateway::new`
//! serves an engine (one listener per Gateway port, the admin, health and metrics
//! endpoints, the JWKS fetcher), whatever feeds it; `build` starts the engine from
//! the configuration folder and adds the folder source and ACME. `Gateway::run`
//! serves until a signal ends it through Pingora's graceful path (`shutdown`);
//! `Gateway::run_until` takes another shutdown signal (the in-process test harness).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownSignalWatch;
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use strait_config::snapshot::Protocol;
use strait_config::{Diagnostic, Scope};

use crate::acme::AcmeManager;
use crate::admin::{AdminApp, Endpoints};
use crate::app::EdgeApp;
use crate::downstream::Limits;
use crate::engine::{Engine, EngineSettings};
use crate::jwks::JwksFetcher;
use crate::l4::L4App;
use crate::lean_path::{Http1Path, LeanPath, LeanUpstreams};
use crate::shutdown::Drain;
use crate::sources::folder::{self, FolderSource};
use crate::tls_front::TlsFront;
use crate::tls_front::{HandshakeInfo, SniResolver};

/// How to run the gateway from a configuration folder.
#[derive(Debug, Clone)]
pub struct Options {
    /// Config folder.
    pub config_dir: PathBuf,
    /// Where ACME keeps certificates (read with the configuration), accounts and
    /// challenge answers.
    pub acme_store: PathBuf,
    /// Who this proxy is.
    pub scope: Scope,
    /// Time between fetches of a remote JWKS.
    pub jwks_refresh: Duration,
    /// ACME issuers from the mesh config.
    pub acme_issuers: Vec<strait_config::acme::Issuer>,
    /// How often ACME certificates are looked at.
    pub acme_check: Duration,
    /// How the engine is served.
    pub serving: Serving,
}

/// How an engine is served: where its listeners bind, its admin ports, the limits
/// on clients, and what it writes (access log, spans).
#[derive(Debug, Clone)]
pub struct Serving {
    /// Gateway port -> port actually bound.
    pub port_map: HashMap<u16, u16>,
    /// Address listeners bind to.
    pub bind: IpAddr,
    /// Admin port (0 = off).
    pub admin_port: u16,
    /// Health port (0 = off).
    pub health_port: u16,
    /// Metrics port (0 = off).
    pub metrics_port: u16,
    /// Longest wait for in-flight requests on SIGTERM.
    pub drain: Duration,
    /// Request header (and keep-alive idle) timeout, whole seconds.
    pub header_timeout_secs: u64,
    /// Worker threads per listener.
    pub threads: usize,
    /// Request limits.
    pub limits: Limits,
    /// Requests one client connection may carry (0: no limit).
    pub max_requests_per_connection: u32,
    /// Access log file and encoding (None: off).
    pub access_log: Option<(String, crate::access_log::Encoding)>,
    /// Tracing from the mesh config (None: off).
    pub tracing: Option<strait_config::tracing::Tracing>,
    /// A sidecar's capture ports: outbound and inbound (Istio's 15001 and 15006).
    pub capture: CapturePorts,
    /// The path of HTTP/1 requests.
    pub http1_path: Http1Path,
    /// Whether each listener's workers share one work-stealing runtime (Pingora's
    /// default) rather than each running its own single-threaded one. Single-threaded
    /// runtimes cost about 1,100 fewer instructions a request, but only one server
    /// may ever run in the process: Pingora finds a worker's runtime through a
    /// thread-local that a later server's threads can inherit from an earlier
    /// server's, whose runtimes are gone. The binaries run one server; the
    /// in-process test harness runs many.
    pub work_stealing: bool,
}

/// Where a sidecar's iptables rules send the pod's traffic.
#[derive(Debug, Clone, Copy)]
pub struct CapturePorts {
    /// What the application calls.
    pub outbound: u16,
    /// What reaches the application.
    pub inbound: u16,
}

impl Default for CapturePorts {
    fn default() -> Self {
        CapturePorts {
            outbound: 15001,
            inbound: strait_config::translate::INBOUND_PORT,
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The initial configuration is invalid.
    #[error("the configuration in {dir} is invalid")]
    Config {
        /// The folder.
        dir: PathBuf,
        /// What is wrong.
        diagnostics: Vec<Diagnostic>,
    },
    /// Tracing could not be set up.
    #[error("tracing: {0}")]
    Tracing(String),
    /// The access log could not be opened.
    #[error("access log {path}: {source}")]
    AccessLog {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Pingora refused a listener's settings.
    #[error("listener on port {port}: {message}")]
    Listener {
        /// Port.
        port: u16,
        /// Why.
        message: String,
    },
}

/// HTTP/2 settings: Pingora's bounded defaults, with the header list sized so that
/// our own limits (431) apply first; HPACK counts 32 bytes per header beyond name
/// and value.
fn h2_options(limits: &Limits) -> pingora::protocols::http::v2::server::H2Options {
    let mut o = pingora::protocols::http::v2::server::default_h2_options();
    let list = limits.max_header_bytes + 32 * (limits.max_headers + 1);
    o.max_header_list_size(u32::try_from(list).unwrap_or(u32::MAX));
    o.max_concurrent_streams(100);
    // Envoy's edge best practice: small stream windows bound what one client can
    // make the gateway buffer.
    o.initial_window_size(64 * 1024);
    o.initial_connection_window_size(1024 * 1024);
    o
}

/// The gateway's names in spans, as Istio gives them.
fn identity(scope: &Scope) -> crate::trace::Identity {
    let app = crate::metrics::workload_name(scope)
        .unwrap_or("strait-gateway")
        .to_string();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let ns = scope.namespace().to_string();
    crate::trace::Identity {
        service_name: format!("{app}.{ns}"),
        node_id: format!("router~~{}.{ns}~{ns}.svc.cluster.local", host.trim()),
        zone: String::new(),
        mesh_id: "cluster.local".into(),
        namespace: ns,
        canonical_service: app,
        canonical_revision: scope
            .labels()
            .get("version")
            .cloned()
            .unwrap_or_else(|| "latest".into()),
        cluster_id: "Kubernetes".into(),
    }
}

/// An endpoint of the tracing provider's service, from the running configuration
/// (None when the registry does not define it: then its host is resolved by DNS).
fn collector_address(engine: Arc<Engine>) -> Arc<dyn Fn() -> Option<SocketAddr> + Send + Sync> {
    Arc::new(move || {
        let runtime = engine.current();
        let endpoints = &runtime.cluster_endpoints(runtime.snapshot.tracing_cluster?)?.endpoints;
        let endpoint = endpoints.get(fastrand::usize(..endpoints.len().max(1)))?;
        // A DNS endpoint (ServiceEntry resolution DNS) is resolved by the connector.
        endpoint.hostname.is_none().then_some(endpoint.address)
    })
}

/// A gateway ready to run.
pub struct Gateway {
    server: Server,
    /// The engine it serves with.
    pub engine: Arc<Engine>,
    /// Where the listeners for the Gateway ports accept connections (loopback for
    /// listeners on every address), in the order of the snapshot's listeners.
    pub listening: Vec<SocketAddr>,
    drain: Duration,
    spans: Option<crate::trace::Exporting>,
}

impl Gateway {
    /// The server for `engine`: a listener per Gateway port of its configuration,
    /// the admin, health and metrics ports, and the JWKS fetcher. Whatever feeds the
    /// engine more configuration is added with `add_background`; `config_dir` is
    /// only shown by `/config_dump`.
    pub fn new(engine: Arc<Engine>, serving: &Serving, config_dir: Option<&Path>) -> Result<Gateway, StartError> {
        if let Some((path, encoding)) = &serving.access_log {
            let log = crate::access_log::AccessLog::open(path, *encoding).map_err(|source| StartError::AccessLog {
                path: path.clone(),
                source,
            })?;
            let _ = engine.access_log.set(log);
        }
        let mut spans = None;
        if let Some(tracing) = &serving.tracing {
            let (tracer, task) = crate::trace::Tracer::new(crate::trace::Settings {
                tracing: tracing.clone(),
                identity: identity(&engine.scope),
                kind: crate::trace::GATEWAY_SPAN_KIND,
                queue: Default::default(),
                collector: crate::trace::CollectorAddress(Some(collector_address(engine.clone()))),
            })
            .map_err(|e| StartError::Tracing(e.to_string()))?;
            spans = Some(task.spawn_stoppable().map_err(|e| StartError::Tracing(e.to_string()))?);
            let _ = engine.tracer.set(tracer);
        }
        let conf = ServerConf {
            threads: serving.threads.max(1),
            // `Drain` has waited for the requests in flight before Pingora's graceful
            // stop begins: its fixed grace period has nothing left to wait for.
            grace_period_seconds: Some(0),
            graceful_shutdown_timeout_seconds: Some(1),
            work_stealing: serving.work_stealing,
            // Timeouts of a second or more on tokio's timer rather than Pingora's,
            // whose clock thread wakes every 10 ms, idle or not: an idle gateway
            // or sidecar then wakes less than once a second instead of 100 times
            // (and uses about 0.05 ms of CPU a second instead of 3 on the
            // benchmark's VM). A timeout under a second still starts that thread.
            fast_timeout_to_tokio_threshold_seconds: Some(0),
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();
        let conf = server.configuration.clone();

        let lean = (serving.http1_path == Http1Path::Lean).then(|| LeanUpstreams::new(&conf));
        let mut bound_addresses = Vec::new();
        if engine.scope.role == strait_config::Role::Sidecar {
            bound_addresses = add_capture_listeners(&mut server, &conf, &engine, serving, lean.as_ref());
        } else {
            add_gateway_listeners(
                &mut server,
                &conf,
                &engine,
                serving,
                lean.as_ref(),
                &mut bound_addresses,
            )?;
        }
        // Ready means the admin and metrics ports answer too: Pingora binds each
        // service's listener on its own thread, the health port's maybe first.
        let probe = probe_address(serving.bind);
        let mut ready_on = bound_addresses.clone();
        ready_on.extend(
            [serving.admin_port, serving.metrics_port]
                .into_iter()
                .filter(|p| *p != 0)
                .map(|p| SocketAddr::new(probe, p)),
        );
        for (port, endpoints) in [
            (serving.admin_port, Endpoints::Admin),
            (serving.health_port, Endpoints::Health),
            (serving.metrics_port, Endpoints::Metrics),
        ] {
            if port == 0 {
                continue;
            }
            let app = AdminApp {
                shared: engine.clone(),
                endpoints,
                config_dir: config_dir.map(|d| d.display().to_string()),
                listeners: crate::admin::Listening::new(ready_on.clone()),
            };
            let mut service = Service::new(
                format!("{endpoints:?} :{port}"),
                pingora::apps::http_app::HttpServer::new_app(app),
            );
            service.add_tcp(&SocketAddr::new(serving.bind, port).to_string());
            server.add_service(service);
        }
        server.add_service(background_service(
            "jwks fetcher",
            JwksFetcher {
                store: engine.jwks.clone(),
            },
        ));
        Ok(Gateway {
            server,
            engine,
            listening: bound_addresses,
            drain: serving.drain,
            spans,
        })
    }

    /// Adds a service that runs beside the listeners until shutdown (a configuration
    /// source, ACME).
    pub fn add_background<S: BackgroundService + Send + Sync + 'static>(&mut self, name: &str, service: S) {
        self.server.add_service(background_service(name, service));
    }

    /// Takes the workload certificate from `dir` (Istio's file-mounted layout) now,
    /// and again whenever it is rotated there. A missing or bad one is logged: the
    /// proxy serves without (a sidecar is not ready) until the files are there.
    pub fn identity_from_files(&mut self, dir: &Path) {
        let files = crate::identity::IdentityFiles {
            identity: self.engine.identity.clone(),
            dir: dir.to_path_buf(),
            every: Duration::from_secs(5),
        };
        if let Err(e) = files.load() {
            log::warn!("workload certificate in {}: {e}", dir.display());
        }
        self.add_background("workload certificate files", files);
    }

    /// Takes the workload certificate for `spiffe_id` from the CA of the controller
    /// `client` follows over TLS, with the service account token in `token_file`,
    /// and renews it at half life. A client without TLS has no CA: nothing is done.
    pub fn identity_from_ca(
        &mut self,
        client: &crate::sources::controller::Client,
        spiffe_id: String,
        token_file: &Path,
        ttl: Duration,
    ) {
        let Some(tls) = &client.tls else { return };
        let ca = crate::identity::CaIdentity {
            identity: self.engine.identity.clone(),
            address: crate::sources::controller::host_port(&client.address).to_string(),
            root_pem: tls.root_pem.clone(),
            server_name: tls.server_name.clone(),
            spiffe_id,
            token_file: token_file.to_path_buf(),
            ttl,
        };
        self.add_background("workload certificate from the CA", ca);
    }

    /// Serves until a signal ends it: SIGTERM drains first (see `shutdown`), SIGINT
    /// stops at once. Then the access log and the span queue are flushed.
    pub fn run(self) {
        let signal = Box::new(Drain {
            engine: self.engine.clone(),
            max: self.drain,
        });
        self.run_until(signal);
    }

    /// Serves until `shutdown_signal` answers, then stops as Pingora is told and
    /// flushes the access log and the span queue. Returns once the listeners' and
    /// services' runtimes have ended (up to a second after a graceful stop).
    pub fn run_until(self, shutdown_signal: Box<dyn ShutdownSignalWatch>) {
        self.server.run(pingora::server::RunArgs { shutdown_signal });
        if let Some(log) = self.engine.access_log.get() {
            log.flush(Duration::from_secs(2));
        }
        if let Some(spans) = self.spans {
            spans.finish(Duration::from_secs(5));
        }
        log::info!("stopped");
    }
}

/// One listener per port of the Gateway resources that select this gateway.
fn add_gateway_listeners(
    server: &mut Server,
    conf: &Arc<ServerConf>,
    engine: &Arc<Engine>,
    serving: &Serving,
    lean: Option<&LeanUpstreams>,
    bound_addresses: &mut Vec<SocketAddr>,
) -> Result<(), StartError> {
    for listener in &engine.current().snapshot.listeners {
        let port = listener.port;
        let bound = serving.port_map.get(&port).copied().unwrap_or(port);
        let addr = SocketAddr::new(serving.bind, bound).to_string();
        bound_addresses.push(SocketAddr::new(probe_address(serving.bind), bound));
        if matches!(listener.protocol, Protocol::Tcp | Protocol::TlsPassthrough) {
            let app = L4App {
                shared: engine.clone(),
                port,
                tls: listener.protocol == Protocol::TlsPassthrough,
                connect_timeout: serving.limits.connect_timeout,
                connector: pingora::connectors::TransportConnector::new(None),
            };
            let mut service = Service::new(format!("listener {port}"), app);
            service.add_tcp(&addr);
            log::info!("listener for Gateway port {port} ({:?}) on {addr}", listener.protocol);
            server.add_service(service);
            continue;
        }
        let tls = listener.protocol == Protocol::Https;
        let gateway = crate::proxy::Gateway {
            shared: engine.clone(),
            port,
            tls,
            limits: serving.limits,
            captured: false,
        };
        let mut proxy = pingora::proxy::http_proxy(conf, gateway.clone());
        proxy.h2_options = Some(h2_options(&serving.limits));
        if !tls {
            // h2c with prior knowledge; `EdgeApp` hands only such connections over.
            let mut options = pingora::apps::HttpServerOptions::default();
            options.h2c = true;
            proxy.server_options = Some(options);
        }
        let mut app = EdgeApp {
            lean: lean_path(conf, lean, &gateway),
            proxy: Arc::new(proxy),
            header_timeout_secs: serving.header_timeout_secs,
            tls: None,
            shared: engine.clone(),
            max_requests_per_connection: serving.max_requests_per_connection,
        };
        if tls {
            let handshake = HandshakeInfo {
                shared: engine.clone(),
                port,
            };
            let mut settings = TlsSettings::with_callbacks(Box::new(handshake)).map_err(|e| StartError::Listener {
                port,
                message: e.to_string(),
            })?;
            settings.set_cert_resolver(Arc::new(SniResolver {
                shared: engine.clone(),
                port,
            }));
            settings.enable_h2();
            // The handshake happens in the application, after a look at the ClientHello.
            app.tls = Some(TlsFront::new(settings.build(), engine.clone(), port));
        }
        let mut service = Service::new(format!("listener {port}"), app);
        service.add_tcp(&addr);
        log::info!("listener for Gateway port {port} ({:?}) on {addr}", listener.protocol);
        server.add_service(service);
    }
    Ok(())
}

/// The lean HTTP/1 path of a listener served by `gateway` (None with
/// `--http1-path full`).
fn lean_path(
    conf: &Arc<ServerConf>,
    lean: Option<&LeanUpstreams>,
    gateway: &crate::proxy::Gateway,
) -> Option<LeanPath> {
    lean.map(|upstreams| LeanPath {
        gateway: Arc::new(gateway.clone()),
        upstreams: upstreams.clone(),
        max_retries: conf.max_retries,
    })
}

/// A sidecar's two capture listeners (on every address: the rules redirect to
/// them). Returns where they accept connections.
fn add_capture_listeners(
    server: &mut Server,
    conf: &Arc<ServerConf>,
    engine: &Arc<Engine>,
    serving: &Serving,
    lean: Option<&LeanUpstreams>,
) -> Vec<SocketAddr> {
    let http = |port: u16| {
        let gateway = crate::proxy::Gateway {
            shared: engine.clone(),
            port,
            tls: false,
            limits: serving.limits,
            captured: true,
        };
        let lean = lean_path(conf, lean, &gateway);
        let mut proxy = pingora::proxy::http_proxy(conf, gateway);
        proxy.h2_options = Some(h2_options(&serving.limits));
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2c = true;
        proxy.server_options = Some(options);
        Arc::new(EdgeApp {
            lean,
            proxy: Arc::new(proxy),
            header_timeout_secs: serving.header_timeout_secs,
            tls: None,
            shared: engine.clone(),
            max_requests_per_connection: serving.max_requests_per_connection,
        })
    };
    let ports = serving.capture;
    let outbound = crate::capture::Outbound {
        // Port 0: each request's listener is its original destination's port's.
        http: http(0),
        shared: engine.clone(),
        connect_timeout: serving.limits.connect_timeout,
        connector: pingora::connectors::TransportConnector::new(None),
        own_ports: vec![
            ports.outbound,
            ports.inbound,
            serving.admin_port,
            serving.health_port,
            serving.metrics_port,
        ],
    };
    let inbound = crate::capture::Inbound::new(
        http(strait_config::translate::INBOUND_PORT),
        engine.clone(),
        serving.limits.connect_timeout,
    );
    let mut service = Service::new("outbound capture".to_string(), outbound);
    service.add_tcp(&SocketAddr::new(serving.bind, ports.outbound).to_string());
    server.add_service(service);
    let mut service = Service::new("inbound capture".to_string(), inbound);
    service.add_tcp(&SocketAddr::new(serving.bind, ports.inbound).to_string());
    server.add_service(service);
    log::info!(
        "capture listeners: outbound on {}, inbound on {}",
        ports.outbound,
        ports.inbound
    );
    let local = IpAddr::from([127, 0, 0, 1]);
    vec![
        SocketAddr::new(local, ports.outbound),
        SocketAddr::new(local, ports.inbound),
    ]
}

/// Where readiness checks that a listener bound to `bind` accepts: loopback for
/// every address.
fn probe_address(bind: IpAddr) -> IpAddr {
    if bind.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        bind
    }
}

/// Loads the configuration from the folder and builds the server that serves it,
/// with the folder (and the ACME store) watched for changes and ACME ordering the
/// certificates its issuers cover; `run` it to serve.
pub fn build(opts: &Options) -> Result<Gateway, StartError> {
    let dirs = vec![opts.config_dir.clone(), opts.acme_store.clone()];
    // The store is watched with the configuration: it must exist before the watch.
    if !opts.acme_issuers.is_empty() {
        if let Err(e) = std::fs::create_dir_all(&opts.acme_store) {
            log::warn!("ACME store {}: {e}", opts.acme_store.display());
        }
    }
    let config_error = |diagnostics| StartError::Config {
        dir: opts.config_dir.clone(),
        diagnostics,
    };
    let built = folder::build(&dirs, &opts.scope).map_err(config_error)?;
    let settings = EngineSettings {
        jwks_refresh: opts.jwks_refresh,
        acme_store: opts.acme_store.clone(),
    };
    let engine = Engine::start(built, opts.scope.clone(), &settings).map_err(config_error)?;
    for d in engine.current().warnings.iter() {
        log::warn!("{d}");
    }
    let mut gateway = Gateway::new(engine.clone(), &opts.serving, Some(&opts.config_dir))?;
    gateway.add_background(
        "config folder",
        FolderSource {
            engine: engine.clone(),
            dirs,
            debounce: Duration::from_millis(100),
        },
    );
    // Issuers come from the mesh config, read at start: without any, nothing to order.
    if !opts.acme_issuers.is_empty() {
        gateway.add_background(
            "acme",
            AcmeManager {
                shared: engine,
                issuers: opts.acme_issuers.clone(),
                store: opts.acme_store.clone(),
                every: opts.acme_check,
            },
        );
    }
    Ok(gateway)
}
