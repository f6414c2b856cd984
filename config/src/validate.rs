//! Checks across resources, as `istioctl analyze` does them: the same resource
//! defined twice, and two VirtualServices claiming one host on one gateway. Each
//! resource's own checks are the compile stage's.

use std::collections::HashMap;

use crate::bundle::{Bundle, Entry};
use crate::diag::{Code, Diagnostic, Severity};
use crate::hosts::{fqdn, gateway_ref};
use crate::resources::Spec;

/// The cross-resource findings about `bundle`.
pub fn validate(bundle: &Bundle) -> Vec<Diagnostic> {
    let mut v = Validator {
        bundle,
        diags: Vec::new(),
    };
    v.duplicates();
    v.vs_host_conflicts();
    v.diags
}

struct Validator<'a> {
    bundle: &'a Bundle,
    diags: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn err(&mut self, e: &Entry, code: Code, field: &str, msg: impl Into<String>) {
        self.diags.push(e.diag(Severity::Error, code, field, msg));
    }

    fn warn(&mut self, e: &Entry, code: Code, field: &str, msg: impl Into<String>) {
        self.diags.push(e.diag(Severity::Warning, code, field, msg));
    }

    fn duplicates(&mut self) {
        // Keyed by group too: Istio's Gateway and the Gateway API's may share a name.
        let mut seen: HashMap<(&str, &str, &str, &str), &Entry> = HashMap::new();
        for e in &self.bundle.entries {
            let r = &e.resource;
            if let Some(first) = seen.insert((r.group(), r.kind(), &r.namespace, &r.name), e) {
                let msg = format!(
                    "{} {}/{} is also defined at {}:{}",
                    r.kind(),
                    r.namespace,
                    r.name,
                    first.origin.file,
                    first.origin.spans.locate("").line
                );
                self.err(e, Code::DuplicateResource, "metadata.name", msg);
            }
        }
    }

    /// Two VirtualServices bound to the same gateway with the same host: Istio merges
    /// their routes in creation order, which is rarely what was meant.
    fn vs_host_conflicts(&mut self) {
        let mut seen: HashMap<(String, String), &Entry> = HashMap::new();
        let mut found = Vec::new();
        for (e, vs) in self.bundle.of(|s| match s {
            Spec::VirtualService(v) => Some(v),
            _ => None,
        }) {
            let ns = &e.resource.namespace;
            for g in &vs.gateways {
                let Some((gns, gname)) = gateway_ref(g, ns) else {
                    continue;
                };
                for (i, h) in vs.hosts.iter().enumerate() {
                    if let Some(first) = seen.insert((format!("{gns}/{gname}"), fqdn(h, ns)), e) {
                        if !std::ptr::eq(first, e) {
                            found.push((e, i, h.clone(), first.reference().to_string(), format!("{gns}/{gname}")));
                        }
                    }
                }
            }
        }
        for (e, i, h, first, gw) in found {
            self.warn(
                e,
                Code::DuplicateHost,
                &format!("spec.hosts[{i}]"),
                format!("host {h} on gateway {gw} is also routed by {first}; routes are merged in file order"),
            );
        }
    }
}
