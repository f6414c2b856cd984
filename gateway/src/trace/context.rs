//! Trace context in request headers: reading a parent from W3C `traceparent` or
//! Zipkin's B3 (the single `b3` header and the `x-b3-*` headers), and writing the
//! gateway's span into the upstream request in the same forms. Pure functions over
//! `http::HeaderMap`; malformed headers read as "no parent", never as an error.

use http::{HeaderMap, HeaderName, HeaderValue};

pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// Which B3 form a request carried, so that the upstream request gets the same one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum B3Form {
    /// No B3 headers: only W3C trace context is written.
    #[default]
    None,
    /// The single `b3` header.
    Single,
    /// The `x-b3-*` headers.
    Multi,
}

/// What the request's headers say about its parent span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Parent {
    /// Trace id of the parent, 0 when there is none.
    pub trace_id: u128,
    /// Span id of the parent, 0 when there is none.
    pub span_id: u64,
    /// The parent's sampling decision, if it made one.
    pub sampled: Option<bool>,
    /// B3 debug flag: forces sampling and is passed on.
    pub debug: bool,
    /// Whether the context came from `traceparent` (so `tracestate` belongs to it).
    pub w3c: bool,
    /// The B3 form present in the request, if any.
    pub b3: B3Form,
}

/// The gateway's span as written into upstream headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ids {
    pub trace_id: u128,
    pub span_id: u64,
    /// The parent span, 0 for a root span.
    pub parent_span_id: u64,
    pub sampled: bool,
    pub debug: bool,
}

/// Parses exactly `N` hex digits (either case unless `lower_only`) without allocating.
fn hex<const N: usize>(text: &[u8], lower_only: bool) -> Option<u128> {
    if text.len() != N {
        return None;
    }
    let mut value = 0u128;
    for &c in text {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' if !lower_only => c - b'A' + 10,
            _ => return None,
        };
        value = value << 4 | u128::from(digit);
    }
    Some(value)
}

/// A B3 trace id: 16 or 32 hex digits (64-bit ids are widened with zeros).
fn b3_trace_id(text: &[u8]) -> Option<u128> {
    hex::<32>(text, false)
        .or_else(|| hex::<16>(text, false))
        .filter(|id| *id != 0)
}

fn b3_span_id(text: &[u8]) -> Option<u64> {
    hex::<16>(text, false)
        .and_then(|id| u64::try_from(id).ok())
        .filter(|id| *id != 0)
}

/// `traceparent`: `version-traceid-spanid-flags`, lowercase hex, as the W3C spec says.
fn traceparent(value: &[u8]) -> Option<Parent> {
    let version = hex::<2>(value.get(..2)?, true)?;
    // Version ff is forbidden; version 00 is exactly 55 bytes; later versions may
    // append fields after a dash, which are ignored.
    let length_ok = match version {
        0xff => false,
        0 => value.len() == 55,
        _ => value.len() == 55 || value.get(55) == Some(&b'-'),
    };
    if !length_ok || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = hex::<32>(&value[3..35], true).filter(|id| *id != 0)?;
    let span_id = hex::<16>(&value[36..52], true).filter(|id| *id != 0)?;
    let flags = hex::<2>(&value[53..55], true)?;
    Some(Parent {
        trace_id,
        span_id: u64::try_from(span_id).ok()?,
        sampled: Some(flags & 1 == 1),
        w3c: true,
        ..Parent::default()
    })
}

/// The single `b3` header: `{traceid}-{spanid}[-{sampling}[-{parentspanid}]]`, or a
/// bare sampling decision (`0`, `1`, `d`).
fn b3_single(value: &[u8]) -> Option<Parent> {
    let decision = |d: &[u8]| match d {
        b"0" => Some((false, false)),
        b"1" => Some((true, false)),
        b"d" => Some((true, true)),
        _ => None,
    };
    let mut fields = value.split(|c| *c == b'-');
    let first = fields.next()?;
    let Some(second) = fields.next() else {
        let (sampled, debug) = decision(first)?;
        return Some(Parent {
            sampled: Some(sampled),
            debug,
            b3: B3Form::Single,
            ..Parent::default()
        });
    };
    let trace_id = b3_trace_id(first)?;
    let span_id = b3_span_id(second)?;
    let (sampled, debug) = match fields.next() {
        None => (None, false),
        Some(d) => decision(d).map(|(s, d)| (Some(s), d))?,
    };
    if let Some(parent) = fields.next() {
        b3_span_id(parent)?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled,
        debug,
        b3: B3Form::Single,
        w3c: false,
    })
}

