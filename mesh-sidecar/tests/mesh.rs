//! The mesh for real: pods as network namespaces, each with `strait-sidecar init`
//! and `strait-sidecar run` as an injected pod has them, the configuration in a
//! folder (Services, EndpointSlices, Pods and Istio's resources, as the controller
//! would send them), certificates from a test CA.

mod mesh_net;

use std::path::Path;
use std::time::Duration;

use mesh_net::{public_dir, write_public, Ca, Net, Pod, Sidecar};

/// The service address of `b` (no kube-proxy here: only the sidecar makes it work).
const B_VIP: &str = "10.96.0.10";

/// The resources of namespace `shop`: service `b` on port 8080 with the given pods
/// behind it (name, ip, version), and the pods `a` and `c` as clients.
fn registry(pods: &[(&str, &str, &str, bool)], b_endpoints: &[(&str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: b, namespace: shop}}\nspec:\n  clusterIP: {B_VIP}\n  selector: {{app: b}}\n  ports: [{{name: http, port: 8080, targetPort: 8080}}, {{name: tcp-raw, port: 9000, targetPort: 9000}}]\n---\n"
    );
    out.push_str(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: b-1, namespace: shop, labels: {kubernetes.io/service-name: b}}\nports: [{name: http, port: 8080}, {name: tcp-raw, port: 9000}]\nendpoints:\n",
    );
    for (pod, ip) in b_endpoints {
        out.push_str(&format!(
            "- addresses: [{ip}]\n  targetRef: {{kind: Pod, name: {pod}, namespace: shop}}\n"
        ));
    }
    out.push_str("---\n");
    for (name, ip, labels, meshed) in pods {
        let tls = if *meshed {
            ", security.istio.io/tlsMode: istio"
        } else {
            ""
        };
        out.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{{labels}{tls}}}}}\nspec: {{serviceAccountName: {name}, containers: [{{name: app, image: app}}]}}\nstatus: {{podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n---\n"
        ));
    }
    out
}

fn peer_authentication(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: shop}}\nspec:\n  mtls: {{mode: {mode}}}\n"
    )
}

/// Replaces the file `name` of the config folder and waits for the sidecars to
/// pick it up.
fn put(config: &Path, name: &str, text: &str) {
    write_public(&config.join(name), text.as_bytes());
    // The folder source applies a change after a short debounce.
    std::thread::sleep(Duration::from_millis(800));
}

struct Shop {
    net: Net,
    ca: Ca,
    a: Pod,
    b: Pod,
    /// `b`'s version v2, when asked for.
    b2: Option<Pod>,
    c: Pod,
    config: std::path::PathBuf,
}

/// Pods `a` and `b` with sidecars (b serves HTTP on 8080; with `v2`, a second pod
/// of b labeled version v2), and `c`, a plain client without one.
fn shop(v2: bool) -> Shop {
    shop_with(v2, None)
}

/// As `shop`, the sidecars reading the mesh config `mesh` (YAML) when given.
fn shop_with(v2: bool, mesh: Option<&str>) -> Shop {
    let mut net = Net::new();
    let ca = Ca::new();
    let mut a = net.pod("a");
    let mut b = net.pod("b");
    let mut b2 = v2.then(|| net.pod("b2"));
    let c = net.pod("c");
    let config = net.dir.path().join("config");
    public_dir(&config);
    let mut pods = vec![
        ("a", a.ip.clone(), "app: a", true),
        ("b", b.ip.clone(), "app: b, version: v1", true),
        ("c", c.ip.clone(), "app: c", false),
    ];
    let mut endpoints = vec![("b", b.ip.clone())];
    if let Some(b2) = &b2 {
        pods.push(("b2", b2.ip.clone(), "app: b, version: v2", true));
        endpoints.push(("b2", b2.ip.clone()));
    }
    let pods: Vec<(&str, &str, &str, bool)> = pods.iter().map(|(n, ip, l, m)| (*n, ip.as_str(), *l, *m)).collect();
    let endpoints: Vec<(&str, &str)> = endpoints.iter().map(|(n, ip)| (*n, ip.as_str())).collect();
    write_public(&config.join("registry.yaml"), registry(&pods, &endpoints).as_bytes());
    b.app("b-v1", 8080);
    // Port 9000 is declared TCP (`tcp-` name): the same application, reached as bytes.
    b.app("b-v1", 9000);
    if let Some(b2) = b2.as_mut() {
        b2.app("b-v2", 8080);
    }
    let mesh_file = net.dir.path().join("mesh.yaml");
    if let Some(mesh) = mesh {
        write_public(&mesh_file, mesh.as_bytes());
    }
    let mut with_sidecars: Vec<(&mut Pod, &str, &str)> =
        vec![(&mut a, "a", "app=a"), (&mut b, "b", "app=b,version=v1")];
    if let Some(b2) = b2.as_mut() {
        with_sidecars.push((b2, "b2", "app=b,version=v2"));
    }
    for (pod, sa, labels) in with_sidecars {
        let identity = identity_dir(&net, sa);
        ca.issue(&identity, &spiffe(sa), Duration::from_secs(3600));
        pod.sidecar(
            &[],
            &Sidecar {
                config_dir: &config,
                identity_dir: &identity,
                namespace: "shop",
                service_account: sa,
                labels,
                mesh_config: mesh.map(|_| mesh_file.as_path()),
            },
        );
    }
    Shop {
        net,
        ca,
        a,
        b,
        b2,
        c,
        config,
    }
}

