//! Finding the test binaries and CRDs: the `STRAIT_*` environment variables, else
//! what `scripts/kube-tools.sh --print-env` says (it builds what its cache lacks).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tokio::sync::OnceCell;

use super::Error;

/// Where the Kubernetes test tools are.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `kube-apiserver` (`STRAIT_KUBE_APISERVER`).
    pub kube_apiserver: PathBuf,
    /// `etcd` (`STRAIT_ETCD`).
    pub etcd: PathBuf,
    /// `kubectl` (`STRAIT_KUBECTL`), when known.
    pub kubectl: Option<PathBuf>,
    /// `helm` (`STRAIT_HELM`), when known.
    pub helm: Option<PathBuf>,
    /// The folder of Istio's CRD files (`STRAIT_ISTIO_CRDS`).
    pub istio_crds: PathBuf,
    /// The folder of the Gateway API's CRD files (`STRAIT_GATEWAY_API_CRDS`).
    pub gateway_api_crds: PathBuf,
}

/// Found once per test binary: the script may have to build for minutes.
static TOOLS: OnceCell<Tools> = OnceCell::const_new();

const REQUIRED: [&str; 4] = [
    "STRAIT_KUBE_APISERVER",
    "STRAIT_ETCD",
    "STRAIT_ISTIO_CRDS",
    "STRAIT_GATEWAY_API_CRDS",
];

impl Tools {
    /// The tools named by the `STRAIT_*` environment variables; those missing are
    /// taken from `scripts/kube-tools.sh --print-env`, run from the workspace root.
    pub async fn find() -> Result<Tools, Error> {
        TOOLS.get_or_try_init(find_uncached).await.cloned()
    }
}

async fn find_uncached() -> Result<Tools, Error> {
    let mut vars: Vec<(String, OsString)> = Vec::new();
    if REQUIRED.iter().any(|name| std::env::var_os(name).is_none()) {
        vars = from_script().await?;
    }
    let get = |name: &str| {
        std::env::var_os(name)
            .or_else(|| vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()))
            .map(PathBuf::from)
    };
    let required = |name: &str| {
        let path = get(name).ok_or_else(|| Error::Tools(format!("{name} is not set")))?;
        if path.exists() {
            Ok(path)
        } else {
            Err(Error::Tools(format!("{name}={} does not exist", path.display())))
        }
    };
    Ok(Tools {
        kube_apiserver: required("STRAIT_KUBE_APISERVER")?,
        etcd: required("STRAIT_ETCD")?,
        kubectl: get("STRAIT_KUBECTL"),
        helm: get("STRAIT_HELM"),
        istio_crds: required("STRAIT_ISTIO_CRDS")?,
        gateway_api_crds: required("STRAIT_GATEWAY_API_CRDS")?,
    })
}

/// The workspace root: the controller crate's parent folder.
fn workspace_root() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest)
}

async fn from_script() -> Result<Vec<(String, OsString)>, Error> {
    let root = workspace_root();
    let script = root.join("scripts/kube-tools.sh");
    // Its progress (and a build's) goes to stderr, which the test shows on failure.
    let out = tokio::process::Command::new(&script)
        .arg("--print-env")
        .current_dir(root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .map_err(|e| Error::Tools(format!("cannot run {}: {e}", script.display())))?;
    if !out.status.success() {
        return Err(Error::Tools(format!(
            "{} --print-env failed ({}); its errors are above",
            script.display(),
            out.status
        )));
    }
    Ok(parse_env(&String::from_utf8_lossy(&out.stdout)))
}

/// `export NAME=value` lines, values quoted as bash's `printf %q` quotes them.
fn parse_env(text: &str) -> Vec<(String, OsString)> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.strip_prefix("export ")?.split_once('=')?;
            Some((name.to_string(), OsString::from(unquote(value))))
        })
        .collect()
}

fn unquote(value: &str) -> String {
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return inner.to_string();
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_env_lines_are_read_as_bash_quotes_them() {
        let vars = parse_env(
            "export STRAIT_ETCD=/root/.cache/strait-tools/etcd-v3.6.16/etcd\nexport STRAIT_HELM=/tmp/my\\ tools/helm\nexport STRAIT_KUBECTL='/a b/kubectl'\nnoise\n",
        );
        let get = |n: &str| {
            vars.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_string_lossy().into_owned())
        };
        assert_eq!(
            get("STRAIT_ETCD").as_deref(),
            Some("/root/.cache/strait-tools/etcd-v3.6.16/etcd")
        );
        assert_eq!(get("STRAIT_HELM").as_deref(), Some("/tmp/my tools/helm"));
        assert_eq!(get("STRAIT_KUBECTL").as_deref(), Some("/a b/kubectl"));
        assert_eq!(vars.len(), 3);
    }
}
