//! The controller source: configuration pushed by a Strait controller over gRPC
//! (`strait_push`'s protocol). The proxy says who it is (`Hello`), builds each
//! configuration it is sent with the one pipeline, exactly as from a folder, hands
//! it to `Engine::apply`, and answers `Ack` or `Nack` with the diagnostics (the
//! running configuration keeps serving). Endpoint updates replace the running
//! configuration's endpoints without a rebuild.
//!
//! When the controller is gone, the proxy keeps serving its last good
//! configuration and reconnects with exponential backoff and jitter; each new
//! stream starts with a full configuration, which is not applied again when it is
//! the one running.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use strait_config::bundle::{load_bytes, Loaded};
use strait_config::mesh::MeshConfig;
use strait_config::{Built, Diagnostic, Scope};
use strait_push::delta;
use strait_push::parts::Parts;
use strait_push::proto;
use strait_push::proto::controller_message::Kind as Incoming;
use strait_push::proto::proxy_message::Kind as Outgoing;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::engine::Engine;

/// First wait before reconnecting.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest wait before reconnecting.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Pings on an idle stream find a controller (or network) gone silent.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// The largest message accepted: a full configuration of 10k VirtualServices is
/// several megabytes, beyond gRPC's usual 4 MiB.
const MAX_MESSAGE: usize = 256 << 20;

/// Why a stream to the controller ended.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address is not `HOST:PORT` (or an `http://` URL).
    #[error("bad controller address {0:?}: expected HOST:PORT")]
    Address(String),
    /// No connection.
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The controller refused the stream or it broke.
    #[error("{0}")]
    Stream(#[from] tonic::Status),
    /// The controller ended the stream.
    #[error("the controller closed the stream")]
    Closed,
    /// The TLS channel could not be made (root, name, handshake).
    #[error("TLS to the controller: {0}")]
    Tls(String),
}

/// Who this proxy is and where its controller is.
#[derive(Debug, Clone)]
pub struct Client {
    /// `HOST:PORT` or `http://HOST:PORT` (plaintext, 15010), or
    /// `https://HOST:PORT` (TLS, 15012: the server checked with `tls`).
    pub address: String,
    /// What this proxy says first.
    pub hello: proto::Hello,
    /// For `https://`: the mesh's root (PEM) and the name the controller's
    /// certificate must carry.
    pub tls: Option<ControllerTls>,
}

/// How a proxy checks its controller's TLS port.
#[derive(Debug, Clone)]
pub struct ControllerTls {
    /// The root the controller's certificate chains to (the mesh's), PEM.
    pub root_pem: String,
    /// The name checked (`strait-controller.istio-system.svc`, or the address's host).
    pub server_name: String,
}

impl ControllerTls {
    /// For `address` (`https://HOST:PORT`): the root in `root_file`, the server name
    /// `server_name` or else HOST.
    pub fn for_address(
        address: &str,
        root_file: &std::path::Path,
        server_name: Option<&str>,
    ) -> std::io::Result<ControllerTls> {
        let root_pem = std::fs::read_to_string(root_file)?;
        let host = host_port(address)
            .rsplit_once(':')
            .map_or(host_port(address), |(h, _)| h);
        Ok(ControllerTls {
            root_pem,
            server_name: server_name.unwrap_or(host.trim_matches(['[', ']'])).to_string(),
        })
    }
}

/// `HOST:PORT` of an address with or without a scheme.
pub fn host_port(address: &str) -> &str {
    address
        .split_once("://")
        .map_or(address, |(_, rest)| rest)
        .trim_end_matches('/')
}

/// A stream to the controller.
struct Stream {
    inbound: tonic::Streaming<proto::ControllerMessage>,
    answers: mpsc::Sender<proto::ProxyMessage>,
    /// Large messages arrive in parts: joined here.
    parts: Parts,
}

impl Stream {
    async fn answer(&self, kind: Outgoing) -> Result<(), Error> {
        self.answers
            .send(proto::ProxyMessage { kind: Some(kind) })
            .await
            .map_err(|_| Error::Closed)
    }

    async fn next(&mut self) -> Result<Incoming, Error> {
        loop {
            match self.inbound.message().await? {
                None => return Err(Error::Closed),
                Some(proto::ControllerMessage { kind: Some(kind) }) => {
                    if let Some(whole) = self.parts.add(kind) {
                        return Ok(whole);
                    }
                }
                // A kind this proxy does not know (a newer controller): not for it.
                Some(_) => continue,
            }
        }
    }
}

