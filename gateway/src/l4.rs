//! TCP and TLS-passthrough listeners (Gateway servers of protocol TCP, and TLS
//! with `mode: PASSTHROUGH`): a connection is routed by the VirtualService's `tcp`
//! or `tls` routes (the latter by the SNI of the ClientHello, which is read without
//! being consumed) and spliced to an endpoint of the chosen destination.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::net::TcpStream;

use crate::balance;
use crate::state::Shared;
use crate::upstreams::{ActiveGuard, Outcome};

/// How long a client may take to send its ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest ClientHello record read for SNI (a TLS record is at most 16 KiB + 5).
const MAX_RECORD: usize = 16 * 1024 + 5;

/// Serves one TCP or TLS-passthrough listener.
pub struct L4App {
    /// Engine state.
    pub shared: Arc<Shared>,
    /// The Gateway port.
    pub port: u16,
    /// Route by SNI (TLS passthrough) rather than by port alone.
    pub tls: bool,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
}

#[async_trait]
impl ServerApp for L4App {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, _shutdown: &ShutdownWatch) -> Option<Stream> {
        let sni = if self.tls {
            match tokio::time::timeout(HELLO_TIMEOUT, peek_sni(&mut stream)).await {
                Ok(Ok(sni)) => sni,
                Ok(Err(e)) => {
                    log::debug!("listener {}: no ClientHello: {e}", self.port);
                    return None;
                }
                Err(_) => return None,
            }
        } else {
            None
        };
        // The guard counts the connection as active on its endpoint until it ends.
        let (mut up, _guard) = self.connect(sni.as_deref()).await?;
        if let Err(e) = tokio::io::copy_bidirectional(&mut stream, &mut up).await {
            log::debug!("listener {}: connection ended: {e}", self.port);
        }
        None
    }
}

impl L4App {
    /// Connects to an endpoint of the first route matching `sni`, trying another
    /// endpoint once if the first refuses.
    async fn connect(&self, sni: Option<&str>) -> Option<(TcpStream, Option<ActiveGuard>)> {
        let runtime = self.shared.current();
        let listener = runtime.snapshot.listener(self.port)?;
        let Some(route) = listener.l4_routes.iter().find(|r| r.matches_sni(sni)) else {
            log::debug!("listener {}: no route for SNI {sni:?}", self.port);
            return None;
        };
        let dest = route.pick()?;
        let (cluster, state) = (
            runtime.snapshot.clusters.get(dest.cluster)?,
            runtime.upstreams.clusters.get(dest.cluster)?,
        );
        let mut tried = None;
        for _ in 0..2 {
            let index = balance::choose(cluster, state, None, |i| Some(i) == tried)?;
            tried = Some(index);
            let endpoint = cluster.endpoints.get(index)?;
            let address = match &endpoint.hostname {
                None => endpoint.address,
                Some(host) => match self.shared.dns.resolve(host, endpoint.address.port()).await {
                    Ok(a) => a,
                    Err(e) => {
                        log::warn!("listener {}: {e}", self.port);
                        continue;
                    }
                },
            };
            let guard = state.endpoints.get(index).map(ActiveGuard::new);
            let timeout = cluster.policy.connect_timeout.unwrap_or(self.connect_timeout);
            match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    state.record(&cluster.policy, index, Outcome::Connected);
                    return Some((s, guard));
                }
                Ok(Err(e)) => log::warn!("listener {}: connect to {address} failed: {e}", self.port),
                Err(_) => log::warn!("listener {}: connect to {address} timed out", self.port),
            }
            state.record(&cluster.policy, index, Outcome::LocalFailure);
        }
        None
    }
}

/// Reads (without consuming) the ClientHello and returns its SNI, lowercase.
async fn peek_sni(stream: &mut Stream) -> std::io::Result<Option<String>> {
    let mut header = [0u8; 5];
    if !stream.try_peek(&mut header).await? {
        return Ok(None);
    }
    if header[0] != 0x16 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a TLS handshake",
        ));
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let mut record = vec![0u8; (5 + len).min(MAX_RECORD)];
    stream.try_peek(&mut record).await?;
    Ok(client_hello_sni(record.get(5..).unwrap_or_default()))
}

/// The server_name of a ClientHello handshake message (RFC 8446 4.1.2, RFC 6066 3).
pub fn client_hello_sni(hello: &[u8]) -> Option<String> {
    let mut r = Reader(hello);
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    r.take(3)?; // length
    r.take(2 + 32)?; // version, random
    let session = r.u8()?;
    r.take(usize::from(session))?;
    let suites = r.u16()?;
    r.take(usize::from(suites))?;
    let compression = r.u8()?;
    r.take(usize::from(compression))?;
    let extensions = r.u16()?;
    let mut ext = Reader(r.take(usize::from(extensions))?);
    while let (Some(kind), Some(len)) = (ext.u16(), ext.u16()) {
        let body = ext.take(usize::from(len))?;
        if kind != 0 {
            continue;
        }
        let mut names = Reader(body);
        let list = names.u16()?;
        let mut list = Reader(names.take(usize::from(list))?);
        while let Some(name_type) = list.u8() {
            let n = list.u16()?;
            let name = list.take(usize::from(n))?;
            if name_type == 0 {
                return std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
            }
        }
    }
    None
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sni_from_a_real_client_hello() {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("Shop.Example.com").expect("name");
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut wire = Vec::new();
        conn.write_tls(&mut wire).expect("hello");
        assert_eq!(wire[0], 0x16);
        assert_eq!(client_hello_sni(&wire[5..]), Some("shop.example.com".to_string()));
        assert_eq!(client_hello_sni(&wire[5..40]), None, "a truncated hello has no SNI");
        assert_eq!(client_hello_sni(b"garbage"), None);
    }
}
