//! Configuration deltas. After a proxy has ACKed a configuration on its stream, the
//! controller sends the next one as the documents added or changed since and the
//! files removed; the proxy applies them to the configuration it holds. Documents are
//! in file-name order in every configuration, so a full one and one rebuilt from a
//! delta are the same, document for document.

use std::collections::{HashMap, HashSet};

use crate::proto;

/// A delta that does not fit the configuration the proxy holds.
#[derive(Debug, thiserror::Error)]
#[error("a delta on configuration version {base}, but this proxy holds version {held}")]
pub struct BaseMismatch {
    /// The version the delta was made on.
    pub base: u64,
    /// The version the proxy holds.
    pub held: u64,
}

/// What changed from `base` to `new`, as a delta on `base` (whole, not in parts).
pub fn diff(base: &proto::Config, new: &proto::Config) -> proto::Config {
    let before: HashMap<&str, &[u8]> = base.documents.iter().map(|d| (d.file.as_str(), &d.text[..])).collect();
    let after: HashSet<&str> = new.documents.iter().map(|d| d.file.as_str()).collect();
    proto::Config {
        version: new.version,
        documents: new
            .documents
            .iter()
            .filter(|d| before.get(d.file.as_str()) != Some(&&d.text[..]))
            .cloned()
            .collect(),
        mesh_config: new.mesh_config.clone(),
        more: false,
        base_version: base.version,
        removed: base
            .documents
            .iter()
            .filter(|d| !after.contains(d.file.as_str()))
            .map(|d| d.file.clone())
            .collect(),
    }
}

/// The whole configuration `delta` makes of `base`, the configuration of version
/// `delta.base_version`.
pub fn apply(base: &proto::Config, delta: proto::Config) -> Result<proto::Config, BaseMismatch> {
    if delta.base_version != base.version {
        return Err(BaseMismatch {
            base: delta.base_version,
            held: base.version,
        });
    }
    let mut documents: Vec<proto::Document> = {
        let gone: HashSet<&str> = delta
            .removed
            .iter()
            .map(String::as_str)
            .chain(delta.documents.iter().map(|d| d.file.as_str()))
            .collect();
        base.documents
            .iter()
            .filter(|d| !gone.contains(d.file.as_str()))
            .cloned()
            .collect()
    };
    documents.extend(delta.documents);
    documents.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(proto::Config {
        version: delta.version,
        documents,
        mesh_config: delta.mesh_config,
        more: false,
        base_version: 0,
        removed: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(version: u64, documents: &[(&str, &str)]) -> proto::Config {
        proto::Config {
            version,
            documents: documents
                .iter()
                .map(|(file, text)| proto::Document {
                    file: (*file).into(),
                    text: text.as_bytes().to_vec().into(),
                })
                .collect(),
            mesh_config: None,
            more: false,
            base_version: 0,
            removed: Vec::new(),
        }
    }

    #[test]
    fn a_delta_carries_what_changed_and_rebuilds_the_whole() {
        let base = config(3, &[("a.yaml", "a"), ("b.yaml", "b"), ("c.yaml", "c")]);
        let mut new = config(5, &[("a.yaml", "a"), ("b.yaml", "B"), ("d.yaml", "d")]);
        new.mesh_config = Some("mesh".into());
        let delta = diff(&base, &new);
        let files: Vec<&str> = delta.documents.iter().map(|d| d.file.as_str()).collect();
        assert_eq!(files, ["b.yaml", "d.yaml"]);
        assert_eq!(delta.removed, ["c.yaml"]);
        assert_eq!((delta.base_version, delta.version), (3, 5));
        assert_eq!(apply(&base, delta).expect("fits"), new);
    }

    #[test]
    fn a_delta_on_another_version_is_refused() {
        let base = config(3, &[("a.yaml", "a")]);
        let mut delta = diff(&base, &config(5, &[("a.yaml", "b")]));
        delta.base_version = 4;
        let refused = apply(&base, delta).expect_err("another base");
        assert_eq!((refused.base, refused.held), (4, 3));
    }
}
