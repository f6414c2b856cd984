//! Status on the Istio resources the controller reads, in Istio's shape
//! (`istio.meta.v1alpha1.IstioStatus`): `conditions` with Istio's `Reconciled`
//! (every proxy that should run the resource acknowledged a configuration holding
//! it) and Strait's own `Programmed` (on how many of those proxies it is
//! programmed, naming the ones that refused it), `validationMessages` (the
//! analyzers' findings, with Istio's codes) and `observedGeneration`.
//!
//! - `distribution`: per resource, which connected proxies should run it and which
//!   run it (pure, from the store's state and the push status).
//! - `messages`: the findings per resource (pure).
//! - `reports`: each replica's count of its own proxies, in a Lease, for the
//!   leader to add up.
//! - `writer`: the loop that counts and publishes on every replica and, on the
//!   leader, writes what changed through each resource's status subresource,
//!   batched, and never what is already there.

pub mod distribution;
pub mod messages;
pub mod reports;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde::{Deserialize, Deserializer, Serialize};

use self::distribution::{Named, Programming, Proxy};
use self::reports::{Publisher, Reports};
use crate::controller::Controller;
use crate::leader::LeaderFlags;

/// The least time between two rounds of status writes: changes in between are
/// written together.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Writes status on the Istio resources of `client`'s cluster beside `controller`
/// while it leads (`Controller::leadership`), and meanwhile reports this replica's
/// proxies (as `identity`, in a Lease of `namespace` held as `flags` say) to the
/// replica that leads.
pub fn start(
    controller: &mut Controller,
    client: kube::Client,
    namespace: &str,
    identity: String,
    flags: &LeaderFlags,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let reports = Arc::new(Reports::default());
    controller.add_source(
        "replica reports",
        reports::watch_reports(leases.clone(), reports.clone(), controller.stop_signal()),
    );
    let writer = writer::Writer {
        client,
        store: controller.store.clone(),
        registry: controller.status.clone(),
        leader: controller.leadership().subscribe(),
        interval: INTERVAL,
        publisher: Publisher::new(leases.clone(), identity, flags.lease_duration, flags.lease_renew),
        reports,
        leases,
    };
    controller.add_source("status writer", writer.run(controller.stop_signal()));
}

/// Istio's condition type: the resource's configuration reached its proxies.
pub const RECONCILED: &str = "Reconciled";

/// Strait's condition type: on how many of the proxies that should run the
/// resource it is programmed (acknowledged), and which refused it.
pub const PROGRAMMED: &str = "Programmed";

/// Diagnostic text quoted in a message at most, in characters.
const QUOTED: usize = 200;

/// `status` of an Istio resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IstioStatus {
    /// Its conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The analyzers' findings.
    #[serde(default)]
    pub validation_messages: Vec<ValidationMessage>,
    /// The generation of the resource this status is about.
    #[serde(default, deserialize_with = "int_or_string")]
    pub observed_generation: Option<i64>,
}

/// One condition (`istio.meta.v1alpha1.IstioCondition`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Reconciled`, `Programmed`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// When it was last computed and written (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
    /// When its status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// One CamelCase word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The generation it is about.
    #[serde(default, deserialize_with = "int_or_string", skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One analyzer finding (`istio.analysis.v1alpha1.AnalysisMessageBase`): Istio's
/// CRDs keep no text for it, only its code, level and documentation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationMessage {
    /// `ERROR`, `WARNING` or `INFO`.
    pub level: String,
    /// Its code and name.
    #[serde(rename = "type")]
    pub type_: MessageType,
    /// Istio's page on it (none for Strait's own codes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documentation_url: Option<String>,
}

/// A message's code (`IST0101`) and name (`ReferencedResourceNotFound`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageType {
    /// `IST0xxx`, or Strait's `STR0xxx`.
    pub code: String,
    /// The message's name.
    #[serde(default)]
    pub name: String,
}

/// Istio's CRDs declare generations as int-or-string.
fn int_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    })
}

fn truth(b: bool) -> String {
    if b { "True" } else { "False" }.to_string()
}

