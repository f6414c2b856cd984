//! Table tests of the Kubernetes Gateway API: the conformance suite's manifest
//! shapes (namespace `gateway-conformance-infra`, backends infra-backend-v1..v3)
//! translated and matched, the status each resource gets, and what is refused.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use strait_config::bundle::{load_text, Loaded};
use strait_config::compile::compile;
use strait_config::compile::gateway_api::status::status;
use strait_config::router::{RequestView, Routed};
use strait_config::snapshot::{Action, Snapshot};
use strait_config::testing::ingress_scope;
use strait_config::{build, Code, Diagnostic};

/// Request headers of a case.
type Headers<'a> = &'a [(&'a str, &'a str)];

const NS: &str = "gateway-conformance-infra";

/// GatewayClass `strait`, Gateway `same-namespace` (HTTP 80, routes from its own
/// namespace) and three backends.
fn infra() -> String {
    let mut y = format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: strait}}
spec: {{controllerName: strait.io/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: same-namespace, namespace: {NS}}}
spec:
  gatewayClassName: strait
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {{namespaces: {{from: Same}}}}
"#
    );
    for (i, name) in ["infra-backend-v1", "infra-backend-v2", "infra-backend-v3"]
        .iter()
        .enumerate()
    {
        y.push_str(&service(name, NS, &format!("10.0.0.{}", i + 1)));
    }
    y
}

