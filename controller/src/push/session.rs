//! One proxy's stream. A session waits for new states of the store, builds (or
//! finds) its proxy's configuration and sends what changed for it: nothing, the
//! endpoints, or the full configuration. It reads the proxy's ACKs and NACKs into
//! status and metrics.
//!
//! A slow proxy costs nothing more than a fast one: the session holds the latest
//! state (a `watch` receiver, not a queue) and sends into a channel of one message,
//! so it builds the next message only once the proxy has taken the previous one,
//! and builds it from the latest state then. Messages in flight are limited
//! controller-wide (`throttle`), each held until its proxy answers or a few
//! seconds pass, so a change sent to thousands of proxies does not hold thousands
//! of encoded configurations (or endpoint tables) at once.

use std::sync::Arc;
use std::time::Duration;

use strait_push::proto;
use strait_push::proto::controller_message::Kind as Out;
use strait_push::proto::proxy_message::Kind as In;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};

use super::builds::{Builds, Prepared, Ready};
use super::digest::Digest;
use super::identity::Identity;
use super::metrics::{Metrics, CONFIG, ENDPOINTS};
use super::status::{self, Refused, Registry};
use crate::store::State;

/// How long a message holds its place in the throttle without an answer.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// Messages in flight at once, controller-wide (Istio's push throttle has the same
/// default).
pub const MAX_IN_FLIGHT: usize = 100;

/// What the controller sends on a stream.
pub type Outgoing = Result<proto::ControllerMessage, tonic::Status>;

/// Digests of what a proxy was last sent (None: not sent, or unknown since a NACK).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Of the configuration.
    pub config: Option<Digest>,
    /// Of the endpoints.
    pub endpoints: Option<Digest>,
}

/// What a proxy is sent for a new version (the shared build's message, copied
/// only once a place in the throttle is had).
#[derive(Debug)]
pub enum Next<'a> {
    /// Neither its configuration nor its endpoints changed.
    Nothing,
    /// Only its endpoints changed: these parts.
    Endpoints(&'a [proto::Endpoints]),
    /// Its configuration changed (or is unknown): these parts.
    Config(&'a [proto::Config]),
}

/// What a proxy last sent `sent` is sent for `ready`.
pub fn next<'a>(sent: &Sent, ready: &'a Ready) -> Next<'a> {
    if sent.config != Some(ready.config_digest) {
        Next::Config(&ready.config_parts)
    } else if sent.endpoints != Some(ready.endpoints_digest) {
        Next::Endpoints(&ready.endpoint_parts)
    } else {
        Next::Nothing
    }
}

/// The message a session waits for an answer to.
struct InFlight {
    version: u64,
    kind: &'static str,
    published: std::time::Instant,
    /// Its place in the throttle (None once it gave it up).
    permit: Option<OwnedSemaphorePermit>,
    deadline: Instant,
    /// The build it carried, for a configuration: once ACKed, the base of deltas.
    config: Option<Arc<Prepared>>,
    /// The build the proxy runs once it ACKs (for status on the Istio resources):
    /// this message's, or a later one equal to it.
    runs: Arc<Prepared>,
}

/// One connected proxy's session.
#[derive(Debug)]
pub struct Session {
    /// Its connection number in `status`.
    pub connection: u64,
    /// Who the proxy is.
    pub identity: Identity,
    /// The store's states.
    pub states: watch::Receiver<Arc<State>>,
    /// Builds shared by all sessions.
    pub builds: Arc<Builds>,
    /// Proxy status.
    pub status: Arc<Registry>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Places for messages in flight.
    pub throttle: Arc<Semaphore>,
}

#[derive(Default)]
struct Progress {
    sent: Sent,
    in_flight: Option<InFlight>,
    /// The configuration the proxy last ACKed on this stream: what it holds, and what
    /// the next configuration is sent as a delta on.
    acked: Option<Arc<Prepared>>,
}

impl Session {
    /// Serves the proxy until its stream ends, `out` is dropped, or `stop` turns true.
    pub async fn run<S>(mut self, mut inbound: S, out: mpsc::Sender<Outgoing>, mut stop: watch::Receiver<bool>)
    where
        S: Stream<Item = Result<proto::ProxyMessage, tonic::Status>> + Unpin,
    {
        let mut progress = Progress::default();
        // A new stream starts with the state in force.
        let mut dirty = true;
        loop {
            let deadline = progress
                .in_flight
                .as_ref()
                .and_then(|f| f.permit.as_ref().map(|_| f.deadline));
            tokio::select! {
                _ = crate::controller::until_stopped(&mut stop) => return,
                message = inbound.next() => match message {
                    Some(Ok(m)) => self.answer(m, &mut progress),
                    Some(Err(e)) => {
                        log::info!("proxy {}: stream ended: {e}", self.identity.id);
                        return;
                    }
                    None => return,
                },
                changed = self.states.changed(), if !dirty => {
                    if changed.is_err() {
                        return;
                    }
                    dirty = true;
                }
                permit = out.reserve(), if dirty => {
                    let Ok(permit) = permit else { return };
                    dirty = false;
                    self.push(permit, &out, &mut progress).await;
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    // A proxy slow to answer gives its place to another.
                    if let Some(f) = progress.in_flight.as_mut() {
                        f.permit = None;
                    }
                }
            }
        }
    }

