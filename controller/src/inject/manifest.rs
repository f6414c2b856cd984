//! `straitctl kube-inject`: the injection applied to manifests offline, as
//! `istioctl kube-inject` does: no cluster, no webhook, the same [`inject`] the
//! webhook runs. Pods, and the pod templates of Deployments, StatefulSets,
//! DaemonSets, ReplicaSets, ReplicationControllers, Jobs and CronJobs are injected;
//! `List`s are walked; every other document is written back unchanged. Documents
//! keep their order. Namespace labels are not known here, so only the pod decides
//! (`sidecar.istio.io/inject: "false"` opts out), as with istioctl.
//!
//! The output is YAML that `kubectl apply` takes; like istioctl's it has no comments,
//! and keys come out sorted.

use serde_json::Value;

use super::{inject, Error, Outcome, Settings};

/// Why manifests cannot be injected.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The input is not YAML.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// Line, from 1.
        line: usize,
        /// Column, from 1.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A document's pod cannot be injected.
    #[error("document {index} ({what}): {source}")]
    Document {
        /// Its place in the input, from 1.
        index: usize,
        /// Its kind, namespace and name.
        what: String,
        /// Why.
        source: Error,
    },
}

/// Injected manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// The documents, as YAML.
    pub yaml: String,
    /// Each pod or workload left without a sidecar, and why (for the user to see).
    pub skipped: Vec<String>,
}

/// Where the pod template of a document of `kind` is (a JSON pointer; "" is the
/// document itself), or None when the kind has none.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" | "Job" => {
            Some("/spec/template")
        }
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn describe(object: &Value) -> String {
    let field = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or("");
    let (kind, namespace, name) = (field("/kind"), field("/metadata/namespace"), field("/metadata/name"));
    let kind = if kind.is_empty() { "object" } else { kind };
    match (namespace, name) {
        ("", "") => kind.to_string(),
        ("", name) => format!("{kind} {name}"),
        (namespace, name) => format!("{kind} {namespace}/{name}"),
    }
}

/// Injects one object (a `List`'s items in turn); the skipped ones are added to `skipped`.
fn inject_object(object: &mut Value, settings: &Settings, skipped: &mut Vec<String>) -> Result<(), (String, Error)> {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    if kind == "List" || kind.ends_with("List") {
        if let Some(Value::Array(items)) = object.get_mut("items") {
            for item in items {
                inject_object(item, settings, skipped)?;
            }
        }
        return Ok(());
    }
    let Some(pointer) = template_pointer(&kind) else {
        return Ok(());
    };
    let what = describe(object);
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(template) = object.pointer_mut(pointer) else {
        return Ok(());
    };
    match inject(template, &namespace, None, settings) {
        Ok(Outcome::Injected) => Ok(()),
        Ok(Outcome::Skipped(why)) => {
            skipped.push(format!("{what}: {why}"));
            Ok(())
        }
        Err(e) => Err((what, e)),
    }
}

/// Injects the sidecar into the pods and pod templates of `text` (YAML or JSON, one
/// or more documents).
pub fn kube_inject(text: &str, settings: &Settings) -> Result<Injected, ManifestError> {
    let documents = strait_config::yaml::parse_documents(text).map_err(|e| ManifestError::Syntax {
        line: e.position.line,
        column: e.position.column,
        message: e.message,
    })?;
    let mut skipped = Vec::new();
    let mut out = Vec::with_capacity(documents.len());
    for (i, document) in documents.into_iter().enumerate() {
        let mut value = document.value;
        inject_object(&mut value, settings, &mut skipped).map_err(|(what, source)| ManifestError::Document {
            index: i + 1,
            what,
            source,
        })?;
        out.push(crate::yaml::to_yaml(&value));
    }
    Ok(Injected {
        yaml: out.join("---\n"),
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {traffic.sidecar.istio.io/excludeOutboundPorts: \"5432\"}
    spec:
      containers: [{name: web, image: nginx, ports: [{containerPort: 80}]}]
";

    fn init_containers(value: &Value, pointer: &str) -> Vec<String> {
        value
            .pointer(&format!("{pointer}/spec/initContainers"))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|c| c.get("name")?.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn documents(yaml: &str) -> Vec<Value> {
        strait_config::yaml::parse_documents(yaml)
            .expect("the output parses")
            .into_iter()
            .map(|d| d.value)
            .collect()
    }

    #[test]
    fn every_kind_with_a_pod_template_is_injected_and_the_rest_kept_in_order() {
        let service = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n";
        let pod =
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: app, image: busybox}]\n";
        let cron = "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec:\n  schedule: \"* * * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{name: job, image: busybox}]\n";
        let list = format!(
            "apiVersion: v1\nkind: List\nitems:\n- {}",
            pod.replace("name: p}", "name: q}").replace('\n', "\n  ")
        );
        let text = [DEPLOYMENT, service, pod, cron, list.trim_end()].join("---\n");
        let injected = kube_inject(&text, &Settings::default()).expect("injects");
        let out = documents(&injected.yaml);
        let kinds: Vec<&str> = out.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(kinds, ["Deployment", "Service", "Pod", "CronJob", "List"]);
        let both = ["strait-init", "strait-proxy"];
        assert_eq!(init_containers(&out[0], "/spec/template"), both);
        assert_eq!(out[1], documents(service)[0], "a Service passes through unchanged");
        assert_eq!(init_containers(&out[2], ""), both);
        assert_eq!(init_containers(&out[3], "/spec/jobTemplate/spec/template"), both);
        assert_eq!(init_containers(&out[4], "/items/0"), both);
        let init = &out[0]["spec"]["template"]["spec"]["initContainers"][0]["command"];
        let args: Vec<&str> = init
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            args.windows(2).any(|w| w == ["--exclude-outbound-ports", "5432"]),
            "{args:?}"
        );
        assert!(injected.skipped.is_empty(), "{:?}", injected.skipped);
    }

    #[test]
    fn injecting_twice_changes_nothing() {
        let once = kube_inject(DEPLOYMENT, &Settings::default()).expect("injects");
        let twice = kube_inject(&once.yaml, &Settings::default()).expect("injects");
        assert_eq!(documents(&once.yaml), documents(&twice.yaml));
        assert_eq!(twice.skipped, ["Deployment shop/web: the pod is injected already"]);
    }

    #[test]
    fn an_opted_out_template_is_kept_and_said() {
        let text = DEPLOYMENT.replace(
            "labels: {app: web}",
            "labels: {app: web, sidecar.istio.io/inject: \"false\"}",
        );
        let injected = kube_inject(&text, &Settings::default()).expect("valid");
        assert_eq!(documents(&injected.yaml), documents(&text));
        assert_eq!(
            injected.skipped,
            ["Deployment shop/web: the pod says sidecar.istio.io/inject: \"false\""]
        );
    }

    #[test]
    fn errors_name_the_document() {
        let bad = DEPLOYMENT.replace("\"5432\"", "\"postgres\"");
        let text = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n---\n{bad}");
        let error = kube_inject(&text, &Settings::default()).expect_err("a bad port");
        let message = error.to_string();
        assert!(
            message.starts_with("document 2 (Deployment shop/web): invalid value \"postgres\" for annotation traffic.sidecar.istio.io/excludeOutboundPorts"),
            "{message}"
        );
        let error = kube_inject("a: [b", &Settings::default()).expect_err("not YAML");
        assert!(matches!(error, ManifestError::Syntax { .. }), "{error}");
    }
}