impl Client {
    /// A channel to the controller: plaintext, or TLS checked against the mesh's root.
    pub async fn channel(&self) -> Result<tonic::transport::Channel, Error> {
        if let Some(tls) = &self.tls {
            return strait_push::tls::connect(host_port(&self.address), &tls.root_pem, &tls.server_name)
                .await
                .map_err(|e| Error::Tls(e.to_string()));
        }
        let url = format!("http://{}", host_port(&self.address));
        let endpoint =
            tonic::transport::Endpoint::from_shared(url).map_err(|_| Error::Address(self.address.clone()))?;
        Ok(endpoint
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE * 2)
            .keep_alive_while_idle(true)
            .connect()
            .await?)
    }

    async fn connect(&self) -> Result<Stream, Error> {
        let channel = self.channel().await?;
        let (answers, outbound) = mpsc::channel(16);
        answers
            .send(proto::ProxyMessage {
                kind: Some(Outgoing::Hello(self.hello.clone())),
            })
            .await
            .map_err(|_| Error::Closed)?;
        let inbound = proto::push_client::PushClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .stream(ReceiverStream::new(outbound))
            .await?
            .into_inner();
        Ok(Stream {
            inbound,
            answers,
            parts: Parts::default(),
        })
    }

    /// The scope a pushed configuration is built for: this proxy as its `Hello`
    /// says (the same scope the controller validated it for), under `mesh`.
    fn scope(&self, mesh: MeshConfig) -> Scope {
        let hello = &self.hello;
        let labels = hello.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if hello.role == i32::from(proto::Role::Sidecar) {
            return Scope {
                role: strait_config::Role::Sidecar,
                workload: strait_config::Workload {
                    namespace: hello.namespace.clone(),
                    labels,
                    service_account: Some(hello.service_account.clone()).filter(|s| !s.is_empty()),
                    ips: hello.ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
                },
                mesh,
            };
        }
        Scope::gateway(&hello.namespace, labels, mesh)
    }
}

/// A digest of what a configuration message holds: equal ones build the same.
fn content_digest(config: &proto::Config) -> u64 {
    let mut h = DefaultHasher::new();
    config.mesh_config.hash(&mut h);
    for d in &config.documents {
        d.file.hash(&mut h);
        d.text.hash(&mut h);
    }
    h.finish()
}

/// Builds a pushed configuration for this gateway, as a folder's would be built;
/// returns the mesh config it was built under too.
pub fn build(client: &Client, config: &proto::Config) -> Result<(Built, MeshConfig), Vec<Diagnostic>> {
    let (mesh, notes) = match &config.mesh_config {
        None => (MeshConfig::default(), Vec::new()),
        Some(text) => strait_config::mesh::parse("mesh config", text)?,
    };
    for n in &notes {
        log::info!("{n}");
    }
    let mut loaded = Loaded::default();
    for d in &config.documents {
        load_bytes(&mut loaded, &d.file, &d.text);
    }
    let built = strait_config::build(&loaded, &client.scope(mesh.clone()), 0)?;
    Ok((built, mesh))
}

/// The error lines of a refusal, as the controller shows them.
fn rendered(diags: &[Diagnostic]) -> Vec<String> {
    let errors: Vec<String> = diags.iter().filter(|d| d.is_error()).map(ToString::to_string).collect();
    if errors.is_empty() {
        diags.iter().map(ToString::to_string).collect()
    } else {
        errors
    }
}

/// Waits between attempts: from 100 ms, doubling up to 10 s, each wait drawn
/// between half and all of it so that proxies do not reconnect in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_START }
    }
}

