//! When a pod gets a sidecar: Istio's rules, as istiod's webhook and its
//! MutatingWebhookConfiguration apply them together.
//!
//! - Never: pods with `hostNetwork` (the capture would rewrite the node's iptables),
//!   pods in Kubernetes' own namespaces, pods already injected.
//! - The pod decides first: label `sidecar.istio.io/inject`, else the (older)
//!   annotation of the same name; `"false"` opts out everywhere. Any other value
//!   than `"true"`/`"false"` counts as unset, as in Istio.
//! - Then the namespace: label `istio-injection` or `strait-injection`. `disabled`
//!   on either never injects (it wins over `enabled` on the other); `enabled`
//!   injects every pod that did not opt out. A namespace with neither label injects
//!   only pods *labeled* `sidecar.istio.io/inject: "true"`: Istio's second webhook
//!   selects those by label, so the annotation alone does not opt a pod in. Any
//!   other value of the namespace labels injects nothing.
//! - When the namespace's labels are not known (`kube-inject`), only the pod decides.
//!
//! deploy/injection-webhook.yaml expresses the same rules as namespace and object
//! selectors, so the API server calls the webhook only for pods these rules inject
//! (or that opt out by annotation only); the webhook applies them again, which keeps
//! a webhook registered more broadly than that file correct.

use super::{Labels, Pod, STATUS_ANNOTATION};

/// The pod label (and older annotation) by which a pod opts in or out.
pub const INJECT_LABEL: &str = "sidecar.istio.io/inject";

/// Istio's namespace label: `enabled` or `disabled`.
pub const ISTIO_NAMESPACE_LABEL: &str = "istio-injection";

/// Strait's namespace label, the same values: for namespaces that Istio, installed
/// beside Strait, must leave alone.
pub const STRAIT_NAMESPACE_LABEL: &str = "strait-injection";

/// Namespaces never injected (Istio's list): Kubernetes' own.
const IGNORED_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease", "local-path-storage"];

/// Why a pod is left without a sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The pod uses the node's network.
    HostNetwork,
    /// The pod is in one of Kubernetes' own namespaces.
    IgnoredNamespace,
    /// The pod has Strait's containers or status annotation already.
    AlreadyInjected,
    /// The pod says `sidecar.istio.io/inject: "false"`.
    OptedOut,
    /// The namespace is labeled `disabled`.
    NamespaceDisabled,
    /// The namespace is not labeled for injection and the pod is not labeled in.
    NotSelected,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Skip::HostNetwork => "the pod uses hostNetwork",
            Skip::IgnoredNamespace => "the namespace is one of Kubernetes' own",
            Skip::AlreadyInjected => "the pod is injected already",
            Skip::OptedOut => "the pod says sidecar.istio.io/inject: \"false\"",
            Skip::NamespaceDisabled => "the namespace is labeled for no injection",
            Skip::NotSelected => "neither the namespace nor the pod is labeled for injection",
        })
    }
}

/// What a namespace's labels say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NamespaceChoice {
    Enabled,
    Disabled,
    Unlabeled,
    /// A label with a value that is neither.
    Other,
}

fn namespace_choice(labels: &Labels) -> NamespaceChoice {
    let values = [ISTIO_NAMESPACE_LABEL, STRAIT_NAMESPACE_LABEL].map(|key| labels.get(key).map(String::as_str));
    if values.contains(&Some("disabled")) {
        NamespaceChoice::Disabled
    } else if values.contains(&Some("enabled")) {
        NamespaceChoice::Enabled
    } else if values == [None, None] {
        NamespaceChoice::Unlabeled
    } else {
        NamespaceChoice::Other
    }
}