/// The `x-b3-*` headers.
fn b3_multi(headers: &HeaderMap) -> Option<Parent> {
    let get = |name: &HeaderName| headers.get(name).map(HeaderValue::as_bytes);
    let debug = get(&B3_FLAGS) == Some(b"1");
    let sampled = match get(&B3_SAMPLED) {
        None => None,
        Some(b"1" | b"true") => Some(true),
        Some(b"0" | b"false") => Some(false),
        Some(_) => return None,
    };
    let sampled = if debug { Some(true) } else { sampled };
    let ids = match (get(&B3_TRACE_ID), get(&B3_SPAN_ID)) {
        (None, None) => None,
        (Some(t), Some(s)) => Some((b3_trace_id(t)?, b3_span_id(s)?)),
        _ => return None,
    };
    if ids.is_none() && sampled.is_none() {
        return None;
    }
    let (trace_id, span_id) = ids.unwrap_or_default();
    Some(Parent {
        trace_id,
        span_id,
        sampled,
        debug,
        b3: B3Form::Multi,
        w3c: false,
    })
}

/// Reads the parent context. `traceparent` wins when valid (it is what Envoy's
/// OpenTelemetry tracer reads); B3 is read otherwise, and its presence is kept either
/// way so the upstream request gets B3 headers too.
pub fn extract(headers: &HeaderMap) -> Parent {
    let single = headers.get(&B3).and_then(|v| b3_single(v.as_bytes()));
    let b3 = single.or_else(|| b3_multi(headers));
    let form = b3.map_or(B3Form::None, |p| p.b3);
    match headers.get(&TRACEPARENT).and_then(|v| traceparent(v.as_bytes())) {
        Some(w3c) => Parent { b3: form, ..w3c },
        None => b3.unwrap_or_default(),
    }
}

/// Formats `value` as `N` lowercase hex digits into `out`.
fn write_hex(out: &mut [u8], value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let n = out.len();
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = DIGITS[((value >> (4 * (n - 1 - i))) & 0xf) as usize];
    }
}

fn header(bytes: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_bytes(bytes).ok()
}

/// B3 trace ids keep the 64-bit form when the high half is zero, so 64-bit tracers
/// upstream see the id they sent.
fn b3_trace_id_hex(trace_id: u128, buf: &mut [u8; 32]) -> &[u8] {
    if trace_id >> 64 == 0 {
        write_hex(&mut buf[..16], trace_id);
        &buf[..16]
    } else {
        write_hex(buf, trace_id);
        &buf[..]
    }
}

