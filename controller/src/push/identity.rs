//! Who a connected proxy is, from its `Hello`: what status shows, and the part its
//! configuration depends on (proxies that agree on it share one build).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use strait_config::mesh::MeshConfig;
use strait_config::{Role, Scope, Workload};
use strait_push::proto;

/// The role a proxy says it plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyRole {
    /// Edge or egress gateway.
    Gateway,
    /// Sidecar beside a workload.
    Sidecar,
}

/// Why a `Hello` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The stream's first message is not a `Hello`.
    #[error("the first message of a stream must be a Hello")]
    NotHello,
    /// No proxy id.
    #[error("Hello without a proxy_id")]
    NoId,
    /// No namespace.
    #[error("Hello from {0} without a namespace")]
    NoNamespace(String),
    /// The role is neither gateway nor sidecar.
    #[error("Hello from {0} without a role (gateway or sidecar)")]
    NoRole(String),
    /// An IP is not an IP address.
    #[error("Hello from {id}: {ip:?} is not an IP address")]
    BadIp {
        /// The proxy.
        id: String,
        /// The text sent.
        ip: String,
    },
}

/// A connected proxy, as its `Hello` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Its name in status and logs.
    pub id: String,
    /// Gateway or sidecar.
    pub role: ProxyRole,
    /// Its namespace.
    pub namespace: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// A sidecar's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// A sidecar's service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// A sidecar's pod IPs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpAddr>,
    /// The proxy's Strait version.
    #[serde(default)]
    pub strait_version: String,
}

/// What a proxy's configuration depends on besides the controller's state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BuildKey {
    role: ProxyRole,
    namespace: String,
    labels: BTreeMap<String, String>,
    service_account: Option<String>,
    ips: Vec<IpAddr>,
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl Identity {
    /// An ingress gateway of `istio-system` with Istio's labels (`istio:
    /// ingressgateway`), named `id`: what tests and benchmarks connect as.
    pub fn ingress_gateway(id: &str) -> Identity {
        Identity {
            id: id.into(),
            role: ProxyRole::Gateway,
            namespace: "istio-system".into(),
            labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
            pod_name: None,
            service_account: None,
            ips: Vec::new(),
            strait_version: String::new(),
        }
    }

    /// The identity a `Hello` gives.
    pub fn from_hello(hello: proto::Hello) -> Result<Identity, HelloError> {
        if hello.proxy_id.is_empty() {
            return Err(HelloError::NoId);
        }
        let id = hello.proxy_id;
        if hello.namespace.is_empty() {
            return Err(HelloError::NoNamespace(id));
        }
        let role = match proto::Role::try_from(hello.role) {
            Ok(proto::Role::Gateway) => ProxyRole::Gateway,
            Ok(proto::Role::Sidecar) => ProxyRole::Sidecar,
            _ => return Err(HelloError::NoRole(id)),
        };
        let ips = hello
            .ips
            .iter()
            .map(|ip| {
                ip.parse().map_err(|_| HelloError::BadIp {
                    id: id.clone(),
                    ip: ip.clone(),
                })
            })
            .collect::<Result<Vec<IpAddr>, _>>()?;
        Ok(Identity {
            id,
            role,
            namespace: hello.namespace,
            labels: hello.labels.into_iter().collect(),
            pod_name: non_empty(hello.pod_name),
            service_account: non_empty(hello.service_account),
            ips,
            strait_version: hello.strait_version,
        })
    }

    /// The scope its configuration is built for, under `mesh`.
    pub fn scope(&self, mesh: MeshConfig) -> Scope {
        match self.role {
            ProxyRole::Gateway => Scope::gateway(&self.namespace, self.labels.clone(), mesh),
            ProxyRole::Sidecar => Scope {
                role: Role::Sidecar,
                workload: Workload {
                    namespace: self.namespace.clone(),
                    labels: self.labels.clone(),
                    service_account: self.service_account.clone(),
                    ips: self.ips.clone(),
                },
                mesh,
            },
        }
    }

    /// The key of its build: gateways of one namespace with the same labels share
    /// one, whatever their names.
    pub fn build_key(&self) -> BuildKey {
        let sidecar = self.role == ProxyRole::Sidecar;
        BuildKey {
            role: self.role,
            namespace: self.namespace.clone(),
            labels: self.labels.clone(),
            service_account: self.service_account.clone().filter(|_| sidecar),
            ips: if sidecar { self.ips.clone() } else { Vec::new() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(id: &str, role: proto::Role) -> proto::Hello {
        proto::Hello {
            proxy_id: id.into(),
            role: role.into(),
            namespace: "istio-system".into(),
            labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn gateways_with_the_same_labels_share_a_build() {
        let a = Identity::from_hello(hello("gw-a", proto::Role::Gateway)).expect("valid");
        let b = Identity::from_hello(hello("gw-b", proto::Role::Gateway)).expect("valid");
        assert_eq!(a.build_key(), b.build_key());
        let mut other = hello("gw-c", proto::Role::Gateway);
        other.labels.insert("istio".into(), "egressgateway".into());
        let c = Identity::from_hello(other).expect("valid");
        assert_ne!(a.build_key(), c.build_key());
        assert_eq!(a.scope(MeshConfig::default()).role, Role::Gateway);
    }

    #[test]
    fn a_hello_without_what_the_build_needs_is_refused() {
        assert_eq!(
            Identity::from_hello(hello("", proto::Role::Gateway)),
            Err(HelloError::NoId)
        );
        assert!(matches!(
            Identity::from_hello(hello("x", proto::Role::Unspecified)),
            Err(HelloError::NoRole(_))
        ));
        let mut bad = hello("pod", proto::Role::Sidecar);
        bad.ips = vec!["10.0.0.300".into()];
        assert!(matches!(Identity::from_hello(bad), Err(HelloError::BadIp { .. })));
    }
}
