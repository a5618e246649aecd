//! The server crate's top-level modules form layers: no module imports one that imports it
//! back, directly or through others (docs/architecture.md draws the layers). A child module
//! may use its parent's items; what is checked is the graph of `crate::<module>` paths between
//! top-level modules, leaving out each file's trailing `#[cfg(test)] mod tests` (a test-only
//! module in a file of its own, like raft/conformance.rs, is counted: it must fit the layers too).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The top-level module a file of `src` belongs to (`raft/node.rs` -> `raft`).
fn top_module(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// The code of a file without its unit tests (they come last, and may reach anywhere).
fn without_tests(source: &str) -> &str {
    match source.find("#[cfg(test)]\nmod tests") {
        Some(at) => &source[..at],
        None => source,
    }
}

/// `crate::<name>` references in code.
fn crate_refs(code: &str) -> BTreeSet<String> {
    code.match_indices("crate::")
        .filter(|(at, _)| !code[..*at].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
        .map(|(at, m)| {
            code[at + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

fn add_file(graph: &mut Graph, relative: &Path, source: &str) {
    let Some(module) = top_module(relative) else { return };
    let edges = graph.entry(module.clone()).or_default();
    edges.extend(crate_refs(without_tests(source)).into_iter().filter(|m| *m != module));
}

fn graph_of(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let source = std::fs::read_to_string(&path).unwrap();
                add_file(&mut graph, path.strip_prefix(src).unwrap(), &source);
            }
        }
    }
    graph
}

/// Every edge a -> b where b also reaches a.
fn cycles(graph: &Graph) -> Vec<(String, String)> {
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(m) = stack.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if next == to {
                    return true;
                }
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        false
    };
    let mut found = Vec::new();
    for (a, edges) in graph {
        for b in edges {
            if reaches(b, a) {
                found.push((a.clone(), b.clone()));
            }
        }
    }
    found
}

#[test]
fn server_modules_have_no_import_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("server/src");
    let graph = graph_of(&src);
    // The layers the architecture document names are all there to be checked.
    for module in ["config", "apply", "raft", "grpc", "member", "state"] {
        assert!(graph.contains_key(module), "no module {module} in {}", src.display());
    }
    assert_eq!(cycles(&graph), Vec::<(String, String)>::new(), "module graph: {graph:#?}");
}

#[test]
fn the_check_finds_a_planted_cycle() {
    let mut graph = Graph::new();
    add_file(&mut graph, Path::new("raft/node.rs"), "use crate::apply::Command;\n");
    add_file(&mut graph, Path::new("apply/mod.rs"), "use crate::error::Result;\n");
    assert!(cycles(&graph).is_empty());
    // The planted bug: a lower layer importing a higher one, through a third module.
    add_file(&mut graph, Path::new("error.rs"), "fn f() { crate::raft::node::x(); }\n");
    assert_eq!(cycles(&graph).len(), 3);
    // Test code is free to reach anywhere; `my_crate::` is not `crate::`.
    let mut graph = Graph::new();
    add_file(&mut graph, Path::new("a.rs"), "use crate::b::X;\n#[cfg(test)]\nmod tests { use crate::a; }");
    add_file(
        &mut graph,
        Path::new("b.rs"),
        "use my_crate::a::Y;\n#[cfg(test)]\nmod tests { use crate::a::Z; }",
    );
    assert!(cycles(&graph).is_empty(), "{graph:?}");
}
