//! The versioned code-artifact store: named file trees, each name with versions numbered 1, 2,
//! 3…, stored content-addressed under `$DVM_HOME/artifacts/v1/`.
//!
//! # Layout
//!
//! - `blobs/<2 hex>/<blake3 hex>`: file contents named by their blake3, read-only, shared by
//!   every version of every name. They are apart from the runtime store (`store/v1/blobs`),
//!   so [`ArtifactStore::gc`] never touches runtime files.
//! - `manifests/<root hex>.json`: one tree, `{"entries": [{"path", "size", "blake3",
//!   "executable"}, …]}` sorted by path, named by the tree's root (below).
//! - `names/<name>.json`: a name's index, `{"last_version": N, "versions": [{"version",
//!   "root", "created", "files", "bytes"}, …]}`. `last_version` is the highest number ever
//!   given, so a number is never reused: after removing version 3, or the whole name, the
//!   next put is version 4, and `NAME@3` never means a different tree.
//! - `locks/<name>.lock` and `locks/_store.lock` (`_` cannot start a name).
//!
//! Every file is written to a temp file beside its target and renamed into place, so a reader
//! sees a whole old file or a whole new one, never a torn one.
//!
//! # The tree root
//!
//! A tree is identified by blake3 over this byte string, where `u64` is 8 bytes little-endian
//! and `field(b)` is `u64(len(b)) || b`:
//!
//! ```text
//! field("dvm artifact tree v1") || u64(number of entries)
//!   || for each entry, in increasing byte order of path:
//!        field(path as UTF-8) || blake3 of the contents (32 bytes) || u64(size)
//!        || mode (1 byte: 0 regular, 1 executable)
//! ```
//!
//! Paths are relative, `/`-separated, UTF-8 as found on disk (not normalized), with no empty,
//! `.` or `..` component, and no path is both a file and a directory. Every field has a fixed
//! size or a length prefix, so two different trees cannot encode to the same bytes; changing
//! the encoding means a new domain string and a new layout directory.
//!
//! # What a tree holds
//!
//! Regular files with their contents and executable bit. Directories exist only as path
//! prefixes, so empty directories are not stored. Symbolic links (never followed) and special
//! files are refused, as are names that are not UTF-8 or contain `\`.
//!
//! # Concurrency
//!
//! A put holds `_store.lock` shared from its first blob to its index update, and
//! `<name>.lock` exclusively around reading and rewriting the name's index; [`ArtifactStore::gc`]
//! holds `_store.lock` exclusively. So concurrent puts, in threads or processes, each add
//! their version, and gc never deletes a blob that a put is about to reference. Gets hold
//! `_store.lock` shared too (when the store is writable), so gc does not delete a tree being
//! copied out.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::home::LockMode;

const ROOT_DOMAIN: &[u8] = b"dvm artifact tree v1";
/// The store-wide lock; `_` cannot start an artifact name, so no name's lock collides.
const STORE_LOCK: &str = "_store";
const MAX_NAME_LEN: usize = 128;
/// A root prefix in a spec has at least this many hex digits, and a version number fewer, so
/// the two never look alike.
const MIN_ROOT_PREFIX: usize = 8;
/// The highest version number a spec can write (7 digits).
const MAX_VERSION: u64 = 9_999_999;
const COPY_BUFFER: usize = 256 * 1024;
/// How many of a version's paths the error for a missing run entry lists.
pub const LISTED_PATHS: usize = 20;

/// Caps on one tree given to [`ArtifactStore::put`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactLimits {
    /// Most bytes of file contents in one tree. Default 1 GiB.
    pub max_bytes: u64,
    /// Most files in one tree. Default 100 000.
    pub max_files: u64,
}

impl Default for ArtifactLimits {
    fn default() -> Self {
        ArtifactLimits {
            max_bytes: 1 << 30,
            max_files: 100_000,
        }
    }
}

/// One version of a name, as its index records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// 1 for the first version of a name; never reused.
    pub version: u64,
    /// The tree's root, 64 lowercase hex digits.
    pub root: String,
    /// When this version was put, in seconds since the Unix epoch.
    pub created: u64,
    pub files: u64,
    /// Total bytes of file contents.
    pub bytes: u64,
}

impl Version {
    /// When this version was put, as RFC 3339 in UTC to the second (`2026-12-01T17:00:00Z`);
    /// a time past what RFC 3339 can write (year 9999) shows as its last second.
    pub fn created_rfc3339(&self) -> String {
        const LAST_SECOND: u64 = 253_402_300_799;
        let created =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.created.min(LAST_SECOND));
        humantime::format_rfc3339_seconds(created).to_string()
    }
}

/// A name and one of its versions: what a spec resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolved {
    pub name: String,
    #[serde(flatten)]
    pub version: Version,
}

impl std::fmt::Display for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version.version)
    }
}

/// One stored name, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactSummary {
    pub name: String,
    pub latest_version: u64,
    pub version_count: u64,
    pub latest_root: String,
    /// Total bytes of file contents of the latest version.
    pub bytes: u64,
}

/// One file of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative, `/`-separated.
    pub path: String,
    pub size: u64,
    /// blake3 of the contents, 64 lowercase hex digits.
    pub blake3: String,
    pub executable: bool,
}

/// The files of one tree, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub entries: Vec<Entry>,
}

/// What [`ArtifactStore::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub blobs_removed: u64,
    /// Bytes of removed blobs and of temp files left by interrupted puts.
    pub bytes_freed: u64,
    pub manifests_removed: u64,
}

/// What [`ArtifactStore::get`] does with a file that already exists where the tree has one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Refuse before writing anything (the default).
    #[default]
    Refuse,
    /// Replace existing files (a symlink is replaced, not followed). Directories are never
    /// replaced: a directory where the tree has a file, or a file or symlink where it has a
    /// directory, is still an error.
    Replace,
}

/// Named, versioned file trees under `<home>/artifacts/v1/`.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
    limits: ArtifactLimits,
}

