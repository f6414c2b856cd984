//! YAML (and JSON) documents turned into `serde_json::Value`s that remember where
//! every node came from, so diagnostics can name a file, line and column for any
//! field path.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Position {
    /// Line, starting at 1.
    pub line: usize,
    /// Column, starting at 1.
    pub column: usize,
}

/// Where each node of one document starts, keyed by field path
/// (`spec.http[0].match[0].uri.regex`; the root is the empty path).
///
/// Paths are stored as 64-bit hashes: every node of every loaded document has an
/// entry, and full path strings made this index the largest part of a big bundle.
#[derive(Debug, Clone, Default)]
pub struct SpanIndex {
    positions: HashMap<u64, (u32, u32)>,
}

fn path_key(path: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed keys: the same path always gives the same key.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

impl SpanIndex {
    /// The position of `path`, or of its closest recorded ancestor.
    pub fn locate(&self, path: &str) -> Position {
        let mut p = path;
        loop {
            if let Some(pos) = self.get(p) {
                return pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.get("").unwrap_or_default(),
            }
        }
    }

    fn get(&self, path: &str) -> Option<Position> {
        self.positions.get(&path_key(path)).map(|(line, column)| Position {
            line: *line as usize,
            column: *column as usize,
        })
    }

    /// Records `at` for `path`; `replace` decides whether an earlier entry gives way.
    fn record(&mut self, path: &str, at: Position, replace: bool) {
        let value = (
            u32::try_from(at.line).unwrap_or(u32::MAX),
            u32::try_from(at.column).unwrap_or(u32::MAX),
        );
        let entry = self.positions.entry(path_key(path));
        if replace {
            entry.insert_entry(value);
        } else {
            entry.or_insert(value);
        }
    }
}

/// One YAML document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    /// The document's content.
    pub value: Value,
    /// Positions of its nodes.
    pub spans: SpanIndex,
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// What the parser said.
    pub message: String,
    /// Where.
    pub position: Position,
}

/// Parses every document in `text`. Empty documents are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let mut docs = Vec::new();
    for_each_document(text, |d| docs.push(d))?;
    Ok(docs)
}

/// Parses `text`, handing each non-empty document to `f` as soon as it is complete,
/// so a large file never holds all its documents' trees at once. Documents before a
/// syntax error are handed over before the error is returned.
pub fn for_each_document(text: &str, mut f: impl FnMut(Document)) -> Result<(), SyntaxError> {
    let mut builder = Builder::default();
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| SyntaxError {
            message: e.info().to_string(),
            position: Position {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
        })?;
        builder.event(event, span)?;
        if let Some(doc) = builder.finished.take() {
            f(doc);
        }
    }
    Ok(())
}

/// A container being filled, with the path of the container itself.
enum Frame {
    Seq(Vec<Value>, String, usize),
    Map(Map<String, Value>, String, Option<String>, usize),
}

#[derive(Default)]
struct Builder {
    /// The document completed by the last event.
    finished: Option<Document>,
    stack: Vec<Frame>,
    spans: SpanIndex,
    anchors: HashMap<usize, Value>,
    root: Option<Value>,
}

