//! What several kinds share when Istio checks which workloads or resources they
//! apply to: workload selectors, policy `targetRef(s)`, label sets and `exportTo`.
//! Each check names the Istio source it follows (pkg/config/validation and the CRD
//! rules of istio.io/api).

use std::collections::{BTreeMap, HashSet};

use crate::bundle::Entry;
use crate::diag::Code;
use crate::hosts::is_label;
use crate::resources::security::{PolicyTargetReference, WorkloadSelector};

use super::Compiler;

/// Kinds a policy may target, as (canonical group, kind): Istio's
/// `allowedTargetRefs` (validation.go, `validatePolicyTargetReference`).
const TARGET_KINDS: &[(&str, &str)] = &[
    ("core", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

/// Why a label key or value is refused (Istio's `labels.Instance.Validate`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// Not `[prefix/]name` with a DNS-1123 subdomain prefix and a qualified name.
    #[error("invalid label key {0:?}")]
    Key(String),
    /// Not a qualified name (or empty).
    #[error("invalid label value {0:?}")]
    Value(String),
}

/// A qualified name: alphanumerics at both ends, `-`, `_` and `.` inside.
fn is_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A label key: `[dns-subdomain/]name`, the prefix at most 253 bytes, the name 63
/// (labels/instance.go, `validateTagKey`).
pub fn check_label_key(key: &str) -> Result<(), LabelError> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && p.split('.').all(is_label));
    if prefix_ok && name.len() <= 63 && is_qualified_name(name) {
        Ok(())
    } else {
        Err(LabelError::Key(key.to_string()))
    }
}

/// A label value: empty or a qualified name (labels/instance.go, `Instance.Validate`).
pub fn check_label_value(value: &str) -> Result<(), LabelError> {
    if value.is_empty() || is_qualified_name(value) {
        Ok(())
    } else {
        Err(LabelError::Value(value.to_string()))
    }
}

