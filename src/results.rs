//! The execution result cache: outcomes of deterministic runs, stored by a key over
//! everything that can change them, so repeating a run returns its outcome (and its output
//! files) at once.
//!
//! # Key
//! blake3 over a versioned, length-prefixed encoding ([`KeyBuilder`]): every field is a
//! tag byte and a length-prefixed value, in a fixed order, so no two different runs encode
//! alike. The fields: the cache schema; the runtime (id, version, module digest), the engine's
//! compatibility hash and wasmtime's version; the script's name and bytes (or the module's
//! digest); the Merkle root of the workspace before the run; the installed package lock;
//! argv, environment, stdin; every limit; the determinism seed; preloaded modules.
//!
//! # Policy
//! Only deterministic runs without grants (host directories can change under the key) are
//! looked up, and of those only runs that did not end by the deadline or cancellation (the
//! two endings that depend on timing) are stored.
//!
//! # Store
//! Behind [`ResultBackend`]: whole entries and output-file blobs by name. [`ResultCache`]
//! adds what every backend gets: entries carry a digest of their own body and blobs are named
//! by their blake3, both checked on every read; a damaged entry is reported, removed and
//! treated as a miss, never returned. The local backend keeps them under
//! `$DVM_HOME/results/v1/`, written through temp files and renames, with least-recently-used
//! eviction past a size bound.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::limits::{LimitKind, Limits, OutputOverflow};
use crate::outcome::{Outcome, Status, Truncated};
use crate::workspace::OutputFile;

/// Bumped whenever the key encoding or the entry format changes.
pub const SCHEMA: u32 = 1;
/// Default bound on the local store's size.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// Whether a run uses the result cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// Look up and store deterministic runs without grants (the default).
    #[default]
    Auto,
    /// Neither look up nor store.
    Off,
}

/// What the cache did for a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheStatus {
    /// The run was not eligible, or caching was off.
    #[default]
    Off,
    /// The outcome came from the cache.
    Hit,
    /// The run ran (and was stored if its ending allows).
    Miss,
}

/// Builds a key: tagged, length-prefixed fields in a fixed order.
#[derive(Clone)]
pub struct KeyBuilder {
    hasher: blake3::Hasher,
}

impl Default for KeyBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyBuilder {
    pub fn new() -> Self {
        let mut builder = KeyBuilder {
            hasher: blake3::Hasher::new(),
        };
        builder.bytes(0, b"dvm result key");
        builder.u64(1, u64::from(SCHEMA));
        builder
    }

    pub fn bytes(&mut self, tag: u8, value: &[u8]) -> &mut Self {
        self.hasher.update(&[tag]);
        self.hasher.update(&(value.len() as u64).to_le_bytes());
        self.hasher.update(value);
        self
    }

    pub fn str(&mut self, tag: u8, value: &str) -> &mut Self {
        self.bytes(tag, value.as_bytes())
    }

    pub fn u64(&mut self, tag: u8, value: u64) -> &mut Self {
        self.bytes(tag, &value.to_le_bytes())
    }

    pub fn strings(&mut self, tag: u8, values: &[String]) -> &mut Self {
        self.u64(tag, values.len() as u64);
        for value in values {
            self.str(tag, value);
        }
        self
    }

    pub fn limits(&mut self, limits: &Limits) -> &mut Self {
        self.u64(
            40,
            u64::try_from(limits.deadline.as_nanos()).unwrap_or(u64::MAX),
        );
        match limits.fuel {
            Some(fuel) => self.u64(41, 1).u64(41, fuel),
            None => self.u64(41, 0),
        };
        self.u64(42, limits.memory_bytes)
            .u64(43, limits.stdout_bytes)
            .u64(44, limits.stderr_bytes)
            .u64(
                45,
                match limits.output_overflow {
                    OutputOverflow::Truncate => 0,
                    OutputOverflow::Stop => 1,
                },
            )
            .u64(46, limits.table_elements)
            .u64(47, limits.disk_bytes)
            .u64(48, limits.files)
            .u64(49, limits.open_files)
    }

    pub fn finish(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }
}

/// An outcome as stored: every field, output bytes in base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredOutcome {
    status: Status,
    exit_code: Option<i32>,
    stdout: String,
    stderr: String,
    stdout_bytes: u64,
    stderr_bytes: u64,
    truncated: Truncated,
    limit: Option<LimitKind>,
    fuel_used: u64,
    duration_ns: u64,
    memory_peak_bytes: u64,
    trap: Option<String>,
    files: Vec<OutputFile>,
}

