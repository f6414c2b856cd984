//! The certificate service (`istio.v1.auth.IstioCertificateService`): a caller's
//! token says who it is, its CSR must ask for that identity and no other, and the
//! answer is the signed chain.
//!
//! Identity: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`, the
//! trust domain from the mesh config's `trustDomain` (default `cluster.local`).
//! Where istiod replaces whatever names a CSR asks for by the caller's identity,
//! Strait refuses a CSR asking for another: an agent that asks for the wrong name
//! learns it at once rather than from a peer's refusal later.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use strait_push::ca_proto::istio_certificate_service_server::IstioCertificateService;
use strait_push::ca_proto::{IstioCertificateRequest, IstioCertificateResponse};
use tonic::{Request, Response, Status};

use super::authority::Authority;
use super::csr;
use super::metrics::{reason, CaMetrics};
use super::token_review::{self, Caller, TokenReviewer};
use crate::store::Store;

/// The trust domain when the mesh config names none (Istio's).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// How long certificates live.
#[derive(Debug, Clone, Copy)]
pub struct Ttl {
    /// When the request asks for none (`--workload-cert-ttl`).
    pub default: Duration,
    /// The most a request gets (`--max-workload-cert-ttl`): longer requests are
    /// shortened to it.
    pub max: Duration,
}

impl Ttl {
    /// The validity for a request asking for `seconds` (0 or less: the default).
    pub fn for_request(&self, seconds: i64) -> Duration {
        match u64::try_from(seconds) {
            Ok(s) if s > 0 => Duration::from_secs(s).min(self.max),
            _ => self.default.min(self.max),
        }
    }
}

/// The service.
#[derive(Clone)]
pub struct CaService {
    authority: Arc<Authority>,
    reviewer: TokenReviewer,
    store: Arc<Store>,
    ttl: Ttl,
    metrics: CaMetrics,
    /// The trust domain of the store's last version read: (version, domain).
    trust_domain: Arc<Mutex<(u64, String)>>,
}

