//! The controller's HTTP port (15014, as istiod's): Prometheus metrics on
//! `/metrics`, each connected proxy's status as JSON on `/debug/proxies` (what
//! `straitctl proxy-status --controller` reads), and `/ready`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::push::metrics::Metrics;
use crate::push::status::{Registry, Report};
use crate::store::Store;

/// What the endpoints read.
#[derive(Debug, Clone)]
pub struct Pages {
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Proxy status.
    pub status: Arc<Registry>,
    /// The store (for its version).
    pub store: Arc<Store>,
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

impl Pages {
    /// The answer to `request`.
    pub fn answer<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET {
            return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
        }
        match request.uri().path() {
            "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", self.metrics.encode()),
            "/debug/proxies" => {
                let report = Report {
                    version: self.store.current().version,
                    proxies: self.status.list(),
                };
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => reply(StatusCode::OK, "application/json", json + "\n"),
                    Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
                }
            }
            "/ready" if self.store.current().version > 0 => reply(StatusCode::OK, "text/plain", "ready\n".into()),
            "/ready" => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "no configuration loaded yet\n".into(),
            ),
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /metrics, /debug/proxies or /ready\n".into(),
            ),
        }
    }

    /// Serves HTTP/1.1 on `listener` until `stop` turns true.
    pub async fn serve(self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        loop {
            let stream = tokio::select! {
                _ = crate::controller::until_stopped(&mut stop) => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        log::warn!("metrics port: accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let pages = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = pages.answer(&request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    log::debug!("metrics port: {e}");
                }
            });
        }
    }
}
