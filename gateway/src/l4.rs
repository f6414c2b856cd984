//! TCP and TLS-passthrough listeners (Gateway servers of protocol TCP, and TLS
//! with `mode: PASSTHROUGH`): a connection is routed by the VirtualService's `tcp`
//! or `tls` routes (the latter by the SNI of the ClientHello, which is read without
//! being consumed) and spliced to an endpoint of the chosen destination.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::net::TcpStream;

use crate::client_hello;
use crate::engine::ConnectionGuard;
use crate::engine::Engine;
use crate::flags::Flags;
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
        // The guard counts the connection as active on its endpoint until it ends.
        let (mut up, _guard, cluster, endpoint) = self.connect(sni.as_deref()).await?;
        let runtime = self.shared.current();
        let tcp = runtime.destination(Some(cluster)).and_then(|d| {
            let workload = runtime
                .cluster_endpoints(cluster)
                .and_then(|e| e.endpoints.get(endpoint))
                .and_then(|e| e.workload.as_deref());
            self.shared.metrics.tcp_open(d, workload, Flags::NONE).ok()
        });
        // Bytes are counted when the connection ends (Envoy also reports them while
        // it lasts).
        let (to_upstream, to_client) = match tokio::io::copy_bidirectional(&mut stream, &mut up).await {
            Ok(n) => n,
            Err(e) => {
                log::debug!("listener {}: connection ended: {e}", self.port);
                (0, 0)
            }
        };
        if let Some(t) = tcp {
            t.received.inc_by(to_upstream);
            t.sent.inc_by(to_client);
            t.closed.inc();
        }
        None
    }
}

impl L4App {
    /// Connects to an endpoint of the first route matching `sni`, trying another
    /// endpoint once if the first refuses; returns the cluster and endpoint indexes too.
    async fn connect(&self, sni: Option<&str>) -> Option<(TcpStream, Option<ActiveGuard>, usize, usize)> {
        let runtime = self.shared.current();
        let listener = runtime.snapshot.listener(self.port)?;
        let Some(route) = listener.l4_routes.iter().find(|r| r.matches_sni(sni)) else {
            log::debug!("listener {}: no route for SNI {sni:?}", self.port);
            return None;
        };
        let dest = route.pick()?;
        let (cluster, state) = (
            runtime.snapshot.clusters.get(dest.cluster)?,
            runtime.upstreams.clusters.get(dest.cluster)?,
        );
        let mut tried = None;
        for _ in 0..2 {
            let skip = tried;
            let (address, index) =
                match upstream_client::endpoint(&self.shared.dns, &runtime, dest.cluster, None, |i| Some(i) == skip)
                    .await
                {
                    Ok(found) => found,
                    Err(PickError::NoEndpoint) => return None,
                    Err(PickError::Unresolved { index, reason }) => {
                        tried = Some(index);
                        log::warn!("listener {}: {reason}", self.port);
                        continue;
                    }
                };
            tried = Some(index);
            let guard = state.endpoints.get(index).map(ActiveGuard::new);
            let timeout = cluster.policy.connect_timeout.unwrap_or(self.connect_timeout);
            match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    state.record(&cluster.policy, index, Outcome::Connected);
                    return Some((s, guard, dest.cluster, index));
                }
                Ok(Err(e)) => log::warn!("listener {}: connect to {address} failed: {e}", self.port),
                Err(_) => log::warn!("listener {}: connect to {address} timed out", self.port),
            }
            state.record(&cluster.policy, index, Outcome::LocalFailure);
        }
        None
    }
}
