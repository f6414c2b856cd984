//! Host names as Istio reads them: short names, wildcards, `namespace/host`
//! server hosts and gateway references.

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
