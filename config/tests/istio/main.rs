//! Table tests of the rules Istio enforces on each kind it validates, one module
//! per kind: each case is YAML and what Strait must say about it, an error with
//! its code and field path, a warning Istio gives as a warning, or acceptance.
//! Each rule names its Istio source (istio/istio pkg/config/validation, or the
//! CRD rules of istio.io/api) beside its cases.

mod authorization_policy;
mod destination_rule;
mod gateway;
mod peer_authentication;
mod request_authentication;
mod service_entry;
mod virtual_service;
mod workload_entry;

use strait_config::bundle::{load_text, Loaded};
use strait_config::pipeline::checks;
use strait_config::{Code, Diagnostic};

/// What Strait must say about a case.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// No error (warnings allowed).
    Accepted,
    /// Exactly one error, with this code at this field.
    Error(Code, &'static str),
    /// No error, and a warning with this code at this field.
    Warning(Code, &'static str),
}

pub use Expect::{Accepted, Error, Warning};

/// Every diagnostic of `yaml` before translation.
pub fn diagnostics(yaml: &str) -> Vec<Diagnostic> {
    let mut loaded = Loaded::default();
    load_text(&mut loaded, "t.yaml", yaml);
    checks(&loaded)
}

/// A resource of `kind` (`group/version` in `api`) with `spec` written after `spec:`
/// (a flow mapping, or a block starting on the next line).
pub fn resource(api: &str, kind: &str, spec: &str) -> String {
    format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: r, namespace: shop}}\nspec: {spec}\n")
}

/// Runs a table: every case that does not get what it expects is reported, together.
pub fn run(table: &[(String, Expect)]) {
    let mut failures = Vec::new();
    for (yaml, expect) in table {
        let diags = diagnostics(yaml);
        let errors: Vec<&Diagnostic> = diags.iter().filter(|d| d.is_error()).collect();
        let ok = match expect {
            Accepted => errors.is_empty(),
            Error(code, field) => {
                errors.len() == 1 && errors[0].code == *code && errors[0].field.as_deref() == Some(*field)
            }
            Warning(code, field) => {
                errors.is_empty()
                    && diags
                        .iter()
                        .any(|d| !d.is_error() && d.code == *code && d.field.as_deref() == Some(*field))
            }
        };
        if !ok {
            let shown: Vec<String> = diags.iter().map(ToString::to_string).collect();
            failures.push(format!(
                "--- expected {expect:?} for\n{yaml}got:\n  {}",
                shown.join("\n  ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