fn identity_dir(net: &Net, sa: &str) -> std::path::PathBuf {
    let dir = net.dir.path().join(format!("identity-{sa}"));
    public_dir(&dir);
    dir
}

fn spiffe(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/shop/sa/{sa}")
}

/// `curl` arguments from pod a to `path` of service b by its name.
fn to_b(path: &str) -> Vec<String> {
    vec![
        "--resolve".into(),
        format!("b:8080:{B_VIP}"),
        format!("http://b:8080{path}"),
    ]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn a_calls_b_across_both_sidecars_over_mutual_tls() {
    let shop = shop(false);
    let ((code, body), pcap) = shop.net.capture(8080, || shop.a.curl(&args(&to_b("/hello"))));
    assert_eq!(code, "200", "a -> b: {body}\n{}\n{}", shop.a.log(), shop.b.log());
    assert!(body.starts_with("app=b-v1\n"), "b's application answered: {body}");
    assert!(body.contains("GET /hello"), "{body}");
    assert!(
        body.to_ascii_lowercase().contains("x-forwarded-client-cert: ")
            && body.contains("By=spiffe://cluster.local/ns/shop/sa/b;Hash=")
            && body.contains("URI=spiffe://cluster.local/ns/shop/sa/a"),
        "b's sidecar saw a's SPIFFE identity and told the application: {body}"
    );
    // Written once, by a's sidecar: b's inbound leaves it as it came (Istio's too).
    let forwarded_for: Vec<&str> = body
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.eq_ignore_ascii_case("x-forwarded-for"))
        .map(|(_, v)| v.trim())
        .collect();
    assert_eq!(forwarded_for, [shop.a.ip.as_str()], "{body}");
    // Between the pods: TLS records (handshake 0x16 0x03), never the request.
    // More than the file's header: the exchange itself was recorded.
    assert!(
        pcap.len() > 1000,
        "the capture recorded the pods' traffic ({} bytes)",
        pcap.len()
    );
    assert!(
        !contains(&pcap, b"GET /hello"),
        "the request crossed the network in plaintext"
    );
    assert!(contains(&pcap, &[0x16, 0x03]), "no TLS handshake between the pods");
    let inbound = shop.b.metrics();
    assert!(
        inbound.lines().any(|l| l.starts_with("istio_requests_total")
            && l.contains("reporter=\"destination\"")
            && l.contains("source_principal=\"spiffe://cluster.local/ns/shop/sa/a\"")
            && l.contains("destination_principal=\"spiffe://cluster.local/ns/shop/sa/b\"")
            && l.contains("connection_security_policy=\"mutual_tls\"")
            && l.contains("response_code=\"200\"")),
        "b's sidecar counted the request as its destination, from a:\n{inbound}"
    );
    let outbound = shop.a.metrics();
    assert!(
        outbound.lines().any(|l| l.starts_with("istio_requests_total")
            && l.contains("reporter=\"source\"")
            && l.contains("destination_service=\"b.shop.svc.cluster.local\"")
            && l.contains("response_code=\"200\"")),
        "a's sidecar counted the request as its source:\n{outbound}"
    );
}

