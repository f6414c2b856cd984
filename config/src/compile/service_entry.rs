//! ServiceEntry and Secret resources checked as Istio's webhook checks them
//! (validation.go `ValidateServiceEntry` and the CRD rules of ServiceEntry). Their
//! content reaches snapshots through the registry (endpoints) and translation
//! (certificates); nothing here needs compiling.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::bundle::Entry;
use crate::diag::Code;
use crate::hosts::{check_fqdn, check_service_host, is_label};
use crate::resources::kube::{secret_value, SecretBody};
use crate::resources::networking::ServiceEntrySpec;

use super::authz::ip_block;
use super::workload_entry::Addresses;
use super::Compiler;

/// Resolutions a ServiceEntry may declare (CRD enum).
const RESOLUTIONS: &[&str] = &["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"];

/// Protocols Istio knows (pkg/config/protocol, `Parse`), upper-cased.
pub(super) const PROTOCOLS: &[&str] = &[
    "TCP",
    "UDP",
    "GRPC",
    "GRPC-WEB",
    "HTTP",
    "HTTP_PROXY",
    "HTTP2",
    "HTTPS",
    "TLS",
    "MONGO",
    "REDIS",
    "MYSQL",
];

/// Whether `protocol` carries HTTP or TLS, which tell hosts apart (protocol `IsHTTP`, `IsTLS`).
fn is_http_or_tls(protocol: &str) -> bool {
    matches!(
        protocol.to_ascii_uppercase().as_str(),
        "HTTP" | "HTTP2" | "HTTP_PROXY" | "GRPC" | "GRPC-WEB" | "HTTPS" | "TLS"
    )
}

/// Whether `protocol` runs over TCP (protocol `IsTCP`).
fn is_tcp(protocol: &str) -> bool {
    matches!(
        protocol.to_ascii_uppercase().as_str(),
        "TCP" | "HTTPS" | "TLS" | "MONGO" | "REDIS" | "MYSQL"
    )
}

