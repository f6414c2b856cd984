//! `/config_dump?resource=...` and `/server_info`: one part of the running
//! configuration at a time, with cluster and certificate indexes resolved to their
//! names so each part reads on its own. Certificates are described from the
//! compiled chain (names, validity, fingerprint); private keys never leave the
//! process.

use std::str::FromStr;

use serde_json::{json, Map, Value};
use strait_config::Snapshot;

use crate::certs::CompiledCert;
use crate::runtime::Runtime;

/// A part of `/config_dump`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// Ports, protocols, TLS servers, virtual host names and TCP/TLS routes.
    Listeners,
    /// Route tables: per port, the virtual hosts and their routes.
    Routes,
    /// Upstream clusters with endpoints and policies.
    Clusters,
    /// Server certificates in use (no keys).
    Secrets,
}

impl Resource {
    /// Every part, by its query name.
    pub const ALL: [(&'static str, Resource); 4] = [
        ("listeners", Resource::Listeners),
        ("routes", Resource::Routes),
        ("clusters", Resource::Clusters),
        ("secrets", Resource::Secrets),
    ];

    /// The query name.
    pub fn name(self) -> &'static str {
        Resource::ALL.iter().find(|(_, r)| *r == self).map_or("", |(n, _)| n)
    }
}

/// A `resource=` value that names no part.
#[derive(Debug, thiserror::Error)]
#[error("unknown resource {0:?}; use one of listeners, routes, clusters, secrets")]
pub struct UnknownResource(pub String);

impl FromStr for Resource {
    type Err = UnknownResource;

    fn from_str(s: &str) -> Result<Resource, UnknownResource> {
        Resource::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, r)| *r)
            .ok_or_else(|| UnknownResource(s.to_string()))
    }
}

/// `{"version": N, "<resource>": [...]}` for one part of `runtime`.
pub fn section(runtime: &Runtime, resource: Resource) -> Result<Value, serde_json::Error> {
    let snap = &runtime.snapshot;
    let items = match resource {
        Resource::Listeners => listeners(snap)?,
        Resource::Routes => routes(snap)?,
        Resource::Clusters => clusters(runtime)?,
        Resource::Secrets => Value::Array(
            runtime
                .certs
                .iter()
                .enumerate()
                .map(|(i, c)| secret(snap, i, c))
                .collect(),
        ),
    };
    let mut out = Map::new();
    out.insert("version".into(), snap.version.into());
    out.insert(resource.name().into(), items);
    Ok(Value::Object(out))
}

/// The snapshot with its clusters' endpoints (kept apart from it) shown in them.
pub fn snapshot_with_endpoints(runtime: &Runtime) -> Result<Value, serde_json::Error> {
    let mut snap = serde_json::to_value(&*runtime.snapshot)?;
    if let Value::Object(o) = &mut snap {
        o.insert("clusters".into(), clusters(runtime)?);
    }
    Ok(snap)
}

/// The clusters, each with its endpoints (kept apart from the snapshot).
fn clusters(runtime: &Runtime) -> Result<Value, serde_json::Error> {
    let mut all = with_cluster_names(serde_json::to_value(&runtime.snapshot.clusters)?, &runtime.snapshot);
    if let Value::Array(list) = &mut all {
        for (i, c) in list.iter_mut().enumerate() {
            if let (Value::Object(o), Some(eps)) = (c, runtime.endpoints.clusters.get(i)) {
                if let Value::Object(e) = serde_json::to_value(eps)? {
                    o.extend(e);
                }
            }
        }
    }
    Ok(all)
}

fn listeners(snap: &Snapshot) -> Result<Value, serde_json::Error> {
    let mut out = Vec::new();
    for l in &snap.listeners {
        let mut tls_servers = Vec::new();
        for t in &l.tls_servers {
            let mut v = serde_json::to_value(t)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("certificate_name".into(), certificate_name(snap, t.certificate).into());
            }
            tls_servers.push(v);
        }
        // Routes have their own part; here only which names the port serves.
        let virtual_hosts: Vec<Value> = l
            .virtual_hosts
            .iter()
            .map(|vh| {
                json!({
                    "domain": vh.domain,
                    "tls_server": vh.tls_server,
                    "https_redirect": vh.https_redirect,
                    "routes": vh.routes.len(),
                })
            })
            .collect();
        out.push(json!({
            "port": l.port,
            "protocol": l.protocol,
            "tls_servers": tls_servers,
            "virtual_hosts": virtual_hosts,
            "l4_routes": with_cluster_names(serde_json::to_value(&l.l4_routes)?, snap),
        }));
    }
    Ok(Value::Array(out))
}

