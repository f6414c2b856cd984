//! The sidecar's capture listeners, where the pod's iptables rules send its traffic:
//! outbound (15001), what the application calls, and inbound (15006), what reaches
//! the application. Each connection is dispatched by its original destination
//! (SO_ORIGINAL_DST).
//!
//! - Outbound: the snapshot's listener for the destination port (and address, for
//!   TCP services sharing a port) decides: HTTP goes through the request path,
//!   routed by Host among the services of that port; TCP is spliced to the route's
//!   destination; a port no service declares goes to the original destination
//!   (ALLOW_ANY) or nowhere (REGISTRY_ONLY). Upstreams that speak the mesh's mTLS
//!   get it from the request path's upstream client (`upstream_client::peer`).
//! - Inbound: the workload's PeerAuthentication mode for the destination port
//!   decides what is accepted: mTLS (the client's certificate must chain to the
//!   mesh's roots; its SPIFFE identity is the connection's principal for
//!   AuthorizationPolicy), plaintext, or both, told apart by the first byte. HTTP
//!   then goes through the request path with the workload's policy; a connection
//!   whose client asked for ALPN `istio` (the mesh's TCP) is spliced to the workload.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::connectors::TransportConnector;
use pingora::listeners::tls::{Acceptor, TlsSettings};
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use strait_config::mesh::OutboundMode;
use strait_config::snapshot::{L4Route, PeerMode, Protocol, WeightedCluster};
use strait_config::translate::{BLACKHOLE, INBOUND, PASSTHROUGH};

use crate::app::EdgeApp;
use crate::client_auth::TlsInfo;
use crate::engine::{ConnectionGuard, Engine};
use crate::l4::{self, Target};
use crate::relay_stream::RelayStream;
use crate::upstream_client::MESH_TCP_ALPN;

/// How long a client may take to send its first bytes (or finish its handshake).
const FIRST_BYTES: Duration = Duration::from_secs(10);

/// The outbound capture listener.
pub struct Outbound {
    /// The HTTP request path for captured HTTP connections (its proxy picks the
    /// listener by the original destination's port).
    pub http: Arc<EdgeApp>,
    /// Engine state.
    pub shared: Arc<Engine>,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Connects TCP upstreams.
    pub connector: TransportConnector,
    /// The ports of the proxy itself: a connection to one of them was not
    /// redirected, and is refused rather than looped.
    pub own_ports: Vec<u16>,
}

/// The original destination of a captured connection.
fn original_destination(stream: &Stream) -> Option<SocketAddr> {
    stream
        .get_socket_digest()
        .and_then(|d| d.original_dst().and_then(|a| a.as_inet().copied()))
}

/// A route sending everything to the special cluster `name`, if the snapshot has it.
fn special_route(runtime: &crate::runtime::Runtime, name: &str) -> Option<L4Route> {
    let cluster = runtime.snapshot.clusters.iter().position(|c| c.name == name)?;
    Some(L4Route {
        source: name.to_string(),
        sni_hosts: Vec::new(),
        destinations: vec![WeightedCluster {
            cluster,
            weight: 100,
            request_headers: Default::default(),
            response_headers: Default::default(),
        }],
        total_weight: 100,
    })
}

#[async_trait]
impl ServerApp for Outbound {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let original = original_destination(&stream)?;
        let local = stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet().copied()));
        if local == Some(original) || (original.ip().is_loopback() && self.own_ports.contains(&original.port())) {
            log::debug!("outbound: connection to {original} was not redirected; closed");
            return None;
        }
        let runtime = self.shared.current();
        let listeners = &runtime.snapshot.listeners;
        let listener = listeners
            .iter()
            .find(|l| l.port == original.port() && l.address == Some(original.ip()))
            .or_else(|| {
                listeners
                    .iter()
                    .find(|l| l.port == original.port() && l.address.is_none() && l.mtls.is_none())
            });
        let fallback = || {
            let name = if self.shared.scope.mesh.outbound == OutboundMode::RegistryOnly {
                BLACKHOLE
            } else {
                PASSTHROUGH
            };
            special_route(&runtime, name)
        };
        match listener.map(|l| l.protocol) {
            Some(Protocol::Http) => {
                let mut first = [0u8; 1];
                match tokio::time::timeout(FIRST_BYTES, stream.try_peek(&mut first)).await {
                    Ok(Ok(true)) => {}
                    _ => return None,
                }
                if first[0] != 0x16 {
                    return self.http.process_new(stream, shutdown).await;
                }
                // The application speaks TLS itself (HTTPS on a port declared HTTP):
                // its bytes go where it was going, unopened.
                let route = fallback()?;
                self.splice(&runtime, stream, &route, original).await;
            }
            Some(_) => {
                let route = listener.and_then(|l| l.l4_routes.first())?;
                let _open = ConnectionGuard::new(&self.shared);
                self.splice(&runtime, stream, route, original).await;
            }
            None => {
                let route = fallback()?;
                let _open = ConnectionGuard::new(&self.shared);
                self.splice(&runtime, stream, &route, original).await;
            }
        }
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(self.http.as_ref()).await;
    }
}

