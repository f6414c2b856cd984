//! The status writer. On every replica, it counts on how many of its own proxies
//! each Istio resource is programmed and publishes that for the leader
//! (`reports`). On the leader (`leader`), it adds up every replica's count, computes
//! each resource's status, and writes what changed with a merge patch of `status`
//! through the resource's status subresource (which never bumps its generation).
//! Changes are gathered for `interval` and written in one round; a status equal to
//! the last one written (or, at the start of a term, to the one stored) is not
//! written again, times aside.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::Client;
use tokio::sync::watch;
use tokio::time::Instant;

use super::distribution::{distribution, targets, Programming, Target};
use super::messages::by_file;
use super::reports::{add_up, delete_forgotten, Publisher, Report, Reports};
use super::{conditions, IstioStatus, ValidationMessage};
use crate::controller::{until_stopped, FIELD_MANAGER};
use crate::push::status::Registry;
use crate::store::{State, Store};

/// Patches in flight at once.
const CONCURRENT: usize = 8;

/// Counts this replica's proxies for the leader, and writes status while `leader`
/// is true.
pub struct Writer {
    /// The cluster.
    pub client: Client,
    /// The resources, as the proxies are sent them.
    pub store: Arc<Store>,
    /// What each connected proxy runs.
    pub registry: Arc<Registry>,
    /// Whether this replica leads.
    pub leader: watch::Receiver<bool>,
    /// The least time between two rounds.
    pub interval: Duration,
    /// This replica's report.
    pub publisher: Publisher,
    /// The replicas' reports (`reports::watch_reports` keeps them).
    pub reports: Arc<Reports>,
    /// The report Leases' namespace.
    pub leases: Api<Lease>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// What one state of the store gives, computed once per version.
struct Prepared {
    version: u64,
    targets: Arc<Vec<Target>>,
    /// Computed when first needed (by a leader).
    messages: Option<Arc<HashMap<String, Vec<ValidationMessage>>>>,
}

/// One term's memory: what was written (or found stored), by document.
#[derive(Default)]
struct Term {
    written: HashMap<String, IstioStatus>,
    /// Kinds (by apiVersion and plural) whose stored statuses were read.
    listed: HashSet<(String, &'static str)>,
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn resource(t: &Target) -> ApiResource {
    ApiResource {
        group: t.group.to_string(),
        version: t.api_version.rsplit('/').next().unwrap_or_default().to_string(),
        api_version: t.api_version.clone(),
        kind: t.kind.to_string(),
        plural: t.plural.to_string(),
    }
}

impl Writer {
    /// Counts, publishes and (leading) writes until `stop` turns true; then
    /// withdraws this replica's report.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), std::convert::Infallible> {
        let mut term: Option<Term> = None;
        let mut prepared: Option<Prepared> = None;
        let mut states = self.store.subscribe();
        let mut changes = self.registry.changes();
        let mut reports = self.reports.changes();
        loop {
            // Seen before the round: a change while it runs makes another.
            states.borrow_and_update();
            changes.borrow_and_update();
            reports.borrow_and_update();
            let complete = self.round(&mut term, &mut prepared).await;
            // The next round: on a change, when the report is to be renewed, when
            // another replica's report goes stale, or to retry what failed.
            let mut wake = self.publisher.due();
            if term.is_some() {
                if let Some(stale) = self.reports.next_expiry() {
                    wake = wake.min(stale);
                }
            }
            if !complete {
                wake = wake.min(Instant::now() + self.interval);
            }
            tokio::select! {
                _ = until_stopped(&mut stop) => break,
                _ = self.leader.changed() => {}
                _ = states.changed() => {}
                _ = changes.changed() => {}
                // Other replicas' reports matter to the leader only.
                _ = reports.changed(), if term.is_some() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            tokio::select! {
                _ = until_stopped(&mut stop) => break,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
        self.publisher.withdraw().await;
        Ok(())
    }

    /// Counts this replica's proxies and publishes the count; leading, writes every
    /// status that differs from what is known. False when some write failed (the
    /// round is to be tried again).
    async fn round(&mut self, term: &mut Option<Term>, prepared: &mut Option<Prepared>) -> bool {
        let state = self.store.current();
        // Version 0 is the store before its sources have loaded.
        if state.version == 0 {
            return true;
        }
        let targets = prepare_targets(prepared, &state).await;
        let holdings = self.registry.holdings();
        let mut programming = {
            let (state, targets) = (state.clone(), targets.clone());
            tokio::task::spawn_blocking(move || distribution(&state, &holdings, &targets))
                .await
                .unwrap_or_default()
        };
        self.publisher.publish(Report::new(&targets, &programming)).await;
        if !*self.leader.borrow() {
            if term.take().is_some() {
                log::info!("no longer leading: status is another replica's to write");
            }
            return true;
        }
        let term = term.get_or_insert_with(|| {
            log::info!("leading: writing status on the Istio resources");
            Term::default()
        });
        add_up(&targets, &mut programming, &self.reports.fresh(self.publisher.name()));
        delete_forgotten(&self.leases, &self.reports).await;
        let messages = prepare_messages(prepared, &state).await;
        self.write_all(term, &state, &targets, &programming, &messages).await
    }

    async fn write_all(
        &self,
        term: &mut Term,
        state: &State,
        targets: &[Target],
        programming: &[Programming],
        messages: &HashMap<String, Vec<ValidationMessage>>,
    ) -> bool {
        let mut complete = self.read_stored(term, targets).await;
        let now = now();
        let mut writes = Vec::new();
        for (t, p) in targets.iter().zip(programming) {
            let desired = IstioStatus {
                conditions: conditions(p, t.generation),
                validation_messages: messages.get(&t.file).cloned().unwrap_or_default(),
                observed_generation: t.generation,
            };
            let previous = term.written.get(&t.file);
            if previous.is_some_and(|w| desired.same_as(w)) {
                continue;
            }
            writes.push((t.clone(), desired.stamped(previous, &now)));
        }
        let (client, leader) = (self.client.clone(), self.leader.clone());
        let mut results = futures_util::stream::iter(writes)
            .map(move |(t, status)| write(client.clone(), leader.clone(), t, status))
            .buffer_unordered(CONCURRENT);
        let mut written = 0;
        while let Some((t, status, outcome)) = results.next().await {
            match outcome {
                Ok(()) => {
                    written += 1;
                    term.written.insert(t.file.clone(), status);
                }
                // Deleted meanwhile: the next state drops it.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    log::warn!("status of {} {}/{}: {e}; trying again", t.kind, t.namespace, t.name);
                    complete = false;
                }
            }
        }
        if written > 0 {
            log::info!("status written on {written} resource(s) at version {}", state.version);
        }
        let current: HashSet<&str> = targets.iter().map(|t| t.file.as_str()).collect();
        term.written.retain(|file, _| current.contains(file.as_str()));
        complete
    }

    /// Reads the stored statuses of the kinds of `targets` not read yet this term:
    /// what a former leader wrote is not written again. False when a list failed.
    async fn read_stored(&self, term: &mut Term, targets: &[Target]) -> bool {
        let mut complete = true;
        let files: HashMap<(&str, &str, &str), &str> = targets
            .iter()
            .map(|t| ((t.kind, t.namespace.as_str(), t.name.as_str()), t.file.as_str()))
            .collect();
        for t in targets {
            if term.listed.contains(&(t.api_version.clone(), t.plural)) {
                continue;
            }
            let api = Api::<DynamicObject>::all_with(self.client.clone(), &resource(t));
            let list = match api.list(&ListParams::default()).await {
                Ok(list) => list,
                Err(e) => {
                    log::warn!("listing {}: {e}; trying again", t.plural);
                    complete = false;
                    continue;
                }
            };
            for object in list.items {
                let Some(status) = object.data.get("status").cloned() else {
                    continue;
                };
                let (namespace, name) = (
                    object.metadata.namespace.as_deref().unwrap_or_default(),
                    object.metadata.name.as_deref().unwrap_or_default(),
                );
                let (Some(file), Ok(status)) = (
                    files.get(&(t.kind, namespace, name)),
                    serde_json::from_value::<IstioStatus>(status),
                ) else {
                    continue;
                };
                term.written.insert(file.to_string(), status);
            }
            term.listed.insert((t.api_version.clone(), t.plural));
        }
        complete
    }
}

/// Writes `status` on `t` if this replica still leads: a former leader must not
/// write over its successor.
async fn write(
    client: Client,
    leader: watch::Receiver<bool>,
    t: Target,
    status: IstioStatus,
) -> (Target, IstioStatus, Result<(), kube::Error>) {
    if !*leader.borrow() {
        return (t, status, Ok(()));
    }
    let api = Api::<DynamicObject>::namespaced_with(client, &t.namespace, &resource(&t));
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let outcome = api
        .patch_status(&t.name, &params, &Patch::Merge(status.merge_patch()))
        .await
        .map(|_| ());
    (t, status, outcome)
}

/// The targets of `state`, computed once per version.
async fn prepare_targets(prepared: &mut Option<Prepared>, state: &Arc<State>) -> Arc<Vec<Target>> {
    if let Some(p) = prepared.as_ref().filter(|p| p.version == state.version) {
        return p.targets.clone();
    }
    let computed = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || targets(&state)).await
    };
    let targets = Arc::new(computed.unwrap_or_default());
    *prepared = Some(Prepared {
        version: state.version,
        targets: targets.clone(),
        messages: None,
    });
    targets
}

/// The findings of `state` (whose targets `prepared` holds), computed once per version.
async fn prepare_messages(
    prepared: &mut Option<Prepared>,
    state: &Arc<State>,
) -> Arc<HashMap<String, Vec<ValidationMessage>>> {
    if let Some(messages) = prepared.as_ref().and_then(|p| p.messages.clone()) {
        return messages;
    }
    let computed = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || by_file(&state.loaded, &state.mesh)).await
    };
    let messages = Arc::new(computed.unwrap_or_default());
    if let Some(p) = prepared.as_mut() {
        p.messages = Some(messages.clone());
    }
    messages
}