/// Why `pod` in `namespace` is not to be injected, or None to inject it.
pub(super) fn skip(pod: &Pod, namespace: &str, namespace_labels: Option<&Labels>) -> Option<Skip> {
    if pod.host_network {
        return Some(Skip::HostNetwork);
    }
    if IGNORED_NAMESPACES.contains(&namespace) {
        return Some(Skip::IgnoredNamespace);
    }
    if pod.has_strait_container || pod.annotations.contains_key(STATUS_ANNOTATION) {
        return Some(Skip::AlreadyInjected);
    }
    // The label is the newer API: when both are there, it wins.
    let said = pod
        .labels
        .get(INJECT_LABEL)
        .or_else(|| pod.annotations.get(INJECT_LABEL))
        .map(String::as_str);
    if said == Some("false") {
        return Some(Skip::OptedOut);
    }
    let labels = namespace_labels?;
    match namespace_choice(labels) {
        NamespaceChoice::Enabled => None,
        NamespaceChoice::Disabled => Some(Skip::NamespaceDisabled),
        NamespaceChoice::Unlabeled if pod.labels.get(INJECT_LABEL).is_some_and(|v| v == "true") => None,
        NamespaceChoice::Unlabeled | NamespaceChoice::Other => Some(Skip::NotSelected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn namespace_labels_and_the_pod_decide_as_in_istio() {
        let enabled = labels(&[(ISTIO_NAMESPACE_LABEL, "enabled")]);
        let strait = labels(&[(STRAIT_NAMESPACE_LABEL, "enabled")]);
        let disabled = labels(&[(ISTIO_NAMESPACE_LABEL, "disabled")]);
        let split = labels(&[(ISTIO_NAMESPACE_LABEL, "enabled"), (STRAIT_NAMESPACE_LABEL, "disabled")]);
        let odd = labels(&[(ISTIO_NAMESPACE_LABEL, "yes")]);
        let none = Labels::new();
        let pod_label_true = labels(&[(INJECT_LABEL, "true")]);
        let pod_label_false = labels(&[(INJECT_LABEL, "false")]);
        // (what, namespace labels, pod labels, pod annotations, expected)
        type Case<'a> = (&'a str, Option<&'a Labels>, Labels, Labels, Option<Skip>);
        let cases: &[Case<'_>] = &[
            ("istio label", Some(&enabled), none.clone(), none.clone(), None),
            ("strait label", Some(&strait), none.clone(), none.clone(), None),
            (
                "disabled",
                Some(&disabled),
                pod_label_true.clone(),
                none.clone(),
                Some(Skip::NamespaceDisabled),
            ),
            (
                "disabled wins",
                Some(&split),
                none.clone(),
                none.clone(),
                Some(Skip::NamespaceDisabled),
            ),
            (
                "other value",
                Some(&odd),
                pod_label_true.clone(),
                none.clone(),
                Some(Skip::NotSelected),
            ),
            (
                "unlabeled",
                Some(&none),
                none.clone(),
                none.clone(),
                Some(Skip::NotSelected),
            ),
            (
                "unlabeled, pod label",
                Some(&none),
                pod_label_true.clone(),
                none.clone(),
                None,
            ),
            // The API server's object selector sees labels only.
            (
                "unlabeled, pod annotation",
                Some(&none),
                none.clone(),
                pod_label_true.clone(),
                Some(Skip::NotSelected),
            ),
            (
                "opt-out label",
                Some(&enabled),
                pod_label_false.clone(),
                none.clone(),
                Some(Skip::OptedOut),
            ),
            (
                "opt-out annotation",
                Some(&enabled),
                none.clone(),
                pod_label_false.clone(),
                Some(Skip::OptedOut),
            ),
            (
                "the label wins",
                Some(&enabled),
                pod_label_true.clone(),
                pod_label_false.clone(),
                None,
            ),
            ("unknown namespace", None, none.clone(), none.clone(), None),
            (
                "unknown namespace, opt-out",
                None,
                none.clone(),
                pod_label_false.clone(),
                Some(Skip::OptedOut),
            ),
            (
                "odd pod value",
                Some(&enabled),
                labels(&[(INJECT_LABEL, "maybe")]),
                none.clone(),
                None,
            ),
        ];
        for (name, namespace, pod_labels, annotations, expected) in cases {
            let pod = Pod {
                labels: pod_labels.clone(),
                annotations: annotations.clone(),
                ..Pod::default()
            };
            assert_eq!(skip(&pod, "shop", *namespace), *expected, "{name}");
        }
    }

    #[test]
    fn some_pods_are_never_injected() {
        let enabled = labels(&[(ISTIO_NAMESPACE_LABEL, "enabled")]);
        let host = Pod {
            host_network: true,
            ..Pod::default()
        };
        assert_eq!(skip(&host, "shop", Some(&enabled)), Some(Skip::HostNetwork));
        assert_eq!(skip(&host, "shop", None), Some(Skip::HostNetwork));
        let plain = Pod::default();
        assert_eq!(
            skip(&plain, "kube-system", Some(&enabled)),
            Some(Skip::IgnoredNamespace)
        );
        let injected = Pod {
            has_strait_container: true,
            ..Pod::default()
        };
        assert_eq!(skip(&injected, "shop", None), Some(Skip::AlreadyInjected));
        let annotated = Pod {
            annotations: labels(&[(STATUS_ANNOTATION, "{}")]),
            ..Pod::default()
        };
        assert_eq!(skip(&annotated, "shop", None), Some(Skip::AlreadyInjected));
    }
}