impl ArtifactStore {
    /// The store in the dvm home `home`, with default [`ArtifactLimits`]. Nothing is created
    /// until something is put.
    pub fn new(home: &Path) -> Self {
        ArtifactStore {
            dir: crate::home::artifacts(home),
            limits: ArtifactLimits::default(),
        }
    }

    /// Replaces the caps [`put`](Self::put) applies.
    pub fn with_limits(mut self, limits: ArtifactLimits) -> Self {
        self.limits = limits;
        self
    }

    /// `<home>/artifacts/v1`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores the tree made of `paths` as a new version of `name` and returns it. A file is
    /// stored under its file name and a directory's contents at the tree's root (as
    /// `tar -C DIR .` would lay them out), so two inputs that would put files at one path are
    /// an error. (Versions stored before this layout keep the directory's name as a prefix
    /// and stay readable as they are.) When the tree is the one the latest version already holds, that version is
    /// returned and nothing is added.
    pub fn put(&self, name: &str, paths: &[PathBuf]) -> Result<Version> {
        check_name(name)?;
        let sources = collect(paths, &self.limits)?;
        let _store = self.lock(STORE_LOCK, LockMode::Shared)?;
        let mut buffer = vec![0; COPY_BUFFER];
        let entries = sources
            .iter()
            .map(|source| self.add_blob(source, &mut buffer))
            .collect::<Result<Vec<_>>>()?;
        let manifest = Manifest { entries };
        check_manifest(&manifest).map_err(crate::error::ArtifactError::Tree)?;
        let root = tree_root(&manifest.entries)
            .map_err(Error::Internal)?
            .to_hex()
            .to_string();
        self.write_manifest(&root, &manifest)?;

        let _name = self.lock(name, LockMode::Exclusive)?;
        let mut index = self.read_index(name)?.unwrap_or_default();
        if let Some(latest) = index.versions.last()
            && latest.root == root
        {
            return Ok(latest.clone());
        }
        if index.last_version >= MAX_VERSION {
            return Err(Error::InvalidInput(format!(
                "artifact `{name}` has reached version {MAX_VERSION}, the highest a spec can \
                 name; store the tree under a new name"
            )));
        }
        let version = Version {
            version: index.last_version + 1,
            root,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
            files: manifest.entries.len() as u64,
            bytes: manifest.entries.iter().map(|entry| entry.size).sum(),
        };
        index.last_version = version.version;
        index.versions.push(version.clone());
        self.write_index(name, &index)?;
        Ok(version)
    }

    /// Every name with at least one version, sorted by name.
    pub fn list(&self) -> Result<Vec<ArtifactSummary>> {
        Ok(self
            .indexes()?
            .into_iter()
            .filter_map(|(name, index)| {
                let latest = index.versions.last()?;
                Some(ArtifactSummary {
                    latest_version: latest.version,
                    version_count: index.versions.len() as u64,
                    latest_root: latest.root.clone(),
                    bytes: latest.bytes,
                    name,
                })
            })
            .collect())
    }

