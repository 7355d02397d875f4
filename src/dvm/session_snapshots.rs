//! Session snapshots on disk: a signed manifest under `$DVM_HOME/sessions/v1/<id>.json` whose
//! bytes are blobs of the content store. Memory is kept in 64 KiB chunks, only those that
//! differ from what the module's fresh instance starts with (all-zero ones as a mark, not a
//! blob), so snapshots of similar sessions share their chunks; the workspace's files are blobs
//! too. A snapshot is resumed only when signed by a trusted key and made from the very
//! module the runtime runs; every blob is hashed again when it is read.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::Runtime;
use crate::error::Error;
use crate::results::signing::{SignedBy, SigningKey, Trust};
use crate::sandbox::session::{CHUNK_BYTES as CHUNK, Image, ImageMemory, Layers, SaveChunk};
use crate::session::TakeSnapshot;
use crate::store::BlobStore;
use crate::workspace::{EntryKind, Workspace};

/// What a signature over a manifest is made for.
const DOMAIN: &str = "dvm session snapshot v1";
/// The largest manifest read.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// The largest workspace file a snapshot keeps.
const MAX_FILE_BYTES: u64 = 1 << 30;

/// What a snapshot holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    id: String,
    runtime: String,
    version: String,
    /// blake3 of the module the session ran: only that module can resume it.
    module: String,
    memory_bytes: u64,
    clock_ns: u64,
    env: Vec<(String, String)>,
    /// Chunks that differ from the module's initial memory: index, and the blob holding it
    /// (`None`: all zero).
    chunks: Vec<(u64, Option<String>)>,
    files: Vec<FileRecord>,
    /// Unix seconds.
    created: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRecord {
    path: String,
    /// `None` for a directory.
    blake3: Option<String>,
    size: u64,
}

/// A manifest as written: its JSON and the signature over it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    format: u32,
    #[serde(flatten)]
    signed: SignedBy,
    body: String,
}

/// Checks a snapshot id before it becomes a file name: 32 lowercase hex digits.
fn check_id(id: &str) -> Result<(), Error> {
    if id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "`{id}` is not a session snapshot id (32 lowercase hex digits)"
        )))
    }
}

fn manifest_path(home: &std::path::Path, id: &str) -> std::path::PathBuf {
    crate::home::session_snapshots(home).join(format!("{id}.json"))
}

fn io(action: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| crate::error::HostError::Io { action, source }.into()
}

fn not_found(id: &str) -> Error {
    Error::InvalidInput(format!("no session snapshot `{id}`"))
}

/// Frozen images of snapshots this process took or resumed, so that resuming one again maps
/// its layers instead of reading and hashing the store. A few at most, the least recently
/// used leaving first; a resume finds one only under the id and the exact signed manifest
/// it was kept for, so a snapshot deleted or replaced since is not resumed from memory.
#[derive(Default)]
pub(crate) struct HeldImages(Mutex<VecDeque<Held>>);

struct Held {
    id: String,
    /// blake3 of the manifest's signed body.
    body: blake3::Hash,
    image: Arc<Image>,
}

/// Images held at most.
const HELD_IMAGES: usize = 16;
/// Bytes of memory the held images may cover together (shared pages counted once each time).
const HELD_BYTES: usize = 4 << 30;

impl HeldImages {
    fn keep(&self, id: &str, body: blake3::Hash, image: Arc<Image>) {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        held.retain(|entry| entry.id != id);
        held.push_back(Held {
            id: id.to_string(),
            body,
            image,
        });
        let bytes = |held: &VecDeque<Held>| -> usize {
            held.iter().map(|entry| entry.image.memory.len()).sum()
        };
        while held.len() > HELD_IMAGES || (held.len() > 1 && bytes(&held) > HELD_BYTES) {
            held.pop_front();
        }
    }

    fn find(&self, id: &str, body: &blake3::Hash) -> Option<Arc<Image>> {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let at = held
            .iter()
            .position(|entry| entry.id == id && entry.body == *body)?;
        let entry = held.remove(at)?;
        let image = entry.image.clone();
        held.push_back(entry);
        Some(image)
    }
}