    async fn push(
        &mut self,
        permit: mpsc::Permit<'_, Outgoing>,
        out: &mpsc::Sender<Outgoing>,
        progress: &mut Progress,
    ) {
        let state = self.states.borrow_and_update().clone();
        // Version 0 is the empty store before any source has loaded: nothing to serve.
        if state.version == 0 {
            return;
        }
        let prepared = self.builds.get(&state, &self.identity).await;
        let ready = match &prepared.outcome {
            Err(errors) => {
                if let Some(first) = errors.first() {
                    log::warn!(
                        "proxy {}: version {} not sent, it does not build: {first}",
                        self.identity.id,
                        state.version
                    );
                }
                self.status
                    .update(self.connection, |s| s.build_errors.clone_from(errors));
                return;
            }
            Ok(ready) => ready,
        };
        self.status.update(self.connection, |s| s.build_errors.clear());
        let next = next(&progress.sent, ready);
        let kind = match next {
            Next::Nothing => {
                // Equal digests: the proxy runs (or, once it answers, will run) this
                // build's configuration, though nothing is sent. Only an ACK can have
                // answered the last message here: a NACK clears `sent`.
                match progress.in_flight.as_mut() {
                    Some(f) => f.runs = prepared.clone(),
                    None => self.status.runs(self.connection, prepared.clone()),
                }
                return;
            }
            Next::Endpoints(_) => ENDPOINTS,
            Next::Config(_) => CONFIG,
        };
        // A delta only on what the proxy is known to hold: nothing unanswered.
        let base = match (&next, &progress.in_flight) {
            (Next::Config(_), None) => progress.acked.clone(),
            _ => None,
        };
        // What was in flight is superseded: its place in the throttle goes first, so
        // that sessions never wait for places they hold themselves. The message is
        // made only once a place is had: a thousand sessions waiting for places
        // hold no copies.
        progress.in_flight = None;
        let place = self.throttle.clone().acquire_owned().await.ok();
        let delta = base.and_then(|base| self.builds.delta(&base, &prepared, &self.identity));
        let mut parts: Vec<Out> = match (next, &delta) {
            (Next::Config(_), Some(delta)) => delta.iter().cloned().map(Out::Config).collect(),
            (Next::Config(c), None) => c.iter().cloned().map(Out::Config).collect(),
            (Next::Endpoints(e), _) => e.iter().cloned().map(Out::Endpoints).collect(),
            (Next::Nothing, _) => return,
        };
        let rest = parts.split_off(1.min(parts.len()));
        let Some(first) = parts.pop() else { return };
        permit.send(Ok(proto::ControllerMessage { kind: Some(first) }));
        // The other parts follow in a row, each sent once the stream has taken the
        // one before: one part at a time is what this proxy's stream buffers.
        for part in rest {
            let message = proto::ControllerMessage { kind: Some(part) };
            if out.send(Ok(message)).await.is_err() {
                return;
            }
        }
        self.metrics.pushes.with_label_values(&[kind]).inc();
        progress.sent = Sent {
            config: Some(ready.config_digest),
            endpoints: Some(ready.endpoints_digest),
        };
        progress.in_flight = Some(InFlight {
            version: state.version,
            kind,
            published: prepared.published,
            permit: place,
            deadline: Instant::now() + ANSWER_WAIT,
            config: (kind == CONFIG).then(|| prepared.clone()),
            runs: prepared.clone(),
        });
        self.status.update(self.connection, |s| {
            s.last_sent = Some(status::Sent {
                version: state.version,
                kind: kind.to_string(),
                at: status::now(),
            });
        });
    }

