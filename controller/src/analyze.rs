//! `straitctl analyze`: the config flow every proxy runs (`strait_config::build` for
//! one scope) plus the cross-resource analyzers, reported as `istioctl analyze`
//! reports: Istio's IST0xxx message code where Istio has one, Strait's STR0xxx
//! code where it does not, and always Strait's file:line and field.

use std::fmt;
use std::path::PathBuf;

use serde::{Serialize, Serializer};
use strait_config::analyze::{Finding, Message};
use strait_config::bundle::{load_dir, load_text, LoadError, Loaded};
use strait_config::mesh::MeshConfig;
use strait_config::{Code, Diagnostic, Scope, Severity};

/// Where the resources come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// These files, shown as given.
    Files(Vec<PathBuf>),
    /// Every resource file under this folder, as the gateway's `--config-dir` reads it.
    Dir(PathBuf),
}

/// Input that cannot be read at all (not a finding about its contents).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file named with `-f` cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The folder cannot be listed.
    #[error(transparent)]
    Folder(#[from] LoadError),
}

/// An analyzer message code and name, e.g. `IST0101` `ReferencedResourceNotFound`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MessageCode {
    /// `IST0xxx` (Istio's) or `STR0xxx` (Strait's own).
    pub code: &'static str,
    /// The message's name.
    pub name: &'static str,
}

const fn mc(code: &'static str, name: &'static str) -> MessageCode {
    MessageCode { code, name }
}

const SCHEMA: MessageCode = mc("IST0106", "SchemaValidationError");

/// The message a validation or translation diagnostic prints as. Istio's code only
/// where Istio reports the same problem; unknown fields, for one, are rejected by
/// Istio's schema but only ignored (with a warning) by Strait, so they keep a
/// Strait code. The match keeps the table complete when a `Code` is added.
pub fn message_code(code: Code) -> MessageCode {
    match code {
        Code::ReferenceNotFound => mc("IST0101", "ReferencedResourceNotFound"),
        Code::Syntax => SCHEMA,
        Code::Envelope => SCHEMA,
        Code::Schema => SCHEMA,
        Code::Required => SCHEMA,
        Code::InvalidValue => SCHEMA,
        Code::Conflict => SCHEMA,
        Code::InvalidRegex => mc("IST0122", "InvalidRegexp"),
        Code::NotEnforced => mc("STR0001", "NotEnforced"),
        Code::UnknownField => mc("STR0002", "UnknownField"),
        Code::UnknownKind => mc("STR0003", "UnknownKind"),
        Code::DuplicateResource => mc("STR0004", "DuplicateResource"),
        // Hosts repeated within one VirtualService or across gateway-bound ones;
        // the mesh case is the analyzer's IST0109.
        Code::DuplicateHost => mc("STR0005", "DuplicateHost"),
        Code::InvalidCertificate => mc("STR0006", "InvalidCertificate"),
        Code::Io => mc("STR0007", "ReadError"),
    }
}

/// The message an analyzer finding prints as.
pub fn analyzer_code(message: Message) -> MessageCode {
    match message {
        Message::ReferencedResourceNotFound => mc("IST0101", "ReferencedResourceNotFound"),
        Message::ConflictingMeshGatewayVirtualServiceHosts => {
            mc("IST0109", "ConflictingMeshGatewayVirtualServiceHosts")
        }
        Message::VirtualServiceHostNotFoundInGateway => mc("IST0132", "VirtualServiceHostNotFoundInGateway"),
        // Istio reports these only in the resources' status; Strait also here.
        Message::GatewayRouteNotAccepted => mc("STR0008", "GatewayRouteNotAccepted"),
        Message::GatewayRouteRefsNotResolved => mc("STR0009", "GatewayRouteRefsNotResolved"),
        Message::GatewayListenerNotProgrammed => mc("STR0010", "GatewayListenerNotProgrammed"),
    }
}

/// One line of `analyze` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// `Error`, `Warning` or `Info`, as Istio words it.
    #[serde(serialize_with = "level_name")]
    pub level: Severity,
    /// `IST0xxx` or `STR0xxx`.
    pub code: &'static str,
    /// Strait's diagnostic code, e.g. `reference-not-found`.
    pub strait_code: &'static str,
    /// `Kind name.namespace`, as Istio names resources.
    pub resource: Option<String>,
    /// The source file.
    pub file: String,
    /// Line, from 1 (0 when the whole file is meant).
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
    /// Field path inside the resource.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

fn level_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "Error",
        Severity::Warning => "Warning",
        Severity::Note => "Info",
    }
}

fn level_name<S: Serializer>(s: &Severity, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(level_word(*s))
}

impl Report {
    fn new(d: Diagnostic, code: MessageCode) -> Report {
        Report {
            level: d.severity,
            code: code.code,
            strait_code: d.code.as_str(),
            resource: d.resource.map(|r| format!("{} {}.{}", r.kind, r.name, r.namespace)),
            file: d.file,
            line: d.position.line,
            column: d.position.column,
            field: d.field,
            message: d.message,
        }
    }
}

