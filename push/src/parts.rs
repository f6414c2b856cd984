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
pub const PART_BYTES: usize = 16 * 1024;

/// The parts that carry `config`: its documents in order, up to `limit` bytes of
/// text a part; a document larger than what a part has left continues in the next
/// part under the same file name (the proxy joins the pieces). The mesh config
/// rides on the first part; `more` is set on all but the last.
pub fn split_config(config: &proto::Config, limit: usize) -> Vec<proto::Config> {
    let limit = limit.max(1);
    let mut parts = vec![proto::Config {
        version: config.version,
        documents: Vec::new(),
        mesh_config: config.mesh_config.clone(),
        more: false,
        base_version: config.base_version,
        removed: config.removed.clone(),
    }];
    let mut size = 0;
    for document in &config.documents {
        let text = &document.text;
        let mut start = 0;
        loop {
            if size >= limit {
                parts.push(proto::Config {
                    version: config.version,
                    base_version: config.base_version,
                    ..Default::default()
                });
                size = 0;
            }
            let take = (limit - size).min(text.len() - start);
            if let Some(last) = parts.last_mut() {
                last.documents.push(proto::Document {
                    file: document.file.clone(),
                    text: text.slice(start..start + take),
                });
            }
            size += take;
            start += take;
            if start >= text.len() {
                break;
            }
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
                let mut joined = match self.config.take() {
                    Some(mut joined) if joined.version == part.version => {
                        joined.documents.extend(part.documents);
                        joined.mesh_config = joined.mesh_config.or(part.mesh_config);
                        joined.removed.extend(part.removed);
                        joined.more = part.more;
                        joined
                    }
                    _ => part,
                };
                if joined.more {
                    self.config = Some(joined);
                    None
                } else {
                    joined.documents = join_pieces(joined.documents);
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

/// The documents, with consecutive pieces of one file joined into one document.
fn join_pieces(pieces: Vec<proto::Document>) -> Vec<proto::Document> {
    let mut documents: Vec<proto::Document> = Vec::with_capacity(pieces.len());
    let mut pieces = pieces.into_iter().peekable();
    while let Some(first) = pieces.next() {
        if pieces.peek().is_none_or(|next| next.file != first.file) {
            documents.push(first);
            continue;
        }
        let mut text = BytesMut::from(&first.text[..]);
        while let Some(piece) = pieces.next_if(|next| next.file == first.file) {
            text.extend_from_slice(&piece.text);
        }
        documents.push(proto::Document {
            file: first.file,
            text: text.freeze(),
        });
    }
    documents
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
            base_version: 0,
            removed: Vec::new(),
        }
    }

    fn joined(parts: Vec<Kind>) -> Vec<Kind> {
        let mut joiner = Parts::default();
        parts.into_iter().filter_map(|p| joiner.add(p)).collect()
    }

    #[test]
    fn a_large_configuration_goes_in_parts_and_comes_back_whole() {
        let whole = config(&[40, 40, 250, 10, 10]);
        let parts = split_config(&whole, 100);
        let pieces: Vec<Vec<(&str, usize)>> = parts
            .iter()
            .map(|p| p.documents.iter().map(|d| (d.file.as_str(), d.text.len())).collect())
            .collect();
        // 100 bytes a part at most: the 250-byte document in three pieces.
        assert_eq!(
            pieces,
            [
                vec![("0", 40), ("1", 40), ("2", 20)],
                vec![("2", 100)],
                vec![("2", 100)],
                vec![("2", 30), ("3", 10), ("4", 10)]
            ]
        );
        assert_eq!(
            parts.iter().map(|p| p.more).collect::<Vec<_>>(),
            [true, true, true, false]
        );
        assert_eq!(parts[0].mesh_config.as_deref(), Some("mesh"));
        assert!(parts[1..].iter().all(|p| p.mesh_config.is_none()));
        let back = joined(parts.into_iter().map(Kind::Config).collect());
        assert_eq!(back, [Kind::Config(whole)]);
        // A delta's base and removed files survive the parts.
        let mut delta = config(&[90, 90]);
        delta.base_version = 6;
        delta.removed = vec!["gone.yaml".into()];
        let parts = split_config(&delta, 100);
        assert!(parts.iter().all(|p| p.base_version == 6));
        assert_eq!(
            joined(parts.into_iter().map(Kind::Config).collect()),
            [Kind::Config(delta)]
        );
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
