//! Host names as Istio reads them: short names, wildcards, `namespace/host`
//! server hosts and gateway references, and their syntax as Istio's validation
//! checks it (`ValidateWildcardDomain` and its kin in pkg/config/validation/agent).

use std::net::IpAddr;

/// Why a host name is refused, in the words of Istio's validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Nothing at all.
    #[error("empty domain name not allowed")]
    Empty,
    /// More than 255 bytes.
    #[error("domain name {0:?} too long (max 255)")]
    TooLong(String),
    /// A label that is not DNS-1123 (letters, digits and inner `-`, at most 63),
    /// or a wildcard other than a leading `*`.
    #[error("domain name {domain:?} invalid (label {label:?} invalid)")]
    Label {
        /// The whole name.
        domain: String,
        /// The bad label.
        label: String,
    },
    /// The last label is a number, as in an IP address.
    #[error("domain name {domain:?} invalid (top level domain {tld:?} cannot be all-numeric)")]
    NumericTld {
        /// The whole name.
        domain: String,
        /// The last label.
        tld: String,
    },
    /// `outbound_...` names that do not follow Istio's generated SNI format.
    #[error("domain name {0:?} invalid: should follow outbound_.<PORT>_._.<HOSTNAME> format")]
    GeneratedSni(String),
    /// `*` where a host must name something.
    #[error("invalid host *: a wildcard matching every host cannot be used here")]
    Everything,
    /// A Gateway server host without a dot.
    #[error("{0:?}: short names (non FQDN) are not allowed in Gateway server hosts")]
    ShortName(String),
    /// A `*` that is not a whole leading label.
    #[error("partial wildcard {0:?} not allowed")]
    PartialWildcard(String),
    /// `namespace/host` with an empty side.
    #[error("{0:?}: config namespace and dnsName in host entry cannot be empty")]
    EmptyPart(String),
    /// The namespace of `namespace/host` is neither `*`, `.` nor a DNS-1123 label.
    #[error("invalid namespace value {0:?} in gateway")]
    Namespace(String),
}

/// A DNS-1123 label: letters, digits and `-` not at either end, 1-63 bytes
/// (Istio's `labels.IsDNS1123Label`).
pub fn is_label(label: &str) -> bool {
    let b = label.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b.first() != Some(&b'-')
        && b.last() != Some(&b'-')
}

/// A label, `*`, or a label after `*` or `*-` (`*foo`, `*-foo`), at most 63 bytes.
fn is_wildcard_label(label: &str) -> bool {
    label.len() <= 63
        && (label == "*"
            || is_label(label)
            || label
                .strip_prefix('*')
                .is_some_and(|rest| is_label(rest) || rest.strip_prefix('-').is_some_and(is_label)))
}

/// Istio's `CheckDNS1123Preconditions`: not empty, at most 255 bytes.
fn preconditions(name: &str) -> Result<(), HostError> {
    if name.is_empty() {
        Err(HostError::Empty)
    } else if name.len() > 255 {
        Err(HostError::TooLong(name.to_string()))
    } else {
        Ok(())
    }
}

/// Istio's `ValidateDNS1123Labels` on `rest` of `domain`: every label DNS-1123,
/// the last not a number; a trailing dot (`istio.io.`) is allowed.
fn labels(domain: &str, rest: &str) -> Result<(), HostError> {
    let tld = rest.rsplit('.').next().unwrap_or_default();
    if tld.parse::<i64>().is_ok() {
        return Err(HostError::NumericTld {
            domain: domain.to_string(),
            tld: tld.to_string(),
        });
    }
    let count = rest.split('.').count();
    for (i, label) in rest.split('.').enumerate() {
        if i + 1 == count && label.is_empty() {
            return Ok(());
        }
        if !is_label(label) {
            return Err(HostError::Label {
                domain: domain.to_string(),
                label: label.to_string(),
            });
        }
    }
    Ok(())
}

/// Istio's `ValidateWildcardDomain`: a DNS name whose first label may be a
/// wildcard (`*`, `*.example.com`); short names such as `reviews` pass.
pub fn check_wildcard_domain(domain: &str) -> Result<(), HostError> {
    preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (domain, None),
    };
    if !is_wildcard_label(first) {
        return Err(HostError::Label {
            domain: domain.to_string(),
            label: first.to_string(),
        });
    }
    rest.map_or(Ok(()), |rest| labels(domain, rest))
}

/// Istio's `ValidateFQDN`: a DNS name without wildcards (a trailing dot allowed).
pub fn check_fqdn(name: &str) -> Result<(), HostError> {
    preconditions(name)?;
    labels(name, name)
}

