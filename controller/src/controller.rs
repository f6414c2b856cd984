//! The controller's servers around one store: the store's debouncer, the push
//! server and the HTTP port (metrics, proxy status), started together and stopped
//! together. Sources (a folder, Kubernetes) feed the store; whoever assembles the
//! controller (`strait-controller`'s main, tests, benchmarks) starts them beside
//! with `add_source`, each with the controller's stop signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::http::Pages;
use crate::leader::{self, LeaderFlags, Leadership};
use crate::push::metrics::Metrics;
use crate::push::server::PushService;
use crate::push::status::Registry;
use crate::store::Store;

/// Where the controller listens.
#[derive(Debug, Clone)]
pub struct Options {
    /// The push port.
    pub push: SocketAddr,
    /// The HTTP port for metrics and status (None: off).
    pub http: Option<SocketAddr>,
}

/// Why the controller cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A port cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics cannot be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The push server failed.
    #[error(transparent)]
    Push(#[from] crate::push::server::Error),
    /// A source failed.
    #[error("source {name}: {message}")]
    Source {
        /// The source.
        name: String,
        /// What went wrong.
        message: String,
    },
}

/// The field manager the API server records for everything the controller writes
/// (status, Secrets, deployed gateways): one name, so its writes never conflict
/// with each other.
pub const FIELD_MANAGER: &str = "strait-controller";

/// Writes `body` as object `name` through `api` by server-side apply under
/// `FIELD_MANAGER`, taking over the fields it sets: what the controller sets is its
/// own, what others add (an HPA's replicas, annotations) stays.
pub async fn apply<K>(
    api: &kube::Api<K>,
    name: &str,
    body: &(impl serde::Serialize + std::fmt::Debug),
) -> Result<(), kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = kube::api::PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &params, &kube::api::Patch::Apply(body)).await.map(drop)
}

/// A running controller.
#[derive(Debug)]
pub struct Controller {
    /// The store sources feed.
    pub store: Arc<Store>,
    /// Proxy status.
    pub status: Arc<Registry>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where the push server listens.
    pub push_addr: SocketAddr,
    /// Where the HTTP port listens.
    pub http_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<(), Error>>,
    /// The push service, for the TLS port to serve too (`push_service`).
    push_service: PushService,
    /// Whether this replica leads (`elect`).
    leadership: Leadership,
}

/// Resolves once `stop` turns true (or its sender is gone). The guard `wait_for`
/// returns is dropped here: held in a `select!`, it would make the task not `Send`.
pub async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

impl Controller {
    /// Binds the ports and starts serving `store`'s states (within a tokio runtime).
    pub async fn start(store: Arc<Store>, options: &Options) -> Result<Controller, Error> {
        let metrics = Arc::new(Metrics::new()?);
        let status = Arc::new(Registry::default());
        let (stop, stopped) = watch::channel(false);
        let push = bind(options.push).await?;
        let push_addr = push.local_addr().map_err(|source| Error::Bind {
            addr: options.push,
            source,
        })?;
        let http = match options.http {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let http_addr = http.as_ref().and_then(|l| l.local_addr().ok());
        let mut tasks: JoinSet<Result<(), Error>> = JoinSet::new();
        let service = PushService::new(store.clone(), status.clone(), metrics.clone(), stopped.clone());
        let push_service = service.clone();
        tasks.spawn(async move { Ok(service.serve(push).await?) });
        if let Some(listener) = http {
            let pages = Pages {
                metrics: metrics.clone(),
                status: status.clone(),
                store: store.clone(),
            };
            let stopped = stopped.clone();
            tasks.spawn(async move {
                pages.serve(listener, stopped).await;
                Ok(())
            });
        }
        let (debouncer, mut debounce_stop) = (store.clone(), stopped);
        tasks.spawn(async move {
            debouncer
                .run(async move {
                    until_stopped(&mut debounce_stop).await;
                })
                .await;
            Ok(())
        });
        log::info!(
            "push server on {push_addr}{}",
            http_addr.map_or_else(String::new, |a| format!(", metrics and /debug/proxies on {a}"))
        );
        Ok(Controller {
            store,
            status,
            metrics,
            push_addr,
            http_addr,
            stop,
            tasks,
            push_service,
            leadership: Leadership::always(),
        })
    }

    /// Whether this replica leads: what only one replica may do (write status,
    /// order certificates) waits for it. Always, unless `elect` was called.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Takes part in the election among replicas in `namespace` (the Lease
    /// `strait-controller`) as `identity`, beside the servers; `leadership` follows
    /// it from now on.
    pub fn elect(
        &mut self,
        client: kube::Client,
        namespace: &str,
        identity: String,
        flags: &LeaderFlags,
    ) -> Result<Leadership, leader::Error> {
        let (leadership, election) = leader::prepare(client, namespace, identity, flags, self.metrics.registry())?;
        self.add_source("leader election", election.run(self.stop_signal()));
        self.leadership = leadership.clone();
        Ok(leadership)
    }

    /// The push service, sharing its builds, status and metrics with the plaintext
    /// port's: for the TLS port (`ca::start`) to serve it too.
    pub fn push_service(&self) -> PushService {
        self.push_service.clone()
    }

    /// The signal that tells sources to stop (true: stop).
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Runs a source beside the servers; its error ends `wait`.
    pub fn add_source<F, E>(&mut self, name: &str, source: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let name = name.to_string();
        self.tasks.spawn(async move {
            source.await.map_err(|e| Error::Source {
                name,
                message: e.to_string(),
            })
        });
    }

    /// Waits until a server or a source fails (or all end).
    pub async fn wait(&mut self) -> Result<(), Error> {
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => {
                    return Err(Error::Source {
                        name: "task".into(),
                        message: e.to_string(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Stops the servers, the sessions and the sources, and waits for them.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        while let Some(joined) = self.tasks.join_next().await {
            if let Ok(Err(e)) = joined {
                log::warn!("while stopping: {e}");
            }
        }
    }
}
