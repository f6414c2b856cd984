//! DestinationRule: validation.go `ValidateDestinationRule`, `validateTrafficPolicy`,
//! `validatePortTrafficPolicies`, `validateOutlierDetection`,
//! `validateConnectionPool`, `validateLoadBalancer`, `validateSubset(Name)`,
//! `validateExportTo`, `validateWorkloadSelector`, `validateTunnelSettings`,
//! `validateProxyProtocol`; agent `ValidateTLS`, `ValidateLocalityLbSetting`,
//! `ValidateZoneAwareLbSetting`, `ValidateDuration`; CRD rules of DestinationRule.

use strait_config::Code::*;

use super::*;

fn dr(spec: &str) -> String {
    resource("networking.istio.io/v1", "DestinationRule", spec)
}

/// A DestinationRule for `backend` whose top-level policy is `policy`.
fn tp(policy: &str) -> String {
    dr(&format!("{{host: backend, trafficPolicy: {policy}}}"))
}

/// A top-level policy whose load balancer is `lb`.
fn lb(lb: &str) -> String {
    tp(&format!("{{loadBalancer: {lb}}}"))
}

const T: &str = "spec.trafficPolicy";

#[test]
fn destination_rule_load_balancer() {
    run(&[
        (lb("{simple: ROUND_ROBIN}"), Accepted),
        (lb("{simple: LEAST_CONN}"), Accepted),
        (lb("{simple: FASTEST}"), Error(InvalidValue, "spec.trafficPolicy.loadBalancer.simple")),
        // oneOf simple / consistentHash / backendUtilization.
        (
            lb("{simple: RANDOM, consistentHash: {httpHeaderName: x-user}}"),
            Error(InvalidValue, "spec.trafficPolicy.loadBalancer"),
        ),
        (lb("{backendUtilization: {}}"), Warning(NotEnforced, T)),
        (
            lb("{simple: RANDOM, backendUtilization: {}}"),
            Error(Conflict, "spec.trafficPolicy.loadBalancer"),
        ),
        // consistentHash: one key, cookie name and attributes.
        (lb("{consistentHash: {httpCookie: {name: s, ttl: 0s, attributes: [{name: SameSite, value: Lax}]}}}"), Accepted),
        (
            lb("{consistentHash: {httpHeaderName: x-user, useSourceIp: true}}"),
            Error(InvalidValue, "spec.trafficPolicy.loadBalancer.consistentHash"),
        ),
        (
            lb("{consistentHash: {httpCookie: {ttl: 1s}}}"),
            Error(InvalidValue, "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name"),
        ),
        (
            lb("{consistentHash: {httpCookie: {name: s, attributes: [{name: ''}]}}}"),
            Error(Required, "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[0].name"),
        ),
        (
            lb("{consistentHash: {httpCookie: {name: s, attributes: [{name: Secure}, {name: Secure}]}}}"),
            Error(Conflict, "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[1].name"),
        ),
        // Ring sizes: the deprecated field warns, and is not used beside ringHash/maglev.
        (lb("{consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 2048}}}"), Accepted),
        (
            lb("{consistentHash: {useSourceIp: true, minimumRingSize: 2048}}"),
            Warning(InvalidValue, "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize"),
        ),
        (
            lb("{consistentHash: {useSourceIp: true, minimumRingSize: 2048, maglev: {tableSize: 65537}}}"),
            Error(Conflict, "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize"),
        ),
        // Maglev: a table size is required, prime and below 5000011.
        (lb("{consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}"), Accepted),
        (
            lb("{consistentHash: {useSourceIp: true, maglev: {}}}"),
            Error(InvalidValue, "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize"),
        ),
        (
            lb("{consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}}"),
            Error(InvalidValue, "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize"),
        ),
        (
            lb("{consistentHash: {useSourceIp: true, maglev: {tableSize: 5000011}}}"),
            Error(InvalidValue, "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize"),
        ),
        // Locality settings.
        (
            tp("{loadBalancer: {localityLbSetting: {failover: [{from: us-east, to: us-west}]}}, outlierDetection: {consecutive5xxErrors: 5}}"),
            Accepted,
        ),
        (
            lb("{localityLbSetting: {failover: [{from: us-east, to: us-west}]}}"),
            Warning(Required, "spec.trafficPolicy.loadBalancer.localityLbSetting"),
        ),
        (
            lb("{localityLbSetting: {distribute: [{from: 'us-east/*', to: {'us-east/a': 80, 'us-west/*': 20}}]}}"),
            Accepted,
        ),
        (
            lb("{localityLbSetting: {distribute: [{from: a, to: {b: 100}}], failover: [{from: a, to: b}]}}"),
            Error(Conflict, "spec.trafficPolicy.loadBalancer.localityLbSetting"),
        ),
        (
            lb("{localityLbSetting: {distribute: [{from: a, to: {b: 60, c: 30}}]}}"),
            Error(InvalidValue, "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to"),
        ),
        (
            lb("{localityLbSetting: {distribute: [{from: a, to: {b: 0, c: 100}}]}}"),
            Error(InvalidValue, "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to"),
        ),
        (
            lb("{localityLbSetting: {distribute: [{from: 'a/*/c', to: {b: 100}}]}}"),
            Error(InvalidValue, "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute"),
        ),
        (
            lb("{localityLbSetting: {distribute: [{from: a, to: {b: 100}}, {from: a, to: {c: 100}}]}}"),
            Error(InvalidValue, "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute"),
        ),
        (
            tp("{loadBalancer: {localityLbSetting: {failover: [{from: a, to: a}]}}, outlierDetection: {}}"),
            Error(InvalidValue, "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]"),
        ),
        (
            tp("{loadBalancer: {localityLbSetting: {failover: [{from: a/z, to: b}]}}, outlierDetection: {}}"),
            Error(InvalidValue, "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]"),
        ),
        (
            tp("{loadBalancer: {localityLbSetting: {failover: [{from: a, to: b}], failoverPriority: [topology.kubernetes.io/zone]}}, outlierDetection: {}}"),
            Error(Conflict, "spec.trafficPolicy.loadBalancer.localityLbSetting.failoverPriority"),
        ),
        // Zone-aware settings, and not both kinds.
        (lb("{zoneAwareLbSetting: {enabled: true, minClusterSize: 3}}"), Warning(NotEnforced, T)),
        (
            lb("{zoneAwareLbSetting: {enabled: true}, localityLbSetting: {enabled: true}}"),
            Error(Conflict, "spec.trafficPolicy.loadBalancer"),
        ),
        (
            lb("{zoneAwareLbSetting: {failoverPriority: [topology.kubernetes.io/region]}}"),
            Error(InvalidValue, "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting.failoverPriority[0]"),
        ),
        (
            lb("{zoneAwareLbSetting: {minClusterSize: 0}}"),
            Error(InvalidValue, "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting.minClusterSize"),
        ),
        // Warmup.
        (lb("{warmup: {duration: 30s, minimumPercent: 10, aggression: 1.5}}"), Accepted),
        (lb("{warmup: {minimumPercent: 10}}"), Error(Required, "spec.trafficPolicy.loadBalancer.warmup.duration")),
        (lb("{warmup: {duration: 30s, minimumPercent: 101}}"), Error(InvalidValue, "spec.trafficPolicy.loadBalancer.warmup.minimumPercent")),
        (lb("{warmup: {duration: 30s, aggression: 0}}"), Error(InvalidValue, "spec.trafficPolicy.loadBalancer.warmup.aggression")),
        (lb("{warmupDurationSecs: 0s}"), Error(InvalidValue, "spec.trafficPolicy.loadBalancer.warmupDurationSecs")),
    ]);
}

