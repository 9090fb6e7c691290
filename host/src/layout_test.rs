//! The layout is part of the architecture: no module of the host imports another in a circle
//! (each capability's module depends one way, as Spin's factors do). This reads the sources and
//! fails on the first circle, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its code names as `crate::<module>`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    fn walk(dir: &Path, top: Option<&str>, out: &mut BTreeMap<String, BTreeSet<String>>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let module = top.map_or(name.clone(), str::to_string);
            if path.is_dir() {
                walk(&path, Some(&module), out);
                continue;
            }
            if top.is_none() && matches!(name.as_str(), "lib" | "main" | "layout_test") {
                continue;
            }
            let code = std::fs::read_to_string(&path).unwrap();
            let deps = out.entry(module.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + "crate::".len()..];
                    let dep: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if dep != module {
                        deps.insert(dep);
                    }
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), None, &mut out);
    out
}

#[test]
fn no_module_imports_another_in_a_circle() {
    let graph = imports();
    assert!(graph.contains_key("pipeline") && graph.contains_key("capabilities"), "the walk found the modules: {graph:?}");
    fn visit(m: &str, graph: &BTreeMap<String, BTreeSet<String>>, path: &mut Vec<String>, done: &mut BTreeSet<String>) {
        if let Some(i) = path.iter().position(|p| p == m) {
            panic!("import circle: {}", path[i..].iter().chain([&m.to_string()]).cloned().collect::<Vec<_>>().join(" -> "));
        }
        if !done.insert(m.to_string()) {
            return;
        }
        path.push(m.to_string());
        for dep in graph.get(m).into_iter().flatten().filter(|d| graph.contains_key(*d)) {
            visit(dep, graph, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done);
    }
}