/// istioctl's shape, `Error [IST0101] (VirtualService app.default app.yaml:12) message`,
/// with the field before the message.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}] (", level_word(self.level), self.code)?;
        if let Some(r) = &self.resource {
            write!(f, "{r} ")?;
        }
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        write!(f, ") ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// Reads the input into a bundle; what is wrong inside the files becomes findings.
pub fn load(input: &Input) -> Result<Loaded, Error> {
    match input {
        Input::Dir(dir) => Ok(load_dir(dir)?),
        Input::Files(files) => {
            let mut loaded = Loaded::default();
            for path in files {
                let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
                let shown = path.display().to_string();
                load_text(&mut loaded, &shown, &text);
                loaded.bundle.files.push(shown);
            }
            Ok(loaded)
        }
    }
}

/// Every finding about `loaded` for a proxy of `scope`, in file order. Translation
/// runs only on a bundle without errors, as in the proxies; where an analyzer
/// reports the same field as translation, the analyzer's finding is kept.
pub fn analyze(loaded: &Loaded, scope: &Scope) -> Vec<Report> {
    let bundle = &loaded.bundle;
    let mut diags = strait_config::pipeline::check(loaded, scope);
    let findings = strait_config::analyze::analyze(bundle, &scope.mesh);
    diags.retain(|d| !findings.iter().any(|f| same_place(&f.diagnostic, d)));
    let mut reports: Vec<Report> = diags
        .into_iter()
        .map(|d| {
            let code = message_code(d.code);
            Report::new(d, code)
        })
        .chain(
            findings
                .into_iter()
                .map(|Finding { message, diagnostic }| Report::new(diagnostic, analyzer_code(message))),
        )
        .collect();
    reports.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    reports.dedup();
    reports
}

/// Every finding about `loaded` that does not depend on a proxy's scope (each
/// resource's own checks, and the analyzers for proxies running with `mesh`), with
/// the message each is: what the controller writes in the resources' status.
pub fn scope_free(loaded: &Loaded, mesh: &MeshConfig) -> Vec<(Diagnostic, MessageCode)> {
    let mut diags = strait_config::pipeline::checks(loaded);
    let findings = strait_config::analyze::analyze(&loaded.bundle, mesh);
    diags.retain(|d| !findings.iter().any(|f| same_place(&f.diagnostic, d)));
    diags
        .into_iter()
        .map(|d| {
            let code = message_code(d.code);
            (d, code)
        })
        .chain(
            findings
                .into_iter()
                .map(|Finding { message, diagnostic }| (diagnostic, analyzer_code(message))),
        )
        .collect()
}

fn same_place(a: &Diagnostic, b: &Diagnostic) -> bool {
    a.code == b.code && a.file == b.file && a.resource == b.resource && a.field == b.field
}

/// Whether any report is an error (`analyze` then exits with 1).
pub fn any_errors(reports: &[Report]) -> bool {
    reports.iter().any(|r| r.level == Severity::Error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_codes_where_istio_has_the_message() {
        let table = [
            (Code::ReferenceNotFound, "IST0101"),
            (Code::Syntax, "IST0106"),
            (Code::Envelope, "IST0106"),
            (Code::Schema, "IST0106"),
            (Code::Required, "IST0106"),
            (Code::InvalidValue, "IST0106"),
            (Code::Conflict, "IST0106"),
            (Code::InvalidRegex, "IST0122"),
            (Code::NotEnforced, "STR0001"),
            (Code::UnknownField, "STR0002"),
            (Code::UnknownKind, "STR0003"),
            (Code::DuplicateResource, "STR0004"),
            (Code::DuplicateHost, "STR0005"),
            (Code::InvalidCertificate, "STR0006"),
            (Code::Io, "STR0007"),
        ];
        for (code, expected) in table {
            assert_eq!(message_code(code).code, expected, "{code:?}");
        }
        let strait: Vec<_> = table.iter().filter(|(_, c)| c.starts_with("STR")).collect();
        let distinct: std::collections::HashSet<_> = strait.iter().map(|(_, c)| c).collect();
        assert_eq!(distinct.len(), strait.len(), "each Strait code names one message");
        assert_eq!(
            analyzer_code(Message::VirtualServiceHostNotFoundInGateway).code,
            "IST0132"
        );
        assert_eq!(
            analyzer_code(Message::ConflictingMeshGatewayVirtualServiceHosts).code,
            "IST0109"
        );
        assert_eq!(analyzer_code(Message::ReferencedResourceNotFound).code, "IST0101");
    }

    #[test]
    fn line_shape_follows_istioctl() {
        let r = Report {
            level: Severity::Error,
            code: "IST0101",
            strait_code: "reference-not-found",
            resource: Some("VirtualService app.default".into()),
            file: "app.yaml".into(),
            line: 12,
            column: 9,
            field: Some("spec.gateways[0]".into()),
            message: "Gateway default/gw is not defined".into(),
        };
        assert_eq!(
            r.to_string(),
            "Error [IST0101] (VirtualService app.default app.yaml:12) spec.gateways[0]: Gateway default/gw is not defined"
        );
        let whole_file = Report {
            level: Severity::Note,
            resource: None,
            line: 0,
            field: None,
            ..r
        };
        assert_eq!(
            whole_file.to_string(),
            "Info [IST0101] (app.yaml) Gateway default/gw is not defined"
        );
    }
}
