//! Endpoint tables in and out of the protocol. The controller sends endpoints by
//! cluster name; the proxy lines them up with the clusters of the snapshot it runs
//! and refuses a table whose names do not match (it was made for another
//! configuration), so endpoints never land on the wrong cluster.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use prost::Message as _;

use strait_config::snapshot::{ClusterEndpoints, Endpoint, Endpoints};
use strait_config::Snapshot;

use crate::proto;

/// Why an endpoint table does not fit a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A cluster of the running snapshot has no entry.
    #[error("no endpoints for cluster {0}, which the running configuration has")]
    Missing(String),
    /// An entry names a cluster the running snapshot does not have.
    #[error("endpoints for cluster {0}, which the running configuration does not have")]
    Unknown(String),
    /// The table is not a valid encoded `EndpointTable`.
    #[error("the endpoint table cannot be decoded: {0}")]
    Decode(#[from] prost::DecodeError),
    /// An address is not `ip:port`.
    #[error("cluster {cluster}: endpoint address {address:?} is not ip:port")]
    Address {
        /// The cluster.
        cluster: String,
        /// The address as sent.
        address: String,
    },
}

/// One endpoint as the protocol carries it.
pub fn endpoint_to_proto(e: &Endpoint) -> proto::Endpoint {
    proto::Endpoint {
        address: e.address.to_string(),
        hostname: e.hostname.clone(),
        labels: e.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        workload: e.workload.clone(),
    }
}

/// The endpoints of `snapshot`'s clusters (`endpoints` is index-aligned with them),
/// named.
pub fn to_proto(snapshot: &Snapshot, endpoints: &Endpoints) -> Vec<proto::ClusterEndpoints> {
    snapshot
        .clusters
        .iter()
        .zip(&endpoints.clusters)
        .map(|(c, e)| proto::ClusterEndpoints {
            name: c.name.clone(),
            endpoints: e.endpoints.iter().map(endpoint_to_proto).collect(),
        })
        .collect()
}

/// The encoded `EndpointTable` of `snapshot`'s clusters: made once per build and
/// shared, unchanged, by every stream it is sent on.
pub fn encode_table(snapshot: &Snapshot, endpoints: &Endpoints) -> Bytes {
    let table = proto::EndpointTable {
        clusters: to_proto(snapshot, endpoints),
    };
    Bytes::from(table.encode_to_vec())
}

/// The endpoints an encoded `EndpointTable` gives `snapshot`'s clusters.
pub fn decode_table(snapshot: &Snapshot, table: &[u8]) -> Result<Endpoints, Error> {
    let table = proto::EndpointTable::decode(table)?;
    from_proto(snapshot, &table.clusters)
}

fn endpoint_from_proto(cluster: &str, e: &proto::Endpoint) -> Result<Endpoint, Error> {
    let address: SocketAddr = e.address.parse().map_err(|_| Error::Address {
        cluster: cluster.to_string(),
        address: e.address.clone(),
    })?;
    Ok(Endpoint {
        address,
        hostname: e.hostname.clone(),
        labels: e.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        workload: e.workload.clone(),
    })
}

/// The table for `snapshot`'s clusters, index-aligned with them, from entries named
/// by cluster; consistent-hash tables are built for the clusters whose policy needs one.
pub fn from_proto(snapshot: &Snapshot, clusters: &[proto::ClusterEndpoints]) -> Result<Endpoints, Error> {
    let by_name: HashMap<&str, &proto::ClusterEndpoints> = clusters.iter().map(|c| (c.name.as_str(), c)).collect();
    if let Some(unknown) = clusters
        .iter()
        .find(|c| !snapshot.clusters.iter().any(|s| s.name == c.name))
    {
        return Err(Error::Unknown(unknown.name.clone()));
    }
    let clusters = snapshot
        .clusters
        .iter()
        .map(|c| {
            let sent = by_name
                .get(c.name.as_str())
                .ok_or_else(|| Error::Missing(c.name.clone()))?;
            let list = sent
                .endpoints
                .iter()
                .map(|e| endpoint_from_proto(&c.name, e))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ClusterEndpoints::new(list, &c.policy))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Endpoints { clusters })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_config::bundle::{load_text, Loaded};
    use strait_config::testing::ingress_scope;

    const CONFIG: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: app}\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n  - route: [{destination: {host: backend}}]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: backend}\nspec:\n  hosts: [backend.default.svc.cluster.local]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints:\n  - {address: 10.0.0.1, labels: {version: v1}}\n  - {address: 10.0.0.2}\n";

    fn built() -> strait_config::Built {
        let mut loaded = Loaded::default();
        load_text(&mut loaded, "app.yaml", CONFIG);
        strait_config::build(&loaded, &ingress_scope("default"), 0).expect("builds")
    }

    #[test]
    fn a_table_goes_out_and_comes_back_on_the_same_clusters() {
        let built = built();
        let sent = to_proto(&built.snapshot, &built.endpoints);
        assert_eq!(sent.len(), built.snapshot.clusters.len());
        assert_eq!(sent[0].endpoints[0].address, "10.0.0.1:80");
        assert_eq!(
            sent[0].endpoints[0].labels.get("version").map(String::as_str),
            Some("v1")
        );
        let back = decode_table(&built.snapshot, &encode_table(&built.snapshot, &built.endpoints)).expect("fits");
        let addresses: Vec<String> = back.clusters[0]
            .endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(addresses, ["10.0.0.1:80", "10.0.0.2:80"]);
        assert_eq!(
            back.clusters[0].endpoints[0].labels.get("version").map(String::as_str),
            Some("v1")
        );
    }

    #[test]
    fn a_table_for_other_clusters_is_refused() {
        let built = built();
        let mut sent = to_proto(&built.snapshot, &built.endpoints);
        sent[0].name = "outbound|80||other.default.svc.cluster.local".into();
        assert!(matches!(from_proto(&built.snapshot, &sent), Err(Error::Unknown(_))));
        assert!(matches!(from_proto(&built.snapshot, &[]), Err(Error::Missing(_))));
        let mut bad = to_proto(&built.snapshot, &built.endpoints);
        bad[0].endpoints[0].address = "10.0.0.1".into();
        assert!(matches!(from_proto(&built.snapshot, &bad), Err(Error::Address { .. })));
        assert!(matches!(
            decode_table(&built.snapshot, b"\xff\xff"),
            Err(Error::Decode(_))
        ));
    }
}
