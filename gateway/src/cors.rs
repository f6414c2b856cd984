//! CORS as Envoy's filter applies Istio's `corsPolicy`: preflights from allowed
//! origins are answered by the gateway, other requests from allowed origins get
//! the `access-control-*` response headers, everything else passes untouched.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;
use strait_config::router::str_matches;
use strait_config::snapshot::Cors;

/// What to do with a request under a CORS policy.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Not a cross-origin request (no `Origin`): nothing to do.
    NotCors,
    /// A preflight from an allowed origin: answer 200 with these headers.
    AnswerPreflight(Vec<(HeaderName, HeaderValue)>),
    /// A preflight from an origin that is not allowed, under IGNORE: answer 200
    /// without CORS headers.
    RefusePreflight,
    /// Pass the request on; add these headers to the response (empty when the
    /// origin is not allowed).
    Forward(Vec<(HeaderName, HeaderValue)>),
}

/// Whether a request is a CORS preflight: OPTIONS with an origin and the method
/// it asks about.
pub fn is_preflight(req: &pingora::http::RequestHeader) -> bool {
    preflight(&req.method, &req.headers)
}

fn preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Decides for one request.
pub fn decide(cors: &Cors, method: &Method, headers: &HeaderMap) -> Decision {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Decision::NotCors;
    };
    let allowed = origin
        .to_str()
        .is_ok_and(|o| cors.allow_origins.iter().any(|m| str_matches(m, o)));
    match (preflight(method, headers), allowed) {
        (true, true) => {
            let mut out = common(cors, origin);
            if let Some(v) = &cors.allow_methods {
                out.push((header::ACCESS_CONTROL_ALLOW_METHODS, v.clone()));
            }
            if let Some(v) = &cors.allow_headers {
                out.push((header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone()));
            }
            if let Some(v) = &cors.max_age {
                out.push((header::ACCESS_CONTROL_MAX_AGE, v.clone()));
            }
            Decision::AnswerPreflight(out)
        }
        (true, false) if !cors.forward_unmatched_preflights => Decision::RefusePreflight,
        (false, true) => {
            let mut out = common(cors, origin);
            if let Some(v) = &cors.expose_headers {
                out.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone()));
            }
            Decision::Forward(out)
        }
        _ => Decision::Forward(Vec::new()),
    }
}

fn common(cors: &Cors, origin: &HeaderValue) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = vec![(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone())];
    if cors.allow_credentials {
        out.push((
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_config::snapshot::StrMatch;

    fn policy(forward: bool) -> Cors {
        Cors {
            allow_origins: vec![StrMatch::Exact("https://a.example".into())],
            allow_methods: Some(HeaderValue::from_static("GET,POST")),
            allow_headers: Some(HeaderValue::from_static("x-token")),
            expose_headers: Some(HeaderValue::from_static("x-trace")),
            max_age: Some(HeaderValue::from_static("60")),
            allow_credentials: true,
            forward_unmatched_preflights: forward,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn preflights_and_simple_requests() {
        let p = policy(true);
        let pre = headers(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "POST"),
        ]);
        let Decision::AnswerPreflight(h) = decide(&p, &Method::OPTIONS, &pre) else {
            panic!("preflight from an allowed origin is answered");
        };
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "access-control-allow-origin",
                "access-control-allow-credentials",
                "access-control-allow-methods",
                "access-control-allow-headers",
                "access-control-max-age"
            ]
        );
        let other = headers(&[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ]);
        assert_eq!(decide(&p, &Method::OPTIONS, &other), Decision::Forward(Vec::new()));
        assert_eq!(
            decide(&policy(false), &Method::OPTIONS, &other),
            Decision::RefusePreflight
        );
        let simple = headers(&[("origin", "https://a.example")]);
        let Decision::Forward(h) = decide(&p, &Method::GET, &simple) else {
            panic!("simple request forwarded");
        };
        assert_eq!(h.len(), 3);
        assert_eq!(decide(&p, &Method::GET, &HeaderMap::new()), Decision::NotCors);
    }
}
