//! Every replica's count of its own proxies, for the leader to add up. A replica
//! knows only the proxies connected to it, so the leader alone cannot say on how
//! many of all the proxies a resource is programmed. As istiod's replicas report
//! their distribution for the leader to add up, Strait's keep theirs in a Lease
//! each, `strait-controller-report-<identity>` (label `strait.io/controller-report`,
//! the report as JSON in the annotation `strait.io/programming`), renewed as a
//! heartbeat like the kubelet's node Leases. The leader watches them and counts a
//! report while its holder renews it within its lease duration (measured on the
//! leader's clock from when it saw it change); a replica stopped gracefully deletes
//! its own, and the leader deletes those left unrenewed for long.

use std::collections::{BTreeMap, HashMap};
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::distribution::{Programming, Target};
use crate::controller::until_stopped;

/// The label of report Leases.
pub const LABEL: &str = "strait.io/controller-report";

/// The annotation holding a report.
pub const ANNOTATION: &str = "strait.io/programming";

/// Report Leases' names start with this.
const PREFIX: &str = "strait-controller-report-";

/// Annotations of an object hold 256 KiB at most.
const MOST: usize = 250_000;

/// A report left unrenewed this many lease durations is deleted by the leader.
const FORGOTTEN: u32 = 20;

/// One replica's count of its own proxies, per resource they should run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// By document (`kubernetes/<Kind>/<namespace>/<name>`).
    pub resources: BTreeMap<String, Entry>,
}

/// One resource in a report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The generation the replica's proxies were judged against.
    pub generation: Option<i64>,
    /// How far it is programmed on them.
    #[serde(flatten)]
    pub programming: Programming,
}

impl Report {
    /// The report of `programming` (of `targets`, in their order): the resources
    /// some proxy of this replica should run.
    pub fn new(targets: &[Target], programming: &[Programming]) -> Report {
        Report {
            resources: targets
                .iter()
                .zip(programming)
                .filter(|(_, p)| p.total > 0)
                .map(|(t, p)| {
                    let entry = Entry {
                        generation: t.generation,
                        programming: p.clone(),
                    };
                    (t.file.clone(), entry)
                })
                .collect(),
        }
    }
}

/// Adds `reports` (other replicas') to `programming` (of `targets`). A replica
/// that judged another generation than `targets` has not caught up: its proxies
/// count as not acknowledging yet.
pub fn add_up(targets: &[Target], programming: &mut [Programming], reports: &[Report]) {
    for (t, p) in targets.iter().zip(programming) {
        for entry in reports.iter().filter_map(|r| r.resources.get(&t.file)) {
            if entry.generation == t.generation {
                p.add(&entry.programming);
            } else {
                p.total += entry.programming.total;
                p.pending.count += entry.programming.total;
            }
        }
    }
}

/// The name of `identity`'s report Lease (a DNS subdomain).
pub fn lease_name(identity: &str) -> String {
    let mut name: String = identity
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    name.truncate(253 - PREFIX.len());
    let name = name.trim_matches(|c| c == '-' || c == '.');
    format!("{PREFIX}{name}")
}

/// A report Lease as last seen.
struct Seen {
    holder: String,
    report: Option<Report>,
    version: Option<String>,
    changed: Instant,
    duration: Duration,
}

/// The report Leases, as their watch shows them.
#[derive(Default)]
pub struct Reports {
    seen: Mutex<HashMap<String, Seen>>,
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for Reports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reports").finish_non_exhaustive()
    }
}

