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
//! Behind [`ResultBackend`]: whole entries and output-file blobs by validated name
//! ([`CacheKey`], [`Blake3Hex`]). [`ResultCache`] adds what every backend gets: each entry is
//! signed with Ed25519 ([`signing`]) over its key, its body and its blob list, and is used
//! only when the signature verifies with a trusted key; every output path in it parses as an
//! [`OutputPath`]; blobs are checked against their blake3 and size on every read. An entry
//! that is unsigned, signed by an untrusted key, changed or damaged is reported, counted and
//! treated as a miss, never returned. The local backend keeps entries and blobs under
//! `$DVM_HOME/results/v2/`, written through temp files and renames, with least-recently-used
//! eviction past a size bound.

mod bundle;
mod names;
pub mod signing;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{CacheError, Error};
use crate::limits::{LimitKind, Limits, OutputOverflow};
use crate::outcome::{Outcome, Status, Truncated};
use crate::workspace::OutputFile;

pub use crate::outcome::{CacheMode, CacheStatus};
pub use bundle::{ExportReport, ImportReport};
pub use names::{Blake3Hex, CacheKey, OutputPath};
use signing::SignedBy;
pub use signing::{Keys, PublicKey, Rejection, SigningKey, Trust};

/// Bumped whenever the key encoding or the entry format changes.
pub const SCHEMA: u32 = 2;
/// Default bound on the local store's size.
pub const DEFAULT_MAX_BYTES: u64 = crate::engine::DEFAULT_RESULT_CACHE_BYTES;

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
        self.finish_key().to_string()
    }

    pub fn finish_key(&self) -> CacheKey {
        CacheKey::from_hash(self.hasher.finalize())
    }
}

/// An output file as an entry records it: a validated workspace path and a blob name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredFile {
    path: OutputPath,
    size: u64,
    blake3: Blake3Hex,
}

impl StoredFile {
    fn output_file(&self) -> OutputFile {
        OutputFile {
            path: self.path.to_string(),
            size: self.size,
            blake3: Some(self.blake3.hex()),
        }
    }
}

/// An outcome as stored: every field of the run's [`Outcome`] but what the cache itself
/// says (`cache`, `cache_key`), output bytes in the outcome's base64 form (read strictly),
/// the duration in nanoseconds and each output file with its validated path and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredOutcome {
    status: Status,
    exit_code: Option<i32>,
    #[serde(with = "crate::outcome::base64_bytes::strict")]
    stdout: Vec<u8>,
    #[serde(with = "crate::outcome::base64_bytes::strict")]
    stderr: Vec<u8>,
    stdout_bytes: u64,
    stderr_bytes: u64,
    truncated: Truncated,
    limit: Option<LimitKind>,
    fuel_used: u64,
    duration_ns: u64,
    memory_peak_bytes: u64,
    trap: Option<String>,
    files: Vec<StoredFile>,
    /// Checked as a guest's are when an entry is read ([`crate::Display::parse`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    display: Vec<crate::Display>,
}

/// One cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    schema: u32,
    key: CacheKey,
    /// Unix seconds when the run was stored.
    created: u64,
    outcome: StoredOutcome,
}

/// An entry as written: its body (the entry's JSON) and the signature over the key, the
/// body and the blob list.
#[derive(Serialize, Deserialize)]
struct SignedEntry {
    format: u32,
    #[serde(flatten)]
    signed: SignedBy,
    body: String,
}

/// The purpose a signature over an entry is made for.
const ENTRY_DOMAIN: &str = "dvm result-cache entry v2";

/// The blob list as signed: a count, then each blob's blake3 and size.
fn blob_list(files: &[StoredFile]) -> Vec<u8> {
    let mut out = (files.len() as u64).to_le_bytes().to_vec();
    for file in files {
        out.extend_from_slice(file.blake3.as_bytes());
        out.extend_from_slice(&file.size.to_le_bytes());
    }
    out
}

