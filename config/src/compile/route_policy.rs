//! A VirtualService rule's timeout, retries, fault injection and CORS policy,
//! checked and compiled with Istio's semantics. Validation and translation share
//! these functions, so `--check` reports exactly what a reload would refuse.

use std::sync::Arc;

use http::HeaderValue;
use regex::Regex;

use crate::compile::regex::RegexError;
use crate::diag::Code;
use crate::duration;
use crate::resources::networking::{CorsPolicy, HttpFaultInjection, HttpRetry, HttpRoute, Percent, StringMatch};
use crate::snapshot::{retry_on, Cors, Fault, FaultAbort, FaultDelay, RetryPolicy, RoutePolicy, StrMatch};

/// A problem with one field of a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyError {
    /// Field path under the rule, e.g. `retries.retryOn`.
    pub field: String,
    /// Diagnostic code.
    pub code: Code,
    /// What is wrong.
    pub message: String,
}

fn error(field: &str, code: Code, message: impl Into<String>) -> PolicyError {
    PolicyError {
        field: field.to_string(),
        code,
        message: message.into(),
    }
}

/// gRPC status names as Istio's `grpcStatus` takes them, with their codes.
const GRPC_STATUSES: &[(&str, u32)] = &[
    ("OK", 0),
    ("CANCELLED", 1),
    ("UNKNOWN", 2),
    ("INVALID_ARGUMENT", 3),
    ("DEADLINE_EXCEEDED", 4),
    ("NOT_FOUND", 5),
    ("ALREADY_EXISTS", 6),
    ("PERMISSION_DENIED", 7),
    ("RESOURCE_EXHAUSTED", 8),
    ("FAILED_PRECONDITION", 9),
    ("ABORTED", 10),
    ("OUT_OF_RANGE", 11),
    ("UNIMPLEMENTED", 12),
    ("INTERNAL", 13),
    ("UNAVAILABLE", 14),
    ("DATA_LOSS", 15),
    ("UNAUTHENTICATED", 16),
];

/// Compiles the policy of `rule`. `regex` compiles (and shares) CORS origin regexes.
/// Errors name the field relative to the rule.
pub fn route_policy(
    rule: &HttpRoute,
    regex: &mut dyn FnMut(&str) -> Result<Arc<Regex>, RegexError>,
) -> Result<RoutePolicy, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let mut policy = RoutePolicy::default();
    if let Some(t) = &rule.timeout {
        // Istio (agent ValidateDuration, and the CRD) wants at least 1ms, in whole
        // milliseconds: `0s` is refused there, so here too; no timeout is written
        // by leaving the field out.
        match duration::parse_positive(t) {
            Ok(d) => policy.timeout = Some(d),
            Err(e) => errors.push(error("timeout", Code::InvalidValue, e.to_string())),
        }
    }
    match retry_policy(rule.retries.as_ref()) {
        Ok(r) => policy.retry = r,
        Err(e) => errors.extend(e),
    }
    if let Some(f) = &rule.fault {
        match fault(f) {
            Ok(f) => policy.fault = f.map(Box::new),
            Err(e) => errors.extend(e),
        }
    }
    if let Some(c) = &rule.cors_policy {
        match cors(c, regex) {
            Ok(c) => policy.cors = Some(Box::new(c)),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(policy)
    } else {
        Err(errors)
    }
}

