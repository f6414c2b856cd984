//! The clusters of a snapshot: one per (host, port, subset) a route, mirror or
//! external authorizer names, with its endpoints from the registry, the compiled
//! DestinationRule policy and the upstream TLS it needs.

use std::collections::BTreeMap;

use crate::bundle::Entry;
use crate::compile::virtual_service::Target;
use crate::diag::{Anchor, Code, Severity};
use crate::mesh::OutboundMode;
use crate::registry::ResolveError;
use crate::resources::kube::secret_value;
use crate::resources::networking::ClientTlsSettings;
use crate::resources::Spec;
use crate::snapshot::{Cluster, ClusterEndpoints, ClusterKind, MeshTls, PemSource, UpstreamTls};

use super::Translator;

/// A Secret found for a reference, with its keys decoded.
pub(super) struct FoundSecret {
    pub(super) namespace: String,
    pub(super) keys: BTreeMap<String, Vec<u8>>,
}

impl Translator<'_, '_> {
    /// The index of the cluster for `target` named at `field` of `entry`, added on
    /// first use. A host the registry does not know gets a cluster without endpoints
    /// (503), or under REGISTRY_ONLY a blackhole (502), and a diagnostic.
    pub(super) fn cluster(&mut self, entry: &Entry, field: &str, target: &Target, listener_port: u16) -> usize {
        let (index, unresolved) = self.cluster_of(target, listener_port);
        if let Some(e) = unresolved {
            let severity = match e {
                ResolveError::HostNotFound(_) => Severity::Warning,
                ResolveError::PortNotFound { .. } => Severity::Error,
            };
            let answer = if self.scope.mesh.outbound == OutboundMode::RegistryOnly {
                "requests to it get 502 (outboundTrafficPolicy REGISTRY_ONLY)"
            } else {
                "requests to it get 503"
            };
            self.diags.push(entry.diag(
                severity,
                Code::ReferenceNotFound,
                &format!("{field}.host"),
                format!("{e}; {answer}"),
            ));
        }
        index
    }

    /// The index of the cluster for `target`, added on first use, and why its host
    /// could not be resolved, if it could not.
    pub(super) fn cluster_of(&mut self, target: &Target, listener_port: u16) -> (usize, Option<ResolveError>) {
        let host = target.host.as_str();
        let subset = target.subset.as_deref();
        // A sidecar's route for one port of a service, to a destination without a
        // port, goes to that port when the destination has it, as in Istio.
        let sidecar = self.scope.role == crate::scope::Role::Sidecar;
        let port = target
            .port
            .and_then(|p| u16::try_from(p).ok())
            .or_else(|| (sidecar && self.compiled.registry.has_port(host, listener_port)).then_some(listener_port));
        let registry_only = self.scope.mesh.outbound == OutboundMode::RegistryOnly;
        let (port, endpoints, unresolved) = match self.compiled.registry.resolve(host, port, subset) {
            Ok((port, endpoints)) => (port, endpoints, None),
            Err(e) => (port.unwrap_or(listener_port), Vec::new(), Some(e)),
        };
        let name = format!("outbound|{port}|{}|{host}", subset.unwrap_or(""));
        if let Some(i) = self.cluster_index.get(&name) {
            return (*i, unresolved);
        }
        let compiled = self.compiled.cluster_policies.get(host, subset, port);
        let mut policy = compiled.map(|c| c.policy.clone()).unwrap_or_default();
        if let Some(c) = compiled {
            if let Some(tls) = &c.tls {
                policy.tls = self.upstream_tls(host, tls, &c.tls_anchor);
                policy.mesh_tls = match tls.mode.as_deref() {
                    Some("ISTIO_MUTUAL") => MeshTls::Istio,
                    Some("DISABLE" | "SIMPLE" | "MUTUAL") => MeshTls::Off,
                    _ => MeshTls::Auto,
                };
            }
        }
        // HTTP/2 upstream for ports declared HTTP2 or gRPC, as Istio does; for HTTP
        // ports when the DestinationRule asks (h2UpgradePolicy: UPGRADE).
        if matches!(
            self.compiled.registry.port_protocol(host, port),
            Some("HTTP2" | "GRPC" | "GRPC-WEB")
        ) {
            policy.h2_upstream = true;
        }
        let kind = if unresolved.is_some() && registry_only {
            ClusterKind::Blackhole
        } else if endpoints.iter().any(|e| e.hostname.is_some()) {
            ClusterKind::Dns
        } else {
            ClusterKind::Static
        };
        let endpoints = ClusterEndpoints::new(endpoints, &policy);
        let index = self.add_cluster(
            Cluster {
                name,
                host: host.to_string(),
                port,
                subset: subset.map(str::to_string),
                kind,
                policy,
            },
            endpoints,
        );
        (index, unresolved)
    }

