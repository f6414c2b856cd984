//! A DestinationRule's traffic policy blocks checked as written, as Istio checks
//! them: validation.go `validateTrafficPolicy`, `validatePortTrafficPolicies`,
//! `validateOutlierDetection`, `validateConnectionPool`, `validateLoadBalancer`,
//! `validateTunnelSettings`, `validateProxyProtocol`; agent `ValidateTLS`,
//! `ValidateLocalityLbSetting`, `ValidateZoneAwareLbSetting`; the CRD rules of
//! DestinationRule. What the policy in force for a cluster compiles into (and the
//! checks made on the way) is `cluster_policy`'s.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::bundle::Entry;
use crate::diag::Code;
use crate::duration;
use crate::hosts::check_fqdn;
use crate::resources::networking::{
    ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection, TrafficPolicy,
};
use crate::resources::traffic_policy::{LocalityFailover, LocalityLbSetting, ZoneAwareLbSetting};

use super::Compiler;

/// Topology labels that `failoverPriority` cannot use beside `failover` (locality)
/// or at all (zone-aware balancing).
const TOPOLOGY_LABELS: &[&str] = &[
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

/// Why a locality of `distribute` is refused (agent, `validateLocalities`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalityError {
    /// More than one `*`, or one not at the end.
    #[error("locality {0} wildcard '*' number can not exceed 1 and must be in the end")]
    Wildcard(String),
    /// An empty region, zone or subzone.
    #[error("locality {0} must not contain empty region/zone/subzone info")]
    Empty(String),
    /// Covered by one given before.
    #[error("locality {0} overlap with previous specified ones")]
    Overlap(String),
}

/// Localities, each `region[/zone[/subzone]]` with an optional trailing `*`, none
/// covering another given before it (agent, `validateLocalities`).
pub fn check_localities<'a>(localities: impl IntoIterator<Item = &'a str>) -> Result<(), LocalityError> {
    let mut seen: Vec<Vec<&str>> = Vec::new();
    for loc in localities {
        let stars = loc.matches('*').count();
        if stars > 1 || (stars == 1 && !loc.ends_with('*')) {
            return Err(LocalityError::Wildcard(loc.to_string()));
        }
        if seen.iter().any(|s| s.first() == Some(&"*")) {
            return Err(LocalityError::Overlap(loc.to_string()));
        }
        let parts: Vec<&str> = loc.splitn(3, '/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(LocalityError::Empty(loc.to_string()));
        }
        // An earlier locality covers those below it, and its `*` part any name.
        let overlaps = seen
            .iter()
            .any(|s| s.iter().zip(&parts).all(|(a, b)| a == b || *a == "*"));
        if overlaps {
            return Err(LocalityError::Overlap(loc.to_string()));
        }
        seen.push(parts);
    }
    Ok(())
}

