//! A copy of a request for the route's mirrors (VirtualService `mirror`,
//! `mirrors`): its head with `-shadow` appended to the host as Envoy does, then its
//! body as it streams by, sent from tasks of their own through the side-call
//! client; the answers are read and dropped, and the original request never waits.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderValue};
use http::Method;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use crate::upstream_client::SideCalls;

/// Request bodies up to this size are mirrored; a larger body cancels the copy.
pub const MAX_BODY: usize = 64 * 1024;

/// How long a mirrored request may take before it is abandoned.
const TIMEOUT: Duration = Duration::from_secs(15);

/// A copy being assembled: the request head, then the body as it streams by.
#[derive(Debug)]
pub struct PendingCopy {
    /// Where copies go.
    pub targets: Vec<HttpPeer>,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: BytesMut,
}

impl PendingCopy {
    /// A copy of a request head; `host` is the authority the upstream gets.
    pub fn new(targets: Vec<HttpPeer>, method: Method, path: &str, headers: &HeaderMap, host: &str) -> PendingCopy {
        let mut headers = headers.clone();
        if let Ok(v) = HeaderValue::from_str(&shadow_host(host)) {
            headers.insert(header::HOST, v);
        }
        PendingCopy {
            targets,
            method,
            path: path.to_string(),
            headers,
            body: BytesMut::new(),
        }
    }

    /// Adds a body chunk; false once the body is too large to mirror.
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        if self.body.len() + chunk.len() > MAX_BODY {
            return false;
        }
        self.body.extend_from_slice(chunk);
        true
    }
}

/// `host` with `-shadow` after the name, before any port: `a.com:8080` -> `a.com-shadow:8080`.
pub fn shadow_host(host: &str) -> String {
    // A port follows the last ':' after the name, or after an IPv6 literal's ']'.
    let name_end = match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) && !host[..i].contains(':') => i,
        Some(i) if host[..i].ends_with(']') => i,
        _ => host.len(),
    };
    format!("{}-shadow{}", &host[..name_end], &host[name_end..])
}

impl PendingCopy {
    /// Sends the copy to each of its targets from tasks of their own; answers are
    /// read and dropped.
    pub fn send(self, side_calls: &Arc<SideCalls>) {
        let body = self.body.freeze();
        for peer in self.targets {
            let mut head =
                match RequestHeader::build(self.method.clone(), self.path.as_bytes(), Some(self.headers.len() + 1)) {
                    Ok(h) => h,
                    Err(e) => {
                        log::debug!("mirror: cannot copy {} {}: {e}", self.method, self.path);
                        return;
                    }
                };
            for (name, value) in &self.headers {
                let _ = head.append_header(name.clone(), value.clone());
            }
            head.remove_header(&header::TRANSFER_ENCODING);
            let _ = head.insert_header(header::CONTENT_LENGTH, body.len());
            let side_calls = side_calls.clone();
            let body = body.clone();
            tokio::spawn(async move {
                match side_calls.request(&peer, head, body, TIMEOUT, 0).await {
                    Ok(_) => {}
                    Err(e) => log::debug!("mirror to {peer} failed: {e}"),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_suffix_goes_before_the_port() {
        assert_eq!(shadow_host("app.example.com"), "app.example.com-shadow");
        assert_eq!(shadow_host("app.example.com:8080"), "app.example.com-shadow:8080");
        assert_eq!(shadow_host("[::1]:8080"), "[::1]-shadow:8080");
    }

    #[test]
    fn bodies_past_the_limit_cancel_the_copy() {
        let mut copy = PendingCopy::new(Vec::new(), Method::POST, "/", &HeaderMap::new(), "a");
        assert!(copy.push(&[0; MAX_BODY]));
        assert!(!copy.push(b"x"));
    }
}
