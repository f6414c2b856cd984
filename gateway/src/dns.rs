//! Name resolution for DNS endpoints (ServiceEntry `resolution: DNS`), with the
//! answers cached for their TTL by hickory's resolver; the hosts file is honoured.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::ResolverConfig;
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveError, TokioResolver};
use thiserror::Error;

/// Why a hostname gave no address.
#[derive(Debug, Error)]
pub enum DnsError {
    /// The lookup failed (no such name, no answer in time, no server).
    #[error("cannot resolve {host}: {source}")]
    Lookup {
        /// The name looked up.
        host: String,
        /// The resolver's reason.
        source: ResolveError,
    },
    /// The answer held no address.
    #[error("no address for {host}")]
    NoAddress {
        /// The name looked up.
        host: String,
    },
}

/// A shared resolver.
#[derive(Debug)]
pub struct Dns {
    resolver: TokioResolver,
}

impl Default for Dns {
    fn default() -> Self {
        Dns::new()
    }
}

impl Dns {
    /// The system's configuration (resolv.conf, hosts file); hickory's defaults when
    /// it cannot be read.
    pub fn new() -> Dns {
        let resolver = match TokioResolver::builder_tokio() {
            Ok(b) => b.build(),
            Err(e) => {
                log::warn!("cannot read the system DNS configuration ({e}); using hickory's defaults");
                TokioResolver::builder_with_config(ResolverConfig::default(), TokioConnectionProvider::default())
                    .build()
            }
        };
        Dns { resolver }
    }

    /// An address for `host` with `port`: the first answer, IPv4 first (Envoy's
    /// LOGICAL_DNS, which Istio uses for DNS resolution at gateways).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, DnsError> {
        let answer = self.resolver.lookup_ip(host).await.map_err(|source| DnsError::Lookup {
            host: host.to_string(),
            source,
        })?;
        let ip: Option<IpAddr> = answer.iter().next();
        ip.map(|ip| SocketAddr::new(ip, port))
            .ok_or_else(|| DnsError::NoAddress { host: host.to_string() })
    }
}
