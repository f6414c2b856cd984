//! The TLS handshake of HTTPS listeners, done by the listener's application rather
//! than by Pingora's TLS listener, so that the ClientHello can be looked at first:
//! a handshake offering only `acme-tls/1` is an ACME server validating a TLS-ALPN-01
//! challenge, answered with the challenge certificate on the same port; every other
//! handshake goes through Pingora's rustls acceptor as before.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType,
};
use rustls::server::{ClientHello as RustlsHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::acme::Challenges;
use crate::certs::{HandshakeInfo, SniResolver};
use crate::client_auth::ServerVerifier;
use crate::client_hello;
use crate::state::Shared;
use pingora::listeners::tls::TlsSettings;
use std::collections::HashMap;
use std::sync::Mutex;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A plain connection handed to a TLS acceptor (Pingora's acceptor wants its own
/// traits on the stream, which the boxed stream only has through this wrapper).
#[derive(Debug)]
struct Plain(Stream);

impl AsyncRead for Plain {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Plain {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Plain {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.0).await
    }
}

impl UniqueID for Plain {
    fn id(&self) -> UniqueIDType {
        self.0.id()
    }
}

impl Ssl for Plain {}

impl GetTimingDigest for Plain {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.0.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.0.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.0.get_write_pending_time()
    }
}

impl GetProxyDigest for Plain {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.0.get_proxy_digest()
    }
}

impl GetSocketDigest for Plain {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.0.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.0.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Plain {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.0.try_peek(buf).await
    }
}

/// Serves the challenge certificate of the ClientHello's name.
#[derive(Debug)]
struct ChallengeResolver(Arc<CertifiedKey>);

impl ResolvesServerCert for ChallengeResolver {
    fn resolve(&self, _hello: RustlsHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The TLS side of an HTTPS listener.
pub struct TlsFront {
    /// Pingora's acceptor with the listener's certificates, client verifier and callbacks.
    pub acceptor: Acceptor,
    /// Pending TLS-ALPN-01 challenges.
    pub challenges: Arc<Challenges>,
    /// Engine state (the servers the SNI selects).
    pub shared: Arc<Shared>,
    /// The listener's Gateway port.
    pub port: u16,
    /// Acceptors of the servers that check client certificates, for one config version.
    per_server: Mutex<(u64, HashMap<usize, Arc<Acceptor>>)>,
}

impl TlsFront {
    /// The front of the HTTPS listener of `port`, with Pingora's `acceptor`.
    pub fn new(acceptor: Acceptor, shared: Arc<Shared>, port: u16) -> TlsFront {
        TlsFront {
            acceptor,
            challenges: shared.challenges.clone(),
            shared,
            port,
            per_server: Mutex::new((0, HashMap::new())),
        }
    }

    /// The acceptor of the server `sni` selects, when that server checks client
    /// certificates (built once per configuration version).
    fn server_acceptor(&self, sni: Option<&str>) -> Option<Arc<Acceptor>> {
        let runtime = self.shared.current();
        let (li, listener) = runtime
            .snapshot
            .listeners
            .iter()
            .enumerate()
            .find(|(_, l)| l.port == self.port)?;
        let server = match sni {
            Some(name) => strait_config::router::with_host(name, |h| listener.sni.lookup(h))?,
            None => 0,
        };
        let auth = runtime.client_auth.server(li, server)?;
        let mut cache = self.per_server.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != runtime.snapshot.version {
            *cache = (runtime.snapshot.version, HashMap::new());
        }
        if let Some(a) = cache.1.get(&server) {
            return Some(a.clone());
        }
        let handshake = HandshakeInfo {
            shared: self.shared.clone(),
            port: self.port,
        };
        let mut settings = TlsSettings::with_callbacks(Box::new(handshake)).ok()?;
        settings.set_cert_resolver(Arc::new(SniResolver {
            shared: self.shared.clone(),
            port: self.port,
        }));
        settings.set_client_cert_verifier(Arc::new(ServerVerifier(auth)));
        settings.enable_h2();
        let acceptor = Arc::new(settings.build());
        cache.1.insert(server, acceptor.clone());
        Some(acceptor)
    }

    /// Completes the handshake; None when the connection was an ACME validation
    /// (answered and closed) or the handshake failed.
    pub async fn accept(&self, mut stream: Stream) -> Option<Stream> {
        let hello = match client_hello::peek(&mut stream).await {
            Ok(Some(hello)) => hello,
            Ok(None) => return None,
            Err(e) => {
                log::debug!("not a TLS client: {e}");
                return None;
            }
        };
        if hello.alpn == [ACME_TLS_ALPN] {
            self.answer_challenge(stream, hello.sni.as_deref()).await;
            return None;
        }
        let per_server = self.server_acceptor(hello.sni.as_deref());
        let acceptor = per_server.as_deref().unwrap_or(&self.acceptor);
        match acceptor.tls_handshake(Plain(stream)).await {
            Ok(tls) => Some(Box::new(tls)),
            Err(e) => {
                log::debug!("TLS handshake failed: {e}");
                None
            }
        }
    }

    async fn answer_challenge(&self, stream: Stream, sni: Option<&str>) {
        let Some(cert) = sni.and_then(|name| self.challenges.alpn_certificate(name)) else {
            log::info!("TLS-ALPN-01 handshake for {sni:?}, which has no pending challenge");
            return;
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .map(|b| {
                b.with_no_client_auth()
                    .with_cert_resolver(Arc::new(ChallengeResolver(cert)))
            });
        let mut config = match config {
            Ok(c) => c,
            Err(e) => return log::warn!("TLS-ALPN-01: {e}"),
        };
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        let acceptor = Acceptor::from_server_config(Arc::new(config));
        match acceptor.tls_handshake(Plain(stream)).await {
            Ok(mut tls) => {
                log::info!("answered the TLS-ALPN-01 challenge for {sni:?}");
                Shutdown::shutdown(&mut tls).await;
            }
            Err(e) => log::info!("TLS-ALPN-01 handshake for {sni:?} failed: {e}"),
        }
    }
}
