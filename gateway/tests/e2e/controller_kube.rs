//! A gateway following a controller that reads a real Kubernetes API server
//! (etcd + kube-apiserver on loopback, Istio's CRDs installed): resources are
//! applied, changed and deleted with `kubectl`, as a user would.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_controller::kube_source::KubeSource;
use strait_controller::testing::ApiServer;

use crate::controller::{backend, route_to_subset, ControlPlane, RULE};
use crate::support::*;

fn apply(server: &ApiServer, yaml: &str) {
    server.kubectl(&["apply", "-f", "-"], yaml).expect("applied");
}

/// Polls until the gateway on `port` answers app.example.com from `name` (or with
/// `status NNN`); returns how long it took.
async fn wait_answer(c: &reqwest::Client, gateway: &Gateway, name: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let seen = backend(c, gateway.http).await;
        if seen == name {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "the gateway answers {seen:?}, not {name:?}, after {within:?}\ngateway log:\n{}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_follows_what_is_applied_to_the_cluster() {
    let mut server = ApiServer::start().await.expect("the API server starts");
    let a = echo("a", "a").await;
    let b = echo("b", "b").await;
    apply(
        &server,
        &[
            http_gateway(&["app.example.com"]),
            RULE.to_string(),
            backend_entry(&[("a", a.addr.port()), ("b", b.addr.port())]),
            route_to_subset("a"),
        ]
        .join("\n---\n"),
    );
    let kube_client = server.client();
    let controller = ControlPlane::start_with(0, move |store, controller| {
        let kube = KubeSource::new(kube_client, store);
        controller.add_source("kubernetes", kube.run_until(controller.stop_signal()));
    });
    let gateway = Gateway::follow(&controller.address(), "gw-1", &[]);
    let c = client(&[("app.example.com", 0)], &[]);
    wait_answer(&c, &gateway, "a", Duration::from_secs(10)).await;

    // A change applied through the API server is routed within moments.
    apply(&server, &route_to_subset("b"));
    let took = wait_answer(&c, &gateway, "b", Duration::from_secs(5)).await;
    eprintln!("kubectl apply -> the gateway routes the new way: {took:?}");

    // The API server restarts (every watch breaks and relists) while requests flow:
    // none fails, and a change made after it is still seen.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sender = {
        let (c, stop, ok, failed) = (c.clone(), stop.clone(), ok.clone(), failed.clone());
        let port = gateway.http;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match backend(&c, port).await.as_str() {
                    "b" => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("during the restart: {other}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };
    server.restart_apiserver().await.expect("the API server restarts");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    sender.await.expect("sender");
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 10, "only {ok} requests during the restart");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the restart",
        ok + failed
    );
    apply(&server, &route_to_subset("a"));
    wait_answer(&c, &gateway, "a", Duration::from_secs(15)).await;

    // A deleted VirtualService disappears from the gateway: no route for the host.
    server
        .kubectl(&["delete", "virtualservice", "app", "-n", "default"], "")
        .expect("deleted");
    wait_answer(&c, &gateway, "status 404", Duration::from_secs(5)).await;
    drop(gateway);
    drop(controller);
    server.stop().expect("the API server stops cleanly");
}
