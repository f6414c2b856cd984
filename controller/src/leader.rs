//! Leader election among controller replicas, with a `coordination.k8s.io` Lease
//! (`strait-controller` in the controller's namespace) as client-go's leader
//! election uses one: every replica serves pushes; the one holding the Lease also
//! writes status on the Istio resources (and whatever else must be done once per
//! cluster: `Leadership`).
//!
//! The holder renews the Lease every `--lease-renew`; the others watch it and take
//! it when its holder let it go (a graceful stop releases it at once) or when it
//! has not changed for its `leaseDurationSeconds`, measured on their own clock
//! from when they saw it change, never by comparing clocks. Every write carries the
//! `resourceVersion` it was read at, so of two replicas taking it at once one
//! fails. A holder that cannot renew for `lease duration - renew period` stops
//! leading before any other replica may start.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use prometheus::IntGauge;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::controller::until_stopped;

/// The Lease's name.
pub const LEASE: &str = "strait-controller";

/// A replica's pause after a failed request before the next.
const RETRY: Duration = Duration::from_secs(1);

/// The command-line flags of the election (flattened into `strait-controller`'s).
#[derive(clap::Args, Debug, Clone)]
pub struct LeaderFlags {
    /// How long the Lease holds without renewal before another replica may take
    /// it (whole seconds): e.g. 15s.
    #[arg(long, env = "STRAIT_LEASE_DURATION", default_value = "15s", value_parser = parse_seconds)]
    pub lease_duration: Duration,
    /// How often the leader renews the Lease; shorter than --lease-duration.
    #[arg(long, env = "STRAIT_LEASE_RENEW", default_value = "5s", value_parser = parse_seconds)]
    pub lease_renew: Duration,
}

/// A duration in Istio's form (`15s`, `1m`) of at least one second.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let d = strait_config::duration::parse(text).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err(format!("{text}: at least 1s"));
    }
    Ok(d)
}

/// Why the election cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The flags contradict each other.
    #[error("--lease-renew ({renew:?}) must be shorter than --lease-duration ({duration:?})")]
    Flags {
        /// --lease-duration.
        duration: Duration,
        /// --lease-renew.
        renew: Duration,
    },
    /// The gauge cannot be registered.
    #[error("the leader gauge: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Whether this replica leads now, and a way to follow it.
#[derive(Debug, Clone)]
pub struct Leadership {
    leading: watch::Receiver<bool>,
}

impl Leadership {
    /// A replica alone, leading for ever (no cluster to elect through).
    pub fn always() -> Leadership {
        let (tx, leading) = watch::channel(true);
        // The sender is let go: a closed channel keeps its last value.
        drop(tx);
        Leadership { leading }
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Follows the lead: true while this replica leads.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }
}

/// This replica's name in the Lease: its Pod's (`POD_NAME`, set from the downward
/// API), else its host's name and its process id.
pub fn identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.trim().is_empty()) {
        return pod.trim().to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "strait-controller".into());
    format!("{host}-{}", std::process::id())
}

/// This replica's part in the election (`run` it beside the controller).
pub struct Election {
    api: Api<Lease>,
    identity: String,
    duration: Duration,
    renew: Duration,
    leading: watch::Sender<bool>,
    gauge: IntGauge,
    /// The Lease as last seen (None: absent or not read yet), and when it was
    /// seen to change.
    seen: Option<(Lease, Instant)>,
    /// When this replica last renewed it.
    renewed: Option<Instant>,
}