impl Backoff {
    /// The next wait.
    pub fn delay(&mut self) -> Duration {
        let full = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        full.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    /// Back to the shortest wait (after a stream that worked).
    pub fn reset(&mut self) {
        self.next = BACKOFF_START;
    }
}

/// What the gateway started with, from its controller.
#[derive(Debug)]
pub struct Started<T> {
    /// What `start` made of the first configuration that built (the engine).
    pub value: T,
    /// The mesh config it came with.
    pub mesh: MeshConfig,
    /// Its content digest (not applied again when a new stream sends it).
    pub digest: u64,
}

/// Connects (retrying with backoff, forever) and waits for a configuration that
/// builds and that `start` accepts (it starts the engine); a configuration that
/// does not is refused with its diagnostics and the next one awaited. Runs its own
/// runtime, before the server exists: the stream closes on return, and the
/// controller source opens the next.
pub fn first_config<T>(
    client: &Client,
    mut start: impl FnMut(Built, &MeshConfig) -> Result<T, Vec<Diagnostic>>,
) -> std::io::Result<Started<T>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut backoff = Backoff::default();
    runtime.block_on(async {
        loop {
            let failed = match client.connect().await {
                Err(e) => e,
                Ok(mut stream) => loop {
                    let config = match stream.next().await {
                        // A new stream starts whole; a delta here fits nothing.
                        Ok(Incoming::Config(config)) => match whole(None, config) {
                            Ok(config) => config,
                            Err(nack) => {
                                let _ = stream.answer(Outgoing::Nack(nack)).await;
                                continue;
                            }
                        },
                        Ok(Incoming::Endpoints(e)) => {
                            // Endpoints before any configuration fit nothing.
                            let _ = stream
                                .answer(Outgoing::Nack(proto::Nack {
                                    version: e.version,
                                    diagnostics: vec!["no configuration to apply endpoints to yet".into()],
                                }))
                                .await;
                            continue;
                        }
                        Err(e) => break e,
                    };
                    let outcome = build(client, &config).and_then(|(built, mesh)| Ok((start(built, &mesh)?, mesh)));
                    match outcome {
                        Ok((value, mesh)) => {
                            let _ = stream
                                .answer(Outgoing::Ack(proto::Ack {
                                    version: config.version,
                                }))
                                .await;
                            log::info!(
                                "configuration version {} received from {}",
                                config.version,
                                client.address
                            );
                            return Ok(Started {
                                value,
                                mesh,
                                digest: content_digest(&config),
                            });
                        }
                        Err(diags) => {
                            log::error!("configuration version {} from the controller refused:", config.version);
                            for d in diags.iter().filter(|d| d.is_error()) {
                                log::error!("{d}");
                            }
                            let _ = stream
                                .answer(Outgoing::Nack(proto::Nack {
                                    version: config.version,
                                    diagnostics: rendered(&diags),
                                }))
                                .await;
                        }
                    }
                },
            };
            let delay = backoff.delay();
            log::warn!(
                "no configuration from the controller at {} yet ({failed}); retrying in {delay:?}",
                client.address
            );
            tokio::time::sleep(delay).await;
        }
    })
}

/// Follows the controller, applying what it pushes to the engine.
pub struct ControllerSource {
    /// The engine configured.
    pub engine: Arc<Engine>,
    /// The controller and this proxy's identity.
    pub client: Client,
    /// The content digest of the configuration the engine started with.
    pub started_with: u64,
}

/// The whole configuration a message gives: itself, or a delta applied to `held`;
/// a delta on anything else is refused (the controller then sends it whole).
fn whole(held: Option<&proto::Config>, config: proto::Config) -> Result<proto::Config, proto::Nack> {
    if config.base_version == 0 {
        return Ok(config);
    }
    let version = config.version;
    let refused = |reason: String| {
        log::warn!("configuration version {version} refused: {reason}");
        proto::Nack {
            version,
            diagnostics: vec![reason],
        }
    };
    match held {
        Some(base) => delta::apply(base, config).map_err(|e| refused(e.to_string())),
        None => Err(refused(format!(
            "a delta on configuration version {}, but this proxy holds none on this stream",
            config.base_version
        ))),
    }
}

impl ControllerSource {
    /// Serves one stream until it ends; `applied` is the digest of the running
    /// configuration, `delivered` turns true once a message was applied.
    async fn follow(&self, applied: &mut u64, delivered: &mut bool) -> Error {
        let mut stream = match self.client.connect().await {
            Ok(s) => s,
            Err(e) => return e,
        };
        log::info!("following the controller at {}", self.client.address);
        // The configuration last ACKed on this stream: what deltas apply to.
        let mut held: Option<proto::Config> = None;
        loop {
            let message = match stream.next().await {
                Ok(m) => m,
                Err(e) => return e,
            };
            let answer = match message {
                Incoming::Config(config) => match whole(held.as_ref(), config) {
                    Ok(config) => {
                        let answer = self.apply_config(config.clone(), applied).await;
                        if matches!(answer, Outgoing::Ack(_)) {
                            held = Some(config);
                        }
                        answer
                    }
                    Err(nack) => Outgoing::Nack(nack),
                },
                Incoming::Endpoints(endpoints) => self.apply_endpoints(&endpoints),
            };
            if matches!(answer, Outgoing::Ack(_)) {
                *delivered = true;
            }
            if let Err(e) = stream.answer(answer).await {
                return e;
            }
        }
    }