/// One cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    schema: u32,
    key: String,
    /// Unix seconds when the run was stored.
    created: u64,
    outcome: StoredOutcome,
}

/// An entry and the digest of its body, as written.
#[derive(Serialize, Deserialize)]
struct Sealed {
    /// blake3 of `body`.
    digest: String,
    body: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl StoredOutcome {
    fn from_outcome(outcome: &Outcome) -> Self {
        StoredOutcome {
            status: outcome.status,
            exit_code: outcome.exit_code,
            stdout: b64().encode(&outcome.stdout),
            stderr: b64().encode(&outcome.stderr),
            stdout_bytes: outcome.stdout_bytes,
            stderr_bytes: outcome.stderr_bytes,
            truncated: outcome.truncated,
            limit: outcome.limit,
            fuel_used: outcome.fuel_used,
            duration_ns: u64::try_from(outcome.duration.as_nanos()).unwrap_or(u64::MAX),
            memory_peak_bytes: outcome.memory_peak_bytes,
            trap: outcome.trap.clone(),
            files: outcome.files.clone(),
        }
    }

    fn to_outcome(&self) -> Option<Outcome> {
        Some(Outcome {
            status: self.status,
            exit_code: self.exit_code,
            stdout: b64().decode(&self.stdout).ok()?,
            stderr: b64().decode(&self.stderr).ok()?,
            stdout_bytes: self.stdout_bytes,
            stderr_bytes: self.stderr_bytes,
            truncated: self.truncated,
            limit: self.limit,
            fuel_used: self.fuel_used,
            duration: Duration::from_nanos(self.duration_ns),
            memory_peak_bytes: self.memory_peak_bytes,
            trap: self.trap.clone(),
            files: self.files.clone(),
            cache: CacheStatus::Hit,
            cache_key: None,
        })
    }
}

/// Where entries and blobs live. Implementations store bytes by name; integrity checks,
/// policy and eviction choices are made above them, in [`ResultCache`].
pub trait ResultBackend: Send + Sync {
    fn get_entry(&self, key: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Stores an entry; a concurrent writer of the same key writes the same bytes.
    fn put_entry(&self, key: &str, bytes: &[u8]) -> Result<(), Error>;
    fn remove_entry(&self, key: &str) -> Result<bool, Error>;
    /// Every entry: key, size in bytes, last use.
    fn entries(&self) -> Result<Vec<(String, u64, SystemTime)>, Error>;
    /// Marks an entry as just used (for least-recently-used eviction).
    fn touch_entry(&self, key: &str);
    fn get_blob(&self, blake3: &str) -> Result<Option<Vec<u8>>, Error>;
    fn put_blob(&self, blake3: &str, bytes: &[u8]) -> Result<(), Error>;
    fn remove_blob(&self, blake3: &str) -> Result<(), Error>;
    /// Every blob: name and size.
    fn blobs(&self) -> Result<Vec<(String, u64)>, Error>;
}

/// The local backend under `<home>/results/v1/`.
pub struct LocalBackend {
    dir: PathBuf,
}

fn store_error(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Internal(format!("result cache: {what}: {e}"))
}

impl LocalBackend {
    pub fn new(home: &Path) -> Self {
        LocalBackend {
            dir: home.join("results").join("v1"),
        }
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        self.dir.join("entries").join(format!("{key}.json"))
    }

    fn blob_path(&self, blake3: &str) -> PathBuf {
        self.dir.join("blobs").join(blake3)
    }

    fn publish(&self, path: &Path, bytes: &[u8]) -> Result<(), Error> {
        let dir = path.parent().expect("store paths have a parent");
        std::fs::create_dir_all(dir).map_err(store_error("create a directory"))?;
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(store_error("write"))?;
        temp.write_all(bytes).map_err(store_error("write"))?;
        temp.persist(path)
            .map(drop)
            .map_err(|e| Error::Internal(format!("result cache: store: {}", e.error)))
    }

    fn read(path: &Path) -> Result<Option<Vec<u8>>, Error> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(store_error("read")(e)),
        }
    }

    fn listing(dir: &Path) -> Vec<(String, std::fs::Metadata)> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let meta = entry.metadata().ok()?;
                meta.is_file().then_some((name, meta))
            })
            .filter(|(name, _)| !name.starts_with('.'))
            .collect()
    }
}

impl ResultBackend for LocalBackend {
    fn get_entry(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Self::read(&self.entry_path(key))
    }

