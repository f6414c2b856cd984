//! Istio resources as YAML, for the tests that would otherwise repeat them. Each
//! builder returns one document starting with `---`, so that documents concatenate
//! (`http_gateway(&["app.example.com"]) + &virtual_service(...)`) and a file may
//! start with any of them. Resources are in namespace `default`; host names are
//! quoted, as a plain YAML scalar cannot start with `*`.

/// A YAML flow list of quoted strings: `["a", "b"]`.
pub fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A Gateway `default/{name}` for the ingress gateway (`istio: ingressgateway`)
/// with `servers`, each from `http_server` or `https_server`.
pub fn gateway(name: &str, servers: &[String]) -> String {
    let servers: String = servers.concat();
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}"
    )
}

/// A Gateway server on port 80 (HTTP) for `hosts`, for `gateway`.
pub fn http_server(hosts: &[&str]) -> String {
    format!(
        "  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: {}\n",
        list(hosts)
    )
}

/// A Gateway server on port 443 (HTTPS, TLS mode SIMPLE) for `hosts`, with the
/// certificate of the TLS Secret `credential`, for `gateway`.
pub fn https_server(hosts: &[&str], credential: &str) -> String {
    format!(
        "  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: {}\n    tls: {{mode: SIMPLE, credentialName: {credential}}}\n",
        list(hosts)
    )
}

/// A Gateway `default/gw` with one HTTP server on port 80 for `hosts`.
pub fn http_gateway(hosts: &[&str]) -> String {
    gateway("gw", &[http_server(hosts)])
}

/// A Gateway `default/gw` with one HTTPS server on port 443 for `hosts`, with the
/// certificate of the TLS Secret `credential`.
pub fn https_gateway(hosts: &[&str], credential: &str) -> String {
    gateway("gw", &[https_server(hosts, credential)])
}

/// A VirtualService `default/{name}` for `hosts`, bound to `gateways`, with the HTTP
/// rules `http`: a YAML list written from column 0 (`route_to` makes one rule).
pub fn virtual_service(name: &str, hosts: &[&str], gateways: &[&str], http: &str) -> String {
    let rules: String = http.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: {}\n  gateways: {}\n  http:\n{rules}",
        list(hosts),
        list(gateways)
    )
}

/// One HTTP rule sending every request to `host`, for `virtual_service`.
pub fn route_to(host: &str) -> String {
    format!("- route: [{{destination: {{host: {host}}}}}]\n")
}

/// A ServiceEntry `default/backend` for `backend.default.svc.cluster.local`, port
/// 80 (HTTP), with one STATIC loopback endpoint per (`version` label, port).
pub fn backend_entry(endpoints: &[(&str, u16)]) -> String {
    let mut s = String::from(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: backend, namespace: default}\nspec:\n  hosts: [backend.default.svc.cluster.local]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints:\n",
    );
    for (version, port) in endpoints {
        s.push_str(&format!(
            "  - {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{version: {version}}}}}\n"
        ));
    }
    s
}

/// A STATIC ServiceEntry `default/{host}` for `host` with one port (80, of
/// `protocol`) served by `ports` on loopback.
pub fn service_entry(host: &str, protocol: &str, ports: &[u16]) -> String {
    let endpoints: String = ports
        .iter()
        .map(|p| format!("  - {{address: 127.0.0.1, ports: {{p: {p}}}}}\n"))
        .collect();
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {host}, namespace: default}}\nspec:\n  hosts: [{host}]\n  resolution: STATIC\n  ports: [{{number: 80, name: p, protocol: {protocol}}}]\n  endpoints:\n{endpoints}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_config::bundle::{load_text, Loaded};

    fn load(yaml: &str) -> Loaded {
        let mut loaded = Loaded::default();
        load_text(&mut loaded, "all.yaml", yaml);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        loaded
    }

    #[test]
    fn documents_concatenate_into_one_configuration() {
        let yaml = https_gateway(&["*.example.com"], "tls")
            + &gateway(
                "both",
                &[
                    http_server(&["app.example.com"]),
                    https_server(&["app.example.com"], "tls"),
                ],
            )
            + &virtual_service(
                "app",
                &["app.example.com"],
                &["gw", "both"],
                "- match: [{uri: {prefix: /a}}]\n  route: [{destination: {host: backend}}]\n",
            )
            + &backend_entry(&[("v1", 9001), ("v2", 9002)])
            + &service_entry("other.internal", "HTTP", &[9003]);
        let kinds: Vec<&str> = load(&yaml).bundle.entries.iter().map(|e| e.resource.kind()).collect();
        assert_eq!(
            kinds,
            ["Gateway", "Gateway", "VirtualService", "ServiceEntry", "ServiceEntry"]
        );
    }

    #[test]
    fn an_http_gateway_with_a_route_builds() {
        let yaml = http_gateway(&["*.example.com"])
            + &virtual_service("rest", &["*.example.com"], &["gw"], &route_to("backend"))
            + &backend_entry(&[("v1", 9001)]);
        let built = strait_config::build(&load(&yaml), &strait_config::testing::ingress_scope("default"), 0)
            .unwrap_or_else(|d| panic!("{d:?}"));
        let ports: Vec<u16> = built.snapshot.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [80]);
    }
}
