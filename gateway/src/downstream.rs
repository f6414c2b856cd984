//! The gateway's edge towards its clients: the limits it enforces on a request
//! before routing it (Pingora alone allows 256 headers and about 1 MiB of them), the
//! normalization of its path, and the forwarding headers it writes for the upstream
//! (`x-forwarded-for`, `x-forwarded-proto`, `x-forwarded-client-cert`, `x-request-id`),
//! which only the gateway may set: what a client sends in their place is not trusted.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use strait_config::path::Normalization;

use crate::client_auth::PeerIdentity;
use crate::reply::Reply;
use crate::request::{path_and_query, X_FORWARDED_FOR};

/// Request limits enforced before routing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most request headers accepted (431 beyond).
    pub max_headers: usize,
    /// Most bytes of request headers accepted, names and values (431 beyond).
    pub max_header_bytes: usize,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// What to do with request headers whose names contain underscores.
    pub underscores: Underscores,
    /// A request whose connection stays silent this long (reading or writing) is ended.
    pub stream_idle_timeout: Duration,
    /// How request paths are normalized before routing and authorization.
    pub normalization: Normalization,
    /// Proxies in front of the gateway whose `x-forwarded-for` entries are believed.
    pub trusted_hops: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_headers: 100,
            max_header_bytes: 60 * 1024,
            connect_timeout: Duration::from_secs(10),
            underscores: Underscores::Reject,
            stream_idle_timeout: Duration::from_secs(300),
            normalization: Normalization::Base,
            trusted_hops: 0,
        }
    }
}

/// Envoy's `headers_with_underscores_action`: such names are a classic way to
/// smuggle a header past checks that normalise `_` and `-` differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Underscores {
    /// Answer 400.
    Reject,
    /// Remove those headers and go on.
    Drop,
    /// Pass them on.
    Allow,
}

// Parsed once: looking a header up by string parses the name on every call.
/// `x-request-id`.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
const HTTP: HeaderValue = HeaderValue::from_static("http");
const HTTPS: HeaderValue = HeaderValue::from_static("https");

/// Applies the header limits: names with underscores as `limits.underscores` says,
/// then the count and size of the headers (431). A refused request's connection is
/// closed.
pub fn check_headers(limits: &Limits, req: &mut RequestHeader) -> Result<(), Reply<'static>> {
    if limits.underscores != Underscores::Allow && req.headers.keys().any(|k| k.as_str().contains('_')) {
        if limits.underscores == Underscores::Reject {
            return Err(Reply::new(400, b"header name with underscore").closing());
        }
        let names: Vec<HeaderName> = req
            .headers
            .keys()
            .filter(|k| k.as_str().contains('_'))
            .cloned()
            .collect();
        for name in names {
            req.remove_header(&name);
        }
    }
    if req.headers.len() > limits.max_headers || header_bytes(req) > limits.max_header_bytes {
        return Err(Reply::new(431, b"request header fields too large").closing());
    }
    Ok(())
}

fn header_bytes(req: &RequestHeader) -> usize {
    req.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum()
}

/// Normalizes the request path in place (mesh `pathNormalization`); a path that
/// cannot be normalized gets 400.
pub fn normalize_path(normalization: Normalization, req: &mut RequestHeader) -> Result<(), Reply<'static>> {
    let invalid = || Reply::new(400, b"invalid path");
    let pq = path_and_query(req);
    let (path, query) = pq.split_once('?').map_or((pq, None), |(p, q)| (p, Some(q)));
    let normalized = match strait_config::path::normalize(path, normalization) {
        Ok(None) => return Ok(()),
        Ok(Some(normalized)) => normalized,
        Err(_) => return Err(invalid()),
    };
    let full = match query {
        Some(q) => format!("{normalized}?{q}"),
        None => normalized,
    };
    match full.parse::<http::Uri>() {
        Ok(uri) => {
            req.set_uri(uri);
            Ok(())
        }
        Err(_) => Err(invalid()),
    }
}