    fn put_entry(&self, key: &str, bytes: &[u8]) -> Result<(), Error> {
        self.publish(&self.entry_path(key), bytes)
    }

    fn remove_entry(&self, key: &str) -> Result<bool, Error> {
        match std::fs::remove_file(self.entry_path(key)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(store_error("remove")(e)),
        }
    }

    fn entries(&self) -> Result<Vec<(String, u64, SystemTime)>, Error> {
        Ok(Self::listing(&self.dir.join("entries"))
            .into_iter()
            .filter_map(|(name, meta)| {
                let key = name.strip_suffix(".json")?.to_string();
                Some((key, meta.len(), meta.modified().unwrap_or(UNIX_EPOCH)))
            })
            .collect())
    }

    fn touch_entry(&self, key: &str) {
        if let Ok(file) = std::fs::File::options()
            .append(true)
            .open(self.entry_path(key))
        {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    fn get_blob(&self, blake3: &str) -> Result<Option<Vec<u8>>, Error> {
        Self::read(&self.blob_path(blake3))
    }

    fn put_blob(&self, blake3: &str, bytes: &[u8]) -> Result<(), Error> {
        let path = self.blob_path(blake3);
        if path.is_file() {
            return Ok(());
        }
        self.publish(&path, bytes)
    }

    fn remove_blob(&self, blake3: &str) -> Result<(), Error> {
        match std::fs::remove_file(self.blob_path(blake3)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(store_error("remove")(e)),
        }
    }

    fn blobs(&self) -> Result<Vec<(String, u64)>, Error> {
        Ok(Self::listing(&self.dir.join("blobs"))
            .into_iter()
            .map(|(name, meta)| (name, meta.len()))
            .collect())
    }
}

/// A stored run, as `dvm cache ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntrySummary {
    pub key: String,
    pub bytes: u64,
    /// Unix seconds of the last use.
    pub used: u64,
    pub status: Option<Status>,
    pub files: usize,
}

/// Totals of the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    pub entries: u64,
    pub entry_bytes: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub max_bytes: u64,
}

/// A hit: the stored outcome and the contents of its output files.
pub(crate) struct Hit {
    pub outcome: Outcome,
    pub files: Vec<(OutputFile, Vec<u8>)>,
}

/// The result cache over a backend.
pub struct ResultCache {
    backend: Box<dyn ResultBackend>,
    max_bytes: u64,
}

impl ResultCache {
    pub fn new(backend: Box<dyn ResultBackend>, max_bytes: u64) -> Self {
        ResultCache { backend, max_bytes }
    }

    /// The local store under `home`, bounded to `max_bytes`.
    pub fn local(home: &Path, max_bytes: u64) -> Self {
        Self::new(Box::new(LocalBackend::new(home)), max_bytes)
    }

    /// Reads and checks an entry; a damaged one is removed and reported as `Err`.
    fn entry(&self, key: &str) -> Result<Option<Entry>, Error> {
        let Some(bytes) = self.backend.get_entry(key)? else {
            return Ok(None);
        };
        let damaged = |why: &str| {
            let _ = self.backend.remove_entry(key);
            Error::Internal(format!(
                "result cache: entry {key} is damaged ({why}); it was removed and the run \
                 will be computed again"
            ))
        };
        let sealed: Sealed = serde_json::from_slice(&bytes).map_err(|_| damaged("not JSON"))?;
        if blake3::hash(sealed.body.as_bytes()).to_hex().as_str() != sealed.digest {
            return Err(damaged("its digest does not match"));
        }
        let entry: Entry =
            serde_json::from_str(&sealed.body).map_err(|_| damaged("unreadable body"))?;
        if entry.key != key || entry.schema != SCHEMA {
            return Err(damaged("it is filed under another key"));
        }
        Ok(Some(entry))
    }

