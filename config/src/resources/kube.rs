//! Kubernetes core kinds Strait reads: v1 Service, discovery.k8s.io/v1
//! EndpointSlice, v1 Secret (TLS), and what it needs of v1 Pod and Namespace.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::networking::Labels;

/// Service spec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpec {
    /// Ports.
    pub ports: Vec<KubeServicePort>,
    /// Pod selector.
    pub selector: Labels,
    /// ClusterIP.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// ClusterIPs.
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    /// ClusterIP, NodePort, LoadBalancer, ExternalName.
    #[serde(rename = "type")]
    pub service_type: Option<String>,
    /// ExternalName target.
    pub external_name: Option<String>,
    /// Other fields a Service may carry; not used by Strait.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// A Service port.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeServicePort {
    /// Name.
    pub name: Option<String>,
    /// Port number.
    pub port: Option<i64>,
    /// Target port: number or container port name.
    pub target_port: Option<serde_json::Value>,
    /// TCP/UDP/SCTP.
    pub protocol: Option<String>,
    /// e.g. `http`, `kubernetes.io/h2c`.
    pub app_protocol: Option<String>,
    /// NodePort.
    pub node_port: Option<i64>,
}

/// An EndpointSlice (fields live at top level, not under `spec`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointSliceBody {
    /// IPv4, IPv6 or FQDN.
    pub address_type: Option<String>,
    /// Endpoints.
    pub endpoints: Vec<SliceEndpoint>,
    /// Ports.
    pub ports: Vec<SlicePort>,
}

/// One endpoint of a slice.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SliceEndpoint {
    /// Addresses.
    pub addresses: Vec<String>,
    /// Readiness.
    pub conditions: Option<SliceConditions>,
    /// Hostname.
    pub hostname: Option<String>,
    /// Node.
    pub node_name: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// Target (Pod).
    pub target_ref: Option<serde_json::Value>,
    /// Topology hints.
    pub hints: Option<serde_json::Value>,
    /// Deprecated topology.
    pub deprecated_topology: Option<serde_json::Value>,
}

/// Endpoint conditions.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SliceConditions {
    /// Ready (absent means ready).
    pub ready: Option<bool>,
    /// Serving.
    pub serving: Option<bool>,
    /// Terminating.
    pub terminating: Option<bool>,
}

/// A slice port.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SlicePort {
    /// Name, matching the Service port name.
    pub name: Option<String>,
    /// Port.
    pub port: Option<i64>,
    /// Protocol.
    pub protocol: Option<String>,
    /// App protocol.
    pub app_protocol: Option<String>,
}

/// A Secret (fields at top level).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretBody {
    /// e.g. `kubernetes.io/tls`.
    #[serde(rename = "type")]
    pub secret_type: Option<String>,
    /// Base64 values.
    pub data: BTreeMap<String, String>,
    /// Plain values.
    pub string_data: BTreeMap<String, String>,
    /// Immutable flag.
    pub immutable: Option<bool>,
}

/// What Strait reads of a Pod (its labels are in `metadata`): the identity and
/// addresses of the workload behind an EndpointSlice's endpoints. The rest of a
/// Pod (hundreds of fields) is ignored without a word: Kubernetes writes it, not
/// the user.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodBody {
    /// The part of `spec` Strait reads.
    pub spec: PodSpec,
    /// The part of `status` Strait reads.
    pub status: PodStatus,
}

/// A Pod's `spec`, as far as Strait reads it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    /// The service account it runs as (the identity's `sa` part).
    pub service_account_name: Option<String>,
}

/// A Pod's `status`, as far as Strait reads it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStatus {
    /// Its primary IP.
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    /// All its IPs (IPv4 and IPv6 in a dual-stack cluster).
    #[serde(rename = "podIPs")]
    pub pod_ips: Vec<PodIp>,
}

/// One of a Pod's IPs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct PodIp {
    /// The address.
    pub ip: Option<String>,
}

/// A Namespace: Strait reads only its labels (in `metadata`), so nothing else is kept.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct NamespaceBody {}

/// The value of a Secret key from `stringData` or base64 `data`.
pub fn secret_value(body: &SecretBody, key: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    if let Some(v) = body.string_data.get(key) {
        return Some(v.clone().into_bytes());
    }
    let v = body.data.get(key)?;
    let compact: String = v.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(compact).ok()
}
