//! Status on the Kubernetes Gateway API's resources, as the API asks of the
//! controller of a GatewayClass: computed by `strait_config` from the store's
//! resources (a pure function), and written by the leader through each resource's
//! status subresource with a merge patch, only where it differs from what the
//! resource holds. A condition that did not change keeps its lastTransitionTime;
//! the route parents other controllers wrote are kept.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};
use strait_config::compile::compile;
use strait_config::compile::gateway_api::status::{status, ResourceStatus};
use strait_config::resources::gateway_api::{CONTROLLER_NAME, GROUP};
use tokio::sync::watch;

use crate::controller::{until_stopped, Controller, FIELD_MANAGER};
use crate::store::{State, Store};

/// Writes Gateway API status beside `controller` while it leads.
pub fn start(controller: &mut Controller, client: Client, interval: Duration) {
    let writer = Writer {
        client,
        store: controller.store.clone(),
        leader: controller.leadership().subscribe(),
        interval,
    };
    controller.add_source("gateway api status", writer.run(controller.stop_signal()));
}

/// The writer's loop.
pub struct Writer {
    /// The cluster.
    pub client: Client,
    /// The resources.
    pub store: Arc<Store>,
    /// Whether this replica leads.
    pub leader: watch::Receiver<bool>,
    /// The least time between two rounds.
    pub interval: Duration,
}