    /// The versions of `name`, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<Version>> {
        check_name(name)?;
        Ok(self.live_index(name)?.versions)
    }

    /// Finds the version `spec` names: `NAME` (the latest), `NAME@NUMBER`, or `NAME@ROOT`
    /// where ROOT is at least 8 hex digits starting the tree's root (the latest version with
    /// that root, if several have it; an error if the digits start two different roots).
    pub fn resolve(&self, spec: &str) -> Result<Resolved> {
        let (name, selector) = parse_spec(spec)?;
        let index = self.live_index(name)?;
        Ok(Resolved {
            name: name.to_string(),
            version: select(spec, name, &index, &selector)?,
        })
    }

    /// The files of the version `spec` names (see [`resolve`](Self::resolve)), checked
    /// against its root.
    pub fn manifest(&self, spec: &str) -> Result<Manifest> {
        let resolved = self.resolve(spec)?;
        self.load_manifest(&resolved.to_string(), &resolved.version.root)
    }

    /// The error for a run whose `entry` the version `resolved` does not hold: it names the
    /// version and lists the first [`LISTED_PATHS`] paths it does hold. `None` when the
    /// version holds `entry` (`./` and repeated `/` aside).
    pub fn missing_entry(&self, resolved: &Resolved, entry: &str) -> Result<Option<Error>> {
        let manifest = self.load_manifest(&resolved.to_string(), &resolved.version.root)?;
        let wanted = entry
            .split('/')
            .filter(|part| !part.is_empty() && *part != ".")
            .collect::<Vec<_>>()
            .join("/");
        if manifest.entries.iter().any(|held| held.path == wanted) {
            return Ok(None);
        }
        let mut listed: Vec<String> = manifest
            .entries
            .iter()
            .take(LISTED_PATHS)
            .map(|held| held.path.clone())
            .collect();
        if manifest.entries.len() > LISTED_PATHS {
            listed.push(format!(
                "… and {} more (`dvm artifact get {resolved} DIR` writes them all out)",
                manifest.entries.len() - LISTED_PATHS
            ));
        }
        Ok(Some(Error::InvalidInput(format!(
            "artifact {resolved} holds no `{entry}`; give --entry one of the paths it holds: {}",
            listed.join(", ")
        ))))
    }

    /// Writes the version `spec` names into `dir` (created if missing) and returns it.
    /// Existing files are refused or replaced as `overwrite` says; other files in `dir` are
    /// left alone. Every file is re-hashed as it is copied out of the store, and all of them
    /// are written and checked beside their targets before the first is renamed into place,
    /// so a damaged blob fails the get with nothing of the tree written.
    pub fn get(&self, spec: &str, dir: &Path, overwrite: Overwrite) -> Result<Resolved> {
        // A store this process cannot lock is one it cannot write, which no gc can be
        // collecting either; and a gc that removed a blob anyway shows up as a missing blob.
        let _store = self.lock(STORE_LOCK, LockMode::Shared).ok();
        let resolved = self.resolve(spec)?;
        let manifest = self.load_manifest(&resolved.to_string(), &resolved.version.root)?;
        self.materialize(&resolved.to_string(), &manifest, dir, overwrite)?;
        Ok(resolved)
    }

    /// `NAME@VERSION` removes that version; `NAME` removes every version of the name. Returns
    /// what was removed. Blobs and manifests stay until [`gc`](Self::gc).
    pub fn rm(&self, spec: &str) -> Result<Vec<Version>> {
        let (name, selector) = parse_spec(spec)?;
        let _name = self.lock(name, LockMode::Exclusive)?;
        let mut index = self.live_index(name)?;
        let removed = match selector {
            Selector::Latest => std::mem::take(&mut index.versions),
            selector => {
                let version = select(spec, name, &index, &selector)?;
                index
                    .versions
                    .retain(|kept| kept.version != version.version);
                vec![version]
            }
        };
        self.write_index(name, &index)?;
        Ok(removed)
    }

    /// Removes manifests no version refers to and blobs no remaining manifest refers to, and
    /// temp files left by interrupted puts. Waits for running puts and holds new ones off.
    /// Removes nothing when a referenced manifest cannot be read, since its blobs are then
    /// unknown.
    pub fn gc(&self) -> Result<GcReport> {
        let _store = self.lock(STORE_LOCK, LockMode::Exclusive)?;
        let mut roots: HashMap<String, String> = HashMap::new();
        for (name, index) in self.indexes()? {
            for version in index.versions {
                roots
                    .entry(version.root)
                    .or_insert_with(|| format!("{name}@{}", version.version));
            }
        }
        let mut blobs = HashSet::new();
        for (root, artifact) in &roots {
            let manifest = self.load_manifest(artifact, root).map_err(|e| match e {
                Error::ArtifactDamaged { artifact, message } => Error::ArtifactDamaged {
                    artifact,
                    message: format!("{message}; gc removed nothing"),
                },
                other => other,
            })?;
            blobs.extend(manifest.entries.into_iter().map(|entry| entry.blake3));
        }

        let mut report = GcReport::default();
        let manifests = self.dir.join("manifests");
        for (path, file_name) in files_in(&manifests)? {
            let root = file_name
                .strip_suffix(".json")
                .filter(|root| parse_hash(root).is_some());
            match root {
                Some(root) if roots.contains_key(root) => {}
                Some(_) => {
                    remove(&path)?;
                    report.manifests_removed += 1;
                }
                None if is_temp(&file_name) => report.bytes_freed += remove(&path)?,
                None => {}
            }
        }
        let blob_dir = self.dir.join("blobs");
        for (path, file_name) in files_in(&blob_dir)? {
            if is_temp(&file_name) {
                report.bytes_freed += remove(&path)?;
            }
        }
        for (shard, _) in dirs_in(&blob_dir)? {
            for (path, file_name) in files_in(&shard)? {
                if parse_hash(&file_name).is_some() && !blobs.contains(&file_name) {
                    report.bytes_freed += remove(&path)?;
                    report.blobs_removed += 1;
                }
            }
            // Only succeeds when the shard is now empty, which is all it is for.
            let _ = fs::remove_dir(&shard);
        }
        Ok(report)
    }

    fn blob_path(&self, hash: &blake3::Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.dir.join("blobs").join(&hex[..2]).join(hex.as_str())
    }

    fn manifest_path(&self, root: &str) -> PathBuf {
        self.dir.join("manifests").join(format!("{root}.json"))
    }

    fn index_path(&self, name: &str) -> PathBuf {
        self.dir.join("names").join(format!("{name}.json"))
    }

    /// Holds the lock `locks/<name>.lock` until the returned file is dropped.
    fn lock(&self, name: &str, mode: LockMode) -> Result<File> {
        crate::home::lock(&self.dir.join("locks"), name, mode)
            .map_err(|e| store_error(&e.path)(e.source))
    }

    /// Copies a file into the blob store, hashing it on the way, and returns its entry.
    fn add_blob(&self, source: &Source, buffer: &mut [u8]) -> Result<Entry> {
        let input_error = |e: io::Error| Error::ArtifactInput {
            path: source.file.clone(),
            message: e.to_string(),
        };
        let input = File::open(&source.file).map_err(input_error)?;
        let dir = self.dir.join("blobs");
        fs::create_dir_all(&dir).map_err(store_error(&dir))?;
        let mut temp = tempfile::NamedTempFile::new_in(&dir).map_err(store_error(&dir))?;
        // One byte past the listed size is enough to tell that the file grew.
        let (hash, size) = copy_hashing(&mut input.take(source.size + 1), &mut temp, buffer)
            .map_err(|e| match e {
                CopyError::Read(e) => input_error(e),
                CopyError::Write(e) => store_error(temp.path())(e),
            })?;
        if size != source.size {
            return Err(Error::ArtifactInput {
                path: source.file.clone(),
                message: format!(
                    "it changed while it was being stored ({} bytes when listed, {size} when \
                     read); store it again when nothing is writing to it",
                    source.size
                ),
            });
        }
        temp.as_file()
            .sync_data()
            .map_err(store_error(temp.path()))?;
        let target = self.blob_path(&hash);
        // A blob already there is kept only if it still holds what its name says: a damaged
        // one is replaced by this good copy, which is how putting the files again repairs it.
        if !blob_intact(&target, &hash, size) {
            let shard = target.parent().expect("blob paths have a parent");
            fs::create_dir_all(shard).map_err(store_error(shard))?;
            let mut permissions = temp
                .as_file()
                .metadata()
                .map_err(input_error)?
                .permissions();
            permissions.set_readonly(true);
            temp.as_file()
                .set_permissions(permissions)
                .map_err(store_error(temp.path()))?;
            temp.persist(&target)
                .map_err(|e| store_error(&target)(e.error))?;
        }
        Ok(Entry {
            path: source.path.clone(),
            size,
            blake3: hash.to_hex().to_string(),
            executable: source.executable,
        })
    }

    fn write_manifest(&self, root: &str, manifest: &Manifest) -> Result<()> {
        let path = self.manifest_path(root);
        let bytes =
            serde_json::to_vec(manifest).map_err(|source| crate::error::ArtifactError::Encode {
                what: "manifest",
                source,
            })?;
        // The encoding is deterministic, so a manifest with other bytes is a damaged one.
        if fs::read(&path).is_ok_and(|existing| existing == bytes) {
            return Ok(());
        }
        publish(&path, &bytes)
    }

    /// Reads the manifest named `root`, checks its paths and that it hashes to `root`.
    /// `artifact` names a version that uses it, for errors.
    fn load_manifest(&self, artifact: &str, root: &str) -> Result<Manifest> {
        let path = self.manifest_path(root);
        let damaged = |problem: String| Error::ArtifactDamaged {
            artifact: artifact.to_string(),
            message: format!(
                "its manifest {} {problem}; put the original files again to repair it, or \
                 remove this version",
                path.display()
            ),
        };
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(damaged("is missing".to_string()));
            }
            Err(e) => return Err(store_error(&path)(e)),
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| damaged(format!("is not a valid manifest ({e})")))?;
        check_manifest(&manifest).map_err(damaged)?;
        let actual = tree_root(&manifest.entries).map_err(damaged)?;
        if actual.to_hex().as_str() != root {
            return Err(damaged(format!(
                "hashes to root {}, not to the root it is named by",
                actual.to_hex()
            )));
        }
        Ok(manifest)
    }

    /// The index of `name`, or `None` when the name was never put.
    fn read_index(&self, name: &str) -> Result<Option<Index>> {
        let path = self.index_path(name);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(store_error(&path)(e)),
        };
        let index = serde_json::from_slice::<Index>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|index| check_index(&index).map(|()| index))
            .map_err(|problem| Error::ArtifactDamaged {
                artifact: name.to_string(),
                message: format!(
                    "its index {} is not valid ({problem}); fix or delete that file (deleting \
                     it forgets every version of `{name}`)",
                    path.display()
                ),
            })?;
        Ok(Some(index))
    }

    /// The index of `name`, which must have a version.
    fn live_index(&self, name: &str) -> Result<Index> {
        match self.read_index(name)? {
            Some(index) if !index.versions.is_empty() => Ok(index),
            _ => Err(Error::UnknownArtifact {
                name: name.to_string(),
            }),
        }
    }

    fn write_index(&self, name: &str, index: &Index) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(index).map_err(|source| {
            crate::error::ArtifactError::Encode {
                what: "index",
                source,
            }
        })?;
        publish(&self.index_path(name), &bytes)
    }

    /// Every name ever put (also those with no version left), sorted.
    fn indexes(&self) -> Result<Vec<(String, Index)>> {
        let mut indexes = Vec::new();
        for (_, file_name) in files_in(&self.dir.join("names"))? {
            let Some(name) = file_name.strip_suffix(".json") else {
                continue;
            };
            if check_name(name).is_err() {
                continue;
            }
            if let Some(index) = self.read_index(name)? {
                indexes.push((name.to_string(), index));
            }
        }
        indexes.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(indexes)
    }

    fn materialize(
        &self,
        artifact: &str,
        manifest: &Manifest,
        dir: &Path,
        overwrite: Overwrite,
    ) -> Result<()> {
        fs::create_dir_all(dir).map_err(write_error(dir))?;
        for entry in &manifest.entries {
            let target = dir.join(&entry.path);
            let problem = match fs::symlink_metadata(&target) {
                Ok(meta) if meta.is_dir() => "is a directory, where the artifact has a file",
                Ok(_) if overwrite == Overwrite::Refuse => {
                    "already exists; remove it, get into an empty directory, or allow \
                     overwriting"
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(write_error(&target)(e)),
            };
            return Err(Error::ArtifactTarget {
                path: target,
                problem: problem.to_string(),
            });
        }

        let mut destination = Destination {
            dir,
            created: Vec::new(),
            checked: HashSet::new(),
        };
        let staged = match self.stage(artifact, manifest, &mut destination) {
            Ok(staged) => staged,
            Err(e) => {
                // The staged temp files are already gone; leave no empty directories either.
                for created in destination.created.iter().rev() {
                    let _ = fs::remove_dir(created);
                }
                return Err(e);
            }
        };
        for (temp, target) in staged {
            match overwrite {
                Overwrite::Refuse => temp.persist_noclobber(&target).map_err(|e| {
                    if e.error.kind() == io::ErrorKind::AlreadyExists {
                        Error::ArtifactTarget {
                            path: target.clone(),
                            problem: "appeared while the artifact was being written".to_string(),
                        }
                    } else {
                        write_error(&target)(e.error)
                    }
                })?,
                Overwrite::Replace => temp
                    .persist(&target)
                    .map_err(|e| write_error(&target)(e.error))?,
            }
        }
        Ok(())
    }

    /// Copies every file of `manifest` to a checked temp file beside its target.
    fn stage(
        &self,
        artifact: &str,
        manifest: &Manifest,
        destination: &mut Destination,
    ) -> Result<Vec<(tempfile::TempPath, PathBuf)>> {
        let mut buffer = vec![0; COPY_BUFFER];
        let mut staged = Vec::with_capacity(manifest.entries.len());
        for entry in &manifest.entries {
            let parent = destination.make_parents(&entry.path)?;
            let temp = self.copy_out(artifact, entry, &parent, &mut buffer)?;
            staged.push((temp, destination.dir.join(&entry.path)));
        }
        Ok(staged)
    }

    /// Copies the blob of `entry` to a temp file in `parent`, checking its hash and size.
    fn copy_out(
        &self,
        artifact: &str,
        entry: &Entry,
        parent: &Path,
        buffer: &mut [u8],
    ) -> Result<tempfile::TempPath> {
        let damaged = |problem: String| Error::ArtifactDamaged {
            artifact: artifact.to_string(),
            message: format!(
                "{problem}; put the original files again to repair it, or remove this version"
            ),
        };
        let expected = parse_hash(&entry.blake3).ok_or_else(|| {
            damaged(format!(
                "`{}` has no valid blake3 in its manifest",
                entry.path
            ))
        })?;
        let blob = self.blob_path(&expected);
        let source = match File::open(&blob) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(damaged(format!(
                    "the blob {} of `{}` is missing",
                    blob.display(),
                    entry.path
                )));
            }
            Err(e) => return Err(store_error(&blob)(e)),
        };
        let mut temp = tempfile::Builder::new()
            .prefix(".dvm-artifact-")
            .tempfile_in(parent)
            .map_err(write_error(parent))?;
        let (actual, size) = copy_hashing(&mut source.take(entry.size + 1), &mut temp, buffer)
            .map_err(|e| match e {
                CopyError::Read(e) => store_error(&blob)(e),
                CopyError::Write(e) => write_error(temp.path())(e),
            })?;
        if actual != expected || size != entry.size {
            return Err(damaged(format!(
                "the blob {} of `{}` holds {size} bytes with blake3 {}, not the {} bytes with \
                 blake3 {} it is named by",
                blob.display(),
                entry.path,
                actual.to_hex(),
                entry.size,
                entry.blake3
            )));
        }
        set_executable(temp.as_file(), entry.executable).map_err(write_error(temp.path()))?;
        Ok(temp.into_temp_path())
    }
}

