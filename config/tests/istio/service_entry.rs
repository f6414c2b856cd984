//! ServiceEntry: validation.go `ValidateServiceEntry`, `ValidateAlphaWorkloadSelector`,
//! `validateWorkloadEntry` (endpoints), `ValidatePortName`, `ValidateProtocol`,
//! `validateExportTo`; agent `ValidateWildcardDomain`, `ValidatePartialWildCard`,
//! `ValidateIPSubnet`, `ValidateFQDN`, `ValidatePort`; pilot serviceentry
//! `shouldV2AutoAllocateIPFromPieces`; CRD rules of ServiceEntry.

use strait_config::Code::*;

use super::*;

fn se(spec: &str) -> String {
    resource("networking.istio.io/v1", "ServiceEntry", spec)
}

/// A ServiceEntry for api.example.com:443 (TLS) with `resolution` and `extra` fields.
fn tls(resolution: &str, extra: &str) -> String {
    se(&format!(
        "{{hosts: [api.example.com], ports: [{{number: 443, name: tls, protocol: TLS}}], resolution: {resolution}{extra}}}"
    ))
}

#[test]
fn service_entry_hosts_addresses_ports() {
    run(&[
        (tls("DNS", ""), Accepted),
        (se("{ports: [{number: 80, name: http}]}"), Error(Required, "spec.hosts")),
        (se("{hosts: ['*'], resolution: NONE}"), Error(InvalidValue, "spec.hosts[0]")),
        (se("{hosts: ['bad host'], resolution: NONE}"), Error(InvalidValue, "spec.hosts[0]")),
        (
            se("{hosts: ['*api.example.com'], resolution: NONE, ports: [{number: 443, name: tls, protocol: TLS}]}"),
            Warning(InvalidValue, "spec.hosts[0]"),
        ),
        // Wildcard hosts with DNS resolution and no endpoints: nothing to resolve.
        (tls("DNS", "").replace("api.example.com", "'*.example.com'"), Error(InvalidValue, "spec.hosts[0]")),
        (tls("DNS_ROUND_ROBIN", "").replace("api.example.com", "'*.example.com'"), Error(InvalidValue, "spec.hosts[0]")),
        (
            tls("DNS", ", endpoints: [{address: lb.example.com}]").replace("api.example.com", "'*.example.com'"),
            Accepted,
        ),
        // addresses: IPs, CIDRs only for NONE and STATIC.
        (tls("NONE", ", addresses: [10.1.0.0/16, 10.2.0.1]"), Accepted),
        (tls("DNS", ", addresses: [10.1.0.0/16]"), Error(InvalidValue, "spec.addresses[0]")),
        (tls("STATIC", ", addresses: [10.1.0.0/33], endpoints: [{address: 10.0.0.1}]"), Error(InvalidValue, "spec.addresses[0]")),
        (tls("NONE", ", addresses: [not-an-ip]"), Error(InvalidValue, "spec.addresses[0]")),
        // Ports: unique names and numbers, names as labels, known protocols, ranges.
        (
            se("{hosts: [a.example.com], resolution: DNS, ports: [{number: 80, name: http, protocol: HTTP}, {number: 8080, name: http, protocol: HTTP}]}"),
            Error(Conflict, "spec.ports[1].name"),
        ),
        (
            se("{hosts: [a.example.com], resolution: DNS, ports: [{number: 80, name: http, protocol: HTTP}, {number: 80, name: web, protocol: HTTP}]}"),
            Error(Conflict, "spec.ports[1].number"),
        ),
        (se("{hosts: [a.example.com], resolution: DNS, ports: [{number: 80, protocol: HTTP}]}"), Error(Required, "spec.ports[0].name")),
        (se("{hosts: [a.example.com], resolution: DNS, ports: [{name: h, protocol: HTTP}]}"), Error(Required, "spec.ports[0].number")),
        (se("{hosts: [a.example.com], resolution: DNS, ports: [{number: 80, name: Http_1, protocol: HTTP}]}"), Error(InvalidValue, "spec.ports[0].name")),
        (se("{hosts: [a.example.com], resolution: DNS, ports: [{number: 0, name: h, protocol: HTTP}]}"), Error(InvalidValue, "spec.ports[0].number")),
        (
            se("{hosts: [a.example.com], resolution: DNS, ports: [{number: 80, name: h, protocol: HTTP, targetPort: 70000}]}"),
            Error(InvalidValue, "spec.ports[0].targetPort"),
        ),
        (
            se("{hosts: [a.example.com], resolution: DNS, ports: [{number: 80, name: h, protocol: HTTP, targetPort: 8080}]}"),
            Accepted,
        ),
        (se("{hosts: [a.example.com], resolution: DNS, ports: [{number: 80, name: h, protocol: SMTP}]}"), Error(InvalidValue, "spec.ports[0].protocol")),
        (se("{hosts: [a.example.com], resolution: DNS, ports: [{number: 6379, name: redis, protocol: REDIS}]}"), Accepted),
        // Without a VIP (resolution NONE, or opted out), TCP ports want addresses: a warning.
        (se("{hosts: [a.example.com], resolution: NONE, ports: [{number: 5432, name: pg, protocol: TCP}]}"), Warning(Required, "spec.ports[0].protocol")),
        // Several hosts need HTTP or TLS ports to be told apart.
        (
            se("{hosts: [a.example.com, b.example.com], resolution: DNS, ports: [{number: 5432, name: pg, protocol: TCP}]}"),
            Error(Conflict, "spec.ports[0].protocol"),
        ),
        (
            se("{hosts: [a.example.com, b.example.com], resolution: DNS, ports: [{number: 5432, name: pg}]}"),
            Error(Conflict, "spec.ports[0].protocol"),
        ),
        (
            se("{hosts: [a.example.com, b.example.com], resolution: NONE, ports: [{number: 443, name: tls, protocol: TLS}]}"),
            Accepted,
        ),
        (tls("DNS", ", location: MESH_INTERNAL"), Accepted),
        (tls("DNS", ", location: OUTSIDE"), Error(InvalidValue, "spec.location")),
        (tls("SOMETIMES", ""), Error(InvalidValue, "spec.resolution")),
        (tls("DNS", ", exportTo: ['~']"), Accepted),
        (tls("DNS", ", exportTo: ['~', '.']"), Error(Conflict, "spec.exportTo")),
    ]);
}

