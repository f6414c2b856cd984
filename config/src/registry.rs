//! The service registry of a bundle: which endpoints serve a host and port,
//! from ServiceEntry (+ WorkloadEntry) or Service + EndpointSlice (+ the Pods
//! their endpoints name), and the subsets DestinationRules define for each host.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use crate::bundle::{Bundle, Entry};
use crate::hosts::fqdn;
use crate::resources::networking::{Labels, Subset, TrafficPolicy};
use crate::resources::Spec;
use crate::snapshot::Endpoint;

/// A port of a service.
#[derive(Debug, Clone)]
struct PortDef {
    number: u16,
    name: String,
    target: Option<u16>,
    /// Istio protocol, uppercase (HTTP, HTTP2, GRPC, ...), when declared.
    protocol: Option<String>,
}

/// An endpoint before its port is chosen.
#[derive(Debug, Clone)]
struct EndpointDef {
    address: String,
    /// From a ServiceEntry with DNS resolution: `address` may be a name to resolve.
    dns: bool,
    /// Port name -> port on the endpoint.
    ports: BTreeMap<String, u16>,
    labels: Labels,
    /// The workload's name (a WorkloadEntry's, or the Pod's behind a Service
    /// endpoint), for metrics.
    workload: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct ServiceDef {
    /// Namespace of the resource that defines it.
    namespace: String,
    /// Whether it is a Kubernetes Service (short names resolve in its namespace).
    kubernetes: bool,
    ports: Vec<PortDef>,
    endpoints: Vec<EndpointDef>,
    /// Virtual IPs (ServiceEntry `addresses`, a Service's cluster IPs).
    addresses: Vec<IpAddr>,
}

/// A service as proxies of the mesh see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView<'a> {
    /// Host, fully qualified.
    pub host: &'a str,
    /// Namespace of the resource that defines it.
    pub namespace: &'a str,
    /// A Kubernetes Service (`name.namespace.svc.cluster.local`).
    pub kubernetes: bool,
    /// Ports: number and Istio protocol (uppercase) when declared.
    pub ports: Vec<(u16, Option<&'a str>)>,
    /// Virtual IPs.
    pub addresses: &'a [IpAddr],
}

/// Why a destination could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No ServiceEntry or Service has this host.
    #[error("no ServiceEntry or Service defines host {0}")]
    HostNotFound(String),
    /// The service has no such port, or several and none was chosen.
    #[error("host {host} has no port {port}")]
    PortNotFound {
        /// Host.
        host: String,
        /// The port asked for (0 = not given while the service has several).
        port: u16,
    },
}

/// Hosts, their ports, endpoints and subsets.
#[derive(Debug, Default)]
pub struct Registry {
    services: HashMap<String, ServiceDef>,
    subsets: HashMap<String, Vec<Subset>>,
    /// Top-level traffic policy per host (the first DestinationRule's).
    policies: HashMap<String, TrafficPolicy>,
}

fn port_u16(n: Option<i64>) -> Option<u16> {
    n.and_then(|n| u16::try_from(n).ok()).filter(|n| *n != 0)
}