/// A name's versions, as stored in `names/<name>.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// The highest version number ever given to the name.
    last_version: u64,
    /// Oldest first.
    versions: Vec<Version>,
}

fn check_index(index: &Index) -> Result<(), String> {
    let mut previous = 0;
    for version in &index.versions {
        if version.version <= previous || version.version > index.last_version {
            return Err(format!(
                "version {} is out of order or above the last version {}",
                version.version, index.last_version
            ));
        }
        if parse_hash(&version.root).is_none() {
            return Err(format!(
                "version {} has root `{}`, which is not 64 lowercase hex digits",
                version.version, version.root
            ));
        }
        previous = version.version;
    }
    Ok(())
}

/// A file to store: where it is on the host and the path it gets in the tree.
#[derive(Debug)]
struct Source {
    path: String,
    file: PathBuf,
    size: u64,
    executable: bool,
}

/// Lists the files of the tree `inputs` make, sorted by tree path, within `limits`.
fn collect(inputs: &[PathBuf], limits: &ArtifactLimits) -> Result<Vec<Source>> {
    if inputs.is_empty() {
        return Err(Error::InvalidInput(
            "give at least one file or directory to store as an artifact".to_string(),
        ));
    }
    let mut sources = Vec::new();
    let mut bytes = 0u64;
    let mut pending = Vec::new();
    for input in inputs {
        // Without its trailing `/`, which would make the lookup follow a link.
        let input: PathBuf = input.components().collect();
        let meta = fs::symlink_metadata(&input).map_err(|e| Error::ArtifactInput {
            path: input.clone(),
            message: e.to_string(),
        })?;
        if meta.is_dir() {
            // A directory's contents land at the tree's root, as `tar -C DIR .` lays them out.
            for child in read_children(&input)? {
                pending.push(child);
            }
        } else {
            let name = tree_name(&input, input.file_name())?;
            pending.push((input, name, meta));
        }
    }

    while let Some((file, path, meta)) = pending.pop() {
        let kind = meta.file_type();
        if kind.is_dir() {
            for (child_file, name, child_meta) in read_children(&file)? {
                pending.push((child_file, format!("{path}/{name}"), child_meta));
            }
        } else if kind.is_file() {
            bytes += meta.len();
            if bytes > limits.max_bytes {
                return Err(Error::ArtifactTooLarge {
                    unit: "bytes",
                    limit: limits.max_bytes,
                });
            }
            if sources.len() as u64 >= limits.max_files {
                return Err(Error::ArtifactTooLarge {
                    unit: "files",
                    limit: limits.max_files,
                });
            }
            sources.push(Source {
                executable: is_executable(&meta),
                size: meta.len(),
                path,
                file,
            });
        } else {
            let message = if kind.is_symlink() {
                "it is a symbolic link, which artifacts do not store or follow; store the file \
                 it points to instead"
            } else {
                "it is not a regular file or a directory (a device, socket or FIFO), which \
                 artifacts do not store"
            };
            return Err(Error::ArtifactInput {
                path: file,
                message: message.to_string(),
            });
        }
    }
    if sources.is_empty() {
        return Err(Error::InvalidInput(
            "the inputs hold no files; an artifact needs at least one (empty directories \
             are not stored)"
                .to_string(),
        ));
    }
    sources.sort_by(|a, b| a.path.cmp(&b.path));
    check_overlaps(&sources)?;
    Ok(sources)
}