impl Runtime {
    /// Stores a session's snapshot, taken through `take`, and its `workspace` (see
    /// [`crate::Session::snapshot`]).
    pub(super) fn store_snapshot(
        &self,
        take: TakeSnapshot<'_>,
        workspace: &Workspace,
        env: &[(String, String)],
    ) -> Result<String, Error> {
        let home = self.program.dvm.config().home.clone();
        let blobs = BlobStore::new(&home);
        let save: Arc<SaveChunk> = {
            let blobs = blobs.clone();
            Arc::new(
                move |bytes: &[u8], known: Option<&blake3::Hash>| match known {
                    Some(hash) if blobs.holds(hash, bytes.len()) => Ok(*hash),
                    _ => blobs.put(bytes),
                },
            )
        };
        let taken = take(save)?;
        let add = |bytes: &[u8]| -> Result<String, Error> {
            let hash = blobs
                .put(bytes)
                .map_err(io("store a session snapshot's bytes".into()))?;
            Ok(hash.to_hex().to_string())
        };
        let mut files = Vec::new();
        for entry in workspace.list()? {
            match entry.kind {
                EntryKind::Dir => files.push(FileRecord {
                    path: entry.path,
                    blake3: None,
                    size: 0,
                }),
                EntryKind::File => {
                    let bytes = workspace.read(&entry.path, MAX_FILE_BYTES)?;
                    files.push(FileRecord {
                        blake3: Some(add(&bytes)?),
                        size: bytes.len() as u64,
                        path: entry.path,
                    });
                }
                EntryKind::Symlink => tracing::warn!(
                    "session snapshot: the link {} in the workspace is not kept",
                    entry.path
                ),
            }
        }
        let id = format!("{:032x}", rand::random::<u128>());
        let manifest = Manifest {
            id: id.clone(),
            runtime: self.spec.id.clone(),
            version: self.spec.version.clone(),
            module: self.program.digest.to_hex().to_string(),
            memory_bytes: taken.memory_bytes as u64,
            clock_ns: u64::try_from(taken.clock.as_nanos()).unwrap_or(u64::MAX),
            env: env.to_vec(),
            chunks: taken
                .chunks
                .iter()
                .map(|(index, hash)| (*index, hash.map(|hash| hash.to_hex().to_string())))
                .collect(),
            files,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let body = serde_json::to_string(&manifest)
            .map_err(|e| crate::error::HostError::Guest(format!("encode a snapshot: {e}")))?;
        let key = SigningKey::home(&home)?;
        let body_hash = blake3::hash(body.as_bytes());
        let sealed = Sealed {
            format: 1,
            signed: SignedBy::new(&key, DOMAIN, &[body.as_bytes()]),
            body,
        };
        let bytes = serde_json::to_vec(&sealed)
            .map_err(|e| crate::error::HostError::Guest(format!("encode a snapshot: {e}")))?;
        let dir = crate::home::session_snapshots(&home);
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io(format!("create {}", dir.display())))?;
        }
        let mut temp = tempfile::NamedTempFile::new_in(&dir)
            .map_err(io(format!("write a snapshot in {}", dir.display())))?;
        std::io::Write::write_all(&mut temp, &bytes)
            .map_err(io(format!("write a snapshot in {}", dir.display())))?;
        temp.persist(manifest_path(&home, &id))
            .map_err(|e| io(format!("write a snapshot in {}", dir.display()))(e.error))?;
        if let Some(image) = taken.frozen {
            self.program.dvm.held_images().keep(&id, body_hash, image);
        }
        Ok(id)
    }

    /// A new live session from the snapshot `id` (see [`crate::Session::snapshot`]): its
    /// variables, clock and files. The snapshot must be signed by a trusted key (the home's
    /// own, or one the configuration trusts) and made by this runtime's module. A snapshot
    /// this process took or resumed lately is mapped from the memory it holds; otherwise its
    /// chunks are read from the store, each hashed, into a frozen image held for next time.
    pub fn resume(&self, id: &str) -> Result<crate::Session, Error> {
        check_id(id)?;
        let config = self.program.dvm.config();
        let (manifest, body) = read_manifest(config, id)?.ok_or_else(|| not_found(id))?;
        let refused = |why: String| {
            Error::InvalidInput(format!("the session snapshot `{id}` is not used: {why}"))
        };
        let module = self.program.digest.to_hex();
        if manifest.runtime != self.spec.id || manifest.module != module.as_str() {
            return Err(refused(format!(
                "it was made by {} with module {}, and this runtime is {} with module {module}",
                manifest.runtime, manifest.module, self.spec.id
            )));
        }
        let blobs = BlobStore::new(&config.home);
        let blob_hash = |hash: &str| {
            blake3::Hash::from_hex(hash)
                .map_err(|_| refused(format!("`{hash}` is not a blake3 hash")))
        };
        let held = self.program.dvm.held_images();
        let image = match held.find(id, &body) {
            Some(image) => image,
            None => {
                let image = Arc::new(read_image(&manifest, &blobs).map_err(&refused)?);
                held.keep(id, body, image.clone());
                image
            }
        };
        let workspace = Workspace::new()?;
        for file in &manifest.files {
            match &file.blake3 {
                None => workspace.create_dir(&file.path)?,
                Some(hash) => {
                    let size = usize::try_from(file.size)
                        .ok()
                        .filter(|&n| n as u64 <= MAX_FILE_BYTES)
                        .ok_or_else(|| refused(format!("{} is too large", file.path)))?;
                    let mut bytes = vec![0; size];
                    read_blobs_into(&blobs, vec![(blob_hash(hash)?, &mut bytes[..])])
                        .map_err(&refused)?;
                    workspace.write(&file.path, &bytes)?;
                }
            }
        }
        self.start_session(workspace, &manifest.env, None, Some(image))
            .map(|(session, _, _)| session)
    }
}

