//! The package store: installing a request into unpacked trees, merged sets, listing and
//! garbage collection.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use pep508_rs::pep440_rs::Version;
use pep508_rs::{MarkerEnvironment, MarkerEnvironmentBuilder, VersionOrUrl};
use serde::Serialize;

use super::lock::{LOCK_SCHEMA, Lock, LockedPackage};
use super::pip::{ToolEnv, pip_download};
use super::spec::{PythonRequirement, Sha256, WheelFilename};
use super::wheel::{check_record, downloaded_wheel};
use super::{InstalledPackage, PackageRequest, PackageSet, normalize};
use crate::archive::extract_zip;
use crate::error::{DepsError, Error};

/// Most bytes one wheel may unpack to.
const MAX_WHEEL_BYTES: u64 = 512 << 20;
/// Most bytes a wheel file may have.
const MAX_WHEEL_FILE_BYTES: u64 = 256 << 20;

/// The marker environment of a WASI CPython `version` (e.g. `3.15.0`).
pub(super) fn marker_environment(version: &str) -> Result<MarkerEnvironment, Error> {
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

/// The package store of one home.
pub struct PackageStore {
    pub(super) dir: PathBuf,
    /// The Python that runs pip.
    python: String,
    /// The operator's settings for pip and npm.
    pub(super) tools: ToolEnv,
}

fn sha256_hex(path: &Path) -> Result<Sha256, Error> {
    let hex = crate::store::sha256_file(path).map_err(|source| DepsError::Store {
        action: format!("hash {}", path.display()),
        source,
    })?;
    Sha256::parse(&hex).map_err(Error::Internal)
}

pub(super) fn install_error(
    what: impl std::fmt::Display,
    message: impl std::fmt::Display,
) -> Error {
    Error::Packages(format!("{what}: {message}"))
}

/// A package file or tree that could not be read, written or laid out, the io::Error kept
/// (the message reads `packages: WHAT: ERROR`).
pub(crate) fn package_io(what: impl std::fmt::Display, source: std::io::Error) -> Error {
    crate::error::DepsError::PackageIo {
        what: what.to_string(),
        source,
    }
    .into()
}

impl PackageStore {
    pub fn new(home: &Path) -> Self {
        PackageStore {
            dir: crate::home::python_packages(home),
            python: crate::tool::DEFAULT_PYTHON.to_string(),
            tools: ToolEnv::from_env(),
        }
    }

    /// The npm store of `home` seen through the same layout (trees, remembered installs,
    /// sets), for listing and collecting garbage.
    pub fn npm(home: &Path) -> Self {
        PackageStore {
            dir: crate::home::npm_packages(home),
            python: crate::tool::DEFAULT_PYTHON.to_string(),
            tools: ToolEnv::from_env(),
        }
    }

    /// The same store with pip run by `python` ([`crate::Config::python`]; default
    /// `python3`).
    pub fn with_python(mut self, python: &str) -> Self {
        self.python = python.to_string();
        self
    }

    /// The same store with pip and npm given `tools` ([`crate::Config::package_tools`];
    /// default [`ToolEnv::from_env`], as [`crate::Config::default`]).
    pub fn with_tools(mut self, tools: &ToolEnv) -> Self {
        self.tools = tools.clone();
        self
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
            .map_err(|source| {
                DepsError::Store {
                    action: format!("make a temp dir in {}", tmp.display()),
                    source,
                }
                .into()
            })
    }

    /// Holds the store's install lock while alive.
    pub(crate) fn lock(&self) -> Result<std::fs::File, Error> {
        crate::home::lock(&self.dir, "install", crate::home::LockMode::Exclusive).map_err(|e| {
            let (action, source) = e.into_parts();
            DepsError::Store { action, source }.into()
        })
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
                let _ = crate::home::publish(&kept, &text, crate::home::Durability::Synced);
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
            &self.python,
            short,
            wanted.iter().map(String::as_str),
            find_links,
            &wheels,
            false,
            &self.tools,
        )?;
        let mut packages = Vec::new();
        for entry in std::fs::read_dir(&wheels).map_err(|source| DepsError::Store {
            action: "list pip's downloads".into(),
            source,
        })? {
            let entry = entry.map_err(|source| DepsError::Store {
                action: "list pip's downloads".into(),
                source,
            })?;
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
            let _ = crate::home::publish(&remembered, &text, crate::home::Durability::Synced);
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
            &self.python,
            short,
            pins.iter().map(String::as_str),
            find_links,
            &wheels,
            true,
            &self.tools,
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
    pub(super) fn unpack(
        &self,
        wheel: &Path,
        file: &WheelFilename,
        sha256: &Sha256,
    ) -> Result<bool, Error> {
        let file = file.as_str();
        let target = self.tree(sha256);
        if target.is_dir() {
            return Ok(false);
        }
        let size = std::fs::metadata(wheel)
            .map_err(|e| package_io(file, e))?
            .len();
        if size > MAX_WHEEL_FILE_BYTES {
            return Err(install_error(
                file,
                format!("the wheel is {size} bytes, over the {MAX_WHEEL_FILE_BYTES}-byte cap"),
            ));
        }
        let temp = self.temp_dir()?;
        let unpacked = temp.path().join("tree");
        std::fs::create_dir(&unpacked).map_err(|e| package_io(file, e))?;
        let reader = std::fs::File::open(wheel).map_err(|e| package_io(file, e))?;
        extract_zip(reader, &unpacked, MAX_WHEEL_BYTES)
            .map_err(|e| install_error(file, format!("refused: {e}")))?;
        check_record(&unpacked).map_err(|e| install_error(file, format!("refused: {e}")))?;
        make_read_only(&unpacked).map_err(|e| package_io(file, e))?;
        std::fs::create_dir_all(self.trees()).map_err(|e| package_io(file, e))?;
        match std::fs::rename(&unpacked, &target) {
            Ok(()) => Ok(true),
            Err(_) if target.is_dir() => Ok(false),
            Err(e) => Err(package_io(
                format_args!("{file}: cannot store the unpacked wheel"),
                e,
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
                package_io(
                    format_args!("{}: cannot lay out the package set", package.file),
                    e,
                )
            })?;
        }
        std::fs::create_dir_all(self.dir.join("sets")).map_err(|source| DepsError::Store {
            action: "create the set directory".into(),
            source,
        })?;
        match std::fs::rename(&site, &set) {
            Ok(()) => Ok(set),
            Err(_) if set.is_dir() => Ok(set),
            Err(source) => Err(DepsError::Store {
                action: "store the package set".into(),
                source,
            }
            .into()),
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