/// Istio's `ConvertPolicy`: no `retries` gives the default policy; `attempts` 0 (or
/// absent) disables retries; `retryOn` replaces the default conditions, and numbers
/// in it are retriable status codes.
pub fn retry_policy(retries: Option<&HttpRetry>) -> Result<RetryPolicy, Vec<PolicyError>> {
    let Some(r) = retries else {
        return Ok(RetryPolicy::default());
    };
    let mut errors = Vec::new();
    let attempts = match r.attempts {
        None | Some(0) => 0,
        Some(n) => match u32::try_from(n) {
            Ok(n) => n,
            Err(_) => {
                errors.push(error(
                    "retries.attempts",
                    Code::InvalidValue,
                    "attempts must not be negative",
                ));
                0
            }
        },
    };
    let mut policy = RetryPolicy {
        attempts,
        ..RetryPolicy::default()
    };
    if let Some(t) = &r.per_try_timeout {
        match duration::parse_positive(t) {
            Ok(d) => policy.per_try_timeout = Some(d),
            Err(e) => errors.push(error("retries.perTryTimeout", Code::InvalidValue, e.to_string())),
        }
    }
    if let Some(on) = r.retry_on.as_deref().filter(|s| !s.trim().is_empty()) {
        policy.on = 0;
        policy.status_codes.clear();
        for item in on.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Ok(code) = item.parse::<u16>() {
                if (100..=599).contains(&code) {
                    policy.status_codes.push(code);
                } else {
                    errors.push(error(
                        "retries.retryOn",
                        Code::InvalidValue,
                        format!("{code} is not an HTTP status code"),
                    ));
                }
            } else if let Some((_, bit)) = retry_on::NAMES.iter().find(|(name, _)| *name == item) {
                policy.on |= bit;
            } else if !retry_on::IGNORED.contains(&item) {
                let known: Vec<&str> = retry_on::NAMES.iter().map(|(n, _)| *n).collect();
                errors.push(error(
                    "retries.retryOn",
                    Code::InvalidValue,
                    format!("unknown retry condition {item:?}; known: {}", known.join(", ")),
                ));
            }
        }
        if !policy.status_codes.is_empty() {
            policy.on |= retry_on::RETRIABLE_STATUS_CODES;
        }
    }
    if attempts == 0 {
        policy = RetryPolicy::none();
    }
    if errors.is_empty() {
        Ok(policy)
    } else {
        Err(errors)
    }
}

/// The share of requests a fault applies to: `percentage.value`, else the
/// deprecated integer `percent`, else all of them.
fn share(field: &str, percentage: Option<&Percent>, percent: Option<i64>) -> Result<f64, PolicyError> {
    let value = match (percentage.and_then(|p| p.value), percent) {
        (Some(v), _) => v,
        (None, Some(p)) => p as f64,
        (None, None) => 100.0,
    };
    if (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(error(
            field,
            Code::InvalidValue,
            format!("{value} is not a percentage in [0, 100]"),
        ))
    }
}

