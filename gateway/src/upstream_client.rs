//! The one way the engine reaches an upstream: an endpoint chosen by the cluster's
//! balancer and resolved (`endpoint`), and a peer built for it with the cluster's
//! TLS, pool and protocol (`peer`). HTTP routes hand the peer to Pingora; requests
//! the gateway makes itself (mirrored copies, external authorization checks) go
//! through `SideCalls` to a peer built the same way, so upstream TLS, and the mesh's
//! mutual TLS, apply to them as to any request.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;

use crate::balance;
use crate::dns::{Dns, DnsError};
use pingora::protocols::tls::CustomALPN;
use pingora::protocols::ALPN;

use crate::identity::{Identity, WorkloadCert};
use crate::runtime::Runtime;
use strait_config::snapshot::Cluster;

/// The ALPN protocol of the mesh's TCP (Istio's): a connection that is not HTTP,
/// relayed as bytes by the inbound side.
pub const MESH_TCP_ALPN: &[u8] = b"istio";

/// Why no address came out of `endpoint`.
#[derive(Debug, thiserror::Error)]
pub enum PickError {
    /// The cluster has no endpoint the balancer could choose.
    #[error("no endpoint")]
    NoEndpoint,
    /// The chosen endpoint's hostname did not resolve.
    #[error("{reason}")]
    Unresolved {
        /// The endpoint chosen, so a caller can count it as tried.
        index: usize,
        /// The resolver's explanation.
        reason: DnsError,
    },
}

/// Chooses an endpoint of cluster `cluster` with its balancer (`hash` for
/// consistent hashing; endpoints for which `skip` is true only when nothing else is
/// left) and resolves its hostname, when it has one, through `dns`. Returns the
/// address and the endpoint's index.
pub async fn endpoint(
    dns: &Dns,
    runtime: &Runtime,
    cluster: usize,
    hash: Option<u64>,
    skip: impl Fn(usize) -> bool,
) -> Result<(SocketAddr, usize), PickError> {
    let (Some(c), Some(endpoints), Some(state)) = (
        runtime.snapshot.clusters.get(cluster),
        runtime.cluster_endpoints(cluster),
        runtime.upstreams.clusters.get(cluster),
    ) else {
        return Err(PickError::NoEndpoint);
    };
    let index = balance::choose(c, endpoints, state, hash, skip).ok_or(PickError::NoEndpoint)?;
    let endpoint = endpoints.endpoints.get(index).ok_or(PickError::NoEndpoint)?;
    match &endpoint.hostname {
        None => Ok((endpoint.address, index)),
        // Boxed: a DNS lookup is a large future only DNS endpoints need.
        Some(host) => match Box::pin(dns.resolve(host, endpoint.address.port())).await {
            Ok(address) => Ok((address, index)),
            Err(reason) => Err(PickError::Unresolved { index, reason }),
        },
    }
}

/// The peer for `address` (endpoint `endpoint`, when it is one of the cluster's)
/// of cluster `cluster`: its upstream TLS (SNI, roots, client certificate), or the
/// mesh's mTLS with the proxy's `identity` when the cluster speaks it to that
/// endpoint (for `tcp`, announcing a connection that is not HTTP), its connection
/// pool and protocol. Timeouts are the caller's.
pub fn peer(
    runtime: &Runtime,
    cluster: usize,
    address: SocketAddr,
    endpoint: Option<usize>,
    identity: &Identity,
    tcp: bool,
) -> Option<HttpPeer> {
    let c = runtime.snapshot.clusters.get(cluster)?;
    let tls = runtime.upstream_tls.get(cluster).and_then(Option::as_ref);
    let mut peer = HttpPeer::new(address, tls.is_some(), tls.map_or_else(String::new, |t| t.sni.clone()));
    if let Some(t) = tls {
        t.apply(&mut peer);
    } else if let Some(cert) = workload_cert(identity) {
        let info = endpoint.and_then(|i| runtime.cluster_endpoints(cluster)?.endpoints.get(i));
        if c.policy.mesh_tls.to(info) {
            mesh_tls(&mut peer, c, &cert);
            if tcp {
                // The inbound side relays it as bytes rather than parse it as HTTP.
                peer.options.alpn = ALPN::Custom(CustomALPN::new(MESH_TCP_ALPN.to_vec()));
            }
        }
    }
    peer.options.idle_timeout = c.policy.idle_timeout;
    peer.group_key = runtime
        .upstreams
        .clusters
        .get(cluster)
        .map_or_else(|| c.pool_key(), |s| s.pool_key);
    if c.policy.h2_upstream {
        // Prior knowledge over plain TCP (h2c), ALPN h2 over TLS; streams multiplexed.
        peer.options.set_http_version(2, 2);
        peer.options.max_h2_streams = 100;
    }
    Some(peer)
}

