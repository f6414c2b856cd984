//! The Kubernetes Gateway API end to end, with the conformance suite's manifest
//! shapes (GatewayClass, Gateway `same-namespace` in `gateway-conformance-infra`,
//! HTTPRoutes to Services backed by real echo servers): the request, the backend
//! that answered, the status, the path and headers it saw, the redirect Location.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;

/// One request of a table: (method, host, path, headers, backend that answers).
type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

const NS: &str = "gateway-conformance-infra";

/// GatewayClass `strait` and Gateway `same-namespace` with `listeners` (YAML list
/// items written at column 2).
fn gateway(listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: strait}}\nspec: {{controllerName: strait.io/gateway-controller}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: same-namespace, namespace: {NS}}}\nspec:\n  gatewayClassName: strait\n  listeners:\n{listeners}"
    )
}

const HTTP_LISTENER: &str = "  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}}\n";

/// A Service `name` (port 8080) whose one endpoint is `addr`.
fn service(name: &str, addr: SocketAddr) -> String {
    let port = addr.port();
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  ports: [{{name: http, port: 8080, targetPort: {port}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: {NS}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: http, port: {port}}}]\n"
    )
}

fn http_route(name: &str, body: &str) -> String {
    format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  parentRefs: [{{name: same-namespace}}]\n{body}")
}

/// Three echo backends, infra-backend-v1..v3, and their Services.
async fn backends() -> (Vec<strait_gateway::echo::EchoServer>, String) {
    let mut servers = Vec::new();
    let mut yaml = String::new();
    for v in ["v1", "v2", "v3"] {
        let name = format!("infra-backend-{v}");
        let s = echo(&name, v).await;
        yaml.push_str(&service(&name, s.addr));
        servers.push(s);
    }
    (servers, yaml)
}

