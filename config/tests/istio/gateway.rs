//! Gateway: validation.go `ValidateGateway`, `validateServer`, `validateServerPort`,
//! `validateServerBind`, `validateTLSOptions`, `ValidateUnixAddress`; agent
//! `ValidateNamespaceSlashWildcardHostname`; pkg/config/protocol `Parse`;
//! pkg/config/security `IsValidCipherSuite`; CRD rules of Gateway.

use strait_config::Code::*;

use super::*;

/// A Gateway with one server: `port` (a flow mapping) and `rest` fields.
fn server(port: &str, rest: &str) -> String {
    resource(
        "networking.istio.io/v1",
        "Gateway",
        &format!("{{servers: [{{port: {port}, hosts: [app.example.com]{rest}}}]}}"),
    )
}

fn https(tls: &str) -> String {
    server("{number: 443, name: https, protocol: HTTPS}", &format!(", tls: {tls}"))
}

const HTTP: &str = "{number: 80, name: http, protocol: HTTP}";

#[test]
fn gateway_servers_and_ports() {
    run(&[
        (server(HTTP, ""), Accepted),
        (
            resource("networking.istio.io/v1", "Gateway", "{servers: []}"),
            Error(Required, "spec.servers"),
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: my.gateway}\nspec: {servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}\n".to_string(),
            Error(InvalidValue, "metadata.name"),
        ),
        (
            resource(
                "networking.istio.io/v1",
                "Gateway",
                "{servers: [{port: {number: 80, name: web, protocol: HTTP}, hosts: [a.example.com]}, {port: {number: 8080, name: web, protocol: HTTP}, hosts: [b.example.com]}]}",
            ),
            Error(Conflict, "spec.servers[1].port.name"),
        ),
        (server("{number: 80, protocol: HTTP}", ""), Error(Required, "spec.servers[0].port.name")),
        (server("{number: 80, name: http, protocol: HTTP, targetPort: 8080}", ""), Error(InvalidValue, "spec.servers[0].port.targetPort")),
        (server("{number: 0, name: http, protocol: HTTP}", ""), Error(InvalidValue, "spec.servers[0].port.number")),
        (server("{number: 6379, name: redis, protocol: REDIS}", ""), Accepted),
        (server("{number: 3306, name: mysql, protocol: mysql}", ""), Accepted),
        (server("{number: 80, name: smtp, protocol: SMTP}", ""), Error(InvalidValue, "spec.servers[0].port.protocol")),
        (
            resource("networking.istio.io/v1", "Gateway", "{servers: [{hosts: [a.example.com]}]}"),
            Error(Required, "spec.servers[0].port"),
        ),
        // bind: an IP, or a unix socket with port 0.
        (server(HTTP, ", bind: 10.0.0.1"), Accepted),
        (server(HTTP, ", bind: localhost"), Error(InvalidValue, "spec.servers[0].bind")),
        (server("{number: 0, name: uds, protocol: HTTP}", ", bind: 'unix:///var/run/gw.sock'"), Accepted),
        (server(HTTP, ", bind: 'unix:///var/run/gw.sock'"), Error(InvalidValue, "spec.servers[0].port.number")),
        (server("{number: 0, name: uds, protocol: HTTP}", ", bind: 'unix://rel.sock'"), Error(InvalidValue, "spec.servers[0].bind")),
        // Hosts (existing rules).
        (server(HTTP, "").replace("[app.example.com]", "[]"), Error(Required, "spec.servers[0].hosts")),
        (server(HTTP, "").replace("[app.example.com]", "['*.ex*.com']"), Error(InvalidValue, "spec.servers[0].hosts[0]")),
    ]);
}