    /// The stored outcome of `key` with its files, checked; `None` on a miss or damage
    /// (damage is logged and the entry removed).
    pub(crate) fn get(&self, key: &str) -> Option<Hit> {
        let entry = match self.entry(key) {
            Ok(Some(entry)) => entry,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!("{e}");
                return None;
            }
        };
        let mut outcome = entry.outcome.to_outcome()?;
        let mut files = Vec::with_capacity(entry.outcome.files.len());
        for file in &entry.outcome.files {
            let Some(hash) = &file.blake3 else {
                continue;
            };
            let bytes = match self.backend.get_blob(hash) {
                Ok(Some(bytes)) if blake3::hash(&bytes).to_hex().as_str() == hash => bytes,
                _ => {
                    tracing::warn!(
                        "result cache: output file {} of {key} is missing or damaged; recomputing",
                        file.path
                    );
                    let _ = self.backend.remove_entry(key);
                    let _ = self.backend.remove_blob(hash);
                    return None;
                }
            };
            files.push((file.clone(), bytes));
        }
        self.backend.touch_entry(key);
        outcome.cache_key = Some(key.to_string());
        Some(Hit { outcome, files })
    }

    /// Stores a run's outcome and the contents of its output files (read by `read`), then
    /// evicts past the size bound.
    pub(crate) fn put(
        &self,
        key: &str,
        outcome: &Outcome,
        read: impl Fn(&OutputFile) -> Option<Vec<u8>>,
    ) -> Result<(), Error> {
        let mut stored = StoredOutcome::from_outcome(outcome);
        stored.files.retain(|file| file.blake3.is_some());
        for file in &stored.files {
            let hash = file.blake3.as_deref().unwrap_or_default();
            let bytes = read(file).ok_or_else(|| {
                Error::Internal(format!(
                    "result cache: cannot read output file {}",
                    file.path
                ))
            })?;
            if blake3::hash(&bytes).to_hex().as_str() != hash {
                return Err(Error::Internal(format!(
                    "result cache: output file {} changed after the run",
                    file.path
                )));
            }
            self.backend.put_blob(hash, &bytes)?;
        }
        let entry = Entry {
            schema: SCHEMA,
            key: key.to_string(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            outcome: stored,
        };
        let body = serde_json::to_string(&entry)
            .map_err(|e| Error::Internal(format!("result cache: encode: {e}")))?;
        let sealed = Sealed {
            digest: blake3::hash(body.as_bytes()).to_hex().to_string(),
            body,
        };
        let bytes = serde_json::to_vec(&sealed)
            .map_err(|e| Error::Internal(format!("result cache: encode: {e}")))?;
        self.backend.put_entry(key, &bytes)?;
        self.evict_if_over()?;
        Ok(())
    }

    /// Every entry, most recently used first.
    pub fn list(&self) -> Result<Vec<EntrySummary>, Error> {
        let mut summaries: Vec<EntrySummary> = self
            .backend
            .entries()?
            .into_iter()
            .map(|(key, bytes, used)| {
                let entry = self.entry(&key).ok().flatten();
                EntrySummary {
                    used: used.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                    status: entry.as_ref().map(|e| e.outcome.status),
                    files: entry.as_ref().map_or(0, |e| e.outcome.files.len()),
                    key,
                    bytes,
                }
            })
            .collect();
        summaries.sort_by(|a, b| b.used.cmp(&a.used).then(a.key.cmp(&b.key)));
        Ok(summaries)
    }

    /// The stored outcome of `key`, checked, as the JSON `--json` prints.
    pub fn show(&self, key: &str) -> Result<serde_json::Value, Error> {
        match self.get(key) {
            Some(hit) => {
                let mut value = hit.outcome.to_json();
                value["cache_key"] = serde_json::Value::String(key.to_string());
                Ok(value)
            }
            None => Err(Error::InvalidInput(format!(
                "no cached result has the key {key}; `dvm cache ls` lists them"
            ))),
        }
    }

    pub fn remove(&self, key: &str) -> Result<bool, Error> {
        let removed = self.backend.remove_entry(key)?;
        self.gc(u64::MAX)?;
        Ok(removed)
    }

    /// Removes every entry and blob.
    pub fn clear(&self) -> Result<u64, Error> {
        let entries = self.backend.entries()?;
        for (key, _, _) in &entries {
            self.backend.remove_entry(key)?;
        }
        self.gc(u64::MAX)?;
        Ok(entries.len() as u64)
    }

    pub fn stats(&self) -> Result<CacheStats, Error> {
        let entries = self.backend.entries()?;
        let blobs = self.backend.blobs()?;
        Ok(CacheStats {
            entries: entries.len() as u64,
            entry_bytes: entries.iter().map(|(_, bytes, _)| bytes).sum(),
            blobs: blobs.len() as u64,
            blob_bytes: blobs.iter().map(|(_, bytes)| bytes).sum(),
            max_bytes: self.max_bytes,
        })
    }

    /// Runs [`ResultCache::gc`] only when the store is over its bound: the sizes come from
    /// listings, so a store within bounds costs no entry reads on every put.
    fn evict_if_over(&self) -> Result<(), Error> {
        let stats = self.stats()?;
        if stats.entry_bytes.saturating_add(stats.blob_bytes) > self.max_bytes {
            self.gc(self.max_bytes)?;
        }
        Ok(())
    }

    /// Evicts least recently used entries until entries and blobs fit in `max_bytes`, then
    /// removes blobs no entry refers to. Returns the entries evicted.
    pub fn gc(&self, max_bytes: u64) -> Result<u64, Error> {
        let mut entries = self.backend.entries()?;
        entries.sort_by_key(|(_, _, used)| std::cmp::Reverse(*used));
        let blob_sizes: std::collections::HashMap<String, u64> =
            self.backend.blobs()?.into_iter().collect();
        let mut kept_bytes = 0u64;
        let mut referenced = BTreeSet::new();
        let mut evicted = 0;
        for (key, bytes, _) in entries {
            let hashes: Vec<String> = match self.entry(&key) {
                Ok(Some(entry)) => entry
                    .outcome
                    .files
                    .iter()
                    .filter_map(|f| f.blake3.clone())
                    .collect(),
                _ => continue,
            };
            let new_blobs: u64 = hashes
                .iter()
                .filter(|h| !referenced.contains(*h))
                .map(|h| blob_sizes.get(h).copied().unwrap_or(0))
                .sum();
            if kept_bytes.saturating_add(bytes + new_blobs) > max_bytes {
                self.backend.remove_entry(&key)?;
                evicted += 1;
                continue;
            }
            kept_bytes += bytes + new_blobs;
            referenced.extend(hashes);
        }
        for blob in blob_sizes.keys() {
            if !referenced.contains(blob) {
                self.backend.remove_blob(blob)?;
            }
        }
        Ok(evicted)
    }
}