fn fault(f: &HttpFaultInjection) -> Result<Option<Fault>, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let mut delay = None;
    if let Some(d) = &f.delay {
        if d.exponential_delay.is_some() {
            errors.push(error(
                "fault.delay.exponentialDelay",
                Code::InvalidValue,
                "exponentialDelay is not supported (nor by Istio); use fixedDelay",
            ));
        }
        match d.fixed_delay.as_deref().map(duration::parse_positive) {
            None => errors.push(error(
                "fault.delay.fixedDelay",
                Code::Required,
                "fixedDelay is required",
            )),
            Some(Err(e)) => errors.push(error("fault.delay.fixedDelay", Code::InvalidValue, e.to_string())),
            Some(Ok(duration)) => match share("fault.delay.percentage", d.percentage.as_ref(), d.percent) {
                Ok(percent) => delay = Some(FaultDelay { duration, percent }),
                Err(e) => errors.push(e),
            },
        }
    }
    let mut abort = None;
    if let Some(a) = &f.abort {
        let percent = match share("fault.abort.percentage", a.percentage.as_ref(), None) {
            Ok(p) => p,
            Err(e) => {
                errors.push(e);
                0.0
            }
        };
        match (a.http_status, a.grpc_status.as_deref(), a.http2_error.as_deref()) {
            (Some(status), None, None) => match u16::try_from(status).ok().filter(|s| (200..=599).contains(s)) {
                Some(status) => {
                    abort = Some(FaultAbort {
                        status,
                        grpc_status: None,
                        percent,
                    })
                }
                None => errors.push(error(
                    "fault.abort.httpStatus",
                    Code::InvalidValue,
                    format!("{status} is not an HTTP status in [200, 599]"),
                )),
            },
            (None, Some(name), None) => match GRPC_STATUSES.iter().find(|(n, _)| *n == name) {
                Some((_, code)) => {
                    abort = Some(FaultAbort {
                        status: 200,
                        grpc_status: Some(*code),
                        percent,
                    })
                }
                None => errors.push(error(
                    "fault.abort.grpcStatus",
                    Code::InvalidValue,
                    format!("unknown gRPC status {name:?} (e.g. UNAVAILABLE, INTERNAL)"),
                )),
            },
            (None, None, Some(_)) => errors.push(error(
                "fault.abort.http2Error",
                Code::InvalidValue,
                "http2Error is not supported (nor by Istio); use httpStatus or grpcStatus",
            )),
            (None, None, None) => errors.push(error(
                "fault.abort",
                Code::Required,
                "abort needs httpStatus or grpcStatus",
            )),
            _ => errors.push(error(
                "fault.abort",
                Code::Conflict,
                "only one of httpStatus, grpcStatus and http2Error may be set",
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok((delay.is_some() || abort.is_some()).then_some(Fault { delay, abort }))
}

fn cors(
    c: &CorsPolicy,
    regex: &mut dyn FnMut(&str) -> Result<Arc<Regex>, RegexError>,
) -> Result<Cors, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let mut allow_origins = Vec::new();
    for (i, m) in c.allow_origins.iter().enumerate() {
        match origin_match(m, regex) {
            Ok(m) => allow_origins.push(m),
            Err(e) => errors.push(error(
                &format!("corsPolicy.allowOrigins[{i}]"),
                Code::InvalidRegex,
                e.to_string(),
            )),
        }
    }
    allow_origins.extend(c.allow_origin.iter().map(|o| {
        if o == "*" {
            StrMatch::Present
        } else {
            StrMatch::Exact(o.clone())
        }
    }));
    let mut joined = |field: &str, items: &[String]| -> Option<HeaderValue> {
        if items.is_empty() {
            return None;
        }
        match HeaderValue::from_str(&items.join(",")) {
            Ok(v) => Some(v),
            Err(_) => {
                errors.push(error(field, Code::InvalidValue, "not a valid header value"));
                None
            }
        }
    };
    let allow_methods = joined("corsPolicy.allowMethods", &c.allow_methods);
    let allow_headers = joined("corsPolicy.allowHeaders", &c.allow_headers);
    let expose_headers = joined("corsPolicy.exposeHeaders", &c.expose_headers);
    let max_age = match c.max_age.as_deref().map(duration::parse) {
        None => None,
        Some(Ok(d)) => Some(HeaderValue::from(d.as_secs())),
        Some(Err(e)) => {
            errors.push(error("corsPolicy.maxAge", Code::InvalidValue, e.to_string()));
            None
        }
    };
    let forward_unmatched_preflights = match c.unmatched_preflights.as_deref() {
        None | Some("FORWARD") | Some("UNSPECIFIED") => true,
        Some("IGNORE") => false,
        Some(other) => {
            errors.push(error(
                "corsPolicy.unmatchedPreflights",
                Code::InvalidValue,
                format!("{other:?} is not one of FORWARD, IGNORE"),
            ));
            true
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Cors {
        allow_origins,
        allow_methods,
        allow_headers,
        expose_headers,
        max_age,
        allow_credentials: c.allow_credentials.unwrap_or(false),
        forward_unmatched_preflights,
    })
}

/// An origin StringMatch; an exact `*` allows any origin, as in Envoy.
fn origin_match(
    m: &StringMatch,
    regex: &mut dyn FnMut(&str) -> Result<Arc<Regex>, RegexError>,
) -> Result<StrMatch, RegexError> {
    Ok(match (&m.exact, &m.prefix, &m.regex) {
        (Some(e), _, _) if e == "*" => StrMatch::Present,
        (Some(e), _, _) => StrMatch::Exact(e.clone()),
        (_, Some(p), _) => StrMatch::Prefix(p.clone()),
        (_, _, Some(r)) => StrMatch::Regex(regex(r)?),
        _ => StrMatch::Present,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn compile(re: &str) -> Result<Arc<Regex>, RegexError> {
        crate::compile::regex::compile_full_match(re, false).map(Arc::new)
    }

    fn rule(yaml: &str) -> HttpRoute {
        let value: serde_json::Value = crate::yaml::parse_documents(yaml).expect("yaml").remove(0).value;
        serde_json::from_value(value).expect("rule")
    }

    #[test]
    fn retries_follow_istio() {
        let default = route_policy(&rule("route: []"), &mut compile).expect("policy").retry;
        assert_eq!(default, RetryPolicy::default());
        assert!(default.retries_status(503, None) && !default.retries_status(502, None));
        assert!(default.retries_connect_failure() && !default.retries_reset());

        let off = route_policy(&rule("retries: {attempts: 0}"), &mut compile)
            .expect("policy")
            .retry;
        assert_eq!(off.attempts, 0);
        let no_attempts = route_policy(&rule("retries: {retryOn: 5xx}"), &mut compile)
            .expect("policy")
            .retry;
        assert_eq!(no_attempts.attempts, 0, "attempts absent disables retries, as in Istio");

        let custom = route_policy(
            &rule("retries: {attempts: 3, perTryTimeout: 250ms, retryOn: 'gateway-error,409,reset'}"),
            &mut compile,
        )
        .expect("policy")
        .retry;
        assert_eq!(custom.attempts, 3);
        assert_eq!(custom.per_try_timeout, Some(Duration::from_millis(250)));
        assert_eq!(custom.status_codes, vec![409]);
        assert!(custom.retries_status(409, None) && custom.retries_status(504, None));
        assert!(!custom.retries_status(500, None) && !custom.retries_status(403, None));
        assert!(custom.retries_reset() && custom.retries_timeout());

        let grpc = route_policy(&rule("retries: {attempts: 1, retryOn: unavailable}"), &mut compile)
            .expect("policy")
            .retry;
        assert!(grpc.retries_status(200, Some(14)) && !grpc.retries_status(200, Some(13)));
    }

    #[test]
    fn bad_policies_name_the_field() {
        let errs = route_policy(
            &rule(
                "timeout: 5x\nretries: {attempts: 2, retryOn: 'sometimes,700', perTryTimeout: 0s}\n\
                 fault: {delay: {percentage: {value: 10}}, abort: {httpStatus: 99}}\n\
                 corsPolicy: {allowOrigins: [{regex: '('}], unmatchedPreflights: DROP}",
            ),
            &mut compile,
        )
        .expect_err("invalid");
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "timeout",
                "retries.perTryTimeout",
                "retries.retryOn",
                "retries.retryOn",
                "fault.delay.fixedDelay",
                "fault.abort.httpStatus",
                "corsPolicy.allowOrigins[0]",
                "corsPolicy.unmatchedPreflights",
            ]
        );
        assert!(errs[2].message.contains("sometimes"), "{}", errs[2].message);
    }

    #[test]
    fn durations_are_bounded_as_istio_bounds_them() {
        let policy = |yaml: &str| route_policy(&rule(yaml), &mut compile);
        for (yaml, field) in [
            ("timeout: 0s", "timeout"),
            ("timeout: 9223372036854775807s", "timeout"),
            ("timeout: 500us", "timeout"),
            (
                "retries: {attempts: 1, perTryTimeout: 9223372036854775807s}",
                "retries.perTryTimeout",
            ),
            ("fault: {delay: {fixedDelay: 400000000000s}}", "fault.delay.fixedDelay"),
            ("corsPolicy: {maxAge: 9223372036854775807s}", "corsPolicy.maxAge"),
        ] {
            let errs = policy(yaml).expect_err(yaml);
            assert_eq!(errs[0].field, field, "{yaml}");
        }
        let long = policy("timeout: 9223372036854775807s").expect_err("too long");
        assert!(long[0].message.contains("10,000 years"), "{}", long[0].message);
    }

    #[test]
    fn faults_and_cors_compile() {
        let p = route_policy(
            &rule(
                "timeout: 1.5s\nfault: {delay: {fixedDelay: 100ms, percent: 50}, abort: {grpcStatus: UNAVAILABLE}}\n\
                 corsPolicy: {allowOrigins: [{exact: 'https://a.example'}, {prefix: 'https://b.'}], \
                 allowMethods: [GET, POST], maxAge: 24h, allowCredentials: true}",
            ),
            &mut compile,
        )
        .expect("policy");
        assert_eq!(p.timeout, Some(Duration::from_millis(1500)));
        let f = p.fault.expect("fault");
        let d = f.delay.expect("delay");
        assert_eq!((d.duration, d.percent), (Duration::from_millis(100), 50.0));
        let a = f.abort.expect("abort");
        assert_eq!((a.status, a.grpc_status, a.percent), (200, Some(14), 100.0));
        let c = p.cors.expect("cors");
        assert_eq!(c.allow_methods, Some(HeaderValue::from_static("GET,POST")));
        assert_eq!(c.max_age, Some(HeaderValue::from_static("86400")));
        assert!(c.allow_credentials && c.forward_unmatched_preflights);
        assert_eq!(c.allow_origins.len(), 2);
    }
}
