//! Mutual TLS between workloads: what a sidecar's inbound side accepts
//! (PeerAuthentication, resolved for its workload) and whether a cluster's
//! connections speak the mesh's mTLS (DestinationRule `ISTIO_MUTUAL`, or auto mTLS).

use std::collections::BTreeMap;

use serde::Serialize;

use super::Endpoint;

/// Istio's endpoint label saying the endpoint's workload has a sidecar that accepts
/// the mesh's mTLS (the injector sets it on pods; WorkloadEntries may carry it).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// Which connections a workload accepts on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PeerMode {
    /// Plaintext only: TLS bytes reach the workload unopened.
    Disable,
    /// mTLS or plaintext, told apart per connection.
    Permissive,
    /// mTLS only.
    Strict,
}

/// The inbound mTLS policy of a workload, from the PeerAuthentications that select it.
#[derive(Debug, Clone, Serialize)]
pub struct InboundMtls {
    /// The mode of every port without its own.
    pub mode: PeerMode,
    /// Port-level modes, by the workload's port.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<u16, PeerMode>,
    /// The PeerAuthentications that decided (`namespace/name`), most specific first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

impl Default for InboundMtls {
    /// Istio's default without any PeerAuthentication: PERMISSIVE.
    fn default() -> Self {
        InboundMtls {
            mode: PeerMode::Permissive,
            ports: BTreeMap::new(),
            sources: Vec::new(),
        }
    }
}

impl InboundMtls {
    /// The mode of connections to the workload's `port`.
    pub fn mode_for(&self, port: u16) -> PeerMode {
        self.ports.get(&port).copied().unwrap_or(self.mode)
    }
}

/// Whether a cluster's connections speak the mesh's mTLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MeshTls {
    /// Auto mTLS (Istio's default): to endpoints whose workload has a sidecar
    /// (`security.istio.io/tlsMode: istio`), when the proxy has an identity.
    #[default]
    Auto,
    /// DestinationRule `tls.mode: ISTIO_MUTUAL`: always.
    Istio,
    /// The DestinationRule chose (DISABLE, SIMPLE, MUTUAL): never the mesh's.
    Off,
}

impl MeshTls {
    /// Whether a connection to `endpoint` speaks the mesh's mTLS.
    pub fn to(self, endpoint: Option<&Endpoint>) -> bool {
        match self {
            MeshTls::Istio => true,
            MeshTls::Off => false,
            MeshTls::Auto => endpoint.is_some_and(|e| e.labels.get(TLS_MODE_LABEL).is_some_and(|m| m == "istio")),
        }
    }
}
