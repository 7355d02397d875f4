//! The distributions a script's imports need: the guest-side detector and its output.

use serde::Serialize;

use super::spec::PyName;

/// Distributions whose import name differs from their name.
const IMPORT_TO_DISTRIBUTION: &[(&str, &str)] = &[
    ("yaml", "PyYAML"),
    ("bs4", "beautifulsoup4"),
    ("sklearn", "scikit-learn"),
    ("skimage", "scikit-image"),
    ("PIL", "pillow"),
    ("cv2", "opencv-python"),
    ("dateutil", "python-dateutil"),
    ("attr", "attrs"),
    ("dotenv", "python-dotenv"),
    ("jwt", "PyJWT"),
    ("serial", "pyserial"),
    ("Crypto", "pycryptodome"),
    ("docx", "python-docx"),
    ("pptx", "python-pptx"),
    ("fitz", "PyMuPDF"),
    ("jose", "python-jose"),
    ("multipart", "python-multipart"),
    ("slugify", "python-slugify"),
    ("OpenSSL", "pyOpenSSL"),
    ("magic", "python-magic"),
    ("google", "protobuf"),
    ("markdown_it", "markdown-it-py"),
    ("mdurl", "mdurl"),
    ("pkg_resources", "setuptools"),
    ("Levenshtein", "python-Levenshtein"),
    ("websocket", "websocket-client"),
    ("zmq", "pyzmq"),
    ("tomli_w", "tomli-w"),
    ("typing_extensions", "typing-extensions"),
    ("more_itertools", "more-itertools"),
    ("xlsxwriter", "XlsxWriter"),
];

/// The distribution that provides top-level module `module`.
pub fn distribution_for(module: &str) -> String {
    IMPORT_TO_DISTRIBUTION
        .iter()
        .find(|(import, _)| *import == module)
        .map_or_else(|| module.to_string(), |(_, dist)| dist.to_string())
}

/// Runs when the guest lists its imports: the source on stdin; prints one line per
/// top-level module imported, with `?` after those imported only inside a `try` that
/// handles ImportError, leaving out the standard library and anything the guest can already
/// import (its built-in packages, the workspace's own modules). `__import__("x")` and
/// `importlib.import_module("x")` calls are not imports and are ignored.
pub(crate) const DETECT_IMPORTS: &str = r#"import ast, sys, importlib.util
try:
    tree = ast.parse(sys.stdin.buffer.read())
except SyntaxError:
    raise SystemExit(0)
CATCHES = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
def caught(handler):
    kind = handler.type
    if kind is None:
        return True
    kinds = kind.elts if isinstance(kind, ast.Tuple) else [kind]
    return any(isinstance(k, ast.Name) and k.id in CATCHES for k in kinds)
found = {}
def add(name, optional):
    top = name.split(".")[0]
    found[top] = found.get(top, True) and optional
def walk(node, optional):
    if isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
        guarded = optional or any(caught(h) for h in node.handlers)
        for child in node.body:
            walk(child, guarded)
        for child in node.handlers + node.orelse + node.finalbody:
            walk(child, optional)
        return
    if isinstance(node, ast.Import):
        for alias in node.names:
            add(alias.name, optional)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        add(node.module, optional)
    for child in ast.iter_child_nodes(node):
        walk(child, optional)
walk(tree, False)
for name in sorted(found):
    if name in sys.stdlib_module_names or name == "__future__":
        continue
    try:
        if importlib.util.find_spec(name) is not None:
            continue
    except (ImportError, ValueError):
        pass
    print(name + ("?" if found[name] else ""))
"#;

/// Lists the guest's built-in distributions as `name==version` lines.
pub(crate) const LIST_DISTRIBUTIONS: &str = r#"import importlib.metadata as m
for d in m.distributions():
    print(d.metadata["Name"] + "==" + d.version)
"#;

/// A detected import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DetectedImport {
    pub module: String,
    pub distribution: String,
    /// Imported only inside a `try` that handles ImportError: installed if possible.
    pub optional: bool,
}

/// Parses the output of [`DETECT_IMPORTS`]. A module whose distribution cannot be a
/// registry name (the guest reads untrusted source; `import 模块` is valid Python) is left
/// out: no package can provide it, and the run reports the failed import itself.
pub(crate) fn parse_detected(stdout: &str) -> Vec<DetectedImport> {
    stdout
        .lines()
        .filter(|line| !line.is_empty())
        .filter_map(|line| {
            let (module, optional) = match line.strip_suffix('?') {
                Some(module) => (module, true),
                None => (line, false),
            };
            let distribution = distribution_for(module);
            PyName::parse(&distribution).ok()?;
            Some(DetectedImport {
                module: module.to_string(),
                distribution,
                optional,
            })
        })
        .collect()
}