/// A directory's entries as (file, name in the tree, metadata not following links).
fn read_children(dir: &Path) -> Result<Vec<(PathBuf, String, fs::Metadata)>> {
    let listing_error = |e: io::Error| Error::ArtifactInput {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    let mut children = Vec::new();
    for child in fs::read_dir(dir).map_err(listing_error)? {
        let child = child.map_err(listing_error)?;
        let child_file = child.path();
        let name = tree_name(&child_file, Some(&child.file_name()))?;
        // `DirEntry::metadata` does not follow a symlink, so links are seen as links.
        let child_meta = child.metadata().map_err(|e| Error::ArtifactInput {
            path: child_file.clone(),
            message: e.to_string(),
        })?;
        children.push((child_file, name, child_meta));
    }
    Ok(children)
}

/// Refuses inputs that would put two files at one tree path, or a file where another input
/// has a directory; `sources` sorted by path.
fn check_overlaps(sources: &[Source]) -> Result<()> {
    let clash = |source: &Source, other: &Source, stored: &str| Error::ArtifactInput {
        path: source.file.clone(),
        message: format!(
            "it would be stored as `{stored}`, where {} also goes; rename one of them or put \
             them in a directory",
            other.file.display()
        ),
    };
    for pair in sources.windows(2) {
        if pair[0].path == pair[1].path {
            return Err(clash(&pair[1], &pair[0], &pair[1].path));
        }
    }
    let by_path: HashMap<&str, &Source> = sources.iter().map(|s| (s.path.as_str(), s)).collect();
    for source in sources {
        for (slash, _) in source.path.match_indices('/') {
            if let Some(file) = by_path.get(&source.path[..slash]) {
                return Err(clash(source, file, &source.path));
            }
        }
    }
    Ok(())
}

/// The name `file` gets in a tree: its last component, as UTF-8.
fn tree_name(file: &Path, name: Option<&std::ffi::OsStr>) -> Result<String> {
    let refuse = |message: &str| Error::ArtifactInput {
        path: file.to_path_buf(),
        message: message.to_string(),
    };
    let name = name.ok_or_else(|| {
        refuse(
            "it has no file name to be stored under; name the file or directory itself \
             rather than `.`, `..` or `/`",
        )
    })?;
    let name = name
        .to_str()
        .ok_or_else(|| refuse("its name is not UTF-8, which artifacts cannot store"))?;
    if let Some(problem) = path_problem(name) {
        return Err(refuse(&format!("its name cannot be stored: {problem}")));
    }
    Ok(name.to_string())
}

#[cfg(unix)]
fn is_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &fs::Metadata) -> bool {
    false
}

