//! `strait-gateway --check` on a folder of invalid configurations prints every
//! problem with file:line:column, resource and field, and exits 1.

use std::path::Path;
use std::process::Command;

fn check(dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strait-gateway"))
        .arg("--config-dir")
        .arg(dir)
        .arg("--check")
        .output()
        .expect("run --check");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn check_reports_every_problem_with_its_location() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let (code, out) = check(&dir);
    assert_eq!(code, Some(1), "{out}");
    let expected = [
        "broken.yaml:5:5: error[syntax]: while parsing a flow mapping, did not find expected ',' or '}'",
        "gateway.yaml:10:5: error[required] Gateway default/edge spec.servers[0].tls: HTTPS server needs tls settings",
        "gateway.yaml:13:5: error[required] Gateway default/edge spec.servers[1].hosts: server hosts must not be empty",
        "types.yaml:23:16: error[schema] VirtualService shop/typed spec.http[0].route[0].destination.port.number: invalid type: string \"eighty\", expected i64",
        "types.yaml:30:3: error[required] VirtualService default/nohosts spec.hosts: a VirtualService needs at least one host",
        "types.yaml:35:1: note[unknown-kind] ConfigMap default/unrelated: v1 ConfigMap is not used by Strait; skipped",
        "virtualservice.yaml:8:20: error[reference-not-found] VirtualService default/app spec.gateways[1]: Gateway default/missing-gateway is not defined",
        "virtualservice.yaml:12:9: error[invalid-regex] VirtualService default/app spec.http[0].match[0].uri.regex: invalid regex \"/users/(unclosed\": error: unclosed group",
        "virtualservice.yaml:15:5: error[conflict] VirtualService default/app spec.http[1]: route, redirect, directResponse and delegate are mutually exclusive",
        "virtualservice.yaml:20:5: error[conflict] VirtualService default/app spec.http[2].rewrite: rewrite.uri and rewrite.uriRegexRewrite cannot both be set",
        "virtualservice.yaml:24:36: error[reference-not-found] VirtualService default/app spec.http[2].route[0].destination.subset: subset v3 of host backend.default.svc.cluster.local is not defined in any DestinationRule",
        "virtualservice.yaml:25:5: error[invalid-value] VirtualService default/app spec.http[3].route: with several destinations, at least one weight must be positive",
        "virtualservice.yaml:27:7: error[invalid-value] VirtualService default/app spec.http[3].route[0].weight: weight must not be negative",
        "virtualservice.yaml:30:7: warning[unknown-field] VirtualService default/app spec.http[3].route[1].wieght: unknown field, ignored",
    ];
    for line in expected {
        assert!(
            out.lines().any(|l| l == line),
            "missing line:\n{line}\nin output:\n{out}"
        );
    }
    assert!(out.ends_with(": 12 errors, 1 warnings\n"), "{out}");
}

#[test]
fn check_passes_the_example_with_a_warning_for_the_missing_secret() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/app-example-com");
    let tmp = tempfile::tempdir().expect("tempdir");
    for f in [
        "gateway.yaml",
        "virtualservice.yaml",
        "destinationrule.yaml",
        "serviceentry.yaml",
    ] {
        std::fs::copy(dir.join(f), tmp.path().join(f)).expect("copy");
    }
    let (code, out) = check(tmp.path());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("gateway.yaml:26:7: warning[reference-not-found] Gateway default/app-gateway spec.servers[1].tls.credentialName"), "{out}");
}