impl Registry {
    /// Builds the registry of `bundle`.
    pub fn new(bundle: &Bundle) -> Registry {
        let mut reg = Registry::default();
        let workload_entries: Vec<_> = bundle
            .of(|s| match s {
                Spec::WorkloadEntry(w) => Some(w),
                _ => None,
            })
            .collect();
        for (entry, se) in bundle.of(|s| match s {
            Spec::ServiceEntry(s) => Some(s),
            _ => None,
        }) {
            let ns = &entry.resource.namespace;
            let ports: Vec<PortDef> = se
                .ports
                .iter()
                .filter_map(|p| {
                    Some(PortDef {
                        number: port_u16(p.number)?,
                        name: p.name.clone().unwrap_or_default(),
                        target: port_u16(p.target_port),
                        protocol: p.protocol.as_deref().map(str::to_ascii_uppercase),
                    })
                })
                .collect();
            let dns = matches!(se.resolution.as_deref(), Some("DNS" | "DNS_ROUND_ROBIN"));
            let mut endpoints: Vec<EndpointDef> = se
                .endpoints
                .iter()
                .filter_map(|e| {
                    Some(EndpointDef {
                        address: e.address.clone()?,
                        dns,
                        ports: ports_map(&e.ports),
                        labels: e.labels.clone(),
                        workload: None,
                    })
                })
                .collect();
            if let Some(sel) = &se.workload_selector {
                for (we_entry, we) in &workload_entries {
                    let mut labels = we_entry.resource.metadata.labels.clone();
                    labels.extend(we.labels.clone());
                    if we_entry.resource.namespace == *ns && selects(&sel.labels, &labels) {
                        if let Some(address) = we.address.clone() {
                            endpoints.push(EndpointDef {
                                address,
                                dns,
                                ports: ports_map(&we.ports),
                                labels,
                                workload: Some(we_entry.resource.name.clone()),
                            });
                        }
                    }
                }
            }
            // Single addresses only: a CIDR names a range, not a service's VIP.
            let addresses: Vec<IpAddr> = se
                .addresses
                .iter()
                .filter_map(|a| a.trim_end_matches("/32").trim_end_matches("/128").parse().ok())
                .collect();
            for host in &se.hosts {
                let def = reg.services.entry(fqdn(host, ns)).or_default();
                if def.namespace.is_empty() {
                    def.namespace = ns.clone();
                }
                def.addresses.extend(addresses.iter().copied());
                def.ports.extend(ports.iter().cloned());
                def.endpoints.extend(endpoints.iter().cloned());
                // DNS resolution without endpoints: the host itself is resolved.
                if dns && se.endpoints.is_empty() && se.workload_selector.is_none() && !host.starts_with('*') {
                    def.endpoints.push(EndpointDef {
                        address: host.clone(),
                        dns,
                        ports: BTreeMap::new(),
                        labels: Labels::default(),
                        workload: None,
                    });
                }
            }
        }
        // An EndpointSlice endpoint carries the labels of the Pod its targetRef
        // names, so DestinationRule subsets select Service endpoints as in Istio.
        let pods: HashMap<(&str, &str), &Entry> = bundle
            .entries
            .iter()
            .filter(|e| matches!(e.resource.spec, Spec::Pod(_)))
            .map(|e| ((e.resource.namespace.as_str(), e.resource.name.as_str()), e))
            .collect();
        let slices: Vec<_> = bundle
            .of(|s| match s {
                Spec::EndpointSlice(e) => Some(e),
                _ => None,
            })
            .collect();
        for (entry, svc) in bundle.of(|s| match s {
            Spec::Service(s) => Some(s),
            _ => None,
        }) {
            let ns = &entry.resource.namespace;
            let name = &entry.resource.name;
            let mut def = ServiceDef {
                namespace: ns.clone(),
                kubernetes: true,
                addresses: svc
                    .cluster_ips
                    .iter()
                    .chain(svc.cluster_ip.iter())
                    .filter_map(|a| a.parse().ok())
                    .collect(),
                ..ServiceDef::default()
            };
            def.addresses.dedup();
            for p in &svc.ports {
                let Some(number) = port_u16(p.port) else { continue };
                let target = p
                    .target_port
                    .as_ref()
                    .and_then(|t| t.as_i64())
                    .and_then(|t| port_u16(Some(t)));
                def.ports.push(PortDef {
                    number,
                    name: p.name.clone().unwrap_or_default(),
                    target,
                    protocol: service_port_protocol(p.app_protocol.as_deref(), p.name.as_deref()),
                });
            }
            for (slice_entry, slice) in &slices {
                let r = &slice_entry.resource;
                if r.namespace != *ns || r.metadata.labels.get("kubernetes.io/service-name") != Some(name) {
                    continue;
                }
                let ports: BTreeMap<String, u16> = slice
                    .ports
                    .iter()
                    .filter_map(|p| Some((p.name.clone().unwrap_or_default(), port_u16(p.port)?)))
                    .collect();
                for ep in &slice.endpoints {
                    if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                        continue;
                    }
                    let pod = target_pod(ep.target_ref.as_ref(), &r.namespace).and_then(|key| pods.get(&key));
                    // Istio names the Pod's owner (its Deployment...) as the workload
                    // in metrics; the Pod's own name is what the bundle has.
                    let (labels, workload) = match pod {
                        Some(p) => (p.resource.metadata.labels.clone(), Some(p.resource.name.clone())),
                        None => (Labels::new(), None),
                    };
                    for address in &ep.addresses {
                        def.endpoints.push(EndpointDef {
                            address: address.clone(),
                            dns: false,
                            ports: ports.clone(),
                            labels: labels.clone(),
                            workload: workload.clone(),
                        });
                    }
                }
            }
            reg.services.insert(format!("{name}.{ns}.svc.cluster.local"), def);
        }
        for (entry, dr) in bundle.of(|s| match s {
            Spec::DestinationRule(d) => Some(d),
            _ => None,
        }) {
            let host = fqdn(&dr.host, &entry.resource.namespace);
            if let Some(p) = &dr.traffic_policy {
                reg.policies.entry(host.clone()).or_insert_with(|| (**p).clone());
            }
            reg.subsets.entry(host).or_default().extend(dr.subsets.iter().cloned());
        }
        reg
    }

    /// Whether a DestinationRule defines `subset` for `host`.
    pub fn has_subset(&self, host: &str, subset: &str) -> bool {
        self.subsets
            .get(host)
            .is_some_and(|s| s.iter().any(|s| s.name == subset))
    }

    /// The DestinationRule traffic policies for `host`: top level and `subset`'s.
    pub fn traffic_policies(
        &self,
        host: &str,
        subset: Option<&str>,
    ) -> (Option<&TrafficPolicy>, Option<&TrafficPolicy>) {
        let subset = subset
            .and_then(|name| self.subsets.get(host)?.iter().find(|s| s.name == name))
            .and_then(|s| s.traffic_policy.as_deref());
        (self.policies.get(host), subset)
    }

    /// Every service, in host order.
    pub fn services(&self) -> Vec<ServiceView<'_>> {
        let mut out: Vec<ServiceView<'_>> = self
            .services
            .iter()
            .map(|(host, def)| {
                let mut ports: Vec<(u16, Option<&str>)> =
                    def.ports.iter().map(|p| (p.number, p.protocol.as_deref())).collect();
                ports.sort_unstable();
                ports.dedup_by_key(|p| p.0);
                ServiceView {
                    host,
                    namespace: &def.namespace,
                    kubernetes: def.kubernetes,
                    ports,
                    addresses: &def.addresses,
                }
            })
            .collect();
        out.sort_by_key(|s| s.host);
        out
    }

    /// Whether `host` is a service with `port`.
    pub fn has_port(&self, host: &str, port: u16) -> bool {
        self.services
            .get(host)
            .is_some_and(|def| def.ports.iter().any(|d| d.number == port))
    }

    /// The protocol declared for `host`'s `port`, uppercase.
    pub fn port_protocol(&self, host: &str, port: u16) -> Option<&str> {
        self.services
            .get(host)?
            .ports
            .iter()
            .find(|p| p.number == port)?
            .protocol
            .as_deref()
    }

    /// The service port and endpoints (optionally of a subset) for a destination.
    pub fn resolve(
        &self,
        host: &str,
        port: Option<u16>,
        subset: Option<&str>,
    ) -> Result<(u16, Vec<Endpoint>), ResolveError> {
        let def = self
            .services
            .get(host)
            .ok_or_else(|| ResolveError::HostNotFound(host.to_string()))?;
        let port_def = match port {
            Some(p) => def.ports.iter().find(|d| d.number == p),
            None if def.ports.len() == 1 => def.ports.first(),
            None => None,
        }
        .ok_or(ResolveError::PortNotFound {
            host: host.to_string(),
            port: port.unwrap_or(0),
        })?;
        let subset_labels = subset
            .and_then(|name| self.subsets.get(host)?.iter().find(|s| s.name == name))
            .map(|s| &s.labels);
        let endpoints = def
            .endpoints
            .iter()
            .filter(|e| subset_labels.is_none_or(|l| selects(l, &e.labels)))
            .filter_map(|e| {
                let target = e
                    .ports
                    .get(&port_def.name)
                    .copied()
                    .or(port_def.target)
                    .unwrap_or(port_def.number);
                let (ip, hostname) = match e.address.parse::<IpAddr>() {
                    Ok(ip) => (ip, None),
                    Err(_) if e.dns => (IpAddr::from([0, 0, 0, 0]), Some(e.address.clone())),
                    Err(_) => return None,
                };
                Some(Endpoint {
                    address: SocketAddr::new(ip, target),
                    hostname,
                    labels: e.labels.clone(),
                    workload: e.workload.clone(),
                })
            })
            .collect();
        Ok((port_def.number, endpoints))
    }
}

