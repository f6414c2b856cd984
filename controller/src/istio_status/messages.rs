//! The findings written in each resource's `validationMessages`: what
//! `straitctl analyze` reports that does not depend on a proxy's scope (each
//! resource's own checks and the cross-resource analyzers), with Istio's codes,
//! each code once per resource and level, most severe first.

use std::collections::{BTreeSet, HashMap};

use strait_config::mesh::MeshConfig;
use strait_config::{Loaded, Severity};

use super::{MessageType, ValidationMessage};
use crate::analyze::{scope_free, MessageCode};

/// Istio's page on one of its analyzer messages.
fn documentation(code: &str) -> Option<String> {
    code.starts_with("IST").then(|| {
        format!(
            "https://istio.io/latest/docs/reference/config/analysis/{}/",
            code.to_ascii_lowercase()
        )
    })
}

fn level(severity: Severity) -> (u8, &'static str) {
    // Istio's enum orders ERROR < WARNING < INFO, most severe first.
    match severity {
        Severity::Error => (0, "ERROR"),
        Severity::Warning => (1, "WARNING"),
        Severity::Note => (2, "INFO"),
    }
}

/// The validation messages of every document of `loaded` that has any, by file.
pub fn by_file(loaded: &Loaded, mesh: &MeshConfig) -> HashMap<String, Vec<ValidationMessage>> {
    let mut found: HashMap<String, BTreeSet<(u8, &'static str, MessageCode)>> = HashMap::new();
    for (diagnostic, code) in scope_free(loaded, mesh) {
        let (rank, word) = level(diagnostic.severity);
        found.entry(diagnostic.file).or_default().insert((rank, word, code));
    }
    found
        .into_iter()
        .map(|(file, messages)| {
            let messages = messages
                .into_iter()
                .map(|(_, word, code)| ValidationMessage {
                    level: word.to_string(),
                    type_: MessageType {
                        code: code.code.to_string(),
                        name: code.name.to_string(),
                    },
                    documentation_url: documentation(code.code),
                })
                .collect();
            (file, messages)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_config::bundle::load_text;

    #[test]
    fn an_unknown_destination_host_is_ist0101_on_its_resource_only() {
        let mut loaded = Loaded::default();
        let vs = |name: &str, host: &str| {
            serde_json::json!({
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"hosts": [format!("{name}.example.com")], "http": [{"route": [{"destination": {"host": host}}]}]},
            })
            .to_string()
        };
        let se = serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": "known", "namespace": "shop"},
            "spec": {"hosts": ["known.example.com"], "resolution": "STATIC",
                     "ports": [{"number": 80, "name": "http"}], "endpoints": [{"address": "10.0.0.1"}]},
        })
        .to_string();
        load_text(
            &mut loaded,
            "kubernetes/VirtualService/shop/bad",
            &vs("bad", "nowhere.example.com"),
        );
        load_text(
            &mut loaded,
            "kubernetes/VirtualService/shop/good",
            &vs("good", "known.example.com"),
        );
        load_text(&mut loaded, "kubernetes/ServiceEntry/shop/known", &se);
        let found = by_file(&loaded, &MeshConfig::default());
        let bad = &found["kubernetes/VirtualService/shop/bad"];
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(bad[0].type_.code, "IST0101");
        assert_eq!(bad[0].type_.name, "ReferencedResourceNotFound");
        assert_eq!(bad[0].level, "ERROR");
        assert_eq!(
            bad[0].documentation_url.as_deref(),
            Some("https://istio.io/latest/docs/reference/config/analysis/ist0101/")
        );
        assert!(!found.contains_key("kubernetes/VirtualService/shop/good"), "{found:?}");
    }
}
