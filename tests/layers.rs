//! The house's layer rule (docs/ARCHITECTURE.md), checked over the sources: a
//! module of `src/` may use (`crate::...`) only modules of its own layer or
//! below, and the modules never import each other in a cycle. A new top-level
//! module must be given a layer here, or this test fails and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom to top; a module may use its own layer and those before it.
const LAYERS: &[&[&str]] = &[
    &["text", "data_key", "command", "audit", "crc64"],
    &["resp", "format", "acl"],
    &[
        "kek",
        "keyring",
        "signing",
        "sealer",
        "opener",
        "rdb",
        "azure",
        "store",
        "aof",
        "fingerprint",
    ],
    &["replication"],
    &[
        "source",
        "inputs",
        "target",
        "feed",
        "inspect",
        "sealed_file",
    ],
    &["backup"],
    &["settings"],
    &["daemon"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Code without comments (line comments, doc comments, block comments).
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else if rest.starts_with("//") {
            rest = rest.find('\n').map_or("", |i| &rest[i..]);
        } else if rest.starts_with('"') {
            // Skip string literals: a message may mention a path.
            let mut end = 1;
            let b = rest.as_bytes();
            while end < b.len() && b[end] != b'"' {
                end += if b[end] == b'\\' { 2 } else { 1 };
            }
            rest = &rest[(end + 1).min(rest.len())..];
            out.push_str("\"\"");
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The top-level modules a file uses through `crate::`.
fn uses(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && code.as_bytes()[i - 1].is_ascii_alphanumeric() {
            continue; // e.g. `redvault_crate::`
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::X, b}`
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for part in inner.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
}

/// module -> the modules it uses, over every file of `src/`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    walk(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&f).unwrap());
        let entry = g.entry(module.clone()).or_default();
        for u in uses(&code) {
            if u != module {
                entry.insert(u);
            }
        }
    }
    g
}

#[test]
fn every_import_goes_to_its_own_layer_or_below() {
    let g = graph();
    let mut wrong = vec![];
    for (m, deps) in &g {
        let Some(lm) = layer_of(m) else {
            wrong.push(format!("module {m} has no layer in tests/layers.rs"));
            continue;
        };
        for d in deps {
            match layer_of(d) {
                None => wrong.push(format!("{m} uses {d}, which has no layer")),
                Some(ld) if ld > lm => wrong.push(format!(
                    "{m} (layer {lm}) uses {d} (layer {ld}), a layer above it"
                )),
                _ => {}
            }
        }
    }
    assert!(wrong.is_empty(), "layer rule broken:\n{}", wrong.join("\n"));
}

#[test]
fn modules_import_each_other_in_no_cycle() {
    let g = graph();
    // Depth-first search; a grey node met again closes a cycle.
    fn visit<'a>(
        m: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(1) => {
                let at = path.iter().position(|p| *p == m).unwrap();
                let mut cycle: Vec<String> = path[at..].iter().map(|s| s.to_string()).collect();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            Some(2) => return None,
            _ => {}
        }
        state.insert(m, 1);
        path.push(m);
        for d in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(d, g, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(m, 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in g.keys() {
        if let Some(cycle) = visit(m, &g, &mut state, &mut vec![]) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_imports_and_ignores_comments() {
    let code = code_of("//! crate::cli in a comment\nuse crate::{resp::Conn, text};\nlet m = \"crate::daemon\"; crate::store::Store::open(x);");
    let u = uses(&code);
    assert_eq!(
        u,
        ["resp", "store", "text"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(layer_of("backup"), Some(5));
    assert_eq!(layer_of("nonesuch"), None);
}
