//! Where a request goes. `endpoint` is the one way the engine picks an endpoint of
//! a cluster (its balancer, skipping some) and resolves it: HTTP routes, TCP
//! routes, mirrors and external authorization all use it. The clusters' runtime
//! state itself is `upstreams`.

use std::net::SocketAddr;

use strait_config::snapshot::Cluster;

use crate::balance;
use crate::dns::Dns;
use crate::state::Runtime;
use crate::upstreams::ClusterState;

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
        reason: String,
    },
}

/// Chooses an endpoint of `cluster` with its balancer (`hash` for consistent
/// hashing; endpoints for which `skip` is true only when nothing else is left) and
/// resolves its hostname, when it has one, through `dns`. Returns the address and
/// the endpoint's index.
pub async fn endpoint(
    dns: &Dns,
    cluster: &Cluster,
    state: &ClusterState,
    hash: Option<u64>,
    skip: impl Fn(usize) -> bool,
) -> Result<(SocketAddr, usize), PickError> {
    let index = balance::choose(cluster, state, hash, skip).ok_or(PickError::NoEndpoint)?;
    let endpoint = cluster.endpoints.get(index).ok_or(PickError::NoEndpoint)?;
    match &endpoint.hostname {
        None => Ok((endpoint.address, index)),
        Some(host) => match dns.resolve(host, endpoint.address.port()).await {
            Ok(address) => Ok((address, index)),
            Err(reason) => Err(PickError::Unresolved { index, reason }),
        },
    }
}

/// An endpoint of `cluster` for a request the gateway makes itself (a mirror copy,
/// an authorization check), chosen by the cluster's balancer.
pub async fn side_call_target(dns: &Dns, runtime: &Runtime, cluster: usize) -> Option<SocketAddr> {
    let (Some(c), Some(state)) = (
        runtime.snapshot.clusters.get(cluster),
        runtime.upstreams.clusters.get(cluster),
    ) else {
        return None;
    };
    match endpoint(dns, c, state, None, |_| false).await {
        Ok((address, _)) => Some(address),
        Err(PickError::NoEndpoint) => None,
        Err(e) => {
            log::debug!("{}: {e}", c.name);
            None
        }
    }
}
