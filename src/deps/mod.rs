//! Python packages for sandboxes.
//!
//! Requirements come from `--with`, a `requirements.txt` among the uploaded files, PEP 723
//! inline metadata in the script, or the script's imports (see [`crate::Runtime::detect_imports`]).
//! pip resolves and downloads them for the guest's Python with only pure wheels allowed
//! (`--only-binary=:all: --abi none --platform any`), or from a local wheel directory. dvm
//! then installs each wheel itself: the sha256 is checked against the lock when there is
//! one, members that escape or are links are refused, the unpacked size is capped (zip
//! bombs), and every file must match the wheel's RECORD. Unpacked wheels are stored by their
//! sha256 under `$DVM_HOME/packages/v1/python/trees/`; a set of them is merged (hard links)
//! into one read-only directory mounted at [`GUEST_SITE`] on the guest's `sys.path`. The
//! resolution of a request is remembered, so installing the same set again is a store hit:
//! no pip call, no unpacking.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use pep508_rs::pep440_rs::Version;
use pep508_rs::{MarkerEnvironment, MarkerEnvironmentBuilder, VersionOrUrl};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::guest::install::{extract_zip, python, tail};

pub mod npm;
pub mod requirements;
pub mod spec;

pub use requirements::{
    LocalPaths, read_directory_requirements, read_requirements, read_requirements_path,
};
pub use spec::{NpmName, NpmSpec, PyName, PythonRequirement, Sha256, WheelFilename};

/// Where a package set is mounted in the guest.
pub const GUEST_SITE: &str = "/packages/python";
pub(crate) const LAYOUT: &str = "v1";
pub(crate) const LOCK_SCHEMA: u32 = 1;
/// Most bytes one wheel may unpack to.
const MAX_WHEEL_BYTES: u64 = 512 << 20;
/// Most bytes a wheel file may have.
const MAX_WHEEL_FILE_BYTES: u64 = 256 << 20;

/// What to install.
#[derive(Debug, Clone, Default)]
pub struct PackageRequest {
    /// PEP 508 requirements, e.g. `tabulate>=0.9`, `attrs; python_version >= "3.8"`.
    pub requirements: Vec<String>,
    /// A directory of wheels to use instead of the package index (offline installs).
    pub find_links: Option<PathBuf>,
    /// Install exactly these packages, checking each wheel's sha256 (`--locked`).
    pub locked: Option<Lock>,
}

/// Exactly which wheels a set is made of. Every lock read is validated field by field
/// ([`Lock::validate`]) before any of it is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LockFile")]
pub struct Lock {
    pub schema: u32,
    pub runtime: String,
    /// The guest's Python version, e.g. `3.15` (empty for JavaScript).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub python: String,
    pub packages: Vec<LockedPackage>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LockedPackage {
    /// The PEP 503-normalised name (Python) or the npm name.
    pub name: String,
    pub version: String,
    /// The wheel's file name, or the `npm pack` tarball's.
    pub file: String,
    pub sha256: Sha256,
}

/// A lock as stored, before its fields are checked.
#[derive(Deserialize)]
struct LockFile {
    schema: u32,
    runtime: String,
    #[serde(default)]
    python: String,
    packages: Vec<LockedPackage>,
}

/// Most packages one lock may hold.
const MAX_LOCKED_PACKAGES: usize = 10_000;

impl TryFrom<LockFile> for Lock {
    type Error = String;

    fn try_from(file: LockFile) -> Result<Lock, String> {
        let lock = Lock {
            schema: file.schema,
            runtime: file.runtime,
            python: file.python,
            packages: file.packages,
        };
        lock.validate()?;
        Ok(lock)
    }
}

impl Lock {
    /// Checks every field: Python locks hold PEP 503 names, PEP 440 versions and wheel file
    /// names that agree with them; JavaScript locks (empty `python`) npm names, semver
    /// versions and tarball names; every sha256 is 64 lowercase hex digits (by its type).
    pub fn validate(&self) -> Result<(), String> {
        let javascript = self.python.is_empty();
        let python_version =
            self.python.len() <= 16 && self.python.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if !javascript && !python_version {
            return Err(format!("`{}` is not a Python version", self.python));
        }
        if self.packages.len() > MAX_LOCKED_PACKAGES {
            return Err(format!("it holds more than {MAX_LOCKED_PACKAGES} packages"));
        }
        for (index, package) in self.packages.iter().enumerate() {
            let checked = if javascript {
                spec::NpmName::parse(&package.name)
                    .and_then(|_| spec::check_npm_version(&package.version))
                    .and_then(|()| spec::check_tarball_name(&package.file))
            } else {
                spec::PyName::parse(&package.name).and_then(|name| {
                    if name.as_str() != package.name {
                        return Err(format!(
                            "`{}` is not PEP 503-normalised (`{name}`)",
                            package.name
                        ));
                    }
                    spec::check_py_version(&package.version)?;
                    let wheel = WheelFilename::parse(&package.file)?;
                    if wheel.name() != &name || wheel.version() != package.version {
                        return Err(format!(
                            "the wheel {} is not {} {}",
                            package.file, package.name, package.version
                        ));
                    }
                    Ok(())
                })
            };
            checked.map_err(|why| format!("package {}: {why}", index + 1))?;
        }
        Ok(())
    }

    /// Reads a lock file written by `--lock`.
    pub fn read(path: &Path) -> Result<Lock, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadInput {
            path: path.to_path_buf(),
            source,
        })?;
        let lock: Lock = serde_json::from_str(&text).map_err(|e| {
            Error::InvalidInput(format!(
                "{} is not a valid dvm lock file ({e}); nothing was installed. Write the lock \
                 again with --lock",
                path.display()
            ))
        })?;
        if lock.schema != LOCK_SCHEMA {
            return Err(Error::InvalidInput(format!(
                "{} is a lock of schema {}, this dvm reads schema {LOCK_SCHEMA}",
                path.display(),
                lock.schema
            )));
        }
        Ok(lock)
    }

    pub fn write(&self, path: &Path) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Internal(format!("cannot encode the lock: {e}")))?;
        std::fs::write(path, text + "\n").map_err(|e| {
            Error::InvalidInput(format!("cannot write the lock {}: {e}", path.display()))
        })
    }
}