#[cfg(unix)]
fn set_executable(file: &File, executable: bool) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if executable { 0o755 } else { 0o644 };
    file.set_permissions(fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_executable(_file: &File, _executable: bool) -> io::Result<()> {
    Ok(())
}

/// Where a get writes: directories made along the way are tracked so a failed get can take
/// them away again.
struct Destination<'a> {
    dir: &'a Path,
    created: Vec<PathBuf>,
    /// Relative directories known to be real directories (not links) inside `dir`.
    checked: HashSet<String>,
}

impl Destination<'_> {
    /// Makes the directories above the tree path `path` and returns its parent. A link or
    /// file where the tree has a directory is an error, so nothing is written through a link
    /// out of `dir`.
    fn make_parents(&mut self, path: &str) -> Result<PathBuf> {
        let Some((parents, _)) = path.rsplit_once('/') else {
            return Ok(self.dir.to_path_buf());
        };
        let mut current = self.dir.to_path_buf();
        let mut relative = String::new();
        for component in parents.split('/') {
            current.push(component);
            if !relative.is_empty() {
                relative.push('/');
            }
            relative.push_str(component);
            if self.checked.contains(&relative) {
                continue;
            }
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(Error::ArtifactTarget {
                        path: current,
                        problem: "is in the way: the artifact has a directory there; remove it \
                                  or get into an empty directory"
                            .to_string(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&current).map_err(write_error(&current))?;
                    self.created.push(current.clone());
                }
                Err(e) => return Err(write_error(&current)(e)),
            }
            self.checked.insert(relative.clone());
        }
        Ok(current)
    }
}

/// Which version of a name a spec selects.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    Latest,
    Number(u64),
    /// Lowercase hex digits starting a root.
    Root(String),
}

fn parse_spec(spec: &str) -> Result<(&str, Selector)> {
    let Some((name, version)) = spec.split_once('@') else {
        check_name(spec)?;
        return Ok((spec, Selector::Latest));
    };
    check_name(name)?;
    let invalid = |reason: String| Error::InvalidArtifactSpec {
        spec: spec.to_string(),
        reason,
    };
    if version.is_empty() {
        return Err(invalid("nothing follows `@`".to_string()));
    }
    if version.len() < MIN_ROOT_PREFIX && version.bytes().all(|b| b.is_ascii_digit()) {
        let number = version.parse().expect("fewer than 8 digits fit in a u64");
        return Ok((name, Selector::Number(number)));
    }
    if (MIN_ROOT_PREFIX..=64).contains(&version.len())
        && version.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Ok((name, Selector::Root(version.to_ascii_lowercase())));
    }
    Err(invalid(format!(
        "`{version}` is neither a version number (1 to 7 digits) nor {MIN_ROOT_PREFIX} to 64 \
         hex digits of a root"
    )))
}

/// The version of `index` that `selector` picks.
fn select(spec: &str, name: &str, index: &Index, selector: &Selector) -> Result<Version> {
    let found = match selector {
        Selector::Latest => index.versions.last(),
        Selector::Number(number) => index.versions.iter().find(|v| v.version == *number),
        Selector::Root(prefix) => {
            let matching: Vec<&Version> = index
                .versions
                .iter()
                .filter(|v| v.root.starts_with(prefix.as_str()))
                .collect();
            let roots: BTreeSet<&str> = matching.iter().map(|v| v.root.as_str()).collect();
            if roots.len() > 1 {
                return Err(Error::InvalidArtifactSpec {
                    spec: spec.to_string(),
                    reason: format!(
                        "`{prefix}` starts {} different roots of `{name}`; give more digits",
                        roots.len()
                    ),
                });
            }
            matching.last().copied()
        }
    };
    found.cloned().ok_or_else(|| Error::UnknownArtifactVersion {
        name: name.to_string(),
        version: match selector {
            Selector::Latest => "(latest)".to_string(),
            Selector::Number(number) => number.to_string(),
            Selector::Root(prefix) => format!("with a root starting {prefix}"),
        },
        known: describe_versions(&index.versions),
    })
}

fn describe_versions(versions: &[Version]) -> String {
    match versions {
        [] => "none (all were removed)".to_string(),
        [first, .., last] if versions.len() > 10 => format!(
            "{} versions from {} to {}",
            versions.len(),
            first.version,
            last.version
        ),
        _ => versions
            .iter()
            .map(|v| v.version.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn check_name(name: &str) -> Result<()> {
    let valid = name.len() <= MAX_NAME_LEN
        && name
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidArtifactName {
            name: name.to_string(),
        })
    }
}

/// Why `path` cannot name a file inside a tree, if it cannot. A path that passes, joined to a
/// directory, stays inside it on every platform.
fn path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("it is empty");
    }
    if path.starts_with('/') {
        return Some("it is absolute");
    }
    for component in path.split('/') {
        if component.is_empty() {
            return Some("it has an empty component");
        }
        if component == "." || component == ".." {
            return Some("it has a `.` or `..` component");
        }
        if component.contains(['\\', '\0']) {
            return Some("it has a `\\` or NUL character");
        }
        let mut parts = Path::new(component).components();
        if !matches!(
            (parts.next(), parts.next()),
            (Some(Component::Normal(_)), None)
        ) {
            return Some("it has a component that is not a plain name on this platform");
        }
    }
    None
}