    fn answer(&self, message: proto::ProxyMessage, progress: &mut Progress) {
        match message.kind {
            Some(In::Ack(ack)) => {
                self.status
                    .update(self.connection, |s| s.last_acked = Some(ack.version));
                if let Some(f) = progress.in_flight.take_if(|f| f.version == ack.version) {
                    self.metrics.convergence.observe(f.published.elapsed().as_secs_f64());
                    self.status.runs(self.connection, f.runs);
                    if f.config.is_some() {
                        progress.acked = f.config;
                    }
                }
            }
            Some(In::Nack(nack)) => {
                let kind = progress
                    .in_flight
                    .take_if(|f| f.version == nack.version)
                    .map_or(CONFIG, |f| f.kind);
                self.metrics.rejects.with_label_values(&[kind]).inc();
                log::warn!(
                    "proxy {} refused version {} ({kind}): {}",
                    self.identity.id,
                    nack.version,
                    nack.diagnostics.first().map_or("", String::as_str)
                );
                // What it runs is unknown now: the next change is sent in full.
                progress.sent = Sent::default();
                progress.acked = None;
                self.status.update(self.connection, |s| {
                    s.last_nack = Some(Refused {
                        version: nack.version,
                        diagnostics: nack.diagnostics,
                    });
                });
            }
            Some(In::Hello(_)) => log::warn!("proxy {}: a second Hello is ignored", self.identity.id),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Document, Store};

    fn config(host: &str, backend: &str) -> Vec<Document> {
        vec![Document {
            file: "app.yaml".into(),
            text: format!("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: app, namespace: istio-system}}\nspec:\n  hosts: [{host}]\n  gateways: [gw]\n  http:\n  - route: [{{destination: {{host: backend.example.com}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: backend, namespace: istio-system}}\nspec:\n  hosts: [backend.example.com]\n  resolution: STATIC\n  ports: [{{number: 80, name: http}}]\n  endpoints: [{{address: {backend}}}]\n"),
        }]
    }

    struct Proxy {
        messages: mpsc::Receiver<Outgoing>,
        answers: mpsc::Sender<Result<proto::ProxyMessage, tonic::Status>>,
        metrics: Arc<Metrics>,
        _stop: watch::Sender<bool>,
    }

    /// A session for a gateway whose proxy reads `messages` only when the test does.
    fn connect(store: &Store) -> Proxy {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let status = Arc::new(Registry::default());
        let identity = Identity::ingress_gateway("gw");
        let session = Session {
            connection: status.connect(identity.clone()),
            identity,
            states: store.subscribe(),
            builds: Arc::new(Builds::new(metrics.clone())),
            status,
            metrics: metrics.clone(),
            throttle: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        };
        let (out, messages) = mpsc::channel(1);
        let (answers, inbound) = mpsc::channel(8);
        let (stop_tx, stop) = watch::channel(false);
        tokio::spawn(session.run(tokio_stream::wrappers::ReceiverStream::new(inbound), out, stop));
        Proxy {
            messages,
            answers,
            metrics,
            _stop: stop_tx,
        }
    }

    async fn receive(proxy: &mut Proxy) -> (u64, &'static str) {
        let message = tokio::time::timeout(Duration::from_secs(10), proxy.messages.recv())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("not an error");
        match message.kind {
            Some(Out::Config(c)) => (c.version, CONFIG),
            Some(Out::Endpoints(e)) => (e.version, ENDPOINTS),
            None => panic!("empty message"),
        }
    }

    #[tokio::test]
    async fn a_slow_proxy_gets_the_latest_state_not_a_queue() {
        let store = Store::new(Duration::from_millis(1));
        store.replace("folder", config("v0.example.com", "10.0.0.1"));
        store.publish_now();
        let mut proxy = connect(&store);
        assert_eq!(receive(&mut proxy).await, (1, CONFIG));
        // The proxy reads nothing while fifty versions are published.
        for i in 1..=50 {
            store.replace("folder", config(&format!("v{i}.example.com"), "10.0.0.1"));
            store.publish_now();
            tokio::task::yield_now().await;
        }
        // One message may wait in the channel; the next one is made from the latest state.
        let (first, _) = receive(&mut proxy).await;
        let second = if first == 51 {
            first
        } else {
            receive(&mut proxy).await.0
        };
        assert_eq!(second, 51, "the latest version, built when the proxy was ready for it");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(proxy.messages.try_recv().is_err(), "nothing queued behind it");
        assert!(
            proxy.metrics.pushes.with_label_values(&[CONFIG]).get() <= 3,
            "not one push per version"
        );
    }

    #[tokio::test]
    async fn only_what_changed_is_sent() {
        let store = Store::new(Duration::from_millis(1));
        store.replace("folder", config("app.example.com", "10.0.0.1"));
        store.publish_now();
        let mut proxy = connect(&store);
        assert_eq!(receive(&mut proxy).await, (1, CONFIG));
        let ack = |version| {
            Ok(proto::ProxyMessage {
                kind: Some(In::Ack(proto::Ack { version })),
            })
        };
        proxy.answers.send(ack(1)).await.expect("open");
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The same configuration with a comment added: nothing to send.
        let mut same = config("app.example.com", "10.0.0.1");
        same[0].text.push_str("# a comment\n");
        store.replace("folder", same);
        store.publish_now();
        // An endpoint moves: endpoints only.
        store.replace("folder", config("app.example.com", "10.0.0.2"));
        store.publish_now();
        assert_eq!(receive(&mut proxy).await, (3, ENDPOINTS));
        // A NACK makes what the proxy runs unknown: the next change is sent in full.
        proxy
            .answers
            .send(Ok(proto::ProxyMessage {
                kind: Some(In::Nack(proto::Nack {
                    version: 3,
                    diagnostics: vec!["refused".into()],
                })),
            }))
            .await
            .expect("open");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(proxy.metrics.rejects.with_label_values(&[ENDPOINTS]).get(), 1);
        store.replace("folder", config("app.example.com", "10.0.0.3"));
        store.publish_now();
        assert_eq!(receive(&mut proxy).await, (4, CONFIG));
        assert_eq!(proxy.metrics.convergence.get_sample_count(), 1, "the ACK of version 1");
    }
}