/// Istio's protocol selection for a Service port: `appProtocol`, else the name's
/// prefix (`grpc-web`, `http2-`...).
fn service_port_protocol(app_protocol: Option<&str>, name: Option<&str>) -> Option<String> {
    let from = |s: &str| {
        let s = s.to_ascii_lowercase();
        let p = match s.as_str() {
            "kubernetes.io/h2c" => "HTTP2",
            _ => ["grpc-web", "grpc", "http2", "https", "http", "tcp", "tls", "mongo"]
                .into_iter()
                .find(|p| s == *p || s.starts_with(&format!("{p}-")))?,
        };
        Some(p.to_ascii_uppercase())
    };
    app_protocol.and_then(from).or_else(|| name.and_then(from))
}

/// The (namespace, name) of the Pod an EndpointSlice endpoint's `targetRef` names
/// (its namespace defaults to the slice's).
fn target_pod<'a>(target: Option<&'a Value>, namespace: &'a str) -> Option<(&'a str, &'a str)> {
    let target = target?;
    if target.get("kind").and_then(Value::as_str) != Some("Pod") {
        return None;
    }
    let ns = target.get("namespace").and_then(Value::as_str).unwrap_or(namespace);
    Some((ns, target.get("name")?.as_str()?))
}

fn ports_map(ports: &BTreeMap<String, i64>) -> BTreeMap<String, u16> {
    ports
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), port_u16(Some(*v))?)))
        .collect()
}

/// Whether every selector label is present with the same value.
pub fn selects(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
