//! The engine's layers: request-path steps and runtime state below the engine
//! state, the engine below its listeners and sources. No module may use one above
//! it, and no file grows past 800 lines.

use std::path::Path;

use strait_config::testing::layering::{cycles, long_files, module_graph};

#[test]
fn no_import_cycles() {
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let found = cycles(&graph);
    let shown: Vec<String> = found
        .iter()
        .map(|c| {
            c.iter()
                .map(|m| {
                    let inside: Vec<&str> = graph[m].iter().filter(|t| c.contains(t)).map(String::as_str).collect();
                    format!("{m} -> {}", inside.join(", "))
                })
                .collect::<Vec<_>>()
                .join("\n  ")
        })
        .collect();
    assert!(found.is_empty(), "import cycles:\n  {}", shown.join("\n\n  "));
}

#[test]
fn no_file_over_800_lines() {
    let long = long_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), 800);
    assert!(long.is_empty(), "files over 800 lines: {long:?}");
}
