//! Loading a folder (or files, or text) into a `Bundle`: typed resources that
//! remember which file, document and line they came from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::diag::{Anchor, Code, Diagnostic, ResourceRef, Severity};
use crate::resources::{kind_info, Body, ObjectMeta, Resource, Spec};
use crate::yaml::{for_each_document, Position, SpanIndex};

/// Where a resource came from.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The file, as given (relative to the folder when loaded from one).
    pub file: Arc<str>,
    /// Positions of the document's fields.
    pub spans: Arc<SpanIndex>,
}

/// A resource and its origin.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The resource.
    pub resource: Resource,
    /// Where it came from.
    pub origin: Origin,
}

impl Entry {
    /// The resource's identity for diagnostics.
    pub fn reference(&self) -> ResourceRef {
        ResourceRef {
            kind: self.resource.kind().to_string(),
            namespace: self.resource.namespace.clone(),
            name: self.resource.name.clone(),
        }
    }

    /// A diagnostic about `field` (a path such as `spec.http[0].route`) of this resource.
    pub fn diag(&self, severity: Severity, code: Code, field: &str, message: impl Into<String>) -> Diagnostic {
        self.anchor(field).diag(severity, code, message)
    }

    /// The place of `field` in this resource, for diagnostics made later.
    pub fn anchor(&self, field: &str) -> Anchor {
        Anchor {
            file: self.origin.file.to_string(),
            position: self.origin.spans.locate(field),
            resource: Some(self.reference()),
            field: (!field.is_empty()).then(|| field.to_string()),
        }
    }
}

/// Every resource of one configuration source.
#[derive(Debug, Clone, Default)]
pub struct Bundle {
    /// Resources in file order.
    pub entries: Vec<Entry>,
    /// The files read.
    pub files: Vec<String>,
}

impl Bundle {
    /// Entries whose spec is of the kind selected by `pick`.
    pub fn of<'a, T: 'a>(
        &'a self,
        pick: impl Fn(&'a Spec) -> Option<&'a T> + 'a,
    ) -> impl Iterator<Item = (&'a Entry, &'a T)> + 'a {
        self.entries
            .iter()
            .filter_map(move |e| pick(&e.resource.spec).map(|s| (e, s)))
    }
}

/// A bundle with what was found while loading it.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The resources that could be read.
    pub bundle: Bundle,
    /// Syntax, envelope, schema and unknown-field findings.
    pub diagnostics: Vec<Diagnostic>,
}

/// Errors reading a configuration folder itself.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The folder cannot be listed.
    #[error("cannot read config folder {path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Loads every `.yaml`, `.yml` and `.json` file under `dir`, recursively, in name order.
/// Entries starting with `.` are skipped (editor files, Kubernetes ConfigMap `..data` links).
pub fn load_dir(dir: &Path) -> Result<Loaded, LoadError> {
    let files = config_files(dir).map_err(|source| LoadError::Folder {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut loaded = Loaded::default();
    for path in files {
        let shown = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
        match std::fs::read(&path) {
            Ok(bytes) => load_bytes(&mut loaded, &shown, &bytes),
            Err(e) => loaded.diagnostics.push(file_diag(
                &shown,
                Code::Io,
                Position::default(),
                format!("cannot read: {e}"),
            )),
        }
        loaded.bundle.files.push(shown);
    }
    Ok(loaded)
}

/// The configuration files under `dir`, in name order: every `.yaml`, `.yml` and
/// `.json`, recursively, skipping names that start with a dot (editor files,
/// Kubernetes ConfigMap `..data` links). Every folder source reads this list.
pub fn config_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    Ok(files)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses one file's content into `loaded`; content that is not UTF-8 (as YAML
/// and JSON must be) is refused with the line and column of its first bad byte.
pub fn load_bytes(loaded: &mut Loaded, file: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => load_text(loaded, file, text),
        Err(e) => {
            let valid = bytes.get(..e.valid_up_to()).unwrap_or_default();
            let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            // The bytes before the bad one are UTF-8, so columns count characters
            // as the YAML parser's positions do.
            let column = String::from_utf8_lossy(valid.get(line_start..).unwrap_or_default())
                .chars()
                .count()
                + 1;
            let position = Position {
                line: valid.iter().filter(|b| **b == b'\n').count() + 1,
                column,
            };
            let bad = bytes.get(e.valid_up_to()).copied().unwrap_or_default();
            loaded.diagnostics.push(file_diag(
                file,
                Code::Syntax,
                position,
                format!("not UTF-8: byte 0x{bad:02x} cannot start or continue a character (YAML and JSON files must be UTF-8)"),
            ));
        }
    }
}

/// Parses one file's text into `loaded`.
pub fn load_text(loaded: &mut Loaded, file: &str, text: &str) {
    let name: Arc<str> = Arc::from(file);
    let Loaded { bundle, diagnostics } = loaded;
    let parsed = for_each_document(text, |doc| {
        let origin = Origin {
            file: name.clone(),
            spans: Arc::new(doc.spans),
        };
        if let Some(entry) = typed_entry(doc.value, origin, diagnostics) {
            bundle.entries.push(entry);
        }
    });
    if let Err(e) = parsed {
        diagnostics.push(file_diag(file, Code::Syntax, e.position, e.message));
    }
}

fn file_diag(file: &str, code: Code, position: Position, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        code,
        file: file.to_string(),
        position,
        resource: None,
        field: None,
        message,
    }
}