/// Istio's check of a VirtualService host (and of a tls route's `sniHosts`): a
/// wildcard domain or an IP address. Bound to gateways only (`gateway`), with SNI
/// routes (`sni`), the names Istio generates for AUTO_PASSTHROUGH
/// (`outbound_.8080_._.reviews.default.svc.cluster.local`) pass too.
pub fn check_virtual_service_host(host: &str, gateway: bool, sni: bool) -> Result<(), HostError> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if gateway && sni && host.starts_with("outbound_") {
        preconditions(host)?;
        let parts: Vec<&str> = host.split('_').collect();
        let port = parts.get(1).map(|p| p.trim_matches('.'));
        let name = parts.get(3).map(|h| h.trim_matches('.'));
        return match (port, name) {
            (Some(port), Some(name))
                if port.bytes().any(|b| b.is_ascii_digit()) && name.bytes().any(|b| b.is_ascii_alphabetic()) =>
            {
                Ok(())
            }
            _ => Err(HostError::GeneratedSni(host.to_string())),
        };
    }
    check_wildcard_domain(host)
}

/// Istio's check of a host that names services (a route destination, a
/// ServiceEntry host): a wildcard domain, but not `*` alone.
pub fn check_service_host(host: &str) -> Result<(), HostError> {
    if host == "*" {
        return Err(HostError::Everything);
    }
    check_wildcard_domain(host)
}

/// Istio's `ValidateNamespaceSlashWildcardHostname` for a Gateway server host:
/// `[namespace/]host` where the namespace is `*`, `.` or a DNS-1123 label, and the
/// host is `*`, a wildcard domain with a dot, or an IP address; a `*` only as the
/// whole first label.
pub fn check_server_host(server_host: &str) -> Result<(), HostError> {
    let host = match server_host.split_once('/') {
        None => server_host,
        Some((ns, host)) => {
            if ns.is_empty() || host.is_empty() {
                return Err(HostError::EmptyPart(server_host.to_string()));
            }
            if ns != "*" && ns != "." && !is_label(ns) {
                return Err(HostError::Namespace(ns.to_string()));
            }
            host
        }
    };
    if host != "*" && !host.contains('.') {
        return Err(HostError::ShortName(host.to_string()));
    }
    if host.parse::<IpAddr>().is_err() {
        check_wildcard_domain(host)?;
    }
    if host.contains('*') && host != "*" && !host.starts_with("*.") {
        return Err(HostError::PartialWildcard(host.to_string()));
    }
    Ok(())
}

/// The fully qualified form of `host` for a resource in `namespace`: a name without
/// dots is a Kubernetes service in that namespace; anything else is taken as written.
pub fn fqdn(host: &str, namespace: &str) -> String {
    let host = host.to_ascii_lowercase();
    if host == "*" || host.contains('.') {
        host
    } else {
        format!("{host}.{namespace}.svc.cluster.local")
    }
}

/// The (namespace, name) a gateway reference points to; `None` for `mesh`.
pub fn gateway_ref<'a>(reference: &'a str, namespace: &'a str) -> Option<(&'a str, &'a str)> {
    if reference == "mesh" {
        return None;
    }
    Some(match reference.split_once('/') {
        Some((ns, name)) => (ns, name),
        // `name.namespace.svc.cluster.local` is the older FQDN form.
        None => match reference.split_once('.') {
            Some((name, rest)) => (rest.split('.').next().unwrap_or(namespace), name),
            None => (namespace, reference),
        },
    })
}

/// A Gateway server host `ns/host`: the namespace allowed to bind (`None` = any)
/// and the host.
pub fn server_host<'a>(host: &'a str, gateway_namespace: &'a str) -> (Option<&'a str>, &'a str) {
    match host.split_once('/') {
        Some(("*", h)) => (None, h),
        Some((".", h)) => (Some(gateway_namespace), h),
        Some((ns, h)) => (Some(ns), h),
        None => (None, host),
    }
}

/// The domain a VirtualService host (of namespace `vs_ns`) is served as on a Gateway
/// server host (of a Gateway in `gateway_ns`), if that server takes it.
pub fn bind(server: &str, gateway_ns: &str, vs_host: &str, vs_ns: &str) -> Option<String> {
    let (allowed_ns, host) = server_host(server, gateway_ns);
    if allowed_ns.is_some_and(|ns| ns != vs_ns) {
        return None;
    }
    intersect(&fqdn(vs_host, vs_ns), host)
}

/// The hosts two host patterns have in common, as the more specific of the two.
pub fn intersect(a: &str, b: &str) -> Option<String> {
    let a = a.to_ascii_lowercase();
    let b = b.to_ascii_lowercase();
    if a == b {
        return Some(a);
    }
    if covers(&a, &b) {
        return Some(b);
    }
    if covers(&b, &a) {
        return Some(a);
    }
    None
}

