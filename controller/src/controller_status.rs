//! `straitctl proxy-status --controller`: each connected proxy's state as the
//! controller knows it (`/debug/proxies` on its HTTP port), printed as
//! `istioctl proxy-status` prints istiod's view: what version each proxy was
//! sent, which it acknowledged, and whether it is SYNCED, STALE or refused the
//! last one (NACK), with the proxy's diagnostics.

use crate::admin_client::{self, Target};
use crate::push::identity::ProxyRole;
use crate::push::status::{now, ProxyStatus, Report, SyncState};
use crate::table::Table;

/// The controller's HTTP port, when the address names none.
pub const DEFAULT_PORT: u16 = 15014;

/// Why the status cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The controller did not answer, or not with JSON.
    #[error(transparent)]
    Http(#[from] admin_client::Error),
    /// The JSON is not a status report.
    #[error("{target}/debug/proxies: not a proxy status report: {source}")]
    Report {
        /// The controller.
        target: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// The controller's address: `HOST:PORT`, or `HOST` for its default port.
pub fn target(text: &str) -> Result<Target, admin_client::Error> {
    let mut target = Target::parse(text)?;
    let named_port = text
        .trim()
        .trim_end_matches('/')
        .rsplit_once(':')
        .is_some_and(|(h, p)| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']'))
        });
    if !named_port {
        target.port = DEFAULT_PORT;
    }
    Ok(target)
}

/// Reads the controller's report.
pub fn fetch(target: &Target) -> Result<Report, Error> {
    let json = admin_client::get_json(target, "/debug/proxies")?;
    serde_json::from_value(json).map_err(|source| Error::Report {
        target: target.to_string(),
        source,
    })
}

fn age(since: u64) -> String {
    let s = now().saturating_sub(since);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

fn sync_name(sync: SyncState) -> &'static str {
    match sync {
        SyncState::Synced => "SYNCED",
        SyncState::Stale => "STALE",
        SyncState::Nack => "NACK",
    }
}

/// The table, then each refusal and build error with its diagnostics.
pub fn render(report: &Report) -> String {
    let mut t = Table::new(&[
        "NAME",
        "ROLE",
        "NAMESPACE",
        "VERSION SENT",
        "ACKED",
        "STATUS",
        "CONNECTED",
    ]);
    for p in &report.proxies {
        let role = match p.identity.role {
            ProxyRole::Gateway => "gateway",
            ProxyRole::Sidecar => "sidecar",
        };
        t.row(vec![
            p.identity.id.clone(),
            role.into(),
            p.identity.namespace.clone(),
            p.last_sent
                .as_ref()
                .map(|s| format!("{} ({})", s.version, s.kind))
                .unwrap_or_default(),
            p.last_acked.map(|v| v.to_string()).unwrap_or_default(),
            sync_name(p.sync).into(),
            age(p.connected_since),
        ]);
    }
    let mut out = format!("controller version {}\n{}", report.version, t.render());
    for p in &report.proxies {
        out.push_str(&details(p));
    }
    out
}

fn details(p: &ProxyStatus) -> String {
    let mut out = String::new();
    if let Some(nack) = p.last_nack.as_ref().filter(|_| p.sync == SyncState::Nack) {
        out.push_str(&format!("\n{} refused version {}:\n", p.identity.id, nack.version));
        for d in &nack.diagnostics {
            out.push_str(&format!("  {d}\n"));
        }
    }
    if !p.build_errors.is_empty() {
        out.push_str(&format!(
            "\n{}: the controller cannot build its configuration, nothing was sent:\n",
            p.identity.id
        ));
        for e in &p.build_errors {
            out.push_str(&format!("  {e}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_port_is_the_controllers() {
        assert_eq!(target("ctl").expect("valid").port, DEFAULT_PORT);
        assert_eq!(target("127.0.0.1:9000").expect("valid").port, 9000);
        assert_eq!(target("[::1]").expect("valid").port, DEFAULT_PORT);
        assert_eq!(target("[::1]:9000").expect("valid").port, 9000);
    }

    #[test]
    fn a_refusal_is_shown_with_its_diagnostics() {
        let report: Report = serde_json::from_value(serde_json::json!({
            "version": 4,
            "proxies": [
                {"connection": 1, "id": "gw-1", "role": "gateway", "namespace": "istio-system", "labels": {},
                 "connected_since": now(), "last_sent": {"version": 4, "kind": "config", "at": now()},
                 "last_acked": 3, "last_nack": {"version": 4, "diagnostics": ["tls.yaml:1:1: error[invalid-certificate] bad"]},
                 "build_errors": [], "sync": "NACK"},
                {"connection": 2, "id": "gw-2", "role": "gateway", "namespace": "istio-system", "labels": {},
                 "connected_since": now(), "last_sent": {"version": 4, "kind": "endpoints", "at": now()},
                 "last_acked": 4, "last_nack": null, "build_errors": [], "sync": "SYNCED"}
            ]
        }))
        .expect("a report");
        let text = render(&report);
        assert!(text.contains("NAME"), "{text}");
        let nack_row = text.lines().find(|l| l.starts_with("gw-1")).expect("row");
        assert!(nack_row.contains("4 (config)") && nack_row.contains("NACK"), "{text}");
        assert!(text.contains("gw-1 refused version 4:\n  tls.yaml:1:1"), "{text}");
        let synced = text.lines().find(|l| l.starts_with("gw-2")).expect("row");
        assert!(synced.contains("4 (endpoints)") && synced.contains("SYNCED"), "{text}");
    }
}
