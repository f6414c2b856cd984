//! What the controller knows of each connected proxy: who it is, what it was sent,
//! what it acknowledged or refused and why, and the errors that kept the controller
//! from building its configuration. Served as JSON on `/debug/proxies` and shown by
//! `straitctl proxy-status --controller`. Beside it, the configuration each proxy
//! runs as the controller built it, which status on the Istio resources reads
//! (`istio_status`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::builds::Prepared;
use super::identity::Identity;

/// Whether a proxy runs what the controller last sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SyncState {
    /// It acknowledged the last message sent, and nothing is held back.
    Synced,
    /// A message is not acknowledged yet, or the controller cannot build its
    /// configuration (it keeps what it had).
    Stale,
    /// It refused the last message it answered; it keeps what it had.
    Nack,
}

/// A message sent to a proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The controller's version.
    pub version: u64,
    /// `config` or `endpoints`.
    pub kind: String,
    /// When, in seconds since the Unix epoch.
    pub at: u64,
}

/// A refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// The version refused.
    pub version: u64,
    /// Why, as the proxy rendered its diagnostics.
    pub diagnostics: Vec<String>,
}

/// One connected proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStatus {
    /// The connection's number (a proxy that reconnects gets a new one).
    pub connection: u64,
    /// Who it is.
    #[serde(flatten)]
    pub identity: Identity,
    /// When it connected, in seconds since the Unix epoch.
    pub connected_since: u64,
    /// The last message sent.
    pub last_sent: Option<Sent>,
    /// The last version it acknowledged.
    pub last_acked: Option<u64>,
    /// Its last refusal.
    pub last_nack: Option<Refused>,
    /// Why the controller could not build its configuration at the latest version
    /// (nothing was sent then).
    pub build_errors: Vec<String>,
    /// SYNCED, STALE or NACK.
    pub sync: SyncState,
}

impl ProxyStatus {
    /// A copy with its sync state judged.
    fn judged(&self) -> ProxyStatus {
        ProxyStatus {
            sync: self.judge(),
            ..self.clone()
        }
    }

    /// Its sync state from the rest.
    fn judge(&self) -> SyncState {
        let answered = self.last_acked.max(self.last_nack.as_ref().map(|n| n.version));
        let refused_last = match (&self.last_nack, self.last_acked) {
            (Some(n), Some(acked)) => n.version > acked,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if refused_last {
            SyncState::Nack
        } else if self.build_errors.is_empty()
            && self.last_sent.is_some()
            && answered >= self.last_sent.as_ref().map(|s| s.version)
        {
            SyncState::Synced
        } else {
            SyncState::Stale
        }
    }
}

/// What `/debug/proxies` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The store's latest version.
    pub version: u64,
    /// Connected proxies, by connection.
    pub proxies: Vec<ProxyStatus>,
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One connected proxy: its status, and the build it runs.
#[derive(Debug)]
struct Entry {
    status: ProxyStatus,
    runs: Option<Arc<Prepared>>,
}

/// A connected proxy as status on the Istio resources sees it.
#[derive(Debug, Clone)]
pub struct Holding {
    /// Its status, with its sync state.
    pub status: ProxyStatus,
    /// The build whose configuration it runs: the last it acknowledged, or a later
    /// one equal to it (None: it acknowledged nothing yet on this connection).
    pub runs: Option<Arc<Prepared>>,
}

/// The status of every connected proxy.
#[derive(Debug)]
pub struct Registry {
    proxies: Mutex<BTreeMap<u64, Entry>>,
    next: AtomicU64,
    /// Counts changes, so that readers wait for one rather than poll.
    changes: watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            proxies: Mutex::default(),
            next: AtomicU64::new(0),
            changes: watch::channel(0).0,
        }
    }
}

impl Registry {
    /// Records a new connection; returns its number.
    pub fn connect(&self, identity: Identity) -> u64 {
        let connection = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let status = ProxyStatus {
            connection,
            identity,
            connected_since: now(),
            last_sent: None,
            last_acked: None,
            last_nack: None,
            build_errors: Vec::new(),
            sync: SyncState::Stale,
        };
        self.lock().insert(connection, Entry { status, runs: None });
        self.changed();
        connection
    }

    /// Changes what is known of `connection`.
    pub fn update(&self, connection: u64, change: impl FnOnce(&mut ProxyStatus)) {
        if let Some(e) = self.lock().get_mut(&connection) {
            change(&mut e.status);
        }
        self.changed();
    }

    /// Records that `connection`'s proxy runs the configuration of `build`.
    pub fn runs(&self, connection: u64, build: Arc<Prepared>) {
        if let Some(e) = self.lock().get_mut(&connection) {
            e.runs = Some(build);
        }
        self.changed();
    }

    /// Forgets `connection`.
    pub fn disconnect(&self, connection: u64) {
        self.lock().remove(&connection);
        self.changed();
    }

    /// Every connected proxy, with its sync state.
    pub fn list(&self) -> Vec<ProxyStatus> {
        self.lock().values().map(|e| e.status.judged()).collect()
    }

    /// Every connected proxy with the build it runs.
    pub fn holdings(&self) -> Vec<Holding> {
        self.lock()
            .values()
            .map(|e| Holding {
                status: e.status.judged(),
                runs: e.runs.clone(),
            })
            .collect()
    }

    /// A counter that moves with every change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.proxies.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::identity::ProxyRole;

    fn registry() -> (Registry, u64) {
        let r = Registry::default();
        let c = r.connect(Identity {
            id: "gw-1".into(),
            role: ProxyRole::Gateway,
            namespace: "istio-system".into(),
            labels: BTreeMap::new(),
            pod_name: None,
            service_account: None,
            ips: Vec::new(),
            strait_version: String::new(),
        });
        (r, c)
    }

    fn sent(version: u64) -> Option<Sent> {
        Some(Sent {
            version,
            kind: "config".into(),
            at: 0,
        })
    }

    #[test]
    fn sync_follows_what_was_sent_and_answered() {
        let (r, c) = registry();
        let sync = |r: &Registry| r.list()[0].sync;
        assert_eq!(sync(&r), SyncState::Stale, "nothing sent yet");
        r.update(c, |s| s.last_sent = sent(1));
        assert_eq!(sync(&r), SyncState::Stale, "not answered yet");
        r.update(c, |s| s.last_acked = Some(1));
        assert_eq!(sync(&r), SyncState::Synced);
        r.update(c, |s| {
            s.last_sent = sent(2);
            s.last_nack = Some(Refused {
                version: 2,
                diagnostics: vec!["bad".into()],
            });
        });
        assert_eq!(sync(&r), SyncState::Nack);
        r.update(c, |s| {
            s.last_sent = sent(3);
            s.last_acked = Some(3);
        });
        assert_eq!(sync(&r), SyncState::Synced, "a later ACK clears the NACK");
        r.update(c, |s| s.build_errors = vec!["error".into()]);
        assert_eq!(sync(&r), SyncState::Stale, "the controller holds a version back");
        let json = serde_json::to_value(r.list()).expect("json");
        assert_eq!(json[0]["id"], "gw-1");
        assert_eq!(json[0]["sync"], "STALE");
        r.disconnect(c);
        assert!(r.list().is_empty());
    }
}
