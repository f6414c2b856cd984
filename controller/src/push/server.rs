//! The push service on gRPC (`strait.push.v1.Push`): each stream's `Hello` names
//! its proxy, then a `Session` serves it until the stream ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use strait_push::proto;
use strait_push::proto::proxy_message::Kind as In;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

use super::builds::Builds;
use super::identity::{HelloError, Identity};
use super::metrics::Metrics;
use super::session::{Outgoing, Session, MAX_IN_FLIGHT};
use super::status::Registry;
use crate::store::Store;

/// How long a new stream may take to say who it is.
const HELLO_WAIT: Duration = Duration::from_secs(10);

/// Pings on idle connections find proxies (and networks) gone silent.
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(10);

/// Why the push server stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gRPC server failed.
    #[error("push server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// The push service: what every session shares.
#[derive(Debug, Clone)]
pub struct PushService {
    store: Arc<Store>,
    builds: Arc<Builds>,
    status: Arc<Registry>,
    metrics: Arc<Metrics>,
    throttle: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

impl PushService {
    /// A service pushing `store`'s states, recording into `status` and `metrics`;
    /// its sessions end when `stop` turns true.
    pub fn new(store: Arc<Store>, status: Arc<Registry>, metrics: Arc<Metrics>, stop: watch::Receiver<bool>) -> Self {
        PushService {
            store,
            builds: Arc::new(Builds::new(metrics.clone())),
            status,
            metrics,
            throttle: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            stop,
        }
    }

    /// Serves the push protocol on `listener` until `stop` turns true.
    pub async fn serve(self, listener: TcpListener) -> Result<(), Error> {
        let mut stop = self.stop.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE))
            .http2_keepalive_timeout(Some(KEEPALIVE * 2))
            .tcp_nodelay(true)
            .add_service(proto::push_server::PushServer::new(self))
            .serve_with_incoming_shutdown(incoming, async move {
                crate::controller::until_stopped(&mut stop).await;
            })
            .await?;
        Ok(())
    }
}

/// Forgets a connection however its session ends.
struct Connected {
    connection: u64,
    status: Arc<Registry>,
    metrics: Arc<Metrics>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.status.disconnect(self.connection);
        self.metrics.connected.dec();
    }
}

#[tonic::async_trait]
impl proto::push_server::Push for PushService {
    type StreamStream = ReceiverStream<Outgoing>;

    async fn stream(
        &self,
        request: tonic::Request<tonic::Streaming<proto::ProxyMessage>>,
    ) -> Result<tonic::Response<Self::StreamStream>, tonic::Status> {
        let peer: Option<SocketAddr> = request.remote_addr();
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_WAIT, inbound.message())
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("no Hello in time"))??;
        let hello = match first.and_then(|m| m.kind) {
            Some(In::Hello(hello)) => hello,
            _ => return Err(tonic::Status::invalid_argument(HelloError::NotHello.to_string())),
        };
        let identity = Identity::from_hello(hello).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        log::info!(
            "proxy {} ({:?} in {}) connected from {}",
            identity.id,
            identity.role,
            identity.namespace,
            peer.map_or_else(|| "?".to_string(), |p| p.to_string())
        );
        let connection = self.status.connect(identity.clone());
        self.metrics.connected.inc();
        let guard = Connected {
            connection,
            status: self.status.clone(),
            metrics: self.metrics.clone(),
        };
        let session = Session {
            connection,
            identity,
            states: self.store.subscribe(),
            builds: self.builds.clone(),
            status: self.status.clone(),
            metrics: self.metrics.clone(),
            throttle: self.throttle.clone(),
        };
        // One message at a time: see `session`.
        let (out, rx) = mpsc::channel(1);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let id = session.identity.id.clone();
            session.run(inbound, out, stop).await;
            drop(guard);
            log::info!("proxy {id} disconnected");
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}