/// One installed package of a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    pub sha256: Sha256,
    /// Already unpacked in the store before this install.
    pub from_store: bool,
}

/// Installed packages, ready to mount in a run ([`crate::RunInput::packages`]).
#[derive(Debug, Clone, Serialize)]
pub struct PackageSet {
    pub lock: Lock,
    pub installed: Vec<InstalledPackage>,
    /// Requirements the runtime satisfies with its own built-in packages.
    pub built_in: Vec<String>,
    /// The merged directory mounted at [`GUEST_SITE`]; `None` when nothing was installed.
    #[serde(skip)]
    pub(crate) site: Option<PathBuf>,
    /// The resolution came from the store (no pip call).
    pub resolved_from_store: bool,
}

impl PackageSet {
    /// Requirements that reinstall exactly this set: `name==version` for Python,
    /// `name@version` for JavaScript.
    pub fn pinned(&self) -> Vec<String> {
        let javascript = self.lock.python.is_empty();
        self.lock
            .packages
            .iter()
            .map(|p| match javascript {
                true => format!("{}@{}", p.name, p.version),
                false => format!("{}=={}", p.name, p.version),
            })
            .collect()
    }

    /// The installed packages as `name version`.
    pub fn installed_names(&self) -> Vec<String> {
        self.installed
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect()
    }

    /// The installed packages as `name version`, then the built-in ones as
    /// `name (built in)`.
    pub fn summary(&self) -> Vec<String> {
        let mut all = self.installed_names();
        all.extend(self.built_in.iter().map(|b| format!("{b} (built in)")));
        all
    }

    /// The mount of this set, if it has packages.
    pub(crate) fn site(&self) -> Option<&Path> {
        self.site.as_deref()
    }
}

/// The marker environment of a WASI CPython `version` (e.g. `3.15.0`).
fn marker_environment(version: &str) -> Result<MarkerEnvironment, Error> {
    let short = short_version(version);
    MarkerEnvironment::try_from(MarkerEnvironmentBuilder {
        implementation_name: "cpython",
        implementation_version: version,
        os_name: "posix",
        platform_machine: "wasm32",
        platform_python_implementation: "CPython",
        platform_release: "",
        platform_system: "WASI",
        platform_version: "",
        python_full_version: version,
        python_version: &short,
        sys_platform: "wasi",
    })
    .map_err(|e| Error::Internal(format!("bad guest python version {version}: {e}")))
}

/// `3.15.0` → `3.15`.
fn short_version(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// PEP 503 normalisation: lower case, runs of `-_.` as one `-`.
pub(crate) fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut dash = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            dash = true;
        } else {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Requirements of one `requirements.txt` read on its own: one per line, each validated as a
/// [`PythonRequirement`], `#` comments and `--hash` options dropped; includes and pip options
/// are refused. [`read_requirements`] also follows `-r`/`-c` inside an upload.
pub fn parse_requirements_txt(text: &str) -> Result<Vec<String>, Error> {
    requirements::parse_requirements_text(text, LocalPaths::Refuse)
}

/// The `dependencies` of a PEP 723 `# /// script` block, if the source has one.
pub fn parse_inline_metadata(source: &str) -> Result<Vec<String>, Error> {
    let mut lines = source.lines();
    let Some(_) = lines
        .by_ref()
        .find(|line| line.trim_end() == "# /// script")
    else {
        return Ok(Vec::new());
    };
    let mut toml_text = String::new();
    let mut closed = false;
    for line in lines {
        if line.trim_end() == "# ///" {
            closed = true;
            break;
        }
        let content = line
            .strip_prefix("# ")
            .or_else(|| (line.trim_end() == "#").then_some(""))
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "the script's `# /// script` block has a line that is not a comment: {line:?}"
                ))
            })?;
        toml_text.push_str(content);
        toml_text.push('\n');
    }
    if !closed {
        return Err(Error::InvalidInput(
            "the script's `# /// script` block is not closed by a `# ///` line".into(),
        ));
    }
    #[derive(Deserialize)]
    struct Metadata {
        #[serde(default)]
        dependencies: Vec<String>,
    }
    let metadata: Metadata = toml::from_str(&toml_text).map_err(|e| {
        Error::InvalidInput(format!(
            "the script's `# /// script` block is not valid TOML: {e}"
        ))
    })?;
    metadata
        .dependencies
        .iter()
        .map(|text| {
            PythonRequirement::parse(text)
                .map(|requirement| requirement.to_string())
                .map_err(|e| spec::from_origin(e, "the script's `# /// script` block"))
        })
        .collect()
}

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

/// The package store of one home.
pub struct PackageStore {
    dir: PathBuf,
}

fn sha256_hex(path: &Path) -> Result<Sha256, Error> {
    let hex = crate::store::sha256_file(path)
        .map_err(|e| Error::Internal(format!("cannot hash {}: {e}", path.display())))?;
    Sha256::parse(&hex).map_err(Error::Internal)
}

fn install_error(what: impl std::fmt::Display, message: impl std::fmt::Display) -> Error {
    Error::Packages(format!("{what}: {message}"))
}

impl PackageStore {
    pub fn new(home: &Path) -> Self {
        PackageStore {
            dir: home.join("packages").join(LAYOUT).join("python"),
        }
    }

    /// The npm store of `home` seen through the same layout (trees, remembered installs,
    /// sets), for listing and collecting garbage.
    pub fn npm(home: &Path) -> Self {
        PackageStore {
            dir: home.join("packages").join(LAYOUT).join("npm"),
        }
    }

    fn trees(&self) -> PathBuf {
        self.dir.join("trees")
    }

    /// Where the unpacked package with this digest lives: the only store path made from a
    /// package, and only from a validated digest.
    pub(crate) fn tree(&self, sha256: &Sha256) -> PathBuf {
        self.trees().join(sha256.as_str())
    }

