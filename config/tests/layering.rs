//! The config crate's layers: leaves, resources, the snapshot model, its compilers,
//! translation and validation, the pipeline. No module may use one above it.

use std::path::Path;

use strait_config::testing::layering::{cycles, long_files, module_graph};

#[test]
fn no_import_cycles() {
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let found = cycles(&graph);
    let shown: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .map(|m| {
                    let inside: Vec<&str> = graph[m].iter().filter(|t| c.contains(t)).map(String::as_str).collect();
                    format!("{m} -> {}", inside.join(", "))
                })
                .collect();
            edges.join("\n  ")
        })
        .collect();
    assert!(found.is_empty(), "import cycles:\n  {}", shown.join("\n\n  "));
}

#[test]
fn no_file_over_800_lines() {
    let long = long_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), 800);
    assert!(long.is_empty(), "files over 800 lines: {long:?}");
}
