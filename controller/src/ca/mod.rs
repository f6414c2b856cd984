//! The controller's certificate authority: workload identities for the mesh,
//! compatible with Istio's agent and istiod's CA.
//!
//! - `secrets`: the CA's key and certificates, from `cacerts` (plugged in) or
//!   `istio-ca-secret` (a self-signed root made at first start).
//! - `authority`: checks them and signs: workload certificates for one SPIFFE ID,
//!   and the controller's own TLS certificate.
//! - `service`: Istio's certificate service; callers authenticate with their
//!   service account token (`token_review`), their CSR (`csr`) must ask for their
//!   own identity.
//! - `secure_port`: the TLS port (15012) serving it beside the push service.
//! - `root_cert`: the root published as `istio-ca-root-cert` in every namespace.
//! - `metrics`: istiod's CA metric names on the controller's metrics port.
//!
//! The CA runs in Kubernetes mode only: it needs the API server to review tokens
//! and to keep its Secret.

pub mod authority;
pub mod csr;
mod der;
pub mod keys;
pub mod metrics;
pub mod root_cert;
pub mod secrets;
pub mod secure_port;
pub mod service;
pub mod token_review;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::controller::Controller;

/// The command-line flags of the CA and the TLS port (flattened into
/// `strait-controller`'s).
#[derive(clap::Args, Debug, Clone)]
pub struct CaFlags {
    /// The controller's namespace (its Pod's): where the CA keeps its Secrets
    /// (`cacerts` if the operator plugged one in, else `istio-ca-secret`).
    #[arg(long, env = "STRAIT_NAMESPACE", default_value = "istio-system")]
    pub namespace: String,
    /// TLS port (gRPC): Istio's certificate service (the CA) and the push service,
    /// with a certificate from the CA. Kubernetes mode only (the CA needs the API
    /// server for TokenReview and its Secret); 0 disables the port and the CA.
    #[arg(long, env = "STRAIT_SECURE_PORT", default_value_t = strait_push::DEFAULT_SECURE_PORT)]
    pub secure_port: u16,
    /// Validity of a workload certificate whose request asks for none (Istio's
    /// DEFAULT_WORKLOAD_CERT_TTL): e.g. 24h, 90m, 7d.
    #[arg(long, env = "STRAIT_WORKLOAD_CERT_TTL", default_value = "24h", value_parser = parse_ttl)]
    pub workload_cert_ttl: Duration,
    /// The most a workload certificate is valid (Istio's MAX_WORKLOAD_CERT_TTL):
    /// longer requests get this.
    #[arg(long, env = "STRAIT_MAX_WORKLOAD_CERT_TTL", default_value = "90d", value_parser = parse_ttl)]
    pub max_workload_cert_ttl: Duration,
    /// More DNS names for the TLS port's certificate, comma-separated (it always
    /// names strait-controller.<namespace>.svc).
    #[arg(long, env = "STRAIT_TLS_DNS_NAMES", value_delimiter = ',')]
    pub tls_dns_names: Vec<String>,
    /// IP addresses for the TLS port's certificate, comma-separated.
    #[arg(long, env = "STRAIT_TLS_IP_ADDRESSES", value_delimiter = ',')]
    pub tls_ip_addresses: Vec<IpAddr>,
}

/// A certificate lifetime: Istio's durations (`24h`, `90m`, `1h30m`) or days (`90d`).
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = match text.strip_suffix('d').map(str::parse::<u64>) {
        Some(Ok(days)) => days
            .checked_mul(24 * 3600)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text}: too long"))?,
        _ => strait_config::duration::parse(text).map_err(|e| e.to_string())?,
    };
    if ttl < Duration::from_secs(1) {
        return Err(format!("{text}: a certificate lifetime must be at least 1s"));
    }
    Ok(ttl)
}

/// Why the CA or its port cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The flags contradict each other.
    #[error("{0}")]
    Flags(String),
    /// The CA's Secrets.
    #[error("the CA: {0}")]
    Secrets(#[from] secrets::Error),
    /// The metrics cannot be registered.
    #[error("the CA's metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The TLS settings.
    #[error(transparent)]
    Tls(#[from] secure_port::Error),
    /// The port cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Starts the CA and the TLS port beside `controller` (on `bind`), reading and
/// writing the cluster through `client`; nothing when `--secure-port` is 0.
/// Returns once the port is bound and the CA can sign.
pub async fn start(
    controller: &mut Controller,
    client: kube::Client,
    flags: &CaFlags,
    bind: IpAddr,
) -> Result<(), Error> {
    if flags.secure_port == 0 {
        log::info!("TLS port and CA off (--secure-port 0)");
        return Ok(());
    }
    if flags.workload_cert_ttl > flags.max_workload_cert_ttl {
        return Err(Error::Flags(format!(
            "--workload-cert-ttl ({:?}) is longer than --max-workload-cert-ttl ({:?})",
            flags.workload_cert_ttl, flags.max_workload_cert_ttl
        )));
    }
    let (authority, origin) = secrets::load_or_create(client.clone(), &flags.namespace).await?;
    let from = match origin {
        secrets::Origin::PluggedIn => format!("plugged in (Secret {}/{})", flags.namespace, secrets::PLUGGED_IN),
        secrets::Origin::Created => format!(
            "a new root (Secret {}/{} created)",
            flags.namespace,
            secrets::SELF_SIGNED
        ),
        secrets::Origin::Existing => format!("the root of Secret {}/{}", flags.namespace, secrets::SELF_SIGNED),
    };
    log::info!("CA: {from}; signing until {}", authority.expires());
    let authority = Arc::new(authority);
    let metrics = metrics::CaMetrics::register(controller.metrics.registry())?;
    metrics
        .root_expiry
        .set(authority.root_expires().unix_timestamp() as f64);
    metrics.chain_expiry.set(authority.expires().unix_timestamp() as f64);

    let mut dns = vec![strait_push::controller_server_name(&flags.namespace)];
    dns.extend(
        flags
            .tls_dns_names
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty()),
    );
    let tls = secure_port::tls_config(authority.clone(), dns, flags.tls_ip_addresses.clone())?;
    let addr = SocketAddr::new(bind, flags.secure_port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let ttl = service::Ttl {
        default: flags.workload_cert_ttl,
        max: flags.max_workload_cert_ttl,
    };
    let reviewer = token_review::TokenReviewer::new(client.clone(), strait_push::CA_AUDIENCE);
    let ca = service::CaService::new(authority.clone(), reviewer, controller.store.clone(), ttl, metrics);
    let serving = secure_port::serve(listener, tls, controller.push_service(), ca, controller.stop_signal());
    controller.add_source("TLS port", serving);
    let roots = authority.roots_pem().to_string();
    controller.add_source(
        "CA root ConfigMaps",
        root_cert::publish(client, roots, controller.stop_signal()),
    );
    log::info!("TLS port (CA and push) on {bound}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_read_as_istio_writes_them_and_in_days() {
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_ttl("1h30m"), Ok(Duration::from_secs(5_400)));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("soon").is_err());
        assert!(parse_ttl("-1h").is_err());
    }
}