    /// The store's own directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn temp_dir(&self) -> Result<tempfile::TempDir, Error> {
        let tmp = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp)
            .and_then(|()| tempfile::tempdir_in(&tmp))
            .map_err(|e| {
                Error::Internal(format!("cannot make a temp dir in {}: {e}", tmp.display()))
            })
    }

    /// Holds the store's install lock while alive.
    pub(crate) fn lock(&self) -> Result<std::fs::File, Error> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::Internal(format!("cannot create {}: {e}", self.dir.display())))?;
        let file = std::fs::File::create(self.dir.join("install.lock"))
            .map_err(|e| Error::Internal(format!("cannot lock the package store: {e}")))?;
        file.lock()
            .map_err(|e| Error::Internal(format!("cannot lock the package store: {e}")))?;
        Ok(file)
    }

    /// Installs a request for a runtime whose guest Python is `python_version`, with
    /// `built_in` its own distributions (normalised name → version).
    /// [`crate::Runtime::install_packages`] fills these in from the runtime.
    pub fn install(
        &self,
        runtime: &str,
        python_version: &str,
        built_in: &BTreeMap<String, String>,
        request: &PackageRequest,
    ) -> Result<PackageSet, Error> {
        let env = marker_environment(python_version)?;
        let short = short_version(python_version);
        let mut wanted = BTreeSet::new();
        let mut satisfied = Vec::new();
        // Every requirement, from whichever surface, is parsed here before pip sees it.
        let parsed: Vec<PythonRequirement> = request
            .requirements
            .iter()
            .map(|text| PythonRequirement::parse(text))
            .collect::<Result<_, _>>()?;
        for (text, validated) in request.requirements.iter().zip(&parsed) {
            let requirement = validated.requirement();
            if !requirement.marker.evaluate(&env, &[]) {
                continue;
            }
            let name = validated.name().as_str().to_string();
            if let Some(version) = built_in.get(&name) {
                let specifiers = match &requirement.version_or_url {
                    Some(VersionOrUrl::VersionSpecifier(specifiers)) => Some(specifiers),
                    Some(VersionOrUrl::Url(_)) | None => None,
                };
                let fits = match (specifiers, Version::from_str(version)) {
                    (None, _) => true,
                    (Some(specifiers), Ok(version)) => specifiers.contains(&version),
                    (Some(_), Err(_)) => false,
                };
                if !fits {
                    return Err(Error::InvalidInput(format!(
                        "`{text}`: the {runtime} runtime has {name} {version} built in, which \
                         that requirement excludes; built-in packages cannot be replaced"
                    )));
                }
                satisfied.push(format!("{name}=={version}"));
                continue;
            }
            // pip would evaluate the marker against the host; it held for the guest.
            wanted.insert(validated.for_pip());
        }
        let _lock = self.lock()?;
        let mut fresh = BTreeSet::new();
        let (lock, resolved_from_store) = match &request.locked {
            Some(lock) => {
                // A lock built in code rather than read is checked all the same.
                lock.validate().map_err(|why| {
                    Error::InvalidInput(format!(
                        "the lock is not valid ({why}); nothing was installed. Write it again \
                         with --lock"
                    ))
                })?;
                if lock.runtime != runtime || lock.python != short {
                    return Err(Error::InvalidInput(format!(
                        "the lock is for {} (Python {}), not {runtime} (Python {short}); \
                         lock again for this runtime",
                        lock.runtime, lock.python
                    )));
                }
                (lock.clone(), true)
            }
            None if wanted.is_empty() => (
                Lock {
                    schema: LOCK_SCHEMA,
                    runtime: runtime.to_string(),
                    python: short.clone(),
                    packages: Vec::new(),
                },
                true,
            ),
            None => self.resolve(
                runtime,
                &short,
                &wanted,
                request.find_links.as_deref(),
                &mut fresh,
            )?,
        };
        let mut installed = Vec::new();
        let mut missing = Vec::new();
        for package in &lock.packages {
            let present = self.tree(&package.sha256).is_dir() && !fresh.contains(&package.sha256);
            if !present {
                missing.push(package.clone());
            }
            installed.push(InstalledPackage {
                name: package.name.clone(),
                version: package.version.clone(),
                sha256: package.sha256.clone(),
                from_store: present,
            });
        }
        if !missing.is_empty() {
            self.fetch_locked(&short, &missing, request.find_links.as_deref())?;
        }
        let site = if lock.packages.is_empty() {
            None
        } else {
            // Remembered, so gc keeps this set's wheels and merged directory.
            if let Ok(text) = serde_json::to_vec(&lock) {
                let kept = self
                    .dir
                    .join("installed")
                    .join(format!("{}.json", set_key(&lock)));
                let _ = crate::engine::cache::publish(&kept, &text);
            }
            Some(self.merged(&lock)?)
        };
        Ok(PackageSet {
            lock,
            installed,
            built_in: satisfied,
            site,
            resolved_from_store,
        })
    }

    /// The lock for `wanted`: remembered from an earlier install with every wheel still in
    /// the store, or resolved and installed now (adding the wheels unpacked to `fresh`).
    fn resolve(
        &self,
        runtime: &str,
        short: &str,
        wanted: &BTreeSet<String>,
        find_links: Option<&Path>,
        fresh: &mut BTreeSet<Sha256>,
    ) -> Result<(Lock, bool), Error> {
        let key = {
            let mut hasher = blake3::Hasher::new();
            for field in [
                runtime,
                short,
                &find_links
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ] {
                hasher.update(&(field.len() as u64).to_le_bytes());
                hasher.update(field.as_bytes());
            }
            for requirement in wanted {
                hasher.update(&(requirement.len() as u64).to_le_bytes());
                hasher.update(requirement.as_bytes());
            }
            hasher.finalize().to_hex().to_string()
        };
        let remembered = self.dir.join("resolved").join(format!("{key}.json"));
        if let Ok(text) = std::fs::read_to_string(&remembered)
            && let Ok(lock) = serde_json::from_str::<Lock>(&text)
            && lock.packages.iter().all(|p| self.tree(&p.sha256).is_dir())
        {
            return Ok((lock, true));
        }
        let temp = self.temp_dir()?;
        let wheels = temp.path().join("wheels");
        pip_download(
            short,
            wanted.iter().map(String::as_str),
            find_links,
            &wheels,
            false,
        )?;
        let mut packages = Vec::new();
        for entry in std::fs::read_dir(&wheels)
            .map_err(|e| Error::Internal(format!("cannot list pip's downloads: {e}")))?
        {
            let entry =
                entry.map_err(|e| Error::Internal(format!("cannot list pip's downloads: {e}")))?;
            let wheel = downloaded_wheel(&entry)?;
            let path = wheels.join(wheel.as_str());
            let sha256 = sha256_hex(&path)?;
            if self.unpack(&path, &wheel, &sha256)? {
                fresh.insert(sha256.clone());
            }
            packages.push(LockedPackage {
                name: wheel.name().to_string(),
                version: wheel.version().to_string(),
                file: wheel.as_str().to_string(),
                sha256,
            });
        }
        packages.sort();
        let lock = Lock {
            schema: LOCK_SCHEMA,
            runtime: runtime.to_string(),
            python: short.to_string(),
            packages,
        };
        if let Ok(text) = serde_json::to_vec(&lock) {
            let _ = crate::engine::cache::publish(&remembered, &text);
        }
        Ok((lock, false))
    }

    /// Downloads exactly the locked wheels (no dependencies) and installs them, refusing any
    /// whose sha256 differs from the lock's.
    fn fetch_locked(
        &self,
        short: &str,
        packages: &[LockedPackage],
        find_links: Option<&Path>,
    ) -> Result<(), Error> {
        let temp = self.temp_dir()?;
        let wheels = temp.path().join("wheels");
        let pins: Vec<String> = packages
            .iter()
            .map(|p| format!("{}=={}", p.name, p.version))
            .collect();
        pip_download(
            short,
            pins.iter().map(String::as_str),
            find_links,
            &wheels,
            true,
        )?;
        for package in packages {
            let wheel = WheelFilename::parse(&package.file)
                .map_err(|why| Error::InvalidInput(format!("the lock: {why}")))?;
            let path = wheels.join(wheel.as_str());
            let is_file = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
            if !is_file {
                return Err(install_error(
                    &package.file,
                    "pip did not download this locked wheel; the index no longer has it",
                ));
            }
            let actual = sha256_hex(&path)?;
            if actual != package.sha256 {
                return Err(Error::PackageHash {
                    package: format!("{} {}", package.name, package.version),
                    expected: package.sha256.to_string(),
                    actual: actual.to_string(),
                });
            }
            self.unpack(&path, &wheel, &package.sha256)?;
        }
        Ok(())
    }

    /// Unpacks a wheel into the store under its sha256, checking every member; false when
    /// it was there already.
    fn unpack(&self, wheel: &Path, file: &WheelFilename, sha256: &Sha256) -> Result<bool, Error> {
        let file = file.as_str();
        let target = self.tree(sha256);
        if target.is_dir() {
            return Ok(false);
        }
        let size = std::fs::metadata(wheel)
            .map_err(|e| install_error(file, e))?
            .len();
        if size > MAX_WHEEL_FILE_BYTES {
            return Err(install_error(
                file,
                format!("the wheel is {size} bytes, over the {MAX_WHEEL_FILE_BYTES}-byte cap"),
            ));
        }
        let temp = self.temp_dir()?;
        let unpacked = temp.path().join("tree");
        std::fs::create_dir(&unpacked).map_err(|e| install_error(file, e))?;
        let reader = std::fs::File::open(wheel).map_err(|e| install_error(file, e))?;
        extract_zip(reader, &unpacked, MAX_WHEEL_BYTES)
            .map_err(|e| install_error(file, format!("refused: {e}")))?;
        check_record(&unpacked).map_err(|e| install_error(file, format!("refused: {e}")))?;
        make_read_only(&unpacked).map_err(|e| install_error(file, e))?;
        std::fs::create_dir_all(self.trees()).map_err(|e| install_error(file, e))?;
        match std::fs::rename(&unpacked, &target) {
            Ok(()) => Ok(true),
            Err(_) if target.is_dir() => Ok(false),
            Err(e) => Err(install_error(
                file,
                format!("cannot store the unpacked wheel: {e}"),
            )),
        }
    }

    /// One directory with every wheel of `lock`, hard-linked from the store, made once per set.
    fn merged(&self, lock: &Lock) -> Result<PathBuf, Error> {
        let set = self.dir.join("sets").join(set_key(lock));
        if set.is_dir() {
            return Ok(set);
        }
        let temp = self.temp_dir()?;
        let site = temp.path().join("site");
        for package in &lock.packages {
            link_tree(&self.tree(&package.sha256), &site).map_err(|e| {
                install_error(
                    &package.file,
                    format!("cannot lay out the package set: {e}"),
                )
            })?;
        }
        std::fs::create_dir_all(self.dir.join("sets"))
            .map_err(|e| Error::Internal(format!("cannot create the set directory: {e}")))?;
        match std::fs::rename(&site, &set) {
            Ok(()) => Ok(set),
            Err(_) if set.is_dir() => Ok(set),
            Err(e) => Err(Error::Internal(format!(
                "cannot store the package set: {e}"
            ))),
        }
    }

    /// Every unpacked wheel in the store: (sha256, size in bytes).
    pub fn list(&self) -> Vec<StoredWheel> {
        self.stored().into_iter().map(|(_, wheel)| wheel).collect()
    }

    /// The store's trees: real directories (never links) named by a sha256; anything else
    /// in `trees/` was not made by the store and is left alone.
    fn stored(&self) -> Vec<(Sha256, StoredWheel)> {
        let mut wheels = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.trees()) else {
            return wheels;
        };
        for entry in entries.flatten() {
            let Some(sha256) = entry
                .file_name()
                .to_str()
                .and_then(|name| Sha256::parse(name).ok())
            else {
                continue;
            };
            // DirEntry::file_type does not follow a symlink.
            if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                continue;
            }
            let tree = self.tree(&sha256);
            let (name, version) = dist_info(&tree).unwrap_or_default();
            let wheel = StoredWheel {
                name,
                version,
                sha256: sha256.to_string(),
                bytes: tree_bytes(&tree),
            };
            wheels.push((sha256, wheel));
        }
        wheels.sort_by(|(_, a), (_, b)| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        wheels
    }

    /// Removes temp files, and every unpacked wheel and merged set that no remembered
    /// install refers to; `all` empties the store (runs in flight keep what they mounted
    /// only until they end). Returns the wheels removed.
    pub fn gc(&self, all: bool) -> Result<Vec<StoredWheel>, Error> {
        let _lock = self.lock()?;
        let mut keep = BTreeSet::new();
        let mut keep_sets = BTreeSet::new();
        if !all {
            for dir in ["resolved", "installed"] {
                for entry in std::fs::read_dir(self.dir.join(dir))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    if let Ok(text) = std::fs::read_to_string(entry.path())
                        && let Ok(lock) = serde_json::from_str::<Lock>(&text)
                    {
                        keep_sets.insert(set_key(&lock));
                        keep.extend(lock.packages.into_iter().map(|p| p.sha256));
                    }
                }
            }
        }
        let mut removed = Vec::new();
        for (sha256, wheel) in self.stored() {
            if !keep.contains(&sha256) {
                remove_tree(&self.tree(&sha256));
                removed.push(wheel);
            }
        }
        for entry in std::fs::read_dir(self.dir.join("sets"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if !keep_sets.contains(entry.file_name().to_string_lossy().as_ref()) {
                remove_tree(&entry.path());
            }
        }
        remove_tree(&self.dir.join("tmp"));
        if all {
            remove_tree(&self.dir.join("resolved"));
            remove_tree(&self.dir.join("installed"));
        }
        Ok(removed)
    }
}

