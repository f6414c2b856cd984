//! The request headers that belong to one connection (RFC 9110 §7.6.1): removed
//! before a request is forwarded on the lean path, as Pingora's proxy removes them
//! on the full one. The names the `Connection` header lists go too; listing one of
//! the headers the gateway itself vouches for is refused, as is a malformed list.

use http::header::{self, HeaderName};
use pingora::http::RequestHeader;
use pingora::prelude::*;

/// More names than any client lists; bounds the work one header can cause.
const MAX_NOMINATIONS: usize = 32;

/// Always connection-specific, listed in `Connection` or not. A static, not a
/// const: a const would be built anew wherever it is used, once per header name looked at.
static STANDARD: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

/// Headers a client must not get removed by naming them in `Connection`.
fn protected(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host" | "x-forwarded-for" | "x-forwarded-host" | "x-forwarded-proto"
    )
}

fn invalid(why: &'static str) -> Box<Error> {
    Error::explain(ErrorType::InvalidHTTPHeader, why).into_down()
}

/// Removes the connection-specific headers of `req`; an invalid `Connection`
/// list is the client's error (400).
pub fn strip(req: &mut RequestHeader) -> Result<()> {
    // Nearly every request has none: one pass over the names it has, rather than a
    // lookup (a hash of the name) per connection-specific name.
    if !req.headers.keys().any(|name| STANDARD.contains(name)) {
        return Ok(());
    }
    if req.headers.contains_key(header::CONNECTION) {
        let mut nominated: Vec<HeaderName> = Vec::new();
        for value in req.headers.get_all(header::CONNECTION) {
            for token in value.as_bytes().split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.is_empty() {
                    continue;
                }
                if nominated.len() == MAX_NOMINATIONS {
                    return Err(invalid("too many names in the Connection header"));
                }
                if !token.iter().all(|b| is_tchar(*b)) {
                    return Err(invalid("invalid name in the Connection header"));
                }
                let name =
                    HeaderName::from_bytes(token).map_err(|_| invalid("invalid name in the Connection header"))?;
                if protected(&name) {
                    return Err(invalid("a protected header is named in the Connection header"));
                }
                nominated.push(name);
            }
        }
        for name in nominated {
            req.remove_header(&name);
        }
    }
    for name in &STANDARD {
        if req.headers.contains_key(name) {
            req.remove_header(name);
        }
    }
    Ok(())
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).expect("header");
        }
        req
    }

    #[test]
    fn standard_and_nominated_headers_go_the_rest_stays() {
        let mut req = request(&[
            ("host", "app"),
            ("connection", "keep-alive, X-Trace-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-trace-hop", "1"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic eA=="),
            ("x-kept", "yes"),
        ]);
        strip(&mut req).expect("valid");
        let names: Vec<&str> = req.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["host", "x-kept"]);
    }

    #[test]
    fn naming_a_protected_or_malformed_header_is_refused() {
        for value in ["close, x-forwarded-for", "Host", "\"x-a\"", ":authority"] {
            let mut req = request(&[("connection", value)]);
            let e = strip(&mut req).expect_err(value);
            assert_eq!(e.etype(), &ErrorType::InvalidHTTPHeader, "{value}");
        }
        let many = vec!["x-a"; MAX_NOMINATIONS + 1].join(",");
        assert!(strip(&mut request(&[("connection", &many)])).is_err());
    }
}
