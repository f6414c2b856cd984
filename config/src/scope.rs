//! Who a snapshot is for: the proxy's role, the workload it runs as or beside, and
//! the mesh settings every proxy shares. Translation reads nothing else about the
//! proxy, so the controller can compute any proxy's snapshot from its scope.

use std::net::IpAddr;

use crate::mesh::MeshConfig;
use crate::resources::networking::Labels;

/// Istio's root namespace: security policies there without a selector apply to
/// every workload of the mesh.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// The role a proxy plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Edge (ingress) or egress gateway: listeners from the Gateway servers that
    /// select its labels.
    Gateway,
    /// Beside a workload: outbound (15001) and inbound (15006) capture listeners.
    Sidecar,
}

/// The workload a proxy serves: a gateway's own pod, or the application pod a
/// sidecar runs in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Workload {
    /// Namespace (Secrets are looked up here after a resource's own; policies of this
    /// namespace apply).
    pub namespace: String,
    /// Labels (Gateway `selector`s and policy `selector`s are matched against them).
    pub labels: Labels,
    /// Kubernetes service account, the identity's `sa` part.
    pub service_account: Option<String>,
    /// Addresses of the workload.
    pub ips: Vec<IpAddr>,
}

/// Who the snapshot is for.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    /// Role.
    pub role: Role,
    /// The workload.
    pub workload: Workload,
    /// The mesh config (outbound policy, external authorizers...).
    pub mesh: MeshConfig,
}

impl Scope {
    /// A gateway of `namespace` with `labels`, under the mesh config `mesh`.
    pub fn gateway(namespace: &str, labels: Labels, mesh: MeshConfig) -> Scope {
        Scope {
            role: Role::Gateway,
            workload: Workload {
                namespace: namespace.to_string(),
                labels,
                ..Workload::default()
            },
            mesh,
        }
    }

    /// The workload's namespace.
    pub fn namespace(&self) -> &str {
        &self.workload.namespace
    }

    /// The workload's labels.
    pub fn labels(&self) -> &Labels {
        &self.workload.labels
    }
}

/// Whether every label of `selector` is in `labels` with the same value.
pub fn selects(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