/// A client that resolves `hosts` to the gateway and does not follow redirects.
fn no_redirects(hosts: &[&str], port: u16) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    for h in hosts {
        b = b.resolve(h, SocketAddr::from(([127, 0, 0, 1], port)));
    }
    b.build().expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_and_precedence_as_the_conformance_cases() {
    let (_servers, services) = backends().await;
    // HTTPRouteMatching, HTTPRouteMatchingAcrossRoutes, HTTPRouteMethodMatching,
    // HTTPRouteQueryParamMatching, HTTPRouteHeaderMatching shapes.
    let config = gateway(HTTP_LISTENER)
        + &services
        + &http_route(
            "matching",
            "  rules:\n  - matches: [{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n",
        )
        + &http_route(
            "more",
            "  hostnames: [more.example.com]\n  rules:\n  - matches: [{path: {type: Exact, value: /exact}}, {method: POST}]\n    backendRefs: [{name: infra-backend-v3, port: 8080}]\n  - matches: [{queryParams: [{name: animal, value: whale}]}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
        );
    let (gw, _dir) = start_with(&[("gw.yaml", &config)]);
    let c = client(&[("example.com", gw.http), ("more.example.com", gw.http)], &[]);
    let cases: &[Case<'_>] = &[
        ("GET", "example.com", "/", &[], "infra-backend-v1"),
        ("GET", "example.com", "/example", &[], "infra-backend-v1"),
        ("GET", "example.com", "/", &[("Version", "one")], "infra-backend-v1"),
        ("GET", "example.com", "/v2", &[], "infra-backend-v2"),
        ("GET", "example.com", "/v2/example", &[], "infra-backend-v2"),
        ("GET", "example.com", "/", &[("Version", "two")], "infra-backend-v2"),
        ("GET", "example.com", "/v2example", &[], "infra-backend-v1"),
        ("GET", "more.example.com", "/exact", &[], "infra-backend-v3"),
        ("GET", "more.example.com", "/exact/no", &[], "infra-backend-v1"),
        ("POST", "more.example.com", "/anything", &[], "infra-backend-v3"),
        ("GET", "more.example.com", "/?animal=whale", &[], "infra-backend-v2"),
        ("GET", "more.example.com", "/?animal=dolphin", &[], "infra-backend-v1"),
    ];
    for (method, host, path, headers, want) in cases {
        let url = format!("http://{host}:{}{path}", gw.http);
        let mut req = c.request(method.parse().expect("method"), &url);
        for (k, v) in *headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(resp.status(), 200, "{method} {url}");
        let body: serde_json::Value = resp.json().await.expect("echo json");
        assert_eq!(body["name"], *want, "{method} {url} {headers:?}");
        assert_eq!(body["path"], *path, "the path reaches the backend unchanged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_redirects_rewrites_and_invalid_backends() {
    let (_servers, services) = backends().await;
    let config = gateway(HTTP_LISTENER)
        + &services
        + &http_route(
            "filters",
            "  rules:\n  - matches: [{path: {type: PathPrefix, value: /headers}}]\n    filters:\n    - type: RequestHeaderModifier\n      requestHeaderModifier: {set: [{name: X-Header-Set, value: set-overwrites}], add: [{name: X-Header-Add, value: add-appends}], remove: [X-Header-Remove]}\n    - type: ResponseHeaderModifier\n      responseHeaderModifier: {set: [{name: X-Response-Set, value: set}]}\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /prefix/one}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /strip-prefix}}]\n    filters: [{type: URLRewrite, urlRewrite: {hostname: rewritten.example.com, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /full/one}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /one}}}]\n    backendRefs: [{name: infra-backend-v3, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /redirect-scheme}}]\n    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]\n  - matches: [{path: {type: PathPrefix, value: /redirect-host}}]\n    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]\n  - matches: [{path: {type: PathPrefix, value: /redirect-prefix}}]\n    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}}]\n  - matches: [{path: {type: PathPrefix, value: /redirect-port}}]\n    filters: [{type: RequestRedirect, requestRedirect: {port: 8083}}]\n  - matches: [{path: {type: PathPrefix, value: /invalid}}]\n    backendRefs: [{name: does-not-exist, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /partly-invalid}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}, {name: does-not-exist, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /weighted}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080, weight: 0}, {name: infra-backend-v2, port: 8080, weight: 1}]\n",
        );
    let (gw, _dir) = start_with(&[("gw.yaml", &config)]);
    let c = no_redirects(&["example.com"], gw.http);
    let url = |p: &str| format!("http://example.com:{}{p}", gw.http);

    // HTTPRouteRequestHeaderModifier / HTTPRouteResponseHeaderModifier.
    let resp = c
        .get(url("/headers"))
        .header("X-Header-Set", "original")
        .header("X-Header-Add", "first")
        .header("X-Header-Remove", "gone")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.headers()["x-response-set"], "set");
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["headers"]["x-header-set"], "set-overwrites");
    assert_eq!(body["headers"]["x-header-add"], "first, add-appends");
    assert!(body["headers"].get("x-header-remove").is_none(), "{body}");

    // HTTPRouteRewritePath and HTTPRouteRewriteHost.
    for (path, backend, want, host) in [
        ("/prefix/one/two", "infra-backend-v1", "/one/two", None),
        ("/prefix/one", "infra-backend-v1", "/one", None),
        (
            "/strip-prefix/three",
            "infra-backend-v2",
            "/three",
            Some("rewritten.example.com"),
        ),
        ("/strip-prefix", "infra-backend-v2", "/", Some("rewritten.example.com")),
        ("/full/one/two?q=1", "infra-backend-v3", "/one?q=1", None),
    ] {
        let (status, body) = get_json(&c, &url(path), &[]).await;
        assert_eq!((status, body["name"].as_str()), (200, Some(backend)), "{path}");
        assert_eq!(body["path"], want, "{path}");
        if let Some(h) = host {
            assert_eq!(body["host"], h, "{path}");
        }
    }

    // HTTPRouteRedirectScheme, -Hostname, -Path, -Port: the Location.
    for (path, code, location) in [
        (
            "/redirect-scheme/x?a=1",
            301,
            "https://example.com/redirect-scheme/x?a=1".to_string(),
        ),
        ("/redirect-host", 302, "http://example.org/redirect-host".to_string()),
        (
            "/redirect-prefix/path",
            302,
            "http://example.com/replacement-prefix/path".to_string(),
        ),
        (
            "/redirect-port",
            302,
            "http://example.com:8083/redirect-port".to_string(),
        ),
    ] {
        let resp = c.get(url(path)).send().await.expect("get");
        assert_eq!(resp.status(), code, "{path}");
        assert_eq!(resp.headers()["location"], location.as_str(), "{path}");
    }

    // HTTPRouteInvalidBackendRefNotFound: 500; weight 0 gets nothing.
    let resp = c.get(url("/invalid")).send().await.expect("get");
    assert_eq!(resp.status(), 500);
    // One valid and one invalid backend, equal weights: the invalid one's share gets
    // 500, the rest reaches the valid one (60 requests: both kinds, surely).
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..60 {
        let (status, body) = get_json(&c, &url("/partly-invalid"), &[]).await;
        match status {
            200 => {
                assert_eq!(body["name"].as_str(), Some("infra-backend-v1"));
                ok += 1;
            }
            500 => failed += 1,
            other => panic!("/partly-invalid answered {other}"),
        }
    }
    assert!(ok >= 10 && failed >= 10, "{ok} answered, {failed} got 500");
    for _ in 0..10 {
        let (status, body) = get_json(&c, &url("/weighted"), &[]).await;
        assert_eq!((status, body["name"].as_str()), (200, Some("infra-backend-v2")));
    }
    // Nothing matches a host the route does not serve? Every host: 404 for none.
    let resp = c.get(url("/nowhere-but-default")).send().await.expect("get");
    assert_eq!(resp.status(), 404, "no rule for this path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listeners_serve_their_certificate_refs() {
    let (_servers, services) = backends().await;
    let a = TestCert::new(&["a.example.com"]);
    let b = TestCert::new(&["b.example.com"]);
    let listeners = "  - {name: https-a, port: 443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: a-cert}]}}\n  - {name: https-b, port: 443, protocol: HTTPS, hostname: b.example.com, tls: {certificateRefs: [{name: b-cert, namespace: certs}]}}\n";
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: gateways-use-certs, namespace: certs}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: gateway-conformance-infra}]\n  to: [{group: '', kind: Secret}]\n";
    let config = gateway(listeners)
        + &services
        + "---\n"
        + &a.secret_yaml("a-cert", NS)
        + "---\n"
        + &b.secret_yaml("b-cert", "certs")
        + grant
        + &http_route(
            "https",
            "  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]\n",
        );
    let (gw, _dir) = start_with(&[("gw.yaml", &config)]);
    let c = client(&[("a.example.com", gw.https), ("b.example.com", gw.https)], &[&a, &b]);
    for host in ["a.example.com", "b.example.com"] {
        let (status, body) = get_json(&c, &format!("https://{host}:{}/", gw.https), &[]).await;
        assert_eq!(
            (status, body["name"].as_str()),
            (200, Some("infra-backend-v1")),
            "{host}"
        );
    }
    // A Host served by the other listener's certificate: 421 (HTTP/1.1, where the
    // Host header may differ from the name the connection was made for).
    let h1 = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .resolve("a.example.com", SocketAddr::from(([127, 0, 0, 1], gw.https)))
        .add_root_certificate(reqwest::Certificate::from_pem(a.cert_pem.as_bytes()).expect("pem"))
        .build()
        .expect("client");
    let resp = h1
        .get(format!("https://a.example.com:{}/", gw.https))
        .header("host", "b.example.com")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 421);
}

