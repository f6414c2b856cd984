//! Installing the CRD files of scripts/kube-tools.sh's cache into the test API
//! server, and waiting until every version they declare is served.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::Client;
use serde_json::Value;

use super::Error;

/// How long CRDs may take to become Established and served.
const SERVED: Duration = Duration::from_secs(60);

/// A CRD applied: what is needed to wait for it.
struct Applied {
    name: String,
    group: String,
    kind: String,
    plural: String,
    served: Vec<String>,
}

/// Creates every document of the `.yaml` files in `folders` (CRDs, and the
/// ValidatingAdmissionPolicies the Gateway API ships beside them), then waits
/// until each CRD is Established and each of its served versions answers a list.
pub(super) async fn install(client: &Client, folders: &[&Path]) -> Result<(), Error> {
    let started = Instant::now();
    let mut applied = Vec::new();
    for folder in folders {
        for file in yaml_files(folder)? {
            let text = std::fs::read_to_string(&file).map_err(Error::io(format!("reading {}", file.display())))?;
            let mut docs = Vec::new();
            strait_config::yaml::for_each_document(&text, |d| docs.push(d.value)).map_err(|e| Error::Crds {
                file: file.clone(),
                reason: format!("line {}: {}", e.position.line, e.message),
            })?;
            for doc in docs {
                applied.extend(apply(client, &file, doc).await?);
            }
        }
    }
    for crd in &applied {
        wait_served(client, crd, started + SERVED).await?;
    }
    log::info!("{} CRDs installed and served in {:?}", applied.len(), started.elapsed());
    Ok(())
}

fn yaml_files(folder: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = std::fs::read_dir(folder).map_err(Error::io(format!("listing {}", folder.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

fn text<'a>(doc: &'a Value, pointer: &str) -> &'a str {
    doc.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

async fn apply(client: &Client, file: &Path, doc: Value) -> Result<Option<Applied>, Error> {
    let crds_error = |reason: String| Error::Crds {
        file: file.to_path_buf(),
        reason,
    };
    let kind = text(&doc, "/kind").to_string();
    let resource = match kind.as_str() {
        "CustomResourceDefinition" => ApiResource::erase::<CustomResourceDefinition>(&()),
        "ValidatingAdmissionPolicy" => ApiResource::erase::<ValidatingAdmissionPolicy>(&()),
        "ValidatingAdmissionPolicyBinding" => ApiResource::erase::<ValidatingAdmissionPolicyBinding>(&()),
        other => return Err(crds_error(format!("no collection known for kind {other:?}"))),
    };
    let applied = (kind == "CustomResourceDefinition").then(|| Applied {
        name: text(&doc, "/metadata/name").to_string(),
        group: text(&doc, "/spec/group").to_string(),
        kind: text(&doc, "/spec/names/kind").to_string(),
        plural: text(&doc, "/spec/names/plural").to_string(),
        served: doc
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| v.get("served").and_then(Value::as_bool) == Some(true))
            .filter_map(|v| Some(v.get("name")?.as_str()?.to_string()))
            .collect(),
    });
    let object: DynamicObject =
        serde_json::from_value(doc).map_err(|e| crds_error(format!("a {kind} that is not an object: {e}")))?;
    Api::<DynamicObject>::all_with(client.clone(), &resource)
        .create(&PostParams::default(), &object)
        .await?;
    Ok(applied)
}

/// Waits until `crd` is Established and each served version answers a list
/// (discovery may lag Established a little).
async fn wait_served(client: &Client, crd: &Applied, deadline: Instant) -> Result<(), Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let established = |c: &CustomResourceDefinition| {
        c.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
    };
    loop {
        let ok = match crds.get(&crd.name).await {
            Ok(c) if established(&c) => served(client, crd).await,
            _ => false,
        };
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(
                SERVED,
                format!("CRD {} to be established and served", crd.name),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn served(client: &Client, crd: &Applied) -> bool {
    for version in &crd.served {
        let resource = ApiResource {
            group: crd.group.clone(),
            version: version.clone(),
            api_version: format!("{}/{version}", crd.group),
            kind: crd.kind.clone(),
            plural: crd.plural.clone(),
        };
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        if api.list(&ListParams::default().limit(1)).await.is_err() {
            return false;
        }
    }
    true
}