fn envelope_diag(origin: &Origin, field: &str, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        code: Code::Envelope,
        file: origin.file.to_string(),
        position: origin.spans.locate(field),
        resource: None,
        field: Some(field.to_string()),
        message,
    }
}

fn typed_entry(mut value: Value, origin: Origin, diags: &mut Vec<Diagnostic>) -> Option<Entry> {
    let Some(obj) = value.as_object_mut() else {
        diags.push(envelope_diag(
            &origin,
            "",
            "a document must be a mapping with apiVersion, kind and metadata".into(),
        ));
        return None;
    };
    let api_version = obj.remove("apiVersion").and_then(|v| v.as_str().map(str::to_string));
    let kind = obj.remove("kind").and_then(|v| v.as_str().map(str::to_string));
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        diags.push(envelope_diag(&origin, "", "missing apiVersion or kind".into()));
        return None;
    };
    if kind == "List" {
        diags.push(envelope_diag(
            &origin,
            "kind",
            "kind List is not supported: write one document per resource, separated by ---".into(),
        ));
        return None;
    }
    let metadata_value = obj.remove("metadata").unwrap_or(Value::Null);
    let mut local = Vec::new();
    let metadata: ObjectMeta = match typed(&metadata_value, "metadata", &origin, None, &mut local) {
        Some(m) => m,
        None => {
            diags.extend(local);
            return None;
        }
    };
    let name = metadata.name.clone().unwrap_or_default();
    let namespace = metadata
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string());
    let reference = ResourceRef {
        kind: kind.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let Some(body) = kind_info(&api_version, &kind) else {
        diags.push(Diagnostic {
            severity: Severity::Note,
            code: Code::UnknownKind,
            file: origin.file.to_string(),
            position: origin.spans.locate("kind"),
            resource: Some(reference),
            field: None,
            message: format!("{api_version} {kind} is not used by Strait; skipped"),
        });
        return None;
    };
    if name.is_empty() {
        diags.push(envelope_diag(
            &origin,
            "metadata",
            format!("{kind} without metadata.name"),
        ));
        return None;
    }
    let r = Some(&reference);
    let spec = match body {
        Body::Spec => {
            obj.remove("status");
            let spec_value = obj.remove("spec").unwrap_or(Value::Null);
            for key in obj.keys() {
                local.push(unknown(&origin, r, key));
            }
            typed_spec(&api_version, &kind, &spec_value, &origin, r, &mut local)
        }
        Body::TopLevel => {
            let body = Value::Object(std::mem::take(obj));
            match kind.as_str() {
                "Secret" => typed(&body, "", &origin, r, &mut local).map(Spec::Secret),
                _ => typed(&body, "", &origin, r, &mut local).map(Spec::EndpointSlice),
            }
        }
        Body::Object => {
            let body = Value::Object(std::mem::take(obj));
            match kind.as_str() {
                "Pod" => lenient(&body, &origin, r, &mut local).map(Spec::Pod),
                _ => lenient(&body, &origin, r, &mut local).map(Spec::Namespace),
            }
        }
    };
    diags.extend(local);
    Some(Entry {
        resource: Resource {
            api_version,
            name,
            namespace,
            metadata,
            spec: spec?,
        },
        origin,
    })
}

