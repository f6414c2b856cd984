//! `straitctl proxy-status`: which configuration each proxy runs, read from
//! their admin ports (`/server_info`). Without a controller there is no
//! authority on the intended configuration, so proxies are compared with one
//! another: the proxy with the highest config version is the reference, and a
//! proxy is SYNCED when it serves the same configuration (same digest), STALE
//! otherwise. Versions are per-process reload counters and are not compared
//! directly: two proxies may reach the same files through different numbers of
//! reloads.

use serde::Serialize;
use serde_json::Value;

use crate::admin_client::{self, Target};
use crate::table::Table;

/// Whether a proxy serves the reference configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SyncStatus {
    /// Same configuration as the reference.
    Synced,
    /// A different configuration.
    Stale,
    /// The admin port did not answer.
    Unreachable,
}

/// One proxy's status.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyStatus {
    /// The admin address asked.
    pub target: String,
    /// SYNCED, STALE or UNREACHABLE.
    pub sync: SyncStatus,
    /// The proxy's config version (its own reload counter).
    pub config_version: Option<u64>,
    /// Digest of the configuration served.
    pub config_digest: Option<String>,
    /// Whether its last configuration attempt was accepted (false: it keeps an older one).
    pub last_attempt_accepted: Option<bool>,
    /// Configurations rejected since it started.
    pub rejected_since_start: Option<u64>,
    /// LIVE or DRAINING.
    pub state: Option<String>,
    /// Strait build.
    pub strait_version: Option<String>,
    /// Its config folder.
    pub config_dir: Option<String>,
    /// The files of the running configuration.
    pub sources: Vec<String>,
    /// Why the proxy could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ProxyStatus {
    fn from_info(target: &Target, info: &Value) -> ProxyStatus {
        let s = |k: &str| info[k].as_str().map(str::to_string);
        ProxyStatus {
            target: target.to_string(),
            sync: SyncStatus::Synced,
            config_version: info["config_version"].as_u64(),
            config_digest: s("config_digest"),
            last_attempt_accepted: info["last_attempt"]["accepted"].as_bool(),
            rejected_since_start: info["rejected_since_start"].as_u64(),
            state: s("state"),
            strait_version: s("strait_version"),
            config_dir: s("config_dir"),
            sources: info["sources"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            error: None,
        }
    }

    fn unreachable(target: &Target, error: &admin_client::Error) -> ProxyStatus {
        ProxyStatus {
            target: target.to_string(),
            sync: SyncStatus::Unreachable,
            config_version: None,
            config_digest: None,
            last_attempt_accepted: None,
            rejected_since_start: None,
            state: None,
            strait_version: None,
            config_dir: None,
            sources: Vec::new(),
            error: Some(error.to_string()),
        }
    }
}

/// Asks every target, in order, and compares them.
pub fn collect(targets: &[Target]) -> Vec<ProxyStatus> {
    let mut out: Vec<ProxyStatus> = targets
        .iter()
        .map(|t| match admin_client::get_json(t, "/server_info") {
            Ok(info) => ProxyStatus::from_info(t, &info),
            Err(e) => ProxyStatus::unreachable(t, &e),
        })
        .collect();
    compare(&mut out);
    out
}

/// Marks each reachable proxy SYNCED or STALE against the reference: the one
/// with the highest version (the first of equals).
pub fn compare(statuses: &mut [ProxyStatus]) {
    let reference = statuses
        .iter()
        .filter(|s| s.sync != SyncStatus::Unreachable)
        .fold(None::<&ProxyStatus>, |best, s| match best {
            Some(b) if b.config_version >= s.config_version => Some(b),
            _ => Some(s),
        })
        .and_then(|s| s.config_digest.clone());
    for s in statuses.iter_mut().filter(|s| s.sync != SyncStatus::Unreachable) {
        s.sync = if s.config_digest.is_some() && s.config_digest == reference {
            SyncStatus::Synced
        } else {
            SyncStatus::Stale
        };
    }
}

/// Digest characters shown in the table (as git shortens hashes).
const DIGEST_SHOWN: usize = 12;

/// The table `straitctl proxy-status` prints.
pub fn table(statuses: &[ProxyStatus]) -> Table {
    let mut t = Table::new(&["TARGET", "STATUS", "VERSION", "LAST UPDATE", "DIGEST", "CONFIG"]);
    for s in statuses {
        let sync = match s.sync {
            SyncStatus::Synced => "SYNCED",
            SyncStatus::Stale => "STALE",
            SyncStatus::Unreachable => "UNREACHABLE",
        };
        let last = match s.last_attempt_accepted {
            Some(true) => "ACCEPTED".to_string(),
            Some(false) => format!("REJECTED ({} since start)", s.rejected_since_start.unwrap_or(0)),
            None => String::new(),
        };
        let config = match (&s.error, &s.config_dir) {
            (Some(e), _) => e.clone(),
            (None, Some(dir)) => format!("{dir} ({} files)", s.sources.len()),
            (None, None) => format!("{} files", s.sources.len()),
        };
        t.row(vec![
            s.target.clone(),
            sync.to_string(),
            s.config_version.map(|v| v.to_string()).unwrap_or_default(),
            last,
            s.config_digest
                .as_deref()
                .map(|d| d.chars().take(DIGEST_SHOWN).collect())
                .unwrap_or_default(),
            config,
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(version: u64, digest: &str) -> ProxyStatus {
        let target = Target {
            host: "gw".into(),
            port: 15000,
        };
        ProxyStatus::from_info(
            &target,
            &json!({"config_version": version, "config_digest": digest, "last_attempt": {"accepted": true}}),
        )
    }

    #[test]
    fn newest_version_is_the_reference() {
        let mut all = vec![status(3, "aaa"), status(7, "bbb"), status(2, "bbb")];
        let down = Target {
            host: "down".into(),
            port: 1,
        };
        all.push(ProxyStatus::unreachable(
            &down,
            &admin_client::Error::BadTarget("down".into()),
        ));
        compare(&mut all);
        let syncs: Vec<SyncStatus> = all.iter().map(|s| s.sync).collect();
        assert_eq!(
            syncs,
            [
                SyncStatus::Stale,
                SyncStatus::Synced,
                SyncStatus::Synced,
                SyncStatus::Unreachable
            ]
        );
        let text = table(&all).render();
        assert!(text.starts_with("TARGET"), "{text}");
        assert!(text.contains("UNREACHABLE"), "{text}");
    }
}
