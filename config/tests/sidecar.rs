//! The sidecar role's snapshot: outbound listeners per service port routed by the
//! VirtualServices bound to the mesh, unknown destinations passed through (or
//! refused under REGISTRY_ONLY), and the workload's policy on the inbound listener
//! only.

use http::HeaderMap;
use strait_config::bundle::{load_text, Loaded};
use strait_config::mesh::{MeshConfig, OutboundMode};
use strait_config::router::{RequestView, Routed};
use strait_config::snapshot::{Action, ClusterKind, Protocol, Snapshot};
use strait_config::translate::{INBOUND_PORT, PASSTHROUGH};
use strait_config::{build, Role, Scope, Workload};

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  clusterIP: 10.96.0.7
  ports: [{name: http, port: 9080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: reviews-1, namespace: shop, labels: {kubernetes.io/service-name: reviews}}
ports: [{name: http, port: 9080}]
endpoints:
- addresses: [10.1.0.1]
- addresses: [10.1.0.2]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: shop}
spec:
  hosts: [db.internal]
  addresses: [10.96.0.9]
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints: [{address: 10.2.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - name: canary
    match: [{headers: {x-canary: {exact: "1"}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: rest
    route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge-only, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  gateways: [istio-system/edge]
  http:
  - name: edge
    route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*/*"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewers, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  rules: [{from: [{source: {namespaces: [shop]}}]}]
"#;

fn sidecar(outbound: OutboundMode) -> Scope {
    Scope {
        role: Role::Sidecar,
        workload: Workload {
            namespace: "shop".into(),
            labels: [("app".to_string(), "reviews".to_string())].into(),
            service_account: Some("reviews".into()),
            ips: vec!["10.1.0.1".parse().expect("ip")],
        },
        mesh: MeshConfig {
            outbound,
            ..MeshConfig::default()
        },
    }
}

fn snapshot(scope: &Scope) -> Snapshot {
    let mut loaded = Loaded::default();
    load_text(&mut loaded, "mesh.yaml", MESH);
    match build(&loaded, scope, 1) {
        Ok(built) => built.snapshot,
        Err(e) => panic!("{e:#?}"),
    }
}

/// The route name and first destination's cluster for a request on `port`.
fn route(s: &Snapshot, port: u16, authority: &str, headers: &[(&str, &str)]) -> (String, String) {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    let listener = s
        .listeners
        .iter()
        .find(|l| l.port == port && l.protocol == Protocol::Http)
        .expect("an HTTP listener on the port");
    let view = RequestView {
        method: "GET",
        path: "/",
        authority,
        scheme: "http",
        headers: &map,
        claims: None,
    };
    match listener.route(&view) {
        Routed::Matched(m) => {
            let Action::Forward(f) = &m.route.action else {
                panic!("not forwarded")
            };
            let cluster = &s.clusters[f.destinations[0].cluster];
            (m.route.name.clone().unwrap_or_default(), cluster.name.clone())
        }
        other => (format!("{other:?}"), String::new()),
    }
}

#[test]
fn outbound_http_follows_the_mesh_virtual_services() {
    let s = snapshot(&sidecar(OutboundMode::AllowAny));
    let v1 = "outbound|9080|v1|reviews.shop.svc.cluster.local";
    let v2 = "outbound|9080|v2|reviews.shop.svc.cluster.local";
    // Every name a client in `shop` uses for the service, and its VIP.
    for host in [
        "reviews",
        "reviews:9080",
        "reviews.shop",
        "reviews.shop.svc.cluster.local",
        "10.96.0.7",
    ] {
        assert_eq!(
            route(&s, 9080, host, &[]),
            ("rest".to_string(), v1.to_string()),
            "{host}"
        );
    }
    assert_eq!(route(&s, 9080, "reviews", &[("x-canary", "1")]).1, v2);
    // The VirtualService bound to the edge gateway only is not the mesh's.
    assert!(s.listeners.iter().all(|l| l
        .virtual_hosts
        .iter()
        .all(|v| v.routes.iter().all(|r| r.name.as_deref() != Some("edge")))));
    // Anything else goes where the client was going.
    let (_, fallback) = route(&s, 9080, "example.org", &[]);
    assert_eq!(fallback, PASSTHROUGH);
    let passthrough = s.clusters.iter().find(|c| c.name == PASSTHROUGH).expect("cluster");
    assert_eq!(passthrough.kind, ClusterKind::OriginalDestination);
}

#[test]
fn registry_only_refuses_unknown_destinations() {
    let s = snapshot(&sidecar(OutboundMode::RegistryOnly));
    let (_, fallback) = route(&s, 9080, "example.org", &[]);
    let cluster = s.clusters.iter().find(|c| c.name == fallback).expect("cluster");
    assert_eq!(cluster.kind, ClusterKind::Blackhole);
}

#[test]
fn tcp_services_get_tcp_listeners() {
    let s = snapshot(&sidecar(OutboundMode::AllowAny));
    let db = s
        .listeners
        .iter()
        .find(|l| l.port == 5432)
        .expect("a listener for the database port");
    assert_eq!(db.protocol, Protocol::Tcp);
    let cluster = &s.clusters[db.l4_routes[0].destinations[0].cluster];
    assert_eq!(cluster.name, "outbound|5432||db.internal");
    let mut loaded = Loaded::default();
    load_text(&mut loaded, "mesh.yaml", MESH);
    let built = build(&loaded, &sidecar(OutboundMode::AllowAny), 1).expect("builds");
    let index = db.l4_routes[0].destinations[0].cluster;
    assert_eq!(built.endpoints.clusters[index].endpoints.len(), 1);
}

#[test]
fn the_workload_policy_sits_on_the_inbound_listener_only() {
    let s = snapshot(&sidecar(OutboundMode::AllowAny));
    let inbound = s.listener(INBOUND_PORT).expect("inbound listener");
    let policy = s.policy(inbound).expect("the workload's policy");
    assert_eq!(policy.authz.allow.len(), 1);
    let to_workload = &s.clusters[match &inbound.virtual_hosts[0].routes[0].action {
        Action::Forward(f) => f.destinations[0].cluster,
        _ => panic!("forwarded"),
    }];
    assert_eq!(to_workload.kind, ClusterKind::LocalWorkload);
    assert!(
        s.listeners
            .iter()
            .filter(|l| l.port != INBOUND_PORT)
            .all(|l| l.policy.is_none()),
        "outbound traffic is the caller's, not checked by the caller's policy"
    );
}

#[test]
fn a_gateway_of_the_same_bundle_serves_its_own_routes() {
    let mut loaded = Loaded::default();
    load_text(&mut loaded, "mesh.yaml", MESH);
    let gateway = strait_config::testing::ingress_scope("istio-system");
    let s = build(&loaded, &gateway, 1).expect("builds").snapshot;
    let names: Vec<_> = s.listeners.iter().map(|l| l.port).collect();
    assert_eq!(names, [80]);
    assert_eq!(route(&s, 80, "reviews.shop.svc.cluster.local", &[]).0, "edge");
    assert!(
        s.policies.is_empty(),
        "the policy selects the reviews workload, not the gateway"
    );
}

/// The inbound mTLS of the sidecar of `scope` with `extra` resources beside the mesh.
fn inbound_mtls(scope: &Scope, extra: &str) -> strait_config::snapshot::InboundMtls {
    let mut loaded = Loaded::default();
    load_text(&mut loaded, "mesh.yaml", MESH);
    load_text(&mut loaded, "peer.yaml", extra);
    let built = match build(&loaded, scope, 1) {
        Ok(built) => built,
        Err(e) => panic!("{e:#?}"),
    };
    let inbound = built
        .snapshot
        .listeners
        .iter()
        .find(|l| l.port == INBOUND_PORT)
        .expect("inbound listener");
    inbound
        .mtls
        .clone()
        .expect("the inbound listener carries the workload's mTLS")
}

fn peer_auth(ns: &str, name: &str, selector: Option<&str>, mode: &str, ports: &str) -> String {
    let selector = selector.map_or(String::new(), |app| {
        format!("  selector: {{matchLabels: {{app: {app}}}}}\n")
    });
    let mtls = if mode.is_empty() {
        String::new()
    } else {
        format!("  mtls: {{mode: {mode}}}\n")
    };
    let ports = if ports.is_empty() {
        String::new()
    } else {
        format!("  portLevelMtls: {ports}\n")
    };
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{selector}{mtls}{ports}---\n"
    )
}

#[test]
fn peer_authentication_resolves_workload_over_namespace_over_root() {
    use strait_config::snapshot::PeerMode::{Disable, Permissive, Strict};
    let scope = sidecar(OutboundMode::AllowAny);
    let root = peer_auth("istio-system", "mesh", None, "STRICT", "");
    let ns = peer_auth("shop", "ns", None, "DISABLE", "");
    let other_ns = peer_auth("other", "ns", None, "DISABLE", "");
    let workload = peer_auth("shop", "reviews", Some("reviews"), "PERMISSIVE", "");
    let other_app = peer_auth("shop", "ratings", Some("ratings"), "DISABLE", "");
    let unset = peer_auth("shop", "unset", Some("reviews"), "", "{\"9080\": {mode: STRICT}}");
    let cases: [(&str, String, strait_config::snapshot::PeerMode); 7] = [
        ("no policy: PERMISSIVE", String::new(), Permissive),
        ("root namespace", root.clone(), Strict),
        (
            "another namespace's policy does not apply",
            other_ns.clone() + &root,
            Strict,
        ),
        ("namespace over root", ns.clone() + &root, Disable),
        ("workload over namespace", workload.clone() + &ns + &root, Permissive),
        ("another workload's policy does not apply", other_app + &root, Strict),
        ("UNSET inherits the namespace's", unset.clone() + &ns, Disable),
    ];
    for (what, yaml, want) in cases {
        assert_eq!(inbound_mtls(&scope, &yaml).mode, want, "{what}");
    }
    let mtls = inbound_mtls(&scope, &(unset + &ns));
    assert_eq!(mtls.mode_for(9080), Strict, "port-level STRICT on the workload's port");
    assert_eq!(mtls.mode_for(8080), Disable, "other ports keep the inherited mode");
    assert_eq!(mtls.sources, ["shop/unset", "shop/ns"]);
    let inherits = peer_auth("shop", "p", Some("reviews"), "STRICT", "{\"9080\": {mode: UNSET}}");
    assert_eq!(
        inbound_mtls(&scope, &inherits).mode_for(9080),
        Strict,
        "a port-level UNSET inherits"
    );
}

#[test]
fn clusters_say_whether_they_speak_the_mesh_mtls() {
    use strait_config::snapshot::{MeshTls, TLS_MODE_LABEL};
    let dr = |mode: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: db, namespace: shop}}\nspec:\n  host: db.internal\n  trafficPolicy: {{tls: {{mode: {mode}}}}}\n")
    };
    for (mode, want) in [
        ("ISTIO_MUTUAL", MeshTls::Istio),
        ("DISABLE", MeshTls::Off),
        ("", MeshTls::Auto),
    ] {
        let mut loaded = Loaded::default();
        load_text(&mut loaded, "mesh.yaml", MESH);
        if !mode.is_empty() {
            load_text(&mut loaded, "dr.yaml", &dr(mode));
        }
        let built = match build(&loaded, &sidecar(OutboundMode::AllowAny), 1) {
            Ok(built) => built,
            Err(e) => panic!("{e:#?}"),
        };
        let db = built
            .snapshot
            .clusters
            .iter()
            .find(|c| c.host == "db.internal")
            .expect("db cluster");
        assert_eq!(db.policy.mesh_tls, want, "tls mode {mode:?}");
        if mode == "ISTIO_MUTUAL" {
            assert!(
                built.warnings.is_empty(),
                "ISTIO_MUTUAL is served: {:#?}",
                built.warnings
            );
        }
    }
    let mut meshed = strait_config::snapshot::Endpoint {
        address: "10.1.0.1:9080".parse().expect("addr"),
        hostname: None,
        labels: Default::default(),
        workload: None,
    };
    assert!(!MeshTls::Auto.to(Some(&meshed)), "no sidecar label: plaintext");
    meshed.labels.insert(TLS_MODE_LABEL.into(), "istio".into());
    assert!(MeshTls::Auto.to(Some(&meshed)), "a sidecar's endpoint: mTLS");
    assert!(!MeshTls::Off.to(Some(&meshed)));
    assert!(MeshTls::Istio.to(None));
}

#[test]
fn a_destination_without_a_port_goes_to_the_port_it_is_routed_on() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: multi, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 8080}, {name: http-admin, port: 9090}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: multi-1, namespace: shop, labels: {kubernetes.io/service-name: multi}}
ports: [{name: http, port: 8080}, {name: http-admin, port: 9090}]
endpoints: [{addresses: [10.1.0.9]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: multi, namespace: shop}
spec:
  hosts: [multi]
  http: [{route: [{destination: {host: multi}}]}]
"#;
    let mut loaded = Loaded::default();
    load_text(&mut loaded, "multi.yaml", yaml);
    let built = match build(&loaded, &sidecar(OutboundMode::AllowAny), 1) {
        Ok(built) => built,
        Err(e) => panic!("a multi-port service routed without a port is valid: {e:#?}"),
    };
    for port in [8080, 9090] {
        let (_, cluster) = route(&built.snapshot, port, "multi", &[]);
        assert_eq!(
            cluster,
            format!("outbound|{port}||multi.shop.svc.cluster.local"),
            "port {port}"
        );
    }
}

#[test]
fn a_tracing_provider_resolves_through_the_registry_or_says_it_is_found_nowhere() {
    let mesh = |service: &str| {
        let text = format!(
            "extensionProviders:\n- name: otel\n  opentelemetry: {{service: {service}, port: 9080}}\ndefaultProviders: {{tracing: [otel]}}\n"
        );
        match strait_config::mesh::parse("mesh.yaml", &text) {
            Ok((mesh, _)) => mesh,
            Err(e) => panic!("{e:#?}"),
        }
    };
    let build_with = |service: &str| {
        let mut loaded = Loaded::default();
        load_text(&mut loaded, "mesh.yaml", MESH);
        let scope = Scope {
            mesh: mesh(service),
            ..sidecar(OutboundMode::AllowAny)
        };
        match build(&loaded, &scope, 1) {
            Ok(built) => built,
            Err(e) => panic!("{e:#?}"),
        }
    };
    let known = build_with("reviews.shop.svc.cluster.local");
    let cluster = known
        .snapshot
        .tracing_cluster
        .expect("the registry defines the collector");
    assert_eq!(
        known.snapshot.clusters[cluster].name,
        "outbound|9080||reviews.shop.svc.cluster.local"
    );
    let unknown = build_with("otel-collector.observability.svc.cluster.local");
    assert_eq!(unknown.snapshot.tracing_cluster, None);
    assert!(
        unknown.warnings.iter().any(|w| w
            .message
            .contains("no Service or ServiceEntry defines otel-collector.observability.svc.cluster.local")),
        "{:#?}",
        unknown.warnings
    );
}

/// GAMMA: an HTTPRoute whose parent is the Service `reviews`, in the Service's
/// namespace (a producer route) or in the client's (a consumer route).
fn gamma_snapshot(route_ns: &str, client_ns: &str) -> Snapshot {
    let route = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: ratings, namespace: shop}}\nspec:\n  clusterIP: 10.96.0.8\n  ports: [{{name: http, port: 9080}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: ratings-1, namespace: shop, labels: {{kubernetes.io/service-name: ratings}}}}\nports: [{{name: http, port: 9080}}]\nendpoints: [{{addresses: [10.1.0.9]}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: reviews-gamma, namespace: {route_ns}}}\nspec:\n  parentRefs: [{{group: '', kind: Service, name: reviews, namespace: shop, port: 9080}}]\n  rules:\n  - name: to-ratings\n    matches: [{{headers: [{{name: x-gamma, value: \"1\"}}]}}]\n    backendRefs: [{{name: ratings, namespace: shop, port: 9080}}]\n  - name: default\n    matches: [{{path: {{type: PathPrefix, value: /}}}}]\n    backendRefs: [{{name: reviews, namespace: shop, port: 9080}}]\n"
    );
    let grant = if route_ns == "shop" {
        String::new()
    } else {
        format!("---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: from-{route_ns}, namespace: shop}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {route_ns}}}]\n  to: [{{group: '', kind: Service}}]\n")
    };
    let mut loaded = Loaded::default();
    load_text(&mut loaded, "mesh.yaml", MESH);
    load_text(&mut loaded, "gamma.yaml", &format!("{route}{grant}"));
    let mut scope = sidecar(OutboundMode::AllowAny);
    scope.workload.namespace = client_ns.into();
    match build(&loaded, &scope, 1) {
        Ok(built) => built.snapshot,
        Err(e) => panic!("{e:#?}"),
    }
}

#[test]
fn gamma_http_routes_with_a_service_parent_take_that_service_s_traffic() {
    let ratings = "outbound|9080||ratings.shop.svc.cluster.local";
    let reviews = "outbound|9080||reviews.shop.svc.cluster.local";
    // A producer route (the Service's namespace) applies to every client, instead
    // of the mesh VirtualService for the same service.
    for client in ["shop", "web"] {
        let s = gamma_snapshot("shop", client);
        let host = "reviews.shop.svc.cluster.local";
        assert_eq!(
            route(&s, 9080, host, &[("x-gamma", "1")]),
            ("to-ratings".to_string(), ratings.to_string()),
            "client in {client}"
        );
        assert_eq!(route(&s, 9080, host, &[]), ("default".to_string(), reviews.to_string()));
    }
    // A consumer route (another namespace) applies to its own namespace's clients
    // only; the others keep the VirtualService.
    let s = gamma_snapshot("web", "web");
    assert_eq!(
        route(&s, 9080, "reviews.shop.svc.cluster.local", &[("x-gamma", "1")]).1,
        ratings
    );
    let s = gamma_snapshot("web", "shop");
    assert_eq!(
        route(&s, 9080, "reviews", &[("x-gamma", "1")]),
        (
            "rest".to_string(),
            "outbound|9080|v1|reviews.shop.svc.cluster.local".to_string()
        )
    );
}
