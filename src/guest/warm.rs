//! Warm starts for the `python` runtime: which snapshot a script starts from.
//!
//! Every `python` sandbox starts from a snapshot with the standard-library modules generated
//! code commonly uses already imported ([`STDLIB`]). A script that imports one of the heavy
//! built-in libraries ([`LIBRARIES`]: numpy, pandas, …) starts from a snapshot that also has
//! those imported, when one exists. The imports are read on the host from the script's text
//! ([`library_imports`]): a cheap, conservative scan whose only consequences are which
//! snapshot a run starts from (a miss is a slower start, never a different result).
//!
//! Snapshots are published in a listing under `$DVM_HOME/snapshots/sets/` once their
//! compiled module exists, so choosing one never waits for a build ([`pick`]).

use serde::{Deserialize, Serialize};

/// Standard-library modules every `python` sandbox starts with imported, chosen by what they
/// cost a fresh sandbox to import (fuel, measured) against what they add to the snapshot:
/// the modules generated programs and their tests import most. Modules that take state from
/// the process when imported are left out, so a run from the snapshot is the same as a cold
/// one, byte for byte, even under a fixed seed: `random` (and what imports it: `statistics`,
/// `tempfile`, `secrets`) seeds itself from the sandbox's entropy; `logging` records its
/// start time. [`EXCLUDED`] lists them and a test checks none of them is in the snapshot.
pub const STDLIB: &[&str] = &[
    "abc",
    "argparse",
    "array",
    "ast",
    "base64",
    "bisect",
    "calendar",
    "collections",
    "collections.abc",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "fractions",
    "functools",
    "hashlib",
    "heapq",
    "inspect",
    "io",
    "itertools",
    "json",
    "math",
    "numbers",
    "operator",
    "pathlib",
    "pprint",
    "re",
    "string",
    "struct",
    "textwrap",
    "time",
    "traceback",
    "types",
    "typing",
    "unittest",
    "uuid",
];

/// Modules the standard-library snapshot must not hold (see [`STDLIB`]).
pub const EXCLUDED: &[&str] = &["logging", "random", "secrets", "statistics", "tempfile"];

/// Top-level names of the built-in libraries a snapshot may hold beyond [`STDLIB`]: heavy to
/// import, free of import-time side effects a run could observe.
pub const LIBRARIES: &[&str] = &[
    "matplotlib",
    "numpy",
    "pandas",
    "scipy",
    "seaborn",
    "sklearn",
    "statsmodels",
];

/// The named groups `dvm runtimes install python --preload NAME` understands.
pub fn named_group(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "data" => Some(&["matplotlib.pyplot", "numpy", "pandas", "scipy", "sklearn"]),
        _ => None,
    }
}

/// How much of a script is read for its imports: they are at the top of real programs.
const SCAN_BYTES: usize = 256 << 10;
/// At most this many library modules are taken from one script.
const MAX_MODULES: usize = 16;

/// The library modules (dotted names as the script writes them, under a top-level name in
/// [`LIBRARIES`]) that `source` imports: `import numpy as np`, `import matplotlib.pyplot as
/// plt`, `from pandas import DataFrame` (→ `pandas`), `from scipy.stats import norm` (→
/// `scipy.stats`). Lines are read as text: an import inside a string may count too, which
/// only means an import done ahead. Sorted, without duplicates.
pub fn library_imports(source: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(&source[..source.len().min(SCAN_BYTES)]);
    let mut found = Vec::new();
    for line in text.lines() {
        for statement in line.split(';') {
            let statement = statement.split('#').next().unwrap_or("").trim();
            if let Some(rest) = statement.strip_prefix("import ") {
                for item in rest.split(',') {
                    let name = item.split_whitespace().next().unwrap_or("");
                    push_library(&mut found, name);
                }
            } else if let Some(rest) = statement.strip_prefix("from ") {
                let mut words = rest.split_whitespace();
                if let (Some(name), Some("import")) = (words.next(), words.next()) {
                    push_library(&mut found, name);
                }
            }
            if found.len() >= MAX_MODULES {
                break;
            }
        }
    }
    found.sort();
    found.dedup();
    found.truncate(MAX_MODULES);
    found
}

fn push_library(found: &mut Vec<String>, name: &str) {
    let top = name.split('.').next().unwrap_or("");
    if LIBRARIES.contains(&top) && super::snapshot::valid_module_name(name) {
        found.push(name.to_string());
    }
}

/// The top-level package of a dotted module name.
fn top(module: &str) -> &str {
    module.split('.').next().unwrap_or(module)
}

/// The modules of a snapshot holding `libraries`: the standard-library set plus them,
/// sorted.
pub fn with_stdlib(libraries: &[String]) -> Vec<String> {
    let mut modules: Vec<String> = STDLIB.iter().map(|m| m.to_string()).collect();
    modules.extend(libraries.iter().cloned());
    modules.sort();
    modules.dedup();
    modules
}

/// The modules of a snapshot's list beyond the standard-library set.
pub fn libraries_of(modules: &[String]) -> Vec<&str> {
    modules
        .iter()
        .map(String::as_str)
        .filter(|m| !STDLIB.contains(m))
        .collect()
}

/// A published snapshot as the listing records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// blake3 of the runtime module the snapshot was made from.
    pub base: String,
    /// Every module imported in it (the standard-library set included).
    pub modules: Vec<String>,
    /// Bytes of linear memory a sandbox of it starts with.
    pub memory_bytes: u64,
}

