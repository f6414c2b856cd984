//! Export of finished spans: a bounded queue filled by the request path, drained in
//! batches by one background task that owns the OTLP exporter (gRPC through tonic,
//! or HTTP/protobuf through a hyper client). Requests never wait on it: when the
//! collector is slow or down the queue fills and further spans are dropped and
//! counted, and failures are logged at most once per `error_log_interval`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use std::net::SocketAddr;

use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use strait_config::tracing::{Provider, Transport};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Error;

/// Sizes and periods of the export queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// Finished spans waiting for export; beyond this they are dropped.
    pub capacity: usize,
    /// Most spans sent in one export call.
    pub batch_size: usize,
    /// Longest a finished span waits before its batch is sent.
    pub interval: Duration,
    /// Shortest time between two logged export errors.
    pub error_log_interval: Duration,
}

impl Default for QueueSettings {
    /// The OpenTelemetry SDK's batch defaults, Envoy's 5 s flush interval, and one
    /// error line a minute.
    fn default() -> Self {
        QueueSettings {
            capacity: 2048,
            batch_size: 512,
            interval: Duration::from_secs(5),
            error_log_interval: Duration::from_secs(60),
        }
    }
}

/// Counters shared by the request path and the export task.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub queued: AtomicU64,
    pub dropped: AtomicU64,
    pub exported: AtomicU64,
    pub failed: AtomicU64,
    pub errors_logged: AtomicU64,
}

/// What happened to finished spans so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceStats {
    /// Spans put on the export queue.
    pub queued: u64,
    /// Spans dropped because the queue was full.
    pub dropped: u64,
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans lost in failed export calls.
    pub failed: u64,
    /// Error lines logged about export failures (rate limited).
    pub errors_logged: u64,
}

impl Counters {
    pub fn snapshot(&self) -> TraceStats {
        TraceStats {
            queued: self.queued.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            exported: self.exported.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            errors_logged: self.errors_logged.load(Ordering::Relaxed),
        }
    }
}

/// The background half of a `Tracer`: run it on a tokio runtime (`run`, or
/// `run_until` with a shutdown signal), or on its own thread (`spawn_thread`).
#[derive(Debug)]
pub struct ExportTask {
    pub(crate) rx: mpsc::Receiver<SpanData>,
    pub(crate) provider: Provider,
    pub(crate) collector: CollectorAddress,
    pub(crate) resource: Resource,
    pub(crate) queue: QueueSettings,
    pub(crate) counters: Arc<Counters>,
}

/// Logs export failures at most once per interval, saying how many were not logged.
#[derive(Debug)]
struct ErrorLog {
    every: Duration,
    last: Option<Instant>,
    unlogged: u64,
}

impl ErrorLog {
    /// Whether this failure gets a line; if so, how many failures went unlogged before it.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }
}

/// The collector's URL: `http://<host>:<port>` for gRPC, plus the path for HTTP.
pub(crate) fn endpoint(provider: &Provider) -> Result<String, Error> {
    let base = format!("http://{}:{}", provider.host(), provider.port);
    let url = match &provider.transport {
        Transport::Grpc { .. } => base,
        Transport::Http { path, .. } => format!("{base}{path}"),
    };
    url.parse::<http::Uri>().map_err(|_| Error::Endpoint(url.clone()))?;
    Ok(url)
}

/// Where the collector is now: an endpoint of its service in the registry (as Istio
/// resolves extension providers), or None to resolve its host by DNS.
#[derive(Clone, Default)]
pub struct CollectorAddress(pub Option<Arc<dyn Fn() -> Option<SocketAddr> + Send + Sync>>);

impl std::fmt::Debug for CollectorAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "registry, then DNS" } else { "DNS" })
    }
}

/// Connects to the collector: at the address `CollectorAddress` gives at the time,
/// else the URL's host and port through DNS. Shared by the gRPC and HTTP exporters.
#[derive(Clone)]
struct CollectorConnector {
    address: CollectorAddress,
}