impl std::fmt::Debug for CaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaService")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl CaService {
    /// A service signing with `authority`, authenticating callers with `reviewer`
    /// and reading the trust domain from `store`'s mesh config.
    pub fn new(
        authority: Arc<Authority>,
        reviewer: TokenReviewer,
        store: Arc<Store>,
        ttl: Ttl,
        metrics: CaMetrics,
    ) -> Self {
        CaService {
            authority,
            reviewer,
            store,
            ttl,
            metrics,
            trust_domain: Arc::new(Mutex::new((0, DEFAULT_TRUST_DOMAIN.to_string()))),
        }
    }

    /// The trust domain in force; None before the mesh config has been read.
    fn trust_domain(&self) -> Option<String> {
        let state = self.store.current();
        if state.version == 0 {
            return None;
        }
        let mut cached = self.trust_domain.lock().unwrap_or_else(PoisonError::into_inner);
        if cached.0 != state.version {
            // A mesh config that does not parse keeps the domain in force, as the
            // store keeps the mesh config in force.
            if let Some(domain) = trust_domain(state.mesh_text.as_deref()) {
                cached.1 = domain;
            }
            cached.0 = state.version;
        }
        Some(cached.1.clone())
    }

    fn refuse(&self, why: &'static str, status: Status) -> Status {
        self.metrics.refused.with_label_values(&[why]).inc();
        log::info!("CA: refused ({why}): {}", status.message());
        status
    }

    async fn authenticate<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let Some(token) = bearer(request.metadata()) else {
            self.metrics.authentication_failures.inc();
            return Err(self.refuse(
                reason::TOKEN,
                Status::unauthenticated("no token: send the service account token as `authorization: Bearer <token>`"),
            ));
        };
        match self.reviewer.review(token).await {
            Ok(caller) => Ok(caller),
            Err(e @ token_review::Error::Rejected(_)) => {
                self.metrics.authentication_failures.inc();
                Err(self.refuse(reason::TOKEN, Status::unauthenticated(e.to_string())))
            }
            Err(e @ token_review::Error::NotServiceAccount(_)) => {
                self.metrics.identity_errors.inc();
                Err(self.refuse(reason::IDENTITY, Status::permission_denied(e.to_string())))
            }
            Err(e @ token_review::Error::Api(_)) => {
                Err(self.refuse(reason::UNAVAILABLE, Status::unavailable(e.to_string())))
            }
        }
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// `trustDomain` of a mesh config text (None: it does not parse, or is no map);
/// Istio's default when the field is absent.
pub fn trust_domain(mesh_text: Option<&str>) -> Option<String> {
    let Some(text) = mesh_text else {
        return Some(DEFAULT_TRUST_DOMAIN.to_string());
    };
    let documents = strait_config::yaml::parse_documents(text).ok()?;
    let Some(document) = documents.first() else {
        return Some(DEFAULT_TRUST_DOMAIN.to_string());
    };
    let map = document.value.as_object()?;
    Some(
        map.get("trustDomain")
            .and_then(|v| v.as_str())
            .filter(|d| !d.is_empty())
            .unwrap_or(DEFAULT_TRUST_DOMAIN)
            .to_string(),
    )
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        self.metrics.requests.inc();
        let Some(trust_domain) = self.trust_domain() else {
            return Err(self.refuse(
                reason::UNAVAILABLE,
                Status::unavailable("the controller has not read the cluster (and its mesh config) yet"),
            ));
        };
        let caller = self.authenticate(&request).await?;
        let request = request.into_inner();
        let csr = csr::parse(&request.csr).map_err(|e| {
            self.metrics.csr_errors.inc();
            self.refuse(reason::CSR, Status::invalid_argument(e.to_string()))
        })?;
        let identity = strait_push::csr::spiffe_id(&trust_domain, &caller.namespace, &caller.service_account);
        let wanted = format!("URI:{identity}");
        if csr.names.is_empty() {
            self.metrics.identity_errors.inc();
            return Err(self.refuse(
                reason::CSR,
                Status::invalid_argument(format!(
                    "the CSR names no identity: it must ask for {identity} as a subjectAltName URI"
                )),
            ));
        }
        if let Some(other) = csr.names.iter().find(|n| **n != wanted) {
            return Err(self.refuse(
                reason::IDENTITY,
                Status::permission_denied(format!(
                    "the CSR asks for {other}, but the token is service account {}/{}: it may ask for {identity} only",
                    caller.namespace, caller.service_account
                )),
            ));
        }
        let ttl = self.ttl.for_request(request.validity_duration);
        let chain = self
            .authority
            .sign_workload(&csr.public_key, &identity, ttl)
            .map_err(|e| {
                self.metrics.sign_errors.inc();
                self.refuse(reason::INTERNAL, Status::internal(e.to_string()))
            })?;
        self.metrics.issued.inc();
        log::info!("CA: signed {identity} for {}s", ttl.as_secs());
        Ok(Response::new(IstioCertificateResponse { cert_chain: chain }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_is_the_request_s_capped_or_the_default() {
        let ttl = Ttl {
            default: Duration::from_secs(86_400),
            max: Duration::from_secs(7_776_000),
        };
        assert_eq!(ttl.for_request(0), Duration::from_secs(86_400));
        assert_eq!(ttl.for_request(-5), Duration::from_secs(86_400));
        assert_eq!(ttl.for_request(3600), Duration::from_secs(3600));
        assert_eq!(ttl.for_request(i64::MAX), Duration::from_secs(7_776_000));
    }

    #[test]
    fn the_trust_domain_comes_from_the_mesh_config() {
        assert_eq!(trust_domain(None).as_deref(), Some("cluster.local"));
        assert_eq!(trust_domain(Some("")).as_deref(), Some("cluster.local"));
        assert_eq!(
            trust_domain(Some("trustDomain: example.org\nenableTracing: true\n")).as_deref(),
            Some("example.org")
        );
        assert_eq!(
            trust_domain(Some("enableTracing: true\n")).as_deref(),
            Some("cluster.local")
        );
        assert_eq!(trust_domain(Some("trustDomain: [")), None);
        assert_eq!(trust_domain(Some("- a list\n")), None);
    }

    #[test]
    fn the_bearer_token_is_read_from_the_authorization_metadata() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        assert_eq!(bearer(&metadata), None);
        metadata.insert("authorization", "Bearer abc.def".parse().expect("ascii"));
        assert_eq!(bearer(&metadata), Some("abc.def"));
        metadata.insert("authorization", "Basic abc".parse().expect("ascii"));
        assert_eq!(bearer(&metadata), None);
        metadata.insert("authorization", "Bearer ".parse().expect("ascii"));
        assert_eq!(bearer(&metadata), None);
    }
}
