//! Istio's mesh configuration (the `mesh` key of the `istio` ConfigMap, or a file
//! of the same shape): the settings that apply to every proxy. Strait reads those
//! it acts on and notes the rest.

use std::path::Path;

use crate::diag::{Code, Diagnostic, Severity};
use crate::path::Normalization;
use serde_json::Value;

use crate::yaml::{parse_documents, Document, Position};

/// What happens to traffic for hosts the registry does not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutboundMode {
    /// Istio's default: passed on (at a gateway: 503, as there is no cluster).
    #[default]
    AllowAny,
    /// Refused with 502, as Envoy's BlackHoleCluster does.
    RegistryOnly,
}

/// The mesh settings Strait uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeshConfig {
    /// `outboundTrafficPolicy.mode`.
    pub outbound: OutboundMode,
    /// `pathNormalization.normalization` (BASE by default).
    pub path_normalization: Normalization,
    /// `defaultConfig.gatewayTopology.numTrustedProxies`: proxies in front of the
    /// gateway whose `x-forwarded-for` entries are believed.
    pub num_trusted_proxies: u32,
    /// `extensionProviders` of kind `envoyExtAuthzHttp`.
    pub ext_authz: Vec<crate::ext_authz::Provider>,
    /// `acmeIssuers` (Strait's): ACME CAs Gateways name in `strait.io/acme`.
    pub acme_issuers: Vec<crate::acme::Issuer>,
}

/// Fields of the mesh config Strait reads; others get a note.
const KNOWN: &[&str] = &[
    "outboundTrafficPolicy",
    "pathNormalization",
    "defaultConfig",
    "extensionProviders",
    "acmeIssuers",
];

fn diag(file: &str, severity: Severity, code: Code, position: Position, field: &str, message: String) -> Diagnostic {
    Diagnostic {
        severity,
        code,
        file: file.to_string(),
        position,
        resource: None,
        field: Some(field.to_string()),
        message,
    }
}

/// The setting at the dotted `path`, read by `parse`; a value it refuses is an error
/// saying the value is not `expected`.
fn setting<T>(
    doc: &Document,
    file: &str,
    path: &str,
    expected: &str,
    parse: impl Fn(&Value) -> Option<T>,
    errors: &mut Vec<Diagnostic>,
) -> Option<T> {
    let value = path.split('.').try_fold(&doc.value, |v, key| v.get(key))?;
    let parsed = parse(value);
    if parsed.is_none() {
        errors.push(diag(
            file,
            Severity::Error,
            Code::InvalidValue,
            doc.spans.locate(path),
            path,
            format!("{value} is not {expected}"),
        ));
    }
    parsed
}

/// Reads a mesh config file: errors reject it, notes say what is not used.
pub fn load(path: &Path) -> Result<(MeshConfig, Vec<Diagnostic>), Vec<Diagnostic>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![diag(
            &file,
            Severity::Error,
            Code::Io,
            Position::default(),
            "",
            format!("cannot read: {e}"),
        )]
    })?;
    parse(&file, &text)
}