impl tower::Service<http::Uri> for CollectorConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let registered = self.address.0.as_ref().and_then(|a| a());
        Box::pin(async move {
            let stream = match registered {
                Some(address) => TcpStream::connect(address).await?,
                None => {
                    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']).to_string();
                    let port = uri.port_u16().unwrap_or(80);
                    TcpStream::connect((host.as_str(), port)).await?
                }
            };
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// OTLP/HTTP over hyper: the exporter's own clients are reqwest's (a second reqwest
/// version here) or blocking; this one shares the workspace's hyper.
#[derive(Clone)]
struct HyperClient {
    client: Client<CollectorConnector, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for HyperClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperClient").field("timeout", &self.timeout).finish()
    }
}

/// Largest collector answer read; OTLP answers are tiny.
const MAX_RESPONSE: usize = 1 << 20;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for HyperClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let exchange = async {
            let (parts, body) = request.into_parts();
            let response = self
                .client
                .request(http::Request::from_parts(parts, Full::new(body)))
                .await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
            Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(parts, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
    }
}

/// Builds the OTLP exporter; needs a tokio runtime (tonic's channel spawns a task).
fn build(
    provider: &Provider,
    collector: &CollectorAddress,
    resource: &Resource,
) -> Result<opentelemetry_otlp::SpanExporter, Error> {
    let connector = CollectorConnector {
        address: collector.clone(),
    };
    let url = endpoint(provider)?;
    let build_error = |source| Error::Build {
        endpoint: url.clone(),
        source,
    };
    let mut exporter = match &provider.transport {
        Transport::Grpc { metadata } => {
            let mut headers = http::HeaderMap::new();
            for (k, v) in metadata {
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::try_from(k.as_str()),
                    http::HeaderValue::try_from(v.as_str()),
                ) {
                    headers.append(k, v);
                }
            }
            let channel = tonic::transport::Endpoint::from_shared(url.clone())
                .map_err(|_| Error::Endpoint(url.clone()))?
                .timeout(provider.timeout)
                .connect_with_connector_lazy(connector);
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_channel(channel)
                .with_endpoint(url.clone())
                .with_timeout(provider.timeout)
                .with_metadata(opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(
                    headers,
                ))
                .build()
                .map_err(build_error)?
        }
        Transport::Http { headers, .. } => {
            let client = HyperClient {
                client: Client::builder(TokioExecutor::new()).build(connector),
                timeout: provider.timeout,
            };
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(url.clone())
                .with_timeout(provider.timeout)
                .with_http_client(client)
                .with_headers(headers.iter().cloned().collect())
                .build()
                .map_err(build_error)?
        }
    };
    exporter.set_resource(resource);
    Ok(exporter)
}

impl ExportTask {
    /// Exports until every `Tracer` handle is dropped, then sends what is queued.
    pub async fn run(self) {
        self.run_until(std::future::pending()).await
    }

