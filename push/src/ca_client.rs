//! A client of Istio's certificate service (`istio.v1.auth.IstioCertificateService`),
//! as Strait's controller serves it on its TLS port, and istiod does: a workload
//! sends a CSR with its service account token and gets a PEM chain back.
//!
//! ```no_run
//! # async fn example(token: &str, root_pem: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use strait_push::{ca_client::CaClient, csr};
//! let ca = CaClient::connect("127.0.0.1:15012", root_pem, "strait-controller.istio-system.svc").await?;
//! let request = csr::workload_csr(&csr::spiffe_id("cluster.local", "shop", "web"))?;
//! let chain = ca.sign(token, &request.csr_pem, std::time::Duration::from_secs(3600)).await?;
//! // chain[0] is the leaf (for request.key_pem), the last one the root.
//! # Ok(()) }
//! ```

use std::time::Duration;

use tonic::transport::Channel;

use crate::ca_proto::istio_certificate_service_client::IstioCertificateServiceClient;
use crate::ca_proto::IstioCertificateRequest;

/// How long one signing call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a certificate was not obtained.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No channel to the CA.
    #[error(transparent)]
    Connect(#[from] crate::tls::Error),
    /// The token cannot be sent as gRPC metadata (it holds other than visible ASCII).
    #[error("the token cannot be sent: it is not visible ASCII")]
    Token,
    /// The CA answered with an error; its code says which (Unauthenticated: the
    /// token; PermissionDenied: an identity not the token's; InvalidArgument: the CSR).
    #[error("the CA refused: {}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
    /// The call took longer than its limit.
    #[error("the CA did not answer within {0:?}")]
    Timeout(Duration),
    /// The CA answered with no certificate.
    #[error("the CA answered with an empty chain")]
    EmptyChain,
}

impl Error {
    /// The gRPC code of a refusal (None for errors of other kinds).
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Refused(status) => Some(status.code()),
            _ => None,
        }
    }
}

/// A connection to a CA. Cheap to clone; calls may run at once.
#[derive(Debug, Clone)]
pub struct CaClient {
    client: IstioCertificateServiceClient<Channel>,
}

impl CaClient {
    /// Connects to the CA at `addr` (`host:port`) over TLS, trusting `root_pem` and
    /// checking the server's certificate for `server_name`.
    pub async fn connect(addr: &str, root_pem: &str, server_name: &str) -> Result<CaClient, Error> {
        Ok(CaClient::from_channel(
            crate::tls::connect(addr, root_pem, server_name).await?,
        ))
    }

    /// A client on an existing channel (one shared with the push stream, say).
    pub fn from_channel(channel: Channel) -> CaClient {
        CaClient {
            client: IstioCertificateServiceClient::new(channel),
        }
    }

    /// Asks for a certificate for `csr_pem`, valid `ttl` (the CA may shorten it;
    /// zero asks for its default), authenticated by the service account `token`.
    /// Returns the PEM chain: the leaf first, the root last, one certificate each.
    pub async fn sign(&self, token: &str, csr_pem: &str, ttl: Duration) -> Result<Vec<String>, Error> {
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr_pem.to_string(),
            validity_duration: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            metadata: None,
        });
        let bearer = format!("Bearer {token}").parse().map_err(|_| Error::Token)?;
        request.metadata_mut().insert("authorization", bearer);
        request.set_timeout(CALL_TIMEOUT);
        let mut client = self.client.clone();
        let response = tokio::time::timeout(CALL_TIMEOUT, client.create_certificate(request))
            .await
            .map_err(|_| Error::Timeout(CALL_TIMEOUT))?
            .map_err(Error::Refused)?;
        let chain = split_chain(&response.into_inner().cert_chain);
        if chain.is_empty() {
            return Err(Error::EmptyChain);
        }
        Ok(chain)
    }
}

/// One PEM certificate per entry: Istio's CAs may put several in one entry (its
/// plugged-in CA sends `cert-chain.pem` whole).
fn split_chain(entries: &[String]) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    for entry in entries {
        let mut rest = entry.as_str();
        while let Some(end) = rest.find(END) {
            let (block, tail) = rest.split_at(end + END.len());
            if let Some(start) = block.find("-----BEGIN CERTIFICATE-----") {
                out.push(format!("{}\n", &block[start..]));
            }
            rest = tail;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_holding_several_certificates_are_split() {
        let a = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----";
        let b = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----";
        let chain = split_chain(&[format!("{a}\n"), format!("{a}\n{b}\n"), String::new()]);
        assert_eq!(chain, [format!("{a}\n"), format!("{a}\n"), format!("{b}\n")]);
    }
}