/// The proxy's workload certificate. Generation 0 means none was ever set (an edge
/// gateway): the swap, and its per-thread bookkeeping, are skipped on every request.
fn workload_cert(identity: &Identity) -> Option<std::sync::Arc<WorkloadCert>> {
    if identity.generation() == 0 {
        return None;
    }
    identity.current()
}

/// The mesh's mTLS on `peer`: the workload's certificate, the mesh's roots, and
/// Istio's SNI for the cluster (`outbound_.PORT_.SUBSET_.HOST`). The server is
/// verified against the mesh's roots: its certificate names a SPIFFE identity, not
/// the host, so the name check is off.
pub fn mesh_tls(peer: &mut HttpPeer, cluster: &Cluster, cert: &WorkloadCert) {
    peer.scheme = pingora::upstreams::peer::Scheme::HTTPS;
    peer.sni = format!(
        "outbound_.{}_.{}_.{}",
        cluster.port,
        cluster.subset.as_deref().unwrap_or(""),
        cluster.host
    );
    peer.options.ca = Some(cert.client_roots.clone());
    peer.client_cert_key = Some(cert.client.clone());
    peer.options.verify_cert = true;
    peer.options.verify_hostname = false;
}

/// A peer of `cluster` for a request the gateway makes itself, at an endpoint its
/// balancer chooses.
pub async fn side_call_peer(dns: &Dns, runtime: &Runtime, cluster: usize, identity: &Identity) -> Option<HttpPeer> {
    match endpoint(dns, runtime, cluster, None, |_| false).await {
        Ok((address, index)) => peer(runtime, cluster, address, Some(index), identity, false),
        Err(PickError::NoEndpoint) => None,
        Err(e) => {
            log::debug!("cluster {cluster}: {e}");
            None
        }
    }
}

/// Requests the gateway makes itself, over Pingora's upstream connector (its own
/// pool of connections, kept apart from the routes').
pub struct SideCalls {
    connector: Connector,
}

impl std::fmt::Debug for SideCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideCalls").finish_non_exhaustive()
    }
}

impl Default for SideCalls {
    fn default() -> Self {
        SideCalls {
            connector: Connector::new(None),
        }
    }
}

/// What a side call got back: the head, and the body up to the size asked for.
#[derive(Debug)]
pub struct Answer {
    /// Status and headers.
    pub head: ResponseHeader,
    /// The body (cut at the limit given).
    pub body: Bytes,
}

impl SideCalls {
    /// Sends `req` with `body` to `peer` and reads the answer, keeping at most
    /// `max_body` bytes of its body; the whole exchange within `timeout`.
    pub async fn request(
        &self,
        peer: &HttpPeer,
        req: RequestHeader,
        body: Bytes,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Answer> {
        let exchange = async {
            let (mut session, _reused) = self.connector.get_http_session(peer).await?;
            session.write_request_header(Box::new(req)).await?;
            if !body.is_empty() {
                session.write_request_body(body, true).await?;
            }
            session.finish_request_body().await?;
            session.read_response_header().await?;
            let head = session
                .response_header()
                .cloned()
                .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "no response header"))?;
            let mut kept = BytesMut::new();
            let mut whole = true;
            while let Some(chunk) = session.read_response_body().await? {
                if kept.len() + chunk.len() > max_body {
                    whole = false;
                    break;
                }
                kept.extend_from_slice(&chunk);
            }
            // A connection whose answer was not read to its end cannot carry another.
            if whole {
                self.connector
                    .release_http_session(session, peer, peer.options.idle_timeout)
                    .await;
            }
            Ok(Answer {
                head,
                body: kept.freeze(),
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Error::e_explain(ErrorType::ReadTimedout, format!("no answer within {timeout:?}")),
        }
    }
}
