//! `straitctl analyze` run as users run it: fixture files in a folder, the built
//! binary, its output and exit status.

use std::path::Path;
use std::process::Command;

const GATEWAY: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: default
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [app.example.com]
";

const BACKEND: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: backend
  namespace: default
spec:
  hosts: [backend.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
";

/// A VirtualService for `host` on the Gateway, routing to `dest`; its
/// `destination.host` is on line 12.
fn virtual_service(host: &str, dest: &str) -> String {
    format!(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: app
  namespace: default
spec:
  hosts: [{host}]
  gateways: [gw]
  http:
  - route:
    - destination:
        host: {dest}
      weight: 100
"
    )
}

struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

/// Writes `files` into a fresh folder and runs `straitctl` there with `args`.
fn run(files: &[(&str, &str)], args: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write fixture");
    }
    run_in(dir.path(), args)
}

fn run_in(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_straitctl"))
        .args(args)
        .current_dir(dir)
        .env_remove("STRAIT_LABELS")
        .env_remove("STRAIT_NAMESPACE")
        .output()
        .expect("run straitctl");
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn lines(r: &Run) -> Vec<&str> {
    r.stdout.lines().collect()
}

/// Asserts the exit status and every line printed.
fn assert_output(r: &Run, status: i32, expected: &[&str]) {
    assert_eq!(
        (r.status, lines(r)),
        (status, expected.to_vec()),
        "stderr: {}",
        r.stderr
    );
}

/// Runs `analyze` with `args` on the Gateway, the backend and this VirtualService,
/// each in its own file.
fn analyze_app(vs: &str, args: &[&str]) -> Run {
    let mut all = vec!["analyze"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-f", "gw.yaml", "backend.yaml", "app.yaml"]);
    run(
        &[("gw.yaml", GATEWAY), ("backend.yaml", BACKEND), ("app.yaml", vs)],
        &all,
    )
}

#[test]
fn clean_config_says_so_and_exits_0() {
    let vs = virtual_service("app.example.com", "backend");
    let r = analyze_app(&vs, &[]);
    assert_output(&r, 0, &["\u{2714} No validation issues found when analyzing 3 files."]);

    let r = run(
        &[("gw.yaml", GATEWAY), ("backend.yaml", BACKEND), ("app.yaml", &vs)],
        &["analyze", "--config-dir", "."],
    );
    assert_output(
        &r,
        0,
        &["\u{2714} No validation issues found when analyzing files in .."],
    );
}

#[test]
fn unknown_destination_host_is_ist0101_at_its_line() {
    let vs = virtual_service("app.example.com", "nowhere");
    let r = analyze_app(&vs, &[]);
    // Translation reports the same host as a warning; only the analyzer's line stays.
    assert_output(
        &r,
        1,
        &[concat!(
            "Error [IST0101] (VirtualService app.default app.yaml:12) spec.http[0].route[0].destination.host: ",
            "Referenced host not found: \"nowhere.default.svc.cluster.local\"; ",
            "no ServiceEntry or Service defines it, so requests routed there fail (503)"
        )],
    );

    // Under REGISTRY_ONLY the gateway answers 502 (Envoy's BlackHoleCluster), and so
    // says analyze when given the mesh config.
    let mut all = vec!["analyze", "--mesh-config", "mesh.yaml"];
    all.extend_from_slice(&["-f", "gw.yaml", "backend.yaml", "app.yaml"]);
    let r = run(
        &[
            ("gw.yaml", GATEWAY),
            ("backend.yaml", BACKEND),
            ("app.yaml", &vs),
            ("mesh.yaml", "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n"),
        ],
        &all,
    );
    assert_output(
        &r,
        1,
        &[concat!(
            "Error [IST0101] (VirtualService app.default app.yaml:12) spec.http[0].route[0].destination.host: ",
            "Referenced host not found: \"nowhere.default.svc.cluster.local\"; ",
            "no ServiceEntry or Service defines it, so requests routed there fail (502, outboundTrafficPolicy REGISTRY_ONLY)"
        )],
    );
}

#[test]
fn missing_gateway_is_ist0101_from_validation() {
    let vs = virtual_service("app.example.com", "backend");
    let r = run(
        &[("backend.yaml", BACKEND), ("app.yaml", &vs)],
        &["analyze", "-f", "backend.yaml", "app.yaml"],
    );
    assert_output(
        &r,
        1,
        &["Error [IST0101] (VirtualService app.default app.yaml:8) spec.gateways[0]: Gateway default/gw is not defined"],
    );
}

#[test]
fn schema_error_is_ist0106() {
    let vs = virtual_service("app.example.com", "backend").replace("weight: 100", "weight: ninety");
    let r = analyze_app(&vs, &[]);
    assert_eq!(r.status, 1, "{}{}", r.stdout, r.stderr);
    let l = lines(&r);
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(
        l[0].starts_with("Error [IST0106] (VirtualService app.default app.yaml:13) spec.http[0].route[0].weight: "),
        "{l:?}"
    );
}

#[test]
fn host_outside_its_gateway_is_an_ist0132_warning() {
    let vs = virtual_service("api.example.com", "backend");
    let r = analyze_app(&vs, &[]);
    assert_output(
        &r,
        0,
        &[concat!(
            "Warning [IST0132] (VirtualService app.default app.yaml:7) spec.hosts[0]: ",
            "host api.example.com defined in VirtualService default/app not found in Gateway default/gw; ",
            "that gateway does not route it"
        )],
    );
}

#[test]
fn unknown_field_keeps_strait_code() {
    let vs = virtual_service("app.example.com", "backend").replace("weight: 100", "wieght: 100");
    let r = analyze_app(&vs, &[]);
    assert_output(
        &r,
        0,
        &["Warning [STR0002] (VirtualService app.default app.yaml:13) spec.http[0].route[0].wieght: unknown field, ignored"],
    );
}

#[test]
fn json_output_shape() {
    let vs = virtual_service("app.example.com", "nowhere");
    let r = analyze_app(&vs, &["-o", "json"]);
    assert_eq!(r.status, 1, "{}{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON output");
    let expected = serde_json::json!([{
        "level": "Error",
        "code": "IST0101",
        "strait_code": "reference-not-found",
        "resource": "VirtualService app.default",
        "file": "app.yaml",
        "line": 12,
        "column": 9,
        "field": "spec.http[0].route[0].destination.host",
        "message": "Referenced host not found: \"nowhere.default.svc.cluster.local\"; no ServiceEntry or Service defines it, so requests routed there fail (503)",
    }]);
    assert_eq!(v, expected);

    let clean = virtual_service("app.example.com", "backend");
    let r = run(
        &[("gw.yaml", GATEWAY), ("backend.yaml", BACKEND), ("app.yaml", &clean)],
        &["analyze", "--output", "json", "--config-dir", "."],
    );
    assert_eq!((r.status, r.stdout.trim()), (0, "[]"), "{}", r.stderr);
}

#[test]
fn labels_choose_the_gateway_translated() {
    // A Gateway for other workloads is not translated, so its missing Secret is no
    // finding for the default labels but is one for its own.
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  selector: {istio: egressgateway}\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [app.example.com]\n    tls: {mode: SIMPLE, credentialName: missing}\n";
    let vs = virtual_service("app.example.com", "backend");
    let files = [("gw.yaml", gw), ("backend.yaml", BACKEND), ("app.yaml", vs.as_str())];
    let r = run(&files, &["analyze", "--config-dir", "."]);
    assert_output(
        &r,
        0,
        &["\u{2714} No validation issues found when analyzing files in .."],
    );
    let r = run(
        &files,
        &["analyze", "--config-dir", ".", "--labels", "istio=egressgateway"],
    );
    assert_output(
        &r,
        0,
        &["Warning [IST0101] (Gateway gw.default gw.yaml:9) spec.servers[0].tls.credentialName: no kubernetes.io/tls Secret missing in namespace default or istio-system; server skipped"],
    );
}

#[test]
fn unreadable_input_and_bad_usage_exit_2() {
    let r = run(&[], &["analyze", "-f", "absent.yaml"]);
    assert_eq!(r.status, 2);
    assert!(r.stderr.contains("cannot read absent.yaml"), "{}", r.stderr);
    let r = run(&[], &["analyze", "--config-dir", "absent"]);
    assert_eq!(r.status, 2, "{}", r.stderr);
    let r = run(&[], &["analyze"]);
    assert_eq!(r.status, 2, "{}", r.stderr);
    let r = run(&[], &["analyze", "-f", "a.yaml", "--config-dir", "."]);
    assert_eq!(r.status, 2, "{}", r.stderr);
    let r = run(
        &[("a.yaml", BACKEND)],
        &["analyze", "-f", "a.yaml", "--labels", "novalue"],
    );
    assert_eq!(r.status, 2, "{}", r.stderr);
}

#[test]
fn custom_policies_are_checked_against_the_mesh_config() {
    let policy = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ext
  namespace: istio-system
spec:
  action: CUSTOM
  provider:
    name: ext-authz
  rules:
  - to:
    - operation:
        paths: [/api/*]
";
    let mesh = "extensionProviders:\n- name: ext-authz\n  envoyExtAuthzHttp: {service: backend.default.svc.cluster.local, port: 80}\n";
    let vs = virtual_service("app.example.com", "backend");
    let files = [
        ("gw.yaml", GATEWAY),
        ("backend.yaml", BACKEND),
        ("app.yaml", vs.as_str()),
        ("policy.yaml", policy),
    ];
    let without = run(&files, &["analyze", "--config-dir", "."]);
    assert_eq!(without.status, 0, "{}", without.stdout);
    assert!(
        without.stdout.contains("IST0101") && without.stdout.contains("ext-authz"),
        "{}",
        without.stdout
    );

    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write fixture");
    }
    let mesh_dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(mesh_dir.path().join("mesh.yaml"), mesh).expect("write mesh");
    let mesh_path = mesh_dir.path().join("mesh.yaml").display().to_string();
    let with = run_in(
        dir.path(),
        &["analyze", "--config-dir", ".", "--mesh-config", &mesh_path],
    );
    assert_output(
        &with,
        0,
        &["\u{2714} No validation issues found when analyzing files in .."],
    );
}

#[test]
fn the_mesh_example_has_no_errors_or_warnings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mesh");
    let r = run_in(&dir, &["analyze", "--config-dir", "."]);
    assert_eq!(r.status, 0, "{}{}", r.stdout, r.stderr);
    for line in lines(&r) {
        assert!(
            !line.starts_with("Error") && !line.starts_with("Warning"),
            "examples/mesh: {line}\n{}",
            r.stdout
        );
    }
}