/// Prepares this replica's part in the election in `namespace` as `identity`: the
/// leadership to follow, and the election to run. The gauge
/// `strait_controller_leader` joins `metrics`.
pub fn prepare(
    client: Client,
    namespace: &str,
    identity: String,
    flags: &LeaderFlags,
    metrics: &prometheus::Registry,
) -> Result<(Leadership, Election), Error> {
    if flags.lease_renew >= flags.lease_duration {
        return Err(Error::Flags {
            duration: flags.lease_duration,
            renew: flags.lease_renew,
        });
    }
    let gauge = IntGauge::new(
        "strait_controller_leader",
        "1 while this controller replica holds the leader Lease, else 0.",
    )?;
    metrics.register(Box::new(gauge.clone()))?;
    let (leading, follow) = watch::channel(false);
    let election = Election {
        api: Api::namespaced(client, namespace),
        identity,
        duration: flags.lease_duration,
        renew: flags.lease_renew,
        leading,
        gauge,
        seen: None,
        renewed: None,
    };
    Ok((Leadership { leading: follow }, election))
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn version(lease: &Lease) -> Option<&str> {
    lease.metadata.resource_version.as_deref()
}

fn holder(lease: &Lease) -> &str {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or_default()
}

fn declared_duration(lease: &Lease) -> Duration {
    let seconds = lease.spec.as_ref().and_then(|s| s.lease_duration_seconds).unwrap_or(0);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

impl Election {
    /// Takes part until `stop` turns true; a leader then releases the Lease.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), std::convert::Infallible> {
        let config = watcher::Config::default().fields(&format!("metadata.name={LEASE}"));
        let mut events = std::pin::pin!(watcher(self.api.clone(), config).default_backoff());
        let mut next = Instant::now();
        loop {
            tokio::select! {
                _ = until_stopped(&mut stop) => break,
                event = events.next() => match event {
                    Some(Ok(Event::Apply(lease) | Event::InitApply(lease))) => self.see(Some(lease)),
                    Some(Ok(Event::Delete(_))) => self.see(None),
                    Some(Ok(Event::Init | Event::InitDone)) => {}
                    Some(Err(e)) => log::warn!("watching Lease {LEASE}: {e}; retrying"),
                    None => break,
                },
                _ = tokio::time::sleep_until(next) => {}
            }
            // Every change is looked at now: a released Lease is taken at once.
            next = self.step().await;
        }
        self.release().await;
        Ok(())
    }

    /// Records the Lease as seen now; its change time moves only when it changed.
    fn see(&mut self, lease: Option<Lease>) {
        self.seen = match (lease, self.seen.take()) {
            (None, _) => None,
            (Some(lease), Some((old, at))) if version(&old) == version(&lease) => Some((lease, at)),
            (Some(lease), _) => Some((lease, Instant::now())),
        };
    }

    fn lead(&mut self, leading: bool) {
        if *self.leading.borrow() != leading {
            log::info!(
                "{} {} Lease {LEASE}",
                self.identity,
                if leading { "holds" } else { "does not hold" }
            );
        }
        self.leading
            .send_if_modified(|l| std::mem::replace(l, leading) != leading);
        self.gauge.set(i64::from(leading));
    }

    fn leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Acquires, renews or waits, as the Lease seen says; returns when to look again.
    async fn step(&mut self) -> Instant {
        let now = Instant::now();
        // A leader that could not renew in time stops before another may start.
        if let Some(renewed) = self.renewed.filter(|_| self.leading()) {
            if now >= renewed + (self.duration - self.renew) {
                log::warn!(
                    "{}: the Lease was not renewed in time; no longer leading",
                    self.identity
                );
                self.lead(false);
            }
        }
        let Some((lease, changed)) = self.seen.clone() else {
            // Absent, or not read yet: read it, and create it when absent.
            return match self.api.get_opt(LEASE).await {
                Ok(Some(lease)) => {
                    self.see(Some(lease));
                    now
                }
                Ok(None) => self.create(now).await,
                Err(e) => self.failed("reading", &e, now),
            };
        };
        let held_by = holder(&lease);
        if held_by == self.identity {
            match self.renewed {
                // Renewed by this very process, not yet due.
                Some(renewed) if self.leading() && now < renewed + self.renew => renewed + self.renew,
                _ => self.write(lease, false, now).await,
            }
        } else if held_by.is_empty() || now >= changed + declared_duration(&lease) {
            self.write(lease, true, now).await
        } else {
            self.lead(false);
            changed + declared_duration(&lease)
        }
    }

    /// Renews `lease` (or takes it over): written at the version it was read, so a
    /// concurrent writer makes this fail.
    async fn write(&mut self, mut lease: Lease, take: bool, now: Instant) -> Instant {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if take || spec.acquire_time.is_none() {
            spec.acquire_time = Some(crate::leader::now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + i32::from(take));
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX));
        spec.renew_time = Some(crate::leader::now());
        match self.api.replace(LEASE, &PostParams::default(), &lease).await {
            Ok(lease) => {
                self.see(Some(lease));
                self.renewed = Some(now);
                self.lead(true);
                now + self.renew
            }
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                // Another replica wrote it first (or it was deleted): read it again.
                self.seen = None;
                if !take {
                    self.lead(false);
                }
                now + RETRY.min(self.renew)
            }
            Err(e) => self.failed(if take { "taking" } else { "renewing" }, &e, now),
        }
    }

    async fn create(&mut self, now: Instant) -> Instant {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)),
                acquire_time: Some(crate::leader::now()),
                renew_time: Some(crate::leader::now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(lease) => {
                self.see(Some(lease));
                self.renewed = Some(now);
                self.lead(true);
                now + self.renew
            }
            // Created by another replica meanwhile.
            Err(kube::Error::Api(e)) if e.code == 409 => now,
            Err(e) => self.failed("creating", &e, now),
        }
    }

    fn failed(&mut self, doing: &str, error: &kube::Error, now: Instant) -> Instant {
        log::warn!("{doing} Lease {LEASE}: {error}; retrying");
        // Looked at again in time to step down if renewing keeps failing.
        let mut next = now + RETRY;
        if let Some(renewed) = self.renewed.filter(|_| self.leading()) {
            next = next.min(renewed + (self.duration - self.renew));
        }
        next
    }

    /// On a graceful stop, a leader lets the Lease go so that another replica takes
    /// it at once, not a lease duration later.
    async fn release(&mut self) {
        let was_leading = self.leading();
        self.lead(false);
        let Some((mut lease, _)) = self.seen.take().filter(|_| was_leading) else {
            return;
        };
        if holder(&lease) != self.identity {
            return;
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        match self.api.replace(LEASE, &PostParams::default(), &lease).await {
            Ok(_) => log::info!("{}: Lease {LEASE} released", self.identity),
            Err(e) => log::warn!("releasing Lease {LEASE}: {e}; another replica takes it when it expires"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_whole_seconds_or_more() {
        assert_eq!(parse_seconds("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_seconds("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_seconds("500ms").is_err());
        assert!(parse_seconds("soon").is_err());
    }

    #[test]
    fn a_lone_replica_leads() {
        assert!(Leadership::always().is_leader());
        let pod = identity();
        assert!(!pod.is_empty());
    }
}
