//! Table tests of validation: each invalid snippet gives one error with the
//! expected code and field path.

use strait_config::bundle::{load_text, Loaded};
use strait_config::pipeline::checks;
use strait_config::{Code, Diagnostic};

fn diagnostics(yaml: &str) -> Vec<Diagnostic> {
    let mut loaded = Loaded::default();
    load_text(&mut loaded, "t.yaml", yaml);
    checks(&loaded)
}

const GW: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n---\n";

fn vs(http: &str) -> String {
    format!("{GW}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs}}\nspec:\n  hosts: [app.example.com]\n  gateways: [gw]\n  http:\n{http}")
}

fn tcp(route: &str) -> String {
    format!("{GW}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs}}\nspec:\n  hosts: [app.example.com]\n  gateways: [gw]\n  tcp:\n  - route:\n{route}")
}

fn dr(spec: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: dr}}\nspec:\n  host: backend\n{spec}")
}

#[test]
fn each_invalid_snippet_gives_the_expected_error() {
    let dest = "    route: [{destination: {host: backend}}]\n";
    let cases: Vec<(String, Code, &str)> = vec![
        (vs(&format!("  - match: [{{uri: {{exact: /a, prefix: /a}}}}]\n{dest}")), Code::Conflict, "spec.http[0].match[0].uri"),
        (vs(&format!("  - match: [{{headers: {{X-User: {{exact: a}}}}}}]\n{dest}")), Code::InvalidValue, "spec.http[0].match[0].headers.X-User"),
        (vs(&format!("  - match: [{{queryParams: {{q: {{regex: \"[\"}}}}}}]\n{dest}")), Code::InvalidRegex, "spec.http[0].match[0].queryParams.q.regex"),
        (vs("  - redirect: {uri: /x, redirectCode: 200}\n"), Code::InvalidValue, "spec.http[0].redirect.redirectCode"),
        (vs("  - directResponse: {status: 99}\n"), Code::InvalidValue, "spec.http[0].directResponse.status"),
        (vs("  - directResponse: {status: 200}\n    redirect: {uri: /x}\n"), Code::Conflict, "spec.http[0]"),
        (vs("  - route: [{destination: {host: \"\"}}]\n"), Code::Required, "spec.http[0].route[0].destination.host"),
        (vs("  - name: nothing\n"), Code::Required, "spec.http[0]"),
        (
            format!("{GW}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: m}}\nspec:\n  hosts: [\"*\"]\n  http:\n{dest}").replace("http:\n    route", "http:\n  - route"),
            Code::InvalidValue,
            "spec.hosts[0]",
        ),
        (
            format!("{GW}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: d}}\nspec:\n  hosts: [a.example.com, A.example.com]\n  gateways: [gw]\n  http:\n  - {}", &dest[4..]),
            Code::DuplicateHost,
            "spec.hosts[1]",
        ),
        (format!("{GW}{GW}"), Code::DuplicateResource, "metadata.name"),
        (
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: SIMPLE}\n".into(),
            Code::Required,
            "spec.servers[0].tls",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port: {number: 70000, name: http, protocol: HTTP}\n    hosts: [a.example.com]\n".into(),
            Code::InvalidValue,
            "spec.servers[0].port.number",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: SMTP}\n    hosts: [a.example.com]\n".into(),
            Code::InvalidValue,
            "spec.servers[0].port.protocol",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"bad host!\"]\n".into(),
            Code::InvalidValue,
            "spec.servers[0].hosts[0]",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: b\n  subsets:\n  - {name: v1}\n  - {name: v1}\n".into(),
            Code::Conflict,
            "spec.subsets[1].name",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\nspec:\n  hosts: [s.example.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: not-an-ip}]\n".into(),
            Code::InvalidValue,
            "spec.endpoints[0].address",
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\ndata: {tls.crt: '%%%', tls.key: LS0tLS1CRUdJTiBYLS0tLS0K}\n".into(),
            Code::InvalidValue,
            "data.tls.crt",
        ),
        // Durations: at most what a protobuf Duration holds, at least 1ms where
        // Istio wants a positive one (a route timeout of 0 too, as Istio refuses it).
        (vs("  - route: [{destination: {host: backend}}]\n    timeout: \"9223372036854775807s\"\n"), Code::InvalidValue, "spec.http[0].timeout"),
        (vs("  - route: [{destination: {host: backend}}]\n    retries: {attempts: 2, perTryTimeout: 0s}\n"), Code::InvalidValue, "spec.http[0].retries.perTryTimeout"),
        (dr("  trafficPolicy: {outlierDetection: {interval: 0s}}\n"), Code::InvalidValue, "spec.trafficPolicy.outlierDetection.interval"),
        (dr("  trafficPolicy: {outlierDetection: {baseEjectionTime: 400000000000s}}\n"), Code::InvalidValue, "spec.trafficPolicy.outlierDetection.baseEjectionTime"),
        (dr("  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 0s}}}\n"), Code::InvalidValue, "spec.trafficPolicy.connectionPool.tcp.connectTimeout"),
        // Weights: Istio's are int32 and not negative; their sum must not wrap.
        (vs("  - route:\n    - {destination: {host: a}, weight: 1}\n    - {destination: {host: b}, weight: 4294967296}\n"), Code::InvalidValue, "spec.http[0].route[1].weight"),
        (vs("  - route:\n    - {destination: {host: a}, weight: 1}\n    - {destination: {host: b}, weight: -1}\n"), Code::InvalidValue, "spec.http[0].route[1].weight"),
        (vs("  - route:\n    - {destination: {host: a}, weight: 2147483647}\n    - {destination: {host: b}, weight: 2147483647}\n    - {destination: {host: c}, weight: 2}\n"), Code::InvalidValue, "spec.http[0].route"),
        (tcp("    - {destination: {host: a}, weight: 1}\n    - {destination: {host: b}, weight: 2147483648}\n"), Code::InvalidValue, "spec.tcp[0].route[1].weight"),
        (tcp("    - {destination: {host: a}, weight: 0}\n    - {destination: {host: b}}\n"), Code::InvalidValue, "spec.tcp[0].route"),
        // Hosts, as Istio checks them: DNS-1123 labels, a leading `*` only.
        (
            format!("{GW}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs}}\nspec:\n  hosts: ['admin.internal ']\n  gateways: [gw]\n  http:\n{dest}").replace("http:\n    route", "http:\n  - route"),
            Code::InvalidValue,
            "spec.hosts[0]",
        ),
        (vs("  - route: [{destination: {host: ' backend'}}]\n"), Code::InvalidValue, "spec.http[0].route[0].destination.host"),
        (vs("  - route: [{destination: {host: '*'}}]\n"), Code::InvalidValue, "spec.http[0].route[0].destination.host"),
        (vs(&format!("  - mirror: {{host: 'copy\\tsink'}}\n{dest}")), Code::InvalidValue, "spec.http[0].mirror.host"),
        (
            format!("{GW}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: t}}\nspec:\n  hosts: [app.example.com]\n  gateways: [gw]\n  tls:\n  - match: [{{sniHosts: ['app.example.com.*']}}]\n    route: [{{destination: {{host: backend}}}}]\n"),
            Code::InvalidValue,
            "spec.tls[0].match[0].sniHosts[0]",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\nspec:\n  hosts: [\"api.example\\n.com\"]\n  resolution: DNS\n  ports: [{number: 80, name: http}]\n".into(),
            Code::InvalidValue,
            "spec.hosts[0]",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: ' ratings'\n".into(),
            Code::InvalidValue,
            "spec.host",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [' web/app.example.com']\n".into(),
            Code::InvalidValue,
            "spec.servers[0].hosts[0]",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [web/app]\n".into(),
            Code::InvalidValue,
            "spec.servers[0].hosts[0]",
        ),
    ];
    for (yaml, code, field) in cases {
        let diags = diagnostics(&yaml);
        let errors: Vec<_> = diags.iter().filter(|d| d.is_error()).collect();
        assert_eq!(errors.len(), 1, "{yaml}\n{errors:#?}");
        assert_eq!(
            (errors[0].code, errors[0].field.as_deref()),
            (code, Some(field)),
            "{yaml}"
        );
    }
}

