//! VirtualService: validation.go `ValidateVirtualService`, `validateGatewayNames`,
//! `validateHTTPRedirect`, `validateHTTPRewrite`, `validateHTTPDirectResponse`,
//! `validateCORSPolicy`, `validateHTTPFaultInjection`, `validateStringMatch`,
//! `validateTLSMatch`, `validateSniHost`, `validateTCPMatch`, `validateDestination`,
//! `analyzeUnreachableHTTPRules`; virtualservice.go `validateHTTPRoute`,
//! `validateHTTPRouteConflict`, `validateHTTPRouteMatchRequest`,
//! `validateAuthorityRewrite`; header_value_validator.go; agent `ValidateHTTPRetry`,
//! `ValidateDuration`; CRD rules of VirtualService.

use strait_config::Code::*;

use super::*;

const GW: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: shop}\nspec: {servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}\n---\n";

/// A VirtualService for app.example.com on Gateway `gw` with one http rule.
fn http(rule: &str) -> String {
    format!(
        "{GW}{}",
        resource(
            "networking.istio.io/v1",
            "VirtualService",
            &format!("{{hosts: [app.example.com], gateways: [gw], http: [{rule}]}}")
        )
    )
}

/// The same, bound to the mesh.
fn mesh(rule: &str) -> String {
    resource(
        "networking.istio.io/v1",
        "VirtualService",
        &format!("{{hosts: [backend], http: [{rule}]}}"),
    )
}

/// A VirtualService with `spec` and the Gateway.
fn vs(spec: &str) -> String {
    format!("{GW}{}", resource("networking.istio.io/v1", "VirtualService", spec))
}

const TO: &str = "route: [{destination: {host: backend}}]";

#[test]
fn virtual_service_hosts_gateways_scope() {
    run(&[
        (http(&format!("{{{TO}}}")), Accepted),
        // Overlapping hosts are duplicates.
        (
            vs(&format!(
                "{{hosts: ['*.example.com', '*.app.example.com'], gateways: [gw], http: [{{{TO}}}]}}"
            )),
            Error(DuplicateHost, "spec.hosts[1]"),
        ),
        (
            vs(&format!(
                "{{hosts: [a.example.com, b.example.com], gateways: [gw], http: [{{{TO}}}]}}"
            )),
            Accepted,
        ),
        // Gateway names: namespace/name labels, or a legacy FQDN (warned).
        (
            vs(&format!(
                "{{hosts: [a.example.com], gateways: [shop/gw], http: [{{{TO}}}]}}"
            )),
            Accepted,
        ),
        (
            vs(&format!(
                "{{hosts: [a.example.com], gateways: [gw.shop.svc.cluster.local], http: [{{{TO}}}]}}"
            )),
            Warning(InvalidValue, "spec.gateways[0]"),
        ),
        (
            vs(&format!(
                "{{hosts: [a.example.com], gateways: ['shop/gw_1'], http: [{{{TO}}}]}}"
            )),
            Error(InvalidValue, "spec.gateways[0]"),
        ),
        (
            vs(&format!(
                "{{hosts: [a.example.com], gateways: [gw], exportTo: [a, a], http: [{{{TO}}}]}}"
            )),
            Error(Conflict, "spec.exportTo[1]"),
        ),
        // JWT claim routing only at gateways.
        (
            http(&format!(
                "{{match: [{{headers: {{'@request.auth.claims.group': {{exact: admin}}}}}}], {TO}}}"
            )),
            Accepted,
        ),
        (
            mesh(&format!(
                "{{match: [{{headers: {{'@request.auth.claims.group': {{exact: admin}}}}}}], {TO}}}"
            )),
            Error(InvalidValue, "spec.http[0].match[0].headers.@request.auth.claims.group"),
        ),
        // A rule after a catch-all is never used; a repeated match neither.
        (
            http(&format!("{{{TO}}}, {{match: [{{uri: {{prefix: /a}}}}], {TO}}}")),
            Warning(InvalidValue, "spec.http[1]"),
        ),
        (
            http(&format!(
                "{{match: [{{uri: {{prefix: /a}}}}], {TO}}}, {{match: [{{uri: {{prefix: /a}}, name: again}}], {TO}}}"
            )),
            Warning(InvalidValue, "spec.http[1].match[0]"),
        ),
    ]);
}

