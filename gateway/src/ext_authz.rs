//! The check request to an external authorizer (AuthorizationPolicy CUSTOM with an
//! `envoyExtAuthzHttp` provider), as Envoy's HTTP ext_authz filter makes it: the
//! request's method and path (after `pathPrefix`), its Host and the headers the
//! provider lists, no body. A 2xx answer allows the request; any other answer is what
//! the client gets; an unreachable service gives `statusOnError` unless `failOpen`.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use strait_config::ext_authz::{any_matches, Pattern, Provider};

use crate::upstream_client::SideCalls;

/// Largest denial body passed on to the client.
const MAX_BODY: usize = 64 * 1024;

/// The authorizer's decision.
#[derive(Debug)]
pub enum Verdict {
    /// Go on, adding these headers upstream and to the client's response.
    Allow {
        /// For the upstream request.
        upstream: Vec<(HeaderName, HeaderValue)>,
        /// For the client's response.
        downstream: Vec<(HeaderName, HeaderValue)>,
    },
    /// Answer the client with this.
    Deny {
        /// Status.
        status: u16,
        /// Headers.
        headers: Vec<(HeaderName, HeaderValue)>,
        /// Body.
        body: Bytes,
    },
}

/// Headers of an answer that describe its own transfer, never passed on.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        *name,
        header::CONNECTION | header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::HOST | header::DATE
    ) || name.as_str() == "keep-alive"
}

fn pick(headers: &http::HeaderMap, patterns: &[Pattern], all_when_empty: bool) -> Vec<(HeaderName, HeaderValue)> {
    headers
        .iter()
        .filter(|(name, _)| !hop_by_hop(name))
        .filter(|(name, _)| (all_when_empty && patterns.is_empty()) || any_matches(patterns, name.as_str()))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

fn on_error(provider: &Provider, why: &str) -> Verdict {
    log::warn!("ext_authz {}: {why}", provider.name);
    if provider.fail_open {
        Verdict::Allow {
            upstream: Vec::new(),
            downstream: Vec::new(),
        }
    } else {
        Verdict::Deny {
            status: provider.status_on_error,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }
}

/// Asks the authorizer at `peer` about `req` (`peer` None: no endpoint), through
/// the side-call client (so the authorizer's cluster TLS applies).
pub async fn check(
    side_calls: &SideCalls,
    peer: Option<HttpPeer>,
    provider: &Provider,
    req: &RequestHeader,
) -> Verdict {
    let Some(peer) = peer else {
        return on_error(provider, "no endpoint");
    };
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let target = format!("{}{path}", provider.path_prefix);
    let mut check = match RequestHeader::build(req.method.clone(), target.as_bytes(), None) {
        Ok(c) => c,
        Err(e) => return on_error(provider, &e.to_string()),
    };
    let mut headers: Vec<(HeaderName, HeaderValue)> = req
        .headers
        .iter()
        .filter(|(name, _)| **name == header::HOST || any_matches(&provider.include_request_headers, name.as_str()))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    if let Some(authority) = req.uri.authority().filter(|_| !req.headers.contains_key(header::HOST)) {
        headers.extend(
            HeaderValue::from_str(authority.as_str())
                .ok()
                .map(|v| (header::HOST, v)),
        );
    }
    for (name, value) in &provider.include_additional_headers {
        headers.extend(HeaderValue::from_str(value).ok().map(|v| (name.clone(), v)));
    }
    headers.push((header::CONTENT_LENGTH, HeaderValue::from_static("0")));
    for (name, value) in headers {
        if let Err(e) = check.append_header(name, value) {
            return on_error(provider, &e.to_string());
        }
    }
    let answer = match side_calls
        .request(&peer, check, Bytes::new(), provider.timeout, MAX_BODY)
        .await
    {
        Ok(a) => a,
        Err(e) => return on_error(provider, &e.to_string()),
    };
    let (status, headers) = (answer.head.status, &answer.head.headers);
    if status.is_success() {
        return Verdict::Allow {
            upstream: pick(headers, &provider.headers_to_upstream_on_allow, false),
            downstream: pick(headers, &provider.headers_to_downstream_on_allow, false),
        };
    }
    let mut picked = pick(headers, &provider.headers_to_downstream_on_deny, true);
    // The body's type goes with the body.
    picked.retain(|(n, _)| *n != header::CONTENT_TYPE);
    if let Some(ct) = headers.get(header::CONTENT_TYPE).filter(|_| !answer.body.is_empty()) {
        picked.push((header::CONTENT_TYPE, ct.clone()));
    }
    Verdict::Deny {
        status: status.as_u16(),
        headers: picked,
        body: answer.body,
    }
}