fn service(name: &str, ns: &str, ip: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports: [{{name: http, port: 8080, targetPort: 3000}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-a, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nendpoints: [{{addresses: [{ip}]}}]\nports: [{{name: http, port: 3000}}]\n"
    )
}

fn route(name: &str, body: &str) -> String {
    format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  parentRefs: [{{name: same-namespace}}]\n{body}")
}

fn loaded(yaml: &str) -> Loaded {
    let mut l = Loaded::default();
    load_text(&mut l, "test.yaml", yaml);
    l
}

fn snapshot(yaml: &str) -> Snapshot {
    match build(&loaded(yaml), &ingress_scope("default"), 1) {
        Ok(b) => b.snapshot,
        Err(e) => panic!("{e:#?}"),
    }
}

fn errors(yaml: &str) -> Vec<Diagnostic> {
    match build(&loaded(yaml), &ingress_scope("default"), 1) {
        Ok(b) => panic!("accepted; warnings {:?}", b.warnings),
        Err(e) => e.into_iter().filter(|d| d.is_error()).collect(),
    }
}

/// What a request gets: the backend service's short name, `404`, a status code,
/// or `302 Location`.
fn outcome(s: &Snapshot, method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    let view = RequestView {
        method,
        path,
        authority: host,
        scheme: "http",
        headers: &map,
        claims: None,
    };
    let Some(listener) = s.listener(80) else {
        return "no-listener".into();
    };
    match listener.route(&view) {
        Routed::NoHost | Routed::NoRoute(_) => "404".into(),
        Routed::Matched(m) => match &m.route.action {
            Action::Forward(f) => {
                let names: Vec<&str> = f
                    .destinations
                    .iter()
                    .map(|d| s.clusters[d.cluster].host.split('.').next().unwrap_or(""))
                    .collect();
                names.join("+")
            }
            Action::DirectResponse(d) => d.status.to_string(),
            Action::Redirect(r) => format!("{} {:?} {:?} {:?} {:?}", r.code, r.scheme, r.authority, r.port, r.uri),
        },
    }
}

#[test]
fn matching_follows_the_conformance_cases() {
    // HTTPRouteMatching.
    let y = infra()
        + &route(
            "matching",
            "  rules:\n  - matches: [{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n",
        );
    let s = snapshot(&y);
    let cases: &[(&str, Headers<'_>, &str)] = &[
        ("/", &[], "infra-backend-v1"),
        ("/example", &[], "infra-backend-v1"),
        ("/", &[("Version", "one")], "infra-backend-v1"),
        ("/v2", &[], "infra-backend-v2"),
        ("/v2/example", &[], "infra-backend-v2"),
        ("/", &[("Version", "two")], "infra-backend-v2"),
        // PathPrefix matches whole segments.
        ("/v2example", &[], "infra-backend-v1"),
        ("/v2/", &[], "infra-backend-v2"),
    ];
    for (path, headers, want) in cases {
        assert_eq!(
            outcome(&s, "GET", "example.com", path, headers),
            *want,
            "{path} {headers:?}"
        );
    }
}

#[test]
fn precedence_across_routes_and_rules() {
    // HTTPRouteMatchingAcrossRoutes and the HTTPRouteRule precedence list: Exact
    // beats any prefix; the longer prefix wins; then method, then header count,
    // then query count; then the older route, then namespace/name; then rule order.
    let y = infra()
        + &route(
            "b-route",
            "  rules:\n  - matches: [{path: {type: PathPrefix, value: /a}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: Exact, value: /a/b}}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /m}, method: POST}]\n    backendRefs: [{name: infra-backend-v3, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /m}, headers: [{name: x, value: '1'}, {name: y, value: '2'}]}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n",
        )
        + &route(
            "a-route",
            "  rules:\n  - matches: [{path: {type: PathPrefix, value: /a/b}}]\n    backendRefs: [{name: infra-backend-v3, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /m}, headers: [{name: x, value: '1'}], queryParams: [{name: q, value: '1'}, {name: r, value: '1'}]}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /a}}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n",
        );
    let s = snapshot(&y);
    let cases: &[(&str, &str, Headers<'_>, &str)] = &[
        ("GET", "/a/b", &[], "infra-backend-v2"),
        ("GET", "/a/b/c", &[], "infra-backend-v3"),
        // Same prefix in two routes: a-route sorts first by name (same age).
        ("GET", "/a/x", &[], "infra-backend-v2"),
        ("POST", "/m", &[("x", "1"), ("y", "2")], "infra-backend-v3"),
        ("GET", "/m?q=1&r=1", &[("x", "1"), ("y", "2")], "infra-backend-v2"),
        ("GET", "/m?q=1&r=1", &[("x", "1")], "infra-backend-v1"),
        ("GET", "/m", &[], "404"),
    ];
    for (method, path, headers, want) in cases {
        assert_eq!(
            outcome(&s, method, "example.com", path, headers),
            *want,
            "{method} {path} {headers:?}"
        );
    }
    // The older route wins a tie.
    let y2 = y.replace(
        "metadata: {name: b-route, namespace: gateway-conformance-infra}",
        "metadata: {name: b-route, namespace: gateway-conformance-infra, creationTimestamp: '2020-01-01T00:00:00Z'}",
    ).replace(
        "metadata: {name: a-route, namespace: gateway-conformance-infra}",
        "metadata: {name: a-route, namespace: gateway-conformance-infra, creationTimestamp: '2021-01-01T00:00:00Z'}",
    );
    assert_eq!(
        outcome(&snapshot(&y2), "GET", "example.com", "/a/x", &[]),
        "infra-backend-v1"
    );
}

#[test]
fn query_method_and_regex_matches() {
    let y = infra()
        + &route(
            "q",
            "  rules:\n  - matches: [{queryParams: [{name: animal, value: whale}]}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{queryParams: [{name: animal, value: dolphin}, {name: color, type: RegularExpression, value: 'bl.*'}]}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n  - matches: [{method: PUT}]\n    backendRefs: [{name: infra-backend-v3, port: 8080}]\n  - matches: [{path: {type: RegularExpression, value: '/re/[0-9]+'}}]\n    backendRefs: [{name: infra-backend-v3, port: 8080}]\n",
        );
    let s = snapshot(&y);
    assert_eq!(outcome(&s, "GET", "e", "/?animal=whale", &[]), "infra-backend-v1");
    assert_eq!(
        outcome(&s, "GET", "e", "/?animal=dolphin&color=blue", &[]),
        "infra-backend-v2"
    );
    assert_eq!(outcome(&s, "GET", "e", "/?animal=dolphin", &[]), "404");
    assert_eq!(outcome(&s, "PUT", "e", "/", &[]), "infra-backend-v3");
    assert_eq!(outcome(&s, "GET", "e", "/re/42", &[]), "infra-backend-v3");
    assert_eq!(outcome(&s, "GET", "e", "/re/x", &[]), "404");
}

#[test]
fn hostnames_intersect_with_the_listener() {
    let y = infra().replace(
        "  - name: http\n    port: 80\n    protocol: HTTP\n",
        "  - name: http\n    port: 80\n    protocol: HTTP\n    hostname: '*.example.com'\n",
    ) + &route(
        "wild",
        "  hostnames: ['*.example.com']\n  rules:\n  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    ) + &route(
        "exact",
        "  hostnames: [foo.example.com, foo.example.net]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /only}}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n",
    ) + &route("elsewhere", "  hostnames: [example.net]\n  rules:\n  - backendRefs: [{name: infra-backend-v3, port: 8080}]\n");
    let s = snapshot(&y);
    assert_eq!(outcome(&s, "GET", "bar.example.com", "/", &[]), "infra-backend-v1");
    assert_eq!(outcome(&s, "GET", "a.b.example.com:80", "/", &[]), "infra-backend-v1");
    assert_eq!(
        outcome(&s, "GET", "foo.example.com", "/only/x", &[]),
        "infra-backend-v2"
    );
    // The exact host's routes only: its rules do not match /.
    assert_eq!(outcome(&s, "GET", "foo.example.com", "/", &[]), "404");
    assert_eq!(outcome(&s, "GET", "foo.example.net", "/only", &[]), "404");
    assert_eq!(outcome(&s, "GET", "example.net", "/", &[]), "404");
    let st = statuses(&y);
    assert_eq!(
        route_condition(&st, "elsewhere", "Accepted"),
        ("False".into(), "NoMatchingListenerHostname".into())
    );
    assert_eq!(
        route_condition(&st, "exact", "Accepted"),
        ("True".into(), "Accepted".into())
    );
    assert_eq!(listener(&st)["attachedRoutes"], 2);
}

#[test]
fn invalid_backends_answer_500_and_say_why() {
    let y = infra()
        + &route("unknown-kind", "  rules:\n  - backendRefs: [{group: unknown.example.com, kind: Thing, name: x, port: 8080}]\n")
        + &route("not-found", "  rules:\n  - backendRefs: [{name: nonexistent, port: 8080}]\n")
        + &route("cross-ns", "  rules:\n  - matches: [{path: {type: PathPrefix, value: /cross}}]\n    backendRefs: [{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}]\n")
        + &service("web-backend", "gateway-conformance-web-backend", "10.0.1.1")
        + "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: no-backends, namespace: gateway-conformance-infra}\nspec:\n  parentRefs: [{name: same-namespace}]\n  hostnames: [empty.example.com]\n  rules:\n  - {}\n";
    let s = snapshot(&y);
    assert_eq!(outcome(&s, "GET", "e", "/cross", &[]), "500");
    assert_eq!(outcome(&s, "GET", "empty.example.com", "/", &[]), "500");
    let st = statuses(&y);
    assert_eq!(
        route_condition(&st, "unknown-kind", "ResolvedRefs"),
        ("False".into(), "InvalidKind".into())
    );
    assert_eq!(
        route_condition(&st, "not-found", "ResolvedRefs"),
        ("False".into(), "BackendNotFound".into())
    );
    assert_eq!(
        route_condition(&st, "cross-ns", "ResolvedRefs"),
        ("False".into(), "RefNotPermitted".into())
    );
    assert_eq!(
        route_condition(&st, "cross-ns", "Accepted"),
        ("True".into(), "Accepted".into())
    );
    // With a ReferenceGrant, the backend is used.
    let granted = y.clone()
        + "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: gateway-conformance-web-backend}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: gateway-conformance-infra}]\n  to: [{group: '', kind: Service}]\n";
    assert_eq!(outcome(&snapshot(&granted), "GET", "e", "/cross", &[]), "web-backend");
    let st = statuses(&granted);
    assert_eq!(
        route_condition(&st, "cross-ns", "ResolvedRefs"),
        ("True".into(), "ResolvedRefs".into())
    );
}

#[test]
fn redirects_and_rewrites() {
    let y = infra()
        + &route(
            "redirect",
            "  rules:\n  - matches: [{path: {type: PathPrefix, value: /scheme}}]\n    filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]\n  - matches: [{path: {type: PathPrefix, value: /host}}]\n    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, statusCode: 301}}]\n  - matches: [{path: {type: PathPrefix, value: /full}}]\n    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /new}}}]\n  - matches: [{path: {type: PathPrefix, value: /rewrite}}]\n    filters: [{type: URLRewrite, urlRewrite: {hostname: rewritten.example.com, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
        );
    let s = snapshot(&y);
    assert_eq!(
        outcome(&s, "GET", "e", "/scheme", &[]),
        "302 Some(\"https\") None None None"
    );
    // No scheme, no port: the listener's port (80, left out of the Location).
    assert_eq!(
        outcome(&s, "GET", "e", "/host", &[]),
        "301 None Some(\"example.org\") Some(80) None"
    );
    assert_eq!(
        outcome(&s, "GET", "e", "/full/x", &[]),
        "302 None None Some(80) Some(\"/new\")"
    );
    let l = s.listener(80).expect("listener");
    let rewrite = l.virtual_hosts[0]
        .routes
        .iter()
        .find_map(|r| match &r.action {
            Action::Forward(f) => f.rewrite.clone(),
            _ => None,
        })
        .expect("a rewrite");
    let rr = rewrite.uri_regex.expect("prefix rewrite");
    let apply = |p: &str| rr.pattern.replace(p, rr.replacement.as_str()).into_owned();
    assert_eq!(apply("/rewrite/three"), "/three");
    assert_eq!(apply("/rewrite"), "/");
    assert_eq!(rewrite.authority.as_deref(), Some("rewritten.example.com"));
    let r = strait_config::snapshot::RegexRewrite::replace_prefix("/prefix/one", "/one");
    assert_eq!(r.pattern.replace("/prefix/one/two", r.replacement.as_str()), "/one/two");
}

#[test]
fn listeners_and_routes_report_the_specs_reasons() {
    let y = infra().replace(
        "    allowedRoutes: {namespaces: {from: Same}}\n",
        "    allowedRoutes: {namespaces: {from: Same}}\n  - name: https\n    port: 443\n    protocol: HTTPS\n    tls: {certificateRefs: [{name: missing-cert}]}\n  - name: tcp\n    port: 9000\n    protocol: TCP\n  - name: kinds\n    port: 8080\n    protocol: HTTP\n    allowedRoutes: {kinds: [{kind: TLSRoute}, {kind: HTTPRoute}]}\n",
    ) + "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: other-ns, namespace: elsewhere}\nspec:\n  parentRefs: [{name: same-namespace, namespace: gateway-conformance-infra, sectionName: http}]\n  rules: [{backendRefs: [{name: b, port: 8080}]}]\n"
        + &route("wrong-section", "  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]\n").replace("[{name: same-namespace}]", "[{name: same-namespace, sectionName: nope}]")
        + "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: not-ours, namespace: x}\nspec:\n  gatewayClassName: other\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n";
    let st = statuses(&y);
    let gw = st.iter().find(|s| s.kind == "Gateway").expect("gateway status");
    assert_eq!(
        st.iter().filter(|s| s.kind == "Gateway").count(),
        1,
        "only Strait's Gateways"
    );
    let conds = |v: &Value| -> Vec<(String, String, String)> {
        v["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .map(|c| {
                (
                    c["type"].as_str().unwrap_or("").into(),
                    c["status"].as_str().unwrap_or("").into(),
                    c["reason"].as_str().unwrap_or("").into(),
                )
            })
            .collect()
    };
    let has = |v: &Value, t: &str, s: &str, r: &str| conds(v).contains(&(t.into(), s.into(), r.into()));
    assert!(
        has(&gw.status, "Accepted", "True", "ListenersNotValid"),
        "{:#}",
        gw.status
    );
    assert!(has(&gw.status, "Programmed", "True", "Programmed"));
    let ls = gw.status["listeners"].as_array().expect("listeners");
    assert!(has(&ls[0], "Programmed", "True", "Programmed"));
    assert!(
        has(&ls[1], "ResolvedRefs", "False", "InvalidCertificateRef"),
        "{:#}",
        ls[1]
    );
    assert!(has(&ls[1], "Programmed", "False", "Invalid"));
    assert!(has(&ls[2], "Accepted", "False", "UnsupportedProtocol"));
    assert!(has(&ls[3], "ResolvedRefs", "False", "InvalidRouteKinds"));
    assert_eq!(
        ls[3]["supportedKinds"],
        serde_json::json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}])
    );
    let other = st.iter().find(|s| s.name == "other-ns").expect("route status");
    assert!(has(
        &other.status["parents"][0],
        "Accepted",
        "False",
        "NotAllowedByListeners"
    ));
    assert_eq!(
        other.status["parents"][0]["controllerName"],
        "strait.io/gateway-controller"
    );
    assert_eq!(
        route_condition(&st, "wrong-section", "Accepted"),
        ("False".into(), "NoMatchingParent".into())
    );
    let class = st.iter().find(|s| s.kind == "GatewayClass").expect("class");
    assert!(has(&class.status, "Accepted", "True", "Accepted"));
    // The invalid HTTPS listener is not served; the HTTP one is.
    let s = snapshot(&y);
    assert!(s.listener(443).is_none());
    assert!(s.listener(80).is_some());
}