impl StoredOutcome {
    /// The outcome with its hashed files (files too large to hash are not stored).
    fn from_outcome(outcome: &Outcome) -> Result<Self, Error> {
        let mut files = Vec::new();
        for file in &outcome.files {
            let Some(hash) = &file.blake3 else { continue };
            files.push(StoredFile {
                path: OutputPath::parse(&file.path).map_err(CacheError::Inconsistent)?,
                size: file.size,
                blake3: Blake3Hex::parse(hash).map_err(CacheError::Inconsistent)?,
            });
        }
        Ok(StoredOutcome {
            status: outcome.status,
            exit_code: outcome.exit_code,
            stdout: outcome.stdout.clone(),
            stderr: outcome.stderr.clone(),
            stdout_bytes: outcome.stdout_bytes,
            stderr_bytes: outcome.stderr_bytes,
            truncated: outcome.truncated,
            limit: outcome.limit,
            fuel_used: outcome.fuel_used,
            duration_ns: u64::try_from(outcome.duration.as_nanos()).unwrap_or(u64::MAX),
            memory_peak_bytes: outcome.memory_peak_bytes,
            trap: outcome.trap.clone(),
            files,
            display: outcome.display.clone(),
        })
    }

    fn to_outcome(&self) -> Outcome {
        Outcome {
            status: self.status,
            exit_code: self.exit_code,
            stdout: self.stdout.clone(),
            stderr: self.stderr.clone(),
            stdout_bytes: self.stdout_bytes,
            stderr_bytes: self.stderr_bytes,
            truncated: self.truncated,
            limit: self.limit,
            fuel_used: self.fuel_used,
            duration: Duration::from_nanos(self.duration_ns),
            memory_peak_bytes: self.memory_peak_bytes,
            trap: self.trap.clone(),
            files: self.files.iter().map(StoredFile::output_file).collect(),
            cache: CacheStatus::Hit,
            cache_key: None,
            display: self.display.clone(),
            tool_calls: Vec::new(),
            net: Vec::new(),
        }
    }
}

/// Signs an entry with `key` into the bytes that are stored.
fn seal(entry: &Entry, key: &SigningKey) -> Result<Vec<u8>, Error> {
    let body = serde_json::to_string(entry).map_err(|source| CacheError::Encode { source })?;
    let blobs = blob_list(&entry.outcome.files);
    let signed = SignedBy::new(
        key,
        ENTRY_DOMAIN,
        &[entry.key.as_str().as_bytes(), body.as_bytes(), &blobs],
    );
    serde_json::to_vec(&SignedEntry {
        format: SCHEMA,
        signed,
        body,
    })
    .map_err(|source| CacheError::Encode { source }.into())
}

/// Checks stored bytes claimed to be the entry of `key`: the format, a signature by a key
/// of `trust` over the key, the body and the blob list, and that the body is the entry of
/// `key` (every path and blob name in it already parsed by its type).
fn open_entry(key: &CacheKey, bytes: &[u8], trust: &Trust) -> Result<Entry, Rejection> {
    let malformed = |why: &str| Rejection::Malformed(why.to_string());
    let sealed: SignedEntry = match serde_json::from_slice(bytes) {
        Ok(sealed) => sealed,
        Err(_) => {
            // An entry of the old, unsigned format (or anything else) is not signed.
            return Err(
                match serde_json::from_slice::<serde_json::Value>(bytes)
                    .ok()
                    .filter(|v| v.get("signature").is_none())
                {
                    Some(_) => Rejection::Unsigned,
                    None => malformed("it is not an entry"),
                },
            );
        }
    };
    if sealed.format != SCHEMA {
        return Err(malformed("it is of another entry format"));
    }
    let entry: Entry = serde_json::from_str(&sealed.body)
        .map_err(|e| Rejection::Malformed(format!("its body is not an entry ({e})")))?;
    let blobs = blob_list(&entry.outcome.files);
    trust.verify(
        &sealed.signed,
        ENTRY_DOMAIN,
        &[key.as_str().as_bytes(), sealed.body.as_bytes(), &blobs],
    )?;
    if entry.key != *key || entry.schema != SCHEMA {
        return Err(malformed("it is filed under another key or schema"));
    }
    Ok(entry)
}