#[test]
fn service_entry_endpoints_and_selectors() {
    run(&[
        (tls("STATIC", ", endpoints: [{address: 10.0.0.1}, {address: 10.0.0.2, ports: {tls: 8443}}]"), Accepted),
        (tls("STATIC", ", endpoints: [{address: not-an-ip}]"), Error(InvalidValue, "spec.endpoints[0].address")),
        (tls("STATIC", ", endpoints: [{ports: {tls: 8443}}]"), Error(Required, "spec.endpoints[0].address")),
        (tls("STATIC", ", endpoints: [{address: 10.0.0.1, ports: {http: 8080}}]"), Error(ReferenceNotFound, "spec.endpoints[0].ports.http")),
        (tls("STATIC", ", endpoints: [{address: 10.0.0.1, ports: {tls: 0}}]"), Error(InvalidValue, "spec.endpoints[0].ports.tls")),
        (tls("STATIC", ", endpoints: [{address: 'unix:///var/run/a.sock'}]"), Accepted),
        (tls("STATIC", ", endpoints: [{address: 'unix://a.sock'}]"), Error(InvalidValue, "spec.endpoints[0].address")),
        (
            se("{hosts: [a.example.com], resolution: STATIC, ports: [{number: 80, name: a, protocol: HTTP}, {number: 81, name: b, protocol: HTTP}], endpoints: [{address: 'unix:///a.sock'}]}"),
            Error(InvalidValue, "spec.endpoints[0].address"),
        ),
        (tls("STATIC", ", endpoints: [{address: 10.0.0.1, labels: {app: 'a b'}}]"), Error(InvalidValue, "spec.endpoints[0].labels.app")),
        (tls("DNS", ", endpoints: [{address: lb.example.com}, {address: 10.0.0.1}]"), Accepted),
        (tls("DNS", ", endpoints: [{address: 'lb example'}]"), Error(InvalidValue, "spec.endpoints[0].address")),
        (tls("DNS", ", endpoints: [{address: 'unix:///a.sock'}]"), Error(InvalidValue, "spec.endpoints[0].address")),
        (tls("DNS_ROUND_ROBIN", ", endpoints: [{address: a.example.com}]"), Accepted),
        (
            tls("DNS_ROUND_ROBIN", ", endpoints: [{address: a.example.com}, {address: b.example.com}]"),
            Error(InvalidValue, "spec.endpoints"),
        ),
        (tls("NONE", ", endpoints: [{address: 10.0.0.1}]"), Error(Conflict, "spec.endpoints")),
        (tls("NONE", ", endpoints: []"), Error(Conflict, "spec.endpoints")),
        // workloadSelector: not with endpoints, labels without wildcards.
        (tls("STATIC", ", workloadSelector: {labels: {app: vm}}"), Accepted),
        (
            tls("STATIC", ", workloadSelector: {labels: {app: vm}}, endpoints: [{address: 10.0.0.1}]"),
            Error(Conflict, "spec"),
        ),
        (tls("STATIC", ", workloadSelector: {labels: {app: 'v*'}}"), Error(InvalidValue, "spec.workloadSelector.labels.app")),
        (tls("STATIC", ", workloadSelector: {labels: {}}"), Warning(InvalidValue, "spec.workloadSelector")),
        (tls("NONE", ", workloadSelector: {labels: {app: vm}}"), Warning(Conflict, "spec.workloadSelector")),
        // DYNAMIC_DNS: wildcard hosts, no addresses or endpoints, HTTP/TLS ports.
        (
            tls("DYNAMIC_DNS", "").replace("api.example.com", "'*.example.com'"),
            Warning(NotEnforced, "spec.resolution"),
        ),
        (tls("DYNAMIC_DNS", ""), Error(InvalidValue, "spec.hosts[0]")),
        (
            tls("DYNAMIC_DNS", ", addresses: [10.0.0.1]").replace("api.example.com", "'*.example.com'"),
            Error(Conflict, "spec.addresses"),
        ),
        (
            se("{hosts: ['*.example.com'], resolution: DYNAMIC_DNS, ports: [{number: 5432, name: pg, protocol: TCP}]}"),
            Error(InvalidValue, "spec.ports[0].protocol"),
        ),
    ]);
}