/// What `export` wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExportReport {
    pub entries: u64,
    pub blobs: u64,
    pub bytes: u64,
}

/// What `import` took and refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub imported: u64,
    /// Entries refused, each with why.
    pub rejected: Vec<String>,
}

/// The bundle's own description, first in the archive.
const BUNDLE_MANIFEST: &str = "dvm-results-bundle.json";
/// Most bytes a bundle may unpack to.
const MAX_BUNDLE_BYTES: u64 = 16 << 30;

fn is_hex_name(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl ResultCache {
    /// Writes `keys` (every entry when empty) with their output files to a `.tar.zst`
    /// bundle. Damaged entries are left out.
    pub fn export(&self, keys: &[String], to: &Path) -> Result<ExportReport, Error> {
        let keys: Vec<String> = if keys.is_empty() {
            self.backend
                .entries()?
                .into_iter()
                .map(|(key, _, _)| key)
                .collect()
        } else {
            keys.to_vec()
        };
        let mut archive = tar::Builder::new(Vec::new());
        let add = |archive: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            archive
                .append_data(&mut header, name, bytes)
                .map_err(|e| Error::Internal(format!("cannot build the bundle: {e}")))
        };
        let mut report = ExportReport::default();
        let mut blobs = BTreeSet::new();
        let mut exported = Vec::new();
        for key in &keys {
            let entry = match self.entry(key) {
                Ok(Some(entry)) => entry,
                Ok(None) => {
                    return Err(Error::InvalidInput(format!(
                        "no cached result has the key {key}; `dvm cache ls` lists them"
                    )));
                }
                Err(e) => {
                    tracing::warn!("{e}");
                    continue;
                }
            };
            let Some(sealed) = self.backend.get_entry(key)? else {
                continue;
            };
            for hash in entry.outcome.files.iter().filter_map(|f| f.blake3.as_ref()) {
                if blobs.insert(hash.clone()) {
                    let bytes = self.backend.get_blob(hash)?.ok_or_else(|| {
                        Error::Internal(format!("result cache: output blob {hash} is missing"))
                    })?;
                    add(&mut archive, &format!("blobs/{hash}"), &bytes)?;
                    report.blobs += 1;
                }
            }
            add(&mut archive, &format!("entries/{key}.json"), &sealed)?;
            exported.push(key.clone());
            report.entries += 1;
        }
        let manifest = serde_json::json!({ "schema": SCHEMA, "entries": exported });
        add(
            &mut archive,
            BUNDLE_MANIFEST,
            manifest.to_string().as_bytes(),
        )?;
        let tarball = archive
            .into_inner()
            .map_err(|e| Error::Internal(format!("cannot build the bundle: {e}")))?;
        let compressed = ruzstd::encoding::compress_to_vec(
            tarball.as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        report.bytes = compressed.len() as u64;
        std::fs::write(to, compressed).map_err(|e| {
            Error::InvalidInput(format!("cannot write the bundle {}: {e}", to.display()))
        })?;
        Ok(report)
    }

    /// Reads a bundle made by [`ResultCache::export`]: every entry is checked (its digest,
    /// its key, each output file's blake3) and stored only if it holds; the rest are
    /// reported as rejected.
    pub fn import(&self, from: &Path) -> Result<ImportReport, Error> {
        let bad = |why: String| {
            Error::InvalidInput(format!(
                "{} is not a dvm results bundle: {why}",
                from.display()
            ))
        };
        let file = std::fs::File::open(from).map_err(|source| Error::ReadInput {
            path: from.to_path_buf(),
            source,
        })?;
        let decoder = ruzstd::decoding::StreamingDecoder::new(std::io::BufReader::new(file))
            .map_err(|e| bad(format!("not zstd ({e})")))?;
        let mut archive = tar::Archive::new(std::io::Read::take(decoder, MAX_BUNDLE_BYTES));
        let mut entries = std::collections::BTreeMap::new();
        let mut blobs = std::collections::HashMap::new();
        let mut report = ImportReport::default();
        for member in archive.entries().map_err(|e| bad(e.to_string()))? {
            let mut member = member.map_err(|e| bad(e.to_string()))?;
            let name = member
                .path()
                .map_err(|e| bad(e.to_string()))?
                .to_string_lossy()
                .into_owned();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut member, &mut bytes).map_err(|e| bad(e.to_string()))?;
            if let Some(key) = name
                .strip_prefix("entries/")
                .and_then(|n| n.strip_suffix(".json"))
            {
                if is_hex_name(key) {
                    entries.insert(key.to_string(), bytes);
                    continue;
                }
            } else if let Some(hash) = name.strip_prefix("blobs/")
                && is_hex_name(hash)
            {
                blobs.insert(hash.to_string(), bytes);
                continue;
            } else if name == BUNDLE_MANIFEST {
                continue;
            }
            report
                .rejected
                .push(format!("{name}: not a part of a results bundle"));
        }
        for (key, sealed_bytes) in entries {
            match check_entry(&key, &sealed_bytes, &blobs) {
                Ok(entry) => {
                    for hash in entry.outcome.files.iter().filter_map(|f| f.blake3.as_ref()) {
                        self.backend.put_blob(hash, &blobs[hash])?;
                    }
                    self.backend.put_entry(&key, &sealed_bytes)?;
                    report.imported += 1;
                }
                Err(why) => report.rejected.push(format!("{key}: {why}")),
            }
        }
        self.evict_if_over()?;
        Ok(report)
    }
}

