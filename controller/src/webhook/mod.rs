//! The controller's admission webhooks, on port 15017 as istiod's: HTTPS, answering
//! the API server's `AdmissionReview`s (admission.k8s.io/v1).
//!
//! - `POST /inject`: the sidecar injector (`injector`): a JSON Patch that injects the
//!   pod, or "allowed" without one.
//! - `POST /validate`: the validating webhook (`validator`): Istio resources with
//!   errors are refused with the diagnostics `straitctl analyze` gives.
//!
//! The serving certificate comes from files for now (`--webhook-cert`,
//! `--webhook-key`), read at start; the controller's CA will issue it later. With
//! `--kubernetes` and `--webhook-ca-bundle`, the controller keeps the `caBundle` of
//! the MutatingWebhookConfiguration `--webhook-config` equal to that CA (`ca_bundle`),
//! as istiod patches its own.
//!
//! Bad input never takes the server down: a body that is not an AdmissionReview gets
//! 400 and says why, one over 4 MiB gets 413, each connection has its own task, and
//! a TLS handshake or request head gets 10 s.

pub mod ca_bundle;
pub mod injector;
pub mod namespaces;
pub mod validator;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};

use crate::controller::Controller;
use crate::inject::Settings;

/// The largest request body read: an AdmissionReview carries one object (at most
/// some 1.5 MB in etcd) and, on updates, its old version.
pub const MAX_BODY: usize = 4 << 20;

/// Time for a TLS handshake, and for a request's head.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// The webhook flags of `strait-controller`.
#[derive(Debug, Clone, clap::Args)]
pub struct Flags {
    /// HTTPS port of the admission webhooks (`POST /inject`); 0 disables. Served only
    /// when `--webhook-cert` and `--webhook-key` are given.
    #[arg(long, env = "STRAIT_WEBHOOK_PORT", default_value_t = 15017)]
    pub webhook_port: u16,
    /// The webhook's serving certificate: PEM, the leaf first (its names must cover
    /// the address the API server dials). From a file for now; the controller's CA
    /// will issue it.
    #[arg(long, env = "STRAIT_WEBHOOK_CERT", requires = "webhook_key", value_name = "FILE")]
    pub webhook_cert: Option<PathBuf>,
    /// The serving certificate's private key (PEM).
    #[arg(long, env = "STRAIT_WEBHOOK_KEY", requires = "webhook_cert", value_name = "FILE")]
    pub webhook_key: Option<PathBuf>,
    /// The CA certificate(s) (PEM) that signed the serving certificate. With
    /// `--kubernetes`, the controller keeps the `caBundle` of every webhook of
    /// `--webhook-config` equal to it.
    #[arg(long, env = "STRAIT_WEBHOOK_CA_BUNDLE", value_name = "FILE")]
    pub webhook_ca_bundle: Option<PathBuf>,
    /// The MutatingWebhookConfiguration whose `caBundle` the controller keeps (the
    /// one deploy/injection-webhook.yaml installs); empty: none.
    #[arg(long, env = "STRAIT_WEBHOOK_CONFIG", default_value = "strait-sidecar-injector")]
    pub webhook_config: String,
    /// The ValidatingWebhookConfiguration whose `caBundle` the controller keeps (the
    /// one deploy/validation-webhook.yaml installs); empty: none.
    #[arg(long, env = "STRAIT_VALIDATION_WEBHOOK_CONFIG", default_value = "strait-validator")]
    pub validation_webhook_config: String,
    #[command(flatten)]
    pub inject: Settings,
}

/// Why the webhook cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate or key file cannot be used.
    #[error("{path}: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The port cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// One webhook: turns a request into a response.
