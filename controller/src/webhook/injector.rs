//! `POST /inject`: the sidecar injector. For a Pod being created, it reads the
//! namespace's labels, runs [`crate::inject::inject`] on a copy of the pod, and
//! answers with the JSON Patch from the pod to that copy. A pod the rules skip is
//! allowed as it is; a pod that cannot be injected (an annotation with a bad value)
//! is refused with the reason, which `kubectl` shows, as Istio's injector does:
//! creating it without its sidecar would leave it outside the mesh unnoticed.

use json_patch::Patch;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::core::DynamicObject;

use super::namespaces::Namespaces;
use super::Admission;
use crate::inject::{inject, Outcome, Settings};

/// The injection webhook.
pub struct Injector {
    settings: Settings,
    namespaces: Namespaces,
}

impl Injector {
    /// An injector making sidecars with `settings`, reading labels from `namespaces`.
    pub fn new(settings: Settings, namespaces: Namespaces) -> Injector {
        Injector { settings, namespaces }
    }

    /// The patch that injects `pod` of `namespace`, None when the rules skip it, or
    /// the reason it cannot be injected.
    async fn patch(&self, pod: &DynamicObject, namespace: &str, name: &str) -> Result<Option<Patch>, String> {
        let labels = self
            .namespaces
            .labels(namespace)
            .await
            .map_err(|e| format!("sidecar injection: cannot read the labels of namespace {namespace}: {e}"))?;
        let original = serde_json::to_value(pod).map_err(|e| format!("sidecar injection: {e}"))?;
        let mut injected = original.clone();
        match inject(&mut injected, namespace, labels.as_ref(), &self.settings) {
            Ok(Outcome::Injected) => {
                log::info!("injected the sidecar into pod {namespace}/{name}");
                Ok(Some(json_patch::diff(&original, &injected)))
            }
            Ok(Outcome::Skipped(why)) => {
                log::debug!("pod {namespace}/{name} is not injected: {why}");
                Ok(None)
            }
            Err(e) => Err(format!("sidecar injection: {e}")),
        }
    }
}

#[async_trait::async_trait]
impl Admission for Injector {
    async fn admit(&self, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        let allowed = AdmissionResponse::from(request);
        let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
        let (true, Operation::Create, None, Some(pod)) =
            (is_pod, &request.operation, &request.sub_resource, &request.object)
        else {
            return allowed;
        };
        let namespace = request
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_default();
        // A created pod often has only a generateName yet.
        let name = pod
            .metadata
            .name
            .clone()
            .or_else(|| pod.metadata.generate_name.clone())
            .unwrap_or_default();
        match self.patch(pod, &namespace, &name).await {
            Ok(None) => allowed,
            Ok(Some(patch)) => match allowed.clone().with_patch(patch) {
                Ok(patched) => patched,
                Err(e) => allowed.deny(format!("sidecar injection: {e}")),
            },
            Err(message) => {
                log::warn!("refused pod {namespace}/{name}: {message}");
                allowed.deny(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn review(object: Value, operation: &str) -> AdmissionRequest<DynamicObject> {
        let body = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "7f6c",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": operation,
                "userInfo": {"username": "admin"},
                "object": object,
                "oldObject": null
            }
        });
        super::super::parse_review(&serde_json::to_vec(&body).unwrap_or_default()).expect("a review")
    }

    fn pod(annotations: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "web-", "annotations": annotations},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]}
        })
    }

    fn injector() -> Injector {
        // No cluster: the pod alone decides.
        Injector::new(Settings::default(), Namespaces::new(None))
    }

    /// The answer as the API server reads it.
    async fn answer(request: &AdmissionRequest<DynamicObject>) -> Value {
        let json = super::super::encode_review(injector().admit(request).await).unwrap_or_default();
        serde_json::from_slice(&json).unwrap_or_default()
    }

    #[tokio::test]
    async fn a_created_pod_gets_a_json_patch_that_injects_it() {
        let request = review(pod(json!({})), "CREATE");
        let answer = answer(&request).await;
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        let response = &answer["response"];
        assert_eq!(response["uid"], "7f6c");
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        // The patch, applied to the pod sent, is the injected pod.
        let bytes: Vec<u8> = serde_json::from_value::<k8s_openapi::ByteString>(response["patch"].clone())
            .expect("base64")
            .0;
        let patch: Patch = serde_json::from_slice(&bytes).expect("a JSON Patch");
        let mut patched = pod(json!({}));
        json_patch::patch(&mut patched, &patch).expect("applies");
        let mut expected = pod(json!({}));
        inject(&mut expected, "shop", None, &Settings::default()).expect("injects");
        assert_eq!(patched, expected);
    }

    #[tokio::test]
    async fn other_requests_are_allowed_unchanged() {
        for request in [
            review(pod(json!({})), "UPDATE"),
            review(pod(json!({"sidecar.istio.io/inject": "false"})), "CREATE"),
        ] {
            let response = &answer(&request).await["response"];
            assert_eq!(response["allowed"], true);
            assert_eq!(response["patch"], Value::Null);
        }
    }

    #[tokio::test]
    async fn a_pod_that_cannot_be_injected_is_refused_with_the_reason() {
        let request = review(
            pod(json!({"traffic.sidecar.istio.io/excludeInboundPorts": "metrics"})),
            "CREATE",
        );
        let response = &answer(&request).await["response"];
        assert_eq!(response["allowed"], false);
        let message = response["status"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("invalid value \"metrics\" for annotation traffic.sidecar.istio.io/excludeInboundPorts"),
            "{message}"
        );
    }
}