/// Where entries and blobs live. Implementations store bytes by validated name; integrity
/// checks, policy and eviction choices are made above them, in [`ResultCache`].
pub trait ResultBackend: Send + Sync {
    fn get_entry(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, Error>;
    /// Stores an entry; a concurrent writer of the same key writes an equivalent entry.
    fn put_entry(&self, key: &CacheKey, bytes: &[u8]) -> Result<(), Error>;
    fn remove_entry(&self, key: &CacheKey) -> Result<bool, Error>;
    /// Every entry: key, size in bytes, last use. Names that are not keys are left out.
    fn entries(&self) -> Result<Vec<(CacheKey, u64, SystemTime)>, Error>;
    /// Marks an entry as just used (for least-recently-used eviction).
    fn touch_entry(&self, key: &CacheKey);
    /// A blob's bytes; one larger than `max_bytes` (the size its entry records) is refused
    /// without being read whole.
    fn get_blob(&self, blake3: &Blake3Hex, max_bytes: u64) -> Result<Option<Vec<u8>>, Error>;
    fn put_blob(&self, blake3: &Blake3Hex, bytes: &[u8]) -> Result<(), Error>;
    /// Stores the blob held in the file at `path` (whose contents were checked).
    fn put_blob_file(&self, blake3: &Blake3Hex, path: &Path) -> Result<(), Error> {
        let bytes = std::fs::read(path).map_err(store_error("read a staged blob"))?;
        self.put_blob(blake3, &bytes)
    }
    fn remove_blob(&self, blake3: &Blake3Hex) -> Result<(), Error>;
    /// Every blob: name and size. Names that are not blake3 digests are left out.
    fn blobs(&self) -> Result<Vec<(Blake3Hex, u64)>, Error>;
}

/// The local backend under `<home>/results/v2/`.
pub struct LocalBackend {
    dir: PathBuf,
}

fn store_error(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |source| {
        CacheError::Io {
            action: what.to_string(),
            source,
        }
        .into()
    }
}

impl LocalBackend {
    pub fn new(home: &Path) -> Self {
        LocalBackend {
            dir: crate::home::results(home, SCHEMA),
        }
    }

    fn entry_path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join("entries").join(format!("{key}.json"))
    }

    fn blob_path(&self, blake3: &Blake3Hex) -> PathBuf {
        self.dir.join("blobs").join(blake3.hex())
    }

    fn temp_in(path: &Path) -> Result<tempfile::NamedTempFile, Error> {
        let dir = path.parent().unwrap_or(Path::new("."));
        crate::home::temp_file_in(dir).map_err(|e| {
            let (action, source) = e.into_parts();
            CacheError::Io { action, source }.into()
        })
    }

    fn publish(&self, path: &Path, bytes: &[u8]) -> Result<(), Error> {
        crate::home::publish(path, bytes, crate::home::Durability::Renamed).map_err(|e| {
            let (action, source) = e.into_parts();
            CacheError::Io { action, source }.into()
        })
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
                let name = entry.file_name().to_str()?.to_string();
                let meta = entry.metadata().ok()?;
                meta.is_file().then_some((name, meta))
            })
            .filter(|(name, _)| !name.starts_with('.'))
            .collect()
    }
}

