//! TCP and TLS-passthrough listeners (Gateway servers of protocol TCP, and TLS
//! with `mode: PASSTHROUGH`): a connection is routed by the VirtualService's `tcp`
//! or `tls` routes (the latter by the SNI of the ClientHello, which is read without
//! being consumed) and spliced to an endpoint of the chosen destination. A
//! sidecar's captured TCP connections go through `relay` too, with their original
//! destination for the passthrough and inbound clusters, and the mesh's mTLS to
//! endpoints that speak it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::connectors::l4::BindTo;
use pingora::connectors::TransportConnector;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use strait_config::snapshot::{ClusterKind, L4Route};

use crate::client_hello;
use crate::engine::ConnectionGuard;
use crate::engine::Engine;
use crate::flags::Flags;
use crate::runtime::Runtime;
use crate::upstream::INBOUND_PASSTHROUGH_SOURCE;
use crate::upstream_client::{self, PickError};
use crate::upstreams::{ActiveGuard, Outcome};

/// How long a client may take to send its ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one TCP or TLS-passthrough listener.
pub struct L4App {
    /// Engine state.
    pub shared: Arc<Engine>,
    /// The Gateway port.
    pub port: u16,
    /// Route by SNI (TLS passthrough) rather than by port alone.
    pub tls: bool,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Connects to upstreams (TCP, or TLS for the mesh's mTLS).
    pub connector: TransportConnector,
}

#[async_trait]
impl ServerApp for L4App {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, _shutdown: &ShutdownWatch) -> Option<Stream> {
        let _open = ConnectionGuard::new(&self.shared);
        let sni = if self.tls {
            match tokio::time::timeout(HELLO_TIMEOUT, client_hello::peek(&mut stream)).await {
                Ok(Ok(hello)) => hello.and_then(|h| h.sni),
                Ok(Err(e)) => {
                    log::debug!("listener {}: no ClientHello: {e}", self.port);
                    return None;
                }
                Err(_) => return None,
            }
        } else {
            None
        };
        let runtime = self.shared.current();
        let listener = runtime.snapshot.listener(self.port)?;
        let Some(route) = listener.l4_routes.iter().find(|r| r.matches_sni(sni.as_deref())) else {
            log::debug!("listener {}: no route for SNI {sni:?}", self.port);
            return None;
        };
        let to = Target {
            route,
            original: None,
            connect_timeout: self.connect_timeout,
            peer: None,
        };
        relay(&self.shared, &self.connector, &runtime, stream, &to).await;
        None
    }
}

/// Where a TCP connection goes: a route, and for a sidecar's captured connection
/// where its client was going.
pub struct Target<'a> {
    /// The route.
    pub route: &'a L4Route,
    /// The connection's original destination (captured connections).
    pub original: Option<SocketAddr>,
    /// Connect timeout when the cluster has none.
    pub connect_timeout: Duration,
    /// The principal the client's certificate names (a sidecar's inbound mTLS).
    pub peer: Option<String>,
}

/// Splices `stream` to an endpoint of `to`'s route, counting Istio's TCP metrics.
pub async fn relay(
    shared: &Arc<Engine>,
    connector: &TransportConnector,
    runtime: &Runtime,
    mut stream: Stream,
    to: &Target<'_>,
) {
    // The guard counts the connection as active on its endpoint until it ends.
    let Some((mut up, _guard, cluster, endpoint)) = connect(shared, connector, runtime, to).await else {
        return;
    };
    let tcp = runtime.destination(Some(cluster)).and_then(|d| {
        let who = if d.inbound {
            to.peer.as_deref()
        } else {
            endpoint
                .and_then(|i| runtime.cluster_endpoints(cluster)?.endpoints.get(i))
                .and_then(|e| e.workload.as_deref())
        };
        shared.metrics.tcp_open(d, who, Flags::NONE).ok()
    });
    // Bytes are counted when the connection ends (Envoy also reports them while
    // it lasts).
    let (to_upstream, to_client) = match tokio::io::copy_bidirectional(&mut stream, &mut up).await {
        Ok(n) => n,
        Err(e) => {
            log::debug!("TCP connection ended: {e}");
            (0, 0)
        }
    };
    if let Some(t) = tcp {
        t.received.inc_by(to_upstream);
        t.sent.inc_by(to_client);
        t.closed.inc();
    }
}

/// A connection to the route's destination: an endpoint of its cluster (another
/// tried once if the first refuses), or the original destination for the
/// passthrough and inbound clusters. Returns the cluster and endpoint indexes too.
async fn connect(
    shared: &Engine,
    connector: &TransportConnector,
    runtime: &Runtime,
    to: &Target<'_>,
) -> Option<(Stream, Option<ActiveGuard>, usize, Option<usize>)> {
    let dest = to.route.pick()?;
    let (cluster, state) = (
        runtime.snapshot.clusters.get(dest.cluster)?,
        runtime.upstreams.clusters.get(dest.cluster)?,
    );
    let timeout = cluster.policy.connect_timeout.unwrap_or(to.connect_timeout);
    match cluster.kind {
        ClusterKind::Blackhole | ClusterKind::InvalidBackend => return None,
        ClusterKind::OriginalDestination | ClusterKind::LocalWorkload => {
            let address = to.original?;
            let mut peer = pingora::upstreams::peer::HttpPeer::new(address, false, String::new());
            if cluster.kind == ClusterKind::LocalWorkload {
                let mut bind = BindTo::default();
                bind.addr = Some(SocketAddr::new(INBOUND_PASSTHROUGH_SOURCE, 0));
                peer.options.bind_to = Some(bind);
            }
            peer.options.connection_timeout = Some(timeout);
            return match connector.new_stream(&peer).await {
                Ok(s) => Some((s, None, dest.cluster, None)),
                Err(e) => {
                    log::warn!("TCP connect to {address} failed: {e}");
                    None
                }
            };
        }
        ClusterKind::Static | ClusterKind::Dns => {}
    }
    let mut tried = None;
    for _ in 0..2 {
        let skip = tried;
        let (address, index) =
            match upstream_client::endpoint(&shared.dns, runtime, dest.cluster, None, |i| Some(i) == skip).await {
                Ok(found) => found,
                Err(PickError::NoEndpoint) => return None,
                Err(PickError::Unresolved { index, reason }) => {
                    tried = Some(index);
                    log::warn!("cluster {}: {reason}", cluster.name);
                    continue;
                }
            };
        tried = Some(index);
        let guard = state.endpoints.get(index).map(ActiveGuard::new);
        let mut peer = upstream_client::peer(runtime, dest.cluster, address, Some(index), &shared.identity, true)?;
        peer.options.connection_timeout = Some(timeout);
        match connector.new_stream(&peer).await {
            Ok(s) => {
                state.record(&cluster.policy, index, Outcome::Connected);
                return Some((s, guard, dest.cluster, Some(index)));
            }
            Err(e) => log::warn!("cluster {}: connect to {address} failed: {e}", cluster.name),
        }
        state.record(&cluster.policy, index, Outcome::LocalFailure);
    }
    None
}
