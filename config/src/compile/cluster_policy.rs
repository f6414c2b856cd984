//! A DestinationRule's traffic policy for one cluster: Istio's merge of the
//! top-level policy, the subset's and the port's, compiled into what the engine
//! uses (load balancer, pool limits, outlier detection). Consistent-hash tables are
//! built from the endpoints, which change on their own.

use std::time::Duration;

use http::HeaderName;

use super::route_policy::PolicyError;
use crate::diag::Code;
use crate::duration;
use crate::resources::networking::{
    ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection, TrafficPolicy,
};
use crate::snapshot::{ClusterPolicy, HashKey, HashPolicy, HashTableKind, LoadBalancer, Outlier, PoolLimits};

/// The policy blocks in force for one (subset, port), before compilation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effective {
    /// Load balancing.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Pool limits.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Outlier detection.
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS.
    pub tls: Option<ClientTlsSettings>,
}

/// Istio's merge: the subset's policy replaces the top-level one block by block,
/// then the port-level settings (the subset's if it has any, else the top level's)
/// replace blocks again for the destination port.
pub fn effective(top: Option<&TrafficPolicy>, subset: Option<&TrafficPolicy>, port: u16) -> Effective {
    let mut e = Effective::default();
    for p in [top, subset].into_iter().flatten() {
        overlay(
            &mut e,
            p.load_balancer.as_ref(),
            p.connection_pool.as_ref(),
            p.outlier_detection.as_ref(),
            p.tls.as_ref(),
        );
    }
    let port_levels = subset
        .filter(|s| !s.port_level_settings.is_empty())
        .or(top)
        .map(|p| p.port_level_settings.as_slice())
        .unwrap_or_default();
    if let Some(pl) = port_levels
        .iter()
        .find(|pl| pl.port.as_ref().and_then(|p| p.number) == Some(i64::from(port)))
    {
        overlay(
            &mut e,
            pl.load_balancer.as_ref(),
            pl.connection_pool.as_ref(),
            pl.outlier_detection.as_ref(),
            pl.tls.as_ref(),
        );
    }
    e
}

fn overlay(
    e: &mut Effective,
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
) {
    if lb.is_some() {
        e.load_balancer = lb.cloned();
    }
    if pool.is_some() {
        e.connection_pool = pool.cloned();
    }
    if outlier.is_some() {
        e.outlier_detection = outlier.cloned();
    }
    if tls.is_some() {
        e.tls = tls.cloned();
    }
}