/// The shadow's count of requests for `key` (its echo counts them), waiting for
/// copies in flight.
async fn copies_of(shadow: &strait_gateway::echo::EchoServer, key: &str, want: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let url = format!("http://{}/?key={key}&peek=1", shadow.addr);
        let body: serde_json::Value = reqwest::get(url).await.expect("shadow").json().await.expect("json");
        let seen = body["seen"].as_u64().expect("seen");
        if seen >= want || std::time::Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_mirror_and_cors_filters() {
    let (servers, services) = backends().await;
    let config = gateway(HTTP_LISTENER)
        + &services
        + &http_route(
            "mirror-and-cors",
            "  rules:\n  - matches: [{path: {type: PathPrefix, value: /mirror}}]\n    filters:\n    - type: RequestMirror\n      requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}}\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /cors}}]\n    filters:\n    - type: CORS\n      cors: {allowOrigins: ['https://www.example.com'], allowMethods: [GET, PUT], allowHeaders: [x-header-1], maxAge: 3600}\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
        );
    let (gw, _dir) = start_with(&[("gateway-api.yaml", &config)]);
    let c = no_redirects(&["example.com"], gw.http);
    let url = |p: &str| format!("http://example.com:{}{p}", gw.http);

    // HTTPRouteRequestMirror: v1 answers, v2 gets a copy.
    for _ in 0..3 {
        let (status, body) = get_json(&c, &url("/mirror?key=mirrored"), &[]).await;
        assert_eq!((status, body["name"].as_str()), (200, Some("infra-backend-v1")));
    }
    assert_eq!(
        copies_of(&servers[1], "mirrored", 3).await,
        3,
        "every request copied to v2"
    );

    // HTTPRouteCORS: a preflight from an allowed origin is answered by the gateway,
    // one from another origin is not allowed; a simple request gets the header.
    let preflight = |origin: &str| {
        c.request(reqwest::Method::OPTIONS, url("/cors"))
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .send()
    };
    let allowed = preflight("https://www.example.com").await.expect("preflight");
    assert_eq!(allowed.status(), 200);
    let h = allowed.headers();
    assert_eq!(h["access-control-allow-origin"], "https://www.example.com");
    assert!(h["access-control-allow-methods"].to_str().unwrap_or("").contains("PUT"));
    assert_eq!(h["access-control-max-age"], "3600");
    let refused = preflight("https://evil.example.org").await.expect("preflight");
    assert!(refused.headers().get("access-control-allow-origin").is_none());
    let simple = c
        .get(url("/cors"))
        .header("origin", "https://www.example.com")
        .send()
        .await
        .expect("get");
    assert_eq!(simple.status(), 200);
    assert_eq!(
        simple.headers()["access-control-allow-origin"],
        "https://www.example.com"
    );
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_routes_pass_tls_through_by_sni() {
    use std::sync::Arc;
    use tokio_rustls::rustls;

    let (cert_a, cert_b) = (TestCert::new(&["a.example.com"]), TestCert::new(&["b.example.com"]));
    let ports = [
        crate::l4::backend("tls-a", Some(&cert_a)).await,
        crate::l4::backend("tls-b", Some(&cert_b)).await,
    ];
    let mut config = gateway("  - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}, allowedRoutes: {kinds: [{kind: TLSRoute}]}}\n");
    for (name, port) in ["tls-a", "tls-b"].iter().zip(ports) {
        config.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  ports: [{{name: tls, port: 443, targetPort: {port}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: {NS}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: tls, port: {port}}}]\n"
        ));
    }
    for (name, host) in [("tls-a", "a.example.com"), ("tls-b", "b.example.com")] {
        config.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  parentRefs: [{{name: same-namespace}}]\n  hostnames: [{host}]\n  rules: [{{backendRefs: [{{name: {name}, port: 443}}]}}]\n"
        ));
    }
    let (gw, _dir) = start_with(&[("gw.yaml", &config)]);
    // End to end TLS: the client verifies each backend's own certificate.
    for (sni, cert, name) in [("a.example.com", &cert_a, "tls-a"), ("b.example.com", &cert_b, "tls-b")] {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(cert.der.clone()))
            .expect("root");
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.https))
            .await
            .expect("connect");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(rustls::pki_types::ServerName::try_from(sni).expect("name"), tcp)
            .await
            .unwrap_or_else(|e| panic!("TLS to {sni} through the gateway: {e}\n{}", gw.log()));
        assert_eq!(crate::l4::talk(tls).await, (name.to_string(), "ping".to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_routes_match_service_and_method() {
    use tonic_health::pb::HealthCheckRequest;

    let port = crate::grpc::health_server().await;
    let config = gateway(HTTP_LISTENER)
        + &format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: health, namespace: {NS}}}\nspec:\n  ports: [{{name: grpc, port: 9000, targetPort: {port}, appProtocol: grpc}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: health-1, namespace: {NS}, labels: {{kubernetes.io/service-name: health}}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: grpc, port: {port}}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: health, namespace: {NS}}}\nspec:\n  parentRefs: [{{name: same-namespace}}]\n  hostnames: [grpc.example.com]\n  rules:\n  - matches: [{{method: {{service: grpc.health.v1.Health, method: Check}}}}]\n    backendRefs: [{{name: health, port: 9000}}]\n"
        );
    let (gw, _dir) = start_with(&[("gw.yaml", &config)]);
    let mut client = crate::grpc::health_client(gw.http).await;
    // The matched method reaches the server over HTTP/2, its status in trailers.
    let served = client
        .check(HealthCheckRequest {
            service: "strait.Test".into(),
        })
        .await
        .expect("Check through the GRPCRoute");
    assert_eq!(served.into_inner().status, 1);
    // Another method of the service matches no rule: the gateway refuses it.
    let watch = client
        .watch(HealthCheckRequest {
            service: "strait.Test".into(),
        })
        .await;
    assert!(watch.is_err(), "Watch matches no rule");
}