/// The name of a lock's merged directory: blake3 over its wheels' hashes.
pub(crate) fn set_key(lock: &Lock) -> String {
    let mut hasher = blake3::Hasher::new();
    for package in &lock.packages {
        hasher.update(package.sha256.as_str().as_bytes());
        hasher.update(b"\n");
    }
    hasher.finalize().to_hex().to_string()
}

/// A wheel unpacked in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredWheel {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub bytes: u64,
}

/// Name and version from the tree's `*.dist-info` directory name, or its `package.json`.
fn dist_info(tree: &Path) -> Option<(String, String)> {
    let wheel = std::fs::read_dir(tree).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stem = name.strip_suffix(".dist-info")?;
        let (dist, version) = stem.rsplit_once('-')?;
        Some((normalize(dist), version.to_string()))
    });
    wheel.or_else(|| {
        let text = std::fs::read_to_string(tree.join("package.json")).ok()?;
        let manifest: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some((
            manifest["name"].as_str()?.to_string(),
            manifest["version"].as_str()?.to_string(),
        ))
    })
}

fn tree_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => tree_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Removes a store tree, or a link or file where one was expected. Nothing is chmod-ed:
/// unlinking needs write permission on the directories only (the store never makes those
/// read-only), and a file in a merged set may share its inode with a file elsewhere.
/// `remove_dir_all` does not follow symlinks.
pub(crate) fn remove_tree(dir: &Path) {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(dir);
        }
        Err(_) => {}
    }
}