#[test]
fn what_the_crds_refuse_is_an_error_at_its_field() {
    let cases: &[(&str, &str)] = &[
        ("  rules:\n  - matches: [{path: {type: PathPrefix, value: 'no-slash'}}]\n", "spec.rules[0].matches[0].path.value"),
        ("  rules:\n  - matches: [{path: {type: RegularExpression, value: '(('}}]\n", "spec.rules[0].matches[0].path.value"),
        ("  rules:\n  - backendRefs: [{name: infra-backend-v1}]\n", "spec.rules[0].backendRefs[0].port"),
        ("  rules:\n  - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 399}}]\n", "spec.rules[0].filters[0].requestRedirect.statusCode"),
        ("  rules:\n  - filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n", "spec.rules[0].filters"),
        ("  rules:\n  - matches: [{path: {type: Exact, value: /a}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n", "spec.rules[0].filters"),
        ("  rules:\n  - timeouts: {request: 1s, backendRequest: 2s}\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n", "spec.rules[0].timeouts.backendRequest"),
        ("  rules:\n  - matches: [{method: FETCH}]\n", "spec.rules[0].matches[0].method"),
        ("  hostnames: ['1.2.3.4']\n", "spec.hostnames[0]"),
    ];
    for (body, field) in cases {
        let errs = errors(&(infra() + &route("bad", body)));
        assert!(
            errs.iter()
                .any(|d| d.field.as_deref() == Some(*field) && d.file == "test.yaml" && d.position.line > 0),
            "{field}: {errs:#?}"
        );
    }
    let errs = errors(&infra().replace("    port: 80\n", "    port: 0\n"));
    assert_eq!(errs[0].code, Code::InvalidValue);
    assert_eq!(errs[0].field.as_deref(), Some("spec.listeners[0].port"));
}

