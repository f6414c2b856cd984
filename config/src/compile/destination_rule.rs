//! DestinationRules checked as Istio's webhook checks them, and their traffic
//! policies compiled once per (host, subset, port) that a cluster can use.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::bundle::Entry;
use crate::diag::{Anchor, Code};
use crate::hosts::{check_wildcard_domain, fqdn, is_label};
use crate::resources::networking::{ClientTlsSettings, DestinationRuleSpec, TrafficPolicy};
use crate::snapshot::ClusterPolicy;

use super::cluster_policy;
use super::Compiler;

/// The compiled policy of one (host, subset, port), with the upstream TLS settings
/// that translation resolves (their Secrets are looked up per proxy).
#[derive(Debug)]
pub struct CompiledClusterPolicy {
    /// Load balancing, limits, outlier detection.
    pub policy: ClusterPolicy,
    /// DestinationRule `tls` in force.
    pub tls: Option<ClientTlsSettings>,
    /// Where that `tls` was written, for the engine's diagnostics about its files.
    pub tls_anchor: Anchor,
}

/// Compiled traffic policies by (host, subset, port); port 0 holds a block's policy
/// for ports without port-level settings.
#[derive(Debug, Default)]
pub struct ClusterPolicies {
    by: HashMap<(String, Option<String>, u16), Arc<CompiledClusterPolicy>>,
    /// Hosts whose top-level policy was taken, and (host, subset) pairs taken.
    tops: HashSet<String>,
    subsets: HashSet<(String, String)>,
}

impl ClusterPolicies {
    /// True for the first DestinationRule (in bundle order) with a top-level policy for `host`.
    fn first_top(&mut self, host: &str) -> bool {
        self.tops.insert(host.to_string())
    }

    /// True for the first DestinationRule (in bundle order) naming `subset` of `host`.
    fn first_subset(&mut self, host: &str, subset: &str) -> bool {
        self.subsets.insert((host.to_string(), subset.to_string()))
    }

    fn insert(
        &mut self,
        host: &str,
        subset: Option<&str>,
        port: u16,
        policy: ClusterPolicy,
        tls: Option<ClientTlsSettings>,
        tls_anchor: Anchor,
    ) {
        self.by
            .entry((host.to_string(), subset.map(str::to_string), port))
            .or_insert_with(|| {
                Arc::new(CompiledClusterPolicy {
                    policy,
                    tls,
                    tls_anchor,
                })
            });
    }

    /// The policy in force for a cluster of `host`'s `subset` on `port`: the subset's
    /// own block if it has one, else the top level; the port's settings if any.
    pub fn get(&self, host: &str, subset: Option<&str>, port: u16) -> Option<&CompiledClusterPolicy> {
        let key = |subset: Option<&str>, port: u16| (host.to_string(), subset.map(str::to_string), port);
        let mut keys = vec![key(subset, port), key(subset, 0)];
        if subset.is_some() {
            keys.extend([key(None, port), key(None, 0)]);
        }
        keys.iter().find_map(|k| self.by.get(k)).map(|p| &**p)
    }
}

/// A policy block of a DestinationRule: its field, the subset it is for, the
/// top-level and subset policies it merges, and whether translation uses it.
type Block<'p> = (
    String,
    Option<String>,
    Option<&'p TrafficPolicy>,
    Option<&'p TrafficPolicy>,
    bool,
);

