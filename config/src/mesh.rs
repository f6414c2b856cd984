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
    /// `accessLogFile`: where access logs go (None: off, Istio's default).
    pub access_log_file: Option<String>,
    /// `accessLogEncoding: JSON` (else TEXT).
    pub access_log_json: bool,
    /// `extensionProviders` of kind `opentelemetry`.
    pub tracing_providers: Vec<crate::tracing::Provider>,
    /// Tracing when it is on: `enableTracing` with the provider `defaultProviders.tracing`
    /// selects and `defaultConfig.tracing.sampling`.
    pub tracing: Option<crate::tracing::Tracing>,
}

/// Fields of the mesh config Strait reads; others get a note.
const KNOWN: &[&str] = &[
    "outboundTrafficPolicy",
    "pathNormalization",
    "defaultConfig",
    "extensionProviders",
    "acmeIssuers",
    "defaultProviders",
    "enableTracing",
    "accessLogFile",
    "accessLogEncoding",
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

/// A diagnostic on the field at `path` of the mesh config.
fn at(doc: &Document, file: &str, severity: Severity, code: Code, path: &str, message: String) -> Diagnostic {
    diag(file, severity, code, doc.spans.locate(path), path, message)
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
        errors.push(at(
            doc,
            file,
            Severity::Error,
            Code::InvalidValue,
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
        return Err(vec![at(
            &doc,
            file,
            Severity::Error,
            Code::Schema,
            "",
            "the mesh config must be a mapping".into(),
        )]);
    };
    for key in map.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        notes.push(at(
            &doc,
            file,
            Severity::Note,
            Code::NotEnforced,
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
    mesh.access_log_file = setting(
        &doc,
        file,
        "accessLogFile",
        "a file path",
        |v| v.as_str().map(str::to_string),
        &mut errors,
    )
    .filter(|f| !f.is_empty());
    if let Some(json) = setting(
        &doc,
        file,
        "accessLogEncoding",
        "one of TEXT, JSON",
        |v| match v.as_str()? {
            "TEXT" => Some(false),
            "JSON" => Some(true),
            _ => None,
        },
        &mut errors,
    ) {
        mesh.access_log_json = json;
    }
    let issuers = map.get("acmeIssuers").and_then(Value::as_array);
    for (i, v) in issuers.into_iter().flatten().enumerate() {
        match crate::acme::parse_issuer(v) {
            Ok(issuer) => mesh.acme_issuers.push(issuer),
            Err((f, message)) => {
                let path = format!("acmeIssuers[{i}].{f}");
                errors.push(at(&doc, file, Severity::Error, Code::InvalidValue, &path, message));
            }
        }
    }
    let providers = map.get("extensionProviders").and_then(Value::as_array);
    let mut provider_names = Vec::new();
    for (i, p) in providers.into_iter().flatten().enumerate() {
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        let field = format!("extensionProviders[{i}]");
        provider_names.push(name);
        if let Some(otel) = p.get("opentelemetry") {
            match crate::tracing::parse_provider(name, otel) {
                Ok(provider) => mesh.tracing_providers.push(provider),
                Err((f, message)) => {
                    let path = format!("{field}.opentelemetry.{f}");
                    errors.push(at(&doc, file, Severity::Error, Code::InvalidValue, &path, message));
                }
            }
            for f in crate::tracing::unused_fields(otel) {
                let path = format!("{field}.opentelemetry.{f}");
                notes.push(at(
                    &doc,
                    file,
                    Severity::Note,
                    Code::NotEnforced,
                    &path,
                    format!("{f} is not used by this version of Strait"),
                ));
            }
            continue;
        }
        match p.get("envoyExtAuthzHttp") {
            Some(http) => match crate::ext_authz::parse(name, http) {
                Ok(provider) => mesh.ext_authz.push(provider),
                Err((f, message)) => {
                    let path = format!("{field}.envoyExtAuthzHttp.{f}");
                    errors.push(at(&doc, file, Severity::Error, Code::InvalidValue, &path, message));
                }
            },
            None => notes.push(at(&doc, file, Severity::Note, Code::NotEnforced, &field, format!("extension provider {name:?} is not of a kind this version of Strait uses (envoyExtAuthzHttp, opentelemetry)"))),
        }
    }
    tracing_settings(&doc, file, &provider_names, &mut mesh, &mut notes, &mut errors);
    if errors.is_empty() {
        Ok((mesh, notes))
    } else {
        Err(errors)
    }
}

/// Turns tracing on as Istio does: `enableTracing` (true by default) and the first
/// provider `defaultProviders.tracing` names, sampled at `defaultConfig.tracing.sampling`.
fn tracing_settings(
    doc: &Document,
    file: &str,
    provider_names: &[&str],
    mesh: &mut MeshConfig,
    notes: &mut Vec<Diagnostic>,
    errors: &mut Vec<Diagnostic>,
) {
    let sampling = setting(
        doc,
        file,
        "defaultConfig.tracing.sampling",
        "a percentage from 0 to 100",
        crate::tracing::parse_sampling,
        errors,
    )
    .unwrap_or(crate::tracing::DEFAULT_SAMPLING);
    let enabled = setting(doc, file, "enableTracing", "true or false", Value::as_bool, errors);
    let tracing_config = doc.value.get("defaultConfig").and_then(|d| d.get("tracing"));
    for key in tracing_config
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.keys())
    {
        if key != "sampling" {
            let path = format!("defaultConfig.tracing.{key}");
            notes.push(at(
                doc,
                file,
                Severity::Note,
                Code::NotEnforced,
                &path,
                format!("{path} is not used by this version of Strait (only opentelemetry providers are)"),
            ));
        }
    }
    let selected = doc.value.get("defaultProviders").and_then(|d| d.get("tracing"));
    let names: Vec<&str> = match selected {
        None => Vec::new(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        // Istio's field is a list; a single name is taken as a list of one.
        Some(Value::String(s)) => vec![s.as_str()],
        Some(other) => {
            errors.push(at(
                doc,
                file,
                Severity::Error,
                Code::InvalidValue,
                "defaultProviders.tracing",
                format!("{other} is not a list of provider names"),
            ));
            Vec::new()
        }
    };
    for (i, name) in names.iter().enumerate() {
        let path = format!("defaultProviders.tracing[{i}]");
        let locate = doc.spans.locate(&path);
        if !provider_names.contains(name) {
            errors.push(diag(
                file,
                Severity::Error,
                Code::ReferenceNotFound,
                locate,
                &path,
                format!("no extension provider is named {name:?}"),
            ));
        } else if i > 0 {
            notes.push(diag(
                file,
                Severity::Note,
                Code::NotEnforced,
                locate,
                &path,
                format!("only the first tracing provider is used; {name:?} is not"),
            ));
        } else if let Some(p) = mesh.tracing_providers.iter().find(|p| p.name == *name) {
            if enabled != Some(false) {
                mesh.tracing = Some(crate::tracing::Tracing {
                    provider: p.clone(),
                    sampling,
                });
            }
        } else {
            notes.push(diag(
                file,
                Severity::Note,
                Code::NotEnforced,
                locate,
                &path,
                format!("tracing provider {name:?} is not an opentelemetry provider: no spans are exported"),
            ));
        }
    }
    if enabled == Some(true) && names.is_empty() {
        notes.push(at(
            doc,
            file,
            Severity::Note,
            Code::NotEnforced,
            "enableTracing",
            "no defaultProviders.tracing names an opentelemetry provider: no spans are exported".into(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_outbound_policy_and_notes_the_rest() {
        let (mesh, notes) = parse(
            "mesh.yaml",
            "accessLogFile: /dev/stdout\naccessLogFormat: '%START_TIME%'\noutboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n",
        )
        .expect("valid");
        assert_eq!(mesh.outbound, OutboundMode::RegistryOnly);
        assert_eq!(mesh.access_log_file.as_deref(), Some("/dev/stdout"));
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].field.as_deref(), Some("accessLogFormat"));
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

    const OTEL: &str = "extensionProviders:\n- name: otel\n  opentelemetry: {service: otel.obs.svc.cluster.local, port: 4317}\n- name: zipkin\n  zipkin: {service: zipkin, port: 9411}\n";

    #[test]
    fn tracing_needs_a_default_provider() {
        let (mesh, _) = parse("mesh.yaml", OTEL).expect("valid");
        assert_eq!(mesh.tracing_providers.len(), 1);
        assert_eq!(mesh.tracing, None);
        let text = format!("{OTEL}defaultProviders:\n  tracing: [otel]\n");
        let (mesh, _) = parse("mesh.yaml", &text).expect("valid");
        let tracing = mesh.tracing.expect("on");
        assert_eq!((tracing.provider.port, tracing.sampling), (4317, 1.0));
        let text = format!("{OTEL}defaultProviders:\n  tracing: [otel]\ndefaultConfig:\n  tracing:\n    sampling: 25.5\n    zipkin: {{address: z:9411}}\n");
        let (mesh, notes) = parse("mesh.yaml", &text).expect("valid");
        assert_eq!(mesh.tracing.map(|t| t.sampling), Some(25.5));
        assert_eq!(notes[1].field.as_deref(), Some("defaultConfig.tracing.zipkin"));
        let text = format!("{OTEL}enableTracing: false\ndefaultProviders:\n  tracing: [otel]\n");
        assert_eq!(parse("mesh.yaml", &text).expect("valid").0.tracing, None);
    }

    #[test]
    fn tracing_diagnostics_name_the_field() {
        let text = format!("{OTEL}defaultProviders:\n  tracing: [zipkin]\nenableTracing: true\n");
        let (mesh, notes) = parse("mesh.yaml", &text).expect("valid");
        assert_eq!(mesh.tracing, None);
        assert!(notes
            .iter()
            .any(|n| n.field.as_deref() == Some("defaultProviders.tracing[0]")));
        let text = format!("{OTEL}defaultProviders:\n  tracing: [jaeger]\n");
        let errors = parse("mesh.yaml", &text).expect_err("unknown provider");
        assert_eq!(errors[0].field.as_deref(), Some("defaultProviders.tracing[0]"));
        assert_eq!(errors[0].code, Code::ReferenceNotFound);
        let text =
            format!("{OTEL}defaultProviders:\n  tracing: [otel]\ndefaultConfig:\n  tracing:\n    sampling: 150\n");
        let errors = parse("mesh.yaml", &text).expect_err("bad sampling");
        assert_eq!(errors[0].field.as_deref(), Some("defaultConfig.tracing.sampling"));
        assert_eq!(errors[0].position.line, 10);
        let errors = parse("mesh.yaml", "enableTracing: maybe\n").expect_err("bad flag");
        assert_eq!(errors[0].field.as_deref(), Some("enableTracing"));
        let errors = parse(
            "mesh.yaml",
            "extensionProviders:\n- name: o\n  opentelemetry: {service: c, port: 1, http: {timeout: x}}\n",
        )
        .expect_err("bad timeout");
        assert_eq!(
            errors[0].field.as_deref(),
            Some("extensionProviders[0].opentelemetry.http.timeout")
        );
    }
}