fn routes(snap: &Snapshot) -> Result<Value, serde_json::Error> {
    let mut out = Vec::new();
    for l in snap.listeners.iter().filter(|l| !l.virtual_hosts.is_empty()) {
        let mut hosts = Vec::new();
        for vh in &l.virtual_hosts {
            hosts.push(json!({
                "domain": vh.domain,
                "https_redirect": vh.https_redirect,
                "routes": with_cluster_names(serde_json::to_value(&vh.routes)?, snap),
            }));
        }
        // Named as Istio names a gateway's route configurations.
        let name = format!("{}.{}", if l.tls_servers.is_empty() { "http" } else { "https" }, l.port);
        out.push(json!({ "name": name, "port": l.port, "virtual_hosts": hosts }));
    }
    Ok(Value::Array(out))
}

fn certificate_name(snap: &Snapshot, index: usize) -> &str {
    snap.certificates.get(index).map_or("", |c| c.name.as_str())
}

/// Adds `cluster_name` beside every `cluster` index (destinations, mirrors).
fn with_cluster_names(mut value: Value, snap: &Snapshot) -> Value {
    fn walk(v: &mut Value, snap: &Snapshot) {
        match v {
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, snap)),
            Value::Object(o) => {
                let name = o
                    .get("cluster")
                    .and_then(Value::as_u64)
                    .and_then(|i| snap.clusters.get(usize::try_from(i).ok()?))
                    .map(|c| c.name.clone());
                if let Some(name) = name {
                    o.insert("cluster_name".into(), name.into());
                }
                o.values_mut().for_each(|x| walk(x, snap));
            }
            _ => {}
        }
    }
    walk(&mut value, snap);
    value
}

/// One certificate: where it comes from and what its leaf says.
fn secret(snap: &Snapshot, index: usize, cert: &CompiledCert) -> Value {
    let source = snap
        .certificates
        .get(index)
        .and_then(|c| serde_json::to_value(&c.source).ok())
        .unwrap_or(Value::Null);
    let mut out = json!({
        "name": cert.name,
        "source": source,
        "chain_length": cert.key.cert.len(),
    });
    if let (Some(o), Some(leaf)) = (out.as_object_mut(), cert.key.cert.first()) {
        o.extend(describe_certificate(leaf.as_ref()));
    }
    out
}

/// Names, validity and fingerprint of a DER certificate (the public part only).
pub fn describe_certificate(der: &[u8]) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("sha256_fingerprint".into(), sha256_hex(der).into());
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => {
            let mut dns = Vec::new();
            let mut uris = Vec::new();
            if let Ok(Some(san)) = cert.subject_alternative_name() {
                for name in &san.value.general_names {
                    match name {
                        x509_parser::extensions::GeneralName::DNSName(d) => dns.push(d.to_string()),
                        x509_parser::extensions::GeneralName::URI(u) => uris.push(u.to_string()),
                        _ => {}
                    }
                }
            }
            let validity = cert.validity();
            out.insert("subject".into(), cert.subject().to_string().into());
            out.insert("issuer".into(), cert.issuer().to_string().into());
            out.insert("serial".into(), cert.tbs_certificate.raw_serial_as_string().into());
            out.insert("dns_names".into(), dns.into());
            if !uris.is_empty() {
                out.insert("uris".into(), uris.into());
            }
            out.insert(
                "not_before".into(),
                crate::rfc3339::seconds(validity.not_before.timestamp()).into(),
            );
            out.insert(
                "not_after".into(),
                crate::rfc3339::seconds(validity.not_after.timestamp()).into(),
            );
        }
        // Compiled certificates were parsed by rustls already; say so rather than hide it.
        Err(e) => {
            out.insert("error".into(), format!("unreadable certificate: {e}").into());
        }
    }
    out
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A digest of what the proxy serves: the snapshot as `/config_dump` shows it
/// without its local version counter and file names, plus the certificates'
/// fingerprints (their PEM is not serialized). Two proxies serving the same
/// configuration have the same digest, whatever their reload history.
pub fn config_digest(runtime: &Runtime) -> Result<String, serde_json::Error> {
    let mut snap = serde_json::to_value(&runtime.snapshot)?;
    if let Some(o) = snap.as_object_mut() {
        o.remove("version");
        o.remove("sources");
    }
    let mut bytes = serde_json::to_vec(&snap)?;
    bytes.extend(serde_json::to_vec(&*runtime.endpoints)?);
    for c in runtime.certs.iter() {
        for der in c.key.cert.iter() {
            bytes.extend_from_slice(sha256_hex(der.as_ref()).as_bytes());
        }
    }
    Ok(sha256_hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names() {
        assert_eq!("routes".parse::<Resource>().ok(), Some(Resource::Routes));
        assert_eq!(Resource::Secrets.name(), "secrets");
        assert!("endpoints".parse::<Resource>().is_err());
    }

    #[test]
    fn certificate_description_has_names_and_no_key() {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["app.example.com".to_string()]).expect("params");
        let cert = params.self_signed(&key).expect("sign");
        let d = describe_certificate(cert.der());
        assert_eq!(d["dns_names"], json!(["app.example.com"]));
        assert_eq!(d["sha256_fingerprint"].as_str().map(str::len), Some(64));
        assert!(d["not_after"].as_str().is_some_and(|s| s.ends_with('Z')));
    }
}