/// Takes the write bits off every regular file under `dir`, a directory the store has just
/// unpacked into. Only removes bits, never follows a symlink (each file is opened and checked
/// to be the very entry listed), and leaves alone any file with another owner than `dir` or
/// with more than one link, which the store did not create there.
pub(crate) fn make_read_only(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let owner = std::fs::symlink_metadata(dir)?.uid();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                pending.push(path);
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let listed = std::fs::symlink_metadata(&path)?;
            let Ok(file) = std::fs::File::open(&path) else {
                continue;
            };
            let opened = file.metadata()?;
            let same = listed.file_type().is_file()
                && opened.dev() == listed.dev()
                && opened.ino() == listed.ino();
            if !same || opened.uid() != owner || opened.nlink() != 1 {
                continue;
            }
            let mode = opened.permissions().mode() & 0o7777 & !0o222;
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// Hard-links every regular file of `from` into `to` (copying where links are not possible);
/// links and special files are skipped (the store's trees hold none).
pub(crate) fn link_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if !std::fs::symlink_metadata(from)?.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory of the store",
            from.display()
        )));
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            link_tree(&entry.path(), &target)?;
        } else if kind.is_file()
            && std::fs::symlink_metadata(&target).is_err()
            && std::fs::hard_link(entry.path(), &target).is_err()
        {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A file pip left in its download directory, accepted only as a regular file with a valid
/// wheel file name.
fn downloaded_wheel(entry: &std::fs::DirEntry) -> Result<WheelFilename, Error> {
    let name = entry.file_name();
    let shown = name.to_string_lossy().into_owned();
    let not_a_wheel = |why: String| {
        install_error(
            &shown,
            format!("pip left something that is not a wheel ({why}); nothing was installed"),
        )
    };
    let kind = entry.file_type().map_err(|e| not_a_wheel(e.to_string()))?;
    if !kind.is_file() {
        return Err(not_a_wheel("not a regular file".into()));
    }
    let name = name
        .to_str()
        .ok_or_else(|| not_a_wheel("the name is not UTF-8".into()))?;
    WheelFilename::parse(name).map_err(not_a_wheel)
}

/// Checks an unpacked wheel against its `*.dist-info/RECORD`: every file listed with a
/// sha256 and size that match, and no file that is not listed.
fn check_record(tree: &Path) -> Result<(), String> {
    use base64::Engine;
    let dist_info = std::fs::read_dir(tree)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name.ends_with(".dist-info"))
        .ok_or("the wheel has no .dist-info directory")?;
    let record_path = format!("{dist_info}/RECORD");
    let record = std::fs::read_to_string(tree.join(&record_path))
        .map_err(|_| "the wheel has no RECORD".to_string())?;
    let mut listed = BTreeMap::new();
    for line in record.lines().filter(|line| !line.trim().is_empty()) {
        let mut fields = line.rsplitn(3, ',');
        let (Some(size), Some(hash), Some(path)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("RECORD line {line:?} is not path,hash,size"));
        };
        let path = path.trim_matches('"').to_string();
        listed.insert(path, (hash.to_string(), size.to_string()));
    }
    let mut seen = BTreeSet::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in std::fs::read_dir(tree.join(&relative)).map_err(|e| e.to_string())? {
            let entry = entry.map_err(|e| e.to_string())?;
            let path = relative.join(entry.file_name());
            if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
                pending.push(path);
                continue;
            }
            let name = path.to_string_lossy().replace('\\', "/");
            if name == record_path
                || name.ends_with(".dist-info/RECORD.jws")
                || name.ends_with(".dist-info/RECORD.p7s")
            {
                continue;
            }
            let Some((hash, size)) = listed.get(&name) else {
                return Err(format!("{name} is not in the wheel's RECORD"));
            };
            let Some(expected) = hash.strip_prefix("sha256=") else {
                return Err(format!("RECORD has no sha256 for {name}"));
            };
            let mut bytes = Vec::new();
            std::fs::File::open(tree.join(&path))
                .and_then(|mut file| file.read_to_end(&mut bytes))
                .map_err(|e| e.to_string())?;
            use sha2::Digest;
            let actual = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(&bytes));
            if actual != expected || size.parse::<usize>().ok() != Some(bytes.len()) {
                return Err(format!("{name} does not match the wheel's RECORD"));
            }
            seen.insert(name);
        }
    }
    if let Some(absent) = listed.keys().find(|path| {
        **path != record_path
            && !path.ends_with(".jws")
            && !path.ends_with(".p7s")
            && !seen.contains(*path)
    }) {
        return Err(format!("{absent} is in the RECORD but not in the wheel"));
    }
    Ok(())
}

