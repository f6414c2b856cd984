//! What only an engine at hand makes easy: a new configuration through
//! `Engine::apply` and new endpoints through `Engine::apply_endpoints`, as a
//! configuration source would hand them over, while requests flow. The request
//! after each goes where the new one says, and no request fails.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strait_gateway::testing::Harness;

use crate::common::*;

/// app.example.com routed to `route` (`one.internal` or `two.internal`), served by
/// the loopback ports `one` and `two`.
fn config(route: &str, one: u16, two: u16) -> String {
    http_gateway(&["app.example.com"])
        + &virtual_service("app", &["app.example.com"], &["gw"], &route_to(route))
        + &service_entry("one.internal", "HTTP", &[one])
        + &service_entry("two.internal", "HTTP", &[two])
}

/// The echo backend that answered a request now.
async fn answered_by(c: &reqwest::Client, port: u16) -> String {
    let (status, body) = get_json(c, &format!("http://app.example.com:{port}/"), &[]).await;
    assert_eq!(status, 200, "{body}");
    body["name"].as_str().unwrap_or("?").to_string()
}

/// Clients sending requests until stopped, counting the answers.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<BTreeSet<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(c: &reqwest::Client, port: u16, clients: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (c, stop, ok, failed, seen) = (c.clone(), stop.clone(), ok.clone(), failed.clone(), seen.clone());
                let url = format!("http://app.example.com:{port}/");
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let (status, body) = match c.get(&url).send().await {
                            Ok(r) => (r.status().as_u16(), r.json::<serde_json::Value>().await.ok()),
                            Err(e) => {
                                failed.lock().expect("lock").push(e.to_string());
                                continue;
                            }
                        };
                        match body.as_ref().and_then(|b| b["name"].as_str()) {
                            Some(name) if status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                seen.lock().expect("lock").insert(name.to_string());
                            }
                            _ => failed.lock().expect("lock").push(format!("{status}: {body:?}")),
                        }
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            ok,
            failed,
            seen,
            tasks,
        }
    }

    /// Stops the clients: (requests answered with 200, failures, backends seen).
    async fn finish(self) -> (usize, Vec<String>, BTreeSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("client task");
        }
        let failed = self.failed.lock().expect("lock").clone();
        let seen = self.seen.lock().expect("lock").clone();
        (self.ok.load(Ordering::Relaxed), failed, seen)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_and_endpoints_applied_while_requests_flow() {
    let (a, b, c) = (echo("a", "v1").await, echo("b", "v1").await, echo("c", "v1").await);
    let (pa, pb, pc) = (a.addr.port(), b.addr.port(), c.addr.port());
    let gw = Harness::start(&[("app.yaml", &config("one.internal", pa, pb))]);
    let client = client(&[("app.example.com", gw.http())], &[]);
    let traffic = Traffic::start(&client, gw.http(), 4);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(answered_by(&client, gw.http()).await, "a");

    // A new configuration: the route now goes to two.internal.
    let version = gw
        .engine()
        .apply(gw.build(&[("app.yaml", &config("two.internal", pa, pb))]))
        .expect("accepted");
    assert_eq!(version, 2);
    assert_eq!(
        answered_by(&client, gw.http()).await,
        "b",
        "the next request follows the new route"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    // New endpoints for the same clusters: two.internal is now served by c; the
    // routes stay those of version 2.
    let endpoints = gw
        .build(&[("app.yaml", &config("two.internal", pa, pc))])
        .expect("builds")
        .endpoints;
    let routes = gw.engine().current().snapshot.clone();
    gw.engine().apply_endpoints(endpoints).expect("endpoints fit");
    assert_eq!(
        answered_by(&client, gw.http()).await,
        "c",
        "the next request goes to the new endpoint"
    );
    assert!(
        Arc::ptr_eq(&routes, &gw.engine().current().snapshot),
        "routes not rebuilt"
    );
    assert_eq!(config_dump(gw.admin)["version"], 2);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (ok, failed, seen) = traffic.finish().await;
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(ok > 0);
    assert_eq!(seen, BTreeSet::from(["a".to_string(), "b".into(), "c".into()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_configuration_leaves_the_running_one_serving() {
    let (a, b) = (echo("a", "v1").await, echo("b", "v1").await);
    let (pa, pb) = (a.addr.port(), b.addr.port());
    let gw = Harness::start(&[("app.yaml", &config("one.internal", pa, pb))]);
    let client = client(&[("app.example.com", gw.http())], &[]);
    let traffic = Traffic::start(&client, gw.http(), 2);

    let broken = config("two.internal", pa, pb).replace("route: [{destination: {host: two.internal}}]", "route: oops");
    let refused = gw.engine().apply(gw.build(&[("app.yaml", &broken)]));
    let diagnostics = refused.expect_err("a route that is not a list is refused");
    assert!(
        diagnostics.iter().any(|d| d.to_string().contains("app.yaml")),
        "{diagnostics:?}"
    );
    // An endpoint table made for another configuration is refused as well.
    let mut wrong = gw
        .build(&[("app.yaml", &config("one.internal", pb, pa))])
        .expect("builds")
        .endpoints;
    wrong.clusters.push(Default::default());
    assert!(gw.engine().apply_endpoints(wrong).is_err());
    assert_eq!(answered_by(&client, gw.http()).await, "a", "version 1 keeps serving");
    let dump = config_dump(gw.admin);
    assert_eq!(
        (dump["version"].as_u64(), dump["rejected_since_start"].as_u64()),
        (Some(1), Some(1))
    );

    let (ok, failed, seen) = traffic.finish().await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 0);
    assert_eq!(seen, BTreeSet::from(["a".to_string()]));
}
