//! Table tests of translation and matching from YAML, with Istio's semantics.

use http::{HeaderMap, HeaderName, HeaderValue};
use strait_config::bundle::{load_text, Loaded};
use strait_config::router::{RequestView, Routed};
use strait_config::snapshot::{Action, Snapshot};
use strait_config::testing::ingress_scope;
use strait_config::{build, Built, Diagnostic, Scope};

const GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 8080, name: http-alt, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.1, ports: {http: 8001}, labels: {version: v1}}
  - {address: 10.0.0.2, ports: {http: 8002}, labels: {version: v2}}
"#;

fn scope() -> Scope {
    ingress_scope("istio-system")
}

/// Loads, compiles and translates; panics on errors.
fn snapshot(yaml: &str) -> (Snapshot, Vec<Diagnostic>) {
    let built = built(yaml);
    (built.snapshot, built.warnings)
}

/// The whole build (snapshot, endpoints, warnings); panics on errors.
fn built(yaml: &str) -> Built {
    let mut loaded = Loaded::default();
    load_text(&mut loaded, "test.yaml", yaml);
    match build(&loaded, &scope(), 1) {
        Ok(built) => built,
        Err(e) => panic!("{e:#?}"),
    }
}

/// The addresses of cluster `i`'s endpoints.
fn addresses(built: &Built, i: usize) -> Vec<String> {
    built.endpoints.clusters[i]
        .endpoints
        .iter()
        .map(|e| e.address.to_string())
        .collect()
}

fn with_routes(routes: &str) -> String {
    format!("{GATEWAY}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: default}}\nspec:\n  hosts: [app.example.com]\n  gateways: [gw]\n  http:\n{routes}")
}

/// A request: (port, method, authority, path, headers).
type Req<'a> = (u16, &'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);

/// The name of the route chosen, "no-host" or "no-route".
fn route_name(s: &Snapshot, (port, method, authority, path, headers): Req<'_>) -> String {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    let Some(listener) = s.listener(port) else {
        return "no-listener".into();
    };
    let view = RequestView {
        method,
        path,
        authority,
        scheme: "http",
        headers: &map,
        claims: None,
    };
    match listener.route(&view) {
        Routed::NoHost => "no-host".into(),
        Routed::NoRoute(_) => "no-route".into(),
        Routed::Matched(m) => m.route.name.clone().unwrap_or_default(),
    }
}

