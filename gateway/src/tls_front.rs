//! The TLS handshake of HTTPS listeners, done by the listener's application rather
//! than by Pingora's TLS listener, so that the ClientHello can be looked at first:
//! a handshake offering only `acme-tls/1` is an ACME server validating a TLS-ALPN-01
//! challenge, answered with the challenge certificate on the same port; every other
//! handshake goes through Pingora's rustls acceptor as before.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use rustls::server::ClientHello;

use pingora::listeners::tls::{Acceptor, TlsSettings};
use pingora::protocols::{Shutdown, Stream};
use rustls::server::{ClientHello as RustlsHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::acme::Challenges;
use crate::client_auth::ServerVerifier;
use crate::client_hello;
use crate::engine::Engine;
use crate::relay_stream::RelayStream;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

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
    pub shared: Arc<Engine>,
    /// The listener's Gateway port.
    pub port: u16,
    /// Acceptors of the servers that check client certificates, for one config version.
    per_server: Mutex<(u64, HashMap<usize, Arc<Acceptor>>)>,
}

impl TlsFront {
    /// The front of the HTTPS listener of `port`, with Pingora's `acceptor`.
    pub fn new(acceptor: Acceptor, shared: Arc<Engine>, port: u16) -> TlsFront {
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
        match acceptor.tls_handshake(RelayStream::plain(stream)).await {
            Ok(tls) => Some(Box::new(RelayStream::flush_on_idle_read(Box::new(tls)))),
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
        match acceptor.tls_handshake(RelayStream::plain(stream)).await {
            Ok(mut tls) => {
                log::info!("answered the TLS-ALPN-01 challenge for {sni:?}");
                Shutdown::shutdown(&mut tls).await;
            }
            Err(e) => log::info!("TLS-ALPN-01 handshake for {sni:?} failed: {e}"),
        }
    }
}

/// Picks the certificate for a TLS listener by SNI, from the current snapshot.
#[derive(Debug)]
pub struct SniResolver {
    /// Engine state.
    pub shared: Arc<Engine>,
    /// The listener's Gateway port.
    pub port: u16,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let runtime = self.shared.current();
        let listener = runtime.snapshot.listener(self.port)?;
        // Without SNI (clients connecting by IP) the first server's certificate answers.
        let server = match hello.server_name() {
            Some(name) => strait_config::router::with_host(name, |h| listener.sni.lookup(h))?,
            None => 0,
        };
        let cert = listener.tls_servers.get(server)?.certificate;
        runtime.certs.get(cert).map(|c| c.key.clone())
    }
}

/// Checks each handshake against its server and stores the outcome as `TlsInfo`.
#[derive(Debug)]
pub struct HandshakeInfo {
    /// Engine state.
    pub shared: Arc<Engine>,
    /// The listener's Gateway port.
    pub port: u16,
}

#[async_trait]
impl TlsAccept for HandshakeInfo {
    async fn handshake_complete_callback(&self, tls: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        let runtime = self.shared.current();
        Some(Arc::new(crate::client_auth::inspect(
            &runtime.snapshot,
            &runtime.client_auth,
            self.port,
            tls,
        )))
    }
}