#[test]
fn grpc_and_tls_routes() {
    let y = infra().replace(
        "    allowedRoutes: {namespaces: {from: Same}}\n",
        "    allowedRoutes: {namespaces: {from: Same}}\n  - name: tls\n    port: 443\n    protocol: TLS\n    tls: {mode: Passthrough}\n",
    ) + "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: grpc, namespace: gateway-conformance-infra}\nspec:\n  parentRefs: [{name: same-namespace}]\n  rules:\n  - matches: [{method: {service: gateway_api_conformance.echo_basic.grpcecho.GrpcEcho, method: Echo}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{method: {service: gateway_api_conformance.echo_basic.grpcecho.GrpcEcho}}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n"
        + "---\napiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {name: tls, namespace: gateway-conformance-infra}\nspec:\n  parentRefs: [{name: same-namespace, sectionName: tls}]\n  hostnames: [abc.example.com]\n  rules: [{backendRefs: [{name: infra-backend-v3, port: 8080}]}]\n";
    let s = snapshot(&y);
    let grpc = [("content-type", "application/grpc")];
    let svc = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";
    assert_eq!(
        outcome(&s, "POST", "e", &format!("{svc}/Echo"), &grpc),
        "infra-backend-v1"
    );
    assert_eq!(
        outcome(&s, "POST", "e", &format!("{svc}/EchoTwo"), &grpc),
        "infra-backend-v2"
    );
    assert_eq!(outcome(&s, "POST", "e", &format!("{svc}/Echo"), &[]), "404", "not gRPC");
    let cluster = s
        .clusters
        .iter()
        .find(|c| c.host.starts_with("infra-backend-v1"))
        .expect("cluster");
    assert!(cluster.policy.h2_upstream, "gRPC backends speak HTTP/2");
    let tls = s.listener(443).expect("TLS listener");
    assert_eq!(tls.l4_routes.len(), 1);
    assert!(tls.l4_routes[0].matches_sni(Some("abc.example.com")));
    assert!(!tls.l4_routes[0].matches_sni(Some("other.example.com")));
}

