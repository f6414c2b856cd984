//! gRPC channels to the controller's TLS port (15012, as istiod's): the server is
//! checked against a root given in PEM (the mesh's, from the `istio-ca-root-cert`
//! ConfigMap or a file) under a name that need not be the address dialled, as a
//! proxy dials `127.0.0.1:15012` or a Service IP and checks
//! `strait-controller.istio-system.svc`.
//!
//! TLS is done here (rustls with ring, as the rest of the workspace) rather than by
//! tonic's TLS features, so the channel's URI stays `http://` and tonic never
//! tries a TLS of its own on it.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

/// How long a connection (TCP and TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a TLS channel cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The root PEM holds no certificate, or one rustls refuses.
    #[error("the root certificate PEM: {0}")]
    Root(String),
    /// The server name is neither a DNS name nor an IP address.
    #[error("invalid server name {0:?}")]
    ServerName(String),
    /// The address is not `host:port`.
    #[error("invalid address {0:?}: expected host:port")]
    Address(String),
    /// The TLS settings cannot be built.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The connection or its handshake failed.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// Why, with its causes (tonic's own message is only "transport error").
        reason: String,
    },
}

/// `error` and its sources, joined by ": ".
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The certificates of a PEM text, in order.
pub fn certificates(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, std::io::Error> {
    rustls_pemfile::certs(&mut pem.as_bytes()).collect()
}

/// Client TLS settings trusting the certificates of `root_pem` (and nothing else),
/// speaking HTTP/2 (ALPN `h2`, as gRPC servers expect).
pub fn client_config(root_pem: &str) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = certificates(root_pem).map_err(|e| Error::Root(e.to_string()))?;
    if certs.is_empty() {
        return Err(Error::Root("no CERTIFICATE block".into()));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| Error::Root(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A channel to `addr` (`host:port`) over TLS, the server checked against
/// `root_pem` under `server_name` (a DNS name or an IP address). Connects once
/// now, so a wrong root or name fails here; reconnects by itself later.
pub async fn connect(addr: &str, root_pem: &str, server_name: &str) -> Result<Channel, Error> {
    let config = client_config(root_pem)?;
    let name = ServerName::try_from(server_name.to_string()).map_err(|_| Error::ServerName(server_name.into()))?;
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|_| Error::Address(addr.into()))?
        .connect_timeout(CONNECT_TIMEOUT);
    let target = addr.to_string();
    let connector = tower::service_fn(move |_: http::Uri| {
        let (config, name, target) = (config.clone(), name.clone(), target.clone());
        async move {
            let tcp = TcpStream::connect(&target).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| Error::Connect {
            addr: addr.into(),
            reason: with_causes(&e),
        })
}