impl Compiler<'_> {
    /// Labels given to endpoints or subsets: Kubernetes label syntax
    /// (labels/instance.go, `Instance.Validate`).
    pub(super) fn labels(&mut self, e: &Entry, field: &str, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            if let Err(err) = check_label_key(k).and_then(|()| check_label_value(v)) {
                self.err(e, Code::InvalidValue, &format!("{field}.{k}"), err.to_string());
            }
        }
    }

    /// A security policy's `selector`: no empty key, no `*`, values of at most 63
    /// characters; a selector without labels selects every workload, which Istio
    /// accepts with a warning (validation.go, `validateWorkloadSelector`; CRD rules
    /// of `selector.matchLabels`).
    pub(super) fn workload_selector(&mut self, e: &Entry, field: &str, selector: Option<&WorkloadSelector>) {
        let Some(sel) = selector else { return };
        self.selector_labels(e, &format!("{field}.matchLabels"), &sel.match_labels);
        if sel.match_labels.is_empty() {
            self.warn(
                e,
                Code::InvalidValue,
                field,
                "workload selector specified without labels: it selects every workload of the namespace",
            );
        }
    }

    /// Label keys and values of a selector (`matchLabels`, or a ServiceEntry's
    /// `workloadSelector.labels`): not empty, no `*`, values of at most 63 characters.
    pub(super) fn selector_labels(&mut self, e: &Entry, field: &str, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            let kf = format!("{field}.{k}");
            if k.is_empty() {
                self.err(e, Code::InvalidValue, field, "empty key is not supported in selector");
            } else if k.contains('*') {
                self.err(e, Code::InvalidValue, &kf, "wildcard not allowed in label key match");
            }
            if v.contains('*') {
                self.err(e, Code::InvalidValue, &kf, "wildcard not allowed in label value match");
            } else if v.len() > 63 {
                self.err(e, Code::InvalidValue, &kf, "label value longer than 63 characters");
            }
        }
    }

    /// `selector`, `targetRef` and `targetRefs` of a security policy: at most one of
    /// them, and each reference well formed (validation.go,
    /// `validateOneOfSelectorType`, `validatePolicyTargetReference`; CRD rules of
    /// `targetRef`).
    pub(super) fn policy_targets(
        &mut self,
        e: &Entry,
        selector: Option<&WorkloadSelector>,
        target_ref: Option<&PolicyTargetReference>,
        target_refs: &[PolicyTargetReference],
    ) {
        let set = [selector.is_some(), target_ref.is_some(), !target_refs.is_empty()];
        if set.iter().filter(|s| **s).count() > 1 {
            self.err(
                e,
                Code::Conflict,
                "spec",
                "only one of selector, targetRef and targetRefs can be set",
            );
        }
        self.workload_selector(e, "spec.selector", selector);
        if let Some(r) = target_ref {
            self.target_ref(e, "spec.targetRef", r);
        }
        if target_refs.len() > 16 {
            self.err(e, Code::InvalidValue, "spec.targetRefs", "at most 16 targetRefs");
        }
        for (i, r) in target_refs.iter().enumerate() {
            self.target_ref(e, &format!("spec.targetRefs[{i}]"), r);
        }
    }

    fn target_ref(&mut self, e: &Entry, field: &str, r: &PolicyTargetReference) {
        let name = r.name.as_deref().unwrap_or("");
        if name.is_empty() {
            self.err(
                e,
                Code::Required,
                &format!("{field}.name"),
                "targetRef name must be set",
            );
        } else if name.len() > 253 {
            self.err(
                e,
                Code::InvalidValue,
                &format!("{field}.name"),
                "longer than 253 characters",
            );
        }
        if r.namespace.as_deref().is_some_and(|n| !n.is_empty()) {
            self.err(
                e,
                Code::InvalidValue,
                &format!("{field}.namespace"),
                "cross namespace referencing is not supported: targetRef namespace must not be set",
            );
        }
        let kind = r.kind.as_deref().unwrap_or("");
        if kind.is_empty() {
            self.err(
                e,
                Code::Required,
                &format!("{field}.kind"),
                "targetRef kind must be set",
            );
            return;
        }
        let group = r.group.as_deref().unwrap_or("");
        let canonical = if group.is_empty() { "core" } else { group };
        if !TARGET_KINDS.contains(&(canonical, kind)) {
            let allowed: Vec<String> = TARGET_KINDS.iter().map(|(g, k)| format!("{g}/{k}")).collect();
            self.err(
                e,
                Code::InvalidValue,
                field,
                format!(
                    "targetRef must be to one of {} but was {group}/{kind}",
                    allowed.join(", ")
                ),
            );
        }
    }

    /// `exportTo`: `.`, `*` or namespace names, each once; `*` alone; `~` (no one)
    /// only for ServiceEntries, and alone; a DestinationRule with a workload
    /// selector only to its own namespace (validation.go, `validateExportTo`).
    pub(super) fn export_to(&mut self, e: &Entry, export_to: &[String], service_entry: bool, dr_selector: bool) {
        let ns = e.resource.namespace.as_str();
        let mut seen: HashSet<&str> = HashSet::new();
        for (i, x) in export_to.iter().enumerate() {
            let f = format!("spec.exportTo[{i}]");
            let key = if x == "." { ns } else { x.as_str() };
            if seen.contains(key) {
                let msg = if key != x {
                    format!("duplicate entries in exportTo: . and the namespace {ns}")
                } else {
                    format!("duplicate entry {x} in exportTo")
                };
                self.err(e, Code::Conflict, &f, msg);
                continue;
            }
            match key {
                "*" => {}
                "~" if service_entry => {}
                "~" => {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &f,
                        "exportTo ~ (none) is only allowed for ServiceEntries",
                    );
                    continue;
                }
                k if !is_label(k) => {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &f,
                        "only ., *, or a namespace name (a DNS-1123 label) is allowed as exportTo entry",
                    );
                    continue;
                }
                _ => {}
            }
            seen.insert(key);
        }
        if dr_selector && !seen.is_empty() {
            if !seen.contains(ns) {
                self.err(
                    e,
                    Code::InvalidValue,
                    "spec.exportTo",
                    "a DestinationRule with a workload selector cannot be exported beyond its namespace",
                );
            } else if seen.len() > 1 {
                self.err(
                    e,
                    Code::InvalidValue,
                    "spec.exportTo",
                    "a DestinationRule with a workload selector cannot have several exportTo entries",
                );
            }
        }
        if seen.contains("*") && export_to.len() > 1 {
            self.err(
                e,
                Code::Conflict,
                "spec.exportTo",
                "cannot have both public (*) and other exportTo values",
            );
        }
        if seen.contains("~") && export_to.len() > 1 {
            self.err(
                e,
                Code::Conflict,
                "spec.exportTo",
                "cannot export a ServiceEntry to no one (~) and someone",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_syntax_is_kubernetes_syntax() {
        for ok in ["app", "app.kubernetes.io/name", "a_b.c-d", "x/y"] {
            assert_eq!(check_label_key(ok), Ok(()), "{ok}");
        }
        for bad in ["", "-a", "a-", "a/b/c", "UPPER_/x", "a b", &"k".repeat(64)] {
            assert!(check_label_key(bad).is_err(), "{bad}");
        }
        for ok in ["", "v1", "a.b_c-d"] {
            assert_eq!(check_label_value(ok), Ok(()), "{ok}");
        }
        for bad in ["-v", "v-", "a b", "a/b"] {
            assert!(check_label_value(bad).is_err(), "{bad}");
        }
    }
}