#[test]
fn strict_refuses_plaintext_and_permissive_serves_both() {
    let shop = shop(false);
    let direct = format!("http://{}:8080/", shop.b.ip);
    let (code, _) = shop.c.curl(&[&direct]);
    assert_eq!(code, "200", "PERMISSIVE (the default) serves a plaintext client");
    put(&shop.config, "peer.yaml", &peer_authentication("STRICT"));
    let (code, body) = shop.c.curl(&[&direct]);
    assert_eq!(code, "000", "STRICT refuses a plaintext client: {body}");
    let (code, body) = shop.a.curl(&args(&to_b("/")));
    assert_eq!(
        code,
        "200",
        "STRICT serves a client with the mesh's mTLS: {body}\n{}",
        shop.b.log()
    );
    put(&shop.config, "peer.yaml", &peer_authentication("PERMISSIVE"));
    let (code, _) = shop.c.curl(&[&direct]);
    assert_eq!(code, "200", "back to PERMISSIVE");
}

#[test]
fn an_authorization_policy_on_principals_refuses_others_with_403() {
    let shop = shop(false);
    put(
        &shop.config,
        "authz.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: only-a, namespace: shop}\nspec:\n  selector: {matchLabels: {app: b}}\n  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/a]}}]}]\n",
    );
    let (code, body) = shop.a.curl(&args(&to_b("/")));
    assert_eq!(code, "200", "a's principal is allowed: {body}");
    let (code, body) = shop.c.curl(&[&format!("http://{}:8080/", shop.b.ip)]);
    assert_eq!(code, "403", "c has no principal a: {body}");
    assert!(body.contains("RBAC: access denied"), "{body}");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The TLS handshakes begun in a packet capture: the distinct client randoms of its
/// ClientHellos (a packet may be captured on more than one interface).
fn client_hellos(pcap: &[u8]) -> usize {
    // Record: handshake (0x16), version 3.x, length; message: ClientHello (1), length
    // (3 bytes), legacy version 3.3; then the 32-byte random.
    let randoms: std::collections::BTreeSet<&[u8]> = (0..pcap.len().saturating_sub(43))
        .filter(|&i| {
            let w = &pcap[i..i + 11];
            w[0] == 0x16 && w[1] == 0x03 && w[5] == 0x01 && w[9] == 0x03 && w[10] == 0x03
        })
        .map(|i| &pcap[i + 11..i + 43])
        .collect();
    randoms.len()
}

#[test]
fn a_mesh_connection_carries_more_than_a_thousand_requests() {
    // Envoy's sidecars set no limit; the gateway's (1,000, nginx's) would make the
    // peer's sidecar open a new mutual TLS connection every thousand requests.
    let shop = shop(false);
    let mut many: Vec<String> = vec![
        "-s".into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code} %{num_connects}\n".into(),
        "--resolve".into(),
        format!("b:8080:{B_VIP}"),
    ];
    many.extend((0..1001).map(|i| format!("http://b:8080/n/{i}")));
    let (out, pcap) = shop.net.capture(8080, || shop.a.exec("curl", &args(&many)));
    let lines = String::from_utf8_lossy(&out.stdout).to_string();
    let answered = lines.lines().filter(|l| l.starts_with("200 ")).count();
    assert_eq!(answered, 1001, "every request answered\n{}", shop.a.log());
    let connects: u32 = lines
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u32>().ok())
        .sum();
    assert_eq!(connects, 1, "the application's one connection to its sidecar was kept");
    assert_eq!(
        client_hellos(&pcap),
        1,
        "one mutual TLS connection from a's sidecar to b's carried every request"
    );
}

const ROUTES: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b, namespace: shop}
spec:
  host: b
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b, namespace: shop}
spec:
  hosts: [b]
  http:
  - match: [{headers: {x-canary: {exact: "1"}}}]
    route: [{destination: {host: b, subset: v2}}]
  - match: [{uri: {prefix: /slow}}]
    timeout: 0.5s
    route: [{destination: {host: b, subset: v1}}]
  - match: [{uri: {prefix: /flaky}}]
    retries: {attempts: 3, retryOn: 5xx}
    route: [{destination: {host: b, subset: v1}}]
  - route:
    - {destination: {host: b, subset: v1}, weight: 80}
    - {destination: {host: b, subset: v2}, weight: 20}
"#;