impl ResultBackend for LocalBackend {
    fn get_entry(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, Error> {
        Self::read(&self.entry_path(key))
    }

    fn put_entry(&self, key: &CacheKey, bytes: &[u8]) -> Result<(), Error> {
        self.publish(&self.entry_path(key), bytes)
    }

    fn remove_entry(&self, key: &CacheKey) -> Result<bool, Error> {
        match std::fs::remove_file(self.entry_path(key)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(store_error("remove")(e)),
        }
    }

    fn entries(&self) -> Result<Vec<(CacheKey, u64, SystemTime)>, Error> {
        Ok(Self::listing(&self.dir.join("entries"))
            .into_iter()
            .filter_map(|(name, meta)| {
                let key = CacheKey::parse(name.strip_suffix(".json")?).ok()?;
                Some((key, meta.len(), meta.modified().unwrap_or(UNIX_EPOCH)))
            })
            .collect())
    }

    fn touch_entry(&self, key: &CacheKey) {
        if let Ok(file) = std::fs::File::options()
            .append(true)
            .open(self.entry_path(key))
        {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    fn get_blob(&self, blake3: &Blake3Hex, max_bytes: u64) -> Result<Option<Vec<u8>>, Error> {
        let file = match std::fs::File::open(self.blob_path(blake3)) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(store_error("read")(e)),
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, max_bytes.saturating_add(1)),
            &mut bytes,
        )
        .map_err(store_error("read"))?;
        if bytes.len() as u64 > max_bytes {
            return Err(CacheError::Inconsistent(format!(
                "output blob {blake3} is larger than its entry says"
            ))
            .into());
        }
        Ok(Some(bytes))
    }

    fn put_blob(&self, blake3: &Blake3Hex, bytes: &[u8]) -> Result<(), Error> {
        let path = self.blob_path(blake3);
        if path.is_file() {
            return Ok(());
        }
        self.publish(&path, bytes)
    }

    fn put_blob_file(&self, blake3: &Blake3Hex, from: &Path) -> Result<(), Error> {
        let path = self.blob_path(blake3);
        if path.is_file() {
            return Ok(());
        }
        let mut temp = Self::temp_in(&path)?;
        let mut source = std::fs::File::open(from).map_err(store_error("read a staged blob"))?;
        std::io::copy(&mut source, &mut temp).map_err(store_error("write"))?;
        temp.persist(&path)
            .map(drop)
            .map_err(|e| store_error("store")(e.error))
    }

    fn remove_blob(&self, blake3: &Blake3Hex) -> Result<(), Error> {
        match std::fs::remove_file(self.blob_path(blake3)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(store_error("remove")(e)),
        }
    }

    fn blobs(&self) -> Result<Vec<(Blake3Hex, u64)>, Error> {
        Ok(Self::listing(&self.dir.join("blobs"))
            .into_iter()
            .filter_map(|(name, meta)| Some((Blake3Hex::parse(&name).ok()?, meta.len())))
            .collect())
    }
}

/// A stored run, as `dvm cache ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntrySummary {
    pub key: CacheKey,
    pub bytes: u64,
    /// Unix seconds of the last use.
    pub used: u64,
    /// `None` for an entry that is damaged or not signed by a trusted key.
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
    /// Entries this process refused to use (unsigned, signed by an untrusted key, changed
    /// after signing, or with a damaged output file).
    pub rejected: u64,
}

/// A hit: the stored outcome and the contents of its output files.
pub(crate) struct Hit {
    pub outcome: Outcome,
    pub files: Vec<(OutputFile, Vec<u8>)>,
}

/// Where a cache's keys come from.
enum KeySource {
    /// The home's key and the keys its configuration trusts, loaded (or made) on first use.
    Home(HomeKeys, OnceLock<Result<Keys, String>>),
    Fixed(Keys),
}

/// Where a home's keys are: the home, its configuration file, and keys trusted besides.
struct HomeKeys {
    home: PathBuf,
    config_file: PathBuf,
    extra: Vec<String>,
}

/// The result cache over a backend.
pub struct ResultCache {
    backend: Box<dyn ResultBackend>,
    max_bytes: u64,
    keys: KeySource,
    rejected: AtomicU64,
}

/// Why an entry was not used.
enum Refused {
    /// The store could not be read.
    Store(Error),
    /// What was read is not an entry this cache accepts.
    Entry(Rejection),
}

impl ResultCache {
    /// A cache over `backend` that signs with and trusts `keys`.
    pub fn new(backend: Box<dyn ResultBackend>, max_bytes: u64, keys: Keys) -> Self {
        ResultCache {
            backend,
            max_bytes,
            keys: KeySource::Fixed(keys),
            rejected: AtomicU64::new(0),
        }
    }