#[test]
fn a_proxy_named_for_a_gateway_serves_only_that_gateway() {
    let y = infra()
        + &route(
            "r",
            "  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]\n",
        );
    let mut scope = ingress_scope(NS);
    scope
        .workload
        .labels
        .insert("gateway.networking.k8s.io/gateway-name".into(), "same-namespace".into());
    let built = build(&loaded(&y), &scope, 1).expect("builds");
    assert!(built.snapshot.listener(80).is_some());
    scope
        .workload
        .labels
        .insert("gateway.networking.k8s.io/gateway-name".into(), "another".into());
    let built = build(&loaded(&y), &scope, 1).expect("builds");
    assert!(built.snapshot.listener(80).is_none());
}

fn statuses(yaml: &str) -> Vec<strait_config::compile::gateway_api::status::ResourceStatus> {
    let l = loaded(yaml);
    let c = compile(&l.bundle);
    status(&c.gateway_api, "2026-01-01T00:00:00Z")
}

fn route_condition(
    st: &[strait_config::compile::gateway_api::status::ResourceStatus],
    name: &str,
    kind: &str,
) -> (String, String) {
    let r = st
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no status for {name}"));
    let c = r.status["parents"][0]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} on {name}: {:#}", r.status));
    (
        c["status"].as_str().unwrap_or("").into(),
        c["reason"].as_str().unwrap_or("").into(),
    )
}

