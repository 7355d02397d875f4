//! The module graph points one way: a module may name modules in lower layers, never one
//! above it, and the top-level modules form no cycle. `LAYERS` is the one statement of the
//! layering; the README's Layout section shows the same table and is checked against it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers from the bottom up, each with its top-level modules (`src/<name>.rs` or
/// `src/<name>/`). A module may use any module of a lower layer; modules of one layer may use
/// each other as long as no cycle forms, except surfaces (see `SURFACE_EDGES`).
const LAYERS: &[(&str, &[&str])] = &[
    (
        "leaves",
        &[
            "archive",
            "error",
            "fs",
            "home",
            "id",
            "limits",
            "outcome",
            "profile",
            "store",
            "tool",
            "workspace",
        ],
    ),
    ("engine, packages", &["deps", "engine"]),
    ("sandbox", &["sandbox"]),
    ("guests, results", &["artifact", "guest", "results"]),
    ("facade", &["dvm", "job", "remote", "session", "validate"]),
    (
        "surfaces",
        &["agent", "bench", "llm", "local", "nats", "review", "server"],
    ),
    ("command line", &["cli"]),
];

/// The layer whose modules must not use each other unless listed in `SURFACE_EDGES`.
const SURFACES: &str = "surfaces";

/// The only edges allowed between two surfaces, each with the reason.
const SURFACE_EDGES: &[(&str, &str, &str)] = &[
    (
        "agent",
        "review",
        "the agent runs its unit tests with review's pytest runner",
    ),
    (
        "llm",
        "agent",
        "the chat-completions client is one of the agent's providers",
    ),
];