fn check(routes: &str, cases: &[(Req<'_>, &str)]) {
    let (s, _) = snapshot(&with_routes(routes));
    for (req, want) in cases {
        assert_eq!(route_name(&s, *req), *want, "request {req:?}");
    }
}

const H: &str = "app.example.com";

#[test]
fn uri_matching() {
    check(
        r#"
  - name: exact
    match: [{uri: {exact: /exact}}]
    route: [{destination: {host: backend}}]
  - name: regex
    match: [{uri: {regex: "/r/[0-9]+"}}]
    route: [{destination: {host: backend}}]
  - name: nocase
    match: [{uri: {prefix: /Case}, ignoreUriCase: true}]
    route: [{destination: {host: backend}}]
  - name: prefix
    match: [{uri: {prefix: /api}}]
    route: [{destination: {host: backend}}]
"#,
        &[
            ((80, "GET", H, "/exact", &[]), "exact"),
            ((80, "GET", H, "/exact?q=1", &[]), "exact"),
            ((80, "GET", H, "/exact/", &[]), "no-route"),
            ((80, "GET", H, "/r/123", &[]), "regex"),
            // RE2 semantics: the regex must match the whole path.
            ((80, "GET", H, "/r/123/x", &[]), "no-route"),
            ((80, "GET", H, "/CASE/x", &[]), "nocase"),
            ((80, "GET", H, "/case", &[]), "nocase"),
            // uri.prefix is a plain string prefix, not a path segment.
            ((80, "GET", H, "/apiary", &[]), "prefix"),
            ((80, "GET", H, "/api/v1", &[]), "prefix"),
            ((80, "GET", H, "/API", &[]), "no-route"),
        ],
    );
}

#[test]
fn first_match_wins_and_matches_are_ored_fields_anded() {
    check(
        r#"
  - name: both
    match:
    - uri: {prefix: /a}
      headers: {x-user: {exact: alice}}
    - uri: {prefix: /b}
    route: [{destination: {host: backend}}]
  - name: a-any
    match: [{uri: {prefix: /a}}]
    route: [{destination: {host: backend}}]
  - name: catch-all
    route: [{destination: {host: backend}}]
  - name: never
    match: [{uri: {prefix: /}}]
    route: [{destination: {host: backend}}]
"#,
        &[
            ((80, "GET", H, "/a", &[("x-user", "alice")]), "both"),
            ((80, "GET", H, "/a", &[("x-user", "bob")]), "a-any"),
            ((80, "GET", H, "/b", &[]), "both"),
            ((80, "GET", H, "/c", &[]), "catch-all"),
        ],
    );
}

#[test]
fn header_query_method_authority_and_port_matching() {
    check(
        r#"
  - name: present
    match: [{headers: {x-debug: {}}}]
    route: [{destination: {host: backend}}]
  - name: without
    match: [{uri: {prefix: /w}, withoutHeaders: {x-block: {}}}]
    route: [{destination: {host: backend}}]
  - name: header-prefix-regex
    match: [{headers: {x-p: {prefix: ab}, x-r: {regex: "v[0-9]"}}}]
    route: [{destination: {host: backend}}]
  - name: query
    match: [{queryParams: {mode: {exact: fast}, id: {regex: "[0-9]+"}}}]
    route: [{destination: {host: backend}}]
  - name: method
    match: [{method: {exact: POST}}]
    route: [{destination: {host: backend}}]
  - name: authority
    match: [{authority: {prefix: app.example.com:8080}}]
    route: [{destination: {host: backend}}]
  - name: port
    match: [{port: 8080}]
    route: [{destination: {host: backend}}]
"#,
        &[
            // An empty StringMatch means "present", whatever the value.
            ((80, "GET", H, "/", &[("x-debug", "")]), "present"),
            ((80, "GET", H, "/w", &[]), "without"),
            ((80, "GET", H, "/w", &[("x-block", "1")]), "no-route"),
            (
                (80, "GET", H, "/", &[("x-p", "abc"), ("x-r", "v2")]),
                "header-prefix-regex",
            ),
            ((80, "GET", H, "/", &[("x-p", "abc"), ("x-r", "v22")]), "no-route"),
            ((80, "GET", H, "/?id=42&mode=fast", &[]), "query"),
            ((80, "GET", H, "/?id=x&mode=fast", &[]), "no-route"),
            ((80, "GET", H, "/?mode=fast", &[]), "no-route"),
            ((80, "POST", H, "/", &[]), "method"),
            ((8080, "GET", "app.example.com:8080", "/", &[]), "authority"),
            ((8080, "GET", H, "/", &[]), "port"),
        ],
    );
}

#[test]
fn hosts_exact_wildcard_and_case() {
    let yaml = format!(
        "{GATEWAY}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: wild}}\nspec:\n  hosts: [\"*.example.com\"]\n  gateways: [gw]\n  http:\n  - name: wild\n    route: [{{destination: {{host: backend}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: exact}}\nspec:\n  hosts: [app.example.com]\n  gateways: [gw]\n  http:\n  - name: exact\n    route: [{{destination: {{host: backend}}}}]\n"
    );
    let (s, _) = snapshot(&yaml);
    for (authority, want) in [
        ("app.example.com", "exact"),
        ("APP.Example.com:80", "exact"),
        ("app.example.com.", "exact"),
        ("api.example.com", "wild"),
        ("a.b.example.com", "wild"),
        ("example.com", "no-host"),
        ("example.org", "no-host"),
    ] {
        assert_eq!(route_name(&s, (80, "GET", authority, "/", &[])), want, "{authority}");
    }
}

#[test]
fn binding_by_gateways_selector_namespace_and_match_gateways() {
    let yaml = format!(
        r#"{GATEWAY}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: other, namespace: edge}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 9090, name: http, protocol: HTTP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: restricted, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 7070, name: http, protocol: HTTP}}
    hosts: ["shop/*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: mesh-only, namespace: default}}
spec:
  hosts: [mesh.example.com]
  http:
  - name: mesh
    route: [{{destination: {{host: backend}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: both, namespace: default}}
spec:
  hosts: [app.example.com]
  gateways: [default/gw, edge/other, restricted]
  http:
  - name: only-other
    match: [{{gateways: [edge/other]}}]
    route: [{{destination: {{host: backend}}}}]
  - name: everywhere
    route: [{{destination: {{host: backend}}}}]
"#
    );
    let (s, _) = snapshot(&yaml);
    // The egress gateway's Gateway selects other labels: no listener here.
    assert_eq!(route_name(&s, (9090, "GET", H, "/", &[])), "no-listener");
    // A VirtualService without gateways binds to the mesh only.
    assert_eq!(route_name(&s, (80, "GET", "mesh.example.com", "/", &[])), "no-host");
    // match.gateways restricts a rule to the gateways it lists.
    assert_eq!(route_name(&s, (80, "GET", H, "/", &[])), "everywhere");
    // `shop/*` admits VirtualServices from namespace shop only.
    assert_eq!(route_name(&s, (7070, "GET", H, "/", &[])), "no-host");
}

#[test]
fn the_largest_weights_add_up_without_wrapping() {
    let routes = "  - route:\n    - {destination: {host: backend}, weight: 2147483647}\n    - {destination: {host: backend}, weight: 2147483647}\n";
    let (s, _) = snapshot(&with_routes(routes));
    let Action::Forward(f) = &s.listener(80).expect("listener").virtual_hosts[0].routes[0].action else {
        panic!("forward")
    };
    assert_eq!(f.total_weight, 4_294_967_294);
    assert_eq!(f.destinations.len(), 2);
}

#[test]
fn the_build_refuses_weights_istio_refuses() {
    // A weight past int32 (it was taken as 0) and a sum past u32 (it wrapped).
    for (routes, field) in [
        (
            "  - route:\n    - {destination: {host: backend}, weight: 1}\n    - {destination: {host: backend}, weight: 4294967296}\n",
            "spec.http[0].route[1].weight",
        ),
        (
            "  - route:\n    - {destination: {host: backend}, weight: 2147483647}\n    - {destination: {host: backend}, weight: 2147483647}\n    - {destination: {host: backend}, weight: 2}\n",
            "spec.http[0].route",
        ),
    ] {
        let mut loaded = Loaded::default();
        load_text(&mut loaded, "test.yaml", &with_routes(routes));
        let errors = build(&loaded, &scope(), 1).expect_err("refused");
        assert!(errors.iter().any(|d| d.field.as_deref() == Some(field)), "{errors:#?}");
    }
}

#[test]
fn destinations_subsets_and_relative_weights() {
    let yaml = format!(
        r#"{}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: backend, namespace: default}}
spec:
  host: backend.default.svc.cluster.local
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"#,
        with_routes(
            r#"  - name: split
    route:
    - {destination: {host: backend, subset: v1}, weight: 1}
    - {destination: {host: backend, subset: v2}, weight: 3}
    - {destination: {host: backend}, weight: 0}
"#
        )
    );
    let b = built(&yaml);
    let s = &b.snapshot;
    let vhost = &s.listener(80).expect("listener").virtual_hosts[0];
    let Action::Forward(f) = &vhost.routes[0].action else {
        panic!("forward")
    };
    assert_eq!(f.total_weight, 4, "weights are relative; weight 0 is dropped");
    assert_eq!(f.destinations.len(), 2);
    let c1 = &s.clusters[f.destinations[0].cluster];
    assert_eq!(c1.name, "outbound|80|v1|backend.default.svc.cluster.local");
    assert_eq!(addresses(&b, f.destinations[0].cluster), ["10.0.0.1:8001"]);
    assert_eq!(addresses(&b, f.destinations[1].cluster), ["10.0.0.2:8002"]);
    let mut v2 = 0;
    for _ in 0..4000 {
        if f.pick().map(|d| d.cluster) == Some(f.destinations[1].cluster) {
            v2 += 1;
        }
    }
    assert!((2800..=3200).contains(&v2), "v2 got {v2} of 4000 at weight 3/4");
}

#[test]
fn short_names_resolve_in_the_resource_namespace_and_services_use_endpointslices() {
    let yaml = format!(
        r#"{GATEWAY}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop, namespace: shop}}
spec:
  hosts: [shop.example.com]
  gateways: [default/gw]
  http:
  - name: cart
    route: [{{destination: {{host: cart, port: {{number: 8080}}}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: cart, namespace: shop}}
spec:
  ports:
  - {{name: http, port: 8080, targetPort: http-web}}
  - {{name: grpc, port: 9090, targetPort: 9091}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: cart-abc
  namespace: shop
  labels: {{kubernetes.io/service-name: cart}}
addressType: IPv4
ports:
- {{name: http, port: 3000}}
- {{name: grpc, port: 9091}}
endpoints:
- addresses: [10.1.0.1]
  conditions: {{ready: true}}
- addresses: [10.1.0.2]
  conditions: {{ready: false}}
- addresses: [10.1.0.3]
"#
    );
    let b = built(&yaml);
    let c = &b.snapshot.clusters[0];
    assert_eq!(c.name, "outbound|8080||cart.shop.svc.cluster.local");
    assert_eq!(
        addresses(&b, 0),
        ["10.1.0.1:3000", "10.1.0.3:3000"],
        "not-ready endpoints are left out"
    );
}

#[test]
fn subsets_select_service_endpoints_by_the_labels_of_their_pods() {
    // As a cluster has them: two Pods, their Service and the EndpointSlice whose
    // endpoints name the Pods in targetRef (one without namespace: the slice's).
    let pod = |name: &str, version: &str, ip: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: reviews, version: {version}}}}}\nspec: {{serviceAccountName: reviews, containers: [{{name: app, image: reviews}}]}}\nstatus: {{phase: Running, podIP: {ip}}}\n"
        )
    };
    let yaml = format!(
        r#"{GATEWAY}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: shop}}
spec:
  hosts: [reviews.example.com]
  gateways: [default/gw]
  http:
  - route:
    - {{destination: {{host: reviews, subset: v2}}, weight: 1}}
    - {{destination: {{host: reviews}}, weight: 1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  subsets: [{{name: v2, labels: {{version: v2}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: shop}}
spec:
  selector: {{app: reviews}}
  ports: [{{name: http, port: 9080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: reviews-x1, namespace: shop, labels: {{kubernetes.io/service-name: reviews}}}}
addressType: IPv4
ports: [{{name: http, port: 9080}}]
endpoints:
- addresses: [10.1.0.1]
  targetRef: {{kind: Pod, namespace: shop, name: reviews-v1-a}}
- addresses: [10.1.0.2]
  targetRef: {{kind: Pod, name: reviews-v2-b}}
{}{}"#,
        pod("reviews-v1-a", "v1", "10.1.0.1"),
        pod("reviews-v2-b", "v2", "10.1.0.2"),
    );
    let b = built(&yaml);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    let s = &b.snapshot;
    let cluster = |name: &str| {
        s.clusters.iter().position(|c| c.name == name).unwrap_or_else(|| {
            panic!(
                "no cluster {name}: {:?}",
                s.clusters.iter().map(|c| &c.name).collect::<Vec<_>>()
            )
        })
    };
    let v2 = cluster("outbound|9080|v2|reviews.shop.svc.cluster.local");
    assert_eq!(addresses(&b, v2), ["10.1.0.2:9080"], "only the v2 Pod's endpoint");
    let all = cluster("outbound|9080||reviews.shop.svc.cluster.local");
    assert_eq!(addresses(&b, all), ["10.1.0.1:9080", "10.1.0.2:9080"]);
    let endpoint = &b.endpoints.clusters[v2].endpoints[0];
    assert_eq!(
        endpoint.workload.as_deref(),
        Some("reviews-v2-b"),
        "the Pod names the workload"
    );
    assert_eq!(endpoint.labels.get("version").map(String::as_str), Some("v2"));
}

#[test]
fn unknown_destination_is_a_warning_and_routes_get_no_endpoints() {
    let b = built(&with_routes(
        "  - name: nowhere\n    route: [{destination: {host: missing}}]\n",
    ));
    let diags = &b.warnings;
    assert!(
        diags.iter().any(|d| d
            .message
            .contains("no ServiceEntry or Service defines host missing.default.svc.cluster.local")),
        "{diags:?}"
    );
    assert!(addresses(&b, 0).is_empty());
}

#[test]
fn virtualservices_sharing_a_host_are_merged_in_order_with_a_warning() {
    let yaml = format!(
        "{}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: second}}\nspec:\n  hosts: [app.example.com]\n  gateways: [gw]\n  http:\n  - name: second\n    route: [{{destination: {{host: backend}}}}]\n",
        with_routes("  - name: first\n    match: [{uri: {prefix: /first}}]\n    route: [{destination: {host: backend}}]\n")
    );
    let (s, diags) = snapshot(&yaml);
    assert_eq!(route_name(&s, (80, "GET", H, "/first", &[])), "first");
    assert_eq!(route_name(&s, (80, "GET", H, "/other", &[])), "second");
    assert!(
        diags.iter().any(|d| d.code == strait_config::Code::DuplicateHost),
        "{diags:?}"
    );
}

#[test]
fn https_servers_build_an_sni_table_and_http_servers_can_redirect() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: a, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, serverCertificate: /certs/a.crt, privateKey: /certs/a.key}
  - port: {number: 443, name: wild, protocol: HTTPS}
    hosts: ["*.example.com"]
    tls: {mode: SIMPLE, serverCertificate: /certs/w.crt, privateKey: /certs/w.key}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*.example.com"]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: ["*.example.com"]
  gateways: [gw]
  http:
  - directResponse: {status: 204}
"#;
    let (s, _) = snapshot(yaml);
    let l = s.listener(443).expect("https listener");
    assert_eq!(s.certificates.len(), 2);
    assert_eq!(
        l.sni.lookup("a.example.com").map(|i| l.tls_servers[i].certificate),
        Some(0)
    );
    assert_eq!(
        l.sni.lookup("b.example.com").map(|i| l.tls_servers[i].certificate),
        Some(1)
    );
    assert_eq!(
        l.virtual_hosts.iter().map(|v| v.domain.as_str()).collect::<Vec<_>>(),
        ["a.example.com", "*.example.com"]
    );
    let http = s.listener(80).expect("http listener");
    assert!(http.virtual_hosts.iter().all(|v| v.https_redirect));
}

#[test]
fn gateway_tls_versions_and_client_certificates() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem, minProtocolVersion: TLSV1_3, verifyCertificateSpki: [abc]}\n  - port: {number: 443, name: https-b, protocol: HTTPS}\n    hosts: [b.example.com]\n    tls: {mode: ISTIO_MUTUAL}\n";
    let (s, warnings) = snapshot(yaml);
    let w: Vec<_> = warnings
        .iter()
        .filter(|d| d.code == strait_config::Code::NotEnforced)
        .map(|d| d.field.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(
        w,
        ["spec.servers[0].tls.verifyCertificateSpki", "spec.servers[1].tls.mode"],
        "{warnings:#?}"
    );
    let server = &s.listener(443).expect("https listener").tls_servers[0];
    assert_eq!(server.min_version, Some(strait_config::snapshot::TlsVersion::Tls13));
    assert!(server.client_auth.as_ref().is_some_and(|a| a.required));
}
