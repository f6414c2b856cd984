//! `straitctl`'s proxy-config and proxy-status (its library) against real gateways.

use strait_controller::admin_client::Target;
use strait_controller::proxy_config::{self, Section};
use strait_controller::proxy_status::{self, SyncStatus};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_config_renders_the_admin_ports_tables() {
    let s = Setup::start().await;
    let target = Target::parse(&format!("127.0.0.1:{}", s.gw.admin)).expect("target");
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
        clusters.contains(&format!("127.0.0.1:{}   LEAST_REQUEST", s.backend.addr.port())),
        "{clusters}"
    );
    let secrets = table(Section::Secrets);
    assert!(secrets.contains(&fingerprint(&s.cert)), "{secrets}");
    assert!(secrets.starts_with("NAME"), "{secrets}");
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
