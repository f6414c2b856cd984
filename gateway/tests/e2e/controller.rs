//! Gateways following a controller: two real `strait-gateway` processes started with
//! `--controller`, and the controller serving a folder. The controller runs in this
//! test process (its library, the code `strait-controller`'s main runs), because a
//! crate's tests can only build its own binaries; it runs on a runtime of its own,
//! so that killing it drops every socket at once, as the death of its process
//! would. `controller/tests/push.rs` runs the `strait-controller` binary itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_controller::admin_client::Target;
use strait_controller::controller::{Controller, Options};
use strait_controller::controller_status;
use strait_controller::folder_source::FolderSource;
use strait_controller::store::Store;

use crate::support::*;

/// A controller on its own runtime, serving a folder.
pub(crate) struct ControlPlane {
    runtime: Option<tokio::runtime::Runtime>,
    push: SocketAddr,
    http: SocketAddr,
}

impl ControlPlane {
    /// Starts a controller for `dir` with its push port on `push` (0: any).
    pub(crate) fn start(dir: &Path, push: u16) -> ControlPlane {
        let dir = dir.to_path_buf();
        ControlPlane::start_with(push, move |store, controller| {
            let folder = FolderSource { dir, mesh_config: None };
            controller.add_source("folder", folder.run(store, controller.stop_signal()));
        })
    }

    /// Starts a controller with the sources `add` gives it (called within the
    /// controller's runtime, once its servers listen).
    pub(crate) fn start_with(
        push: u16,
        add: impl FnOnce(Arc<Store>, &mut Controller) + Send + 'static,
    ) -> ControlPlane {
        // Its own thread: a runtime cannot be started from within the test's.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let (push, http) = runtime.block_on(async move {
                let store = Store::new(Duration::from_millis(50));
                let options = Options {
                    push: SocketAddr::from(([127, 0, 0, 1], push)),
                    http: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                };
                let mut controller = Controller::start(store.clone(), &options)
                    .await
                    .expect("the controller starts");
                add(store, &mut controller);
                let addresses = (controller.push_addr, controller.http_addr.expect("an http port"));
                tokio::spawn(async move {
                    if let Err(e) = controller.wait().await {
                        eprintln!("controller: {e}");
                    }
                    // Held until the runtime goes.
                    std::future::pending::<()>().await;
                });
                addresses
            });
            ControlPlane {
                runtime: Some(runtime),
                push,
                http,
            }
        })
        .join()
        .expect("controller thread")
    }

    /// The address gateways follow.
    pub(crate) fn address(&self) -> String {
        self.push.to_string()
    }

    /// Drops every task and socket at once, as the death of its process would.
    pub(crate) fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// What `straitctl proxy-status --controller` prints.
    pub(crate) fn proxy_status(&self) -> String {
        let target = Target {
            host: "127.0.0.1".into(),
            port: self.http.port(),
        };
        controller_status::render(&controller_status::fetch(&target).expect("the status report"))
    }

    /// The value of the metric line starting with `name` (with its labels).
    pub(crate) fn metric(&self, name: &str) -> f64 {
        let (status, body) = raw_get(self.http.port(), "/metrics").expect("metrics");
        assert_eq!(status, 200);
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {name} in\n{body}"))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) const RULE: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: backend, namespace: default}\nspec:\n  host: backend\n  subsets:\n  - {name: a, labels: {version: a}}\n  - {name: b, labels: {version: b}}\n";

pub(crate) fn route_to_subset(subset: &str) -> String {
    virtual_service(
        "app",
        &["app.example.com"],
        &["gw"],
        &format!("- route: [{{destination: {{host: backend, subset: {subset}}}}}]\n"),
    )
}

/// Replaces `name` in `dir` at once, as editors and ConfigMaps do (a rename).
fn write(dir: &Path, name: &str, content: &str) {
    let temporary: PathBuf = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temporary, content).expect("write");
    std::fs::rename(&temporary, dir.join(name)).expect("rename");
}

/// Two echo backends (versions a and b), a folder routing app.example.com to a,
/// a controller serving it and two gateways following the controller.
struct Mesh {
    a: strait_gateway::echo::EchoServer,
    b: strait_gateway::echo::EchoServer,
    dir: tempfile::TempDir,
    controller: ControlPlane,
    gateways: [Gateway; 2],
    client: reqwest::Client,
}