/// Checks an entry from a bundle against its digest, its key and its blobs.
fn check_entry(
    key: &str,
    sealed: &[u8],
    blobs: &std::collections::HashMap<String, Vec<u8>>,
) -> Result<Entry, String> {
    let sealed: Sealed = serde_json::from_slice(sealed).map_err(|_| "not an entry".to_string())?;
    if blake3::hash(sealed.body.as_bytes()).to_hex().as_str() != sealed.digest {
        return Err("its content does not match its digest".into());
    }
    let entry: Entry =
        serde_json::from_str(&sealed.body).map_err(|_| "unreadable body".to_string())?;
    if entry.key != key || entry.schema != SCHEMA {
        return Err("it is filed under another key or schema".into());
    }
    for hash in entry.outcome.files.iter().filter_map(|f| f.blake3.as_ref()) {
        match blobs.get(hash) {
            Some(bytes) if blake3::hash(bytes).to_hex().as_str() == hash => {}
            Some(_) => return Err(format!("output blob {hash} does not match its hash")),
            None => return Err(format!("output blob {hash} is missing")),
        }
    }
    Ok(entry)
}

/// Whether a run's ending lets it be stored: not stopped by the deadline or cancellation.
pub(crate) fn storable(outcome: &Outcome) -> bool {
    !matches!(
        outcome.limit,
        Some(LimitKind::Deadline) | Some(LimitKind::Cancelled)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_fields_that_concatenate_alike() {
        let a = KeyBuilder::new().str(2, "ab").str(3, "c").finish();
        let b = KeyBuilder::new().str(2, "a").str(3, "bc").finish();
        assert_ne!(a, b);
        let args = |v: &[&str]| {
            KeyBuilder::new()
                .strings(5, &v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .finish()
        };
        assert_ne!(args(&["a b"]), args(&["a", "b"]));
        assert_eq!(args(&["x"]), args(&["x"]));
    }
}
