//! AuthorizationPolicy: validation.go `ValidateAuthorizationPolicy`,
//! `validateOneOfSelectorType`, `validateWorkloadSelector`,
//! `validatePolicyTargetReference`; pkg/config/security `ValidateIPs`,
//! `ValidatePorts`, `CheckEmptyValues`, `CheckServiceAccount`,
//! `CheckTrustDomainValues`, `CheckValidPathTemplate`, `ValidateAttribute`; CRD
//! rules of AuthorizationPolicy.

use strait_config::Code::*;

use super::*;

fn ap(spec: &str) -> String {
    resource("security.istio.io/v1", "AuthorizationPolicy", spec)
}

fn rule(rule: &str) -> String {
    ap(&format!("{{rules: [{rule}]}}"))
}

#[test]
fn authorization_policy_targets_and_actions() {
    run(&[
        (ap("{}"), Accepted),
        (ap("{action: ALLOW, rules: [{}]}"), Accepted),
        (ap("{action: AUDIT, rules: [{}]}"), Accepted),
        (ap("{action: MAYBE}"), Error(Schema, "spec.action")),
        // validateOneOfSelectorType.
        (
            ap("{selector: {matchLabels: {app: a}}, targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: g}]}"),
            Error(Conflict, "spec"),
        ),
        (
            ap("{targetRef: {kind: Service, name: s}, targetRefs: [{kind: Service, name: t}]}"),
            Error(Conflict, "spec"),
        ),
        // validatePolicyTargetReference and the CRD's targetRef rules.
        (ap("{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: g}]}"), Accepted),
        (ap("{targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio}]}"), Accepted),
        (ap("{targetRef: {kind: Service, group: '', name: s}}"), Accepted),
        (ap("{targetRefs: [{kind: ServiceEntry, group: networking.istio.io, name: s}]}"), Accepted),
        (ap("{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io}]}"), Error(Required, "spec.targetRefs[0].name")),
        (ap("{targetRefs: [{group: gateway.networking.k8s.io, name: g}]}"), Error(Required, "spec.targetRefs[0].kind")),
        (
            ap("{targetRef: {kind: Service, name: s, namespace: other}}"),
            Error(InvalidValue, "spec.targetRef.namespace"),
        ),
        (ap("{targetRef: {kind: Deployment, group: apps, name: d}}"), Error(InvalidValue, "spec.targetRef")),
        (ap("{targetRef: {kind: Gateway, name: g}}"), Error(InvalidValue, "spec.targetRef")),
        // validateWorkloadSelector.
        (ap("{selector: {matchLabels: {app: '*'}}}"), Error(InvalidValue, "spec.selector.matchLabels.app")),
        (ap("{selector: {}}"), Warning(InvalidValue, "spec.selector")),
        // Actions: DENY and CUSTOM need rules, CUSTOM a provider, only CUSTOM a provider.
        (ap("{action: DENY}"), Error(Required, "spec.rules")),
        (ap("{action: DENY, rules: []}"), Error(Required, "spec.rules")),
        (ap("{action: CUSTOM, provider: {name: ext}}"), Error(Required, "spec.rules")),
        (ap("{action: CUSTOM, rules: [{}]}"), Error(Required, "spec.provider.name")),
        (ap("{action: CUSTOM, provider: {name: ''}, rules: [{}]}"), Error(Required, "spec.provider.name")),
        (ap("{action: CUSTOM, provider: {name: ext}, rules: [{to: [{operation: {paths: [/api/*]}}]}]}"), Accepted),
        (ap("{action: ALLOW, provider: {name: ext}, rules: [{}]}"), Error(Conflict, "spec.provider")),
        (
            ap("{action: CUSTOM, provider: {name: ext}, rules: [{from: [{source: {principals: [a/ns/b/sa/c]}}]}]}"),
            Error(InvalidValue, "spec.rules[0].from[0].source.principals"),
        ),
        (
            ap("{action: CUSTOM, provider: {name: ext}, rules: [{from: [{source: {trustDomains: [td]}}]}]}"),
            Error(InvalidValue, "spec.rules[0].from[0].source.trustDomains"),
        ),
        (
            ap("{action: CUSTOM, provider: {name: ext}, rules: [{from: [{source: {ipBlocks: [10.0.0.0/8]}}]}]}"),
            Accepted,
        ),
        (
            ap("{action: CUSTOM, provider: {name: ext}, rules: [{when: [{key: request.auth.principal, values: [a]}]}]}"),
            Error(InvalidValue, "spec.rules[0].when[0].key"),
        ),
        (
            ap("{action: CUSTOM, provider: {name: ext}, rules: [{when: [{key: source.trustDomain, values: [a]}]}]}"),
            Error(InvalidValue, "spec.rules[0].when[0].key"),
        ),
        // A DENY rule on HTTP attributes only also denies TCP traffic: a warning.
        (
            ap("{action: DENY, rules: [{to: [{operation: {methods: [POST]}}]}]}"),
            Warning(InvalidValue, "spec.rules[0]"),
        ),
        (
            ap("{action: DENY, rules: [{from: [{source: {requestPrincipals: ['*']}}]}]}"),
            Warning(InvalidValue, "spec.rules[0]"),
        ),
        (ap("{action: DENY, rules: [{to: [{operation: {ports: ['8080'], methods: [POST]}}]}]}"), Accepted),
    ]);
}

