//! The shape of the crate, checked from its source: the top-level modules
//! form no import cycle, `model` imports no other module, `config` only
//! `model`, no module reaches back into the crate root (which wires the
//! modules together and re-exports, nothing more), and the library uses
//! none of the binary's crates (`src/cli/`'s clap, reqwest and toml).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The library's source files: all of `src/` but the binary's `main.rs`
/// and `cli/`.
fn library_files() -> Vec<std::path::PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && p != src.join("cli") {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") && p != src.join("main.rs") {
                files.push(p);
            }
        }
    }
    files
}

/// Top-level module -> the top-level modules (or root items) it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = library_files();
    assert!(files.len() > 40, "{files:?}");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let deps = graph.entry(module.clone()).or_default();
        for name in crate_paths(&text) {
            if name != module {
                deps.insert(name);
            }
        }
    }
    graph
}

/// The first segment of every `crate::…` path, grouped imports included.
fn crate_paths(text: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            out.extend(group[..end].split(',').map(ident).filter(|s| !s.is_empty()));
        } else {
            out.push(ident(rest));
        }
    }
    out
}

#[test]
fn the_top_level_modules_form_no_cycle() {
    let graph = graph();
    // Depth-first search, reporting the first cycle found.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = path.iter().position(|p| p == m) {
            panic!("import cycle: {} -> {m}", path[at..].join(" -> "));
        }
        path.push(m.to_string());
        for d in graph.get(m).into_iter().flatten() {
            if graph.contains_key(d) {
                visit(d, graph, path, done);
            }
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
    assert!(graph.len() >= 10, "modules found: {:?}", graph.keys());
}

#[test]
fn model_is_a_leaf_and_config_depends_on_it_alone() {
    let graph = graph();
    assert_eq!(
        graph["model"],
        BTreeSet::new(),
        "model imports {:?}",
        graph["model"]
    );
    let config: Vec<&String> = graph["config"].iter().filter(|d| *d != "model").collect();
    assert!(config.is_empty(), "config imports {config:?}");
}

#[test]
fn no_module_reaches_back_into_the_crate_root() {
    let graph = graph();
    for (m, deps) in &graph {
        let root: Vec<&String> = deps.iter().filter(|d| !graph.contains_key(*d)).collect();
        assert!(root.is_empty(), "{m} names crate-root items {root:?}");
    }
}

#[test]
fn the_scanner_sees_grouped_imports() {
    assert_eq!(
        crate_paths("use crate::{a::B, c, d::{e}};\nlet x = crate::f::g();"),
        ["a", "c", "d", "f"]
    );
}

/// The command line's crates are optional (`cli` feature) and used only by
/// the binary; `cargo check -p bilten-analytics --lib --no-default-features`
/// builds the library without them.
#[test]
fn the_library_uses_none_of_the_binarys_crates() {
    let binary_only = ["clap", "reqwest", "toml"];
    for file in library_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for name in binary_only {
            let used = text.lines().any(|line| {
                let code = line.split("//").next().unwrap_or("");
                code.contains(&format!("{name}::"))
                    || code.contains(&format!("use {name}"))
                    || code.contains(&format!("{name}::{{"))
            });
            assert!(!used, "{} uses {name}", file.display());
        }
    }
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let dependencies = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap();
    for name in binary_only {
        let line = dependencies
            .lines()
            .find(|l| l.starts_with(&format!("{name} = ")))
            .unwrap_or_else(|| panic!("{name} is not a dependency"));
        assert!(line.contains("optional = true"), "{line}");
    }
}
