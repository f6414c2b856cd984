//! ACME in Kubernetes mode: the leader orders the certificates the cluster's Gateways
//! ask for (`strait.io/acme`) from the issuers of the mesh config, with the renewal and
//! backoff of file mode (`strait_acme`), and keeps each in the `kubernetes.io/tls`
//! Secret its server's `credentialName` names; every gateway loads it from there like
//! any TLS Secret. The answers to the CA's challenges are published in the Secret
//! `strait-acme-challenges` of the root namespace, which every replica pushes to its
//! gateways, so whichever gateway the CA reaches answers. Accounts are kept in
//! Secrets of the controller's namespace, so a new leader goes on with them.

mod secrets;

use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, Opts};
use strait_acme::Renewer;
use strait_config::acme::{requested_in, Issuer, ManagedCert};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::controller::{until_stopped, Controller};
use crate::leader::Leadership;
use crate::store::Store;

pub use secrets::{account_secret_name, SecretStore, SecretsResponder, MANAGED_ANNOTATION};

/// The command-line flags of ACME in Kubernetes mode.
#[derive(clap::Args, Debug, Clone)]
pub struct AcmeFlags {
    /// How often the leader looks at the certificates the Gateways ask for (whole
    /// seconds, e.g. 60s).
    #[arg(long, env = "STRAIT_ACME_CHECK_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub acme_check_interval: Duration,
    /// How long the answers to a CA's challenges are given to reach every gateway
    /// (through the API server, each replica and its push) before the CA is told to
    /// look at them, e.g. 3s.
    #[arg(long, env = "STRAIT_ACME_PROPAGATION", default_value = "3s", value_parser = parse_duration)]
    pub acme_propagation: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    strait_config::duration::parse(text).map_err(|e| e.to_string())
}

/// Why ACME cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The failure counter cannot be registered.
    #[error("ACME metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Orders certificates while this replica leads (`controller.leadership()`),
/// keeping accounts in `namespace`.
pub fn start(
    controller: &mut Controller,
    client: kube::Client,
    namespace: &str,
    flags: &AcmeFlags,
) -> Result<(), Error> {
    let failures = IntCounterVec::new(
        Opts::new(
            "strait_acme_failures_total",
            "ACME orders that failed, by issuer and first host (the leader orders).",
        ),
        &["issuer", "host"],
    )?;
    controller.metrics.registry().register(Box::new(failures.clone()))?;
    let leadership = controller.leadership();
    let renewer = Renewer::new(
        Vec::new(),
        Arc::new(SecretStore::new(client.clone(), namespace, leadership.clone())),
        Arc::new(SecretsResponder::new(client, flags.acme_propagation)),
        Box::new(move |issuer, host| failures.with_label_values(&[issuer, host]).inc()),
    );
    let task = run(
        controller.store.clone(),
        renewer,
        leadership,
        flags.acme_check_interval,
        controller.stop_signal(),
    );
    controller.add_source("acme", task);
    Ok(())
}

async fn run(
    store: Arc<Store>,
    mut renewer: Renewer,
    leadership: Leadership,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), std::convert::Infallible> {
    let mut states = store.subscribe();
    let mut leader = leadership.subscribe();
    // What the last round looked at: a new state (endpoints change often) starts a
    // round only when the certificates asked for or the issuers changed; renewals
    // wait for the interval.
    let mut last: Option<(Vec<ManagedCert>, Vec<Issuer>)> = None;
    let mut next_round = Instant::now();
    loop {
        let state = store.current();
        let looked_at = (requested_in(&state.loaded.bundle), state.mesh.acme_issuers.clone());
        let due = last.as_ref() != Some(&looked_at) || Instant::now() >= next_round;
        if leadership.is_leader() && due {
            renewer.set_issuers(looked_at.1.clone());
            for m in &looked_at.0 {
                if !leadership.is_leader() {
                    break;
                }
                // The Secret itself is what gateways serve: the store reads it.
                renewer.tend(m, None).await;
            }
            last = Some(looked_at);
            next_round = Instant::now() + every;
        }
        tokio::select! {
            _ = until_stopped(&mut stop) => return Ok(()),
            _ = states.changed() => {}
            _ = leader.changed() => last = None,
            _ = tokio::time::sleep_until(next_round) => {}
        }
    }
}