    /// A cluster without endpoints of its own (passthrough, blackhole, the local
    /// workload), named as Istio names them, added on first use.
    pub(super) fn special_cluster(&mut self, name: &str, kind: ClusterKind) -> usize {
        if let Some(i) = self.cluster_index.get(name) {
            return *i;
        }
        self.add_cluster(
            Cluster {
                name: name.to_string(),
                host: String::new(),
                port: 0,
                subset: None,
                kind,
                policy: Default::default(),
            },
            ClusterEndpoints::default(),
        )
    }

    fn add_cluster(&mut self, cluster: Cluster, endpoints: ClusterEndpoints) -> usize {
        self.cluster_index.insert(cluster.name.clone(), self.clusters.len());
        self.clusters.push(cluster);
        self.endpoints.push(endpoints);
        self.clusters.len() - 1
    }

    /// DestinationRule `tls` for a cluster: SIMPLE and MUTUAL originate TLS; DISABLE
    /// leaves it plain, and ISTIO_MUTUAL is the mesh's (`ClusterPolicy::mesh_tls`).
    /// `anchor` is where the `tls` block was written.
    fn upstream_tls(&mut self, host: &str, tls: &ClientTlsSettings, anchor: &Anchor) -> Option<UpstreamTls> {
        let mode = tls.mode.as_deref().unwrap_or("DISABLE");
        if !matches!(mode, "SIMPLE" | "MUTUAL") {
            return None;
        }
        let file = |p: &Option<String>| p.as_ref().map(|path| PemSource::File { path: path.clone() });
        let mut ca = file(&tls.ca_certificates);
        let mut client = match (file(&tls.client_certificate), file(&tls.private_key)) {
            (Some(c), Some(k)) => Some((c, k)),
            _ => None,
        };
        if let Some(name) = &tls.credential_name {
            let ns = self.scope.namespace().to_string();
            match self.find_secret(&ns, name, &[]) {
                Some(found) => {
                    let inline = |key: &str| {
                        found.keys.get(key).map(|pem| PemSource::Inline {
                            name: format!("secret {}/{name} {key}", found.namespace),
                            pem: pem.clone(),
                        })
                    };
                    ca = inline("ca.crt").or(ca);
                    if let (Some(c), Some(k)) = (inline("tls.crt"), inline("tls.key")) {
                        client = Some((c, k));
                    }
                }
                None => self.diags.push(anchor.diag(
                    Severity::Error,
                    Code::ReferenceNotFound,
                    format!(
                        "the DestinationRule for {host} names credentialName {name}, which is not a Secret in namespace {ns}"
                    ),
                )),
            }
        }
        if mode == "MUTUAL" && client.is_none() {
            self.diags.push(anchor.diag(
                Severity::Error,
                Code::Required,
                format!(
                    "the DestinationRule for {host} has tls.mode MUTUAL without a client certificate (clientCertificate and privateKey, or credentialName)"
                ),
            ));
        }
        Some(UpstreamTls {
            sni: tls.sni.clone().unwrap_or_else(|| host.to_string()),
            ca,
            client,
            insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
            anchor: anchor.clone(),
        })
    }

    /// The Secret `name` in `ns`, else in the proxy's namespace: the first of them that
    /// has every key in `needed`, with all its keys decoded.
    pub(super) fn find_secret(&self, ns: &str, name: &str, needed: &[&str]) -> Option<FoundSecret> {
        [ns, self.scope.namespace()].iter().find_map(|ns| {
            let (entry, body) = self
                .compiled
                .bundle
                .of(|s| match s {
                    Spec::Secret(b) => Some(b),
                    _ => None,
                })
                .find(|(e, _)| e.resource.namespace == *ns && e.resource.name == name)?;
            let keys: BTreeMap<String, Vec<u8>> = body
                .string_data
                .keys()
                .chain(body.data.keys())
                .filter_map(|k| Some((k.clone(), secret_value(body, k)?)))
                .collect();
            needed.iter().all(|k| keys.contains_key(*k)).then(|| FoundSecret {
                namespace: entry.resource.namespace.clone(),
                keys,
            })
        })
    }
}