    /// The local store under `home`, bounded to `max_bytes`, signing with the home's key and
    /// trusting what [`signing::Trust::of_home`] reads (the environment included).
    pub fn local(home: &Path, max_bytes: u64) -> Self {
        ResultCache::local_with(
            home,
            max_bytes,
            crate::profile::ConfigFile::path(home),
            crate::engine::cache_trust_from_env(),
        )
    }

    /// The local store under `config.home`, bounded to `max_bytes`, signing with the home's
    /// key and trusting what [`signing::Trust::of_config`] says.
    pub fn of_config(config: &crate::Config, max_bytes: u64) -> Self {
        ResultCache::local_with(
            &config.home,
            max_bytes,
            config.config_file_path(),
            config.cache_trust.clone(),
        )
    }

    fn local_with(home: &Path, max_bytes: u64, config_file: PathBuf, extra: Vec<String>) -> Self {
        ResultCache {
            backend: Box::new(LocalBackend::new(home)),
            max_bytes,
            keys: KeySource::Home(
                HomeKeys {
                    home: home.to_path_buf(),
                    config_file,
                    extra,
                },
                OnceLock::new(),
            ),
            rejected: AtomicU64::new(0),
        }
    }

    /// The signing key and trusted keys; an unusable home key is an error saying why.
    pub fn keys(&self) -> Result<&Keys, Error> {
        match &self.keys {
            KeySource::Fixed(keys) => Ok(keys),
            KeySource::Home(at, keys) => keys
                .get_or_init(|| {
                    let trust = signing::Trust::of_home_with(&at.home, &at.config_file, &at.extra);
                    signing::SigningKey::home(&at.home)
                        .map(|signer| Keys::new(signer, trust))
                        .map_err(|e| e.to_string())
                })
                .as_ref()
                .map_err(|e| Error::InvalidInput(format!("result cache: {e}"))),
        }
    }

