//! Diagnostics: what is wrong (or worth knowing) about a configuration, and where.

use std::fmt;

use serde::Serialize;

use crate::yaml::Position;

/// How serious a diagnostic is. Only errors reject a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational, e.g. a skipped kind.
    Note,
    /// Accepted, but probably not what the user meant.
    Warning,
    /// The configuration is rejected.
    Error,
}

/// Stable diagnostic codes; their text never changes once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Code {
    /// The file could not be read.
    Io,
    /// YAML/JSON syntax error.
    Syntax,
    /// A document without apiVersion/kind/metadata.name.
    Envelope,
    /// A field with the wrong type or value shape.
    Schema,
    /// A field Strait does not know; ignored.
    UnknownField,
    /// A kind Strait does not use; skipped.
    UnknownKind,
    /// Two resources with the same kind, namespace and name.
    DuplicateResource,
    /// A required field is missing or empty.
    Required,
    /// A value outside its allowed set or range.
    InvalidValue,
    /// A regular expression that does not compile.
    InvalidRegex,
    /// Fields that cannot be used together.
    Conflict,
    /// A reference to a resource that does not exist.
    ReferenceNotFound,
    /// A host declared twice.
    DuplicateHost,
    /// A field accepted for compatibility but not yet enforced by Strait.
    NotEnforced,
    /// A TLS certificate or key that cannot be used.
    InvalidCertificate,
}

impl Code {
    /// The code as printed, e.g. `invalid-regex`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Io => "io",
            Code::Syntax => "syntax",
            Code::Envelope => "envelope",
            Code::Schema => "schema",
            Code::UnknownField => "unknown-field",
            Code::UnknownKind => "unknown-kind",
            Code::DuplicateResource => "duplicate-resource",
            Code::Required => "required",
            Code::InvalidValue => "invalid-value",
            Code::InvalidRegex => "invalid-regex",
            Code::Conflict => "conflict",
            Code::ReferenceNotFound => "reference-not-found",
            Code::DuplicateHost => "duplicate-host",
            Code::NotEnforced => "not-enforced",
            Code::InvalidCertificate => "invalid-certificate",
        }
    }
}

/// Which resource a diagnostic is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceRef {
    /// Kind, e.g. `VirtualService`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One finding about the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// How serious.
    pub severity: Severity,
    /// Stable code.
    pub code: Code,
    /// The source file.
    pub file: String,
    /// Where in the file.
    pub position: Position,
    /// The resource, when known.
    pub resource: Option<ResourceRef>,
    /// The field path inside the resource, e.g. `spec.http[0].match[0].uri.regex`.
    pub field: Option<String>,
    /// What is wrong, in words.
    pub message: String,
}

impl Diagnostic {
    /// Whether this diagnostic rejects the configuration.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(
            f,
            "{}:{}:{}: {sev}[{}]",
            self.file,
            self.position.line,
            self.position.column,
            self.code.as_str()
        )?;
        if let Some(r) = &self.resource {
            write!(f, " {r}")?;
        }
        if let Some(field) = &self.field {
            write!(f, " {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Where a value of the snapshot was written, kept so that a later stage (the engine
/// reading a certificate) can report a problem at the file, line and field it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Anchor {
    /// The source file.
    pub file: String,
    /// Where in the file.
    pub position: Position,
    /// The resource, when known.
    pub resource: Option<ResourceRef>,
    /// The field path inside the resource.
    pub field: Option<String>,
}

impl Anchor {
    /// A diagnostic at this place.
    pub fn diag(&self, severity: Severity, code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity,
            code,
            file: self.file.clone(),
            position: self.position,
            resource: self.resource.clone(),
            field: self.field.clone(),
            message: message.into(),
        }
    }
}

/// True when any diagnostic is an error.
pub fn has_errors(diags: &[Diagnostic]) -> bool {
    diags.iter().any(Diagnostic::is_error)
}
