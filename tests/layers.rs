//! lib.rs promises that data flows one way down its list of modules and that no module reaches
//! back up it. This reads every `crate::` and `super::` path in src/ (outside comments and test
//! modules) and fails on an import that runs back up [`LAYERS`], or on a circle between the
//! files of one module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// lib.rs's modules, top to bottom: each may use only those below it.
const LAYERS: &[&str] = &[
    "cli",
    "worker",
    "exec",
    "graph",
    "config",
    "steps",
    "sandbox",
    "vm",
    "cache",
    "fingerprint",
    "inspect",
    "disk",
    "tfs",
    "jobs",
    "yaml",
    "paths",
    "diag",
    "fsutil",
    "sys",
];

/// A module's path from the crate root (`["exec", "runner"]`), by its file.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    match last.as_str() {
        "mod.rs" | "lib.rs" | "main.rs" => {}
        f => parts.push(f.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// The source without line comments, doc comments and `#[cfg(test)]` modules.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            while lines.peek().is_some_and(|l| l.trim_start().starts_with("#[")) {
                lines.next();
            }
            if !lines.peek().is_some_and(|l| l.trim_start().starts_with("mod ")) {
                continue;
            }
            // A test module runs to the line that closes it at its own indent.
            let indent = lines.peek().map_or(0, |l| l.len() - l.trim_start().len());
            let close = format!("{}}}", " ".repeat(indent));
            for l in lines.by_ref() {
                if l == close {
                    break;
                }
            }
            continue;
        }
        if !line.trim_start().starts_with("//") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Every module path named after `prefix` in `code`: `prefix::a::b` and each item of
/// `prefix::{a, b::c}`, as the list of names that follow.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let ident = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|p| p.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>())
            .take_while(|p| !p.is_empty())
            .collect()
    };
    let mut found = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        if code[..i].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let body = &group[..group.find('}').unwrap_or(group.len())];
            found.extend(body.split(',').map(|item| ident(item.trim())).filter(|p| !p.is_empty()));
        } else {
            found.push(ident(rest));
        }
    }
    found
}

#[test]
fn no_import_runs_back_up_lib_rs_s_order_and_no_module_s_files_form_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: BTreeMap<Vec<String>, String> = BTreeMap::new();
    for entry in walkdir::WalkDir::new(&src) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(&src).unwrap();
        if entry.file_type().is_file()
            && rel.extension().is_some_and(|e| e == "rs")
            && rel != Path::new("main.rs")
        {
            files.insert(module_of(rel), code_of(&std::fs::read_to_string(entry.path()).unwrap()));
        }
    }
    let lib = files.get(&Vec::new()).expect("src/lib.rs").clone();
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").or_else(|| l.trim().strip_prefix("mod ")))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    let listed: BTreeSet<String> = LAYERS.iter().map(|s| s.to_string()).collect();
    assert_eq!(declared, listed, "every module of lib.rs has its place in LAYERS, and only those");

    // The module a path names: the longest prefix of it that is a file.
    let module_named = |path: &[String]| -> Option<Vec<String>> {
        (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|m| files.contains_key(m))
    };
    let layer = |m: &[String]| LAYERS.iter().position(|l| m.first().is_some_and(|f| f == l));
    let mut up = Vec::new();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (from, code) in files.iter().filter(|(m, _)| !m.is_empty()) {
        let mut named: Vec<Vec<String>> = paths_after(code, "crate::");
        for p in paths_after(code, "super::") {
            let mut full = from[..from.len() - 1].to_vec();
            full.extend(p);
            named.push(full);
        }
        for to in named.iter().filter_map(|p| module_named(p)) {
            if to.is_empty() || from.starts_with(&to) || to.starts_with(from) {
                continue;
            }
            if to[0] != from[0] {
                if layer(&to) < layer(from) {
                    up.push(format!("{} uses {}", from.join("::"), to.join("::")));
                }
            } else {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    assert!(up.is_empty(), "imports that run back up lib.rs's order:\n{}", up.join("\n"));

    // A circle between the files of one module: a depth-first walk finding a file on its path.
    fn walk(
        at: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        path: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<String> {
        if let Some(i) = path.iter().position(|p| p == at) {
            let circle: Vec<String> = path[i..].iter().chain([at]).map(|m| m.join("::")).collect();
            return Some(circle.join(" -> "));
        }
        if !done.insert(at.clone()) {
            return None;
        }
        path.push(at.clone());
        let found = edges.get(at).into_iter().flatten().find_map(|next| walk(next, edges, path, done));
        path.pop();
        found
    }
    let mut done = BTreeSet::new();
    for start in edges.keys() {
        let circle = walk(start, &edges, &mut Vec::new(), &mut done);
        assert!(circle.is_none(), "files of one module in a circle: {}", circle.unwrap_or_default());
    }
}