fn pos(span: &Span) -> Position {
    Position {
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

impl Builder {
    /// The path the next value will take, or `None` when the next scalar is a map key.
    fn next_path(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Seq(items, path, _)) => Some(format!("{path}[{}]", items.len())),
            Some(Frame::Map(_, path, Some(key), _)) => Some(if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            }),
            Some(Frame::Map(_, _, None, _)) => None,
        }
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), SyntaxError> {
        match event {
            Event::DocumentStart(_) => {
                self.spans = SpanIndex::default();
                self.anchors.clear();
                self.root = None;
            }
            Event::DocumentEnd => {
                if let Some(value) = self.root.take() {
                    if !value.is_null() {
                        self.finished = Some(Document {
                            value,
                            spans: std::mem::take(&mut self.spans),
                        });
                    }
                }
            }
            Event::Scalar(text, style, anchor, _) => {
                if self.next_path().is_none() {
                    // A mapping key: remember it until its value arrives.
                    if let Some(Frame::Map(_, path, key, _)) = self.stack.last_mut() {
                        let full = if path.is_empty() {
                            text.to_string()
                        } else {
                            format!("{path}.{text}")
                        };
                        self.spans.record(&full, pos(&span), true);
                        *key = Some(text.into_owned());
                    }
                    return Ok(());
                }
                let value = scalar(&text, style);
                self.push(value, anchor, Some(pos(&span)))?;
            }
            Event::Alias(id) => {
                let value = self.anchors.get(&id).cloned().ok_or_else(|| SyntaxError {
                    message: "alias refers to an unknown anchor".into(),
                    position: pos(&span),
                })?;
                self.push(value, 0, Some(pos(&span)))?;
            }
            Event::SequenceStart(anchor, _) => {
                let path = self.container_path(&span)?;
                self.stack.push(Frame::Seq(Vec::new(), path, anchor));
            }
            Event::MappingStart(anchor, _) => {
                let path = self.container_path(&span)?;
                self.stack.push(Frame::Map(Map::new(), path, None, anchor));
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(items, _, anchor)) = self.stack.pop() {
                    self.push(Value::Array(items), anchor, None)?;
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(map, _, _, anchor)) = self.stack.pop() {
                    self.push(Value::Object(map), anchor, None)?;
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
        Ok(())
    }

    fn container_path(&mut self, span: &Span) -> Result<String, SyntaxError> {
        match self.next_path() {
            Some(path) => {
                self.spans.record(&path, pos(span), false);
                Ok(path)
            }
            None => Err(SyntaxError {
                message: "mapping keys must be plain scalars".into(),
                position: pos(span),
            }),
        }
    }

    fn push(&mut self, value: Value, anchor: usize, at: Option<Position>) -> Result<(), SyntaxError> {
        if let (Some(at), Some(path)) = (at, self.next_path()) {
            self.spans.record(&path, at, false);
        }
        if anchor != 0 {
            self.anchors.insert(anchor, value.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq(items, _, _)) => items.push(value),
            Some(Frame::Map(map, _, key, _)) => {
                if let Some(key) = key.take() {
                    if key == "<<" {
                        // YAML merge key: copy the anchored mapping's entries in.
                        if let Value::Object(merged) = value {
                            for (k, v) in merged {
                                map.entry(k).or_insert(v);
                            }
                        }
                    } else {
                        map.insert(key, value);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Resolves a scalar with the YAML 1.2 core schema; quoted scalars stay strings.
fn scalar(text: &str, style: ScalarStyle) -> Value {
    if style != ScalarStyle::Plain {
        return Value::String(text.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::Number(i.into());
        }
    }
    let looks_numeric = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    if looks_numeric && text.bytes().any(|b| b.is_ascii_digit()) {
        if let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_with_positions() {
        let text = "a: 1\nb:\n  - x\n  - y: 'true'\n---\n# empty\n---\nc: [1, 2]\n";
        let docs = parse_documents(text).expect("parses");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value["a"], 1);
        assert_eq!(docs[0].value["b"][1]["y"], "true");
        assert_eq!(docs[0].spans.locate("b[1].y"), Position { line: 4, column: 5 });
        assert_eq!(docs[0].spans.locate("b[0]"), Position { line: 3, column: 5 });
        assert_eq!(docs[1].value["c"][1], 2);
        assert_eq!(docs[1].spans.locate("c[1].missing"), Position { line: 8, column: 8 });
    }

    #[test]
    fn anchors_and_merge_keys() {
        let docs = parse_documents("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n").expect("parses");
        assert_eq!(docs[0].value["other"]["x"], 1);
        assert_eq!(docs[0].value["other"]["y"], 2);
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse_documents("a: [1, 2\nb: 3\n").expect_err("unterminated flow");
        assert!(err.position.line >= 1);
    }

    #[test]
    fn json_is_yaml() {
        let docs = parse_documents("{\"kind\": \"Gateway\", \"n\": 1.5}").expect("parses");
        assert_eq!(docs[0].value["kind"], "Gateway");
        assert_eq!(docs[0].value["n"], 1.5);
    }
}
