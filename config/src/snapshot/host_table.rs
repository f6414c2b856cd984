//! Host lookup for virtual hosts and SNI names: exact, longest wildcard suffix, `*`.

use std::collections::HashMap;

use serde::{Serialize, Serializer};

/// Exact, wildcard-suffix and catch-all host lookup.
#[derive(Debug, Default)]
pub struct HostTable {
    exact: HashMap<Box<str>, usize>,
    /// Keyed by the suffix with its dot: `*.example.com` -> `.example.com`.
    suffix: HashMap<Box<str>, usize>,
    any: Option<usize>,
}

impl HostTable {
    /// Adds `host` (lowercase; `*`, `*.suffix` or exact). The first entry for a key wins.
    pub fn insert(&mut self, host: &str, index: usize) -> bool {
        if host == "*" {
            let fresh = self.any.is_none();
            self.any.get_or_insert(index);
            return fresh;
        }
        let (map, key) = match host.strip_prefix('*') {
            Some(rest) => (&mut self.suffix, rest),
            None => (&mut self.exact, host),
        };
        if map.contains_key(key) {
            return false;
        }
        map.insert(key.into(), index);
        true
    }

    /// The most specific entry for `host` (lowercase, without port): exact, then the
    /// longest wildcard suffix, then `*`.
    pub fn lookup(&self, host: &str) -> Option<usize> {
        if let Some(i) = self.exact.get(host) {
            return Some(*i);
        }
        if !self.suffix.is_empty() {
            let mut rest = host;
            while let Some(dot) = rest.find('.') {
                let candidate = &rest[dot..];
                // A wildcard needs at least one character before the suffix.
                if candidate.len() < host.len() {
                    if let Some(i) = self.suffix.get(candidate) {
                        return Some(*i);
                    }
                }
                rest = &rest[dot + 1..];
            }
        }
        self.any
    }
}

impl Serialize for HostTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut all: Vec<(String, usize)> = self.exact.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        all.extend(self.suffix.iter().map(|(k, v)| (format!("*{k}"), *v)));
        all.extend(self.any.map(|v| ("*".to_string(), v)));
        all.sort();
        s.collect_map(all)
    }
}