/// What the routes of both the VirtualService and the GAMMA test say: 100 requests
/// from `a` to service `b` split 80/20 between v1 and v2 (every one answered), and
/// those with `x-canary: 1` all reach v2.
fn assert_split_and_canary(shop: &Shop) {
    let mut many: Vec<String> = vec!["--resolve".into(), format!("b:8080:{B_VIP}")];
    many.extend((0..100).map(|i| format!("http://b:8080/split/{i}")));
    let (_, bodies) = shop.a.curl(&args(&many));
    let v1 = bodies.matches("app=b-v1\n").count();
    let v2 = bodies.matches("app=b-v2\n").count();
    assert_eq!(v1 + v2, 100, "every request answered: {v1} + {v2}\n{}", shop.a.log());
    assert!(
        (60..=95).contains(&v1) && v2 >= 5,
        "an 80/20 split: v1 {v1}, v2 {v2}\n{}",
        shop.a.log()
    );
    let mut canary = vec!["-H".to_string(), "x-canary: 1".to_string()];
    canary.extend(many.iter().take(12).cloned());
    let (_, bodies) = shop.a.curl(&args(&canary));
    assert_eq!(
        bodies.matches("app=b-v2\n").count(),
        10,
        "the header route goes to v2 only"
    );
}

#[test]
fn a_virtual_service_splits_retries_and_times_out_between_sidecars() {
    let shop = shop(true);
    put(&shop.config, "routes.yaml", ROUTES);
    assert_split_and_canary(&shop);
    let started = std::time::Instant::now();
    let (code, body) = shop.a.curl(&args(&to_b("/slow")));
    assert_eq!(code, "504", "the route's 0.5 s timeout: {body}");
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
    for _ in 0..4 {
        let (code, body) = shop.a.curl(&args(&to_b("/flaky")));
        assert_eq!(code, "200", "a 503 of v1 is retried: {body}");
    }
    assert!(shop.b2.is_some());
}

/// Services `b-v1` and `b-v2`, one pod each, and an HTTPRoute whose parent is the
/// Service `b` (GAMMA): a header sends to v2, the rest splits 80/20.
fn gamma(shop: &Shop) -> String {
    let b2 = shop.b2.as_ref().expect("b2");
    let mut out = String::new();
    for (version, ip, vip) in [("v1", &shop.b.ip, "10.96.0.11"), ("v2", &b2.ip, "10.96.0.12")] {
        out.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: b-{version}, namespace: shop}}\nspec:\n  clusterIP: {vip}\n  ports: [{{name: http, port: 8080, targetPort: 8080}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: b-{version}-1, namespace: shop, labels: {{kubernetes.io/service-name: b-{version}}}}}\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [{ip}]}}]\n---\n"
        ));
    }
    out.push_str("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: b, namespace: shop}\nspec:\n  parentRefs: [{group: '', kind: Service, name: b, port: 8080}]\n  rules:\n  - matches: [{headers: [{name: x-canary, value: '1'}]}]\n    backendRefs: [{name: b-v2, port: 8080}]\n  - backendRefs: [{name: b-v1, port: 8080, weight: 80}, {name: b-v2, port: 8080, weight: 20}]\n");
    out
}

#[test]
fn a_gamma_http_route_on_the_service_splits_between_sidecars() {
    let shop = shop(true);
    put(&shop.config, "gamma.yaml", &gamma(&shop));
    assert_split_and_canary(&shop);
}