/// Checks what the root and [`ArtifactStore::get`] rely on: safe paths, strictly sorted, no
/// path both a file and a directory, well-formed hashes.
fn check_manifest(manifest: &Manifest) -> Result<(), String> {
    let mut previous: Option<&str> = None;
    for entry in &manifest.entries {
        if let Some(problem) = path_problem(&entry.path) {
            return Err(format!("has the unsafe path `{}` ({problem})", entry.path));
        }
        if previous.is_some_and(|previous| previous >= entry.path.as_str()) {
            return Err(format!(
                "is not sorted by path without duplicates (at `{}`)",
                entry.path
            ));
        }
        if parse_hash(&entry.blake3).is_none() {
            return Err(format!(
                "gives `{}` the blake3 `{}`, which is not 64 lowercase hex digits",
                entry.path, entry.blake3
            ));
        }
        previous = Some(&entry.path);
    }
    let files: HashSet<&str> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
    for entry in &manifest.entries {
        for (slash, _) in entry.path.match_indices('/') {
            let parent = &entry.path[..slash];
            if files.contains(parent) {
                return Err(format!(
                    "has `{parent}` as a file and as the directory of `{}`",
                    entry.path
                ));
            }
        }
    }
    Ok(())
}

/// The root of a tree (see the module documentation); `entries` sorted by path.
fn tree_root(entries: &[Entry]) -> Result<blake3::Hash, String> {
    let mut hasher = blake3::Hasher::new();
    put_field(&mut hasher, ROOT_DOMAIN);
    hasher.update(&(entries.len() as u64).to_le_bytes());
    for entry in entries {
        let contents = parse_hash(&entry.blake3)
            .ok_or_else(|| format!("`{}` has no valid blake3", entry.path))?;
        put_field(&mut hasher, entry.path.as_bytes());
        hasher.update(contents.as_bytes());
        hasher.update(&entry.size.to_le_bytes());
        hasher.update(&[u8::from(entry.executable)]);
    }
    Ok(hasher.finalize())
}

fn put_field(hasher: &mut blake3::Hasher, field: &[u8]) {
    hasher.update(&(field.len() as u64).to_le_bytes());
    hasher.update(field);
}

/// A blake3 written as 64 lowercase hex digits (the only form the store writes).
fn parse_hash(hex: &str) -> Option<blake3::Hash> {
    let canonical = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    canonical
        .then(|| blake3::Hash::from_hex(hex).ok())
        .flatten()
}