fn listener(st: &[strait_config::compile::gateway_api::status::ResourceStatus]) -> Value {
    let gw = st.iter().find(|s| s.kind == "Gateway").expect("gateway");
    gw.status["listeners"][0].clone()
}

#[test]
fn analyze_reports_what_status_would_say() {
    use strait_config::analyze::{analyze, Message};
    let y = infra()
        + &route(
            "not-found",
            "  rules:\n  - backendRefs: [{name: nonexistent, port: 8080}]\n",
        )
        + &route(
            "elsewhere",
            "  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]\n",
        )
        .replace(
            "[{name: same-namespace}]",
            "[{name: same-namespace, sectionName: nope}]",
        )
        + &route(
            "no-gateway",
            "  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]\n",
        )
        .replace("[{name: same-namespace}]", "[{name: absent}]");
    let l = loaded(&y);
    let found: Vec<(Message, String, Option<String>)> = analyze(&l.bundle, &Default::default())
        .into_iter()
        .map(|f| {
            (
                f.message,
                f.diagnostic.resource.map(|r| r.name).unwrap_or_default(),
                f.diagnostic.field,
            )
        })
        .collect();
    assert!(
        found.contains(&(
            Message::GatewayRouteRefsNotResolved,
            "not-found".into(),
            Some("spec.rules".into())
        )),
        "{found:?}"
    );
    assert!(
        found.contains(&(
            Message::GatewayRouteNotAccepted,
            "elsewhere".into(),
            Some("spec.parentRefs[0]".into())
        )),
        "{found:?}"
    );
    assert!(
        found.contains(&(
            Message::ReferencedResourceNotFound,
            "no-gateway".into(),
            Some("spec.parentRefs[0]".into())
        )),
        "{found:?}"
    );
}