/// A snapshot's memory read from the store into a frozen image: each chunk it names is read
/// and hashed (by two threads), the rest is as a fresh instance has it. The reason when it
/// is refused.
fn read_image(manifest: &Manifest, blobs: &BlobStore) -> Result<Image, String> {
    let memory_bytes = usize::try_from(manifest.memory_bytes)
        .ok()
        .filter(|&n| n as u64 <= crate::limits::MAX_MEMORY_BYTES && n.is_multiple_of(CHUNK))
        .ok_or("its memory size is out of range")?;
    let mut named = vec![false; memory_bytes / CHUNK];
    let mut parts = Vec::with_capacity(manifest.chunks.len());
    let mut hashes = Vec::with_capacity(manifest.chunks.len());
    for (index, hash) in &manifest.chunks {
        let slot = usize::try_from(*index)
            .ok()
            .and_then(|index| named.get_mut(index))
            .ok_or("a chunk lies past its memory")?;
        if std::mem::replace(slot, true) {
            return Err("it names a chunk twice".into());
        }
        let hash = match hash {
            None => None,
            Some(hash) => Some(
                blake3::Hash::from_hex(hash)
                    .map_err(|_| format!("`{hash}` is not a blake3 hash"))?,
            ),
        };
        let at = *index as usize * CHUNK;
        parts.push(at..at + CHUNK);
        hashes.push(hash);
    }
    // The first reason a chunk was refused, kept apart from the I/O error that stops the
    // others.
    let why: Mutex<Option<String>> = Mutex::new(None);
    let layers = Layers::assemble(memory_bytes, &parts, |index, bytes| {
        let Some(hash) = hashes[index] else {
            return Ok(());
        };
        read_blobs_into(blobs, vec![(hash, bytes)]).map_err(|reason| {
            why.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert(reason);
            std::io::Error::other("refused")
        })
    });
    match layers {
        Ok(layers) => Ok(Image {
            memory: ImageMemory::Frozen(layers),
            clock: std::time::Duration::from_nanos(manifest.clock_ns),
        }),
        Err(error) => Err(why
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or_else(|| format!("its memory cannot be put together: {error}"))),
    }
}

/// Fills each slice with the blob its hash names, refusing (with the reason) a blob that is
/// missing or is not exactly the slice's bytes.
fn read_blobs_into(blobs: &BlobStore, reads: Vec<(blake3::Hash, &mut [u8])>) -> Result<(), String> {
    for (hash, into) in reads {
        match blobs.read_into(&hash, into) {
            Ok(true) => {}
            Ok(false) => return Err(format!("its bytes {hash} are damaged")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!("its bytes {hash} are missing"));
            }
            Err(e) => return Err(format!("its bytes {hash} cannot be read: {e}")),
        }
    }
    Ok(())
}

