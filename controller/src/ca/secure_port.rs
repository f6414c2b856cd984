//! The controller's TLS port (15012, as istiod's): the certificate service and the
//! push service over TLS, with a serving certificate the controller's own CA
//! issues (so proxies trust it with the mesh root they already have).
//!
//! The serving certificate is issued at start and again once half its life has
//! passed, on the first handshake after that: no restart, no timer. Clients may
//! present a certificate (as istiod, the port verifies one if given, against the
//! mesh root); none is required, as the CA authenticates by token.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use strait_push::ca_proto::istio_certificate_service_server::IstioCertificateServiceServer;
use strait_push::proto::push_server::PushServer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::authority::{self, Authority};
use super::service::CaService;
use crate::push::server::PushService;

/// How long the serving certificate lives.
const SERVING_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the gRPC server.
const QUEUE: usize = 64;

/// Why the TLS port cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The serving certificate cannot be issued or used.
    #[error("the serving certificate: {0}")]
    Certificate(String),
    /// The TLS settings cannot be built.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The gRPC server failed.
    #[error("TLS port: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// The serving certificate, reissued at half life.
#[derive(Debug)]
struct ServingCert {
    authority: Arc<Authority>,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
    current: Mutex<(Arc<CertifiedKey>, SystemTime)>,
}

impl ServingCert {
    fn new(authority: Arc<Authority>, dns: Vec<String>, ips: Vec<IpAddr>) -> Result<ServingCert, Error> {
        let first = issue(&authority, &dns, &ips)?;
        Ok(ServingCert {
            authority,
            dns,
            ips,
            current: Mutex::new(first),
        })
    }
}

/// A new key and certificate, and when to renew them.
fn issue(authority: &Authority, dns: &[String], ips: &[IpAddr]) -> Result<(Arc<CertifiedKey>, SystemTime), Error> {
    let failed = |e: &dyn std::fmt::Display| Error::Certificate(e.to_string());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| failed(&e))?;
    let chain = authority
        .sign_server(&key, dns, ips, SERVING_TTL)
        .map_err(|e: authority::Error| failed(&e))?;
    let certs = chain
        .iter()
        .map(|pem| strait_push::tls::certificates(pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(&e))?
        .concat();
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| failed(&e))?;
    // Half of what the certificate really got (the CA's expiry may cut it short).
    let life = authority
        .expires()
        .unix_timestamp()
        .saturating_sub(time::OffsetDateTime::now_utc().unix_timestamp());
    let life = Duration::from_secs(u64::try_from(life).unwrap_or(0)).min(SERVING_TTL);
    Ok((
        Arc::new(CertifiedKey::new(certs, signing)),
        SystemTime::now() + life / 2,
    ))
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if SystemTime::now() >= current.1 {
            match issue(&self.authority, &self.dns, &self.ips) {
                Ok(renewed) => {
                    log::info!("TLS port: serving certificate renewed");
                    *current = renewed;
                }
                // The old one serves until it expires; the next handshake tries again.
                Err(e) => log::warn!("TLS port: cannot renew the serving certificate: {e}"),
            }
        }
        Some(current.0.clone())
    }
}

/// TLS settings of the port: the serving certificate for `dns` and `ips`, HTTP/2,
/// client certificates verified against the CA's roots when given.
pub fn tls_config(
    authority: Arc<Authority>,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let root_certs =
        strait_push::tls::certificates(authority.roots_pem()).map_err(|e| Error::Certificate(e.to_string()))?;
    for root in root_certs {
        roots.add(root)?;
    }
    let clients = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| Error::Certificate(e.to_string()))?;
    let resolver = Arc::new(ServingCert::new(authority, dns, ips)?);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(clients)
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS connection as tonic takes it, telling the peer's address.
struct Secured(TlsStream<TcpStream>);

impl Connected for Secured {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for Secured {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Secured {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Accepts on `listener` and hands each connection, once its handshake is done, to
/// `out`. Handshakes run apart, so a slow client holds up no other.
async fn accept(
    listener: TcpListener,
    tls: TlsAcceptor,
    out: mpsc::Sender<std::io::Result<Secured>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            _ = crate::controller::until_stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    log::warn!("TLS port: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (tls, out) = (tls.clone(), out.clone());
        tokio::spawn(async move {
            let peer = stream.peer_addr().ok();
            match tokio::time::timeout(HANDSHAKE, tls.accept(stream)).await {
                Ok(Ok(secured)) => {
                    let _ = out.send(Ok(Secured(secured))).await;
                }
                Ok(Err(e)) => log::debug!("TLS port: handshake with {peer:?} failed: {e}"),
                Err(_) => log::debug!("TLS port: handshake with {peer:?} took over {HANDSHAKE:?}"),
            }
        });
    }
}

/// Serves the certificate service and the push service over TLS on `listener`
/// until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    push: PushService,
    ca: CaService,
    stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let (out, incoming) = mpsc::channel(QUEUE);
    let acceptor = tokio::spawn(accept(listener, TlsAcceptor::from(tls), out, stop.clone()));
    let mut stop = stop;
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(crate::push::server::KEEPALIVE))
        .http2_keepalive_timeout(Some(crate::push::server::KEEPALIVE * 2))
        .add_service(PushServer::new(push))
        .add_service(IstioCertificateServiceServer::new(ca))
        .serve_with_incoming_shutdown(ReceiverStream::new(incoming), async move {
            crate::controller::until_stopped(&mut stop).await;
        })
        .await;
    acceptor.abort();
    Ok(served?)
}