/// Whether wildcard pattern `wide` includes every host of `narrow`.
fn covers(wide: &str, narrow: &str) -> bool {
    if wide == "*" {
        return true;
    }
    match wide.strip_prefix('*') {
        Some(suffix) => {
            let narrow_tail = narrow.strip_prefix('*').unwrap_or(narrow);
            narrow_tail.len() > suffix.len() && narrow_tail.ends_with(suffix)
                || narrow.starts_with('*') && narrow_tail == suffix
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_in_namespace() {
        assert_eq!(fqdn("reviews", "shop"), "reviews.shop.svc.cluster.local");
        assert_eq!(fqdn("App.Example.com", "shop"), "app.example.com");
    }

    #[test]
    fn gateway_references() {
        assert_eq!(gateway_ref("edge/gw", "default"), Some(("edge", "gw")));
        assert_eq!(gateway_ref("gw", "shop"), Some(("shop", "gw")));
        assert_eq!(gateway_ref("gw.edge.svc.cluster.local", "shop"), Some(("edge", "gw")));
        assert_eq!(gateway_ref("mesh", "shop"), None);
    }

    #[test]
    fn server_hosts_bind_by_namespace_and_pattern() {
        assert_eq!(
            bind("*.example.com", "edge", "app.example.com", "shop").as_deref(),
            Some("app.example.com")
        );
        assert_eq!(
            bind("shop/*", "edge", "app.example.com", "shop").as_deref(),
            Some("app.example.com")
        );
        assert_eq!(bind("other/*", "edge", "app.example.com", "shop"), None);
        assert_eq!(bind("./*", "edge", "app.example.com", "shop"), None);
        assert_eq!(bind("app.example.com", "edge", "api.example.com", "shop"), None);
    }

    #[test]
    fn host_syntax_as_istio_checks_it() {
        for ok in [
            "reviews",
            "*",
            "*.example.com",
            "app.example.com",
            "App.Example.COM",
            "istio.io.",
            "*foo.example.com",
            "*-foo.example.com",
            "a-b.internal",
            "xn--bcher-kva.example",
        ] {
            assert_eq!(check_wildcard_domain(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "admin.internal ",
            " ratings",
            "a.example\n.com",
            "a..example.com",
            "-a.example.com",
            "a-.example.com",
            "a.*.example.com",
            "foo*.example.com",
            "a_b.example.com",
            "10.0.0.1",
            "a.123",
        ] {
            assert!(check_wildcard_domain(bad).is_err(), "{bad:?}");
        }
        assert!(
            check_wildcard_domain(&"a".repeat(64)).is_err(),
            "labels have at most 63 bytes"
        );
        let long = vec!["a".repeat(63); 5].join(".");
        assert_eq!(check_wildcard_domain(&long), Err(HostError::TooLong(long.clone())));
        let e = check_wildcard_domain("admin.internal ").expect_err("space");
        assert_eq!(
            e.to_string(),
            r#"domain name "admin.internal " invalid (label "internal " invalid)"#
        );
    }

    #[test]
    fn hosts_by_the_field_they_are_in() {
        // VirtualService hosts and sniHosts may be IPs; gateway SNI routes may use
        // the names Istio generates for AUTO_PASSTHROUGH.
        assert_eq!(check_virtual_service_host("10.0.0.1", false, false), Ok(()));
        assert_eq!(check_virtual_service_host("2001:db8::1", true, false), Ok(()));
        assert_eq!(
            check_virtual_service_host("outbound_.80_._.e2e.foobar.mesh", true, true),
            Ok(())
        );
        assert!(check_virtual_service_host("outbound_.80_._.e2e.foobar.mesh", false, true).is_err());
        assert!(check_virtual_service_host("outbound_.x_._.e2e", true, true).is_err());
        // Destinations and ServiceEntry hosts name services: `*` alone does not.
        assert_eq!(check_service_host("*"), Err(HostError::Everything));
        assert_eq!(check_service_host("*.example.com"), Ok(()));
        assert_eq!(check_service_host("reviews"), Ok(()));
        // Gateway server hosts: `ns/host` with `*`, `.` or a label as namespace.
        for ok in [
            "*",
            "*.example.com",
            "app.example.com",
            "shop/*",
            "./app.example.com",
            "*/a.example.com",
            "10.0.0.1",
        ] {
            assert_eq!(check_server_host(ok), Ok(()), "{ok}");
        }
        for bad in [
            " web/app.example.com",
            "web /app.example.com",
            "/app.example.com",
            "web/",
            "~/app.example.com",
            "app",
            "web/app",
            "*foo.example.com",
            "web/app.example.com ",
        ] {
            assert!(check_server_host(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_server_host(" web/app.example.com"),
            Err(HostError::Namespace(" web".into()))
        );
    }

    #[test]
    fn host_intersection() {
        assert_eq!(intersect("app.example.com", "*").as_deref(), Some("app.example.com"));
        assert_eq!(
            intersect("*.example.com", "app.example.com").as_deref(),
            Some("app.example.com")
        );
        assert_eq!(
            intersect("*.example.com", "*.api.example.com").as_deref(),
            Some("*.api.example.com")
        );
        assert_eq!(intersect("*.example.com", "example.com"), None);
        assert_eq!(intersect("a.example.com", "b.example.com"), None);
        assert_eq!(intersect("*", "*").as_deref(), Some("*"));
    }
}