/// Removes the session snapshot `id` from `home` (its blobs stay in the store, shared).
/// Returns whether there was one.
pub fn delete_session_snapshot(home: &std::path::Path, id: &str) -> Result<bool, Error> {
    check_id(id)?;
    let path = manifest_path(home, id);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(io(format!("remove {}", path.display()))(source)),
    }
}

/// What [`session_snapshot_info`] tells about a snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSnapshotInfo {
    pub id: String,
    pub runtime: String,
    pub version: String,
    /// blake3 of the module the session ran (only it can resume the snapshot).
    pub module: String,
    /// The session's linear memory.
    pub memory_bytes: u64,
    /// Its 64 KiB chunks that differ from the module's initial memory (the rest are not
    /// stored).
    pub changed_chunks: u64,
    /// Files and directories of its workspace.
    pub files: u64,
    /// Unix seconds.
    pub created: u64,
}

/// The snapshot `id` under `config`'s home, checked as a resume checks it (the signature of a
/// trusted key); `None` when there is none.
pub fn session_snapshot_info(
    config: &crate::Config,
    id: &str,
) -> Result<Option<SessionSnapshotInfo>, Error> {
    check_id(id)?;
    let Some((manifest, _)) = read_manifest(config, id)? else {
        return Ok(None);
    };
    Ok(Some(SessionSnapshotInfo {
        id: manifest.id,
        runtime: manifest.runtime,
        version: manifest.version,
        module: manifest.module,
        memory_bytes: manifest.memory_bytes,
        changed_chunks: manifest.chunks.len() as u64,
        files: manifest.files.len() as u64,
        created: manifest.created,
    }))
}