fn lock(reports: &Reports) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
    reports.seen.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Reports {
    fn see(&self, lease: &Lease) {
        let Some(name) = lease.metadata.name.clone() else {
            return;
        };
        let spec = lease.spec.as_ref();
        let report = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION))
            .and_then(|text| serde_json::from_str(text).ok());
        let seconds = spec.and_then(|s| s.lease_duration_seconds).unwrap_or(0);
        let version = lease.metadata.resource_version.clone();
        let mut seen = lock(self);
        let changed = match seen.get(&name) {
            Some(old) if old.version == version => old.changed,
            _ => Instant::now(),
        };
        seen.insert(
            name,
            Seen {
                holder: spec.and_then(|s| s.holder_identity.clone()).unwrap_or_default(),
                report,
                version,
                changed,
                duration: Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
            },
        );
        drop(seen);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn forget(&self, name: &str) {
        lock(self).remove(name);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A counter that moves with every report seen.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The reports renewed within their duration, but for `own` (a Lease name).
    pub fn fresh(&self, own: &str) -> Vec<Report> {
        let now = Instant::now();
        lock(self)
            .iter()
            .filter(|(name, s)| *name != own && !s.holder.is_empty() && now < s.changed + s.duration)
            .filter_map(|(_, s)| s.report.clone())
            .collect()
    }

    /// When the next fresh report goes stale, if any does.
    pub fn next_expiry(&self) -> Option<Instant> {
        let now = Instant::now();
        lock(self)
            .values()
            .map(|s| s.changed + s.duration)
            .filter(|at| *at > now)
            .min()
    }

    /// The report Leases left unrenewed for `FORGOTTEN` durations.
    fn forgotten(&self) -> Vec<String> {
        let now = Instant::now();
        lock(self)
            .iter()
            .filter(|(_, s)| now > s.changed + s.duration.max(Duration::from_secs(1)) * FORGOTTEN)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// Follows the report Leases in `api`'s namespace into `reports`, until `stop`.
pub async fn watch_reports(
    api: Api<Lease>,
    reports: Arc<Reports>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), std::convert::Infallible> {
    let config = watcher::Config::default().labels(LABEL);
    let mut events = pin!(watcher(api, config).default_backoff());
    loop {
        let event = tokio::select! {
            _ = until_stopped(&mut stop) => return Ok(()),
            event = events.next() => event,
        };
        match event {
            Some(Ok(Event::Apply(lease) | Event::InitApply(lease))) => reports.see(&lease),
            Some(Ok(Event::Delete(lease))) => reports.forget(lease.metadata.name.as_deref().unwrap_or_default()),
            Some(Ok(Event::Init | Event::InitDone)) => {}
            Some(Err(e)) => log::warn!("watching the replicas' report Leases: {e}; retrying"),
            None => return Ok(()),
        }
    }
}

/// Deletes the report Leases nobody renewed for long (replicas gone for good).
pub async fn delete_forgotten(api: &Api<Lease>, reports: &Reports) {
    for name in reports.forgotten() {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                log::info!("deleted the report Lease {name} of a replica gone");
                reports.forget(&name);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => reports.forget(&name),
            Err(e) => log::warn!("deleting the report Lease {name}: {e}"),
        }
    }
}

/// This replica's report Lease.
pub struct Publisher {
    api: Api<Lease>,
    identity: String,
    name: String,
    duration: Duration,
    renew: Duration,
    /// What was published, and when.
    last: Option<(Report, Instant)>,
    /// Whether a too large report was reported already.
    warned: bool,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Publisher {
    /// The report Lease of `identity` in `api`'s namespace, renewed every `renew`
    /// and held for `duration`.
    pub fn new(api: Api<Lease>, identity: String, duration: Duration, renew: Duration) -> Publisher {
        Publisher {
            api,
            name: lease_name(&identity),
            identity,
            duration,
            renew,
            last: None,
            warned: false,
        }
    }

    /// The Lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When the report is to be renewed next.
    pub fn due(&self) -> Instant {
        self.last.as_ref().map_or_else(Instant::now, |(_, at)| *at + self.renew)
    }

    /// Publishes `report` when it changed or its renewal is due.
    pub async fn publish(&mut self, report: Report) {
        let now_at = Instant::now();
        if self
            .last
            .as_ref()
            .is_some_and(|(last, at)| *last == report && now_at < *at + self.renew)
        {
            return;
        }
        let text = match serde_json::to_string(&report) {
            Ok(text) if text.len() <= MOST => text,
            Ok(text) => {
                if !self.warned {
                    log::warn!(
                        "this replica's report is {} bytes, more than a Lease annotation holds: the leader counts its proxies out",
                        text.len()
                    );
                    self.warned = true;
                }
                return;
            }
            Err(e) => {
                log::warn!("this replica's report: {e}");
                return;
            }
        };
        match self.write(text).await {
            Ok(()) => self.last = Some((report, now_at)),
            Err(e) => log::warn!("publishing the report Lease {}: {e}", self.name),
        }
    }

    async fn write(&self, text: String) -> Result<(), kube::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some([(LABEL.to_string(), "true".to_string())].into()),
                annotations: Some([(ANNOTATION.to_string(), text)].into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)),
                renew_time: Some(now()),
                ..LeaseSpec::default()
            }),
        };
        // Only this replica writes its Lease: the version read is the one replaced.
        match self.api.get_opt(&self.name).await? {
            None => self.api.create(&PostParams::default(), &lease).await.map(|_| ()),
            Some(old) => {
                let mut lease = lease;
                lease.metadata.resource_version = old.metadata.resource_version;
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Deletes the report on a graceful stop: the leader counts this replica's
    /// proxies out at once.
    pub async fn withdraw(&mut self) {
        if self.last.take().is_none() {
            return;
        }
        match self.api.delete(&self.name, &DeleteParams::default()).await {
            Ok(_) => log::info!("report Lease {} deleted", self.name),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => log::warn!("deleting the report Lease {}: {e}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::distribution::{Named, Refusal};
    use super::*;

    fn target(file: &str, generation: i64) -> Target {
        Target {
            file: file.into(),
            kind: "VirtualService",
            group: "networking.istio.io",
            plural: "virtualservices",
            namespace: "shop".into(),
            name: "a".into(),
            api_version: "networking.istio.io/v1".into(),
            generation: Some(generation),
        }
    }

    #[test]
    fn reports_add_up_for_the_generation_the_leader_sees() {
        let targets = [target("a", 2), target("b", 1)];
        let refused = Programming {
            total: 2,
            programmed: 1,
            refused: Named {
                count: 1,
                first: vec![Refusal {
                    proxy: "gw-9".into(),
                    version: 4,
                    reason: "bad".into(),
                }],
            },
            ..Programming::default()
        };
        let other = Report::new(&targets, &[refused, Programming::default()]);
        assert_eq!(other.resources.len(), 1, "only what its proxies should run");
        let text = serde_json::to_string(&other).expect("JSON");
        let back: Report = serde_json::from_str(&text).expect("reads back");
        assert_eq!(back, other);
        let lagging = Report::new(
            &[target("a", 1)],
            &[Programming {
                total: 3,
                programmed: 3,
                ..Programming::default()
            }],
        );
        let mut mine = vec![
            Programming {
                total: 1,
                programmed: 1,
                ..Programming::default()
            },
            Programming::default(),
        ];
        add_up(&targets, &mut mine, &[back, lagging]);
        assert_eq!((mine[0].total, mine[0].programmed), (6, 2));
        assert_eq!(mine[0].refused.names(), ["gw-9"]);
        assert_eq!(mine[0].pending.count, 3, "a replica behind has not programmed it yet");
        assert_eq!(mine[1], Programming::default());
    }

    #[test]
    fn lease_names_are_dns_names() {
        assert_eq!(lease_name("ctl-a"), "strait-controller-report-ctl-a");
        assert_eq!(lease_name("Host_1-42"), "strait-controller-report-host-1-42");
        assert!(lease_name(&"x".repeat(400)).len() <= 253);
    }
}
