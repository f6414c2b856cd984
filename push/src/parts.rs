//! Large messages in parts. A configuration of thousands of documents, or an
//! endpoint table of tens of thousands of endpoints, is megabytes; sent whole, each
//! stream's gRPC encoder grows a buffer of that size and keeps it (a thousand proxies:
//! gigabytes). Sent in parts of `PART_BYTES`, a stream never buffers more than a part.
//! The controller splits once per build (parts share the documents' bytes); the
//! proxy joins the parts of a version and applies the whole.

use bytes::{Bytes, BytesMut};

use crate::proto;
use crate::proto::controller_message::Kind;

/// How much document text (or endpoint table) one part carries at most; a single
/// larger document goes alone.
pub const PART_BYTES: usize = 64 * 1024;

/// The parts that carry `config`: its documents in order, grouped up to `limit`
/// bytes of text; the mesh config rides on the first; `more` is set on all but the
/// last.
pub fn split_config(config: &proto::Config, limit: usize) -> Vec<proto::Config> {
    let mut parts = vec![proto::Config {
        version: config.version,
        documents: Vec::new(),
        mesh_config: config.mesh_config.clone(),
        more: false,
    }];
    let mut size = 0;
    for document in &config.documents {
        let len = document.text.len() + document.file.len();
        if size > 0 && size + len > limit {
            parts.push(proto::Config {
                version: config.version,
                ..Default::default()
            });
            size = 0;
        }
        size += len;
        if let Some(last) = parts.last_mut() {
            last.documents.push(document.clone());
        }
    }
    mark_more(&mut parts, |p| &mut p.more);
    parts
}

/// The parts that carry `endpoints`: its encoded table in slices of `limit` bytes
/// (the slices share the table's bytes); `more` is set on all but the last.
pub fn split_endpoints(endpoints: &proto::Endpoints, limit: usize) -> Vec<proto::Endpoints> {
    let table = &endpoints.table;
    let mut parts: Vec<proto::Endpoints> = (0..table.len().div_ceil(limit.max(1)).max(1))
        .map(|i| proto::Endpoints {
            version: endpoints.version,
            table: table.slice((i * limit).min(table.len())..((i + 1) * limit).min(table.len())),
            more: false,
        })
        .collect();
    mark_more(&mut parts, |p| &mut p.more);
    parts
}

fn mark_more<T>(parts: &mut [T], more: impl Fn(&mut T) -> &mut bool) {
    let last = parts.len().saturating_sub(1);
    for part in parts.iter_mut().take(last) {
        *more(part) = true;
    }
}

/// Joins the parts a proxy receives into whole messages.
#[derive(Debug, Default)]
pub struct Parts {
    config: Option<proto::Config>,
    endpoints: Option<(u64, BytesMut)>,
}

impl Parts {
    /// Takes one message; returns the whole message it completes, if any. A part of
    /// another version than the one being joined starts over from it (the controller
    /// sends a version's parts in a row, so only a new stream can do that).
    pub fn add(&mut self, kind: Kind) -> Option<Kind> {
        match kind {
            Kind::Config(part) => {
                let joined = match self.config.take() {
                    Some(mut joined) if joined.version == part.version => {
                        joined.documents.extend(part.documents);
                        joined.mesh_config = joined.mesh_config.or(part.mesh_config);
                        joined.more = part.more;
                        joined
                    }
                    _ => part,
                };
                if joined.more {
                    self.config = Some(joined);
                    None
                } else {
                    Some(Kind::Config(joined))
                }
            }
            Kind::Endpoints(part) => {
                let mut table = match self.endpoints.take() {
                    Some((version, table)) if version == part.version => table,
                    _ => BytesMut::new(),
                };
                table.extend_from_slice(&part.table);
                if part.more {
                    self.endpoints = Some((part.version, table));
                    None
                } else {
                    Some(Kind::Endpoints(proto::Endpoints {
                        version: part.version,
                        table: Bytes::from(table),
                        more: false,
                    }))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sizes: &[usize]) -> proto::Config {
        proto::Config {
            version: 7,
            documents: sizes
                .iter()
                .enumerate()
                .map(|(i, n)| proto::Document {
                    file: format!("{i}"),
                    text: Bytes::from(vec![b'x'; *n]),
                })
                .collect(),
            mesh_config: Some("mesh".into()),
            more: false,
        }
    }

    fn joined(parts: Vec<Kind>) -> Vec<Kind> {
        let mut joiner = Parts::default();
        parts.into_iter().filter_map(|p| joiner.add(p)).collect()
    }

    #[test]
    fn a_large_configuration_goes_in_parts_and_comes_back_whole() {
        let whole = config(&[40, 40, 200, 10, 10]);
        let parts = split_config(&whole, 100);
        let files: Vec<Vec<&str>> = parts
            .iter()
            .map(|p| p.documents.iter().map(|d| d.file.as_str()).collect())
            .collect();
        // Up to 100 bytes a part; the 200-byte document alone.
        assert_eq!(files, [vec!["0", "1"], vec!["2"], vec!["3", "4"]]);
        assert_eq!(parts.iter().map(|p| p.more).collect::<Vec<_>>(), [true, true, false]);
        let back = joined(parts.into_iter().map(Kind::Config).collect());
        assert_eq!(back, [Kind::Config(whole)]);
        // A small one is one part, as it was.
        let small = config(&[10]);
        assert_eq!(split_config(&small, 100), [small]);
    }

    #[test]
    fn an_endpoint_table_goes_in_slices_and_comes_back_whole() {
        let whole = proto::Endpoints {
            version: 3,
            table: Bytes::from((0..=255u8).collect::<Vec<u8>>()),
            more: false,
        };
        let parts = split_endpoints(&whole, 100);
        assert_eq!(parts.iter().map(|p| p.table.len()).collect::<Vec<_>>(), [100, 100, 56]);
        assert_eq!(
            joined(parts.into_iter().map(Kind::Endpoints).collect()),
            [Kind::Endpoints(whole)]
        );
        let empty = proto::Endpoints {
            version: 1,
            ..Default::default()
        };
        assert_eq!(split_endpoints(&empty, 100), [empty]);
    }

    #[test]
    fn a_new_version_drops_an_unfinished_one() {
        let old = split_config(&config(&[80, 80]), 100);
        let mut new = config(&[5]);
        new.version = 8;
        let mut joiner = Parts::default();
        assert_eq!(joiner.add(Kind::Config(old[0].clone())), None);
        assert_eq!(joiner.add(Kind::Config(new.clone())), Some(Kind::Config(new)));
    }
}
