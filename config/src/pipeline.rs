//! The one path from resources to a snapshot, for every role and every source:
//! compile once (every resource checked and compiled), check across resources, and
//! translate for the proxy's scope. The gateway, the sidecar, the controller (for
//! each proxy it serves), `straitctl analyze` and the tests all call `build`.

use crate::bundle::Loaded;
use crate::compile::{compile, Compiled};
use crate::diag::{has_errors, Diagnostic};
use crate::scope::Scope;
use crate::snapshot::{ClusterEndpoints, ClusterKind, Endpoints, Snapshot};
use crate::translate::translate;
use crate::validate::validate;

/// An accepted configuration: the snapshot, its clusters' endpoints and what was
/// noted on the way.
#[derive(Debug)]
pub struct Built {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// The endpoints of its clusters (swapped on their own as they change).
    pub endpoints: Endpoints,
    /// Warnings and notes, sorted by file and line.
    pub warnings: Vec<Diagnostic>,
}

/// Builds the snapshot of `loaded` for `scope`. Any error rejects the whole bundle:
/// the diagnostics come back sorted by file and line, warnings included.
pub fn build(loaded: &Loaded, scope: &Scope, version: u64) -> Result<Built, Vec<Diagnostic>> {
    let compiled = compile(&loaded.bundle);
    build_compiled(loaded, &compiled, scope, version)
}

/// `build` for a bundle already compiled (the controller compiles once per change
/// and translates for each of its proxies).
pub fn build_compiled(
    loaded: &Loaded,
    compiled: &Compiled<'_>,
    scope: &Scope,
    version: u64,
) -> Result<Built, Vec<Diagnostic>> {
    let mut diags = loaded.diagnostics.clone();
    diags.extend(compiled.diagnostics.iter().cloned());
    diags.extend(validate(&loaded.bundle));
    if has_errors(&diags) {
        return Err(sorted(diags));
    }
    match translate(compiled, scope, version) {
        Ok(t) => {
            diags.extend(t.warnings);
            Ok(Built {
                snapshot: t.snapshot,
                endpoints: t.endpoints,
                warnings: sorted(diags),
            })
        }
        Err(errors) => {
            diags.extend(errors);
            Err(sorted(diags))
        }
    }
}

/// What every resource's own checks and the checks across resources find, before
/// any translation, sorted (what does not depend on the proxy).
pub fn checks(loaded: &Loaded) -> Vec<Diagnostic> {
    let mut diags = loaded.diagnostics.clone();
    diags.extend(compile(&loaded.bundle).diagnostics);
    diags.extend(validate(&loaded.bundle));
    sorted(diags)
}

/// The endpoints of `snapshot`'s clusters as the registry of `compiled` has them
/// now: what a proxy needs when only endpoints changed.
pub fn endpoints(compiled: &Compiled<'_>, snapshot: &Snapshot) -> Endpoints {
    Endpoints {
        clusters: snapshot
            .clusters
            .iter()
            .map(|c| {
                let found = match c.kind {
                    ClusterKind::Static | ClusterKind::Dns => compiled
                        .registry
                        .resolve(&c.host, Some(c.port), c.subset.as_deref())
                        .map(|(_, e)| e)
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                ClusterEndpoints::new(found, &c.policy)
            })
            .collect(),
    }
}

/// Every diagnostic a build of `loaded` for `scope` gives (what `--check` prints).
pub fn check(loaded: &Loaded, scope: &Scope) -> Vec<Diagnostic> {
    match build(loaded, scope, 0) {
        Ok(built) => built.warnings,
        Err(diags) => diags,
    }
}

/// Diagnostics in file and line order, each once.
pub fn sorted(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diags.sort_by(|a, b| {
        (&a.file, a.position.line, a.position.column).cmp(&(&b.file, b.position.line, b.position.column))
    });
    diags.dedup();
    diags
}