/// Reads and checks the manifest of snapshot `id`, with the blake3 of its signed body; `None`
/// when there is none.
fn read_manifest(
    config: &crate::Config,
    id: &str,
) -> Result<Option<(Manifest, blake3::Hash)>, Error> {
    check_id(id)?;
    let path = manifest_path(&config.home, id);
    let bytes = match std::fs::metadata(&path) {
        Ok(meta) if meta.len() > MAX_MANIFEST_BYTES => {
            return Err(Error::InvalidInput(format!(
                "the session snapshot `{id}` is larger than {MAX_MANIFEST_BYTES} bytes"
            )));
        }
        Ok(_) => std::fs::read(&path).map_err(io(format!("read {}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io(format!("read {}", path.display()))(source)),
    };
    let refused = |why: String| {
        Error::InvalidInput(format!("the session snapshot `{id}` is not used: {why}"))
    };
    let sealed: Sealed =
        serde_json::from_slice(&bytes).map_err(|e| refused(format!("unreadable ({e})")))?;
    let mut trust = Trust::of_config(config);
    trust.add(SigningKey::home(&config.home)?.public());
    trust
        .verify(&sealed.signed, DOMAIN, &[sealed.body.as_bytes()])
        .map_err(|why| refused(why.to_string()))?;
    let manifest: Manifest =
        serde_json::from_str(&sealed.body).map_err(|e| refused(format!("unreadable ({e})")))?;
    if manifest.id != id {
        return Err(refused("it names another id".into()));
    }
    Ok(Some((manifest, blake3::hash(sealed.body.as_bytes()))))
}

/// What [`gc_session_snapshots`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SnapshotGc {
    /// Session snapshots removed for their age.
    pub snapshots_removed: u64,
    /// Blobs of the content store nothing names any more, removed.
    pub blobs_removed: u64,
    pub bytes_freed: u64,
    /// Files naming blobs that could not be read: while there is one, no blob is removed.
    pub unreadable: Vec<String>,
}

/// A blob younger than this is kept: a snapshot (or an install) being written stores its
/// blobs before the file that names them.
const BLOB_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes the session snapshots of `home` older than `older_than` (none when `None`), then
/// every blob of the content store that no session snapshot, no installed runtime and no
/// warm runtime snapshot names, unless it is younger than an hour. Manifests are read for
/// the blobs they name without their signatures being checked: a forged one can only keep
/// blobs. If any file that names blobs cannot be read, no blob is removed.
pub fn gc_session_snapshots(
    home: &std::path::Path,
    older_than: Option<std::time::Duration>,
) -> Result<SnapshotGc, Error> {
    use std::collections::HashSet;
    let mut report = SnapshotGc::default();
    let mut named: HashSet<String> = HashSet::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let json_of = |path: &std::path::Path, max: u64| -> Option<serde_json::Value> {
        let bytes = crate::fs::read_regular_file(path, max).ok()?.ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let hashes = |value: &serde_json::Value, named: &mut HashSet<String>| {
        for file in value["files"].as_array().into_iter().flatten() {
            if let Some(hash) = file["blake3"].as_str() {
                named.insert(hash.to_string());
            }
        }
    };
    // Session snapshots: `<id>.json`, a sealed manifest.
    for entry in read_dir_or_empty(&crate::home::session_snapshots(home))? {
        let path = entry.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .filter(|id| check_id(id).is_ok())
        else {
            continue;
        };
        let manifest = json_of(&path, MAX_MANIFEST_BYTES)
            .and_then(|sealed| sealed["body"].as_str().map(str::to_string))
            .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok());
        let Some(manifest) = manifest else {
            report.unreadable.push(path.display().to_string());
            continue;
        };
        let created = manifest["created"].as_u64().unwrap_or(now);
        if older_than.is_some_and(|age| now.saturating_sub(created) > age.as_secs()) {
            delete_session_snapshot(home, id)?;
            report.snapshots_removed += 1;
            continue;
        }
        for chunk in manifest["chunks"].as_array().into_iter().flatten() {
            if let Some(hash) = chunk[1].as_str() {
                named.insert(hash.to_string());
            }
        }
        hashes(&manifest, &mut named);
    }
    // Installed runtimes: `<id>/<version>/installed.json`.
    for runtime in read_dir_or_empty(&crate::home::runtimes(home))? {
        for version in read_dir_or_empty(&runtime.path())? {
            let path = version.path().join("installed.json");
            if !path.exists() {
                continue;
            }
            match json_of(&path, MAX_MANIFEST_BYTES) {
                Some(record) => hashes(&record, &mut named),
                None => report.unreadable.push(path.display().to_string()),
            }
        }
    }
    // Warm runtime snapshots: each index file holds one blob's hash.
    for entry in read_dir_or_empty(&crate::home::snapshots(home))? {
        match crate::fs::read_regular_file(&entry.path(), 128) {
            Ok(Ok(bytes)) => {
                named.insert(String::from_utf8_lossy(&bytes).trim().to_string());
            }
            _ => report.unreadable.push(entry.path().display().to_string()),
        }
    }
    if !report.unreadable.is_empty() {
        return Ok(report);
    }
    for shard in read_dir_or_empty(&crate::home::blobs(home))? {
        if !shard.file_type().is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        for blob in read_dir_or_empty(&shard.path())? {
            let name = blob.file_name();
            let Some(name) = name.to_str() else { continue };
            // Only finished blobs (64 hex digits); a temp file of a write in progress is not.
            if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let Ok(meta) = blob.metadata() else { continue };
            let young = meta
                .modified()
                .ok()
                .and_then(|at| at.elapsed().ok())
                .is_none_or(|age| age < BLOB_GRACE);
            if named.contains(name) || young || !meta.is_file() {
                continue;
            }
            match std::fs::remove_file(blob.path()) {
                Ok(()) => {
                    report.blobs_removed += 1;
                    report.bytes_freed += meta.len();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(io(format!("remove {}", blob.path().display()))(source)),
            }
        }
    }
    Ok(report)
}

/// The entries of `dir`, none when it does not exist.
fn read_dir_or_empty(dir: &std::path::Path) -> Result<Vec<std::fs::DirEntry>, Error> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .collect::<Result<Vec<_>, _>>()
            .map_err(io(format!("read {}", dir.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(io(format!("read {}", dir.display()))(source)),
    }
}