fn typed_spec(
    api_version: &str,
    kind: &str,
    v: &Value,
    o: &Origin,
    r: Option<&ResourceRef>,
    d: &mut Vec<Diagnostic>,
) -> Option<Spec> {
    let p = "spec";
    let gateway_api = api_version.starts_with("gateway.networking.k8s.io/");
    Some(match kind {
        "Gateway" if gateway_api => Spec::KubeGateway(typed(v, p, o, r, d)?),
        "GatewayClass" => Spec::GatewayClass(typed(v, p, o, r, d)?),
        "HTTPRoute" => Spec::HttpRoute(typed(v, p, o, r, d)?),
        "GRPCRoute" => Spec::GrpcRoute(typed(v, p, o, r, d)?),
        "TLSRoute" => Spec::TlsRoute(typed(v, p, o, r, d)?),
        "ReferenceGrant" => Spec::ReferenceGrant(typed(v, p, o, r, d)?),
        "Gateway" => Spec::Gateway(typed(v, p, o, r, d)?),
        "VirtualService" => Spec::VirtualService(typed(v, p, o, r, d)?),
        "RateLimit" => Spec::RateLimit(typed(v, p, o, r, d)?),
        "DestinationRule" => Spec::DestinationRule(typed(v, p, o, r, d)?),
        "ServiceEntry" => Spec::ServiceEntry(typed(v, p, o, r, d)?),
        "WorkloadEntry" => Spec::WorkloadEntry(typed(v, p, o, r, d)?),
        "RequestAuthentication" => Spec::RequestAuthentication(typed(v, p, o, r, d)?),
        "AuthorizationPolicy" => Spec::AuthorizationPolicy(typed(v, p, o, r, d)?),
        "PeerAuthentication" => Spec::PeerAuthentication(typed(v, p, o, r, d)?),
        _ => Spec::Service(typed(v, p, o, r, d)?),
    })
}

fn unknown(origin: &Origin, r: Option<&ResourceRef>, path: &str) -> Diagnostic {
    Diagnostic {
        severity: Severity::Warning,
        code: Code::UnknownField,
        file: origin.file.to_string(),
        position: origin.spans.locate(path),
        resource: r.cloned(),
        field: Some(path.to_string()),
        message: "unknown field, ignored".into(),
    }
}

fn join(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (_, true) => prefix.to_string(),
        (true, false) => rest.to_string(),
        (false, false) if rest.starts_with('[') => format!("{prefix}{rest}"),
        _ => format!("{prefix}.{rest}"),
    }
}

/// Deserializes `value` as `T`, reporting unknown fields as warnings and type
/// errors as errors, both with their path under `prefix`.
fn typed<T: DeserializeOwned>(
    value: &Value,
    prefix: &str,
    origin: &Origin,
    r: Option<&ResourceRef>,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let null = Value::Object(Default::default());
    let value = if value.is_null() { &null } else { value };
    let mut ignored = Vec::new();
    let mut track = |path: serde_ignored::Path<'_>| ignored.push(ignored_path(&path));
    let de = serde_ignored::Deserializer::new(value, &mut track);
    let result: Result<T, _> = serde_path_to_error::deserialize(de);
    for path in ignored {
        diags.push(unknown(origin, r, &join(prefix, &path)));
    }
    checked(result, prefix, origin, r, diags)
}

/// Deserializes a whole object Kubernetes wrote (a Pod, a Namespace): the fields
/// Strait does not read are no finding, since no user wrote them; type errors
/// in those it reads still are.
fn lenient<T: DeserializeOwned>(
    value: &Value,
    origin: &Origin,
    r: Option<&ResourceRef>,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    checked(serde_path_to_error::deserialize(value), "", origin, r, diags)
}