#[test]
fn virtual_service_http_rules() {
    run(&[
        // Redirects.
        (http("{redirect: {uri: /new, redirectCode: 308}}"), Accepted),
        (http("{redirect: {uri: /new, redirectCode: 300}}"), Accepted),
        (http("{redirect: {uri: /new, redirectCode: 200}}"), Error(InvalidValue, "spec.http[0].redirect.redirectCode")),
        (http("{redirect: {}}"), Error(Required, "spec.http[0].redirect")),
        (http("{redirect: {uri: /a, prefixRewrite: /b}}"), Error(Conflict, "spec.http[0].redirect")),
        (
            http("{match: [{uri: {exact: /a}}], redirect: {prefixRewrite: /b}}"),
            Error(Conflict, "spec.http[0].redirect.prefixRewrite"),
        ),
        (
            http("{match: [{uri: {prefix: /a}}], redirect: {prefixRewrite: /b}}"),
            Warning(NotEnforced, "spec.http[0].redirect.prefixRewrite"),
        ),
        (http("{redirect: {scheme: ftp}}"), Error(InvalidValue, "spec.http[0].redirect.scheme")),
        (http("{redirect: {authority: b, port: 70000}}"), Error(InvalidValue, "spec.http[0].redirect.port")),
        (http("{redirect: {uri: /a}, fault: {abort: {httpStatus: 500}}}"), Error(Conflict, "spec.http[0].fault")),
        // Direct responses.
        (http("{directResponse: {status: 600}}"), Accepted),
        (http("{directResponse: {status: 601}}"), Error(InvalidValue, "spec.http[0].directResponse.status")),
        (
            http(&format!("{{directResponse: {{status: 200, body: {{string: {}}}}}}}", "x".repeat(200 * 1024))),
            Warning(InvalidValue, "spec.http[0].directResponse.body"),
        ),
        (
            http(&format!("{{directResponse: {{status: 200, body: {{string: {}}}}}}}", "x".repeat(1024 * 1024 + 1))),
            Error(InvalidValue, "spec.http[0].directResponse.body"),
        ),
        (http("{directResponse: {status: 503}, fault: {delay: {fixedDelay: 1s}}}"), Error(Conflict, "spec.http[0].fault")),
        // Rewrites.
        (http(&format!("{{rewrite: {{}}, {TO}}}")), Error(Required, "spec.http[0].rewrite")),
        (http(&format!("{{rewrite: {{authority: b.example.com}}, {TO}}}")), Accepted),
        (
            http(&format!("{{rewrite: {{authority: b}}, headers: {{request: {{set: {{host: c}}}}}}, {TO}}}")),
            Error(Conflict, "spec.http[0].headers.request"),
        ),
        // Header operations.
        (http(&format!("{{headers: {{request: {{set: {{':authority': b, x-a: '%HOSTNAME%'}}}}}}, {TO}}}")), Accepted),
        (
            http(&format!("{{headers: {{request: {{set: {{':path': /x}}}}}}, {TO}}}")),
            Error(InvalidValue, "spec.http[0].headers.request.set.:path"),
        ),
        (
            http(&format!("{{headers: {{response: {{set: {{host: b}}}}}}, {TO}}}")),
            Error(InvalidValue, "spec.http[0].headers.response.set.host"),
        ),
        (
            http(&format!("{{headers: {{request: {{remove: [host]}}}}, {TO}}}")),
            Error(InvalidValue, "spec.http[0].headers.request.remove[0]"),
        ),
        (
            http(&format!("{{headers: {{request: {{add: {{x-a: 'abc%123'}}}}}}, {TO}}}")),
            Error(InvalidValue, "spec.http[0].headers.request.add.x-a"),
        ),
        (
            http("{route: [{destination: {host: backend}, headers: {response: {set: {x-b: '100%'}}}}]}"),
            Error(InvalidValue, "spec.http[0].route[0].headers.response.set.x-b"),
        ),
        // Matches.
        (http(&format!("{{match: [{{uri: {{prefix: ''}}}}], {TO}}}")), Accepted),
        (http(&format!("{{match: [{{method: {{prefix: ''}}}}], {TO}}}")), Error(InvalidValue, "spec.http[0].match[0].method.prefix")),
        (http(&format!("{{match: [{{headers: {{x-a: {{regex: ''}}}}}}], {TO}}}")), Error(InvalidValue, "spec.http[0].match[0].headers.x-a.regex")),
        (
            http(&format!("{{match: [{{uri: {{regex: '{}'}}}}], {TO}}}", "a".repeat(1025))),
            Error(InvalidRegex, "spec.http[0].match[0].uri.regex"),
        ),
        (http(&format!("{{match: [{{withoutHeaders: {{x-a: {{regex: '*'}}}}}}], {TO}}}")), Accepted),
        // Istio takes pseudo-headers in matches; Strait's matcher reads real headers
        // only, so it refuses them rather than match what was not meant.
        (
            http(&format!("{{match: [{{headers: {{':method': {{exact: GET}}}}}}], {TO}}}")),
            Error(InvalidValue, "spec.http[0].match[0].headers.:method"),
        ),
        (
            mesh(&format!("{{match: [{{sourceNamespace: Bad_NS}}], {TO}}}")),
            Error(InvalidValue, "spec.http[0].match[0].sourceNamespace"),
        ),
        (
            mesh(&format!("{{match: [{{sourceLabels: {{app: 'a b'}}}}], {TO}}}")),
            Error(InvalidValue, "spec.http[0].match[0].sourceLabels.app"),
        ),
        // Destinations.
        (http("{route: [{destination: {host: backend, subset: V_1}}]}"), Error(InvalidValue, "spec.http[0].route[0].destination.subset")),
        // Timeouts and retries.
        (http(&format!("{{timeout: 0s, {TO}}}")), Error(InvalidValue, "spec.http[0].timeout")),
        (http(&format!("{{timeout: 1500us, {TO}}}")), Error(InvalidValue, "spec.http[0].timeout")),
        (http(&format!("{{retries: {{attempts: 0, perTryTimeout: 1s}}, {TO}}}")), Error(Conflict, "spec.http[0].retries")),
        (http(&format!("{{retries: {{retryOn: 5xx}}, {TO}}}")), Error(Conflict, "spec.http[0].retries")),
        (http(&format!("{{retries: {{attempts: 3, backoff: 25ms}}, {TO}}}")), Warning(NotEnforced, "spec.http[0].retries.backoff")),
        (http(&format!("{{retries: {{attempts: 3, backoff: 0s}}, {TO}}}")), Error(InvalidValue, "spec.http[0].retries.backoff")),
        // Faults, mirrors, CORS.
        (http(&format!("{{fault: {{}}, {TO}}}")), Error(Required, "spec.http[0].fault")),
        (
            http(&format!("{{fault: {{abort: {{httpStatus: 503, percentage: {{value: 0.00001}}}}}}, {TO}}}")),
            Error(InvalidValue, "spec.http[0].fault.abort.percentage"),
        ),
        (http(&format!("{{mirror: {{host: copy}}, mirrorPercent: 10, {TO}}}")), Warning(InvalidValue, "spec.http[0].mirrorPercent")),
        (http(&format!("{{mirror: {{host: copy}}, mirror_percent: 10, {TO}}}")), Warning(InvalidValue, "spec.http[0].mirrorPercent")),
        (
            http(&format!("{{corsPolicy: {{allowOrigins: [{{exact: 'https://a.example.com'}}], allowMethods: [GET, POST], allowHeaders: ['*', x-a], maxAge: 24h}}, {TO}}}")),
            Accepted,
        ),
        (http(&format!("{{corsPolicy: {{allowOrigins: [{{exact: ''}}]}}, {TO}}}")), Error(InvalidValue, "spec.http[0].corsPolicy.allowOrigins[0]")),
        (http(&format!("{{corsPolicy: {{allowMethods: [get]}}, {TO}}}")), Error(InvalidValue, "spec.http[0].corsPolicy.allowMethods[0]")),
        (http(&format!("{{corsPolicy: {{allowHeaders: ['x a']}}, {TO}}}")), Error(InvalidValue, "spec.http[0].corsPolicy.allowHeaders[0]")),
        (http(&format!("{{corsPolicy: {{maxAge: 1.5s}}, {TO}}}")), Error(InvalidValue, "spec.http[0].corsPolicy.maxAge")),
    ]);
}