#[test]
fn gateway_tls() {
    run(&[
        (https("{mode: SIMPLE, credentialName: app-cert}"), Accepted),
        (https("{mode: SIMPLE, credentialNames: [rsa, ecdsa]}"), Accepted),
        (https("{mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}"), Accepted),
        (server("{number: 443, name: https, protocol: HTTPS}", ""), Error(Required, "spec.servers[0].tls")),
        (https("{mode: SIMPLE}"), Error(Required, "spec.servers[0].tls")),
        (https("{mode: SIMPLE, serverCertificate: /c.pem}"), Error(Required, "spec.servers[0].tls.privateKey")),
        (https("{mode: SIMPLE, privateKey: /k.pem}"), Error(Required, "spec.servers[0].tls.serverCertificate")),
        (https("{mode: SIMPLE, credentialName: a, credentialNames: [b]}"), Error(Conflict, "spec.servers[0].tls")),
        (
            https("{mode: SIMPLE, credentialNames: [b], tlsCertificates: [{serverCertificate: /c, privateKey: /k}]}"),
            Error(Conflict, "spec.servers[0].tls"),
        ),
        (
            https("{mode: SIMPLE, credentialName: a, serverCertificate: /c.pem, privateKey: /k.pem}"),
            Error(Conflict, "spec.servers[0].tls"),
        ),
        (
            https("{mode: SIMPLE, tlsCertificates: [{serverCertificate: /c.pem}]}"),
            Error(Required, "spec.servers[0].tls.tlsCertificates[0].privateKey"),
        ),
        (
            https("{mode: SIMPLE, tlsCertificates: [{serverCertificate: /a, privateKey: /a}, {serverCertificate: /b, privateKey: /b}, {serverCertificate: /c, privateKey: /c}]}"),
            Warning(InvalidValue, "spec.servers[0].tls.tlsCertificates"),
        ),
        // MUTUAL needs a client CA (from a file, or the credential).
        (https("{mode: MUTUAL, credentialName: app-cert}"), Accepted),
        (https("{mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem}"), Accepted),
        (https("{mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}"), Error(Required, "spec.servers[0].tls.caCertificates")),
        (
            https("{mode: OPTIONAL_MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}"),
            Error(Required, "spec.servers[0].tls.caCertificates"),
        ),
        // CRLs: not with credentialName, not with SIMPLE.
        (https("{mode: MUTUAL, credentialName: a, caCrl: /crl.pem}"), Error(Conflict, "spec.servers[0].tls.caCrl")),
        (https("{mode: SIMPLE, serverCertificate: /c, privateKey: /k, caCrl: /crl.pem}"), Error(Conflict, "spec.servers[0].tls.caCrl")),
        // ISTIO_MUTUAL takes no certificates.
        (https("{mode: ISTIO_MUTUAL}"), Accepted),
        (https("{mode: ISTIO_MUTUAL, credentialName: a}"), Error(Conflict, "spec.servers[0].tls.credentialName")),
        // Passthrough ignores certificates: a warning.
        (
            server("{number: 443, name: tls, protocol: TLS}", ", tls: {mode: PASSTHROUGH, credentialName: a}"),
            Warning(InvalidValue, "spec.servers[0].tls"),
        ),
        (https("{mode: FAST}"), Error(InvalidValue, "spec.servers[0].tls.mode")),
        (https("{mode: SIMPLE, credentialName: a, minProtocolVersion: TLSV1_4}"), Error(InvalidValue, "spec.servers[0].tls.minProtocolVersion")),
        (
            https("{mode: SIMPLE, credentialName: a, minProtocolVersion: TLSV1_1}"),
            Warning(InvalidValue, "spec.servers[0].tls.minProtocolVersion"),
        ),
        (
            https("{mode: SIMPLE, credentialName: a, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, NOT-A-SUITE]}"),
            Warning(InvalidValue, "spec.servers[0].tls.cipherSuites"),
        ),
        // Newer fields parse, and say they are not enforced.
        (
            https("{mode: SIMPLE, credentialName: a, alpnProtocols: [h2]}"),
            Warning(NotEnforced, "spec.servers[0].tls.alpnProtocols"),
        ),
        (
            https("{mode: MUTUAL, credentialName: a, caCertCredentialName: ca}"),
            Warning(NotEnforced, "spec.servers[0].tls.caCertCredentialName"),
        ),
        // Plain servers: tls only for an HTTP redirect.
        (server(HTTP, ", tls: {httpsRedirect: true}"), Accepted),
        (server(HTTP, ", tls: {httpsRedirect: true, mode: SIMPLE, credentialName: a}"), Error(Conflict, "spec.servers[0].tls")),
        (server(HTTP, ", tls: {serverCertificate: /c.pem}"), Error(Conflict, "spec.servers[0].tls")),
        (server("{number: 5432, name: pg, protocol: TCP}", ", tls: {mode: SIMPLE, credentialName: a}"), Error(Conflict, "spec.servers[0].tls")),
        (
            server("{number: 5432, name: pg, protocol: TCP}", ", tls: {httpsRedirect: true}"),
            Error(Conflict, "spec.servers[0].tls"),
        ),
    ]);
}