#[async_trait::async_trait]
pub trait Admission: Send + Sync {
    /// The answer to `request`.
    async fn admit(&self, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse;
}

/// Which webhook answers which path.
#[derive(Clone, Default)]
pub struct Routes(Vec<(&'static str, Arc<dyn Admission>)>);

impl Routes {
    /// `self` with `handler` answering `POST path`.
    pub fn with(mut self, path: &'static str, handler: impl Admission + 'static) -> Routes {
        self.0.push((path, Arc::new(handler)));
        self
    }

    fn find(&self, path: &str) -> Option<&Arc<dyn Admission>> {
        self.0.iter().find(|(p, _)| *p == path).map(|(_, h)| h)
    }

    fn paths(&self) -> String {
        self.0.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(", ")
    }
}

/// The controller's webhooks.
fn routes(injector: injector::Injector) -> Routes {
    Routes::default()
        .with("/inject", injector)
        .with("/validate", validator::Validator)
}

/// A bound, not yet serving, webhook port.
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    routes: Arc<Routes>,
}

impl Server {
    /// Binds `addr` with the certificate and key in those files.
    pub async fn bind(addr: SocketAddr, cert: &Path, key: &Path, routes: Routes) -> Result<Server, Error> {
        let config = server_config(cert, key)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        Ok(Server {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            routes: Arc::new(routes),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` turns true.
    pub async fn serve(self, mut stop: watch::Receiver<bool>) -> Result<(), std::io::Error> {
        loop {
            let stream = tokio::select! {
                _ = crate::controller::until_stopped(&mut stop) => return Ok(()),
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        log::warn!("webhook port: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (acceptor, routes) = (self.acceptor.clone(), self.routes.clone());
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return log::debug!("webhook port: TLS handshake failed: {e}"),
                    Err(_) => return log::debug!("webhook port: TLS handshake timed out"),
                };
                let service = hyper::service::service_fn(move |request| {
                    let routes = routes.clone();
                    async move { Ok::<_, Infallible>(answer(&routes, request).await) }
                });
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http1().timer(TokioTimer::new()).header_read_timeout(HANDSHAKE);
                if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                    log::debug!("webhook port: {e}");
                }
            });
        }
    }
}

/// Starts the webhook beside `controller` when `flags` say to (a port and a
/// certificate), and the caBundle keeper when there is a cluster and a CA bundle.
/// Returns where the webhook listens.
pub async fn start(
    flags: &Flags,
    bind_address: IpAddr,
    client: Option<kube::Client>,
    controller: &mut Controller,
) -> Result<Option<SocketAddr>, Error> {
    let (Some(cert), Some(key)) = (&flags.webhook_cert, &flags.webhook_key) else {
        if flags.webhook_port != 0 {
            log::info!("no --webhook-cert and --webhook-key: the injection webhook is off");
        }
        return Ok(None);
    };
    if flags.webhook_port == 0 {
        return Ok(None);
    }
    let bundle = match &flags.webhook_ca_bundle {
        Some(path) => Some(read_ca_bundle(path)?),
        None => None,
    };
    let namespaces = namespaces::Namespaces::new(client.clone());
    let injector = injector::Injector::new(flags.inject.clone(), namespaces);
    let server = Server::bind(
        SocketAddr::new(bind_address, flags.webhook_port),
        cert,
        key,
        routes(injector),
    )
    .await?;
    let addr = server.local_addr().ok();
    controller.add_source("injection webhook", server.serve(controller.stop_signal()));
    log::info!(
        "injection webhook on {}",
        addr.map_or_else(|| "?".into(), |a| a.to_string())
    );
    match (client, bundle) {
        (Some(client), Some(bundle)) if !flags.webhook_config.is_empty() => {
            let validating = &flags.validation_webhook_config;
            if !validating.is_empty() {
                let keeper = ca_bundle::Keeper::<ValidatingWebhookConfiguration>::new(
                    client.clone(),
                    validating.clone(),
                    bundle.clone(),
                );
                controller.add_source("validation webhook caBundle", keeper.run(controller.stop_signal()));
            }
            let keeper =
                ca_bundle::Keeper::<MutatingWebhookConfiguration>::new(client, flags.webhook_config.clone(), bundle);
            controller.add_source("webhook caBundle", keeper.run(controller.stop_signal()));
        }
        (Some(_), None) if !flags.webhook_config.is_empty() => log::info!(
            "no --webhook-ca-bundle: the caBundle of {} is left as it is",
            flags.webhook_config
        ),
        _ => {}
    }
    Ok(addr)
}

/// The rustls configuration for the serving certificate and key in those files.
fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, Error> {
    let failed = |path: &Path, reason: String| Error::Certificate {
        path: path.to_path_buf(),
        reason,
    };
    let cert_pem = std::fs::read(cert).map_err(|e| failed(cert, e.to_string()))?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(cert, format!("not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(failed(cert, "no certificate in it".into()));
    }
    let key_pem = std::fs::read(key).map_err(|e| failed(key, e.to_string()))?;
    let private = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| failed(key, format!("not PEM: {e}")))?
        .ok_or_else(|| failed(key, "no private key in it".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| failed(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| failed(cert, format!("does not go with {}: {e}", key.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The PEM of the CA bundle file, checked to hold certificates.
fn read_ca_bundle(path: &Path) -> Result<Vec<u8>, Error> {
    let failed = |reason: String| Error::Certificate {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(failed("no certificate in it".into()));
    }
    Ok(pem)
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

fn refuse(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    log::debug!("webhook port: {status}: {message}");
    reply(status, "text/plain; charset=utf-8", message + "\n")
}

/// The answer to one HTTP request.
async fn answer(routes: &Routes, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(handler) = routes.find(request.uri().path()) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("no webhook at {}: try {}", request.uri().path(), routes.paths()),
        );
    };
    if request.method() != Method::POST {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST an AdmissionReview (admission.k8s.io/v1)".into(),
        );
    }
    // Refused before reading when announced; `Limited` catches the rest.
    let announced = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY as u64) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY} bytes"),
        );
    }
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_BODY} bytes"),
            )
        }
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}")),
    };
    let request = match parse_review(&body) {
        Ok(request) => request,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    match encode_review(handler.admit(&request).await) {
        Ok(json) => reply(StatusCode::OK, "application/json", json),
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the answer: {e}"),
        ),
    }
}

/// `response` as the AdmissionReview the API server reads. kube's type writes the
/// patch as an array of numbers (kube-rs#1781), which Go happens to decode; the API
/// defines it as base64, written here.
pub fn encode_review(response: AdmissionResponse) -> Result<Vec<u8>, serde_json::Error> {
    let mut review = serde_json::to_value(response.into_review())?;
    if let Some(patch) = review.pointer_mut("/response/patch") {
        let bytes: Vec<u8> = serde_json::from_value(patch.take())?;
        *patch = serde_json::to_value(k8s_openapi::ByteString(bytes))?;
    }
    serde_json::to_vec(&review)
}

/// The request of an `admission.k8s.io/v1` AdmissionReview, or what is wrong with it.
pub fn parse_review(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, String> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    if review.types.api_version != "admission.k8s.io/v1" || review.types.kind != "AdmissionReview" {
        return Err(format!(
            "not an admission.k8s.io/v1 AdmissionReview (apiVersion {:?}, kind {:?})",
            review.types.api_version, review.types.kind
        ));
    }
    review
        .try_into()
        .map_err(|_| "an AdmissionReview without a request".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reviews_that_are_not_are_refused_with_the_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "not an AdmissionReview: EOF"),
            (b"{\"kind\": 1", "not an AdmissionReview"),
            (b"[]", "not an AdmissionReview"),
            (
                br#"{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}"#,
                "not an admission.k8s.io/v1 AdmissionReview",
            ),
            (
                br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#,
                "without a request",
            ),
            (
                br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "1"}}"#,
                "missing field",
            ),
        ];
        for (body, expected) in cases {
            let error = parse_review(body).expect_err(expected);
            assert!(error.contains(expected), "{error}");
        }
    }
}