impl Published {
    /// The library modules it holds beyond the standard-library set.
    pub fn libraries(&self) -> Vec<&str> {
        libraries_of(&self.modules)
    }
}

/// Listing entries larger than this are not snapshots dvm wrote.
const MAX_LISTING_BYTES: u64 = 64 << 10;

/// Reads the listing of published snapshots under `dir` (malformed or oversized entries are
/// skipped: they only cost a warm start).
pub fn read_listing(dir: &std::path::Path) -> Vec<Published> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut published = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(Ok(bytes)) = crate::fs::read_regular_file(&path, MAX_LISTING_BYTES) else {
            continue;
        };
        if let Ok(entry) = serde_json::from_slice::<Published>(&bytes)
            && entry
                .modules
                .iter()
                .all(|m| super::snapshot::valid_module_name(m))
        {
            published.push(entry);
        }
    }
    published
}

/// The best published snapshot for a script importing `libraries`, under a memory limit of
/// `memory_limit` bytes: the one holding most of what the script imports, then the one with
/// fewest libraries it does not, then the smallest. A snapshot that holds none of the
/// script's libraries is chosen only when it holds no library at all (the standard-library
/// snapshot). `None` when nothing published fits.
pub fn pick<'a>(
    published: &'a [Published],
    base: &str,
    libraries: &[String],
    memory_limit: u64,
) -> Option<&'a Published> {
    let wanted: Vec<&str> = libraries.iter().map(|m| top(m)).collect();
    published
        .iter()
        .filter(|p| p.base == base && p.memory_bytes <= memory_limit)
        .filter(|p| STDLIB.iter().all(|m| p.modules.iter().any(|x| x == m)))
        .filter_map(|p| {
            let held = p.libraries();
            // Matched by top-level package: a snapshot holding `sklearn` serves a script
            // importing `sklearn.svm` (the package's own import is most of the cost).
            let covered = libraries
                .iter()
                .filter(|m| held.iter().any(|h| top(h) == top(m)))
                .count();
            let extra = held.iter().filter(|m| !wanted.contains(&top(m))).count();
            (covered > 0 || held.is_empty()).then_some((
                std::cmp::Reverse(covered),
                extra,
                p.memory_bytes,
                p,
            ))
        })
        .min_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)))
        .map(|(_, _, _, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_are_read_from_the_text() {
        let source = b"import os, numpy as np\nfrom pandas import DataFrame\n\
            import matplotlib.pyplot as plt; import json\n\
            from scipy.stats import norm  # comment\n\
            def f():\n    import sklearn.linear_model\n\
            from . import local\nfrom requests import get\nimportnumpy\nx = 'from seaborn'\n";
        assert_eq!(
            library_imports(source),
            [
                "matplotlib.pyplot",
                "numpy",
                "pandas",
                "scipy.stats",
                "sklearn.linear_model"
            ]
        );
        assert!(library_imports(b"print(1)").is_empty());
        assert!(
            library_imports(b"import numpy; os.system('x')\nimport numpy.__x__('y')").len() <= 1
        );
    }

    #[test]
    fn hostile_names_never_become_modules() {
        let source = b"import numpy.(os)\nfrom pandas;import x import y\nimport numpy..a\n\
            import scipy-x\nimport \xff\xfe";
        for module in library_imports(source) {
            assert!(
                super::super::snapshot::valid_module_name(&module),
                "{module}"
            );
        }
        let many: String = (0..100).map(|i| format!("import numpy.m{i}\n")).collect();
        assert_eq!(library_imports(many.as_bytes()).len(), MAX_MODULES);
    }

    fn published(libraries: &[&str], memory_bytes: u64) -> Published {
        let libraries: Vec<String> = libraries.iter().map(|m| m.to_string()).collect();
        Published {
            base: "b".into(),
            modules: with_stdlib(&libraries),
            memory_bytes,
        }
    }

    #[test]
    fn the_best_snapshot_holds_most_of_the_imports_and_least_else() {
        let all = [
            published(&[], 10),
            published(&["numpy"], 20),
            published(&["numpy", "pandas"], 30),
            published(
                &["matplotlib.pyplot", "numpy", "pandas", "scipy", "sklearn"],
                90,
            ),
        ];
        let pick = |libs: &[&str], limit| {
            let libs: Vec<String> = libs.iter().map(|m| m.to_string()).collect();
            pick(&all, "b", &libs, limit).map(|p| p.memory_bytes)
        };
        assert_eq!(pick(&[], 100), Some(10));
        assert_eq!(pick(&["numpy"], 100), Some(20));
        assert_eq!(pick(&["pandas"], 100), Some(30));
        assert_eq!(pick(&["numpy", "pandas"], 100), Some(30));
        assert_eq!(pick(&["matplotlib.pyplot"], 100), Some(90));
        assert_eq!(pick(&["matplotlib"], 100), Some(90));
        assert_eq!(pick(&["pandas", "sklearn.svm"], 100), Some(90));
        // Under a memory limit the big snapshot does not fit.
        assert_eq!(pick(&["pandas", "sklearn.svm"], 50), Some(30));
        assert_eq!(pick(&["matplotlib.pyplot"], 50), Some(10));
        assert_eq!(pick(&[], 5), None);
        // Another base's snapshots are never chosen.
        let libs = vec!["numpy".to_string()];
        assert!(super::pick(&all, "other", &libs, 100).is_none());
    }

    #[test]
    fn named_groups_are_library_modules() {
        for module in named_group("data").unwrap() {
            assert!(LIBRARIES.contains(&top(module)), "{module}");
        }
        assert!(named_group("nope").is_none());
    }
}