#[test]
fn cors_mirror_timeouts_and_retries_compile_into_the_route() {
    let y = infra()
        + &route(
            "policy",
            "  rules:\n  - filters:\n    - type: CORS\n      cors: {allowOrigins: ['https://*.example.com', 'https://app.example.org'], allowMethods: [GET, POST], allowCredentials: true, maxAge: 60}\n    - type: RequestMirror\n      requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}, percent: 25}\n    timeouts: {request: 10s, backendRequest: 2s}\n    retry: {attempts: 3, codes: [502]}\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
        );
    let s = snapshot(&y);
    let route = &s.listener(80).expect("listener").virtual_hosts[0].routes[0];
    let cors = route.policy.cors.as_ref().expect("CORS");
    let allowed = |o: &str| {
        cors.allow_origins
            .iter()
            .any(|m| strait_config::router::str_matches(m, o))
    };
    assert!(allowed("https://a.example.com"));
    assert!(allowed("https://app.example.org"));
    assert!(!allowed("https://a.example.net"));
    assert!(cors.allow_credentials);
    assert_eq!(cors.max_age.as_ref().map(|v| v.to_str().unwrap_or("")), Some("60"));
    let Action::Forward(f) = &route.action else {
        panic!("a forward")
    };
    assert_eq!(f.mirrors.len(), 1);
    assert_eq!(f.mirrors[0].percent, 25.0);
    assert!(s.clusters[f.mirrors[0].cluster].host.starts_with("infra-backend-v2."));
    assert_eq!(route.policy.timeout, Some(std::time::Duration::from_secs(10)));
    assert_eq!(
        route.policy.retry.per_try_timeout,
        Some(std::time::Duration::from_secs(2))
    );
    assert_eq!(route.policy.retry.attempts, 3);
    assert!(route.policy.retry.retries_status(502, None));
    assert!(!route.policy.retry.retries_status(503, None));
}

#[test]
fn a_mesh_route_reports_its_service_parent() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: shop}\nspec:\n  ports: [{name: http, port: 9080}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: reviews, namespace: shop}\nspec:\n  parentRefs: [{group: '', kind: Service, name: reviews, port: 9080}]\n  rules: [{backendRefs: [{name: reviews, port: 9080}, {name: gone, port: 9080}]}]\n";
    let st = statuses(yaml);
    let route = st
        .iter()
        .find(|s| s.name == "reviews")
        .expect("a status for the mesh route");
    let parent = &route.status["parents"][0];
    assert_eq!(
        parent["parentRef"],
        serde_json::json!({"group": "", "kind": "Service", "name": "reviews", "port": 9080})
    );
    assert_eq!(parent["controllerName"], "strait.io/gateway-controller");
    assert_eq!(
        route_condition(&st, "reviews", "Accepted"),
        ("True".into(), "Accepted".into())
    );
    assert_eq!(
        route_condition(&st, "reviews", "ResolvedRefs"),
        ("False".into(), "BackendNotFound".into())
    );
}
