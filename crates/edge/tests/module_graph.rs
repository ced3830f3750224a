//! The edge's modules import one another in one direction only: no cycle
//! between files (doc comments and test modules aside). A new import that
//! closes a cycle fails here with the cycle named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module → the crate modules its code names (`crate::x`, `crate::{x, y}`).
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let reexports = [
        ("CloseReason", "session"),
        ("Authenticator", "auth"),
        ("Identity", "auth"),
        ("JwtConfig", "auth"),
        ("EdgeConfig", "config"),
    ];
    let mut files = Vec::new();
    for entry in std::fs::read_dir(src).expect("src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).expect("dir") {
                files.push(inner.expect("entry").path());
            }
        } else {
            files.push(path);
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in files {
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let rel = path.strip_prefix(src).expect("under src");
        let module = rel
            .iter()
            .next()
            .and_then(|c| c.to_str())
            .expect("name")
            .trim_end_matches(".rs")
            .to_owned();
        if module == "lib" || module == "layer_tests" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        let deps = graph.entry(module.clone()).or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                    group.split('}').next().unwrap_or("").split(',').collect()
                } else {
                    vec![rest]
                };
                for name in names {
                    let name: String = name
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    let name = reexports
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, m)| (*m).to_owned())
                        .unwrap_or(name);
                    if !name.is_empty() && name != module {
                        deps.insert(name);
                    }
                }
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    graph
}

/// A path from `to` back to `from`, if `from → … → to → … → from` exists.
fn path_back(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    at: &str,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    for next in &graph[at] {
        if next == from {
            return Some(vec![at.to_owned(), next.clone()]);
        }
        if seen.insert(next.clone()) {
            if let Some(mut rest) = path_back(graph, from, next, seen) {
                rest.insert(0, at.to_owned());
                return Some(rest);
            }
        }
    }
    None
}

#[test]
fn no_module_imports_itself_through_others() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert!(graph.contains_key("session") && graph.contains_key("room_index"));
    assert!(
        graph["sio"].contains("session"),
        "the scan sees imports: sio uses the Engine.IO session"
    );
    for module in graph.keys() {
        if let Some(cycle) = path_back(&graph, module, module, &mut BTreeSet::new()) {
            panic!("module cycle: {}", cycle.join(" → "));
        }
    }
}