    /// Exports until `shutdown` completes (or every `Tracer` is dropped), then makes
    /// one last attempt at what is queued.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) {
        let exporter = match build(&self.provider, &self.collector, &self.resource) {
            Ok(e) => e,
            Err(e) => {
                log::error!("traces are not exported: {e}");
                self.counters.errors_logged.fetch_add(1, Ordering::Relaxed);
                // Keep draining so the queue's counters stay truthful.
                while let Some(_span) = self.rx.recv().await {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        };
        let mut log = ErrorLog {
            every: self.queue.error_log_interval,
            last: None,
            unlogged: 0,
        };
        let batch_size = self.queue.batch_size.max(1);
        let mut batch = Vec::with_capacity(batch_size);
        let mut shutdown = std::pin::pin!(shutdown);
        let mut deadline = Instant::now() + self.queue.interval;
        let mut open = true;
        while open {
            let room = batch_size - batch.len();
            tokio::select! {
                n = self.rx.recv_many(&mut batch, room) => open = n > 0,
                () = tokio::time::sleep_until(deadline) => {}
                () = &mut shutdown => open = false,
            }
            let due = Instant::now() >= deadline;
            if batch.len() >= batch_size || ((due || !open) && !batch.is_empty()) {
                self.export(&exporter, &mut batch, &mut log).await;
            }
            if due || batch.is_empty() {
                deadline = Instant::now() + self.queue.interval;
            }
        }
        // What arrived meanwhile gets one attempt too.
        while let Ok(span) = self.rx.try_recv() {
            batch.push(span);
            if batch.len() >= batch_size {
                self.export(&exporter, &mut batch, &mut log).await;
            }
        }
        if !batch.is_empty() {
            self.export(&exporter, &mut batch, &mut log).await;
        }
        let _ = exporter.shutdown();
    }

    async fn export(&self, exporter: &opentelemetry_otlp::SpanExporter, batch: &mut Vec<SpanData>, log: &mut ErrorLog) {
        let spans = std::mem::replace(batch, Vec::with_capacity(self.queue.batch_size.max(1)));
        let n = spans.len() as u64;
        // The exporter has its own timeout and retry deadline; this bounds it anyway.
        let limit = self.provider.timeout + Duration::from_secs(1);
        let result = match tokio::time::timeout(limit, exporter.export(spans)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {limit:?}")),
        };
        match result {
            Ok(()) => {
                self.counters.exported.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters.failed.fetch_add(n, Ordering::Relaxed);
                if let Some(unlogged) = log.allow(Instant::now()) {
                    self.counters.errors_logged.fetch_add(1, Ordering::Relaxed);
                    let dropped = self.counters.dropped.load(Ordering::Relaxed);
                    log::error!(
                        "exporting {n} spans to {}:{} failed: {e} ({unlogged} later failures not logged, {dropped} spans dropped on a full queue so far)",
                        self.provider.host(),
                        self.provider.port
                    );
                }
            }
        }
    }

    /// Runs the task on a thread of its own with a one-thread tokio runtime, for
    /// callers without a runtime they control (the task lives until every `Tracer`
    /// is dropped).
    pub fn spawn_thread(self) -> Result<std::thread::JoinHandle<()>, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(std::thread::Builder::new()
            .name("strait-trace-export".into())
            .spawn(move || runtime.block_on(self.run()))?)
    }

    /// Like `spawn_thread`, with a handle that stops the task after a last export.
    pub fn spawn_stoppable(self) -> Result<Exporting, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("strait-trace-export".into())
            .spawn(move || {
                runtime.block_on(self.run_until(async {
                    let _ = stopped.await;
                }))
            })?;
        Ok(Exporting { stop, thread })
    }
}

/// The export task on its own thread, until `finish`.
#[derive(Debug)]
pub struct Exporting {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Exporting {
    /// Exports what is queued and stops, waiting at most `within` for it.
    pub fn finish(self, within: Duration) {
        let _ = self.stop.send(());
        let deadline = std::time::Instant::now() + within;
        while !self.thread.is_finished() {
            if std::time::Instant::now() >= deadline {
                log::warn!("spans still queued after {within:?}; exiting without them");
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn errors_are_logged_once_per_interval() {
        let mut log = ErrorLog {
            every: Duration::from_secs(60),
            last: None,
            unlogged: 0,
        };
        assert_eq!(log.allow(Instant::now()), Some(0));
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(10)).await;
            assert_eq!(log.allow(Instant::now()), None);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(log.allow(Instant::now()), Some(5));
        assert_eq!(log.allow(Instant::now()), None);
    }

    #[test]
    fn endpoints() {
        let provider = |transport| Provider {
            name: "otel".into(),
            service: "obs/collector.obs.svc.cluster.local".into(),
            port: 4317,
            transport,
            timeout: Duration::from_secs(1),
            max_tag_length: 256,
            environment_resource: false,
        };
        let grpc = provider(Transport::Grpc { metadata: vec![] });
        assert_eq!(
            endpoint(&grpc).ok().as_deref(),
            Some("http://collector.obs.svc.cluster.local:4317")
        );
        let http = provider(Transport::Http {
            path: "/v1/traces".into(),
            headers: vec![],
        });
        assert_eq!(
            endpoint(&http).ok().as_deref(),
            Some("http://collector.obs.svc.cluster.local:4317/v1/traces")
        );
        let bad = Provider {
            service: "a b".into(),
            ..grpc
        };
        assert!(matches!(endpoint(&bad), Err(Error::Endpoint(_))));
    }
}