impl Compiler<'_> {
    /// A ServiceEntry (validation.go, `ValidateServiceEntry`; CRD rules of ServiceEntry).
    pub(super) fn service_entry(&mut self, e: &Entry, se: &ServiceEntrySpec) {
        let resolution = se.resolution.as_deref().unwrap_or("NONE");
        if !RESOLUTIONS.contains(&resolution) {
            self.err(
                e,
                Code::InvalidValue,
                "spec.resolution",
                format!("resolution {resolution:?} is not one of {}", RESOLUTIONS.join(", ")),
            );
            return;
        }
        if let Some(loc) = se
            .location
            .as_deref()
            .filter(|l| !matches!(*l, "MESH_EXTERNAL" | "MESH_INTERNAL"))
        {
            self.err(
                e,
                Code::InvalidValue,
                "spec.location",
                format!("location {loc:?} is not MESH_EXTERNAL or MESH_INTERNAL"),
            );
        }
        if let Some(sel) = &se.workload_selector {
            self.selector_labels(e, "spec.workloadSelector.labels", &sel.labels);
            if sel.labels.is_empty() {
                self.warn(
                    e,
                    Code::InvalidValue,
                    "spec.workloadSelector",
                    "workload selector specified without labels: it selects every workload of the namespace",
                );
            }
        }
        let has_endpoints = !se.endpoints.is_empty() || self.has_field(e, "spec.endpoints");
        if se.workload_selector.is_some() && has_endpoints {
            self.err(
                e,
                Code::Conflict,
                "spec",
                "only one of workloadSelector or endpoints can be set",
            );
        }
        self.service_entry_hosts(e, se, resolution);
        self.service_entry_addresses(e, se, resolution);
        let names = self.service_entry_ports(e, se, resolution);
        self.service_entry_resolution(e, se, resolution, &names);
        // Plain TCP cannot tell hosts apart: several need HTTP or TLS ports,
        // unless the hosts are ignored (NONE).
        if resolution != "NONE" && se.hosts.len() > 1 {
            if let Some(i) = se
                .ports
                .iter()
                .position(|p| !is_http_or_tls(p.protocol.as_deref().unwrap_or("")))
            {
                self.err(
                    e,
                    Code::Conflict,
                    &format!("spec.ports[{i}].protocol"),
                    "multiple hosts provided with non-HTTP, non-TLS ports",
                );
            }
        }
        self.export_to(e, &se.export_to, true, false);
    }

    fn service_entry_hosts(&mut self, e: &Entry, se: &ServiceEntrySpec, resolution: &str) {
        if se.hosts.is_empty() {
            self.err(
                e,
                Code::Required,
                "spec.hosts",
                "a ServiceEntry needs at least one host",
            );
        }
        if se.hosts.len() > 256 {
            self.err(e, Code::InvalidValue, "spec.hosts", "at most 256 hosts");
        }
        for (i, h) in se.hosts.iter().enumerate() {
            let f = format!("spec.hosts[{i}]");
            if let Err(msg) = check_service_host(h) {
                self.err(e, Code::InvalidValue, &f, msg.to_string());
            } else if resolution != "DYNAMIC_DNS" && h.contains('*') && !h.starts_with("*.") {
                self.warn(e, Code::InvalidValue, &f, format!("partial wildcard {h:?} not allowed"));
            }
        }
    }

    fn service_entry_addresses(&mut self, e: &Entry, se: &ServiceEntrySpec, resolution: &str) {
        if se.addresses.len() > 256 {
            self.err(e, Code::InvalidValue, "spec.addresses", "at most 256 addresses");
        }
        for (i, a) in se.addresses.iter().enumerate() {
            let f = format!("spec.addresses[{i}]");
            if a.matches('/').count() == 1 {
                if !matches!(resolution, "NONE" | "STATIC") {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &f,
                        "CIDR addresses are allowed only for NONE/STATIC resolution types",
                    );
                } else if ip_block(a).is_err() {
                    self.err(e, Code::InvalidValue, &f, format!("{a} is not a valid CIDR block"));
                }
            } else if a.parse::<IpAddr>().is_err() {
                self.err(e, Code::InvalidValue, &f, format!("{a} is not a valid IP"));
            }
        }
    }

    /// The ports (unique names and numbers, valid protocols); returns their names.
    fn service_entry_ports<'s>(&mut self, e: &Entry, se: &'s ServiceEntrySpec, resolution: &str) -> HashSet<&'s str> {
        let mut names = HashSet::new();
        let mut numbers = HashSet::new();
        // Istio gives a VIP to the hosts unless resolution is NONE, addresses are
        // given, or the resource opts out (pilot serviceentry,
        // `shouldV2AutoAllocateIPFromPieces`).
        let opted_out = e
            .resource
            .metadata
            .labels
            .get("networking.istio.io/enable-autoallocate-ip")
            .is_some_and(|v| v.eq_ignore_ascii_case("false"));
        let no_vip = se.addresses.is_empty() && (resolution == "NONE" || opted_out);
        for (i, p) in se.ports.iter().enumerate() {
            let f = format!("spec.ports[{i}]");
            let name = p.name.as_deref().unwrap_or("");
            if name.is_empty() {
                self.err(e, Code::Required, &format!("{f}.name"), "port name is required");
            } else if !names.insert(name) {
                self.err(
                    e,
                    Code::Conflict,
                    &format!("{f}.name"),
                    format!("service entry port name {name:?} already defined"),
                );
            } else if !is_label(name) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.name"),
                    format!("invalid port name: {name}"),
                );
            }
            match p.number {
                Some(n) if !(1..=65535).contains(&n) => self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.number"),
                    "port number must be in 1-65535",
                ),
                Some(n) if !numbers.insert(n) => self.err(
                    e,
                    Code::Conflict,
                    &format!("{f}.number"),
                    format!("service entry port {n} already defined"),
                ),
                None => self.err(e, Code::Required, &format!("{f}.number"), "port number is required"),
                Some(_) => {}
            }
            if let Some(t) = p.target_port.filter(|t| !(1..=65535).contains(t)) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.targetPort"),
                    format!("target port {t} is not in 1-65535"),
                );
            }
            let protocol = p.protocol.as_deref().unwrap_or("");
            if !protocol.is_empty() && !PROTOCOLS.contains(&protocol.to_ascii_uppercase().as_str()) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.protocol"),
                    format!("unsupported protocol: {protocol}"),
                );
            }
            if no_vip && (protocol.is_empty() || protocol == "TCP") {
                self.warn(
                    e,
                    Code::Required,
                    &format!("{f}.protocol"),
                    "addresses are required for ports serving TCP (or unset) protocol when IP autoallocation is not enabled",
                );
            }
        }
        names
    }

    fn service_entry_resolution(&mut self, e: &Entry, se: &ServiceEntrySpec, resolution: &str, ports: &HashSet<&str>) {
        for (i, ep) in se.endpoints.iter().enumerate() {
            let f = format!("spec.endpoints[{i}]");
            match resolution {
                "STATIC" => self.endpoint(e, &f, ep, Some(ports), Addresses::IpOnly),
                "DNS" | "DNS_ROUND_ROBIN" => self.endpoint(e, &f, ep, Some(ports), Addresses::Fqdn),
                _ => {}
            }
        }
        match resolution {
            "NONE" => {
                if self.has_field(e, "spec.endpoints") {
                    self.err(
                        e,
                        Code::Conflict,
                        "spec.endpoints",
                        "no endpoints should be provided for resolution type NONE",
                    );
                }
                if se.workload_selector.is_some() {
                    self.warn(
                        e,
                        Code::Conflict,
                        "spec.workloadSelector",
                        "workloadSelector should not be set when resolution mode is NONE",
                    );
                } else if se.endpoints.is_empty() {
                    self.warn(
                        e,
                        Code::NotEnforced,
                        "spec.resolution",
                        "resolution NONE forwards to the original destination, which only a sidecar knows; at a gateway requests to these hosts get 503",
                    );
                }
            }
            "DNS" | "DNS_ROUND_ROBIN" => {
                if se.endpoints.is_empty() {
                    // A host refused already (as a domain) is not reported twice.
                    let unresolvable = |h: &String| check_service_host(h).is_ok() && check_fqdn(h).is_err();
                    if let Some(i) = se.hosts.iter().position(unresolvable) {
                        self.err(
                            e,
                            Code::InvalidValue,
                            &format!("spec.hosts[{i}]"),
                            format!("hosts must be FQDNs without wildcards when resolution {resolution} has no endpoints: the host itself is resolved"),
                        );
                    }
                }
                if resolution == "DNS_ROUND_ROBIN" && se.endpoints.len() > 1 {
                    self.err(
                        e,
                        Code::InvalidValue,
                        "spec.endpoints",
                        "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN",
                    );
                }
                let tcp = se.ports.iter().any(|p| is_tcp(p.protocol.as_deref().unwrap_or("")));
                if !se.addresses.is_empty() && tcp && se.hosts.len() > 1 {
                    self.warn(
                        e,
                        Code::Conflict,
                        "spec.hosts",
                        "service entry can not have more than one host specified simultaneously with address and tcp port",
                    );
                }
            }
            "DYNAMIC_DNS" => self.dynamic_dns(e, se),
            _ => {}
        }
    }

    /// DYNAMIC_DNS (istio.io/api 1.2x): wildcard hosts resolved per request.
    fn dynamic_dns(&mut self, e: &Entry, se: &ServiceEntrySpec) {
        for (i, h) in se.hosts.iter().enumerate() {
            if !h.starts_with('*') {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("spec.hosts[{i}]"),
                    "host must be wildcarded for resolution mode DYNAMIC_DNS",
                );
            }
        }
        if !se.addresses.is_empty() {
            self.err(
                e,
                Code::Conflict,
                "spec.addresses",
                "addresses cannot be set for resolution type DYNAMIC_DNS",
            );
        }
        if !se.endpoints.is_empty() {
            self.err(
                e,
                Code::Conflict,
                "spec.endpoints",
                "endpoints cannot be set for resolution type DYNAMIC_DNS",
            );
        }
        for (i, p) in se.ports.iter().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("").to_ascii_uppercase();
            if !matches!(proto.as_str(), "HTTP" | "TLS" | "GRPC" | "HTTP2") {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("spec.ports[{i}].protocol"),
                    "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type DYNAMIC_DNS",
                );
            }
        }
        self.warn(
            e,
            Code::NotEnforced,
            "spec.resolution",
            "resolution DYNAMIC_DNS is accepted but not served by this version of Strait: requests to these hosts get 503",
        );
    }

    pub(super) fn secret(&mut self, e: &Entry, s: &SecretBody) {
        if s.secret_type.as_deref() != Some("kubernetes.io/tls") {
            return;
        }
        for key in ["tls.crt", "tls.key"] {
            let present = s.data.contains_key(key) || s.string_data.contains_key(key);
            if !present {
                self.err(
                    e,
                    Code::Required,
                    "data",
                    format!("a kubernetes.io/tls Secret needs {key}"),
                );
                continue;
            }
            // stringData wins over data, as in Kubernetes.
            let field = if s.string_data.contains_key(key) {
                format!("stringData.{key}")
            } else {
                format!("data.{key}")
            };
            match secret_value(s, key) {
                None => self.err(e, Code::InvalidValue, &field, "not valid base64"),
                Some(v) if !v.windows(10).any(|w| w == b"-----BEGIN") => {
                    self.err(e, Code::InvalidCertificate, &field, "not PEM")
                }
                Some(_) => {}
            }
        }
    }
}