    async fn apply_config(&self, config: proto::Config, applied: &mut u64) -> Outgoing {
        let version = config.version;
        let digest = content_digest(&config);
        if digest == *applied {
            log::debug!("configuration version {version} is the one running");
            return Outgoing::Ack(proto::Ack { version });
        }
        let (engine, client) = (self.engine.clone(), self.client.clone());
        // Building 10k routes takes a while: not on the runtime's threads.
        let outcome = tokio::task::spawn_blocking(move || {
            let built = build(&client, &config).map(|(built, _mesh)| built);
            engine.apply(built)
        })
        .await
        .unwrap_or_else(|e| Err(vec![crate::engine::engine_diag(format!("the build failed: {e}"))]));
        match outcome {
            Ok(local) => {
                log::info!("controller version {version} running as config version {local}");
                *applied = digest;
                Outgoing::Ack(proto::Ack { version })
            }
            Err(diags) => Outgoing::Nack(proto::Nack {
                version,
                diagnostics: rendered(&diags),
            }),
        }
    }

    fn apply_endpoints(&self, endpoints: &proto::Endpoints) -> Outgoing {
        let version = endpoints.version;
        let running = self.engine.current();
        let table = match strait_push::endpoints::decode_table(&running.snapshot, &endpoints.table) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("endpoints of controller version {version} refused: {e}");
                return Outgoing::Nack(proto::Nack {
                    version,
                    diagnostics: vec![e.to_string()],
                });
            }
        };
        match self.engine.apply_endpoints(table) {
            Ok(()) => Outgoing::Ack(proto::Ack { version }),
            Err(diags) => Outgoing::Nack(proto::Nack {
                version,
                diagnostics: rendered(&diags),
            }),
        }
    }
}

#[async_trait]
impl BackgroundService for ControllerSource {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut applied = self.started_with;
        let mut backoff = Backoff::default();
        loop {
            let mut delivered = false;
            let ended = tokio::select! {
                _ = shutdown.changed() => return,
                e = self.follow(&mut applied, &mut delivered) => e,
            };
            if delivered {
                backoff.reset();
            }
            let delay = backoff.delay();
            log::warn!(
                "controller at {}: {ended}; still serving config version {}; reconnecting in {delay:?}",
                self.client.address,
                self.engine.current().snapshot.version
            );
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_applies_to_the_configuration_held_and_to_nothing_else() {
        let config = |version: u64, text: &str| proto::Config {
            version,
            documents: vec![proto::Document {
                file: "a.yaml".into(),
                text: text.as_bytes().to_vec().into(),
            }],
            ..Default::default()
        };
        let held = config(1, "a");
        let next = config(2, "b");
        let delta = delta::diff(&held, &next);
        assert_eq!(whole(Some(&held), delta.clone()).expect("applies"), next);
        let refused = whole(None, delta.clone()).expect_err("nothing held");
        assert_eq!(refused.version, 2);
        assert!(
            refused.diagnostics[0].contains("holds none"),
            "{:?}",
            refused.diagnostics
        );
        let refused = whole(Some(&next), delta).expect_err("another version held");
        assert!(
            refused.diagnostics[0].contains("holds version 2"),
            "{:?}",
            refused.diagnostics
        );
        // A whole configuration is taken as it is.
        assert_eq!(whole(None, next.clone()).expect("whole"), next);
    }

    #[test]
    fn backoff_doubles_to_ten_seconds_with_jitter() {
        let mut b = Backoff::default();
        let mut full = BACKOFF_START;
        for _ in 0..12 {
            let d = b.delay();
            assert!(d >= full / 2 && d <= full, "{d:?} not within half of {full:?}");
            full = (full * 2).min(BACKOFF_MAX);
        }
        assert_eq!(full, BACKOFF_MAX);
        b.reset();
        assert!(b.delay() <= BACKOFF_START);
    }

    #[test]
    fn equal_messages_have_equal_digests() {
        let doc = |text: &str| proto::Document {
            file: "a.yaml".into(),
            text: text.as_bytes().to_vec().into(),
        };
        let config = |text: &str, mesh: Option<&str>| proto::Config {
            version: 1,
            documents: vec![doc(text)],
            mesh_config: mesh.map(str::to_string),
            more: false,
            base_version: 0,
            removed: Vec::new(),
        };
        assert_eq!(content_digest(&config("a", None)), content_digest(&config("a", None)));
        assert_ne!(content_digest(&config("a", None)), content_digest(&config("b", None)));
        assert_ne!(
            content_digest(&config("a", None)),
            content_digest(&config("a", Some("")))
        );
    }
}
