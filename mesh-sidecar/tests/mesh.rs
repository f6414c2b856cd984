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
        "apiVersion: v1\nkind: Service\nmetadata: {{name: b, namespace: shop}}\nspec:\n  clusterIP: {B_VIP}\n  selector: {{app: b}}\n  ports: [{{name: http, port: 8080, targetPort: 8080}}]\n---\n"
    );
    out.push_str(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: b-1, namespace: shop, labels: {kubernetes.io/service-name: b}}\nports: [{name: http, port: 8080}]\nendpoints:\n",
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
    a: Pod,
    b: Pod,
    c: Pod,
    config: std::path::PathBuf,
}

/// Pods `a` and `b` with sidecars (b serves HTTP on 8080), and `c`, a plain client
/// without one.
fn shop() -> Shop {
    let mut net = Net::new();
    let ca = Ca::new();
    let mut a = net.pod("a");
    let mut b = net.pod("b");
    let c = net.pod("c");
    let config = net.dir.path().join("config");
    public_dir(&config);
    let pods = [
        ("a", a.ip.as_str(), "app: a", true),
        ("b", b.ip.as_str(), "app: b, version: v1", true),
        ("c", c.ip.as_str(), "app: c", false),
    ];
    write_public(
        &config.join("registry.yaml"),
        registry(&pods, &[("b", &b.ip)]).as_bytes(),
    );
    b.app("b", 8080);
    for (pod, sa, labels) in [(&mut a, "a", "app=a"), (&mut b, "b", "app=b,version=v1")] {
        let identity = net.dir.path().join(format!("identity-{sa}"));
        public_dir(&identity);
        ca.issue(
            &identity,
            &format!("spiffe://cluster.local/ns/shop/sa/{sa}"),
            Duration::from_secs(3600),
        );
        pod.sidecar(
            &[],
            &Sidecar {
                config_dir: &config,
                identity_dir: &identity,
                namespace: "shop",
                service_account: sa,
                labels,
            },
        );
    }
    Shop { net, a, b, c, config }
}

#[test]
fn a_calls_b_across_both_sidecars_over_mutual_tls() {
    let shop = shop();
    let ((code, body), pcap) = shop.net.capture(8080, || {
        shop.a
            .curl(&["--resolve", &format!("b:8080:{B_VIP}"), "http://b:8080/hello"])
    });
    assert_eq!(code, "200", "a -> b: {body}\n{}\n{}", shop.a.log(), shop.b.log());
    assert!(body.starts_with("app=b\n"), "b's application answered: {body}");
    assert!(body.contains("GET /hello"), "{body}");
    assert!(
        body.to_ascii_lowercase().contains("x-forwarded-client-cert: ")
            && body.contains("URI=spiffe://cluster.local/ns/shop/sa/a"),
        "b's sidecar saw a's SPIFFE identity and told the application: {body}"
    );
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
    assert!(
        shop.b
            .metrics()
            .lines()
            .any(|l| l.starts_with("istio_requests_total") && l.contains("response_code=\"200\"")),
        "b's sidecar counted the request:\n{}",
        shop.b.metrics()
    );
}

#[test]
fn strict_refuses_plaintext_and_permissive_serves_both() {
    let shop = shop();
    let direct = format!("http://{}:8080/", shop.b.ip);
    let (code, _) = shop.c.curl(&[&direct]);
    assert_eq!(code, "200", "PERMISSIVE (the default) serves a plaintext client");
    put(&shop.config, "peer.yaml", &peer_authentication("STRICT"));
    let (code, body) = shop.c.curl(&[&direct]);
    assert_eq!(code, "000", "STRICT refuses a plaintext client: {body}");
    let (code, body) = shop
        .a
        .curl(&["--resolve", &format!("b:8080:{B_VIP}"), "http://b:8080/"]);
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
    let shop = shop();
    put(
        &shop.config,
        "authz.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: only-a, namespace: shop}\nspec:\n  selector: {matchLabels: {app: b}}\n  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/a]}}]}]\n",
    );
    let (code, body) = shop
        .a
        .curl(&["--resolve", &format!("b:8080:{B_VIP}"), "http://b:8080/"]);
    assert_eq!(code, "200", "a's principal is allowed: {body}");
    let (code, body) = shop.c.curl(&[&format!("http://{}:8080/", shop.b.ip)]);
    assert_eq!(code, "403", "c has no principal a: {body}");
    assert!(body.contains("RBAC: access denied"), "{body}");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
