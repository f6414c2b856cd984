//! Who a caller is: its Kubernetes service account token, checked by the API
//! server (a TokenReview), gives the namespace and service account. The token is
//! never read by the controller itself: a forged or expired one is the API
//! server's to refuse.
//!
//! Audiences: a token for `istio-ca` (what Istio's agent asks the kubelet for,
//! `audience: istio-ca` in its projected volume) is accepted, and so is a token for
//! the API server's own audience (a Pod's default service account token), as
//! istiod accepts both unless told otherwise. A token for any other audience is
//! refused.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};

/// The caller a token authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its namespace.
    pub namespace: String,
    /// Its service account.
    pub service_account: String,
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server did not authenticate it (forged, expired, for another
    /// audience, of a deleted service account).
    #[error("the token was not accepted by the API server: {0}")]
    Rejected(String),
    /// It authenticates a user that is not a service account.
    #[error("the token is not a service account's (it authenticates {0:?})")]
    NotServiceAccount(String),
    /// The review could not be made.
    #[error("cannot review the token: the API server: {0}")]
    Api(#[from] kube::Error),
}

/// Reviews tokens through the API server.
#[derive(Clone)]
pub struct TokenReviewer {
    api: Api<TokenReview>,
    audience: String,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// A reviewer through `client`, accepting tokens for `audience` and for the API
    /// server's own audience.
    pub fn new(client: kube::Client, audience: &str) -> TokenReviewer {
        TokenReviewer {
            api: Api::all(client),
            audience: audience.to_string(),
        }
    }

    /// The caller `token` authenticates.
    pub async fn review(&self, token: &str) -> Result<Caller, Error> {
        let first = self.ask(token, Some(&self.audience)).await?;
        let status = if first.authenticated == Some(true) {
            first
        } else {
            // Not for `istio-ca`: perhaps for the API server itself.
            let second = self.ask(token, None).await?;
            if second.authenticated != Some(true) {
                let reason = first
                    .error
                    .or(second.error)
                    .unwrap_or_else(|| "not authenticated".to_string());
                return Err(Error::Rejected(reason));
            }
            second
        };
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        caller(&username).ok_or(Error::NotServiceAccount(username))
    }

    async fn ask(&self, token: &str, audience: Option<&str>) -> Result<TokenReviewStatus, Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: audience.map(|a| vec![a.to_string()]),
            },
            ..TokenReview::default()
        };
        let answer = self.api.create(&PostParams::default(), &review).await?;
        Ok(answer.status.unwrap_or_default())
    }
}

/// The service account of a username `system:serviceaccount:<namespace>:<name>`.
fn caller(username: &str) -> Option<Caller> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    let valid = |s: &str| !s.is_empty() && !s.contains(':') && !s.contains('/');
    (valid(namespace) && valid(name)).then(|| Caller {
        namespace: namespace.to_string(),
        service_account: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_usernames_give_the_caller() {
        assert_eq!(
            caller("system:serviceaccount:shop:web"),
            Some(Caller {
                namespace: "shop".into(),
                service_account: "web".into()
            })
        );
        for not in [
            "admin",
            "system:serviceaccount:shop",
            "system:serviceaccount::web",
            "system:serviceaccount:shop:web:x",
            "system:node:n1",
        ] {
            assert_eq!(caller(not), None, "{not}");
        }
    }
}