impl Compiler<'_> {
    pub(super) fn destination_rule(&mut self, e: &Entry, dr: &DestinationRuleSpec, policies: &mut ClusterPolicies) {
        if dr.host.is_empty() {
            self.err(e, Code::Required, "spec.host", "a DestinationRule needs a host");
        } else if let Err(msg) = check_wildcard_domain(&dr.host) {
            self.err(e, Code::InvalidValue, "spec.host", msg.to_string());
        }
        let mut names = HashSet::new();
        for (i, s) in dr.subsets.iter().enumerate() {
            if s.name.is_empty() {
                self.err(
                    e,
                    Code::Required,
                    &format!("spec.subsets[{i}].name"),
                    "subset name is required",
                );
            } else if !names.insert(s.name.as_str()) {
                self.err(
                    e,
                    Code::Conflict,
                    &format!("spec.subsets[{i}].name"),
                    format!("subset {} is defined twice", s.name),
                );
            } else if !is_label(&s.name) {
                // validation.go, validateSubsetName.
                self.err(
                    e,
                    Code::InvalidValue,
                    &format!("spec.subsets[{i}].name"),
                    format!("subset name {:?} is not a DNS-1123 label", s.name),
                );
            }
            self.labels(e, &format!("spec.subsets[{i}].labels"), &s.labels);
            if let Some(p) = s.traffic_policy.as_deref() {
                self.traffic_policy_checks(e, &format!("spec.subsets[{i}].trafficPolicy"), p);
            }
        }
        if let Some(p) = dr.traffic_policy.as_deref() {
            self.traffic_policy_checks(e, "spec.trafficPolicy", p);
        }
        // validation.go, ValidateDestinationRule: exportTo and the workload selector.
        self.export_to(e, &dr.export_to, false, dr.workload_selector.is_some());
        self.workload_selector(e, "spec.workloadSelector", dr.workload_selector.as_ref());
        let host = fqdn(&dr.host, &e.resource.namespace);
        let top = dr.traffic_policy.as_deref();
        // The registry merges DestinationRules for one host as Istio does: the first
        // one's top-level policy, and each subset from the first one naming it. The
        // blocks it uses are kept for translation; the others are only checked.
        let registry_top = self.registry.traffic_policies(&host, None).0.cloned();
        let top_is_used = top.is_some() && policies.first_top(&host);
        let mut blocks: Vec<Block<'_>> = Vec::new();
        if let Some(t) = top {
            blocks.push(("spec.trafficPolicy".into(), None, Some(t), None, top_is_used));
        }
        for (i, s) in dr.subsets.iter().enumerate() {
            let used = policies.first_subset(&host, &s.name);
            if let Some(p) = s.traffic_policy.as_deref() {
                // A used subset merges with the host's top-level policy, wherever it is.
                let block_top = if used { registry_top.as_ref() } else { top };
                blocks.push((
                    format!("spec.subsets[{i}].trafficPolicy"),
                    Some(s.name.clone()),
                    block_top,
                    Some(p),
                    used,
                ));
            }
        }
        for (field, subset, top, sub, used) in blocks {
            let port_levels = sub
                .filter(|s| !s.port_level_settings.is_empty())
                .or(top)
                .map(|p| p.port_level_settings.as_slice())
                .unwrap_or_default();
            let mut ports: Vec<u16> = port_levels
                .iter()
                .filter_map(|pl| pl.port.as_ref()?.number.and_then(|n| u16::try_from(n).ok()))
                .collect();
            ports.push(0);
            for port in ports {
                let effective = cluster_policy::effective(top, sub, port);
                match cluster_policy::compile(&effective) {
                    Ok(policy) if used => {
                        let at = if port == 0 {
                            format!("{field}.tls")
                        } else {
                            format!("{field}.portLevelSettings")
                        };
                        policies.insert(&host, subset.as_deref(), port, policy, effective.tls, e.anchor(&at));
                    }
                    Ok(_) => {}
                    Err(errors) => {
                        for p in errors {
                            let at = if port == 0 {
                                format!("{field}.{}", p.field)
                            } else {
                                format!("{field}.portLevelSettings[port {port}].{}", p.field)
                            };
                            self.err(e, p.code, &at, p.message);
                        }
                    }
                }
            }
            if let Some(p) = sub.or(top) {
                self.traffic_policy_not_enforced(e, &field, p);
            }
        }
    }

    /// Warns about traffic-policy fields Strait accepts but does not act on yet.
    fn traffic_policy_not_enforced(&mut self, e: &Entry, field: &str, p: &TrafficPolicy) {
        let mut unused: Vec<&str> = Vec::new();
        for tls in p
            .tls
            .iter()
            .chain(p.port_level_settings.iter().filter_map(|pl| pl.tls.as_ref()))
        {
            match tls.mode.as_deref() {
                None | Some("DISABLE" | "SIMPLE" | "MUTUAL" | "ISTIO_MUTUAL") => {}
                Some(other) => self.err(
                    e,
                    Code::InvalidValue,
                    &format!("{field}.tls.mode"),
                    format!("{other:?} is not one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL"),
                ),
            }
            if !tls.subject_alt_names.is_empty() {
                unused.push("tls.subjectAltNames (the server is verified against the SNI name)");
            }
            if tls.ca_crl.is_some() {
                unused.push("tls.caCrl");
            }
            if tls.ca_cert_credential_name.is_some() {
                unused.push("tls.caCertCredentialName");
            }
        }
        if p.proxy_protocol.is_some() {
            unused.push("proxyProtocol");
        }
        if p.tunnel.is_some() {
            unused.push("tunnel");
        }
        if p.retry_budget.is_some() {
            unused.push("retryBudget");
        }
        if let Some(lb) = &p.load_balancer {
            if lb.locality_lb_setting.is_some() {
                unused.push("loadBalancer.localityLbSetting");
            }
            if lb.zone_aware_lb_setting.is_some() {
                unused.push("loadBalancer.zoneAwareLbSetting");
            }
            if lb.backend_utilization.is_some() {
                unused.push("loadBalancer.backendUtilization (a gateway balances with LEAST_REQUEST)");
            }
            if lb.warmup_duration_secs.is_some() || lb.warmup.is_some() {
                unused.push("loadBalancer.warmup");
            }
            if lb.simple.as_deref() == Some("PASSTHROUGH") {
                unused.push("loadBalancer.simple PASSTHROUGH (a gateway balances with LEAST_REQUEST)");
            }
        }
        if let Some(pool) = &p.connection_pool {
            if let Some(t) = &pool.tcp {
                if t.tcp_keepalive.is_some() {
                    unused.push("connectionPool.tcp.tcpKeepalive");
                }
                if t.max_connection_duration.is_some() {
                    unused.push("connectionPool.tcp.maxConnectionDuration");
                }
            }
            if let Some(h) = &pool.http {
                if h.max_retries.is_some() {
                    unused.push("connectionPool.http.maxRetries");
                }
                if h.use_client_protocol.is_some() {
                    unused.push("connectionPool.http.useClientProtocol");
                }
                if h.max_concurrent_streams.is_some() {
                    unused.push("connectionPool.http.maxConcurrentStreams");
                }
                if h.http2_keep_alive.is_some() {
                    unused.push("connectionPool.http.http2KeepAlive");
                }
            }
        }
        if let Some(o) = &p.outlier_detection {
            if o.consecutive_local_origin_failures.is_some() || o.split_external_local_origin_errors.is_some() {
                unused.push("outlierDetection local-origin settings");
            }
            if o.failure_percentage_threshold.is_some() || !o.outlier_detection_http_error_codes.is_empty() {
                unused.push("outlierDetection failurePercentageThreshold and outlierDetectionHttpErrorCodes");
            }
        }
        for u in unused {
            self.warn(
                e,
                Code::NotEnforced,
                field,
                format!("{u} is accepted but not enforced by this version of Strait"),
            );
        }
    }
}