/// Host environment variables a package tool may see: where programs are, how to reach the
/// network (proxies, CA bundles) and the locale. Nothing else of the host's or the user's
/// environment (no `PIP_*`, `npm_config_*`, `NODE_OPTIONS`, `PYTHONPATH`…) reaches pip or npm.
const KEPT_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
];

/// The operator's package index for pip, from the environment dvm itself was started with
/// (trusted: never from a script, upload or request), as explicit flags: `--isolated` makes
/// pip ignore its own `PIP_*` variables and config files, and a mirror the operator relies on
/// must keep working. `PIP_INDEX_URL`, `PIP_EXTRA_INDEX_URL` (space-separated),
/// `PIP_TRUSTED_HOST` (space-separated), `PIP_CERT` and `PIP_CLIENT_CERT`.
fn operator_pip_index() -> Vec<std::ffi::OsString> {
    operator_pip_index_from(|name| std::env::var_os(name))
}

fn operator_pip_index_from(
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let mut args = Vec::new();
    let present = |name: &str| var(name).filter(|value| !value.is_empty());
    if let Some(url) = present("PIP_INDEX_URL") {
        args.push("--index-url".into());
        args.push(url);
    }
    for (variable, flag) in [
        ("PIP_EXTRA_INDEX_URL", "--extra-index-url"),
        ("PIP_TRUSTED_HOST", "--trusted-host"),
    ] {
        if let Some(values) = present(variable) {
            for value in values.to_string_lossy().split_whitespace() {
                args.push(flag.into());
                args.push(value.into());
            }
        }
    }
    for (variable, flag) in [("PIP_CERT", "--cert"), ("PIP_CLIENT_CERT", "--client-cert")] {
        if let Some(path) = present(variable) {
            args.push(flag.into());
            args.push(path);
        }
    }
    args
}

/// A package tool's command with a controlled environment: cleared but for [`KEPT_ENV`],
/// a fresh `HOME`, config and cache under `scratch` (a new temp directory), and a fresh,
/// empty working directory, so nothing in the caller's directory or home is read as
/// configuration or code.
pub(crate) fn controlled_command(
    program: &std::ffi::OsStr,
    scratch: &Path,
) -> Result<Command, Error> {
    let home = scratch.join("home");
    let work = scratch.join("work");
    for dir in [&home, &work] {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Internal(format!("cannot make {}: {e}", dir.display())))?;
    }
    let mut command = Command::new(program);
    command.env_clear();
    for name in KEPT_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("TMPDIR", scratch)
        .current_dir(&work)
        .stdin(Stdio::null());
    Ok(command)
}

/// The real interpreter behind `python3`/`$DVM_PYTHON` (version managers put shims on PATH
/// that need the user's HOME) and its user base (where a `pip install --user` pip lives).
fn resolve_python(python: &str, scratch: &Path) -> (std::ffi::OsString, Option<String>) {
    let asked = Command::new(python)
        .args([
            "-c",
            "import sys, site\nprint(sys.executable)\nprint(site.getuserbase())",
        ])
        .current_dir(scratch)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    if let Ok(output) = asked
        && output.status.success()
    {
        let text = String::from_utf8_lossy(&output.stdout);
        let mut lines = text.lines();
        if let Some(executable) = lines.next().filter(|line| Path::new(line).is_absolute()) {
            let user_base = lines.next().map(str::to_string);
            return (executable.into(), user_base);
        }
    }
    (python.into(), None)
}

/// `pip download` for the guest's Python: pure wheels only, into `dest`. pip runs with a
/// controlled environment ([`controlled_command`]), `--isolated`, no configuration file
/// (`PIP_CONFIG_FILE` is the null device, which makes pip skip every config file) and no
/// cache; `--only-binary=:all:` means no build backend can ever run. The requirements
/// are [`PythonRequirement`]s rendered by dvm.
fn pip_download<'a>(
    short: &str,
    requirements: impl Iterator<Item = &'a str>,
    find_links: Option<&Path>,
    dest: &Path,
    no_deps: bool,
) -> Result<(), Error> {
    pip_download_with(&python(), short, requirements, find_links, dest, no_deps)
}

