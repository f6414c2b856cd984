//! WorkloadEntry resources, and the endpoints of ServiceEntries (the same type),
//! checked as Istio checks them: validation.go `validateWorkloadEntry` and the CRD
//! rules of `WorkloadEntry` in istio.io/api. Their content reaches snapshots through
//! the registry; nothing here needs compiling.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::bundle::Entry;
use crate::diag::Code;
use crate::hosts::{check_fqdn, is_label};
use crate::resources::networking::WorkloadEntrySpec;

use super::Compiler;

/// Istio's prefix for a Unix domain socket address.
pub const UNIX_PREFIX: &str = "unix://";

/// How an endpoint's address may be written where it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Addresses {
    /// A WorkloadEntry: an IP, a host name or a socket.
    IpOrFqdn,
    /// A DNS ServiceEntry endpoint: an IP or a host name.
    Fqdn,
    /// A STATIC ServiceEntry endpoint: an IP or a socket.
    IpOnly,
}

/// Why a `unix://` address is refused (validation.go, `ValidateUnixAddress`; CRD
/// rules of `address`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnixAddressError {
    /// `unix://` alone.
    #[error("unix address must not be empty")]
    Empty,
    /// Neither an absolute path nor an abstract socket (`@name`).
    #[error("UDS must be an absolute path or abstract socket: {0:?}")]
    NotAbsolute(String),
    /// A path ending in `/`.
    #[error("UDS may not be a dir: {0:?}")]
    Directory(String),
}

/// Checks the path of a `unix://` address.
pub fn check_unix_path(path: &str) -> Result<(), UnixAddressError> {
    if path.is_empty() {
        Err(UnixAddressError::Empty)
    } else if path.starts_with('@') {
        Ok(())
    } else if !path.starts_with('/') {
        Err(UnixAddressError::NotAbsolute(path.to_string()))
    } else if path.ends_with('/') {
        Err(UnixAddressError::Directory(path.to_string()))
    } else {
        Ok(())
    }
}

impl Compiler<'_> {
    /// A WorkloadEntry resource: Istio does not know its ServiceEntry, so any port
    /// name goes (validation.go, `ValidateWorkloadEntry`).
    pub(super) fn workload_entry(&mut self, e: &Entry, we: &WorkloadEntrySpec) {
        self.endpoint(e, "spec", we, None, Addresses::IpOrFqdn);
    }

    /// One workload entry at `f`; `service_ports`: the port names of its
    /// ServiceEntry, which its ports must be among.
    pub(super) fn endpoint(
        &mut self,
        e: &Entry,
        f: &str,
        we: &WorkloadEntrySpec,
        service_ports: Option<&HashSet<&str>>,
        addresses: Addresses,
    ) {
        let address = we.address.as_deref().unwrap_or("");
        let network = we.network.as_deref().unwrap_or("");
        let af = format!("{f}.address");
        if address.is_empty() {
            if network.is_empty() {
                self.err(
                    e,
                    Code::Required,
                    &af,
                    "address is required (or a network, for a remote gateway)",
                );
                return;
            }
            self.warn(
                e,
                Code::Required,
                &af,
                format!("address is unset with network {network:?}: reached through that network's gateway"),
            );
        }
        if address.len() > 256 {
            self.err(e, Code::InvalidValue, &af, "address longer than 256 characters");
        } else if let Some(path) = address
            .strip_prefix(UNIX_PREFIX)
            .filter(|_| addresses != Addresses::Fqdn)
        {
            if let Err(err) = check_unix_path(path) {
                self.err(e, Code::InvalidValue, &af, err.to_string());
            }
            if !we.ports.is_empty() {
                self.err(
                    e,
                    Code::Conflict,
                    &format!("{f}.ports"),
                    format!("unix endpoint {address} must not include ports"),
                );
            }
            if service_ports.is_some_and(|p| p.len() != 1) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &af,
                    "a unix endpoint needs its ServiceEntry to have exactly one port",
                );
            }
        } else if !address.is_empty() && address.parse::<IpAddr>().is_err() {
            match addresses {
                Addresses::IpOnly => self.err(
                    e,
                    Code::InvalidValue,
                    &af,
                    format!("endpoint address {address:?} is not a valid IP address (STATIC resolution)"),
                ),
                Addresses::IpOrFqdn | Addresses::Fqdn => {
                    if check_fqdn(address).is_err() {
                        self.err(
                            e,
                            Code::InvalidValue,
                            &af,
                            format!("endpoint address {address:?} is not a valid FQDN or an IP address"),
                        );
                    }
                }
            }
        }
        self.endpoint_ports(e, f, we, service_ports);
        self.labels(e, &format!("{f}.labels"), &we.labels);
        if we.labels.len() > 256 {
            self.err(e, Code::InvalidValue, &format!("{f}.labels"), "at most 256 labels");
        }
        if let Some(w) = we.weight {
            if u32::try_from(w).is_err() {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.weight"),
                    format!("weight {w} is not in 0-4294967295"),
                );
            }
        }
        for (name, value, max) in [
            ("locality", we.locality.as_deref(), 2048),
            ("network", we.network.as_deref(), 2048),
            ("serviceAccount", we.service_account.as_deref(), 253),
        ] {
            if value.is_some_and(|v| v.len() > max) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.{name}"),
                    format!("longer than {max} characters"),
                );
            }
        }
    }

    /// Port names (DNS-1123 labels, declared by the ServiceEntry if there is one)
    /// and numbers (1-65535) of an endpoint.
    fn endpoint_ports(&mut self, e: &Entry, f: &str, we: &WorkloadEntrySpec, service_ports: Option<&HashSet<&str>>) {
        if we.ports.len() > 128 {
            self.err(e, Code::InvalidValue, &format!("{f}.ports"), "at most 128 ports");
        }
        for (name, port) in &we.ports {
            let pf = format!("{f}.ports.{name}");
            // The CRD takes names of at most 62 characters, one less than a label.
            if !is_label(name) || name.len() >= 63 {
                self.err(e, Code::InvalidValue, &pf, format!("invalid port name {name:?}"));
            } else if service_ports.is_some_and(|p| !p.contains(name.as_str())) {
                self.err(
                    e,
                    Code::ReferenceNotFound,
                    &pf,
                    format!("endpoint port {name} is not defined by the service entry"),
                );
            }
            if !(1..=65535).contains(port) {
                self.err(e, Code::InvalidValue, &pf, format!("port {port} is not in 1-65535"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_paths_are_absolute_files_or_abstract() {
        assert_eq!(check_unix_path("/var/run/app.sock"), Ok(()));
        assert_eq!(check_unix_path("@abstract"), Ok(()));
        assert_eq!(check_unix_path(""), Err(UnixAddressError::Empty));
        assert_eq!(
            check_unix_path("relative.sock"),
            Err(UnixAddressError::NotAbsolute("relative.sock".into()))
        );
        assert_eq!(
            check_unix_path("/dir/"),
            Err(UnixAddressError::Directory("/dir/".into()))
        );
    }
}
