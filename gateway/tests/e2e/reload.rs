//! Reloads: routes change while traffic flows without a failed request, and a
//! broken edit is refused with file:line while the old routes keep serving.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;

const RULE: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: backend, namespace: default}\nspec:\n  host: backend\n  subsets:\n  - {name: a, labels: {version: a}}\n  - {name: b, labels: {version: b}}\n";

/// The VirtualService, written out in full: the tests find its lines in diagnostics.
fn route_to_subset(subset: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: app, namespace: default}}\nspec:\n  hosts: [app.example.com]\n  gateways: [gw]\n  http:\n  - match:\n    - uri:\n        prefix: /\n    route:\n    - destination:\n        host: backend\n        subset: {subset}\n")
}

struct Setup {
    _a: strait_gateway::echo::EchoServer,
    _b: strait_gateway::echo::EchoServer,
    dir: tempfile::TempDir,
    gw: Gateway,
}

async fn setup() -> Setup {
    let a = echo("a", "a").await;
    let b = echo("b", "b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("gateway.yaml"), http_gateway(&["*"])).expect("write");
    std::fs::write(dir.path().join("rule.yaml"), RULE).expect("write");
    std::fs::write(
        dir.path().join("backend.yaml"),
        backend_entry(&[("a", a.addr.port()), ("b", b.addr.port())]),
    )
    .expect("write");
    std::fs::write(dir.path().join("virtualservice.yaml"), route_to_subset("a")).expect("write");
    let gw = Gateway::start(dir.path(), &[]);
    Setup { _a: a, _b: b, dir, gw }
}

async fn backend_name(c: &reqwest::Client, port: u16) -> String {
    let (status, body) = get_json(c, &format!("http://app.example.com:{port}/"), &[]).await;
    assert_eq!(status, 200);
    body["name"].as_str().unwrap_or("?").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_load_fails_no_request() {
    let s = setup().await;
    let c = client(&[("app.example.com", s.gw.http)], &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (c, stop, ok, failed, seen) = (c.clone(), stop.clone(), ok.clone(), failed.clone(), seen.clone());
        let url = format!("http://app.example.com:{}/", s.gw.http);
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let name = r
                            .headers()
                            .get("x-echo-name")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("?")
                            .to_string();
                        seen.lock().expect("lock").insert(name);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("failed request: {:?}", other.map(|r| r.status()));
                        }
                    }
                }
            }
        }));
    }
    let mut version = s.gw.version();
    for i in 0..50 {
        let subset = if i % 2 == 0 { "b" } else { "a" };
        std::fs::write(s.dir.path().join("virtualservice.yaml"), route_to_subset(subset)).expect("rewrite");
        // Each rewrite is applied before the next, so all 50 reloads happen under traffic.
        assert!(
            s.gw.wait_version_above(version, Duration::from_secs(10)),
            "rewrite {i} never applied:\n{}",
            s.gw.log()
        );
        version = s.gw.version();
    }
    // The last rewrite (i = 49) routes to a.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.await.expect("client task");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(
        failed,
        0,
        "{failed} failed requests of {}; gateway log:\n{}",
        ok + failed,
        s.gw.log()
    );
    assert!(ok > 200, "only {ok} requests went through");
    assert_eq!(
        *seen.lock().expect("lock"),
        ["a".to_string(), "b".to_string()].into_iter().collect()
    );
    assert_eq!(backend_name(&c, s.gw.http).await, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_edits_are_refused_and_old_routes_keep_serving() {
    let s = setup().await;
    let c = client(&[("app.example.com", s.gw.http)], &[]);
    assert_eq!(backend_name(&c, s.gw.http).await, "a");
    let vs = s.dir.path().join("virtualservice.yaml");

    // A bad regex on line 10 of the file.
    std::fs::write(&vs, route_to_subset("b").replace("prefix: /", "regex: \"/(unclosed\"")).expect("write");
    wait_for_log(&s.gw, "invalid-regex").await;
    let log = s.gw.log();
    assert!(
        log.contains(
            "virtualservice.yaml:10:9: error[invalid-regex] VirtualService default/app spec.http[0].match[0].uri.regex"
        ),
        "{log}"
    );
    assert!(log.contains("config rejected, still serving version 1"), "{log}");
    assert_eq!(backend_name(&c, s.gw.http).await, "a", "old routes keep serving");

    // A field of the wrong type.
    std::fs::write(
        &vs,
        route_to_subset("b").replace("        subset: b\n", "        subset: b\n      weight: heavy\n"),
    )
    .expect("write");
    wait_for_log(&s.gw, "error[schema]").await;
    let log = s.gw.log();
    assert!(log.contains("virtualservice.yaml:15:7: error[schema] VirtualService default/app spec.http[0].route[0].weight: invalid type: string \"heavy\""), "{log}");
    assert_eq!(backend_name(&c, s.gw.http).await, "a");
    assert_eq!(s.gw.config_dump()["rejected_since_start"], 2);

    // Fixed: the new route takes effect.
    std::fs::write(&vs, route_to_subset("b")).expect("write");
    assert!(s.gw.wait_version_above(1, Duration::from_secs(5)));
    assert_eq!(backend_name(&c, s.gw.http).await, "b");
}

async fn wait_for_log(gw: &Gateway, needle: &str) {
    for _ in 0..100 {
        if gw.log().contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("log never showed {needle:?}:\n{}", gw.log());
}