async fn setup(extra_files: &[(&str, String)]) -> Mesh {
    let a = echo("a", "a").await;
    let b = echo("b", "b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "gateway.yaml", &http_gateway(&["app.example.com"]));
    write(dir.path(), "rule.yaml", RULE);
    write(
        dir.path(),
        "backend.yaml",
        &backend_entry(&[("a", a.addr.port()), ("b", b.addr.port())]),
    );
    write(dir.path(), "virtualservice.yaml", &route_to_subset("a"));
    for (name, content) in extra_files {
        write(dir.path(), name, content);
    }
    let controller = ControlPlane::start(dir.path(), 0);
    let gateways = [
        Gateway::follow(&controller.address(), "gw-1", &[]),
        Gateway::follow(&controller.address(), "gw-2", &[]),
    ];
    Mesh {
        a,
        b,
        dir,
        controller,
        gateways,
        client: client(&[("app.example.com", 0)], &[]),
    }
}

/// The backend that answers a request to `port` (empty when none does).
pub(crate) async fn backend(c: &reqwest::Client, port: u16) -> String {
    let (status, body) = get_json(c, &format!("http://app.example.com:{port}/"), &[]).await;
    if status != 200 {
        return format!("status {status}");
    }
    body["name"].as_str().unwrap_or_default().to_string()
}

impl Mesh {
    /// Polls until every gateway routes to `name`; returns how long it took.
    async fn wait_routing(&self, name: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let mut seen = Vec::new();
            for g in &self.gateways {
                seen.push(backend(&self.client, g.http).await);
            }
            if seen.iter().all(|s| s == name) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "gateways route to {seen:?}, not {name}, after {within:?}\n{}\ngw-1 log:\n{}",
                self.controller.proxy_status(),
                self.gateways[0].log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until `proxy-status` shows every gateway with `state` (and returns it).
    async fn wait_status(&self, state: &str, within: Duration) -> String {
        let start = Instant::now();
        loop {
            let status = self.controller.proxy_status();
            // The table's rows, not the refusals listed after it ("gw-1 refused ...").
            let rows: Vec<&str> = status
                .lines()
                .filter(|l| l.starts_with("gw-") && !l.contains(" refused version "))
                .collect();
            if rows.len() == 2 && rows.iter().all(|r| r.contains(state)) {
                return status;
            }
            assert!(start.elapsed() < within, "not all {state}:\n{status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_follow_the_controller() {
    let mesh = setup(&[]).await;
    mesh.wait_routing("a", Duration::from_secs(5)).await;
    let status = mesh.wait_status("SYNCED", Duration::from_secs(5)).await;
    assert!(status.contains("gateway"), "{status}");
    assert_eq!(mesh.controller.metric("pilot_xds "), 2.0);

    write(mesh.dir.path(), "virtualservice.yaml", &route_to_subset("b"));
    let took = mesh.wait_routing("b", Duration::from_secs(5)).await;
    eprintln!("both gateways routed the change after {took:?}");
    mesh.wait_status("SYNCED", Duration::from_secs(5)).await;
    // Both were sent the new configuration in full, not one message per file event.
    assert!(mesh.controller.metric("pilot_xds_pushes{type=\"config\"}") >= 4.0);
    assert!(mesh.controller.metric("pilot_proxy_convergence_time_count") >= 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_flows_without_the_controller_and_pushes_resume() {
    let mut mesh = setup(&[]).await;
    mesh.wait_routing("a", Duration::from_secs(5)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut senders = Vec::new();
    for g in &mesh.gateways {
        let (c, stop, ok, failed) = (mesh.client.clone(), stop.clone(), ok.clone(), failed.clone());
        let url = format!("http://app.example.com:{}/", g.http);
        senders.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("failed request: {:?}", other.map(|r| r.status()));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let push = mesh.controller.push.port();
    mesh.controller.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = ok.load(Ordering::Relaxed);
    assert!(during > 50, "only {during} requests while the controller was gone");
    // A change made while the controller is gone is pushed by the one that comes back.
    write(mesh.dir.path(), "virtualservice.yaml", &route_to_subset("b"));
    mesh.controller = ControlPlane::start(mesh.dir.path(), push);
    // Reconnection waits out the backoff (up to 10 s).
    mesh.wait_routing("b", Duration::from_secs(20)).await;
    write(mesh.dir.path(), "virtualservice.yaml", &route_to_subset("a"));
    mesh.wait_routing("a", Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.expect("sender");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    let log = mesh.gateways[0].log();
    assert!(log.contains("reconnecting in"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_the_gateways_refuse_is_nacked_and_the_old_one_serves() {
    let cert = TestCert::new(&["app.example.com"]);
    let other = TestCert::new(&["app.example.com"]);
    let gateway = gateway(
        "gw",
        &[
            http_server(&["app.example.com"]),
            https_server(&["app.example.com"], "app-tls"),
        ],
    );
    let mesh = setup(&[
        ("gateway.yaml", gateway),
        ("secret.yaml", cert.secret_yaml("app-tls", "default")),
    ])
    .await;
    mesh.wait_routing("a", Duration::from_secs(5)).await;
    let https = client(&[("app.example.com", 0)], &[&cert]);
    let url = format!("https://app.example.com:{}/", mesh.gateways[0].https);
    assert_eq!(get_json(&https, &url, &[]).await.0, 200);

    // A certificate with another certificate's key: the pipeline takes it (both are
    // valid PEM), the gateways' certificate compile does not. The same push routes to b.
    let mismatched = TestCert {
        cert_pem: cert.cert_pem.clone(),
        key_pem: other.key_pem.clone(),
        der: cert.der.clone(),
    };
    write(
        mesh.dir.path(),
        "secret.yaml",
        &mismatched.secret_yaml("app-tls", "default"),
    );
    write(mesh.dir.path(), "virtualservice.yaml", &route_to_subset("b"));
    let status = mesh.wait_status("NACK", Duration::from_secs(5)).await;
    assert!(status.contains("gw-1 refused version"), "{status}");
    assert!(
        status.contains("secret default/app-tls tls.crt: certificate and key do not match"),
        "the proxies' diagnostic:\n{status}"
    );
    assert!(mesh.controller.metric("pilot_total_xds_rejects{type=\"config\"}") >= 2.0);
    // The old configuration serves: routes and certificate.
    for g in &mesh.gateways {
        assert_eq!(backend(&mesh.client, g.http).await, "a");
    }
    assert_eq!(get_json(&https, &url, &[]).await.0, 200);

    // Fixed: the new routes go through, and the status clears.
    write(mesh.dir.path(), "secret.yaml", &cert.secret_yaml("app-tls", "default"));
    mesh.wait_routing("b", Duration::from_secs(5)).await;
    mesh.wait_status("SYNCED", Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_change_is_pushed_as_endpoints() {
    let mesh = setup(&[]).await;
    mesh.wait_routing("a", Duration::from_secs(5)).await;
    mesh.wait_status("SYNCED", Duration::from_secs(5)).await;
    let configs = mesh.controller.metric("pilot_xds_pushes{type=\"config\"}");
    // Subset a's endpoint moves to b's backend: same routes, another address.
    let (a, b) = (mesh.a.addr.port(), mesh.b.addr.port());
    write(mesh.dir.path(), "backend.yaml", &backend_entry(&[("a", b), ("b", a)]));
    mesh.wait_routing("b", Duration::from_secs(5)).await;
    let status = mesh.wait_status("SYNCED", Duration::from_secs(5)).await;
    assert!(status.contains("(endpoints)"), "{status}");
    assert_eq!(mesh.controller.metric("pilot_xds_pushes{type=\"endpoints\"}"), 2.0);
    assert_eq!(
        mesh.controller.metric("pilot_xds_pushes{type=\"config\"}"),
        configs,
        "no configuration was sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_configuration_is_joined_from_its_parts() {
    // 200 KB of comments beside the routes: the controller sends the configuration
    // in several parts, and the gateways apply it once joined.
    let padding = format!("# {}\n", "x".repeat(200)).repeat(1000);
    let mesh = setup(&[("large.yaml", padding)]).await;
    mesh.wait_routing("a", Duration::from_secs(5)).await;
    mesh.wait_status("SYNCED", Duration::from_secs(5)).await;
    assert!(mesh.controller.metric("pilot_xds_pushes{type=\"config\"}") >= 2.0);
    write(mesh.dir.path(), "virtualservice.yaml", &route_to_subset("b"));
    mesh.wait_routing("b", Duration::from_secs(5)).await;
}