/// Compiles the effective policy of a cluster. Errors name the field under the
/// traffic policy.
pub fn compile(e: &Effective) -> Result<ClusterPolicy, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let mut out = ClusterPolicy::default();
    if let Some(lb) = &e.load_balancer {
        match load_balancer(lb) {
            Ok(l) => out.lb = l,
            Err(err) => errors.push(err),
        }
    }
    if let Some(pool) = &e.connection_pool {
        pool_limits(pool, &mut out, &mut errors);
    }
    if let Some(o) = &e.outlier_detection {
        match outlier(o) {
            Ok(o) => out.outlier = o,
            Err(err) => errors.extend(err),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn err(field: &str, message: impl Into<String>) -> PolicyError {
    PolicyError {
        field: field.to_string(),
        code: Code::InvalidValue,
        message: message.into(),
    }
}

/// A timeout or interval that Istio requires to be at least 1ms.
fn dur(field: &str, text: Option<&String>, errors: &mut Vec<PolicyError>) -> Option<Duration> {
    match duration::parse_positive(text?) {
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(err(field, e.to_string()));
            None
        }
    }
}

fn count(field: &str, n: Option<i64>, errors: &mut Vec<PolicyError>) -> Option<u32> {
    let n = n?;
    match u32::try_from(n) {
        Ok(v) => Some(v),
        Err(_) => {
            errors.push(err(field, format!("{n} is not a count")));
            None
        }
    }
}

fn load_balancer(lb: &LoadBalancerSettings) -> Result<LoadBalancer, PolicyError> {
    if let Some(h) = &lb.consistent_hash {
        let keys = [
            h.http_header_name.is_some(),
            h.http_cookie.is_some(),
            h.use_source_ip == Some(true),
            h.http_query_parameter_name.is_some(),
        ];
        let key = match keys.iter().filter(|k| **k).count() {
            1 => {
                if let Some(name) = &h.http_header_name {
                    HashKey::Header(
                        HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                            .map_err(|_| err("loadBalancer.consistentHash.httpHeaderName", "not a header name"))?,
                    )
                } else if let Some(c) = &h.http_cookie {
                    if c.name.is_empty() {
                        return Err(err(
                            "loadBalancer.consistentHash.httpCookie.name",
                            "cookie name is required",
                        ));
                    }
                    let ttl = match c.ttl.as_deref().map(duration::parse) {
                        None => None,
                        Some(Ok(d)) => Some(d),
                        Some(Err(e)) => return Err(err("loadBalancer.consistentHash.httpCookie.ttl", e.to_string())),
                    };
                    HashKey::Cookie {
                        name: c.name.clone(),
                        path: c.path.clone(),
                        ttl,
                    }
                } else if let Some(q) = &h.http_query_parameter_name {
                    HashKey::QueryParameter(q.clone())
                } else {
                    HashKey::SourceIp
                }
            }
            0 => {
                return Err(err(
                    "loadBalancer.consistentHash",
                    "one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is required",
                ))
            }
            _ => {
                return Err(err(
                    "loadBalancer.consistentHash",
                    "only one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName may be set",
                ))
            }
        };
        let table = match (&h.maglev, &h.ring_hash) {
            (Some(m), None) => {
                // Istio (validation.go, validateLoadBalancer): set, a prime, below
                // 5000011. Strait also needs 3 or more to build the table.
                let field = "loadBalancer.consistentHash.maglev.tableSize";
                let size = match m.table_size {
                    None | Some(0) => return Err(err(field, "tableSize must be set for maglev")),
                    Some(s) => s,
                };
                let size = u32::try_from(size)
                    .ok()
                    .filter(|s| *s < 5_000_011)
                    .ok_or_else(|| err(field, format!("{size}: tableSize must be less than 5000011 for maglev")))?;
                if size < 3 || !is_prime(size) {
                    return Err(err(field, format!("{size} is not a prime of 3 or more")));
                }
                HashTableKind::Maglev { size }
            }
            (None, ring) => {
                let size = ring
                    .as_ref()
                    .and_then(|r| r.minimum_ring_size)
                    .or(h.minimum_ring_size)
                    .unwrap_or(1024);
                let size = usize::try_from(size)
                    .ok()
                    .filter(|s| (1..=8_388_608).contains(s))
                    .ok_or_else(|| {
                        err(
                            "loadBalancer.consistentHash.ringHash.minimumRingSize",
                            format!("{size} is out of range"),
                        )
                    })?;
                HashTableKind::Ring { min_size: size }
            }
            (Some(_), Some(_)) => {
                return Err(err(
                    "loadBalancer.consistentHash",
                    "only one of ringHash and maglev may be set",
                ))
            }
        };
        if lb.simple.is_some() {
            return Err(err("loadBalancer", "simple and consistentHash are mutually exclusive"));
        }
        return Ok(LoadBalancer::Hash(Box::new(HashPolicy { key, table })));
    }
    match lb.simple.as_deref() {
        None | Some("UNSPECIFIED") | Some("LEAST_REQUEST") | Some("LEAST_CONN") => Ok(LoadBalancer::LeastRequest),
        Some("ROUND_ROBIN") => Ok(LoadBalancer::RoundRobin),
        Some("RANDOM") => Ok(LoadBalancer::Random),
        Some("PASSTHROUGH") => Ok(LoadBalancer::Passthrough),
        Some(other) => Err(err(
            "loadBalancer.simple",
            format!("{other:?} is not one of ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM, PASSTHROUGH"),
        )),
    }
}

fn pool_limits(pool: &ConnectionPoolSettings, out: &mut ClusterPolicy, errors: &mut Vec<PolicyError>) {
    let mut limits = PoolLimits::default();
    if let Some(t) = &pool.tcp {
        limits.max_connections = count("connectionPool.tcp.maxConnections", t.max_connections, errors);
        out.connect_timeout = dur("connectionPool.tcp.connectTimeout", t.connect_timeout.as_ref(), errors);
        // Istio: 0s disables the idle timeout; anything else is at least 1ms.
        out.idle_timeout = match t.idle_timeout.as_deref().map(duration::parse_optional) {
            None => None,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                errors.push(err("connectionPool.tcp.idleTimeout", e.to_string()));
                None
            }
        };
    }
    if let Some(h) = &pool.http {
        limits.max_pending = count(
            "connectionPool.http.http1MaxPendingRequests",
            h.http1_max_pending_requests,
            errors,
        );
        limits.max_requests = count("connectionPool.http.http2MaxRequests", h.http2_max_requests, errors);
        limits.max_requests_per_connection = count(
            "connectionPool.http.maxRequestsPerConnection",
            h.max_requests_per_connection,
            errors,
        );
        limits.max_retries = count("connectionPool.http.maxRetries", h.max_retries, errors);
        if let Some(d) = dur("connectionPool.http.idleTimeout", h.idle_timeout.as_ref(), errors) {
            out.idle_timeout = Some(d);
        }
        match h.h2_upgrade_policy.as_deref() {
            None | Some("DEFAULT") | Some("DO_NOT_UPGRADE") => {}
            Some("UPGRADE") => out.h2_upstream = true,
            Some(other) => errors.push(err(
                "connectionPool.http.h2UpgradePolicy",
                format!("{other:?} is not one of DEFAULT, DO_NOT_UPGRADE, UPGRADE"),
            )),
        }
    }
    out.limits = limits;
}

