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

    /// Whether the document wrote `path` (an empty map or list counts).
    pub fn contains(&self, path: &str) -> bool {
        self.get(path).is_some()
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

/// Nodes that anchors and aliases may copy into one file, beyond `COPY_RATIO` per
/// node written out in it. Aliases are the only way a YAML file's tree can outgrow
/// its text: nine levels of ten aliases each turn 700 bytes into 10^9 nodes. Bounding
/// copies by a multiple of the file's own nodes keeps memory linear in its size
/// (a serde_json node costs some 50-100 bytes, so the floor is 5-10 MB), while the
/// floor leaves room for the anchors real configurations use (a shared retry policy
/// or header block reused by every route of a file).
const COPY_FLOOR: usize = 100_000;

/// Copied nodes allowed per node written out in the file (see `COPY_FLOOR`).
const COPY_RATIO: usize = 10;

/// A container being filled.
struct Frame {
    /// Its entries so far.
    content: Content,
    /// Its own path.
    path: String,
    /// Its anchor id, 0 for none.
    anchor: usize,
    /// Nodes in it so far (keys, values and itself): what an alias of it copies.
    size: usize,
    /// Where it starts.
    at: Position,
}

enum Content {
    Seq(Vec<Value>),
    /// Entries, and the key waiting for its value.
    Map(Map<String, Value>, Option<String>),
}

#[derive(Default)]
struct Builder {
    /// The document completed by the last event.
    finished: Option<Document>,
    stack: Vec<Frame>,
    spans: SpanIndex,
    /// Anchored values with their node counts.
    anchors: HashMap<usize, (Value, usize)>,
    root: Option<Value>,
    /// The file's allowance for copies.
    budget: CopyBudget,
}

/// Counts of one file's nodes, against which copies are allowed.
#[derive(Default)]
struct CopyBudget {
    /// Nodes written out so far (scalars, keys, containers, aliases).
    written: usize,
    /// Nodes copied so far by aliases and by keeping anchored values.
    copied: usize,
}

impl CopyBudget {
    /// Counts `nodes` copied at `at`, refusing the file once copies pass its allowance.
    fn copy(&mut self, nodes: usize, at: Position) -> Result<(), SyntaxError> {
        self.copied = self.copied.saturating_add(nodes);
        let allowed = COPY_FLOOR.saturating_add(self.written.saturating_mul(COPY_RATIO));
        if self.copied > allowed {
            return Err(SyntaxError {
                message: format!(
                    "anchors and aliases expand this file by more than {allowed} nodes \
                     ({COPY_FLOOR} plus {COPY_RATIO} per node written out); refused as a likely \
                     YAML alias bomb: write the repeated parts out, or reuse fewer of them"
                ),
                position: at,
            });
        }
        Ok(())
    }
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
        let Some(frame) = self.stack.last() else {
            return Some(String::new());
        };
        let path = &frame.path;
        match &frame.content {
            Content::Seq(items) => Some(format!("{path}[{}]", items.len())),
            Content::Map(_, Some(key)) => Some(if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            }),
            Content::Map(_, None) => None,
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
                self.budget.written += 1;
                if self.next_path().is_none() {
                    // A mapping key: remember it until its value arrives.
                    if let Some(Frame {
                        content: Content::Map(_, key),
                        path,
                        size,
                        ..
                    }) = self.stack.last_mut()
                    {
                        // Keys are copied with their mapping: they count in its size.
                        *size = size.saturating_add(1);
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
                self.push(value, 1, anchor, pos(&span))?;
            }
            Event::Alias(id) => {
                self.budget.written += 1;
                let at = pos(&span);
                let Some((value, size)) = self.anchors.get(&id) else {
                    return Err(SyntaxError {
                        message: "alias refers to an unknown anchor".into(),
                        position: at,
                    });
                };
                // Counted before the copy is made: a refused copy never allocates.
                self.budget.copy(*size, at)?;
                let (value, size) = (value.clone(), *size);
                self.push(value, size, 0, at)?;
            }
            Event::SequenceStart(anchor, _) => self.open(Content::Seq(Vec::new()), anchor, &span)?,
            Event::MappingStart(anchor, _) => self.open(Content::Map(Map::new(), None), anchor, &span)?,
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let value = match frame.content {
                        Content::Seq(items) => Value::Array(items),
                        Content::Map(map, _) => Value::Object(map),
                    };
                    self.push(value, frame.size, frame.anchor, frame.at)?;
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
        Ok(())
    }

    /// Starts a container at the path the next value takes.
    fn open(&mut self, content: Content, anchor: usize, span: &Span) -> Result<(), SyntaxError> {
        self.budget.written += 1;
        let at = pos(span);
        let Some(path) = self.next_path() else {
            return Err(SyntaxError {
                message: "mapping keys must be plain scalars".into(),
                position: at,
            });
        };
        self.spans.record(&path, at, false);
        self.stack.push(Frame {
            content,
            path,
            anchor,
            size: 1,
            at,
        });
        Ok(())
    }

    /// Adds a complete node of `size` nodes (starting at `at`) to its parent.
    fn push(&mut self, value: Value, size: usize, anchor: usize, at: Position) -> Result<(), SyntaxError> {
        if let Some(path) = self.next_path() {
            self.spans.record(&path, at, false);
        }
        if anchor != 0 {
            // Keeping the anchored value is a copy too: nested anchors would
            // otherwise keep a quadratic number of nodes.
            self.budget.copy(size, at)?;
            self.anchors.insert(anchor, (value.clone(), size));
        }
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(value);
            return Ok(());
        };
        frame.size = frame.size.saturating_add(size);
        match &mut frame.content {
            Content::Seq(items) => items.push(value),
            Content::Map(map, key) => {
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

/// A "billion laughs" file: `levels` anchors under `bomb:`, each a list of ten
/// aliases of the one before, the first a list of ten strings.
#[cfg(test)]
pub(crate) fn alias_bomb(levels: usize) -> String {
    let mut text = String::from("bomb:\n  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..levels {
        let prev = format!("*l{}", i - 1);
        text.push_str(&format!("  l{i}: &l{i} [{}]\n", vec![prev; 10].join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_bombs_are_refused_at_the_alias_that_passes_the_allowance() {
        // Five levels copy some 250,000 nodes: past the allowance, yet small enough
        // for this test to survive a parser without the bound. Nine levels is the
        // size of the 739-byte file that grew past 5 GB.
        for levels in [5, 9] {
            let text = alias_bomb(levels);
            let err = parse_documents(&text).expect_err("refused");
            assert!(err.message.contains("alias bomb"), "{}", err.message);
            // l0..l3 copy about 25,000 nodes; l4 (line 6) passes 100,000.
            assert_eq!(err.position.line, 6, "{}", err.message);
        }
    }

    #[test]
    fn copies_are_counted_for_the_whole_file() {
        // Four levels stay under the allowance, twenty such documents do not.
        let one = alias_bomb(4);
        assert!(parse_documents(&one).is_ok());
        let many = vec![one; 20].join("---\n");
        assert!(parse_documents(&many).is_err());
    }

    #[test]
    fn anchors_reused_by_every_route_stay_allowed() {
        let mut text =
            String::from("common: &c {attempts: 3, perTryTimeout: 2s, retryOn: 5xx, h: {a: b, c: d}}\nroutes:\n");
        for i in 0..5_000 {
            text.push_str(&format!("- name: r{i}\n  retries: *c\n  p: {{<<: *c, extra: 1}}\n"));
        }
        let docs = parse_documents(&text).expect("parses");
        assert_eq!(docs[0].value["routes"][4_999]["p"]["h"]["c"], "d");
    }

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