/// The proxies of `list` by name, the ones not named counted.
fn named<T: Proxy + Clone>(list: &Named<T>) -> String {
    let names = list.names();
    let shown = names.join(", ");
    match list.count.saturating_sub(names.len()) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// The conditions for a resource of `generation` programmed as `p` says, without
/// times (`IstioStatus::stamped` adds them).
pub fn conditions(p: &Programming, generation: Option<i64>) -> Vec<Condition> {
    let all = p.programmed == p.total;
    // Istio's words, so that what reads istiod's status reads this one.
    let reconciled = Condition {
        type_: RECONCILED.into(),
        status: truth(all),
        message: Some(format!("{}/{} proxies up to date.", p.programmed, p.total)),
        observed_generation: generation,
        ..Condition::default()
    };
    let (status, reason) = if p.total == 0 {
        ("Unknown".to_string(), "NoProxies")
    } else if all {
        (truth(true), "Programmed")
    } else if !p.refused.is_empty() {
        (truth(false), "Refused")
    } else if !p.unbuilt.is_empty() {
        (truth(false), "NotBuilt")
    } else {
        (truth(false), "Pending")
    };
    let mut message = if p.total == 0 {
        "no connected proxy runs it".to_string()
    } else {
        format!("programmed on {} of {} proxies", p.programmed, p.total)
    };
    if !p.refused.is_empty() {
        message.push_str(&format!("; refused by {}", named(&p.refused)));
        if let Some(first) = p.refused.first.first() {
            message.push_str(&format!(
                " ({} refused version {}: {})",
                first.proxy,
                first.version,
                quoted(&first.reason)
            ));
        }
    }
    if !p.unbuilt.is_empty() {
        message.push_str(&format!(
            "; not sent to {}: the controller cannot build their configuration",
            named(&p.unbuilt)
        ));
        if let Some(first) = p.unbuilt.first.first() {
            message.push_str(&format!(" ({})", quoted(&first.reason)));
        }
    }
    if !p.pending.is_empty() {
        message.push_str(&format!("; not yet acknowledged by {}", named(&p.pending)));
    }
    let programmed = Condition {
        type_: PROGRAMMED.into(),
        status,
        reason: Some(reason.into()),
        message: Some(message),
        observed_generation: generation,
        ..Condition::default()
    };
    vec![reconciled, programmed]
}

impl IstioStatus {
    /// Whether `self` says what `other` says, whatever their times.
    pub fn same_as(&self, other: &IstioStatus) -> bool {
        let timeless = |s: &IstioStatus| {
            let mut s = s.clone();
            for c in &mut s.conditions {
                c.last_probe_time = None;
                c.last_transition_time = None;
            }
            s
        };
        timeless(self) == timeless(other)
    }

    /// `self` with times as of `now`: each condition's transition time is kept from
    /// `previous` while its status stays, as Kubernetes conditions do.
    pub fn stamped(mut self, previous: Option<&IstioStatus>, now: &str) -> IstioStatus {
        for c in &mut self.conditions {
            let before = previous.and_then(|p| p.conditions.iter().find(|b| b.type_ == c.type_));
            c.last_transition_time = match before {
                Some(b) if b.status == c.status && b.last_transition_time.is_some() => b.last_transition_time.clone(),
                _ => Some(now.to_string()),
            };
            c.last_probe_time = Some(now.to_string());
        }
        self
    }

    /// The merge patch that makes the stored status this one: every field of
    /// Istio's given, an empty list as null (a merge patch keeps absent fields).
    pub fn merge_patch(&self) -> serde_json::Value {
        let list = |v: serde_json::Value| match v {
            serde_json::Value::Array(a) if a.is_empty() => serde_json::Value::Null,
            other => other,
        };
        serde_json::json!({
            "status": {
                "conditions": list(serde_json::to_value(&self.conditions).unwrap_or_default()),
                "validationMessages": list(serde_json::to_value(&self.validation_messages).unwrap_or_default()),
                "observedGeneration": self.observed_generation,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::distribution::Refusal;
    use super::*;

    fn programming(total: usize, programmed: usize) -> Programming {
        Programming {
            total,
            programmed,
            ..Programming::default()
        }
    }

    #[test]
    fn conditions_say_how_many_proxies_run_it_and_who_refused() {
        let mut p = programming(3, 2);
        p.refused = Named {
            count: 1,
            first: vec![Refusal {
                proxy: "gw-c".into(),
                version: 7,
                reason: "app.yaml:1:1: error[invalid-certificate] bad".into(),
            }],
        };
        let c = conditions(&p, Some(4));
        assert_eq!(c[0].type_, "Reconciled");
        assert_eq!(c[0].status, "False");
        assert_eq!(c[0].message.as_deref(), Some("2/3 proxies up to date."));
        assert_eq!(c[1].type_, "Programmed");
        assert_eq!(c[1].reason.as_deref(), Some("Refused"));
        assert_eq!(
            c[1].message.as_deref(),
            Some("programmed on 2 of 3 proxies; refused by gw-c (gw-c refused version 7: app.yaml:1:1: error[invalid-certificate] bad)")
        );
        assert!(c.iter().all(|c| c.observed_generation == Some(4)));
        let all = conditions(&programming(2, 2), None);
        assert_eq!((all[0].status.as_str(), all[1].status.as_str()), ("True", "True"));
        let none = conditions(&programming(0, 0), None);
        assert_eq!(none[1].status, "Unknown");
        assert_eq!(none[0].message.as_deref(), Some("0/0 proxies up to date."));
        let mut pending = programming(9, 3);
        pending.pending = Named {
            count: 6,
            first: (1..=3).map(|i| format!("sc-{i}")).collect(),
        };
        let c = conditions(&pending, None);
        assert_eq!(c[1].reason.as_deref(), Some("Pending"));
        assert!(
            c[1].message
                .as_deref()
                .is_some_and(|m| m.ends_with("not yet acknowledged by sc-1, sc-2, sc-3 and 3 more")),
            "{c:?}"
        );
    }

    #[test]
    fn transition_times_stay_while_the_status_does() {
        let first = IstioStatus {
            conditions: conditions(&programming(2, 1), Some(1)),
            ..IstioStatus::default()
        }
        .stamped(None, "2026-01-01T00:00:00Z");
        let same = IstioStatus {
            conditions: conditions(&programming(2, 1), Some(1)),
            ..IstioStatus::default()
        };
        assert!(same.same_as(&first), "times aside, nothing changed");
        let done = IstioStatus {
            conditions: conditions(&programming(2, 2), Some(1)),
            ..IstioStatus::default()
        };
        assert!(!done.same_as(&first));
        let mut moved = first.clone();
        moved.conditions[1].message = Some("programmed on 1 of 3 proxies".into());
        let moved = moved.stamped(Some(&first), "2026-01-01T00:01:00Z");
        assert_eq!(
            moved.conditions[1].last_transition_time.as_deref(),
            Some("2026-01-01T00:00:00Z"),
            "same status: the transition time stays"
        );
        assert_eq!(
            moved.conditions[1].last_probe_time.as_deref(),
            Some("2026-01-01T00:01:00Z")
        );
        let done = done.stamped(Some(&first), "2026-01-01T00:02:00Z");
        assert_eq!(
            done.conditions[0].last_transition_time.as_deref(),
            Some("2026-01-01T00:02:00Z")
        );
    }

    #[test]
    fn the_patch_clears_what_is_gone_and_reads_back() {
        let status = IstioStatus {
            conditions: conditions(&programming(1, 1), Some(2)),
            validation_messages: Vec::new(),
            observed_generation: Some(2),
        };
        let patch = status.merge_patch();
        assert!(patch["status"]["validationMessages"].is_null(), "{patch}");
        assert_eq!(patch["status"]["observedGeneration"], 2);
        // The API server drops what a merge patch sets to null.
        let mut stored = patch["status"].clone();
        if let Some(fields) = stored.as_object_mut() {
            fields.retain(|_, v| !v.is_null());
        }
        let back: IstioStatus = serde_json::from_value(stored).expect("reads back");
        assert_eq!(back, status);
        // As istiod may have written it: a generation as a string.
        let stored: IstioStatus = serde_json::from_value(
            serde_json::json!({"observedGeneration": "3", "conditions": [{"type": "Reconciled", "status": "True"}]}),
        )
        .expect("reads");
        assert_eq!(stored.observed_generation, Some(3));
    }
}