fn outlier(o: &OutlierDetection) -> Result<Option<Outlier>, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let consecutive_5xx = count(
        "outlierDetection.consecutive5xxErrors",
        o.consecutive_5xx_errors,
        &mut errors,
    );
    let consecutive_gateway = count(
        "outlierDetection.consecutiveGatewayErrors",
        o.consecutive_gateway_errors.or(o.consecutive_errors),
        &mut errors,
    );
    let interval =
        dur("outlierDetection.interval", o.interval.as_ref(), &mut errors).unwrap_or(Duration::from_secs(10));
    let base_ejection_time = dur(
        "outlierDetection.baseEjectionTime",
        o.base_ejection_time.as_ref(),
        &mut errors,
    )
    .unwrap_or(Duration::from_secs(30));
    let percent = |field: &str, v: Option<i64>, default: u32, errors: &mut Vec<PolicyError>| match v {
        None => default,
        Some(p) => match u32::try_from(p).ok().filter(|p| *p <= 100) {
            Some(p) => p,
            None => {
                errors.push(err(field, format!("{p} is not a percentage in [0, 100]")));
                default
            }
        },
    };
    let max_ejection_percent = percent(
        "outlierDetection.maxEjectionPercent",
        o.max_ejection_percent,
        10,
        &mut errors,
    );
    let min_health_percent = percent(
        "outlierDetection.minHealthPercent",
        o.min_health_percent,
        0,
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(errors);
    }
    // Istio's default: 5 consecutive 5xx when neither count is given.
    let consecutive_5xx = match (consecutive_5xx, consecutive_gateway) {
        (None, None) => Some(5),
        (c, _) => c,
    };
    Ok(Some(Outlier {
        consecutive_5xx: consecutive_5xx.filter(|n| *n > 0),
        consecutive_gateway: consecutive_gateway.filter(|n| *n > 0),
        interval,
        base_ejection_time,
        max_ejection_percent,
        min_health_percent,
    }))
}

fn is_prime(n: u32) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::networking::TrafficPolicy;

    fn policy(yaml: &str) -> TrafficPolicy {
        let value = crate::yaml::parse_documents(yaml).expect("yaml").remove(0).value;
        serde_json::from_value(value).expect("policy")
    }

    #[test]
    fn subset_and_port_override_block_by_block() {
        let top = policy(
            "loadBalancer: {simple: ROUND_ROBIN}\nconnectionPool: {tcp: {maxConnections: 10}}\n\
             portLevelSettings: [{port: {number: 8080}, loadBalancer: {simple: RANDOM}}]",
        );
        let subset = policy("connectionPool: {tcp: {maxConnections: 1}}");
        let e = effective(Some(&top), Some(&subset), 80);
        let c = compile(&e).expect("policy");
        assert_eq!((c.lb.name(), c.limits.max_connections), ("ROUND_ROBIN", Some(1)));
        let e = effective(Some(&top), Some(&subset), 8080);
        assert_eq!(compile(&e).expect("policy").lb.name(), "RANDOM");
        let none = compile(&effective(None, None, 80)).expect("policy");
        assert_eq!(none.lb.name(), "LEAST_REQUEST", "Istio's default");
    }

    #[test]
    fn bad_values_name_their_field() {
        let p = policy(
            "loadBalancer: {simple: FASTEST}\nconnectionPool: {tcp: {connectTimeout: soon}}\n\
             outlierDetection: {maxEjectionPercent: 150}",
        );
        let errs = compile(&effective(Some(&p), None, 80)).expect_err("invalid");
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "loadBalancer.simple",
                "connectionPool.tcp.connectTimeout",
                "outlierDetection.maxEjectionPercent"
            ]
        );
        let p = policy("loadBalancer: {consistentHash: {httpHeaderName: x-user, useSourceIp: true}}");
        assert!(compile(&effective(Some(&p), None, 80)).is_err());
    }

    #[test]
    fn timeouts_and_intervals_are_positive_and_bounded() {
        let p = policy(
            "connectionPool: {tcp: {connectTimeout: 0s, idleTimeout: 500us}, http: {idleTimeout: 0s}}\n\
             outlierDetection: {interval: 0s, baseEjectionTime: 9223372036854775807s}",
        );
        let errs = compile(&effective(Some(&p), None, 80)).expect_err("invalid");
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "connectionPool.tcp.connectTimeout",
                "connectionPool.tcp.idleTimeout",
                "connectionPool.http.idleTimeout",
                "outlierDetection.interval",
                "outlierDetection.baseEjectionTime",
            ]
        );
        // A tcp idleTimeout of 0s disables it, as in Istio.
        let p = policy("connectionPool: {tcp: {connectTimeout: 1ms, idleTimeout: 0s}}");
        let c = compile(&effective(Some(&p), None, 80)).expect("policy");
        assert_eq!(
            (c.connect_timeout, c.idle_timeout),
            (Some(Duration::from_millis(1)), None)
        );
    }
}
