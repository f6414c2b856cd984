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
        "virtualservice.yaml:25:5: warning[invalid-value] VirtualService default/app spec.http[3]: virtualService rule #3 not used (rule #2 before it matches every request)",
        "virtualservice.yaml:27:7: error[invalid-value] VirtualService default/app spec.http[3].route[0].weight: weight must not be negative",
        "virtualservice.yaml:30:7: warning[unknown-field] VirtualService default/app spec.http[3].route[1].wieght: unknown field, ignored",
    ];
    for line in expected {
        assert!(
            out.lines().any(|l| l == line),
            "missing line:\n{line}\nin output:\n{out}"
        );
    }
    assert!(out.ends_with(": 12 errors, 2 warnings\n"), "{out}");
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

/// Certificates, keys, client roots and upstream roots are read by the engine, after
/// the configuration is built; their problems still point at the field that named
/// them.
#[test]
fn check_reports_unusable_tls_material_at_the_field_that_named_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["mtls.example.com".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("sign");
    std::fs::write(dir.join("server.crt"), cert.pem()).expect("write");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write");
    std::fs::write(dir.join("empty-ca.pem"), "").expect("write");
    std::fs::write(
        dir.join("garbage-ca.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let other_key = rcgen::KeyPair::generate().expect("key");
    let indent = |pem: &str| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let d = dir.display();
    let gateway = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8443, name: https-secret, protocol: HTTPS}}
    hosts: [secret.example.com]
    tls:
      mode: SIMPLE
      credentialName: broken-tls
  - port: {{number: 8444, name: https-files, protocol: HTTPS}}
    hosts: [files.example.com]
    tls:
      mode: SIMPLE
      serverCertificate: {d}/missing.crt
      privateKey: {d}/missing.key
  - port: {{number: 8445, name: https-mtls, protocol: HTTPS}}
    hosts: [mtls.example.com]
    tls:
      mode: MUTUAL
      serverCertificate: {d}/server.crt
      privateKey: {d}/server.key
      caCertificates: {d}/empty-ca.pem
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: upstream, namespace: default}}
spec:
  host: api.example.com
  trafficPolicy:
    tls:
      mode: SIMPLE
      caCertificates: {d}/garbage-ca.pem
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [api.example.com]
  ports: [{{number: 443, name: https, protocol: HTTPS}}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: default}}
spec:
  hosts: [files.example.com]
  gateways: [edge]
  http:
  - route:
    - destination: {{host: api.example.com, port: {{number: 443}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: broken-tls, namespace: default}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{}  tls.key: |
{}"#,
        indent(&cert.pem()),
        indent(&other_key.serialize_pem()),
    );
    let conf = dir.join("conf");
    std::fs::create_dir(&conf).expect("mkdir");
    std::fs::write(conf.join("gateway.yaml"), gateway).expect("write");
    let (code, out) = check(&conf);
    assert_eq!(code, Some(1), "{out}");
    let expected = [
        "gateway.yaml:11:7: error[invalid-certificate] Gateway default/edge spec.servers[0].tls.credentialName: secret default/broken-tls tls.crt: certificate and key do not match".to_string(),
        format!("gateway.yaml:16:7: error[invalid-certificate] Gateway default/edge spec.servers[1].tls.serverCertificate: cannot read {d}/missing.crt: No such file or directory (os error 2)"),
        format!("gateway.yaml:24:7: error[invalid-certificate] Gateway default/edge spec.servers[2].tls.caCertificates: {d}/empty-ca.pem: no CA certificate in PEM"),
        format!("gateway.yaml:32:5: error[invalid-certificate] DestinationRule default/upstream spec.trafficPolicy.tls: cluster outbound|443||api.example.com: {d}/garbage-ca.pem: bad certificate PEM"),
    ];
    for line in &expected {
        assert!(
            out.lines().any(|l| l.starts_with(line.as_str())),
            "missing line:\n{line}\nin output:\n{out}"
        );
    }
}

#[test]
fn check_reports_a_secret_that_is_not_pem_at_its_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: not-pem, namespace: default}\n\
                  type: kubernetes.io/tls\nstringData:\n  tls.crt: this is not a certificate\n  tls.key: nor a key\n";
    std::fs::write(tmp.path().join("secret.yaml"), secret).expect("write");
    let (code, out) = check(tmp.path());
    assert_eq!(code, Some(1), "{out}");
    for line in [
        "secret.yaml:6:3: error[invalid-certificate] Secret default/not-pem stringData.tls.crt: not PEM",
        "secret.yaml:7:3: error[invalid-certificate] Secret default/not-pem stringData.tls.key: not PEM",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing line:\n{line}\nin output:\n{out}"
        );
    }
}
