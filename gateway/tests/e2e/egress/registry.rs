//! The outbound traffic policy of the mesh config for a host no ServiceEntry
//! defines: ALLOW_ANY (Istio's default) and REGISTRY_ONLY; a bad mesh config stops
//! the start.

use crate::support::*;

/// A folder routing out.example.com to api.unknown.test, which nothing defines, and
/// a folder for the mesh config.
struct Folders {
    config: tempfile::TempDir,
    mesh: tempfile::TempDir,
}

impl Folders {
    fn new() -> Folders {
        let config = http_gateway(&["out.example.com"])
            + &virtual_service("out", &["out.example.com"], &["gw"], &route_to("api.unknown.test"));
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("out.yaml"), &config).expect("write");
        Folders {
            config: dir,
            mesh: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Writes the mesh config; returns its path for `--mesh-config`.
    fn mesh(&self, yaml: &str) -> String {
        let mesh = self.mesh.path().join("mesh.yaml");
        std::fs::write(&mesh, yaml).expect("write");
        mesh.display().to_string()
    }
}

async fn status_out(gw: &Gateway) -> u16 {
    let c = client(&[("out.example.com", gw.http)], &[]);
    get_json(&c, &format!("http://out.example.com:{}/", gw.http), &[])
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_any_has_no_cluster_for_the_host_503() {
    let f = Folders::new();
    // ALLOW_ANY (the default): no cluster for the host, 503.
    let gw = Gateway::start(f.config.path(), &[]);
    assert_eq!(status_out(&gw).await, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_only_refuses_hosts_outside_the_registry_502() {
    let f = Folders::new();
    // REGISTRY_ONLY: refused as Envoy's BlackHoleCluster does.
    let mesh_arg = f.mesh("outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n");
    let gw = Gateway::start(f.config.path(), &["--mesh-config", &mesh_arg]);
    assert_eq!(status_out(&gw).await, 502);
}

#[test]
fn a_bad_mesh_config_stops_the_start_with_its_position() {
    let f = Folders::new();
    let mesh_arg = f.mesh("outboundTrafficPolicy:\n  mode: SOMETIMES\n");
    let log = Gateway::try_start(f.config.path(), &["--mesh-config", &mesh_arg])
        .err()
        .expect("a bad mesh config is refused");
    assert!(log.contains("mesh.yaml:2:3") && log.contains("SOMETIMES"), "{log}");
}