/// Parses mesh config text (see `load`).
pub fn parse(file: &str, text: &str) -> Result<(MeshConfig, Vec<Diagnostic>), Vec<Diagnostic>> {
    let docs = parse_documents(text)
        .map_err(|e| vec![diag(file, Severity::Error, Code::Syntax, e.position, "", e.message)])?;
    let Some(doc) = docs.into_iter().next() else {
        return Ok((MeshConfig::default(), Vec::new()));
    };
    let mut notes = Vec::new();
    let mut errors = Vec::new();
    let mut mesh = MeshConfig::default();
    let Some(map) = doc.value.as_object() else {
        return Err(vec![diag(
            file,
            Severity::Error,
            Code::Schema,
            doc.spans.locate(""),
            "",
            "the mesh config must be a mapping".into(),
        )]);
    };
    for key in map.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        notes.push(diag(
            file,
            Severity::Note,
            Code::NotEnforced,
            doc.spans.locate(key),
            key,
            format!("{key} is not used by this version of Strait"),
        ));
    }
    let outbound = |v: &Value| match v.as_str()? {
        "ALLOW_ANY" => Some(OutboundMode::AllowAny),
        "REGISTRY_ONLY" => Some(OutboundMode::RegistryOnly),
        _ => None,
    };
    if let Some(m) = setting(
        &doc,
        file,
        "outboundTrafficPolicy.mode",
        "one of ALLOW_ANY, REGISTRY_ONLY",
        outbound,
        &mut errors,
    ) {
        mesh.outbound = m;
    }
    if let Some(n) = setting(
        &doc,
        file,
        "pathNormalization.normalization",
        "one of NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES",
        |v| v.as_str().and_then(Normalization::from_name),
        &mut errors,
    ) {
        mesh.path_normalization = n;
    }
    if let Some(n) = setting(
        &doc,
        file,
        "defaultConfig.gatewayTopology.numTrustedProxies",
        "a count",
        |v| v.as_u64().and_then(|n| u32::try_from(n).ok()),
        &mut errors,
    ) {
        mesh.num_trusted_proxies = n;
    }
    let issuers = map.get("acmeIssuers").and_then(Value::as_array);
    for (i, v) in issuers.into_iter().flatten().enumerate() {
        match crate::acme::parse_issuer(v) {
            Ok(issuer) => mesh.acme_issuers.push(issuer),
            Err((f, message)) => {
                let path = format!("acmeIssuers[{i}].{f}");
                errors.push(diag(
                    file,
                    Severity::Error,
                    Code::InvalidValue,
                    doc.spans.locate(&path),
                    &path,
                    message,
                ));
            }
        }
    }
    let providers = map.get("extensionProviders").and_then(Value::as_array);
    for (i, p) in providers.into_iter().flatten().enumerate() {
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        let field = format!("extensionProviders[{i}]");
        match p.get("envoyExtAuthzHttp") {
            Some(http) => match crate::ext_authz::parse(name, http) {
                Ok(provider) => mesh.ext_authz.push(provider),
                Err((f, message)) => {
                    let path = format!("{field}.envoyExtAuthzHttp.{f}");
                    errors.push(diag(
                        file,
                        Severity::Error,
                        Code::InvalidValue,
                        doc.spans.locate(&path),
                        &path,
                        message,
                    ));
                }
            },
            None => notes.push(diag(
                file,
                Severity::Note,
                Code::NotEnforced,
                doc.spans.locate(&field),
                &field,
                format!("extension provider {name:?} is not of a kind this version of Strait uses (envoyExtAuthzHttp)"),
            )),
        }
    }
    if errors.is_empty() {
        Ok((mesh, notes))
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_outbound_policy_and_notes_the_rest() {
        let (mesh, notes) = parse(
            "mesh.yaml",
            "accessLogFile: /dev/stdout\noutboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n",
        )
        .expect("valid");
        assert_eq!(mesh.outbound, OutboundMode::RegistryOnly);
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].field.as_deref(), Some("accessLogFile"));
        let errors = parse("mesh.yaml", "outboundTrafficPolicy:\n  mode: SOMETIMES\n").expect_err("invalid");
        assert_eq!((errors[0].position.line, errors[0].position.column), (2, 3));
        assert_eq!(parse("mesh.yaml", "").expect("empty").0, MeshConfig::default());
    }

    #[test]
    fn reads_ext_authz_providers() {
        let text = "extensionProviders:\n- name: authz\n  envoyExtAuthzHttp: {service: authz.foo.svc.cluster.local, port: 9000}\n- name: zipkin\n  zipkin: {service: zipkin, port: 9411}\n";
        let (mesh, notes) = parse("mesh.yaml", text).expect("valid");
        assert_eq!(mesh.ext_authz.len(), 1);
        assert_eq!(
            (mesh.ext_authz[0].name.as_str(), mesh.ext_authz[0].port),
            ("authz", 9000)
        );
        assert_eq!(notes[0].field.as_deref(), Some("extensionProviders[1]"));
        let errors = parse(
            "mesh.yaml",
            "extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {port: 1}\n",
        )
        .expect_err("no service");
        assert_eq!(
            errors[0].field.as_deref(),
            Some("extensionProviders[0].envoyExtAuthzHttp.service")
        );
    }
}