#[test]
fn a_rotated_certificate_drops_no_request() {
    let shop = shop(false);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Rotation is watched every few seconds: traffic runs across it.
    let traffic = {
        let (stop, failures, sent) = (stop.clone(), failures.clone(), sent.clone());
        let ns = shop.a.ns.name.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut cmd = vec![
                    "netns".to_string(),
                    "exec".into(),
                    ns.clone(),
                    "curl".into(),
                    "-s".into(),
                ];
                cmd.extend(["-w".into(), "%{http_code}\n".into()]);
                cmd.extend(["--resolve".into(), format!("b:8080:{B_VIP}")]);
                for i in 0..10 {
                    cmd.extend(["-o".into(), "/dev/null".into(), format!("http://b:8080/r/{i}")]);
                }
                let out = std::process::Command::new("ip").args(&cmd).output().expect("curl");
                for code in String::from_utf8_lossy(&out.stdout).lines() {
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if code != "200" {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    for sa in ["a", "b"] {
        shop.ca
            .issue(&identity_dir(&shop.net, sa), &spiffe(sa), Duration::from_secs(7200));
    }
    // Both sidecars look every 5 s; wait until both took the new certificate.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while [&shop.a, &shop.b]
        .iter()
        .any(|p| p.log().matches("workload certificate for").count() < 2)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not rotated:\n{}\n{}",
            shop.a.log(),
            shop.b.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.join().expect("traffic");
    let (sent, failures) = (
        sent.load(std::sync::atomic::Ordering::Relaxed),
        failures.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(sent > 50, "traffic ran across the rotation: {sent}");
    assert_eq!(
        failures,
        0,
        "{failures} of {sent} requests failed across the rotation\n{}\n{}",
        shop.a.log(),
        shop.b.log()
    );
    let (code, _) = shop.a.curl(&args(&to_b("/after")));
    assert_eq!(code, "200", "new connections use the new certificates");
}

#[test]
fn the_sidecar_drains_and_exits_on_sigterm() {
    let mut shop = shop(false);
    let started = std::time::Instant::now();
    let status = shop.a.terminate();
    assert!(status.success(), "exit status {status}: {}", shop.a.log());
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "exited within the drain time (5 s): {:?}",
        started.elapsed()
    );
}

#[test]
fn the_edge_gateway_reaches_a_strict_namespace_with_its_own_identity() {
    let mut shop = shop(false);
    put(&shop.config, "peer.yaml", &peer_authentication("STRICT"));
    let edge = shop.net.dir.path().join("edge");
    public_dir(&edge);
    write_public(
        &edge.join("registry.yaml"),
        &std::fs::read(shop.config.join("registry.yaml")).expect("registry"),
    );
    write_public(
        &edge.join("edge.yaml"),
        b"apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: edge, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [app.example.com]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: app, namespace: shop}\nspec:\n  hosts: [app.example.com]\n  gateways: [istio-system/edge]\n  http:\n  - route: [{destination: {host: b.shop.svc.cluster.local, port: {number: 8080}}}]\n",
    );
    let identity = shop.net.dir.path().join("identity-gateway");
    public_dir(&identity);
    shop.ca.issue(
        &identity,
        "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway",
        Duration::from_secs(3600),
    );
    let mut gw = shop.net.pod("gateway");
    gw.edge_gateway(&edge, &identity);
    let (code, body) = shop.c.curl(&[
        "-H",
        "Host: app.example.com",
        &format!("http://{}/from-the-edge", gw.ip),
    ]);
    assert_eq!(code, "200", "edge -> STRICT b: {body}\n{}\n{}", gw.log(), shop.b.log());
    assert!(
        body.contains("URI=spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"),
        "b saw the gateway's identity: {body}"
    );
}

#[test]
fn an_unknown_destination_is_passed_through_under_allow_any() {
    let mut shop = shop(false);
    shop.c.app("c", 9090);
    let (code, body) = shop.a.curl(&[&format!("http://{}:9090/outside", shop.c.ip)]);
    assert_eq!(
        code,
        "200",
        "a -> c (no service, no sidecar) passes through: {body}\n{}",
        shop.a.log()
    );
    assert!(body.starts_with("app=c\n"), "{body}");
}

#[test]
fn a_tcp_service_is_relayed_over_mutual_tls() {
    let shop = shop(false);
    let ((code, body), pcap) = shop.net.capture(9000, || {
        shop.a
            .curl(&["--resolve", &format!("b:9000:{B_VIP}"), "http://b:9000/raw-bytes"])
    });
    assert_eq!(
        code,
        "200",
        "a -> b:9000 as TCP: {body}\n{}\n{}",
        shop.a.log(),
        shop.b.log()
    );
    assert!(body.starts_with("app=b-v1\n"), "{body}");
    assert!(
        !body.to_ascii_lowercase().contains("x-forwarded-client-cert"),
        "relayed as bytes, not as HTTP: {body}"
    );
    assert!(
        pcap.len() > 1000 && !contains(&pcap, b"GET /raw"),
        "plaintext on the wire"
    );
    assert!(
        shop.b
            .metrics()
            .lines()
            .any(|l| l.starts_with("istio_tcp_connections_opened_total")
                && l.contains("source_principal=\"spiffe://cluster.local/ns/shop/sa/a\"")),
        "b counted a TCP connection from a:\n{}",
        shop.b.metrics()
    );
}

#[test]
fn registry_only_refuses_unknown_destinations() {
    let mut shop = shop_with(false, Some("outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"));
    shop.c.app("c", 9090);
    shop.c.app("c", 8080);
    let (code, body) = shop.a.curl(&[
        "--resolve",
        &format!("unknown.example:8080:{}", shop.c.ip),
        "http://unknown.example:8080/",
    ]);
    assert_eq!(code, "502", "an unknown host on a mesh HTTP port: {body}");
    let (code, _) = shop.a.curl(&[&format!("http://{}:9090/", shop.c.ip)]);
    assert_eq!(code, "000", "a port no service declares: the connection is refused");
    let (code, body) = shop.a.curl(&args(&to_b("/")));
    assert_eq!(code, "200", "the registry's services still work: {body}");
}
