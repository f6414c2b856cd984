//! The module graph of a crate's sources, for tests that keep its layers acyclic: a
//! module may use the ones below it, never one above, so a change to a leaf never
//! ripples upwards through a cycle.
//!
//! Each source file is a module (`router.rs` -> `router`, `compile/route.rs` ->
//! `compile::route`, a `mod.rs` its folder). An edge is a path to another module
//! in code (`crate::a::b`, `super::x`). A `mod.rs` declaring or re-exporting its own
//! children is namespace plumbing, not a dependency, and is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module -> the modules it uses.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// The module graph of the crate whose sources are in `src`.
///
/// # Panics
/// If the folder cannot be read (a test helper: the test should fail loudly).
pub fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    collect(src, &mut files);
    let modules: BTreeMap<String, PathBuf> = files.iter().map(|f| (module_of(src, f), f.clone())).collect();
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let mut graph = Graph::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let code: Vec<&str> = code_lines(&text)
            .filter(|line| !is_child_plumbing(file, line))
            .collect();
        let mut uses = BTreeSet::new();
        for path in paths_in(&code.join("\n"), module, file) {
            if let Some(target) = longest_module(&names, &path) {
                if target != *module && !is_descendant(&target, module) {
                    uses.insert(target);
                }
            }
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

/// Every cycle's modules (one list per strongly connected component of two or more).
pub fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    // Tarjan's algorithm, iterative enough for a few hundred modules.
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// Source files longer than `max` lines, with their lengths.
///
/// # Panics
/// If the folder cannot be read.
pub fn long_files(src: &Path, max: usize) -> Vec<(String, usize)> {
    let mut files = Vec::new();
    collect(src, &mut files);
    files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).ok()?.lines().count();
            (lines > max).then(|| (f.display().to_string(), lines))
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            // Binaries are crates of their own.
            if path.file_name().is_some_and(|n| n != "bin") {
                collect(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    if parts.is_empty() {
        "crate".to_string()
    } else {
        parts.join("::")
    }
}

/// Lines of code without comments, and without the test module at the file's end.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .take_while(|l| !l.trim_start().starts_with("#[cfg(test)]"))
        .map(|l| l.split("//").next().unwrap_or(""))
}

fn is_mod_file(file: &Path) -> bool {
    file.file_name().is_some_and(|n| n == "mod.rs" || n == "lib.rs")
}

/// `mod child;` or `pub use child::...` in a `mod.rs` (on one line, as rustfmt keeps
/// short ones).
fn is_child_plumbing(file: &Path, line: &str) -> bool {
    if !is_mod_file(file) {
        return false;
    }
    let l = line.trim_start();
    let l = l
        .strip_prefix("pub(crate) ")
        .or_else(|| l.strip_prefix("pub "))
        .unwrap_or(l);
    l.starts_with("mod ") || (l.starts_with("use ") && !l.starts_with("use crate::") && !l.starts_with("use super::"))
}

/// Module paths named in `code`, made absolute (`a::b::c`); `use` trees
/// (`crate::a::{b, c::{d}}`) name each of their branches.
fn paths_in(code: &str, module: &str, file: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", String::new()), ("super::", parent_of(module, file))] {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().next_back();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let head = if base.is_empty() {
                String::new()
            } else {
                format!("{base}::")
            };
            tree(rest, &head, &mut out);
        }
    }
    out
}

/// The paths of a `use` tree starting at `text`, each prefixed with `head`.
fn tree(text: &str, head: &str, out: &mut Vec<String>) {
    let path: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let after = &text[path.len()..];
    let full = format!("{head}{}", path.trim_end_matches(':'));
    if !after.starts_with('{') || !path.ends_with("::") {
        out.push(full);
        return;
    }
    out.push(full.clone());
    // Split the braces' content at top-level commas.
    let mut depth = 0usize;
    let mut start = 1;
    for (i, c) in after.char_indices() {
        match c {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                let item = after[start..i].trim();
                if !item.is_empty() && item != "self" {
                    tree(item, &format!("{full}::"), out);
                }
                start = i + 1;
                if c == '}' {
                    return;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
}

/// The module `super` names from `module`.
fn parent_of(module: &str, file: &Path) -> String {
    // In `a/mod.rs` (module `a`), `super` is `a`'s parent; in `a/b.rs` it is `a`.
    let _ = file;
    match module.rsplit_once("::") {
        Some((parent, _)) => parent.to_string(),
        None => String::new(),
    }
}

fn longest_module(names: &BTreeSet<String>, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|candidate| names.contains(candidate))
}

fn is_descendant(target: &str, module: &str) -> bool {
    target.starts_with(&format!("{module}::"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_cycle_and_only_it() {
        let mut g = Graph::new();
        g.insert("a".into(), ["b".to_string()].into());
        g.insert("b".into(), ["c".to_string()].into());
        g.insert("c".into(), ["a".to_string()].into());
        g.insert("d".into(), ["a".to_string()].into());
        assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
        g.insert("c".into(), BTreeSet::new());
        assert!(cycles(&g).is_empty());
    }

    #[test]
    fn paths_are_read_from_code() {
        let file = Path::new("src/compile/route.rs");
        let found = paths_in(
            "use crate::snapshot::{Route, route::Action}; let x = super::regex::compile(a);",
            "compile::route",
            file,
        );
        assert!(found.contains(&"snapshot::Route".to_string()), "{found:?}");
        assert!(found.contains(&"compile::regex::compile".to_string()), "{found:?}");
        assert!(found.contains(&"snapshot::route::Action".to_string()), "{found:?}");
    }
}