/// Writes the forwarding headers of an upstream request: the peer, when given,
/// appended to `x-forwarded-for`, `x-forwarded-proto`, and `x-forwarded-client-cert`
/// from the connection's client certificate only.
pub fn forwarding_headers(
    upstream: &mut RequestHeader,
    peer: Option<IpAddr>,
    tls: bool,
    client_cert: Option<&PeerIdentity>,
) -> Result<()> {
    if let Some(ip) = peer {
        let previous = upstream.headers.get(&X_FORWARDED_FOR).map(HeaderValue::as_bytes);
        if let Some(xff) = forwarded_for(previous, ip) {
            upstream.insert_header("x-forwarded-for", xff)?;
        }
    }
    // Static values: a `&str` would be validated and copied into a new buffer each time.
    let proto = if tls { HTTPS } else { HTTP };
    upstream.insert_header("x-forwarded-proto", proto)?;
    // Envoy's SANITIZE_SET: only the gateway speaks of the client's certificate.
    match client_cert.and_then(|p| p.xfcc.clone()) {
        Some(xfcc) => {
            upstream.insert_header(X_FORWARDED_CLIENT_CERT, xfcc)?;
        }
        None if upstream.headers.contains_key(&X_FORWARDED_CLIENT_CERT) => {
            upstream.remove_header(&X_FORWARDED_CLIENT_CERT);
        }
        None => {}
    }
    Ok(())
}

/// Gives the upstream request an `x-request-id` when the client sent none. The id
/// made up is returned when `keep` (the logs or the span will show it); not keeping
/// it spares a copy.
pub fn ensure_request_id(upstream: &mut RequestHeader, keep: bool) -> Result<Option<HeaderValue>> {
    if upstream.headers.get(&X_REQUEST_ID).is_some() {
        return Ok(None);
    }
    let id = request_id();
    let kept = keep.then(|| id.clone());
    upstream.insert_header("x-request-id", id)?;
    Ok(kept)
}

/// A version-4 UUID, as Envoy generates for `x-request-id`. Written by hand into a
/// fixed buffer: the formatting machinery cost more than the rest of the request
/// filter, and pushing digit by digit onto a vector still cost several hundred
/// instructions a request.
pub fn request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Where each byte's two digits go in 8-4-4-4-12; the dashes stay where nothing goes.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut bytes = fastrand::u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    for (b, at) in bytes.into_iter().zip(AT) {
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 0x0f)];
    }
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("-"))
}

/// `x-forwarded-for` with `ip` appended to what the client sent, built in one buffer.
fn forwarded_for(previous: Option<&[u8]>, ip: IpAddr) -> Option<HeaderValue> {
    let mut out = Vec::with_capacity(previous.map_or(0, |p| p.len() + 2) + 39);
    if let Some(p) = previous {
        out.extend_from_slice(p);
        out.extend_from_slice(b", ");
    }
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            write!(out, "{v6}").ok()?;
        }
    }
    HeaderValue::from_maybe_shared(Bytes::from(out)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v4() {
        for _ in 0..100 {
            let value = request_id();
            let id = value.to_str().expect("ascii");
            assert_eq!(id.len(), 36);
            assert_eq!(id.matches('-').count(), 4);
            assert_eq!([&id[8..9], &id[13..14], &id[14..15]], ["-", "-", "4"]);
            assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
            assert_ne!(value, request_id());
        }
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let v4: IpAddr = "10.0.12.255".parse().expect("ip");
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(forwarded_for(None, v4).expect("value"), "10.0.12.255");
        assert_eq!(
            forwarded_for(Some(b"1.2.3.4"), v4).expect("value"),
            "1.2.3.4, 10.0.12.255"
        );
        assert_eq!(
            forwarded_for(Some(b"1.2.3.4"), v6).expect("value"),
            "1.2.3.4, 2001:db8::1"
        );
        assert_eq!(
            forwarded_for(None, "0.9.100.7".parse().expect("ip")).expect("value"),
            "0.9.100.7"
        );
    }
}
