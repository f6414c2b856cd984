//! The harness itself: it starts on free ports from YAML or a build, serves until
//! stopped, and a stopped harness has let go of its ports (Pingora listeners set
//! SO_REUSEPORT: a server left running would take a later test's connections).

use std::net::TcpStream;

use strait_gateway::testing::harness::{build_for, scope};
use strait_gateway::testing::Harness;

use crate::common::*;

/// A Gateway on 80 (every host) and 443 (app.example.com) whose one route the
/// gateway answers itself with `body`; `cert` serves app.example.com.
fn answered(body: &str, cert: &TestCert) -> String {
    gateway(
        "gw",
        &[http_server(&["*"]), https_server(&["app.example.com"], "app-tls")],
    ) + &virtual_service(
        "app",
        &["*"],
        &["gw"],
        &format!("- directResponse: {{status: 200, body: {{string: {body}}}}}\n"),
    ) + "---\n"
        + &cert.secret_yaml("app-tls", "default")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_harness_refuses_connections_on_every_port() {
    let cert = TestCert::new(&["app.example.com"]);
    let gw = Harness::start(&[("app.yaml", &answered("hello", &cert))]);
    assert_ne!(gw.http(), gw.https());
    assert_eq!(raw_get(gw.http(), "/"), Some((200, "hello".to_string())));
    let resp = client(&[("app.example.com", gw.https())], &[&cert])
        .get(format!("https://app.example.com:{}/", gw.https()))
        .send()
        .await
        .expect("served over TLS");
    assert_eq!(resp.text().await.expect("body"), "hello");
    assert_eq!(raw_get(gw.metrics, "/stats/prometheus").map(|r| r.0), Some(200));

    let ports = gw.listening();
    assert_eq!(ports.len(), 5, "80, 443, admin, health, metrics: {ports:?}");
    gw.stop();
    for port in ports {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still accepts connections"
        );
    }
}

#[test]
fn a_dropped_harness_lets_go_of_its_ports_for_the_next_one() {
    let cert = TestCert::new(&["app.example.com"]);
    let first = Harness::start(&[("app.yaml", &answered("first", &cert))]);
    let ports = first.listening();
    drop(first);
    for port in &ports {
        assert!(
            TcpStream::connect(("127.0.0.1", *port)).is_err(),
            "port {port} still accepts connections"
        );
    }
    // Harnesses side by side get ports of their own.
    let a = Harness::start(&[("app.yaml", &answered("a", &cert))]);
    let b = Harness::start(&[("app.yaml", &answered("b", &cert))]);
    assert!(a.listening().iter().all(|p| !b.listening().contains(p)));
    assert_eq!(raw_get(a.http(), "/"), Some((200, "a".to_string())));
    assert_eq!(raw_get(b.http(), "/"), Some((200, "b".to_string())));
}

#[test]
fn a_harness_starts_from_a_build_and_reports_its_configuration() {
    let cert = TestCert::new(&["app.example.com"]);
    let built = build_for(&scope(), &[("app.yaml", &answered("built", &cert))]).expect("builds");
    let gw = Harness::start_built(built, scope());
    let dump = config_dump(gw.admin);
    assert_eq!(dump["version"], 1);
    assert_eq!(dump["sources"], serde_json::json!(["app.yaml"]));
    assert_eq!(gw.engine().current().snapshot.version, 1);
    assert_eq!(raw_get(gw.health, "/healthz/ready"), Some((200, "LIVE\n".to_string())));
}