#[test]
fn authorization_policy_sources_operations_conditions() {
    run(&[
        // Empty sources and operations.
        (rule("{from: [{}]}"), Error(Required, "spec.rules[0].from[0].source")),
        (
            rule("{from: [{source: {}}]}"),
            Error(Required, "spec.rules[0].from[0].source"),
        ),
        (rule("{to: [{}]}"), Error(Required, "spec.rules[0].to[0].operation")),
        (
            rule("{to: [{operation: {}}]}"),
            Error(Required, "spec.rules[0].to[0].operation"),
        ),
        // serviceAccounts: not with namespaces or principals; CheckServiceAccount.
        (
            rule("{from: [{source: {serviceAccounts: [web, other/api]}}]}"),
            Accepted,
        ),
        (
            rule("{from: [{source: {serviceAccounts: [web], namespaces: [shop]}}]}"),
            Error(Conflict, "spec.rules[0].from[0].source"),
        ),
        (
            rule("{from: [{source: {notServiceAccounts: [web], principals: [a]}}]}"),
            Error(Conflict, "spec.rules[0].from[0].source"),
        ),
        (
            rule("{from: [{source: {serviceAccounts: ['web*']}}]}"),
            Error(InvalidValue, "spec.rules[0].from[0].source.serviceAccounts"),
        ),
        (
            rule("{from: [{source: {serviceAccounts: [a/b/c]}}]}"),
            Error(InvalidValue, "spec.rules[0].from[0].source.serviceAccounts"),
        ),
        (
            rule("{from: [{source: {notServiceAccounts: [/web]}}]}"),
            Error(InvalidValue, "spec.rules[0].from[0].source.notServiceAccounts"),
        ),
        (
            rule("{from: [{source: {serviceAccounts: [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q]}}]}"),
            Error(InvalidValue, "spec.rules[0].from[0].source.serviceAccounts"),
        ),
        // trustDomains: CheckTrustDomainValues.
        (
            rule("{from: [{source: {trustDomains: [cluster.local, '*.corp', 'td-*', '*']}}]}"),
            Accepted,
        ),
        (rule("{from: [{source: {notTrustDomains: [other.td]}}]}"), Accepted),
        (
            rule("{from: [{source: {trustDomains: ['a*b']}}]}"),
            Error(InvalidValue, "spec.rules[0].from[0].source.trustDomains"),
        ),
        (
            rule("{from: [{source: {trustDomains: ['*a*']}}]}"),
            Error(InvalidValue, "spec.rules[0].from[0].source.trustDomains"),
        ),
        (
            rule("{from: [{source: {notTrustDomains: [td/ns]}}]}"),
            Error(InvalidValue, "spec.rules[0].from[0].source.notTrustDomains"),
        ),
        (
            rule("{from: [{source: {trustDomains: ['']}}]}"),
            Error(InvalidValue, "spec.rules[0].from[0].source.trustDomains"),
        ),
        // CheckEmptyValues, ValidateIPs, ValidatePorts.
        (
            rule("{from: [{source: {principals: ['']}}]}"),
            Error(InvalidValue, "spec.rules[0].from[0].source.principals"),
        ),
        (
            rule("{from: [{source: {ipBlocks: ['10.0.0.0/33']}}]}"),
            Error(InvalidValue, "spec.rules[0].from[0].source.ipBlocks"),
        ),
        (
            rule("{from: [{source: {remoteIpBlocks: [' 10.0.0.1']}}]}"),
            Error(InvalidValue, "spec.rules[0].from[0].source.remoteIpBlocks"),
        ),
        (
            rule("{to: [{operation: {methods: ['']}}]}"),
            Error(InvalidValue, "spec.rules[0].to[0].operation.methods"),
        ),
        (
            rule("{to: [{operation: {ports: ['65536']}}]}"),
            Error(InvalidValue, "spec.rules[0].to[0].operation.ports"),
        ),
        (
            rule("{to: [{operation: {notPorts: ['-1']}}]}"),
            Error(InvalidValue, "spec.rules[0].to[0].operation.notPorts"),
        ),
        // CheckValidPathTemplate.
        (
            rule("{to: [{operation: {paths: ['/a/{*}/b', '/files/{**}', '/x/{**}/y.txt', '/plain*']}}]}"),
            Accepted,
        ),
        (
            rule("{to: [{operation: {paths: ['/a/{**}/{*}']}}]}"),
            Error(InvalidValue, "spec.rules[0].to[0].operation.paths"),
        ),
        (
            rule("{to: [{operation: {paths: ['/a{*}']}}]}"),
            Error(InvalidValue, "spec.rules[0].to[0].operation.paths"),
        ),
        (
            rule("{to: [{operation: {notPaths: ['/a}']}}]}"),
            Error(InvalidValue, "spec.rules[0].to[0].operation.notPaths"),
        ),
        (
            rule("{to: [{operation: {paths: ['/a b/{*}']}}]}"),
            Error(InvalidValue, "spec.rules[0].to[0].operation.paths"),
        ),
        // Conditions: ValidateAttribute.
        (
            rule("{when: [{key: source.trustDomain, values: [cluster.local, '*.corp'], notValues: [bad.td]}]}"),
            Accepted,
        ),
        (
            rule("{when: [{key: source.trustDomain, values: ['a*b']}]}"),
            Error(InvalidValue, "spec.rules[0].when[0]"),
        ),
        (
            rule("{when: [{key: source.serviceAccount, values: [shop/web, api]}]}"),
            Accepted,
        ),
        (
            rule("{when: [{key: source.serviceAccount, values: ['web*']}]}"),
            Error(InvalidValue, "spec.rules[0].when[0]"),
        ),
        (rule("{when: [{key: destination.port, values: ['8080']}]}"), Accepted),
        (
            rule("{when: [{key: destination.port, values: [http]}]}"),
            Error(InvalidValue, "spec.rules[0].when[0]"),
        ),
        (rule("{when: [{key: destination.ip, values: [10.0.0.1]}]}"), Accepted),
        (
            rule("{when: [{key: destination.ip, values: [ten]}]}"),
            Error(InvalidValue, "spec.rules[0].when[0]"),
        ),
        (
            rule("{when: [{key: 'experimental.envoy.filters.a.b[c]', values: [x]}]}"),
            Accepted,
        ),
        (
            rule("{when: [{key: 'experimental.envoy.filters.a.b', values: [x]}]}"),
            Error(InvalidValue, "spec.rules[0].when[0]"),
        ),
        (
            rule("{when: [{key: 'request.headers[]', values: [x]}]}"),
            Error(InvalidValue, "spec.rules[0].when[0]"),
        ),
        (
            rule("{when: [{key: 'request.headers[x-a]', values: ['']}]}"),
            Error(InvalidValue, "spec.rules[0].when[0]"),
        ),
        (
            rule("{when: [{key: destination.namespace, values: [x]}]}"),
            Error(InvalidValue, "spec.rules[0].when[0]"),
        ),
        (
            rule("{when: [{key: 'destination.labels[app]', values: [x]}]}"),
            Error(InvalidValue, "spec.rules[0].when[0]"),
        ),
        (
            rule("{when: [{key: destination.user, values: [x]}]}"),
            Error(InvalidValue, "spec.rules[0].when[0]"),
        ),
        (
            rule("{when: [{key: request.color, values: [x]}]}"),
            Error(InvalidValue, "spec.rules[0].when[0]"),
        ),
        (
            rule("{when: [{key: '', values: [x]}]}"),
            Error(Required, "spec.rules[0].when[0].key"),
        ),
        (
            rule("{when: [{values: [x]}]}"),
            Error(Required, "spec.rules[0].when[0].key"),
        ),
        (
            rule("{when: [{key: source.ip}]}"),
            Error(InvalidValue, "spec.rules[0].when[0]"),
        ),
    ]);
}

