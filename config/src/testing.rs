//! Test helpers. A generated routing table for benchmarks and allocation tests: `hosts` virtual
//! hosts (`svc{i}.example.com`) with `routes` rules each, all sent to one backend.
//! The last rule of the last host is the slowest to find: path `/r{routes-1}/...`
//! with header `x-tenant: t1`.

#[cfg(any(test, feature = "testing"))]
pub mod jwt;
pub mod layering;

/// YAML for a Gateway on port 80, a ServiceEntry `backend` at 127.0.0.1:`backend_port`
/// and one VirtualService per host.
pub fn large_config(hosts: usize, routes: usize, backend_port: u16) -> String {
    let mut y = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: backend}\nspec:\n  hosts: [backend.default.svc.cluster.local]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: 127.0.0.1, ports: {http: BACKEND_PORT}}]\n",
    )
    .replace("BACKEND_PORT", &backend_port.to_string());
    for h in 0..hosts {
        y.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs{h}}}\nspec:\n  hosts: [svc{h}.example.com]\n  gateways: [gw]\n  http:\n"
        ));
        for r in 0..routes {
            y.push_str(&format!(
                "  - name: r{r}\n    match:\n    - uri: {{prefix: /r{r}/}}\n      headers: {{x-tenant: {{regex: \"t[0-9]+\"}}}}\n    - uri: {{exact: /exact{r}}}\n    route: [{{destination: {{host: backend}}}}]\n"
            ));
        }
    }
    y
}

/// The gateway snapshot of `large_config(hosts, routes, backend_port)`, for an
/// ingress gateway (`istio=ingressgateway`).
///
/// # Panics
/// If the generated configuration does not translate, which would be a bug here.
pub fn large_snapshot(hosts: usize, routes: usize, backend_port: u16) -> crate::Snapshot {
    large_build(hosts, routes, backend_port).snapshot
}

/// The whole build of `large_config(hosts, routes, backend_port)` (snapshot and
/// endpoints).
///
/// # Panics
/// If the generated configuration does not translate, which would be a bug here.
pub fn large_build(hosts: usize, routes: usize, backend_port: u16) -> crate::Built {
    let mut loaded = crate::Loaded::default();
    crate::bundle::load_text(&mut loaded, "large.yaml", &large_config(hosts, routes, backend_port));
    match crate::build(&loaded, &ingress_scope("default"), 1) {
        Ok(built) => built,
        Err(diags) => panic!("generated configuration does not translate: {diags:?}"),
    }
}

/// The scope of Istio's ingress gateway (labels `app: istio-ingressgateway`,
/// `istio: ingressgateway`) in `namespace`, with the default mesh config.
pub fn ingress_scope(namespace: &str) -> crate::Scope {
    let labels = std::collections::BTreeMap::from([
        ("app".to_string(), "istio-ingressgateway".to_string()),
        ("istio".to_string(), "ingressgateway".to_string()),
    ]);
    crate::Scope::gateway(namespace, labels, crate::mesh::MeshConfig::default())
}