/// True when the blob at `path` has `size` bytes hashing to `hash`.
fn blob_intact(path: &Path, hash: &blake3::Hash, size: u64) -> bool {
    if !fs::metadata(path).is_ok_and(|meta| meta.len() == size) {
        return false;
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap_rayon(path).is_ok() && hasher.finalize() == *hash
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `reader` to `writer`, hashing what passes; returns the hash and the byte count.
fn copy_hashing(
    reader: &mut impl Read,
    writer: &mut impl Write,
    buffer: &mut [u8],
) -> Result<(blake3::Hash, u64), CopyError> {
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    loop {
        let n = match reader.read(buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        hasher.update(&buffer[..n]);
        writer.write_all(&buffer[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
    Ok((hasher.finalize(), total))
}

/// Publishes `bytes` at `target` through the home ([`crate::home::publish`], synced).
fn publish(target: &Path, bytes: &[u8]) -> Result<()> {
    crate::home::publish(target, bytes, crate::home::Durability::Synced)
        .map_err(|e| store_error(&e.path)(e.source))
}

/// Whether a file in the store is a temp file (tempfile names them `.tmp…`).
fn is_temp(file_name: &str) -> bool {
    file_name.starts_with(".tmp")
}

/// Removes a store file and returns how many bytes it held.
fn remove(path: &Path) -> Result<u64> {
    let bytes = fs::symlink_metadata(path).map_or(0, |meta| meta.len());
    match fs::remove_file(path) {
        Ok(()) => Ok(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(store_error(path)(e)),
    }
}

/// The plain files directly in `dir` with their UTF-8 names; none when `dir` is missing.
fn files_in(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    entries_in(dir, false)
}

fn dirs_in(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    entries_in(dir, true)
}

fn entries_in(dir: &Path, dirs: bool) -> Result<Vec<(PathBuf, String)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(store_error(dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(store_error(dir))?;
        let kind = entry.file_type().map_err(store_error(&entry.path()))?;
        let wanted = if dirs { kind.is_dir() } else { kind.is_file() };
        if let (true, Ok(name)) = (wanted, entry.file_name().into_string()) {
            found.push((entry.path(), name));
        }
    }
    Ok(found)
}

fn store_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::ArtifactStore {
        path: path.to_path_buf(),
        source,
    }
}

fn write_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::WriteOutput {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, contents: &[u8], executable: bool) -> Entry {
        Entry {
            path: path.to_string(),
            size: contents.len() as u64,
            blake3: blake3::hash(contents).to_hex().to_string(),
            executable,
        }
    }

    fn root(entries: &[Entry]) -> String {
        tree_root(entries).unwrap().to_hex().to_string()
    }

    #[test]
    fn creation_times_show_as_rfc3339_and_never_panic() {
        let at = |created| Version {
            version: 1,
            root: String::new(),
            created,
            files: 0,
            bytes: 0,
        };
        assert_eq!(at(0).created_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_796_029_200).created_rfc3339(), "2026-11-30T09:00:00Z");
        assert_eq!(at(u64::MAX).created_rfc3339(), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn the_root_encoding_is_pinned() {
        // Changing this value orphans every stored tree: bump ROOT_DOMAIN and the layout
        // directory instead.
        let entries = [
            entry("a/b.txt", b"hello", false),
            entry("run.sh", b"", true),
        ];
        // The encoding as the module documentation spells it.
        let mut encoded = Vec::new();
        encoded.extend(20u64.to_le_bytes());
        encoded.extend(b"dvm artifact tree v1");
        encoded.extend(2u64.to_le_bytes());
        encoded.extend(7u64.to_le_bytes());
        encoded.extend(b"a/b.txt");
        encoded.extend(blake3::hash(b"hello").as_bytes());
        encoded.extend(5u64.to_le_bytes());
        encoded.push(0);
        encoded.extend(6u64.to_le_bytes());
        encoded.extend(b"run.sh");
        encoded.extend(blake3::hash(b"").as_bytes());
        encoded.extend(0u64.to_le_bytes());
        encoded.push(1);
        assert_eq!(root(&entries), blake3::hash(&encoded).to_hex().as_str());
        assert_eq!(
            root(&entries),
            "a5d4df760fc7ded9fb1bd9512219b7553c44426a9a8294fca50d82bd9760b604"
        );
    }

    #[test]
    fn the_root_depends_on_every_field() {
        let base = [entry("a", b"x", false), entry("b", b"y", false)];
        let mut variants = vec![root(&base)];
        let mut renamed = base.clone();
        renamed[1].path = "c".to_string();
        let mut edited = base.clone();
        edited[1].blake3 = blake3::hash(b"z").to_hex().to_string();
        let mut resized = base.clone();
        resized[1].size = 2;
        let mut executable = base.clone();
        executable[1].executable = true;
        for changed in [&renamed[..], &edited, &resized, &executable, &base[..1]] {
            variants.push(root(changed));
        }
        let distinct: HashSet<&String> = variants.iter().collect();
        assert_eq!(distinct.len(), variants.len(), "{variants:#?}");
        // Length prefixes keep a path boundary from moving between fields.
        assert_ne!(
            root(&[entry("ab", b"", false)]),
            root(&[entry("a", b"", false), entry("b", b"", false)])
        );
    }

    #[test]
    fn names_are_checked() {
        for good in ["a", "App_1.2-rc", "9", &"x".repeat(128)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "_store",
            "a/b",
            "a b",
            "é",
            "a@1",
            "..",
            &"x".repeat(129),
        ] {
            assert!(
                matches!(check_name(bad), Err(Error::InvalidArtifactName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn specs_parse_into_a_name_and_a_selector() {
        assert_eq!(parse_spec("app").unwrap(), ("app", Selector::Latest));
        assert_eq!(parse_spec("app@12").unwrap(), ("app", Selector::Number(12)));
        assert_eq!(
            parse_spec("app@DEADBEEF0").unwrap(),
            ("app", Selector::Root("deadbeef0".to_string()))
        );
        // Eight digits are a root prefix, never a version number.
        assert_eq!(
            parse_spec("app@12345678").unwrap(),
            ("app", Selector::Root("12345678".to_string()))
        );
        for bad in ["app@", "app@abc", "app@-1", "app@1.0", "app@xyzxyzxyz"] {
            assert!(
                matches!(parse_spec(bad), Err(Error::InvalidArtifactSpec { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_spec("bad name@1"),
            Err(Error::InvalidArtifactName { .. })
        ));
    }

    #[test]
    fn a_root_prefix_of_two_different_roots_is_ambiguous() {
        let version = |version, root: &str| Version {
            version,
            root: root.to_string(),
            created: 0,
            files: 1,
            bytes: 1,
        };
        let a = format!("abcdef01{}", "0".repeat(56));
        let b = format!("abcdef01{}", "1".repeat(56));
        let index = Index {
            last_version: 3,
            versions: vec![version(1, &a), version(2, &b), version(3, &a)],
        };
        let prefix = Selector::Root("abcdef01".to_string());
        let error = select("app@abcdef01", "app", &index, &prefix).unwrap_err();
        assert!(
            matches!(error, Error::InvalidArtifactSpec { .. }),
            "{error:?}"
        );
        // A longer prefix picks the latest version with that root.
        let longer = Selector::Root("abcdef0100".to_string());
        assert_eq!(
            select("app@abcdef0100", "app", &index, &longer)
                .unwrap()
                .version,
            3
        );
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for good in ["a", "a/b/c.txt", "ünï/cødé.py", "a..b", ".hidden/x"] {
            assert_eq!(path_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/",
            "./a",
            "a/./b",
            "a\\..\\x",
            "a\0b",
        ] {
            assert!(path_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn manifests_with_clashing_or_unsorted_paths_are_refused() {
        let clash = Manifest {
            entries: vec![entry("a", b"1", false), entry("a/b", b"2", false)],
        };
        assert!(
            check_manifest(&clash)
                .unwrap_err()
                .contains("as a file and as")
        );
        let unsorted = Manifest {
            entries: vec![entry("b", b"1", false), entry("a", b"2", false)],
        };
        assert!(check_manifest(&unsorted).unwrap_err().contains("sorted"));
        let duplicate = Manifest {
            entries: vec![entry("a", b"1", false), entry("a", b"1", false)],
        };
        assert!(check_manifest(&duplicate).is_err());
        let mut uppercase = entry("a", b"1", false);
        uppercase.blake3 = uppercase.blake3.to_uppercase();
        assert!(
            check_manifest(&Manifest {
                entries: vec![uppercase]
            })
            .is_err()
        );
    }

    /// An attacker who can write the store crafts a manifest whose root is right but whose
    /// path escapes; the path check, not the root check, must stop it.
    #[test]
    fn a_manifest_with_a_correct_root_and_an_escaping_path_writes_nothing() {
        let home = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(home.path());
        let input = work.path().join("app.py");
        fs::write(&input, b"print(1)").unwrap();
        let version = store.put("app", &[input]).unwrap();

        let evil = Manifest {
            entries: vec![entry("../escaped.txt", b"print(1)", false)],
        };
        let evil_root = root(&evil.entries);
        publish(
            &store.manifest_path(&evil_root),
            &serde_json::to_vec(&evil).unwrap(),
        )
        .unwrap();
        let mut index = store.read_index("app").unwrap().unwrap();
        index.versions[0].root = evil_root;
        store.write_index("app", &index).unwrap();

        let out = work.path().join("out");
        let error = store.get("app", &out, Overwrite::Replace).unwrap_err();
        assert!(matches!(error, Error::ArtifactDamaged { .. }), "{error:?}");
        assert!(error.to_string().contains("../escaped.txt"), "{error}");
        assert!(!work.path().join("escaped.txt").exists());
        assert_eq!(version.version, 1);
    }
}