/// One `crate::` (or escaping `super::`) reference from one top-level module to another.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edge {
    from: String,
    to: String,
    file: String,
    line: usize,
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// Blanks comments and the insides of string and character literals (newlines kept, so
/// offsets keep their line numbers): a path in a doc link or a message is not a dependency.
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = bytes.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for b in &mut out[from..to] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    };
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        if rest.starts_with(b"//") {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |n| i + n);
            blank(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            let mut j = i;
            while j < bytes.len() {
                if bytes[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if bytes[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if let Some(hashes) = raw_string_start(rest) {
            // r#"..."#, br#"..."#: ends at a quote followed by as many hashes.
            let open = rest.iter().position(|&b| b == b'"').unwrap() + 1;
            let mut closing = vec![b'"'];
            closing.extend(std::iter::repeat_n(b'#', hashes));
            let end = bytes[i + open..]
                .windows(closing.len())
                .position(|w| w == closing.as_slice())
                .map_or(bytes.len(), |n| i + open + n + closing.len());
            blank(
                &mut out,
                i + open,
                end.saturating_sub(closing.len()).max(i + open),
            );
            i = end;
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i + 1, j.min(bytes.len()));
            i = j + 1;
        } else if rest[0] == b'\'' {
            // A character literal ('x', '\n', '{') or a lifetime ('a).
            let len = if rest.get(1) == Some(&b'\\') {
                rest[2..].iter().position(|&b| b == b'\'').map(|n| n + 3)
            } else {
                // `'` is one byte, so the next character starts right after it.
                let width = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                (rest.get(1 + width) == Some(&b'\'')).then_some(width + 2)
            };
            match len {
                Some(len) => {
                    blank(&mut out, i + 1, i + len - 1);
                    i += len;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The number of `#` of a raw string literal starting here (`r"`, `r#"`, `br#"`), if one does.
fn raw_string_start(rest: &[u8]) -> Option<usize> {
    let after = rest
        .strip_prefix(b"br")
        .or_else(|| rest.strip_prefix(b"r"))?;
    let hashes = after.iter().take_while(|&&b| b == b'#').count();
    (after.get(hashes) == Some(&b'"')).then_some(hashes)
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The identifier at the start of `text`.
fn ident(text: &str) -> &str {
    let end = text
        .bytes()
        .position(|b| !is_ident_byte(b))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first path segments of a `{...}` use group starting just after its `{`.
fn group_heads(text: &str) -> Vec<(usize, String)> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expecting = true;
    for (at, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expecting = true,
            c if expecting && depth == 0 && (c.is_ascii_alphabetic() || c == '_') => {
                heads.push((at, ident(&text[at..]).to_string()));
                expecting = false;
            }
            _ => {}
        }
    }
    heads
}

/// The top-level module a file belongs to (`src/deps/npm.rs` → `deps`) and how deep its
/// module is (`src/x.rs` and `src/x/mod.rs` → 1, `src/x/y.rs` → 2); `None` for the crate root.
fn module_of(relative: &Path) -> Option<(String, usize)> {
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let top = parts.first()?.trim_end_matches(".rs").to_string();
    if parts.len() == 1 && (top == "lib" || top == "main") {
        return None;
    }
    let last = parts.last()?;
    let depth = if last == "mod.rs" {
        parts.len() - 1
    } else {
        parts.len()
    };
    Some((top, depth))
}

/// Every reference in one file from its top-level module to another: `crate::m`,
/// `crate::{m, ...}`, `crate::Name` re-exported at the root from `m`, and `super::` chains
/// that climb out of the top-level module.
fn edges_of(
    file: &str,
    relative: &Path,
    text: &str,
    reexports: &BTreeMap<String, String>,
) -> Vec<Edge> {
    let Some((from, depth)) = module_of(relative) else {
        return Vec::new();
    };
    let code = code_only(text);
    let line_at = |at: usize| code[..at].bytes().filter(|&b| b == b'\n').count() + 1;
    let mut targets: Vec<(usize, String)> = Vec::new();
    let resolve = |name: &str| -> Option<String> {
        if name.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
            reexports.get(name).cloned()
        } else {
            Some(name.to_string())
        }
    };
    // Inline `mod name { ... }` blocks deepen the module, which `super::` counts from.
    let mut inline_at: Vec<(usize, usize)> = Vec::new(); // (offset, inline depth after it)
    let mut braces: Vec<bool> = Vec::new();
    let bytes = code.as_bytes();
    for (at, b) in bytes.iter().enumerate() {
        match b {
            b'{' => {
                let before = code[..at].trim_end();
                let word_end = before.len();
                let word_start = before
                    .bytes()
                    .rposition(|b| !is_ident_byte(b))
                    .map_or(0, |p| p + 1);
                let head = before[..word_start].trim_end();
                let opens_mod = word_start < word_end
                    && (head.ends_with(" mod") || head == "mod" || head.ends_with("\nmod"));
                braces.push(opens_mod);
                inline_at.push((at, braces.iter().filter(|&&m| m).count()));
            }
            b'}' => {
                braces.pop();
                inline_at.push((at, braces.iter().filter(|&&m| m).count()));
            }
            _ => {}
        }
    }
    let inline_depth = |at: usize| {
        let index = inline_at.partition_point(|&(offset, _)| offset < at);
        index.checked_sub(1).map_or(0, |i| inline_at[i].1)
    };
    let mut search = 0;
    while let Some(found) = code[search..].find("crate::") {
        let at = search + found;
        search = at + "crate::".len();
        if at > 0 && is_ident_byte(bytes[at - 1]) {
            continue;
        }
        let rest = &code[search..];
        if let Some(group) = rest.strip_prefix('{') {
            for (offset, head) in group_heads(group) {
                targets.push((search + 1 + offset, head));
            }
        } else {
            targets.push((at, ident(rest).to_string()));
        }
    }
    let mut search = 0;
    while let Some(found) = code[search..].find("super::") {
        let at = search + found;
        search = at + "super::".len();
        if at > 0 && (is_ident_byte(bytes[at - 1]) || code[..at].ends_with("::")) {
            continue;
        }
        let mut supers = 1;
        let mut rest = &code[search..];
        while let Some(more) = rest.strip_prefix("super::") {
            supers += 1;
            rest = more;
        }
        if supers == depth + inline_depth(at) {
            targets.push((at, ident(rest).to_string()));
        }
    }
    let mut edges = Vec::new();
    for (at, name) in targets {
        let Some(to) = resolve(&name) else { continue };
        if to.is_empty() || to == from || to == "self" {
            continue;
        }
        edges.push(Edge {
            from: from.clone(),
            to,
            file: file.to_string(),
            line: line_at(at),
        });
    }
    edges
}

/// Root re-exports (`pub use crate::m::...::{A, B}` in lib.rs): name → module.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let code = code_only(lib);
    let mut names = BTreeMap::new();
    for statement in code.split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use crate::") else {
            continue;
        };
        let module = ident(path).to_string();
        let last = path.rsplit("::").next().unwrap_or_default();
        let items = last.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let name = item.rsplit(" as ").next().unwrap_or_default().trim();
            if !name.is_empty() {
                names.insert(name.to_string(), module.clone());
            }
        }
    }
    names
}

/// What is wrong with a module graph: modules missing from `LAYERS`, edges that point up a
/// layer or between surfaces without a reason, and cycles.
fn problems(modules: &BTreeSet<String>, edges: &[Edge]) -> Vec<String> {
    let mut problems = Vec::new();
    for module in modules {
        if layer_of(module).is_none() {
            problems.push(format!(
                "src/{module}: the module `{module}` is in no layer; add it to LAYERS in \
                 tests/all/layers.rs and to the README's Layout section"
            ));
        }
    }
    for edge in edges {
        let (Some(from), Some(to)) = (layer_of(&edge.from), layer_of(&edge.to)) else {
            continue;
        };
        let shown = format!("{}:{}: {} -> {}", edge.file, edge.line, edge.from, edge.to);
        if to > from {
            problems.push(format!(
                "{shown} points up: `{}` is in layer \"{}\", above `{}` in \"{}\"",
                edge.to, LAYERS[to].0, edge.from, LAYERS[from].0
            ));
        } else if to == from
            && LAYERS[from].0 == SURFACES
            && !SURFACE_EDGES
                .iter()
                .any(|(a, b, _)| *a == edge.from && *b == edge.to)
        {
            problems.push(format!(
                "{shown}: surfaces must not use each other; move what they share down a layer"
            ));
        }
    }
    // Cycles among top-level modules: a depth-first search, reporting each once.
    let mut graph: BTreeMap<&str, BTreeMap<&str, &Edge>> = BTreeMap::new();
    for edge in edges {
        graph
            .entry(edge.from.as_str())
            .or_default()
            .entry(edge.to.as_str())
            .or_insert(edge);
    }
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut seen_cycles: BTreeSet<Vec<&str>> = BTreeSet::new();
    fn visit<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, BTreeMap<&'a str, &'a Edge>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        seen: &mut BTreeSet<Vec<&'a str>>,
        problems: &mut Vec<String>,
    ) {
        if let Some(start) = path.iter().position(|&n| n == node) {
            let cycle = &path[start..];
            let mut key = cycle.to_vec();
            let smallest = (0..key.len()).min_by_key(|&i| key[i]).unwrap_or(0);
            key.rotate_left(smallest);
            if seen.insert(key) {
                let steps: Vec<String> = cycle
                    .iter()
                    .enumerate()
                    .map(|(i, from)| {
                        let to = cycle.get(i + 1).copied().unwrap_or(node);
                        let edge = graph[from][to];
                        format!("{from} -> {to} ({}:{})", edge.file, edge.line)
                    })
                    .collect();
                problems.push(format!("cycle: {}", steps.join(", ")));
            }
            return;
        }
        if done.contains(node) {
            return;
        }
        path.push(node);
        if let Some(next) = graph.get(node) {
            for &to in next.keys() {
                visit(to, graph, path, done, seen, problems);
            }
        }
        path.pop();
        done.insert(node);
    }
    for &node in graph.keys() {
        visit(
            node,
            &graph,
            &mut Vec::new(),
            &mut done,
            &mut seen_cycles,
            &mut problems,
        );
    }
    problems
}