impl Writer {
    /// Writes (while leading) on every change of the store until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), std::convert::Infallible> {
        let mut states = self.store.subscribe();
        loop {
            states.borrow_and_update();
            let leading = *self.leader.borrow_and_update();
            let complete = !leading || self.round().await;
            let retry = async {
                if complete {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep(self.interval).await
                }
            };
            tokio::select! {
                _ = until_stopped(&mut stop) => break,
                _ = self.leader.changed() => {}
                _ = states.changed() => {}
                _ = retry => {}
            }
            tokio::select! {
                _ = until_stopped(&mut stop) => break,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
        Ok(())
    }

    /// Writes every status that differs; false when a write failed.
    async fn round(&self) -> bool {
        let state = self.store.current();
        if state.version == 0 {
            return true;
        }
        let now = now();
        let computed = {
            let state = state.clone();
            tokio::task::spawn_blocking(move || status(&compile(&state.loaded.bundle).gateway_api, &now))
                .await
                .unwrap_or_default()
        };
        let mut complete = true;
        for desired in computed {
            let Some((api_version, stored)) = stored(&state, &desired) else {
                continue; // not read from Kubernetes (a file), or gone meanwhile
            };
            let merged = merge(&stored, &desired.status);
            if merged == stored {
                continue;
            }
            if let Err(e) = self.write(&api_version, &desired, merged).await {
                log::warn!(
                    "writing status of {} {}/{}: {e}",
                    desired.kind,
                    desired.namespace,
                    desired.name
                );
                complete = false;
            }
        }
        complete
    }

    async fn write(&self, api_version: &str, r: &ResourceStatus, status: Value) -> Result<(), kube::Error> {
        let resource = ApiResource {
            group: GROUP.to_string(),
            version: api_version.rsplit('/').next().unwrap_or("v1").to_string(),
            api_version: api_version.to_string(),
            kind: r.kind.to_string(),
            plural: format!("{}s", r.kind.to_ascii_lowercase()).replace("classs", "classes"),
        };
        let api: Api<DynamicObject> = if r.namespace.is_empty() {
            Api::all_with(self.client.clone(), &resource)
        } else {
            Api::namespaced_with(self.client.clone(), &r.namespace, &resource)
        };
        let params = PatchParams::apply(FIELD_MANAGER);
        let patch = json!({"status": status});
        api.patch_status(&r.name, &PatchParams { force: false, ..params }, &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }
}

/// The apiVersion and stored status of the resource `desired` is for.
fn stored(state: &State, desired: &ResourceStatus) -> Option<(String, Value)> {
    let kind = format!("{}.{GROUP}", desired.kind);
    let file = if desired.namespace.is_empty() || desired.kind == "GatewayClass" {
        format!("kubernetes/{kind}/{}", desired.name)
    } else {
        format!("kubernetes/{kind}/{}/{}", desired.namespace, desired.name)
    };
    let doc = state.documents.iter().find(|d| d.file == file)?;
    let object: Value = serde_json::from_str(&doc.text).ok()?;
    let api_version = object.get("apiVersion")?.as_str()?.to_string();
    Some((api_version, object.get("status").cloned().unwrap_or_else(|| json!({}))))
}

/// `desired` laid over `stored`: conditions that did not change keep their
/// lastTransitionTime, route parents of other controllers stay, other fields of
/// `stored` (addresses a user or another tool wrote) stay.
pub fn merge(stored: &Value, desired: &Value) -> Value {
    let mut out = match stored {
        Value::Object(m) => m.clone(),
        _ => Default::default(),
    };
    let Value::Object(desired) = desired else {
        return Value::Object(out);
    };
    for (key, value) in desired {
        let merged = match key.as_str() {
            "conditions" => keep_times(stored.get("conditions"), value),
            "listeners" => match_by(stored.get("listeners"), value, "name"),
            "parents" => {
                let mut parents: Vec<Value> = stored
                    .get("parents")
                    .and_then(Value::as_array)
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| p.get("controllerName").and_then(Value::as_str) != Some(CONTROLLER_NAME))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                let ours = match_by(stored.get("parents"), value, "parentRef");
                parents.extend(ours.as_array().cloned().unwrap_or_default());
                Value::Array(parents)
            }
            _ => value.clone(),
        };
        out.insert(key.clone(), merged);
    }
    Value::Object(out)
}

/// Items of `desired` with the conditions of the `stored` item with the same `key`.
fn match_by(stored: Option<&Value>, desired: &Value, key: &str) -> Value {
    let Some(items) = desired.as_array() else {
        return desired.clone();
    };
    let old = stored.and_then(Value::as_array);
    Value::Array(
        items
            .iter()
            .map(|item| {
                let previous = old.and_then(|o| o.iter().find(|p| p.get(key) == item.get(key)));
                let mut item = item.clone();
                if let (Some(Value::Object(m)), Some(p)) = (Some(&mut item), previous) {
                    if let Some(c) = m.get("conditions").cloned() {
                        m.insert("conditions".into(), keep_times(p.get("conditions"), &c));
                    }
                }
                item
            })
            .collect(),
    )
}

/// Conditions of `desired`, each keeping the stored lastTransitionTime when its
/// status, reason, message and observedGeneration are those stored.
fn keep_times(stored: Option<&Value>, desired: &Value) -> Value {
    let Some(items) = desired.as_array() else {
        return desired.clone();
    };
    let old = stored.and_then(Value::as_array);
    let same = |a: &Value, b: &Value| {
        ["type", "status", "reason", "message", "observedGeneration"]
            .iter()
            .all(|k| a.get(k) == b.get(k))
    };
    Value::Array(
        items
            .iter()
            .map(|c| match old.and_then(|o| o.iter().find(|p| same(p, c))) {
                Some(p) => p.clone(),
                None => c.clone(),
            })
            .collect(),
    )
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_conditions_keep_their_time_and_other_controllers_keep_their_parents() {
        let stored = json!({"parents": [
            {"parentRef": {"name": "gw"}, "controllerName": CONTROLLER_NAME, "conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "observedGeneration": 1, "lastTransitionTime": "2020-01-01T00:00:00Z"}]},
            {"parentRef": {"name": "theirs"}, "controllerName": "example.com/other", "conditions": []}
        ]});
        let desired = json!({"parents": [
            {"parentRef": {"name": "gw"}, "controllerName": CONTROLLER_NAME, "conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        ]});
        let merged = merge(&stored, &desired);
        let parents = merged["parents"].as_array().expect("parents");
        assert_eq!(parents.len(), 2);
        assert!(parents.iter().any(|p| p["controllerName"] == "example.com/other"));
        let ours = parents
            .iter()
            .find(|p| p["controllerName"] == CONTROLLER_NAME)
            .expect("ours");
        assert_eq!(ours["conditions"][0]["lastTransitionTime"], "2020-01-01T00:00:00Z");
        // The same again changes nothing: nothing to write.
        assert_eq!(merge(&merged, &desired), merged);
        // A changed condition takes the new time.
        let changed = json!({"parents": [{"parentRef": {"name": "gw"}, "controllerName": CONTROLLER_NAME, "conditions": [
            {"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners", "message": "m", "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]});
        let merged = merge(&merged, &changed);
        let ours = merged["parents"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["controllerName"] == CONTROLLER_NAME).cloned())
            .expect("ours");
        assert_eq!(ours["conditions"][0]["lastTransitionTime"], "2026-01-01T00:00:00Z");
    }
}