impl Compiler<'_> {
    /// Checks a traffic policy block written at `f` (a top-level or subset policy).
    pub(super) fn traffic_policy_checks(&mut self, e: &Entry, f: &str, p: &TrafficPolicy) {
        let empty = p.outlier_detection.is_none()
            && p.connection_pool.is_none()
            && p.load_balancer.is_none()
            && p.tls.is_none()
            && p.port_level_settings.is_empty()
            && !self.has_field(e, &format!("{f}.portLevelSettings"))
            && p.tunnel.is_none()
            && p.proxy_protocol.is_none()
            && p.retry_budget.is_none();
        if empty {
            self.err(e, Code::Required, f, "traffic policy must have at least one field");
            return;
        }
        if p.tunnel.is_some() && p.proxy_protocol.is_some() {
            self.err(
                e,
                Code::Conflict,
                f,
                "tunnel and proxyProtocol must not be set together",
            );
            return;
        }
        self.block_checks(
            e,
            f,
            p.outlier_detection.as_ref(),
            p.connection_pool.as_ref(),
            p.load_balancer.as_ref(),
            p.tls.as_ref(),
        );
        for (i, pl) in p.port_level_settings.iter().enumerate() {
            let pf = format!("{f}.portLevelSettings[{i}]");
            match pl.port.as_ref().and_then(|x| x.number) {
                None => self.err(
                    e,
                    Code::Required,
                    &format!("{pf}.port"),
                    "portTrafficPolicy must have a port",
                ),
                Some(n) if u32::try_from(n).is_err() => self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{pf}.port.number"),
                    format!("port {n} is not in 0-4294967295"),
                ),
                Some(_) => {}
            }
            if pl.outlier_detection.is_none()
                && pl.connection_pool.is_none()
                && pl.load_balancer.is_none()
                && pl.tls.is_none()
            {
                self.err(
                    e,
                    Code::Required,
                    &pf,
                    "port traffic policy must have at least one field",
                );
                continue;
            }
            self.block_checks(
                e,
                &pf,
                pl.outlier_detection.as_ref(),
                pl.connection_pool.as_ref(),
                pl.load_balancer.as_ref(),
                pl.tls.as_ref(),
            );
        }
        if let Some(t) = &p.tunnel {
            self.tunnel_checks(e, &format!("{f}.tunnel"), t);
        }
        if let Some(pp) = &p.proxy_protocol {
            if !matches!(pp.version.as_deref(), None | Some("V1" | "V2")) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.proxyProtocol.version"),
                    "proxy protocol version must be V1 or V2",
                );
            }
        }
        if let Some(rb) = &p.retry_budget {
            let percent = rb
                .get("percent")
                .and_then(|v| v.get("value").or(Some(v)))
                .and_then(|v| v.as_f64());
            if percent.is_some_and(|v| !(0.0..=100.0).contains(&v)) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.retryBudget.percent"),
                    "percent must be in [0, 100]",
                );
            }
        }
    }

    fn block_checks(
        &mut self,
        e: &Entry,
        f: &str,
        outlier: Option<&OutlierDetection>,
        pool: Option<&ConnectionPoolSettings>,
        lb: Option<&LoadBalancerSettings>,
        tls: Option<&ClientTlsSettings>,
    ) {
        if let Some(o) = outlier {
            self.outlier_checks(e, &format!("{f}.outlierDetection"), o);
        }
        if let Some(pool) = pool {
            self.pool_checks(e, &format!("{f}.connectionPool"), pool);
        }
        if let Some(lb) = lb {
            self.load_balancer_checks(e, &format!("{f}.loadBalancer"), lb, outlier.is_some());
        }
        if let Some(tls) = tls {
            self.client_tls_checks(e, &format!("{f}.tls"), tls);
        }
    }

    /// A duration Istio checks with `ValidateDuration` (at least 1ms, whole ms).
    fn istio_duration(&mut self, e: &Entry, f: &str, text: Option<&String>) {
        if let Some(Err(err)) = text.map(|t| duration::parse_positive(t)) {
            self.err(e, Code::InvalidValue, f, err.to_string());
        }
    }

    fn outlier_checks(&mut self, e: &Entry, f: &str, o: &OutlierDetection) {
        if o.consecutive_errors.is_some_and(|n| n != 0) {
            self.warn(
                e,
                Code::InvalidValue,
                &format!("{f}.consecutiveErrors"),
                "consecutiveErrors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
            );
        }
        if o.consecutive_local_origin_failures.is_some_and(|n| n > 0)
            && o.split_external_local_origin_errors != Some(true)
        {
            self.err(
                e,
                Code::Conflict,
                &format!("{f}.consecutiveLocalOriginFailures"),
                "consecutiveLocalOriginFailures is set, but splitExternalLocalOriginErrors is not true",
            );
        }
        if let Some(p) = o.failure_percentage_threshold.filter(|p| !(0..=100).contains(p)) {
            self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.failurePercentageThreshold"),
                format!("{p} is not a percentage in [0, 100]"),
            );
        }
        for (i, c) in o.outlier_detection_http_error_codes.iter().enumerate() {
            if !(100..=599).contains(c) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.outlierDetectionHttpErrorCodes[{i}]"),
                    format!("{c} is not an HTTP status in 100-599"),
                );
            }
        }
    }

    fn pool_checks(&mut self, e: &Entry, f: &str, pool: &ConnectionPoolSettings) {
        if pool.http.is_none() && pool.tcp.is_none() {
            self.err(e, Code::Required, f, "connection pool must have at least one field");
            return;
        }
        if let Some(h) = &pool.http {
            if h.h2_upgrade_policy.as_deref() == Some("UPGRADE") && h.use_client_protocol == Some(true) {
                self.err(
                    e,
                    Code::Conflict,
                    &format!("{f}.http.useClientProtocol"),
                    "useClientProtocol must not be true when h2UpgradePolicy is UPGRADE",
                );
            }
            if let Some(n) = h
                .max_concurrent_streams
                .filter(|n| i32::try_from(*n).is_err() || *n < 0)
            {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.http.maxConcurrentStreams"),
                    format!("{n} is not a count"),
                );
            }
            if let Some(k) = &h.http2_keep_alive {
                let kf = format!("{f}.http.http2KeepAlive");
                for (name, value) in [("interval", &k.interval), ("timeout", &k.timeout)] {
                    match value {
                        None => self.err(
                            e,
                            Code::Required,
                            &format!("{kf}.{name}"),
                            format!("http2 keepalive {name} is required"),
                        ),
                        Some(_) => self.istio_duration(e, &format!("{kf}.{name}"), value.as_ref()),
                    }
                }
            }
        }
        if let Some(t) = &pool.tcp {
            self.istio_duration(
                e,
                &format!("{f}.tcp.maxConnectionDuration"),
                t.max_connection_duration.as_ref(),
            );
            if let Some(k) = &t.tcp_keepalive {
                let kf = format!("{f}.tcp.tcpKeepalive");
                self.istio_duration(e, &format!("{kf}.time"), k.time.as_ref());
                self.istio_duration(e, &format!("{kf}.interval"), k.interval.as_ref());
                if let Some(n) = k.probes.filter(|n| u32::try_from(*n).is_err()) {
                    self.err(
                        e,
                        Code::InvalidValue,
                        &format!("{kf}.probes"),
                        format!("{n} is not a count"),
                    );
                }
            }
        }
    }

    fn load_balancer_checks(&mut self, e: &Entry, f: &str, lb: &LoadBalancerSettings, outlier: bool) {
        if lb.backend_utilization.is_some() && (lb.simple.is_some() || lb.consistent_hash.is_some()) {
            self.err(
                e,
                Code::Conflict,
                f,
                "only one of simple, consistentHash and backendUtilization can be set",
            );
        }
        if let Some(h) = &lb.consistent_hash {
            let hf = format!("{f}.consistentHash");
            if let Some(c) = &h.http_cookie {
                let mut names = HashSet::new();
                for (i, a) in c.attributes.iter().enumerate() {
                    let af = format!("{hf}.httpCookie.attributes[{i}].name");
                    if a.name.is_empty() {
                        self.err(e, Code::Required, &af, "cookie attribute name cannot be empty");
                    } else if !names.insert(a.name.as_str()) {
                        self.err(
                            e,
                            Code::Conflict,
                            &af,
                            format!("duplicate cookie attribute name: {}", a.name),
                        );
                    }
                }
            }
            if let Some(n) = h.minimum_ring_size.filter(|n| *n != 0) {
                if h.ring_hash.is_some() || h.maglev.is_some() {
                    self.err(
                        e,
                        Code::Conflict,
                        &format!("{hf}.minimumRingSize"),
                        "only one of minimumRingSize or maglev/ringHash can be specified",
                    );
                } else {
                    self.warn(
                        e,
                        Code::InvalidValue,
                        &format!("{hf}.minimumRingSize"),
                        format!("minimumRingSize ({n}) is deprecated, use ringHash.minimumRingSize instead"),
                    );
                }
            }
        }
        if lb.locality_lb_setting.is_some() && lb.zone_aware_lb_setting.is_some() {
            self.err(
                e,
                Code::Conflict,
                f,
                "only one of localityLbSetting and zoneAwareLbSetting can be set",
            );
        }
        if let Some(l) = &lb.locality_lb_setting {
            self.locality_checks(e, &format!("{f}.localityLbSetting"), l, outlier);
        }
        if let Some(z) = &lb.zone_aware_lb_setting {
            self.zone_aware_checks(e, &format!("{f}.zoneAwareLbSetting"), z, outlier);
        }
        if let Some(w) = &lb.warmup {
            let wf = format!("{f}.warmup");
            match &w.duration {
                None => self.err(e, Code::Required, &format!("{wf}.duration"), "duration is required"),
                Some(_) => self.istio_duration(e, &format!("{wf}.duration"), w.duration.as_ref()),
            }
            if w.minimum_percent.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{wf}.minimumPercent"),
                    "minimumPercent must be in [0, 100]",
                );
            }
            if w.aggression.is_some_and(|a| a <= 0.0) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{wf}.aggression"),
                    "aggression should be greater than 0",
                );
            }
        }
        self.istio_duration(e, &format!("{f}.warmupDurationSecs"), lb.warmup_duration_secs.as_ref());
    }

    fn locality_checks(&mut self, e: &Entry, f: &str, l: &LocalityLbSetting, outlier: bool) {
        if !l.distribute.is_empty() && !l.failover.is_empty() {
            self.err(
                e,
                Code::Conflict,
                f,
                "can not simultaneously specify distribute and failover",
            );
            return;
        }
        if !l.failover.is_empty() {
            if let Some(label) = l
                .failover_priority
                .iter()
                .find(|p| TOPOLOGY_LABELS.contains(&p.as_str()))
            {
                self.err(
                    e,
                    Code::Conflict,
                    &format!("{f}.failoverPriority"),
                    format!("can not simultaneously set failover and topology label {label} in failoverPriority"),
                );
                return;
            }
        }
        for (i, d) in l.distribute.iter().enumerate() {
            let df = format!("{f}.distribute[{i}]");
            if let Some(w) = d.to.values().find(|w| !(1..=100).contains(*w)) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{df}.to"),
                    format!("locality weight {w} is not in [1, 100]"),
                );
                return;
            }
            let total: i64 = d.to.values().sum();
            if total != 100 {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{df}.to"),
                    format!("total locality weight {total} != 100"),
                );
                return;
            }
            if let Err(err) = check_localities(d.to.keys().map(String::as_str)) {
                self.err(e, Code::InvalidValue, &format!("{df}.to"), err.to_string());
            }
        }
        if let Err(err) = check_localities(l.distribute.iter().map(|d| d.from.as_str())) {
            self.err(e, Code::InvalidValue, &format!("{f}.distribute"), err.to_string());
        }
        if (!l.failover.is_empty() || !l.failover_priority.is_empty()) && !outlier {
            self.warn(
                e,
                Code::Required,
                f,
                "outlier detection policy must be provided for failover",
            );
        }
        self.failover_checks(e, f, &l.failover);
    }

    fn zone_aware_checks(&mut self, e: &Entry, f: &str, z: &ZoneAwareLbSetting, outlier: bool) {
        for (i, label) in z.failover_priority.iter().enumerate() {
            if TOPOLOGY_LABELS.contains(&label.as_str()) {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.failoverPriority[{i}]"),
                    format!("failoverPriority for zone aware lb must not use topology label {label}; region- and zone-level routing are handled automatically"),
                );
            }
        }
        if (!z.failover.is_empty() || !z.failover_priority.is_empty()) && !outlier {
            self.warn(
                e,
                Code::Required,
                f,
                "outlier detection policy must be provided for failover",
            );
        }
        if let Some(n) = z.min_cluster_size.filter(|n| !(1..=4_294_967_295).contains(n)) {
            self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.minClusterSize"),
                format!("{n} is not in 1-4294967295"),
            );
        }
        self.failover_checks(e, f, &z.failover);
    }

    /// Failover pairs: two different regions, no `/`, no `*`.
    fn failover_checks(&mut self, e: &Entry, f: &str, failover: &[LocalityFailover]) {
        for (i, x) in failover.iter().enumerate() {
            let ff = format!("{f}.failover[{i}]");
            if x.from == x.to {
                self.err(
                    e,
                    Code::InvalidValue,
                    &ff,
                    "failover settings must specify different regions",
                );
            }
            if x.from.contains('/') || x.to.contains('/') {
                self.err(e, Code::InvalidValue, &ff, "failover only specifies regions");
            }
            if x.from.contains('*') || x.to.contains('*') {
                self.err(
                    e,
                    Code::InvalidValue,
                    &ff,
                    "failover region should not contain '*' wildcard",
                );
            }
        }
    }

    /// Upstream TLS (agent, `ValidateTLS`).
    fn client_tls_checks(&mut self, e: &Entry, f: &str, t: &ClientTlsSettings) {
        let mode = t.mode.as_deref().unwrap_or("DISABLE");
        let set = |x: &Option<String>| x.as_deref().is_some_and(|s| !s.is_empty());
        let cred = set(&t.credential_name);
        if let Some(name) = t
            .credential_name
            .as_deref()
            .and_then(|c| c.strip_prefix("configmap://"))
        {
            let ns = name.split_once('/').map_or(e.resource.namespace.as_str(), |(ns, _)| ns);
            if name.is_empty() || ns != e.resource.namespace {
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{f}.credentialName"),
                    format!(
                        "invalid configmap:// credentialName: namespace must match the configuration namespace {:?}",
                        e.resource.namespace
                    ),
                );
            }
        }
        if t.insecure_skip_verify == Some(true) {
            let sans = !t.subject_alt_names.is_empty();
            if mode == "SIMPLE" && (set(&t.ca_certificates) || cred || sans) {
                self.err(
                    e,
                    Code::Conflict,
                    f,
                    "cannot specify caCertificates, credentialName or subjectAltNames when insecureSkipVerify is true",
                );
            }
            if mode == "MUTUAL" && (set(&t.ca_certificates) || sans) {
                self.err(
                    e,
                    Code::Conflict,
                    f,
                    "cannot specify caCertificates or subjectAltNames when insecureSkipVerify is true",
                );
            }
        }
        if matches!(mode, "SIMPLE" | "MUTUAL") && cred {
            if set(&t.client_certificate) || set(&t.ca_certificates) || set(&t.private_key) || set(&t.ca_crl) {
                self.err(
                    e,
                    Code::Conflict,
                    f,
                    "cannot specify client certificates, CA certificate or CA CRL if credentialName is set",
                );
            }
            return;
        }
        if mode == "MUTUAL" {
            if !set(&t.client_certificate) {
                self.err(
                    e,
                    Code::Required,
                    &format!("{f}.clientCertificate"),
                    "client certificate required for mutual tls",
                );
            }
            if !set(&t.private_key) {
                self.err(
                    e,
                    Code::Required,
                    &format!("{f}.privateKey"),
                    "private key required for mutual tls",
                );
            }
        }
    }

    fn tunnel_checks(&mut self, e: &Entry, f: &str, t: &crate::resources::traffic_policy::Tunnel) {
        if !matches!(t.protocol.as_deref(), None | Some("" | "CONNECT" | "POST")) {
            self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.protocol"),
                "tunnel protocol must be CONNECT or POST",
            );
        }
        let host = t.target_host.as_deref().unwrap_or("");
        if host.parse::<IpAddr>().is_err() && check_fqdn(host).is_err() {
            self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.targetHost"),
                format!("tunnel target host {host:?} must be a valid FQDN or IP address"),
            );
        }
        if !t.target_port.is_some_and(|p| (1..=65535).contains(&p)) {
            self.err(
                e,
                Code::InvalidValue,
                &format!("{f}.targetPort"),
                "tunnel target port must be in 1-65535",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localities_end_in_one_wildcard_and_do_not_overlap() {
        assert_eq!(check_localities(["us-east/a", "us-east/b", "eu/*"]), Ok(()));
        assert_eq!(check_localities(["us-east/a/x", "us-east/a/y"]), Ok(()));
        assert!(matches!(check_localities(["us/*/a"]), Err(LocalityError::Wildcard(_))));
        assert!(matches!(check_localities(["us//a"]), Err(LocalityError::Empty(_))));
        assert!(matches!(
            check_localities(["us", "us/a"]),
            Err(LocalityError::Overlap(_))
        ));
        assert!(matches!(check_localities(["*", "us"]), Err(LocalityError::Overlap(_))));
        assert!(matches!(
            check_localities(["us/a", "us/a"]),
            Err(LocalityError::Overlap(_))
        ));
        assert!(matches!(
            check_localities(["us/*", "us/a"]),
            Err(LocalityError::Overlap(_))
        ));
        assert_eq!(
            check_localities(["us/a", "us/*"]),
            Ok(()),
            "as Istio: a later wildcard is new"
        );
    }
}
