//! The module graph of `host/src`, read from the source as the next
//! engineer would draw it: no top-level module may import one that imports
//! it back, and the bottom floor imports nothing of the crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module -> the top-level modules its files name as
/// `crate::NAME` (tests excluded: they may reach anywhere).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(&root).unwrap();
            let top = relative
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let used = graph.entry(top.clone()).or_default();
            for (at, _) in code.match_indices("crate::") {
                let name: String = code[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    used.insert(name);
                }
            }
        }
    }
    graph
}

/// The path from `from` to `to` in `graph`, if there is one.
fn path(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> Option<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut queue = vec![vec![from.to_owned()]];
    while let Some(trail) = queue.pop() {
        let last = trail.last().unwrap().clone();
        for next in graph.get(&last).into_iter().flatten() {
            let mut longer = trail.clone();
            longer.push(next.clone());
            if next == to {
                return Some(longer);
            }
            if seen.insert(next.clone()) {
                queue.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = imports();
    assert!(graph.contains_key("capability") && graph.contains_key("engine"));
    for (module, used) in &graph {
        for other in used {
            if let Some(back) = path(&graph, other, module) {
                panic!(
                    "`{module}` imports `{other}`, which leads back to it: {}",
                    back.join(" -> ")
                );
            }
        }
    }
}

#[test]
fn the_bottom_floor_imports_nothing_of_the_crate() {
    let graph = imports();
    for bottom in [
        "grant",
        "redact",
        "jsonl",
        "diagnostic",
        "expression",
        "schedule",
        "terminal",
        "fault",
        "wit",
        "signature",
        "oci",
    ] {
        let used = &graph[bottom];
        assert!(used.is_empty(), "`{bottom}` imports {used:?}");
    }
}
