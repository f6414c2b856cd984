//! Every folder of examples/ passes `straitctl analyze` as its README says to run it:
//! no errors, and no warnings but the ones listed here with their reason. Examples
//! that install a chart are checked with what the chart renders (`helm template`
//! with the example's values): the files of the gateway's config folder and its mesh
//! config, or the Service of the egress gateway they route to.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use strait_controller::testing::Tools;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// How one example is checked.
struct Example {
    /// Its folder under examples/.
    name: &'static str,
    /// `straitctl analyze` flags beside the resources (the gateway it is for).
    flags: &'static [&'static str],
    /// `helm template` of the gateway chart whose objects join the check, as
    /// (release, namespace, `--set`s, values file under the example's folder).
    chart: Option<(
        &'static str,
        &'static str,
        &'static [&'static str],
        Option<&'static str>,
    )>,
    /// Whether the example's own folder is a config folder (else only the chart's
    /// ConfigMap is: the example is a values file).
    config_dir: bool,
    /// Warnings expected, each with why.
    allowed: &'static [&'static str],
}

const EXAMPLES: &[Example] = &[
    Example {
        name: "app-example-com",
        flags: &["-n", "default"],
        chart: None,
        config_dir: true,
        // scripts/demo.sh generates the certificate; it is not committed.
        allowed: &["no kubernetes.io/tls Secret app-example-com-tls"],
    },
    Example {
        name: "mesh",
        flags: &[],
        chart: None,
        config_dir: true,
        allowed: &[],
    },
    Example {
        name: "canary",
        flags: &[],
        chart: None,
        config_dir: true,
        allowed: &[],
    },
    Example {
        name: "jwt-api",
        flags: &["-n", "istio-ingress"],
        chart: None,
        config_dir: true,
        allowed: &[],
    },
    Example {
        name: "egress",
        flags: &[
            "-n",
            "istio-egress",
            "--labels",
            "app=istio-egressgateway,istio=egressgateway",
        ],
        chart: Some(("istio-egressgateway", "istio-egress", &["kind=egress"], None)),
        config_dir: true,
        allowed: &[],
    },
    Example {
        name: "acme",
        flags: &["-n", "istio-ingress"],
        chart: Some(("istio-ingressgateway", "istio-ingress", &[], Some("values.yaml"))),
        config_dir: false,
        allowed: &[],
    },
];

/// `helm template` of the gateway chart for `example`: its documents.
async fn gateway_chart(example: &Example) -> Vec<Value> {
    let Some((release, namespace, sets, values)) = example.chart else {
        return Vec::new();
    };
    let helm = Tools::find()
        .await
        .expect("the Kubernetes test tools")
        .helm
        .expect("STRAIT_HELM");
    let mut command = Command::new(helm);
    command
        .args(["template", release])
        .arg(root().join("charts/strait-gateway"))
        .args(["--namespace", namespace]);
    for set in sets {
        command.args(["--set", set]);
    }
    if let Some(values) = values {
        command
            .arg("--values")
            .arg(root().join("examples").join(example.name).join(values));
    }
    let out = command.output().expect("run helm");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: {}",
        example.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut docs = Vec::new();
    strait_config::yaml::for_each_document(&text, |d| docs.push(d.value)).expect("YAML");
    docs
}

#[tokio::test]
async fn every_example_passes_analyze() {
    let on_disk: Vec<String> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for name in &on_disk {
        assert!(
            EXAMPLES.iter().any(|e| e.name == name),
            "examples/{name} is not checked: add it to EXAMPLES"
        );
    }
    for example in EXAMPLES {
        let folder = root().join("examples").join(example.name);
        // One folder with what the check reads: the example's files and what the
        // chart renders for it.
        let rendered = tempfile::tempdir().expect("a folder");
        let dir = rendered.path().join("config");
        std::fs::create_dir_all(&dir).expect("a folder");
        let mut args: Vec<String> = vec!["analyze".into(), "--config-dir".into(), dir.display().to_string()];
        if example.config_dir {
            for entry in std::fs::read_dir(&folder).expect("the example").filter_map(|e| e.ok()) {
                if entry.path().extension().is_some_and(|e| e == "yaml") {
                    std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
                }
            }
        }
        for doc in gateway_chart(example).await {
            let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_string();
            match doc["kind"].as_str() {
                // The gateway's mesh config and config folder, as the pod mounts them.
                Some("ConfigMap") if name.ends_with("-mesh") => {
                    let mesh = rendered.path().join("mesh.yaml");
                    let text = doc["data"]["mesh.yaml"].as_str().unwrap_or_default();
                    std::fs::write(&mesh, text).expect("write");
                    args.extend(["--mesh-config".into(), mesh.display().to_string()]);
                }
                Some("ConfigMap") => {
                    for (file, text) in doc["data"].as_object().into_iter().flatten() {
                        std::fs::write(dir.join(file), text.as_str().unwrap_or_default()).expect("write");
                    }
                }
                Some("Service") => {
                    let text = serde_json::to_string(&doc).expect("JSON");
                    std::fs::write(dir.join("chart-service.json"), text).expect("write");
                }
                _ => {}
            }
        }
        let files = std::fs::read_dir(&dir).expect("the folder").count();
        assert!(files > 0, "examples/{}: nothing to check", example.name);
        args.extend(example.flags.iter().map(|f| f.to_string()));
        let out = Command::new(env!("CARGO_BIN_EXE_straitctl"))
            .args(&args)
            .output()
            .expect("run straitctl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report = format!(
            "examples/{}: straitctl {args:?}\n{stdout}{}",
            example.name,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{report}");
        for line in stdout.lines() {
            assert!(!line.starts_with("Error"), "{report}");
            if line.starts_with("Warning") {
                assert!(
                    example.allowed.iter().any(|a| line.contains(a)),
                    "unexpected warning: {report}"
                );
            }
        }
    }
}