#[test]
fn destination_rule_policy_blocks() {
    run(&[
        (tp("{}"), Error(Required, T)),
        (
            dr("{host: backend, subsets: [{name: v1, trafficPolicy: {}}]}"),
            Error(Required, "spec.subsets[0].trafficPolicy"),
        ),
        (
            tp("{tunnel: {targetHost: proxy.example.com, targetPort: 8080}, proxyProtocol: {version: V1}}"),
            Error(Conflict, T),
        ),
        (
            tp("{proxyProtocol: {version: V3}}"),
            Error(InvalidValue, "spec.trafficPolicy.proxyProtocol.version"),
        ),
        (
            tp("{tunnel: {protocol: GET, targetHost: 10.0.0.1, targetPort: 8080}}"),
            Error(InvalidValue, "spec.trafficPolicy.tunnel.protocol"),
        ),
        (
            tp("{tunnel: {targetHost: 'bad host', targetPort: 8080}}"),
            Error(InvalidValue, "spec.trafficPolicy.tunnel.targetHost"),
        ),
        (
            tp("{tunnel: {targetHost: 10.0.0.1, targetPort: 0}}"),
            Error(InvalidValue, "spec.trafficPolicy.tunnel.targetPort"),
        ),
        (
            tp("{retryBudget: {percent: {value: 150}}}"),
            Error(InvalidValue, "spec.trafficPolicy.retryBudget.percent"),
        ),
        // Port-level settings need a port and a setting.
        (
            tp("{portLevelSettings: [{port: {number: 80}, loadBalancer: {simple: RANDOM}}]}"),
            Accepted,
        ),
        (
            tp("{portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}"),
            Error(Required, "spec.trafficPolicy.portLevelSettings[0].port"),
        ),
        (
            tp("{portLevelSettings: [{port: {number: 80}}]}"),
            Error(Required, "spec.trafficPolicy.portLevelSettings[0]"),
        ),
        (
            tp("{portLevelSettings: [{port: {number: 80}, connectionPool: {}}]}"),
            Error(Required, "spec.trafficPolicy.portLevelSettings[0].connectionPool"),
        ),
        // Connection pool.
        (
            tp("{connectionPool: {}}"),
            Error(Required, "spec.trafficPolicy.connectionPool"),
        ),
        (
            tp("{connectionPool: {http: {http1MaxPendingRequests: -1}}}"),
            Error(
                InvalidValue,
                "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests",
            ),
        ),
        (
            tp("{connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}"),
            Error(Conflict, "spec.trafficPolicy.connectionPool.http.useClientProtocol"),
        ),
        (
            tp("{connectionPool: {http: {http2KeepAlive: {interval: 10s, timeout: 1s}}}}"),
            Warning(NotEnforced, T),
        ),
        (
            tp("{connectionPool: {http: {http2KeepAlive: {interval: 10s}}}}"),
            Error(
                Required,
                "spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout",
            ),
        ),
        (
            tp("{connectionPool: {tcp: {maxConnectionDuration: 0s}}}"),
            Error(
                InvalidValue,
                "spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration",
            ),
        ),
        (
            tp("{connectionPool: {tcp: {tcpKeepalive: {time: 7200s, interval: 75s, probes: 9}}}}"),
            Warning(NotEnforced, T),
        ),
        (
            tp("{connectionPool: {tcp: {tcpKeepalive: {interval: 1500us}}}}"),
            Error(
                InvalidValue,
                "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.interval",
            ),
        ),
        (
            tp("{connectionPool: {tcp: {connectTimeout: 1.5ms}}}"),
            Error(InvalidValue, "spec.trafficPolicy.connectionPool.tcp.connectTimeout"),
        ),
        // Outlier detection.
        (
            tp("{outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m}}"),
            Accepted,
        ),
        (
            tp("{outlierDetection: {consecutiveErrors: 5}}"),
            Warning(InvalidValue, "spec.trafficPolicy.outlierDetection.consecutiveErrors"),
        ),
        (
            tp("{outlierDetection: {consecutiveLocalOriginFailures: 3}}"),
            Error(
                Conflict,
                "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
            ),
        ),
        (
            tp("{outlierDetection: {consecutiveLocalOriginFailures: 3, splitExternalLocalOriginErrors: true}}"),
            Warning(NotEnforced, T),
        ),
        (
            tp("{outlierDetection: {maxEjectionPercent: 101}}"),
            Error(InvalidValue, "spec.trafficPolicy.outlierDetection.maxEjectionPercent"),
        ),
        (
            tp("{outlierDetection: {failurePercentageThreshold: 101}}"),
            Error(
                InvalidValue,
                "spec.trafficPolicy.outlierDetection.failurePercentageThreshold",
            ),
        ),
        (
            tp("{outlierDetection: {outlierDetectionHttpErrorCodes: [503, 99]}}"),
            Error(
                InvalidValue,
                "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes[1]",
            ),
        ),
        // Upstream TLS (agent ValidateTLS).
        (tp("{tls: {mode: SIMPLE, sni: backend.example.com}}"), Accepted),
        (
            tp("{tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}}"),
            Accepted,
        ),
        (tp("{tls: {mode: MUTUAL, credentialName: client-cert}}"), Accepted),
        (
            tp("{tls: {mode: MUTUAL, privateKey: /k.pem}}"),
            Error(Required, "spec.trafficPolicy.tls.clientCertificate"),
        ),
        (
            tp("{tls: {mode: MUTUAL, clientCertificate: /c.pem}}"),
            Error(Required, "spec.trafficPolicy.tls.privateKey"),
        ),
        (
            tp("{tls: {mode: SIMPLE, credentialName: c, caCertificates: /ca.pem}}"),
            Error(Conflict, "spec.trafficPolicy.tls"),
        ),
        (
            tp("{tls: {mode: SIMPLE, insecureSkipVerify: true, caCertificates: /ca.pem}}"),
            Error(Conflict, "spec.trafficPolicy.tls"),
        ),
        (
            tp("{tls: {mode: MUTUAL, insecureSkipVerify: true, credentialName: c, subjectAltNames: [a]}}"),
            Error(Conflict, "spec.trafficPolicy.tls"),
        ),
        (
            tp("{tls: {mode: SIMPLE, credentialName: 'configmap://other/ca'}}"),
            Error(InvalidValue, "spec.trafficPolicy.tls.credentialName"),
        ),
        (
            tp("{tls: {mode: SIMPLE, credentialName: 'configmap://shop/ca'}}"),
            Accepted,
        ),
        (
            tp("{tls: {mode: STRICT}}"),
            Error(InvalidValue, "spec.trafficPolicy.tls.mode"),
        ),
        (
            tp("{tls: {mode: SIMPLE, caCertCredentialName: ca}}"),
            Warning(NotEnforced, T),
        ),
    ]);
}