/// The value, or an error diagnostic at the path where deserializing it failed.
fn checked<T>(
    result: Result<T, serde_path_to_error::Error<serde_json::Error>>,
    prefix: &str,
    origin: &Origin,
    r: Option<&ResourceRef>,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            let path = join(prefix, &e.path().to_string().trim_start_matches('.').replace("?", ""));
            let path = if path == "." { prefix.to_string() } else { path };
            diags.push(Diagnostic {
                severity: Severity::Error,
                code: Code::Schema,
                file: origin.file.to_string(),
                position: origin.spans.locate(&path),
                resource: r.cloned(),
                field: Some(path),
                message: e.into_inner().to_string(),
            });
            None
        }
    }
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        P::Map { parent, key } => join(&ignored_path(parent), key),
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => ignored_path(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Loaded {
        let mut l = Loaded::default();
        load_text(&mut l, "test.yaml", text);
        l
    }

    #[test]
    fn envelope_defaults_namespace_and_skips_unknown_kinds() {
        let l = load("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  selector: {istio: ingressgateway}\n");
        assert_eq!(l.bundle.entries.len(), 1);
        assert_eq!(l.bundle.entries[0].resource.namespace, "default");
        assert_eq!(l.diagnostics.len(), 1);
        assert_eq!(l.diagnostics[0].severity, Severity::Note);
        assert_eq!(l.diagnostics[0].code, Code::UnknownKind);
    }

    #[test]
    fn unknown_field_is_a_warning_with_position() {
        let l = load("apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: vs}\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: b}\n      wieght: 5\n");
        assert_eq!(l.bundle.entries.len(), 1);
        let d = &l.diagnostics[0];
        assert_eq!(d.code, Code::UnknownField);
        assert_eq!(d.field.as_deref(), Some("spec.http[0].route[0].wieght"));
        assert_eq!((d.position.line, d.position.column), (9, 7));
    }

    #[test]
    fn wrong_type_is_an_error_with_position() {
        let l = load("apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: vs, namespace: shop}\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: b}\n      weight: ninety\n");
        assert!(l.bundle.entries.is_empty());
        let d = &l.diagnostics[0];
        assert_eq!(d.code, Code::Schema);
        assert_eq!(d.field.as_deref(), Some("spec.http[0].route[0].weight"));
        assert_eq!(d.position.line, 9);
        assert_eq!(d.resource.as_ref().map(|r| r.namespace.as_str()), Some("shop"));
        assert!(
            d.to_string()
                .starts_with("test.yaml:9:7: error[schema] VirtualService shop/vs spec.http[0].route[0].weight:"),
            "{d}"
        );
    }

    #[test]
    fn secret_and_endpointslice_bodies_are_top_level() {
        let l = load("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\nstringData: {tls.crt: x, tls.key: y}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e, labels: {kubernetes.io/service-name: svc}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}]\nports: [{name: http, port: 8080}]\n");
        assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
        assert_eq!(l.bundle.entries.len(), 2);
    }

    #[test]
    fn pods_and_namespaces_as_the_api_serves_them_load_without_findings() {
        // What kube-apiserver 1.37 returns (managedFields dropped, as the controller
        // does): every field Strait does not read passes in silence.
        let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-0","namespace":"shop","uid":"5f1c","resourceVersion":"812","creationTimestamp":"2026-11-29T11:00:00Z","labels":{"app":"web","version":"v2"},"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-7d9","uid":"a1","controller":true}]},
            "spec":{"containers":[{"name":"web","image":"example.invalid/web","ports":[{"containerPort":8080,"protocol":"TCP"}],"resources":{},"terminationMessagePath":"/dev/termination-log","imagePullPolicy":"Always"}],"restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst","serviceAccountName":"web","securityContext":{},"schedulerName":"default-scheduler","tolerations":[{"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}],"priority":0,"enableServiceLinks":true,"preemptionPolicy":"PreemptLowerPriority"},
            "status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}],"podIP":"10.1.0.5","podIPs":[{"ip":"10.1.0.5"},{"ip":"fd00::5"}],"qosClass":"BestEffort"}}"#;
        let ns = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop","uid":"9e","resourceVersion":"40","labels":{"kubernetes.io/metadata.name":"shop","istio-injection":"enabled"}},"spec":{"finalizers":["kubernetes"]},"status":{"phase":"Active"}}"#;
        let l = load(&format!("{pod}\n---\n{ns}\n"));
        assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
        let [p, n] = &l.bundle.entries[..] else {
            panic!("two entries: {:?}", l.bundle.entries)
        };
        let Spec::Pod(body) = &p.resource.spec else {
            panic!("a Pod: {:?}", p.resource)
        };
        assert_eq!(body.spec.service_account_name.as_deref(), Some("web"));
        assert_eq!(body.status.pod_ip.as_deref(), Some("10.1.0.5"));
        assert_eq!(body.status.pod_ips.len(), 2);
        assert_eq!(
            p.resource.metadata.labels.get("version").map(String::as_str),
            Some("v2")
        );
        assert_eq!(n.resource.kind(), "Namespace");
        assert_eq!(
            n.resource.metadata.labels.get("istio-injection").map(String::as_str),
            Some("enabled")
        );
        // A field Strait reads, of the wrong type, is still an error at its place.
        let l = load("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {serviceAccountName: [a]}\n");
        assert!(l.bundle.entries.is_empty());
        assert_eq!(
            l.diagnostics[0].field.as_deref(),
            Some("spec.serviceAccountName"),
            "{:?}",
            l.diagnostics
        );
    }

    #[test]
    fn an_alias_bomb_is_refused_at_its_line_and_other_files_still_load() {
        // The issue's file: a valid VirtualService with nine levels of aliases
        // under an unknown key (it grew past 5 GB before copies were bounded).
        let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec:\n  hosts: [a.example.com]\n  http:\n  - route: [{destination: {host: b}}]\n";
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("a-bomb.yaml"),
            format!("{vs}{}", crate::yaml::alias_bomb(9)),
        )
        .expect("write");
        std::fs::write(dir.path().join("b-good.yaml"), vs.replace("name: vs", "name: good")).expect("write");
        let l = load_dir(dir.path()).expect("loads");
        let names: Vec<&str> = l.bundle.entries.iter().map(|e| e.resource.name.as_str()).collect();
        assert_eq!(names, ["good"]);
        assert_eq!(l.diagnostics.len(), 1, "{:?}", l.diagnostics);
        let d = &l.diagnostics[0];
        assert_eq!(
            (d.code, d.file.as_str(), d.position.line),
            (Code::Syntax, "a-bomb.yaml", 13)
        );
        assert!(d.is_error() && d.message.contains("alias bomb"), "{d}");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_located() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Line 3 is `metadata: {name: ét` then a Latin-1 é: column 20, counted in
        // characters (the UTF-8 é before it is two bytes, one column).
        let bytes = b"apiVersion: v1\nkind: Secret\nmetadata: {name: \xc3\xa9t\xe9}\ntype: Opaque\n";
        std::fs::write(dir.path().join("latin1.yaml"), bytes).expect("write");
        let l = load_dir(dir.path()).expect("loads");
        let d = &l.diagnostics[0];
        assert_eq!(
            (d.code, d.file.as_str(), d.position.line, d.position.column),
            (Code::Syntax, "latin1.yaml", 3, 20),
            "{d}"
        );
        assert!(d.to_string().starts_with("latin1.yaml:3:20: error[syntax]"), "{d}");
        assert!(d.message.contains("0xe9"), "{d}");
        assert_eq!(l.bundle.files, ["latin1.yaml"]);
    }

    #[test]
    fn syntax_error_names_the_file() {
        let l = load("a: [\n");
        assert_eq!(l.diagnostics[0].code, Code::Syntax);
        assert_eq!(l.diagnostics[0].file, "test.yaml");
    }
}