impl Outbound {
    async fn splice(&self, runtime: &crate::runtime::Runtime, stream: Stream, route: &L4Route, original: SocketAddr) {
        let to = Target {
            route,
            original: Some(original),
            connect_timeout: self.connect_timeout,
            peer: None,
        };
        l4::relay(&self.shared, &self.connector, runtime, stream, &to).await;
    }
}

/// The inbound capture listener.
pub struct Inbound {
    /// The HTTP request path with the workload's policy.
    pub http: Arc<EdgeApp>,
    /// Engine state.
    pub shared: Arc<Engine>,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Connects to the workload.
    pub connector: TransportConnector,
    /// The mTLS acceptor, rebuilt when the identity changes.
    acceptor: Mutex<Option<(u64, Arc<Acceptor>)>>,
}

impl Inbound {
    /// The inbound listener serving HTTP through `http`.
    pub fn new(http: Arc<EdgeApp>, shared: Arc<Engine>, connect_timeout: Duration) -> Inbound {
        Inbound {
            http,
            shared,
            connect_timeout,
            connector: TransportConnector::new(None),
            acceptor: Mutex::new(None),
        }
    }

    /// The acceptor of the current identity: its certificate, and clients verified
    /// against the mesh's roots. None before the proxy has an identity.
    fn acceptor(&self) -> Option<Arc<Acceptor>> {
        let generation = self.shared.identity.generation();
        let mut cached = self.acceptor.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((g, a)) = cached.as_ref() {
            if *g == generation {
                return Some(a.clone());
            }
        }
        let cert = self.shared.identity.current()?;
        let mut roots = rustls::RootCertStore::empty();
        for root in &cert.roots {
            if let Err(e) = roots.add(root.clone()) {
                log::warn!("mesh root certificate refused: {e}");
            }
        }
        let verifier = match WebPkiClientVerifier::builder(Arc::new(roots)).build() {
            Ok(v) => v,
            Err(e) => {
                log::warn!("mesh roots: {e}");
                return None;
            }
        };
        let resolver = Arc::new(MeshCert(cert.server.clone()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .ok()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), MESH_TCP_ALPN.to_vec()];
        // Pingora's settings carry the callback that records the peer's identity;
        // the rustls acceptor is ours, for the ALPN list Pingora cannot express.
        let info = PeerInfo {
            by: cert.spiffe_id.clone(),
        };
        let mut settings = TlsSettings::with_callbacks(Box::new(info)).ok()?;
        settings.set_cert_resolver(resolver);
        let mut acceptor = settings.build();
        acceptor.acceptor = pingora::tls::TlsAcceptor::from(Arc::new(config));
        let acceptor = Arc::new(acceptor);
        *cached = Some((generation, acceptor.clone()));
        Some(acceptor)
    }
}

