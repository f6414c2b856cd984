//! The admin port: `/config_dump` per part (certificates without keys), `/stats`
//! after known traffic, `/logging` changing what the running gateway logs, and
//! `straitctl`'s proxy-config and proxy-status (its library) against real gateways.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use strait_controller::admin_client::Target;
use strait_controller::proxy_config::{self, Section};
use strait_controller::proxy_status::{self, SyncStatus};

use crate::support::*;

const CLUSTER: &str = "outbound|80||backend.default.svc.cluster.local";

/// HTTP on 80 and HTTPS on 443 for app.example.com, two routes to `backend`.
fn config(cert: &TestCert, backend_port: u16) -> Vec<(&'static str, String)> {
    let gateway = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [app.example.com]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [app.example.com]
    tls: {mode: SIMPLE, credentialName: app-tls}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: default}
spec:
  hosts: [app.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /api}, headers: {x-user: {exact: bob}}}]
    route: [{destination: {host: backend}}]
  - route: [{destination: {host: backend}}]
"#;
    vec![
        ("gw.yaml", gateway.to_string()),
        ("backend.yaml", backend_entry(&[("v1", backend_port)])),
        ("secret.yaml", cert.secret_yaml("app-tls", "default")),
    ]
}

fn start(files: &[(&str, String)]) -> (Gateway, tempfile::TempDir) {
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    start_with(&refs)
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
fn request(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut buf = String::new();
    s.read_to_string(&mut buf).expect("read");
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {buf:?}"));
    (
        status,
        buf.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

fn section(admin: u16, resource: &str) -> (String, Value) {
    let (status, body) = request(admin, "GET", &format!("/config_dump?resource={resource}"));
    assert_eq!(status, 200, "{resource}: {body}");
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{resource} is not JSON ({e}): {body}"));
    (body, json)
}

fn stats(admin: u16) -> std::collections::HashMap<String, u64> {
    let (status, body) = request(admin, "GET", "/stats");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .map(|l| {
            let (name, value) = l
                .rsplit_once(": ")
                .unwrap_or_else(|| panic!("not `name: value`: {l:?}"));
            (
                name.to_string(),
                value.parse().unwrap_or_else(|_| panic!("not a number: {l:?}")),
            )
        })
        .collect()
}

fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_dump_parts_and_secrets_without_keys() {
    let backend = echo("backend", "v1").await;
    let cert = TestCert::new(&["app.example.com"]);
    let (gw, _dir) = start(&config(&cert, backend.addr.port()));

    let (listeners_text, listeners) = section(gw.admin, "listeners");
    let ls = listeners["listeners"].as_array().expect("listeners");
    let ports: Vec<u64> = ls.iter().filter_map(|l| l["port"].as_u64()).collect();
    assert_eq!(ports, [80, 443], "{listeners_text}");
    let https = &ls[1];
    assert_eq!(https["protocol"], "HTTPS");
    assert_eq!(https["tls_servers"][0]["hosts"][0], "app.example.com");
    assert_eq!(https["tls_servers"][0]["certificate_name"], "secret default/app-tls");
    assert_eq!(https["virtual_hosts"][0]["domain"], "app.example.com");
    assert_eq!(https["virtual_hosts"][0]["routes"], 2);
    assert_eq!(listeners["version"], 1);

    let (routes_text, routes) = section(gw.admin, "routes");
    let tables = routes["routes"].as_array().expect("route tables");
    let names: Vec<&str> = tables.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["http.80", "https.443"], "{routes_text}");
    let first = &tables[0]["virtual_hosts"][0]["routes"][0];
    assert_eq!(first["matches"][0]["uri"]["prefix"], "/api");
    assert_eq!(first["action"]["forward"]["destinations"][0]["cluster_name"], CLUSTER);

    let (clusters_text, clusters) = section(gw.admin, "clusters");
    let c = &clusters["clusters"][0];
    assert_eq!(c["name"], CLUSTER, "{clusters_text}");
    assert_eq!(
        c["endpoints"][0]["address"],
        format!("127.0.0.1:{}", backend.addr.port())
    );

    let (secrets_text, secrets) = section(gw.admin, "secrets");
    let s = &secrets["secrets"][0];
    assert_eq!(s["name"], "secret default/app-tls", "{secrets_text}");
    assert_eq!(s["dns_names"], serde_json::json!(["app.example.com"]));
    let fingerprint: String = ring::digest::digest(&ring::digest::SHA256, &cert.der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(s["sha256_fingerprint"], fingerprint.as_str());
    assert!(s["not_before"]
        .as_str()
        .is_some_and(|t| t < s["not_after"].as_str().unwrap_or("")));

    // No part, nor the whole dump, carries the key in any form.
    let key_body: String = cert.key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let (_, whole) = request(gw.admin, "GET", "/config_dump");
    for (name, text) in [
        ("listeners", &listeners_text),
        ("routes", &routes_text),
        ("clusters", &clusters_text),
        ("secrets", &secrets_text),
        ("whole", &whole),
    ] {
        assert!(!text.contains("PRIVATE KEY"), "{name} shows a private key");
        assert!(!text.contains(&key_body[..40]), "{name} shows key material");
        assert!(
            !text.replace("\\n", "").contains(&key_body[..40]),
            "{name} shows key material"
        );
    }

    let (status, body) = request(gw.admin, "GET", "/config_dump?resource=endpoints");
    assert_eq!(status, 400);
    assert!(body.contains("listeners, routes, clusters, secrets"), "{body}");

    // straitctl proxy-config's tables over the same admin port.
    let target = Target::parse(&format!("127.0.0.1:{}", gw.admin)).expect("target");
    let table = |s| {
        let dump = proxy_config::fetch(&target, s).expect("fetch");
        proxy_config::table(s, &dump).render()
    };
    let listeners = table(Section::Listeners);
    assert!(
        listeners.contains(
            "443    HTTPS      app.example.com   secret default/app-tls   Route: https.443 (app.example.com)"
        ),
        "{listeners}"
    );
    let routes = table(Section::Routes);
    assert!(
        routes.contains(&format!(
            "/api* header:x-user=bob   {CLUSTER}   VirtualService default/app http[0]"
        )),
        "{routes}"
    );
    let clusters = table(Section::Clusters);
    assert!(
        clusters.contains(&format!("127.0.0.1:{}   LEAST_REQUEST", backend.addr.port())),
        "{clusters}"
    );
    let secrets = table(Section::Secrets);
    assert!(secrets.contains(&fingerprint), "{secrets}");
    assert!(secrets.starts_with("NAME"), "{secrets}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_known_traffic_and_rejections() {
    let backend = echo("backend", "v1").await;
    let cert = TestCert::new(&["app.example.com"]);
    let (gw, dir) = start(&config(&cert, backend.addr.port()));
    let before = stats(gw.admin);
    assert_eq!(before["server.config_version"], 1);
    assert_eq!(before["server.config_update_rejected"], 0);
    assert_eq!(before["server.config_last_update_accepted"], 1);
    assert_eq!(before["server.certificates"], 1);
    assert_eq!(before[&format!("cluster.{CLUSTER}.membership_total")], 1);
    assert_eq!(before[&format!("cluster.{CLUSTER}.upstream_rq_total")], 0);

    let client = client(&[("app.example.com", gw.http)], &[]);
    for _ in 0..5 {
        let (status, _) = get_json(&client, &format!("http://app.example.com:{}/", gw.http), &[]).await;
        assert_eq!(status, 200);
    }
    let after = stats(gw.admin);
    let stat = |name: &str| after[&format!("cluster.{CLUSTER}.{name}")];
    assert_eq!(stat("upstream_rq_total"), 5);
    assert_eq!(stat("upstream_rq_failed"), 0);
    assert_eq!(stat("upstream_rq_active"), 0);
    assert_eq!(stat("upstream_rq_pending_overflow"), 0);
    assert_eq!(stat("membership_healthy"), 1);
    assert_eq!(stat("outlier_detection.ejections_total"), 0);
    assert_eq!(after["server.downstream_rq_active"], 0);

    // A broken file is rejected: the counters say so and the old config keeps serving.
    std::fs::write(dir.path().join("broken.yaml"), "kind: VirtualService\nspec: [").expect("write");
    // The watcher may see the write as more than one change: each attempt is counted.
    wait_for("the rejection to be counted", Duration::from_secs(10), || {
        stats(gw.admin)["server.config_update_rejected"] >= 1
    });
    let rejected = stats(gw.admin);
    assert_eq!(rejected["server.config_last_update_accepted"], 0);
    assert_eq!(rejected["server.config_version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_level_changes_what_the_running_gateway_logs() {
    let backend = echo("backend", "v1").await;
    let cert = TestCert::new(&["app.example.com"]);
    let (gw, dir) = start(&config(&cert, backend.addr.port()));
    let (status, body) = request(gw.admin, "GET", "/logging");
    assert_eq!((status, body.as_str()), (200, "level: info\nsource: RUST_LOG=info\n"));
    request(gw.admin, "GET", "/ready");
    assert!(!gw.log().contains("admin GET /ready"), "debug line logged at info");

    // Envoy's rule: GET never changes state.
    assert_eq!(request(gw.admin, "GET", "/logging?level=debug").0, 405);
    assert_eq!(request(gw.admin, "POST", "/logging?level=loud").0, 400);
    assert_eq!(request(gw.admin, "POST", "/logging").0, 400);

    let (status, body) = request(gw.admin, "POST", "/logging?level=debug");
    assert_eq!((status, body.as_str()), (200, "level: debug\nsource: /logging\n"));
    request(gw.admin, "GET", "/ready");
    wait_for("a debug line", Duration::from_secs(5), || {
        gw.log().contains("DEBUG strait_gateway::admin] admin GET /ready")
    });

    let (status, _) = request(gw.admin, "POST", "/logging?level=warn");
    assert_eq!(status, 200);
    let mark = gw.log().len();
    // A reload logs at info: at warn, nothing of it shows, though it happens.
    std::fs::write(
        dir.path().join("extra.yaml"),
        service_entry("extra.example.com", "HTTP", &[9]),
    )
    .expect("write");
    assert!(gw.wait_version_above(1, Duration::from_secs(10)), "no reload");
    request(gw.admin, "GET", "/ready");
    std::thread::sleep(Duration::from_millis(200));
    let log = gw.log();
    let since = &log[mark..];
    assert!(!since.contains(" INFO "), "info lines at warn:\n{since}");
    assert!(!since.contains(" DEBUG "), "debug lines at warn:\n{since}");
    assert_eq!(
        request(gw.admin, "GET", "/logging").1,
        "level: warn\nsource: /logging\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_compares_gateways() {
    let backend = echo("backend", "v1").await;
    let cert = TestCert::new(&["app.example.com"]);
    let files = config(&cert, backend.addr.port());
    let (a, _da) = start(&files);
    let (b, _db) = start(&files);
    // A ServiceEntry no route uses would not change what c serves; another match does.
    let other: Vec<(&str, String)> = files
        .iter()
        .map(|(n, t)| (*n, t.replace("prefix: /api", "prefix: /v2")))
        .collect();
    let (c, dir_c) = start(&other);
    let [nobody] = free_ports::<1>();

    let target = |port: u16| Target::parse(&format!("127.0.0.1:{port}")).expect("target");
    // Same files: same digest, SYNCED, whatever folder they were read from.
    let statuses = proxy_status::collect(&[target(a.admin), target(b.admin)]);
    assert!(statuses.iter().all(|s| s.sync == SyncStatus::Synced), "{statuses:?}");
    assert_eq!(statuses[0].config_digest, statuses[1].config_digest);
    assert_eq!(statuses[0].config_version, Some(1));
    assert_eq!(statuses[0].last_attempt_accepted, Some(true));
    assert_eq!(statuses[0].sources.len(), 3);

    // c reloads its (different) files, so it has the highest version: the reference.
    std::fs::write(dir_c.path().join("touch.yaml"), "").expect("write");
    assert!(c.wait_version_above(1, Duration::from_secs(10)), "no reload");
    let statuses = proxy_status::collect(&[target(a.admin), target(c.admin), target(nobody)]);
    let syncs: Vec<SyncStatus> = statuses.iter().map(|s| s.sync).collect();
    assert_eq!(
        syncs,
        [SyncStatus::Stale, SyncStatus::Synced, SyncStatus::Unreachable],
        "{statuses:?}"
    );
    let table = proxy_status::table(&statuses).render();
    assert!(table.starts_with("TARGET"), "{table}");
    assert!(table.contains("STALE") && table.contains("UNREACHABLE"), "{table}");
}