fn pip_download_with<'a>(
    python: &str,
    short: &str,
    requirements: impl Iterator<Item = &'a str>,
    find_links: Option<&Path>,
    dest: &Path,
    no_deps: bool,
) -> Result<(), Error> {
    let requirements: Vec<&str> = requirements.collect();
    for requirement in &requirements {
        PythonRequirement::parse(requirement)?;
    }
    // pip runs in a directory of its own: every path it is given is absolute.
    let absolute = |path: &Path| {
        std::path::absolute(path)
            .map_err(|e| Error::Internal(format!("cannot resolve {}: {e}", path.display())))
    };
    let dest = absolute(dest)?;
    let find_links = find_links.map(absolute).transpose()?;
    // A fresh scratch directory beside `dest` (in the store's own temp directory).
    let scratch = dest.with_file_name(".pip");
    std::fs::create_dir_all(&scratch)
        .map_err(|e| Error::Internal(format!("cannot make a directory for pip: {e}")))?;
    let (interpreter, user_base) = resolve_python(python, &scratch);
    let mut command = controlled_command(&interpreter, &scratch)?;
    if let Some(user_base) = user_base {
        command.env("PYTHONUSERBASE", user_base);
    }
    command
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["-m", "pip", "--isolated", "download", "--only-binary=:all:"])
        .arg("--no-cache-dir")
        .args(["--python-version", short, "--implementation", "cp"])
        .args(["--abi", "none", "--platform", "any"])
        .args([
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--dest",
        ])
        .arg(&dest);
    if no_deps {
        command.arg("--no-deps");
    }
    if let Some(dir) = find_links {
        command.args(["--no-index", "--find-links"]).arg(dir);
    } else {
        command.args(operator_pip_index());
    }
    command.arg("--").args(&requirements);
    let output = command.output().map_err(|e| {
        Error::Packages(format!(
            "cannot start `{python} -m pip` ({e}); dvm resolves packages with pip. Install \
             Python 3 with pip (or set DVM_PYTHON), or use --find-links with a wheel directory"
        ))
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let unavailable: Vec<&str> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("ERROR: No matching distribution found for "))
        .collect();
    if !unavailable.is_empty() {
        return Err(Error::Packages(format!(
            "no pure-Python wheel of {} for Python {short}: dvm installs only pure wheels, and \
             a package with compiled code (a C extension) has none. Check the name, or use a \
             runtime that has it built in (`python` ships numpy, pandas, scipy, lxml and more)",
            unavailable.join(", ")
        )));
    }
    Err(Error::Packages(format!(
        "`pip download {}` failed ({}):\n{}",
        requirements.join(" "),
        output.status,
        tail(&output.stderr, 15)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_pip_index_becomes_explicit_flags() {
        let env = |name: &str| -> Option<std::ffi::OsString> {
            match name {
                "PIP_INDEX_URL" => Some("https://mirror.invalid/simple".into()),
                "PIP_EXTRA_INDEX_URL" => Some("https://a.invalid/s  https://b.invalid/s".into()),
                "PIP_CERT" => Some("/etc/ssl/ca.pem".into()),
                "PIP_TRUSTED_HOST" => Some(String::new().into()),
                _ => None,
            }
        };
        let args: Vec<String> = operator_pip_index_from(env)
            .into_iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--index-url",
                "https://mirror.invalid/simple",
                "--extra-index-url",
                "https://a.invalid/s",
                "--extra-index-url",
                "https://b.invalid/s",
                "--cert",
                "/etc/ssl/ca.pem"
            ]
        );
        assert!(operator_pip_index_from(|_| None).is_empty());
    }

    #[test]
    fn names_normalize_as_pep_503_says() {
        assert_eq!(normalize("Typing_Extensions"), "typing-extensions");
        assert_eq!(normalize("zope.interface"), "zope-interface");
        assert_eq!(normalize("a--b__c"), "a-b-c");
    }

    #[test]
    fn requirements_txt_keeps_requirements_and_refuses_options() {
        let text = "# top\nattrs>=21  # inline\n\ntabulate==0.9.0 --hash=sha256:abc\n";
        assert_eq!(
            parse_requirements_txt(text).unwrap(),
            ["attrs>=21", "tabulate==0.9.0"]
        );
        assert!(parse_requirements_txt("-r other.txt").is_err());
        assert!(parse_requirements_txt("--index-url x").is_err());
        let error = parse_requirements_txt("evil @ file:///tmp/x").unwrap_err();
        assert_eq!(error.kind(), "unsupported_requirement");
    }

    #[test]
    fn inline_metadata_is_read_from_the_script_block() {
        let source = "# /// script\n# requires-python = \">=3.11\"\n# dependencies = [\n#   \"humanize\",\n#   \"tabulate>=0.9\",\n# ]\n# ///\nimport humanize\n";
        assert_eq!(
            parse_inline_metadata(source).unwrap(),
            ["humanize", "tabulate>=0.9"]
        );
        assert!(parse_inline_metadata("print(1)").unwrap().is_empty());
        assert!(parse_inline_metadata("# /// script\n# dependencies = [\n").is_err());
        assert!(parse_inline_metadata("# /// script\nx = 1\n# ///\n").is_err());
        let evil = "# /// script\n# dependencies = [\"evil @ file:///tmp/x\"]\n# ///\n";
        let error = parse_inline_metadata(evil).unwrap_err();
        assert_eq!(error.kind(), "unsupported_requirement");
        assert!(error.to_string().contains("# /// script"), "{error}");
    }

    #[test]
    fn markers_are_evaluated_for_the_guest() {
        let parse_requirement =
            |text: &str| PythonRequirement::parse(text).map(|r| r.requirement().clone());
        let env = marker_environment("3.15.0").unwrap();
        let yes = parse_requirement("a; python_version >= \"3.12\" and sys_platform == \"wasi\"")
            .unwrap();
        let no = parse_requirement("b; sys_platform == \"win32\"").unwrap();
        assert!(yes.marker.evaluate(&env, &[]));
        for marker in [
            "sys_platform == 'wasi'",
            "sys_platform == \"wasi\"",
            "python_version >= '3.12'",
            "platform_machine == 'wasm32'",
        ] {
            let requirement = parse_requirement(&format!("a; {marker}")).unwrap();
            assert!(
                requirement.marker.evaluate(&env, &[]),
                "{marker}: {:?}",
                requirement.marker
            );
        }
        assert!(!no.marker.evaluate(&env, &[]));
    }

    #[test]
    fn import_names_map_to_distributions() {
        assert_eq!(distribution_for("yaml"), "PyYAML");
        assert_eq!(distribution_for("sklearn"), "scikit-learn");
        assert_eq!(distribution_for("humanize"), "humanize");
        let detected = parse_detected("bs4\nujson?\n模块\n");
        assert_eq!(detected[0].distribution, "beautifulsoup4");
        assert!(detected[1].optional && !detected[0].optional);
        assert_eq!(detected.len(), 2, "a name no registry can hold is left out");
    }

    #[test]
    fn a_truncated_wheel_is_refused_and_nothing_is_stored() {
        use std::io::Write;
        let home = tempfile::tempdir().unwrap();
        let store = PackageStore::new(home.path());
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        zip.start_file("m.py", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(&vec![b'#'; 10_000]).unwrap();
        let mut bytes = zip.finish().unwrap().into_inner();
        bytes.truncate(bytes.len() / 2);
        let wheel = home.path().join("m-1.0-py3-none-any.whl");
        std::fs::write(&wheel, bytes).unwrap();
        let error = store
            .unpack(
                &wheel,
                &WheelFilename::parse("m-1.0-py3-none-any.whl").unwrap(),
                &Sha256::parse(&"ab".repeat(32)).unwrap(),
            )
            .unwrap_err()
            .to_string();
        assert!(error.contains("refused"), "{error}");
        assert!(
            !store
                .tree(&Sha256::parse(&"ab".repeat(32)).unwrap())
                .exists()
        );
        let temp = std::fs::read_dir(store.dir.join("tmp")).unwrap().count();
        assert_eq!(temp, 0, "temp directories are removed");
    }

    /// Writes an executable shell script that records its environment, working directory
    /// and arguments into `out`, answering the interpreter question as a Python would.
    pub(crate) fn recording_tool(dir: &Path, out: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("tool");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nif [ \"$1\" = \"-c\" ]; then echo \"$0\"; echo /nonexistent-user-base; exit 0; fi\n\
                 env > {out}/env\npwd > {out}/pwd\nls -A > {out}/ls\nfor a in \"$@\"; do echo \"$a\"; done > {out}/args\nexit 3\n",
                out = out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    #[test]
    fn pip_runs_with_a_controlled_environment_in_a_fresh_directory() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let tool = recording_tool(dir.path(), &out);
        let dest = dir.path().join("t").join("wheels");
        let error = pip_download_with(
            tool.to_str().unwrap(),
            "3.12",
            ["tabulate>=0.9"].into_iter(),
            None,
            &dest,
            false,
        )
        .unwrap_err();
        assert_eq!(error.kind(), "packages");
        let env = std::fs::read_to_string(out.join("env")).unwrap();
        let allowed = [
            "HOME",
            "XDG_CONFIG_HOME",
            "XDG_CACHE_HOME",
            "TMPDIR",
            "PIP_CONFIG_FILE",
            "PYTHONDONTWRITEBYTECODE",
            "PYTHONUSERBASE",
            "PWD",
            "SHLVL",
            "_",
        ];
        for line in env.lines() {
            let name = line.split('=').next().unwrap();
            assert!(
                allowed.contains(&name) || KEPT_ENV.contains(&name),
                "pip saw {name} from the host environment"
            );
        }
        assert!(env.contains("PIP_CONFIG_FILE=/dev/null\n"), "{env}");
        let home = std::env::var("HOME").unwrap_or_default();
        assert!(
            !env.contains(&format!("HOME={home}\n")) || home.is_empty(),
            "{env}"
        );
        let pwd = std::fs::read_to_string(out.join("pwd")).unwrap();
        assert!(pwd.trim().ends_with("/work"), "{pwd}");
        assert!(std::fs::read_to_string(out.join("ls")).unwrap().is_empty());
        let args: Vec<String> = std::fs::read_to_string(out.join("args"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        for flag in ["--isolated", "--only-binary=:all:", "--no-cache-dir", "--"] {
            assert!(args.iter().any(|a| a == flag), "{flag} in {args:?}");
        }
        assert_eq!(args.last().unwrap(), "tabulate>=0.9");
        // A requirement that is not validated never reaches the tool.
        std::fs::remove_file(out.join("args")).unwrap();
        let refused = pip_download_with(
            tool.to_str().unwrap(),
            "3.12",
            ["evil @ file:///tmp/x"].into_iter(),
            None,
            &dest,
            false,
        )
        .unwrap_err();
        assert_eq!(refused.kind(), "unsupported_requirement");
        assert!(!out.join("args").exists());
    }

    fn lock_json(python: &str, name: &str, file: &str, sha256: &str) -> String {
        serde_json::json!({
            "schema": LOCK_SCHEMA, "runtime": "r", "python": python,
            "packages": [{"name": name, "version": "1.0.0", "file": file, "sha256": sha256}],
        })
        .to_string()
    }

    #[test]
    fn locks_with_hostile_fields_are_refused_when_read() {
        let sha = "0".repeat(64);
        let good = lock_json("3.12", "m", "m-1.0.0-py3-none-any.whl", &sha);
        assert!(serde_json::from_str::<Lock>(&good).is_ok());
        let npm = lock_json("", "@s/p", "s-p-1.0.0.tgz", &sha);
        assert!(serde_json::from_str::<Lock>(&npm).is_ok());
        for bad in [
            lock_json("3.12", "m", "m-1.0.0-py3-none-any.whl", "../../dir"),
            lock_json("3.12", "../m", "m-1.0.0-py3-none-any.whl", &sha),
            lock_json("3.12", "m", "../m-1.0.0-py3-none-any.whl", &sha),
            lock_json("3.12", "m", "other-1.0.0-py3-none-any.whl", &sha),
            lock_json("3.12", "M", "m-1.0.0-py3-none-any.whl", &sha),
            lock_json("../3", "m", "m-1.0.0-py3-none-any.whl", &sha),
            lock_json("", "../../x", "x-1.0.0.tgz", &sha),
            lock_json("", "x", "../x-1.0.0.tgz", &sha),
            lock_json("", "x", "x-1.0.0.tgz", &"A".repeat(64)),
        ] {
            assert!(serde_json::from_str::<Lock>(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn read_only_never_adds_bits_nor_touches_shared_or_linked_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/own.py"), "x").unwrap();
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, "x").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::hard_link(&outside, tree.join("hard.txt")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("soft.txt")).unwrap();
        make_read_only(&tree).unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&tree.join("sub/own.py")) & 0o222, 0);
        assert_eq!(mode(&outside), 0o640, "a shared inode keeps its mode");
        remove_tree(&tree);
        assert!(!tree.exists());
        assert_eq!(mode(&outside), 0o640);
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "x");
    }
}
