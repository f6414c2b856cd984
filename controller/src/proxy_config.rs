//! `straitctl proxy-config`: one part of a proxy's running configuration, read
//! from its admin port (`/config_dump?resource=...`) and printed as a table, as
//! `istioctl proxy-config` prints Envoy's. The tables read the JSON defensively:
//! a field an older or newer proxy lacks prints as `-`, never as a failure.

use serde_json::Value;

use crate::admin_client::{self, Target};
use crate::table::Table;

/// A part of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Ports, protocols, SNI names and certificates, where traffic goes.
    Listeners,
    /// Virtual hosts, matches and actions.
    Routes,
    /// Upstream clusters: endpoints, load balancing, TLS.
    Clusters,
    /// Server certificates: names, expiry, fingerprint.
    Secrets,
}

impl Section {
    /// The admin API's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Section::Listeners => "listeners",
            Section::Routes => "routes",
            Section::Clusters => "clusters",
            Section::Secrets => "secrets",
        }
    }
}

/// GETs `/config_dump?resource=<section>` from `target`.
pub fn fetch(target: &Target, section: Section) -> Result<Value, admin_client::Error> {
    admin_client::get_json(target, &format!("/config_dump?resource={}", section.name()))
}

/// The table for a section's JSON (as `fetch` returns it).
pub fn table(section: Section, dump: &Value) -> Table {
    let items = dump
        .get(section.name())
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    match section {
        Section::Listeners => listeners(items),
        Section::Routes => routes(items),
        Section::Clusters => clusters(items),
        Section::Secrets => secrets(items),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn list(v: &Value) -> Vec<&Value> {
    v.as_array().map(|a| a.iter().collect()).unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    list(v).into_iter().map(text).collect()
}

fn listeners(items: &[Value]) -> Table {
    let mut t = Table::new(&["PORT", "PROTOCOL", "SNI", "CERTIFICATE", "DESTINATION"]);
    for l in items {
        let port = text(&l["port"]);
        let protocol = text(&l["protocol"]);
        let vhosts = list(&l["virtual_hosts"]);
        let domains = |server: Option<u64>| -> Vec<String> {
            vhosts
                .iter()
                .filter(|vh| server.is_none() || vh["tls_server"].as_u64() == server)
                .map(|vh| text(&vh["domain"]))
                .collect()
        };
        let route_name = format!("{}.{port}", if protocol == "HTTPS" { "https" } else { "http" });
        for (i, server) in list(&l["tls_servers"]).into_iter().enumerate() {
            let mut cert = text(&server["certificate_name"]);
            if let Some(auth) = server["client_auth"].as_object() {
                let mode = if auth.get("required") == Some(&Value::Bool(true)) {
                    "MUTUAL"
                } else {
                    "OPTIONAL_MUTUAL"
                };
                cert = format!("{cert} ({mode})");
            }
            t.row(vec![
                port.clone(),
                protocol.clone(),
                strings(&server["hosts"]).join(","),
                cert,
                format!("Route: {route_name} ({})", domains(Some(i as u64)).join(", ")),
            ]);
        }
        for route in list(&l["l4_routes"]) {
            let sni = strings(&route["sni_hosts"]);
            t.row(vec![
                port.clone(),
                protocol.clone(),
                if sni.is_empty() { "ALL".into() } else { sni.join(",") },
                String::new(),
                format!("Cluster: {}", weighted(&route["destinations"], &route["total_weight"])),
            ]);
        }
        let plain = list(&l["tls_servers"]).is_empty() && list(&l["l4_routes"]).is_empty();
        if plain {
            t.row(vec![
                port.clone(),
                protocol.clone(),
                String::new(),
                String::new(),
                format!("Route: {route_name} ({})", domains(None).join(", ")),
            ]);
        }
    }
    t
}

/// `a 90%, b 10%` (or just `a` for one destination).
fn weighted(destinations: &Value, total: &Value) -> String {
    let ds = list(destinations);
    let total = total.as_u64().unwrap_or(0);
    ds.iter()
        .map(|d| {
            let name = text(&d["cluster_name"]);
            match (ds.len(), d["weight"].as_u64()) {
                (1, _) | (_, None) => name,
                (_, Some(_)) if total == 0 => name,
                (_, Some(w)) => format!("{name} {}%", (w * 100 + total / 2) / total),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn routes(tables: &[Value]) -> Table {
    let mut t = Table::new(&["ROUTE", "VIRTUAL HOST", "MATCH", "ACTION", "VIRTUAL SERVICE"]);
    for table in tables {
        let name = text(&table["name"]);
        for vh in list(&table["virtual_hosts"]) {
            let domain = text(&vh["domain"]);
            if vh["https_redirect"] == Value::Bool(true) {
                t.row(vec![
                    name.clone(),
                    domain.clone(),
                    "/*".into(),
                    "redirect 301 to https".into(),
                    "(Gateway httpsRedirect)".into(),
                ]);
            }
            for r in list(&vh["routes"]) {
                t.row(vec![
                    name.clone(),
                    domain.clone(),
                    matches(&r["matches"]),
                    action(&r["action"]),
                    text(&r["source"]),
                ]);
            }
        }
    }
    t
}

/// OR'd match blocks, each an AND of conditions: `/api* method=GET OR /admin`.
pub fn matches(blocks: &Value) -> String {
    let blocks = list(blocks);
    if blocks.is_empty() {
        return "/*".into();
    }
    blocks.iter().map(|b| one_match(b)).collect::<Vec<_>>().join(" OR ")
}

fn one_match(m: &Value) -> String {
    let mut parts = Vec::new();
    if !m["uri"].is_null() {
        let mut uri = str_match(&m["uri"]);
        if m["ignore_uri_case"] == Value::Bool(true) {
            uri.push_str(" (any case)");
        }
        parts.push(uri);
    }
    for key in ["scheme", "method", "authority"] {
        if !m[key].is_null() {
            parts.push(format!("{key}={}", str_match(&m[key])));
        }
    }
    for (key, prefix) in [("headers", "header:"), ("without_headers", "!header:")] {
        for h in list(&m[key]) {
            parts.push(named_match(&format!("{prefix}{}", text(&h["name"])), &h["matcher"]));
        }
    }
    for (key, prefix) in [("claims", "claim:"), ("without_claims", "!claim:")] {
        for c in list(&m[key]) {
            parts.push(named_match(
                &format!("{prefix}{}", claim_name(&c["claim"])),
                &c["matcher"],
            ));
        }
    }
    for q in list(&m["query_params"]) {
        parts.push(named_match(&format!("query:{}", text(&q[0])), &q[1]));
    }
    if let Some(port) = m["port"].as_u64() {
        parts.push(format!("port={port}"));
    }
    if parts.is_empty() {
        "/*".into()
    } else {
        parts.join(" ")
    }
}

fn claim_name(c: &Value) -> String {
    match c {
        Value::Array(path) => path.iter().map(text).collect::<Vec<_>>().join("."),
        other => text(other),
    }
}

/// A StringMatch as JSON (`{"exact": ..}`, `{"prefix": ..}`, `{"regex": ..}`, `"present"`).
fn str_match(m: &Value) -> String {
    if let Some(v) = m.get("exact") {
        text(v)
    } else if let Some(v) = m.get("prefix") {
        format!("{}*", text(v))
    } else if let Some(v) = m.get("regex") {
        format!("~{}", text(v))
    } else {
        text(m)
    }
}

fn named_match(name: &str, m: &Value) -> String {
    if m.as_str() == Some("present") {
        name.to_string()
    } else {
        format!("{name}={}", str_match(m))
    }
}

fn action(a: &Value) -> String {
    if let Some(f) = a.get("forward") {
        let mut s = weighted(&f["destinations"], &f["total_weight"]);
        if let Some(rw) = f.get("rewrite").and_then(Value::as_object) {
            let what: Vec<String> = rw
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| match v {
                    Value::Object(o) => format!("{k}={}", text(o.get("pattern").unwrap_or(&Value::Null))),
                    _ => format!("{k}={}", text(v)),
                })
                .collect();
            s.push_str(&format!(" (rewrite {})", what.join(" ")));
        }
        for m in list(&f["mirrors"]) {
            s.push_str(&format!(
                " + mirror {} {}%",
                text(&m["cluster_name"]),
                text(&m["percent"])
            ));
        }
        s
    } else if let Some(r) = a.get("redirect") {
        // Only what changes: the rest of the URL is the request's.
        let mut parts = vec![format!("redirect {}", text(&r["code"]))];
        for key in ["scheme", "authority", "port", "uri"] {
            if !r[key].is_null() {
                parts.push(format!("{key}={}", text(&r[key])));
            }
        }
        if r["port_from_request"] == Value::Bool(true) {
            parts.push("port=(request's)".into());
        }
        parts.join(" ")
    } else if let Some(d) = a.get("direct_response") {
        format!("direct response {}", text(&d["status"]))
    } else {
        text(a)
    }
}

/// Endpoints shown before `+N more`.
const ENDPOINTS_SHOWN: usize = 3;

fn clusters(items: &[Value]) -> Table {
    let mut t = Table::new(&["NAME", "ENDPOINTS", "LB", "TLS"]);
    for c in items {
        let endpoints: Vec<String> = list(&c["endpoints"])
            .into_iter()
            .map(|e| match e["hostname"].as_str() {
                // DNS endpoints carry the unspecified address; the port is theirs.
                Some(host) => {
                    let addr = text(&e["address"]);
                    let port = addr.rsplit(':').next().unwrap_or_default();
                    format!("{host}:{port}")
                }
                None => text(&e["address"]),
            })
            .collect();
        let mut shown = endpoints
            .iter()
            .take(ENDPOINTS_SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if endpoints.len() > ENDPOINTS_SHOWN {
            shown.push_str(&format!(", +{} more", endpoints.len() - ENDPOINTS_SHOWN));
        }
        if c["blackhole"] == Value::Bool(true) {
            shown = "BLACKHOLE (REGISTRY_ONLY)".into();
        }
        let policy = &c["policy"];
        let lb = match &policy["lb"] {
            Value::Object(o) => o.keys().next().cloned().unwrap_or_default(),
            other => text(other),
        };
        let tls = match policy["tls"].as_object() {
            None => String::new(),
            Some(tls) => {
                let mode = if tls.get("client").is_some_and(|c| !c.is_null()) {
                    "MUTUAL"
                } else {
                    "SIMPLE"
                };
                let mut s = format!("{mode} sni={}", text(tls.get("sni").unwrap_or(&Value::Null)));
                if tls.get("insecure_skip_verify") == Some(&Value::Bool(true)) {
                    s.push_str(" (no verify)");
                }
                s
            }
        };
        t.row(vec![text(&c["name"]), shown, lb, tls]);
    }
    t
}

fn secrets(items: &[Value]) -> Table {
    let mut t = Table::new(&["NAME", "DNS NAMES", "NOT AFTER", "SHA-256 FINGERPRINT"]);
    for s in items {
        t.row(vec![
            text(&s["name"]),
            strings(&s["dns_names"]).join(","),
            text(&s["not_after"]),
            text(&s["sha256_fingerprint"]),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn match_summaries() {
        let m = json!([
            {"uri": {"prefix": "/api"}, "ignore_uri_case": false, "method": {"exact": "GET"},
             "headers": [{"name": "x-user", "matcher": {"regex": "^b.*"}}, {"name": "x-on", "matcher": "present"}],
             "query_params": [["debug", {"exact": "1"}]], "port": 80},
            {"uri": {"exact": "/admin"}, "ignore_uri_case": true}
        ]);
        assert_eq!(
            matches(&m),
            "/api* method=GET header:x-user=~^b.* header:x-on query:debug=1 port=80 OR /admin (any case)"
        );
        assert_eq!(matches(&json!([])), "/*");
        assert_eq!(matches(&json!([{"ignore_uri_case": false}])), "/*");
    }

    #[test]
    fn actions() {
        let canary = json!({"forward": {"destinations": [
            {"cluster": 0, "cluster_name": "outbound|80|v1|r", "weight": 90},
            {"cluster": 1, "cluster_name": "outbound|80|v2|r", "weight": 10}], "total_weight": 100}});
        assert_eq!(action(&canary), "outbound|80|v1|r 90%, outbound|80|v2|r 10%");
        let redirect = json!({"redirect": {"uri": "/new", "authority": null, "scheme": "https",
            "port": null, "port_from_request": false, "code": 301}});
        assert_eq!(action(&redirect), "redirect 301 scheme=https uri=/new");
        assert_eq!(
            action(&json!({"direct_response": {"status": 503, "body": ""}})),
            "direct response 503"
        );
    }

    #[test]
    fn missing_fields_print_as_dashes() {
        let t = table(Section::Clusters, &json!({"clusters": [{"name": "c"}]}));
        assert_eq!(t.render(), "NAME   ENDPOINTS   LB   TLS\nc      -           -    -\n");
        assert!(table(Section::Secrets, &json!({})).is_empty());
    }
}