#[test]
fn virtual_service_tls_and_tcp_rules() {
    let tls = |sni: &str| {
        vs(&format!(
            "{{hosts: ['*.example.com'], gateways: [gw], tls: [{{match: [{{sniHosts: [{sni}]}}], route: [{{destination: {{host: backend}}}}]}}]}}"
        ))
    };
    run(&[
        (tls("a.example.com"), Accepted),
        (tls("a.example.org"), Error(InvalidValue, "spec.tls[0].match[0].sniHosts[0]")),
        (tls("10.0.0.1"), Warning(InvalidValue, "spec.tls[0].match[0].sniHosts[0]")),
        (
            vs("{hosts: [db.example.com], gateways: [gw], tcp: [{match: [{destinationSubnets: [10.0.0.0/8, 10.1.2.3]}], route: [{destination: {host: db}}]}]}"),
            Accepted,
        ),
        (
            vs("{hosts: [db.example.com], gateways: [gw], tcp: [{match: [{destinationSubnets: [10.0.0.0/40]}], route: [{destination: {host: db}}]}]}"),
            Error(InvalidValue, "spec.tcp[0].match[0].destinationSubnets[0]"),
        ),
        (
            vs("{hosts: [db.example.com], gateways: [gw], tcp: [{match: [{gateways: ['a/b/c']}], route: [{destination: {host: db}}]}]}"),
            Error(InvalidValue, "spec.tcp[0].match[0].gateways[0]"),
        ),
    ]);
}