/// The layer table as the README shows it, top layer first.
fn table() -> String {
    let width = LAYERS.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    LAYERS
        .iter()
        .rev()
        .map(|(name, modules)| format!("{name:<width$}  {}\n", modules.join(" ")))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn dependencies_point_down_the_layers_and_form_no_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let reexports = reexports(&lib);
    assert!(
        reexports.get("Dvm").map(String::as_str) == Some("dvm"),
        "lib.rs re-exports were not read: {reexports:?}"
    );
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut modules = BTreeSet::new();
    let mut edges = Vec::new();
    for path in &files {
        let relative = path.strip_prefix(&src).unwrap();
        let Some((module, _)) = module_of(relative) else {
            continue;
        };
        modules.insert(module);
        let text = std::fs::read_to_string(path).unwrap();
        let shown = format!("src/{}", relative.display());
        edges.extend(edges_of(&shown, relative, &text, &reexports));
    }
    assert!(
        edges.iter().any(|e| e.from == "cli" && e.to == "server"),
        "the scan found no cli -> server edge; it is not reading the sources"
    );
    let problems = problems(&modules, &edges);
    assert!(
        problems.is_empty(),
        "the module graph breaks the layers (tests/all/layers.rs, README \"Layout\"):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_readme_shows_the_layer_table() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let table = table();
    assert!(
        readme.contains(&table),
        "the README's Layout section must contain the layer table of tests/all/layers.rs \
         exactly:\n{table}"
    );
    for (from, to, _) in SURFACE_EDGES {
        assert!(
            readme.contains(&format!("`{from}` → `{to}`")),
            "the README's Layout section must name the surface edge `{from}` → `{to}`"
        );
    }
}

#[test]
fn the_checker_finds_up_edges_cycles_and_hidden_paths() {
    let reexports = BTreeMap::from([("Dvm".to_string(), "dvm".to_string())]);
    let sandbox = "use crate::{error::Error, deps::PackageSet};\n\
                   // crate::cli in a comment is no edge\n\
                   const S: &str = \"crate::server\";\n\
                   const C: char = '{';\n\
                   fn f() -> crate::Dvm { todo() }\n";
    let edges = edges_of(
        "src/sandbox.rs",
        Path::new("sandbox.rs"),
        sandbox,
        &reexports,
    );
    let shown: Vec<(&str, usize)> = edges.iter().map(|e| (e.to.as_str(), e.line)).collect();
    assert_eq!(shown, [("error", 1), ("deps", 1), ("dvm", 5)]);

    // `super::` from a top-level file reaches the crate root; inside an inline module it
    // reaches the file's own module; from a nested file it needs two.
    let top = "use super::engine::X;\nmod tests { use super::*; use super::super::limits::L; }\n";
    let edges = edges_of("src/deps/mod.rs", Path::new("deps/mod.rs"), top, &reexports);
    let shown: Vec<(&str, usize)> = edges.iter().map(|e| (e.to.as_str(), e.line)).collect();
    assert_eq!(shown, [("engine", 1), ("limits", 2)]);
    let nested = "use super::spec::X;\nuse super::super::guest::Y;\n";
    let edges = edges_of(
        "src/deps/npm.rs",
        Path::new("deps/npm.rs"),
        nested,
        &reexports,
    );
    assert_eq!(edges.len(), 1);
    assert_eq!((edges[0].to.as_str(), edges[0].line), ("guest", 2));

    let edge = |from: &str, to: &str| Edge {
        from: from.into(),
        to: to.into(),
        file: format!("src/{from}.rs"),
        line: 7,
    };
    let modules: BTreeSet<String> = ["sandbox", "engine", "deps", "nats", "server", "widget"]
        .map(String::from)
        .into();
    let found = problems(
        &modules,
        &[
            edge("engine", "sandbox"),
            edge("sandbox", "engine"),
            edge("deps", "engine"),
            edge("engine", "deps"),
            edge("nats", "server"),
        ],
    );
    let all = found.join("\n");
    assert!(
        all.contains("src/engine.rs:7: engine -> sandbox points up"),
        "{all}"
    );
    assert!(
        all.contains("cycle: deps -> engine (src/deps.rs:7), engine -> deps"),
        "{all}"
    );
    assert!(
        all.contains("src/nats.rs:7: nats -> server: surfaces must not"),
        "{all}"
    );
    assert!(all.contains("`widget` is in no layer"), "{all}");
    assert!(!all.contains("deps -> engine points up"), "{all}");
}
