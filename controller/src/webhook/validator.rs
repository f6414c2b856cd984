//! `POST /validate`: the validating webhook. An Istio resource being created or
//! updated is checked by the same checks `straitctl analyze` and the proxies run on
//! a resource by itself (its schema, its fields, its own rules); one with errors is
//! refused with their messages (`kubectl apply` prints them), one with warnings is
//! stored and the warnings are returned to the client, as Istio's validator does.
//! What depends on other resources (a destination host no Service defines yet) is
//! left to `analyze`: resources arrive in any order.

use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::core::DynamicObject;
use strait_config::bundle::{load_text, Loaded};
use strait_config::{Code, Diagnostic, Severity};

use super::Admission;

/// The validation webhook.
#[derive(Debug, Default)]
pub struct Validator;

/// A diagnostic as the API server's client shows it: no file position (the object
/// came from the API server), the field and the message.
fn render(d: &Diagnostic) -> String {
    let field = d.field.as_deref().map_or(String::new(), |f| format!(" {f}"));
    let severity = if d.severity == Severity::Error {
        "error"
    } else {
        "warning"
    };
    format!("{severity}[{}]{field}: {}", d.code.as_str(), d.message)
}

/// Findings that are about other resources rather than this one.
fn about_others(d: &Diagnostic) -> bool {
    matches!(d.code, Code::ReferenceNotFound | Code::Conflict)
}

/// The errors and warnings of `object` (JSON) checked on its own.
pub fn check(kind: &str, namespace: &str, name: &str, object: &str) -> (Vec<String>, Vec<String>) {
    let mut loaded = Loaded::default();
    load_text(&mut loaded, &format!("kubernetes/{kind}/{namespace}/{name}"), object);
    let diags = strait_config::pipeline::checks(&loaded);
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error && !about_others(d))
        .map(render)
        .collect();
    let warnings = diags
        .iter()
        .filter(|d| d.severity == Severity::Warning && !about_others(d))
        .map(render)
        .collect();
    (errors, warnings)
}

#[async_trait::async_trait]
impl Admission for Validator {
    async fn admit(&self, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        let allowed = AdmissionResponse::from(request);
        let (Operation::Create | Operation::Update, Some(object)) = (&request.operation, &request.object) else {
            return allowed;
        };
        let text = match serde_json::to_string(object) {
            Ok(t) => t,
            Err(e) => return allowed.deny(format!("validation: {e}")),
        };
        let kind = &request.kind.kind;
        let namespace = request.namespace.as_deref().unwrap_or("default");
        let (errors, warnings) = check(kind, namespace, &request.name, &text);
        if !errors.is_empty() {
            log::info!("refused {kind} {namespace}/{}: {}", request.name, errors.join("; "));
            return allowed.deny(format!(
                "{kind} {namespace}/{} is invalid:\n{}",
                request.name,
                errors.join("\n")
            ));
        }
        let mut response = allowed;
        if !warnings.is_empty() {
            response.warnings = Some(warnings);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_regex_is_an_error_with_its_field_and_an_unknown_host_is_not() {
        let vs = r#"{"apiVersion":"networking.istio.io/v1","kind":"VirtualService",
            "metadata":{"name":"app","namespace":"default","managedFields":[]},
            "spec":{"hosts":["app"],"http":[{"match":[{"uri":{"regex":"(("}}],
            "route":[{"destination":{"host":"nowhere"}}]}]}}"#;
        let (errors, _) = check("VirtualService", "default", "app", vs);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("spec.http[0].match[0].uri.regex"), "{errors:?}");
        let good = vs.replace("((", "^/api");
        let (errors, _) = check("VirtualService", "default", "app", &good);
        assert!(
            errors.is_empty(),
            "a host defined elsewhere (or later) is not this resource's error: {errors:?}"
        );
    }
}