    /// Entries this cache refused to use since it was made.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Counts and reports a refused entry; one that was changed or damaged is removed (one
    /// signed by a key we do not trust may be another node's, and is left alone).
    fn refuse(&self, key: &CacheKey, why: &Rejection) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            "result cache: the entry {key} is not used: {why}; the run is computed again"
        );
        if !matches!(why, Rejection::Untrusted(_)) {
            let _ = self.backend.remove_entry(key);
        }
    }

    /// Reads and checks an entry against `trust`.
    fn entry_with(&self, key: &CacheKey, trust: &Trust) -> Result<Option<Entry>, Refused> {
        let Some(bytes) = self.backend.get_entry(key).map_err(Refused::Store)? else {
            return Ok(None);
        };
        open_entry(key, &bytes, trust)
            .map(Some)
            .map_err(Refused::Entry)
    }

    fn entry(&self, key: &CacheKey) -> Result<Option<Entry>, Refused> {
        let keys = self.keys().map_err(Refused::Store)?;
        self.entry_with(key, &keys.trust)
    }

    /// The stored outcome of `key` with its files, checked; `None` on a miss, on an entry
    /// that does not verify and on damage (both reported and counted).
    pub(crate) fn get(&self, key: &str) -> Option<Hit> {
        let key = CacheKey::parse(key).ok()?;
        let entry = match self.entry(&key) {
            Ok(Some(entry)) => entry,
            Ok(None) => return None,
            Err(Refused::Store(e)) => {
                tracing::warn!("{e}");
                return None;
            }
            Err(Refused::Entry(why)) => {
                self.refuse(&key, &why);
                return None;
            }
        };
        let mut outcome = entry.outcome.to_outcome();
        let mut files = Vec::with_capacity(entry.outcome.files.len());
        for file in &entry.outcome.files {
            match self.backend.get_blob(&file.blake3, file.size) {
                Ok(Some(bytes))
                    if bytes.len() as u64 == file.size && Blake3Hex::of(&bytes) == file.blake3 =>
                {
                    files.push((file.output_file(), bytes));
                }
                _ => {
                    self.refuse(
                        &key,
                        &Rejection::Malformed(format!(
                            "its output file {} is missing or damaged",
                            file.path
                        )),
                    );
                    let _ = self.backend.remove_blob(&file.blake3);
                    return None;
                }
            }
        }
        self.backend.touch_entry(&key);
        outcome.cache_key = Some(key.to_string());
        Some(Hit { outcome, files })
    }

    /// Stores a run's outcome and the contents of its output files (read by `read`), signed,
    /// then evicts past the size bound.
    pub(crate) fn put(
        &self,
        key: &str,
        outcome: &Outcome,
        read: impl Fn(&OutputFile) -> Option<Vec<u8>>,
    ) -> Result<(), Error> {
        let key = CacheKey::parse(key).map_err(Error::Internal)?;
        let signer = self.keys()?.signer.clone();
        let stored = StoredOutcome::from_outcome(outcome)?;
        for file in &stored.files {
            let output = file.output_file();
            let bytes = read(&output).ok_or_else(|| {
                CacheError::Inconsistent(format!("cannot read output file {}", file.path))
            })?;
            if Blake3Hex::of(&bytes) != file.blake3 {
                return Err(CacheError::Inconsistent(format!(
                    "output file {} changed after the run",
                    file.path
                ))
                .into());
            }
            self.backend.put_blob(&file.blake3, &bytes)?;
        }
        let entry = Entry {
            schema: SCHEMA,
            key: key.clone(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            outcome: stored,
        };
        self.backend.put_entry(&key, &seal(&entry, &signer)?)?;
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
    pub fn show(&self, key: &CacheKey) -> Result<serde_json::Value, Error> {
        match self.get(key.as_str()) {
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

    pub fn remove(&self, key: &CacheKey) -> Result<bool, Error> {
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
            rejected: self.rejected(),
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
        let blob_sizes: std::collections::HashMap<Blake3Hex, u64> =
            self.backend.blobs()?.into_iter().collect();
        let mut kept_bytes = 0u64;
        let mut referenced = BTreeSet::new();
        let mut evicted = 0;
        for (key, bytes, _) in entries {
            let hashes: Vec<Blake3Hex> = match self.entry(&key) {
                Ok(Some(entry)) => entry.outcome.files.iter().map(|f| f.blake3).collect(),
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

    /// A stored outcome as an earlier build wrote it into a cache entry.
    const STORED_JSON: &str = r#"{"status":"error","exit_code":3,"stdout":"AJ+Wlg==","stderr":"ZXJy","stdout_bytes":4,"stderr_bytes":3,"truncated":{"stdout":false,"stderr":true},"limit":null,"fuel_used":10,"duration_ns":12000000,"memory_peak_bytes":65536,"trap":null,"files":[{"path":"out/a.txt","size":2,"blake3":"0000000000000000000000000000000000000000000000000000000000000000"}]}"#;

    #[test]
    fn todays_stored_outcomes_decode_and_encode_unchanged() {
        let stored: StoredOutcome = serde_json::from_str(STORED_JSON).unwrap();
        assert_eq!(serde_json::to_string(&stored).unwrap(), STORED_JSON);
        let outcome = stored.to_outcome();
        assert_eq!(outcome.status, Status::Error);
        assert_eq!(outcome.stdout, vec![0, 159, 150, 150]);
        assert_eq!(outcome.stderr, b"err");
        assert_eq!(outcome.duration, Duration::from_millis(12));
        assert_eq!(outcome.cache, CacheStatus::Hit);
        assert_eq!(outcome.files[0].path, "out/a.txt");
        assert_eq!(StoredOutcome::from_outcome(&outcome).unwrap(), stored);

        let damaged = STORED_JSON.replace("ZXJy", "not base64!");
        assert!(serde_json::from_str::<StoredOutcome>(&damaged).is_err());
        let escaping = STORED_JSON.replace("out/a.txt", "../a.txt");
        assert!(serde_json::from_str::<StoredOutcome>(&escaping).is_err());
    }
}
