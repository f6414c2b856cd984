//! Facts about a request and the connection it came on, read where they are kept:
//! its authority, path and scheme, the view the router matches, whether it is gRPC,
//! and from the downstream session the peer's address, the local port, the SNI name
//! and client certificate of the TLS handshake, and the client that trusted proxies
//! in front of the gateway report. Reads only: nothing here changes a request.

use std::net::IpAddr;

use http::header::{self, HeaderName};
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use strait_config::jwt::Verified;
use strait_config::router::RequestView;

use crate::client_auth::PeerIdentity;
use crate::client_auth::TlsInfo;

// Parsed once: looking a header up by string parses the name on every call.
/// `x-forwarded-for`.
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The request's authority: its Host header, else the URI's (HTTP/2's `:authority`).
#[inline]
pub(crate) fn authority(req: &RequestHeader) -> &str {
    req.headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// The request's path with its query.
#[inline]
pub(crate) fn path_and_query(req: &RequestHeader) -> &str {
    req.uri.path_and_query().map_or("/", |p| p.as_str())
}

/// The scheme the client used to reach a listener.
#[inline]
pub(crate) fn scheme(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}

/// What the router and the authorization policies match a request against.
#[inline]
pub(crate) fn request_view<'a>(req: &'a RequestHeader, scheme: &'a str, auth: Option<&'a Verified>) -> RequestView<'a> {
    RequestView {
        method: req.method.as_str(),
        path: path_and_query(req),
        authority: authority(req),
        scheme,
        headers: &req.headers,
        claims: auth.map(|a| &a.claims),
    }
}

/// Whether the client speaks gRPC (`application/grpc`, `+proto`, `-web`...).
#[inline]
pub(crate) fn is_grpc(req: &RequestHeader) -> bool {
    req.headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The address of the connection's peer.
#[inline]
pub(crate) fn peer_ip(session: &ServerSession) -> Option<IpAddr> {
    session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())
}

/// The port the connection came in on; `listener_port` when the session does not
/// know its local address.
#[inline]
pub(crate) fn local_port(session: &ServerSession, listener_port: u16) -> u16 {
    session
        .server_addr()
        .and_then(|a| a.as_inet())
        .map_or(listener_port, |a| a.port())
}

/// What the handshake of this connection told.
#[inline]
pub(crate) fn connection_tls(session: &ServerSession) -> Option<&TlsInfo> {
    session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|d| d.extension.get::<TlsInfo>())
}

/// Where the client's connection was going before the capture rules redirected it
/// to the sidecar (SO_ORIGINAL_DST; read once per connection).
#[inline]
pub(crate) fn original_destination(session: &ServerSession) -> Option<std::net::SocketAddr> {
    session
        .digest()
        .and_then(|d| d.socket_digest.as_ref())
        .and_then(|s| s.original_dst())
        .and_then(|a| a.as_inet().copied())
}

/// The listener (index) of a sidecar's outbound HTTP request: the HTTP listener of
/// its original destination's port (`usize::MAX`: none).
pub(crate) fn outbound_listener(runtime: &crate::runtime::Runtime, original: Option<std::net::SocketAddr>) -> usize {
    let Some(original) = original else { return usize::MAX };
    runtime
        .snapshot
        .listeners
        .iter()
        .position(|l| {
            l.port == original.port() && l.protocol == strait_config::snapshot::Protocol::Http && l.mtls.is_none()
        })
        .unwrap_or(usize::MAX)
}

/// The SNI name the client sent on this connection, lowercase.
#[inline]
pub(crate) fn connection_sni(session: &ServerSession) -> Option<&str> {
    connection_tls(session).and_then(|i| i.sni.as_deref())
}

/// The identity of the client certificate of this connection.
#[inline]
pub(crate) fn connection_peer(session: &ServerSession) -> Option<&PeerIdentity> {
    connection_tls(session).and_then(|i| i.peer.as_ref())
}

/// `remote.ip`: the client as the `hops` trusted proxies in front of the gateway
/// report it in `x-forwarded-for`, else the peer.
pub(crate) fn remote_ip(session: &ServerSession, hops: u32) -> Option<IpAddr> {
    trusted_client(
        session
            .req_header()
            .headers
            .get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok()),
        peer_ip(session),
        hops,
    )
}

/// The original client as Envoy's `xff_num_trusted_hops` finds it: with `hops` trusted
/// proxies in front, the `hops`-th address from the right of `x-forwarded-for`; the
/// peer itself when nothing is trusted or the header is shorter.
fn trusted_client(xff: Option<&str>, peer: Option<IpAddr>, hops: u32) -> Option<IpAddr> {
    let hops = hops as usize;
    if hops == 0 {
        return peer;
    }
    let entries: Vec<&str> = xff.map(|x| x.split(',').map(str::trim).collect()).unwrap_or_default();
    match entries.len().checked_sub(hops).and_then(|i| entries.get(i)) {
        Some(ip) => ip.parse().ok().or(peer),
        None => peer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_hops_pick_the_client_from_x_forwarded_for() {
        let peer: Option<IpAddr> = "10.0.0.1".parse().ok();
        let xff = Some("203.0.113.7, 198.51.100.2, 10.0.0.9");
        assert_eq!(trusted_client(xff, peer, 0), peer, "nothing trusted: the peer");
        assert_eq!(trusted_client(xff, peer, 1), "10.0.0.9".parse().ok());
        assert_eq!(trusted_client(xff, peer, 3), "203.0.113.7".parse().ok());
        assert_eq!(trusted_client(xff, peer, 4), peer, "shorter than the trusted hops");
        assert_eq!(trusted_client(Some("garbage"), peer, 1), peer);
    }
}
