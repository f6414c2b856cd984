//! ServiceEntry and Secret resources checked as Istio's webhook checks them. Their
//! content reaches snapshots through the registry (endpoints) and translation
//! (certificates); nothing here needs compiling.

use crate::bundle::Entry;
use crate::diag::Code;
use crate::hosts::check_service_host;
use crate::resources::kube::{secret_value, SecretBody};
use crate::resources::networking::ServiceEntrySpec;

use super::Compiler;

impl Compiler<'_> {
    pub(super) fn service_entry(&mut self, e: &Entry, se: &ServiceEntrySpec) {
        if se.hosts.is_empty() {
            self.err(
                e,
                Code::Required,
                "spec.hosts",
                "a ServiceEntry needs at least one host",
            );
        }
        for (i, h) in se.hosts.iter().enumerate() {
            if let Err(msg) = check_service_host(h) {
                self.err(e, Code::InvalidValue, &format!("spec.hosts[{i}]"), msg.to_string());
            }
        }
        for (i, p) in se.ports.iter().enumerate() {
            if !p.number.is_some_and(|n| (1..=65535).contains(&n)) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("spec.ports[{i}].number"),
                    "port number must be in 1-65535",
                );
            }
        }
        let resolution = se.resolution.as_deref().unwrap_or("NONE");
        if !matches!(resolution, "NONE" | "STATIC" | "DNS" | "DNS_ROUND_ROBIN") {
            self.err(
                e,
                Code::InvalidValue,
                "spec.resolution",
                format!("resolution {resolution:?} is not NONE, STATIC, DNS or DNS_ROUND_ROBIN"),
            );
        }
        if resolution == "STATIC" {
            for (i, ep) in se.endpoints.iter().enumerate() {
                match &ep.address {
                    None => self.err(
                        e,
                        Code::Required,
                        &format!("spec.endpoints[{i}].address"),
                        "STATIC endpoints need an address",
                    ),
                    Some(a) if a.parse::<std::net::IpAddr>().is_err() => self.err(
                        e,
                        Code::InvalidValue,
                        &format!("spec.endpoints[{i}].address"),
                        format!("{a:?} is not an IP address (STATIC resolution)"),
                    ),
                    _ => {}
                }
            }
        } else if resolution.starts_with("DNS") && se.endpoints.is_empty() && se.workload_selector.is_none() {
            for (i, h) in se.hosts.iter().enumerate() {
                if h.starts_with('*') {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &format!("spec.hosts[{i}]"),
                        "a wildcard host cannot be resolved: DNS resolution without endpoints needs plain hosts",
                    );
                }
            }
        } else if resolution == "NONE" && se.endpoints.is_empty() {
            self.warn(
                e,
                Code::NotEnforced,
                "spec.resolution",
                "resolution NONE forwards to the original destination, which only a sidecar knows; at a gateway requests to these hosts get 503",
            );
        }
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