#[async_trait]
impl ServerApp for Inbound {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let original = original_destination(&stream)?;
        let runtime = self.shared.current();
        let listener = runtime.snapshot.listeners.iter().find(|l| l.mtls.is_some())?;
        let mode = listener
            .mtls
            .as_ref()
            .map_or(PeerMode::Permissive, |m| m.mode_for(original.port()));
        let mut first = [0u8; 1];
        match tokio::time::timeout(FIRST_BYTES, stream.try_peek(&mut first)).await {
            Ok(Ok(true)) => {}
            _ => return None,
        }
        let tls = first[0] == 0x16;
        let terminate = match (mode, tls) {
            (PeerMode::Disable, _) => false,
            (PeerMode::Strict, false) => {
                log::info!(
                    "inbound: plaintext connection to port {} refused (STRICT mTLS)",
                    original.port()
                );
                return None;
            }
            (_, tls) => tls,
        };
        if terminate {
            let acceptor = match self.acceptor() {
                Some(a) => a,
                None => {
                    log::warn!(
                        "inbound: mTLS connection to port {} before the proxy has an identity",
                        original.port()
                    );
                    return None;
                }
            };
            let handshake = acceptor.tls_handshake(RelayStream::plain(stream));
            stream = match tokio::time::timeout(FIRST_BYTES, handshake).await {
                Ok(Ok(tls)) => Box::new(RelayStream::flush_on_idle_read(Box::new(tls))),
                Ok(Err(e)) => {
                    log::info!("inbound: mTLS handshake for port {} failed: {e}", original.port());
                    return None;
                }
                Err(_) => return None,
            };
            let mesh_tcp =
                matches!(stream.selected_alpn_proto(), Some(ALPN::Custom(c)) if c.protocol() == MESH_TCP_ALPN);
            if !mesh_tcp {
                return self.http.process_new(stream, shutdown).await;
            }
        } else if looks_like_http(first[0]) {
            return self.http.process_new(stream, shutdown).await;
        }
        let route = special_route(&runtime, INBOUND)?;
        let _open = ConnectionGuard::new(&self.shared);
        let peer = stream.get_ssl_digest().and_then(|d| {
            d.extension
                .get::<TlsInfo>()
                .and_then(|i| i.peer.as_ref())
                .map(|p| p.principal.clone())
        });
        if !tcp_allowed(&runtime, listener, &stream, peer.as_deref(), original.port()) {
            return None;
        }
        let to = Target {
            route: &route,
            original: Some(original),
            connect_timeout: self.connect_timeout,
            peer,
        };
        l4::relay(&self.shared, &self.connector, &runtime, stream, &to).await;
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(self.http.as_ref()).await;
    }
}

/// The workload's AuthorizationPolicy for a TCP connection: its connection's facts
/// only (peer principal and address, port). As for Istio's TCP policies, a rule
/// that needs HTTP attributes (methods, paths, hosts, JWTs) never matches a TCP
/// connection: an ALLOW rule of that kind lets nothing through.
fn tcp_allowed(
    runtime: &crate::runtime::Runtime,
    listener: &strait_config::snapshot::Listener,
    stream: &Stream,
    peer: Option<&str>,
    port: u16,
) -> bool {
    let Some(policy) = runtime.snapshot.policy(listener).filter(|p| !p.authz.is_empty()) else {
        return true;
    };
    let source_ip = stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet().map(|a| a.ip())));
    let headers = http::HeaderMap::new();
    let request = strait_config::authz::Request {
        host: "",
        port,
        method: "",
        path: "",
        headers: &headers,
        source_ip,
        remote_ip: source_ip,
        sni: None,
        peer,
        auth: None,
    };
    match policy
        .authz
        .decide(&request, |p| log::info!("AUDIT {p}: TCP connection from {source_ip:?}"))
    {
        strait_config::authz::Decision::Allow => true,
        strait_config::authz::Decision::Deny(by) => {
            log::info!("inbound: TCP connection from {source_ip:?} to port {port} denied by {by}");
            false
        }
    }
}

/// Whether a plaintext connection whose first byte is `first` is HTTP: every
/// HTTP/1 method and HTTP/2's preface start with an uppercase letter, which the
/// common binary protocols do not. (A peek of more would wait for bytes a short
/// client message may never send.)
fn looks_like_http(first: u8) -> bool {
    first.is_ascii_uppercase()
}

/// The workload's certificate, for every handshake of one acceptor.
#[derive(Debug)]
struct MeshCert(Arc<CertifiedKey>);

impl ResolvesServerCert for MeshCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Records the verified client's identity as the connection's `TlsInfo`.
#[derive(Debug)]
struct PeerInfo {
    /// The proxy's own SPIFFE ID, the `By=` of the application's
    /// `x-forwarded-client-cert` (as Istio's sidecars write it).
    by: String,
}

#[async_trait]
impl TlsAccept for PeerInfo {
    async fn handshake_complete_callback(&self, tls: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        let peer = tls
            .peer_cert_chain_der()
            .and_then(|chain| chain.first())
            .and_then(|leaf| crate::client_auth::peer_identity(leaf, &self.by));
        Some(Arc::new(TlsInfo {
            sni: tls.server_name().map(str::to_ascii_lowercase),
            peer,
            refused: None,
        }))
    }
}