#[test]
fn destination_rule_subsets_and_scope() {
    run(&[
        (
            dr("{host: backend, subsets: [{name: v1, labels: {version: v1}}, {name: v2-canary}]}"),
            Accepted,
        ),
        (
            dr("{host: backend, subsets: [{name: V1_x}]}"),
            Error(InvalidValue, "spec.subsets[0].name"),
        ),
        (
            dr("{host: backend, subsets: [{name: ''}]}"),
            Error(Required, "spec.subsets[0].name"),
        ),
        (
            dr("{host: backend, subsets: [{name: v1}, {name: v1}]}"),
            Error(Conflict, "spec.subsets[1].name"),
        ),
        (
            dr("{host: backend, subsets: [{name: v1, labels: {version: 'v 1'}}]}"),
            Error(InvalidValue, "spec.subsets[0].labels.version"),
        ),
        (dr("{host: ''}"), Error(Required, "spec.host")),
        // exportTo (validateExportTo).
        (dr("{host: backend, exportTo: ['.', other]}"), Accepted),
        (dr("{host: backend, exportTo: ['*']}"), Accepted),
        (
            dr("{host: backend, exportTo: ['.', shop]}"),
            Error(Conflict, "spec.exportTo[1]"),
        ),
        (
            dr("{host: backend, exportTo: [a, a]}"),
            Error(Conflict, "spec.exportTo[1]"),
        ),
        (
            dr("{host: backend, exportTo: ['*', a]}"),
            Error(Conflict, "spec.exportTo"),
        ),
        (
            dr("{host: backend, exportTo: ['~']}"),
            Error(InvalidValue, "spec.exportTo[0]"),
        ),
        (
            dr("{host: backend, exportTo: [Bad_NS]}"),
            Error(InvalidValue, "spec.exportTo[0]"),
        ),
        // A workload selector keeps the rule in its namespace.
        (
            dr("{host: backend, workloadSelector: {matchLabels: {app: web}}, exportTo: ['.']}"),
            Accepted,
        ),
        (
            dr("{host: backend, workloadSelector: {matchLabels: {app: web}}, exportTo: [other]}"),
            Error(InvalidValue, "spec.exportTo"),
        ),
        (
            dr("{host: backend, workloadSelector: {matchLabels: {app: web}}, exportTo: ['.', other]}"),
            Error(InvalidValue, "spec.exportTo"),
        ),
        (
            dr("{host: backend, workloadSelector: {matchLabels: {app: 'w*'}}}"),
            Error(InvalidValue, "spec.workloadSelector.matchLabels.app"),
        ),
        (
            dr("{host: backend, workloadSelector: {}}"),
            Warning(InvalidValue, "spec.workloadSelector"),
        ),
    ]);
}