/// Writes `ids` as `traceparent` (plus `tracestate`), and as B3 in `form` when the
/// request carried B3. `put` sets one header, replacing any value.
pub(crate) fn inject(
    ids: &Ids,
    tracestate: Option<&HeaderValue>,
    form: B3Form,
    put: &mut impl FnMut(HeaderName, HeaderValue),
) {
    let mut tp = *b"00-00000000000000000000000000000000-0000000000000000-00";
    write_hex(&mut tp[3..35], ids.trace_id);
    write_hex(&mut tp[36..52], u128::from(ids.span_id));
    write_hex(&mut tp[53..55], u128::from(ids.sampled));
    if let Some(v) = header(&tp) {
        put(TRACEPARENT, v);
    }
    if let Some(state) = tracestate {
        put(TRACESTATE, state.clone());
    }
    let mut trace = [0u8; 32];
    let mut span = [0u8; 16];
    write_hex(&mut span, u128::from(ids.span_id));
    let decision: &[u8] = match (ids.debug, ids.sampled) {
        (true, _) => b"d",
        (false, true) => b"1",
        (false, false) => b"0",
    };
    match form {
        B3Form::None => {}
        B3Form::Single => {
            let mut out = Vec::with_capacity(70);
            out.extend_from_slice(b3_trace_id_hex(ids.trace_id, &mut trace));
            out.push(b'-');
            out.extend_from_slice(&span);
            out.push(b'-');
            out.extend_from_slice(decision);
            if ids.parent_span_id != 0 {
                let mut parent = [0u8; 16];
                write_hex(&mut parent, u128::from(ids.parent_span_id));
                out.push(b'-');
                out.extend_from_slice(&parent);
            }
            if let Some(v) = header(&out) {
                put(B3, v);
            }
        }
        B3Form::Multi => {
            if let Some(v) = header(b3_trace_id_hex(ids.trace_id, &mut trace)) {
                put(B3_TRACE_ID, v);
            }
            if let Some(v) = header(&span) {
                put(B3_SPAN_ID, v);
            }
            if ids.parent_span_id != 0 {
                let mut parent = [0u8; 16];
                write_hex(&mut parent, u128::from(ids.parent_span_id));
                if let Some(v) = header(&parent) {
                    put(B3_PARENT_SPAN_ID, v);
                }
            }
            // Debug travels in x-b3-flags, which the request already carries as is.
            let sampled: &[u8] = if ids.sampled { b"1" } else { b"0" };
            if let Some(v) = header(sampled) {
                put(B3_SAMPLED, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).expect("test header"));
        }
        map
    }

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn reads_traceparent() {
        let p = extract(&headers(&[("traceparent", TP)]));
        assert_eq!(p.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
        assert_eq!(p.span_id, 0xb7ad6b7169203331);
        assert_eq!((p.sampled, p.w3c, p.b3), (Some(true), true, B3Form::None));
        let unsampled = TP.replace("-01", "-00");
        assert_eq!(extract(&headers(&[("traceparent", &unsampled)])).sampled, Some(false));
        // A later version may append fields.
        let v1 = format!("01{}-extra", &TP[2..]);
        assert_eq!(extract(&headers(&[("traceparent", &v1)])).span_id, 0xb7ad6b7169203331);
    }

    #[test]
    fn malformed_traceparent_is_no_parent() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01",
            "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert_eq!(extract(&headers(&[("traceparent", bad)])), Parent::default(), "{bad}");
        }
    }

    #[test]
    fn reads_b3_single_and_multi() {
        let p = extract(&headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )]));
        assert_eq!(
            (p.trace_id, p.span_id),
            (0x80f198ee56343ba864fe8b2a57d3eff7, 0xe457b5a2e4d86bd1)
        );
        assert_eq!((p.sampled, p.b3, p.w3c), (Some(true), B3Form::Single, false));
        let p = extract(&headers(&[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1")]));
        assert_eq!((p.trace_id, p.sampled), (0x64fe8b2a57d3eff7, None));
        let p = extract(&headers(&[("b3", "0")]));
        assert_eq!((p.trace_id, p.sampled, p.b3), (0, Some(false), B3Form::Single));
        let p = extract(&headers(&[("b3", "d")]));
        assert_eq!((p.sampled, p.debug), (Some(true), true));
        let p = extract(&headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-parentspanid", "0020000000000001"),
            ("x-b3-sampled", "0"),
        ]));
        assert_eq!(
            (p.trace_id, p.span_id),
            (0x463ac35c9f6413ad48485a3953bb6124, 0xa2fb4a1d1a96d312)
        );
        assert_eq!((p.sampled, p.b3), (Some(false), B3Form::Multi));
        let p = extract(&headers(&[("x-b3-flags", "1")]));
        assert_eq!((p.sampled, p.debug, p.trace_id), (Some(true), true, 0));
        for bad in [
            &[("b3", "xyz")][..],
            &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-2")],
            &[("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-9")],
            &[("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124")],
            &[("x-b3-traceid", "abc"), ("x-b3-spanid", "a2fb4a1d1a96d312")],
            &[("x-b3-sampled", "yes")],
        ] {
            assert_eq!(extract(&headers(bad)), Parent::default(), "{bad:?}");
        }
    }

    #[test]
    fn traceparent_wins_and_b3_form_is_kept() {
        let p = extract(&headers(&[
            ("traceparent", TP),
            ("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-0"),
        ]));
        assert_eq!(
            (p.trace_id, p.sampled, p.b3),
            (0x0af7651916cd43dd8448eb211c80319c, Some(true), B3Form::Single)
        );
    }

    fn written(ids: &Ids, state: Option<&str>, form: B3Form) -> HeaderMap {
        let mut map = HeaderMap::new();
        let state = state.map(|s| HeaderValue::from_str(s).expect("state"));
        inject(ids, state.as_ref(), form, &mut |k, v| {
            map.insert(k, v);
        });
        map
    }

    #[test]
    fn writes_what_it_reads() {
        let ids = Ids {
            trace_id: 0x0af7651916cd43dd8448eb211c80319c,
            span_id: 0x00f067aa0ba902b7,
            parent_span_id: 0xb7ad6b7169203331,
            sampled: true,
            debug: false,
        };
        let map = written(&ids, Some("congo=t61rcWkgMzE"), B3Form::None);
        assert_eq!(
            map["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
        );
        assert_eq!(map["tracestate"], "congo=t61rcWkgMzE");
        assert_eq!(map.len(), 2);
        let back = extract(&map);
        assert_eq!((back.trace_id, back.span_id), (ids.trace_id, ids.span_id));
        let map = written(&Ids { sampled: false, ..ids }, None, B3Form::Single);
        assert_eq!(
            map["b3"],
            "0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-0-b7ad6b7169203331"
        );
        assert!(map["traceparent"].as_bytes().ends_with(b"-00"));
        let map = written(
            &Ids {
                trace_id: 0x64fe8b2a57d3eff7,
                ..ids
            },
            None,
            B3Form::Multi,
        );
        assert_eq!(map["x-b3-traceid"], "64fe8b2a57d3eff7");
        assert_eq!(map["x-b3-spanid"], "00f067aa0ba902b7");
        assert_eq!(map["x-b3-parentspanid"], "b7ad6b7169203331");
        assert_eq!(map["x-b3-sampled"], "1");
        let root = written(
            &Ids {
                parent_span_id: 0,
                debug: true,
                ..ids
            },
            None,
            B3Form::Single,
        );
        assert_eq!(root["b3"], "0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-d");
    }
}