/// A resource with `annotations` in its metadata.
fn annotated(kind: &str, api: &str, annotations: &str, spec: &str) -> String {
    format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: r, namespace: shop, annotations: {annotations}}}\nspec: {spec}\n")
}

#[test]
fn istio_annotations() {
    // validation.go, validateMetadata and checkDryRunAnnotation.
    let sec = "security.istio.io/v1";
    run(&[
        (
            annotated(
                "AuthorizationPolicy",
                sec,
                "{istio.io/dry-run: 'true'}",
                "{action: DENY, rules: [{}]}",
            ),
            Warning(NotEnforced, "metadata.annotations.istio.io/dry-run"),
        ),
        (
            annotated(
                "AuthorizationPolicy",
                sec,
                "{istio.io/dry-run: 'maybe'}",
                "{rules: [{}]}",
            ),
            Error(InvalidValue, "metadata.annotations.istio.io/dry-run"),
        ),
        (
            annotated(
                "AuthorizationPolicy",
                sec,
                "{istio.io/dry-run: 'true'}",
                "{action: AUDIT, rules: [{}]}",
            ),
            Error(InvalidValue, "metadata.annotations.istio.io/dry-run"),
        ),
        (
            annotated("PeerAuthentication", sec, "{istio.io/dry-run: 'true'}", "{}"),
            Error(InvalidValue, "metadata.annotations.istio.io/dry-run"),
        ),
        (
            annotated("PeerAuthentication", sec, "{internal.istio.io/parents: x}", "{}"),
            Error(InvalidValue, "metadata.annotations.internal.istio.io/parents"),
        ),
        (annotated("PeerAuthentication", sec, "{team: payments}", "{}"), Accepted),
    ]);
}