#[test]
fn valid_istio_yaml_draws_no_warnings() {
    let yaml = vs(r#"  - name: full
    match:
    - uri: {prefix: /}
      ignoreUriCase: true
      headers: {x-a: {exact: b}}
      queryParams: {q: {exact: "1"}}
    rewrite: {uri: /x, authority: y}
    headers:
      request: {set: {a: b}, add: {c: d}, remove: [e]}
    route:
    - destination: {host: backend, port: {number: 80}}
      weight: 100
      headers: {response: {set: {f: g}}}
"#);
    let diags = diagnostics(&yaml);
    assert!(diags.is_empty(), "{diags:#?}");
}

#[test]
fn weights_that_wrapped_to_zero_are_refused_each() {
    let yaml = vs("  - route:\n    - {destination: {host: a}, weight: 9223372036854775807}\n    - {destination: {host: b}, weight: 9223372036854775807}\n");
    let fields: Vec<_> = diagnostics(&yaml)
        .into_iter()
        .filter(|d| d.is_error())
        .map(|d| (d.code, d.field))
        .collect();
    assert_eq!(
        fields,
        [
            (Code::InvalidValue, Some("spec.http[0].route[0].weight".to_string())),
            (Code::InvalidValue, Some("spec.http[0].route[1].weight".to_string())),
        ]
    );
}

#[test]
fn hosts_istio_accepts_stay_accepted() {
    let yaml = format!(
        "{GW}apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: g2}}\nspec:\n  servers:\n  - port: {{number: 443, name: tls, protocol: TLS}}\n    hosts: [shop/*, ./api.example.com, '*/*.example.com', 10.0.0.1]\n    tls: {{mode: PASSTHROUGH}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: ip}}\nspec:\n  hosts: [10.0.0.1, '*.example.com', reviews, istio.io., '*.svc.cluster.local']\n  gateways: [g2]\n  tls:\n  - match: [{{sniHosts: [outbound_.80_._.reviews.default.svc.cluster.local, 10.0.0.1]}}]\n    route: [{{destination: {{host: reviews.default.svc.cluster.local}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: d}}\nspec:\n  host: '*.example.com'\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s}}\nspec:\n  hosts: ['*.api.example.com', Api.Example.COM]\n  resolution: NONE\n  ports: [{{number: 443, name: tls, protocol: TLS}}]\n"
    );
    let errors: Vec<_> = diagnostics(&yaml).into_iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn a_negative_weight_leaves_no_positive_one() {
    // As in Istio: both the weight and the route's total are reported.
    let yaml =
        vs("  - route:\n    - {destination: {host: a}, weight: -5}\n    - {destination: {host: b}, weight: 0}\n");
    let errors: Vec<_> = diagnostics(&yaml)
        .into_iter()
        .filter(|d| d.is_error())
        .map(|d| (d.field, d.message))
        .collect();
    assert_eq!(
        errors,
        [
            (
                Some("spec.http[0].route".to_string()),
                "with several destinations, at least one weight must be positive".to_string()
            ),
            (
                Some("spec.http[0].route[0].weight".to_string()),
                "weight must not be negative".to_string()
            ),
        ]
    );
}

#[test]
fn a_route_timeout_of_zero_is_refused_as_istio_refuses_it() {
    // Istio's CRD and webhook want at least 1ms; no timeout is written by leaving
    // `timeout` out.
    let yaml = vs("  - route: [{destination: {host: backend}}]\n    timeout: 0s\n");
    let errors: Vec<_> = diagnostics(&yaml)
        .into_iter()
        .filter(|d| d.is_error())
        .map(|d| (d.code, d.field))
        .collect();
    assert_eq!(errors, [(Code::InvalidValue, Some("spec.http[0].timeout".to_string()))]);
}
