//! The compiled-module cache: each module is compiled once per machine and engine
//! configuration, then loaded by mmap.
//!
//! Layout under `$DVM_HOME/modules/v1/`:
//! - `index/<key>`: the blake3 (hex) of the compiled object for a cache key;
//! - `objects/<blake3>.cwasm`: serialized modules, named by their own hash, never rewritten.
//!
//! The key is blake3 over the wasm bytes' hash, the engine's precompile compatibility hash
//! and the wasmtime version. Files are published by writing a temp file beside the target
//! and renaming it, so racing processes each publish a whole file. An object is re-hashed
//! before the unsafe deserialize; a mismatch is reported and the module recompiled.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// The pinned wasmtime version (Cargo.toml pins `=48.0.8`; a test keeps the two in step).
pub const WASMTIME_VERSION: &str = "48.0.8";
const KEY_DOMAIN: &[u8] = b"dvm compiled-module cache key v1";

/// Where a loaded module came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleSource {
    /// Already loaded by this process.
    Memory,
    /// Loaded from the on-disk cache.
    Disk,
    /// Compiled now (and written to the cache when possible).
    Compiled,
}

/// What compiling a module cost, recorded beside the cache entry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CompileStats {
    pub compile_ms: f64,
    pub wasm_bytes: u64,
    pub compiled_bytes: u64,
    /// Functions Cranelift took from the compiled-function cache (approximate when other
    /// modules compiled at the same time).
    #[serde(default)]
    pub functions_cached: u64,
    /// Functions Cranelift compiled.
    #[serde(default)]
    pub functions_compiled: u64,
}

pub(crate) struct ModuleCache {
    dir: PathBuf,
    /// blake3 of the engine's compatibility hash and the wasmtime version.
    engine_id: [u8; 32],
    /// Re-hash every object at every load ([`crate::Config::reverify_modules`]).
    reverify: bool,
    /// The compiled-function cache the engine compiles through.
    functions: std::sync::Arc<super::functions::FunctionCache>,
}

/// Feeds `Hash` input into blake3, so the engine's compatibility hash becomes stable bytes.
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.finalize();
        u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"))
    }
}

fn put_field(hasher: &mut blake3::Hasher, field: &[u8]) {
    hasher.update(&(field.len() as u64).to_le_bytes());
    hasher.update(field);
}

impl ModuleCache {
    pub(crate) fn new(
        home: &Path,
        engine: &wasmtime::Engine,
        reverify: bool,
        functions: std::sync::Arc<super::functions::FunctionCache>,
    ) -> Self {
        let mut compat = Blake3Hasher(blake3::Hasher::new());
        engine.precompile_compatibility_hash().hash(&mut compat);
        let mut id = blake3::Hasher::new();
        put_field(&mut id, compat.0.finalize().as_bytes());
        put_field(&mut id, WASMTIME_VERSION.as_bytes());
        ModuleCache {
            dir: crate::home::modules(home),
            engine_id: *id.finalize().as_bytes(),
            reverify,
            functions,
        }
    }

    /// The engine identity folded into every key (also useful for result-cache keys).
    pub(crate) fn engine_id(&self) -> [u8; 32] {
        self.engine_id
    }

    fn key(&self, wasm_digest: &blake3::Hash) -> String {
        let mut key = blake3::Hasher::new();
        put_field(&mut key, KEY_DOMAIN);
        put_field(&mut key, wasm_digest.as_bytes());
        put_field(&mut key, &self.engine_id);
        key.finalize().to_hex().to_string()
    }

    /// Whether a compiled form of the module with this digest is on disk.
    pub(crate) fn contains(&self, wasm_digest: &blake3::Hash) -> bool {
        self.index_path(&self.key(wasm_digest)).is_file()
    }

    /// Loads the compiled form of the module with `wasm_digest` from disk, or compiles it
    /// (reading its bytes with `wasm` only then, and calling `on_compile` first) and stores
    /// it. Processes that miss at the same time compile once: the others wait on a lock and
    /// load the result.
    pub(crate) fn load_or_compile(
        &self,
        engine: &wasmtime::Engine,
        wasm_digest: &blake3::Hash,
        what: &str,
        wasm: &dyn Fn() -> Result<Vec<u8>, Error>,
        on_compile: &dyn Fn(),
    ) -> Result<(wasmtime::Module, ModuleSource), Error> {
        let key = self.key(wasm_digest);
        if let Some(module) = self.try_load(engine, &key) {
            return Ok((module, ModuleSource::Disk));
        }
        let _lock = self.lock(&key);
        if let Some(module) = self.try_load(engine, &key) {
            return Ok((module, ModuleSource::Disk));
        }
        let bytes = wasm()?;
        on_compile();
        let started = std::time::Instant::now();
        let (hits_before, misses_before) = self.functions.counts();
        let module = wasmtime::Module::new(engine, &bytes).map_err(|e| Error::InvalidModule {
            what: what.to_string(),
            message: format!("{e:#}"),
        })?;
        let (hits, misses) = self.functions.counts();
        let stats = CompileStats {
            compile_ms: started.elapsed().as_secs_f64() * 1000.0,
            wasm_bytes: bytes.len() as u64,
            compiled_bytes: 0,
            functions_cached: hits - hits_before,
            functions_compiled: misses - misses_before,
        };
        tracing::info!(
            "compiled {what} in {:.0} ms: {} functions from the cache, {} compiled",
            stats.compile_ms,
            stats.functions_cached,
            stats.functions_compiled
        );
        if let Err(problem) = self.store(&module, &key, stats) {
            tracing::warn!(
                "cannot write the compiled-module cache under {}: {problem}",
                self.dir.display()
            );
        }
        Ok((module, ModuleSource::Compiled))
    }

    fn try_load(&self, engine: &wasmtime::Engine, key: &str) -> Option<wasmtime::Module> {
        match self.load(engine, key) {
            Ok(module) => module,
            Err(problem) => {
                tracing::warn!(
                    "compiled-module cache entry {key} unusable, recompiling: {problem}"
                );
                None
            }
        }
    }

    /// Holds the compile lock of `key` while alive; without a writable cache, no lock.
    fn lock(&self, key: &str) -> Option<std::fs::File> {
        crate::home::lock(
            &self.dir.join("locks"),
            key,
            crate::home::LockMode::Exclusive,
        )
        .ok()
    }

    fn index_path(&self, key: &str) -> PathBuf {
        self.dir.join("index").join(key)
    }

    fn object_path(&self, digest: &str) -> PathBuf {
        self.dir.join("objects").join(format!("{digest}.cwasm"))
    }

    fn load(
        &self,
        engine: &wasmtime::Engine,
        key: &str,
    ) -> Result<Option<wasmtime::Module>, String> {
        let index = self.index_path(key);
        let expected = match std::fs::read_to_string(&index) {
            Ok(text) => blake3::Hash::from_hex(text.trim())
                .map_err(|_| format!("{} does not hold a blake3 hash", index.display()))?
                .to_hex()
                .to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", index.display())),
        };
        let object = self.object_path(&expected);
        // One open file is stamped, checked and loaded: a file renamed into place meanwhile
        // is not the one deserialized.
        let file = match std::fs::File::open(&object) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", object.display())),
        };
        let stamp = VerifiedStamp::of(&file)
            .map_err(|e| format!("cannot read {}: {e}", object.display()))?;
        let stamp_path = object.with_extension("verified");
        let already_verified = !self.reverify
            && std::fs::read_to_string(&stamp_path).is_ok_and(|recorded| recorded == stamp.0);
        if !already_verified {
            let mut hasher = blake3::Hasher::new();
            hasher
                .update_mmap_rayon(&object)
                .map_err(|e| format!("cannot read {}: {e}", object.display()))?;
            let actual = hasher.finalize().to_hex();
            let still_the_same_file = std::fs::File::open(&object)
                .and_then(|again| VerifiedStamp::of(&again))
                .is_ok_and(|again| again.0 == stamp.0);
            if !still_the_same_file {
                return Err(format!(
                    "{} changed while it was verified",
                    object.display()
                ));
            }
            if actual.as_str() != expected {
                // Remove the damaged object so the next writer can publish a good one.
                let _ = std::fs::remove_file(&object);
                let _ = std::fs::remove_file(&stamp_path);
                return Err(format!(
                    "{} is corrupt (blake3 {actual}, expected {expected})",
                    object.display()
                ));
            }
            // Informational: without a stamp the next load just hashes again.
            let _ = publish(&stamp_path, stamp.0.as_bytes());
        }
        // SAFETY: the file is one this cache wrote from `Module::serialize`; its contents were
        // verified against the hash it is named by, either now or at an earlier load of this
        // same unchanged file (same inode, size, mtime and ctime); wasmtime also checks the
        // header against this engine's configuration.
        let module = unsafe { wasmtime::Module::deserialize_open_file(engine, file) }
            .map_err(|e| format!("cannot load {}: {e}", object.display()))?;
        Ok(Some(module))
    }

    fn store(
        &self,
        module: &wasmtime::Module,
        key: &str,
        mut stats: CompileStats,
    ) -> Result<(), String> {
        let bytes = module.serialize().map_err(|e| format!("serialize: {e}"))?;
        let digest = blake3::hash(&bytes).to_hex().to_string();
        let object = self.object_path(&digest);
        if !object.exists() {
            publish(&object, &bytes)?;
            // Read-only, so nothing rewrites a module some process has mapped.
            if let Ok(meta) = std::fs::metadata(&object) {
                let mut permissions = meta.permissions();
                permissions.set_readonly(true);
                let _ = std::fs::set_permissions(&object, permissions);
            }
        }
        stats.compiled_bytes = bytes.len() as u64;
        // Informational only (for `dvm bench`): a failure to record it is not an error.
        if let Ok(json) = serde_json::to_vec(&stats) {
            let _ = publish(&self.dir.join("stats").join(format!("{key}.json")), &json);
        }
        publish(&self.index_path(key), digest.as_bytes())
    }

    /// How the module with this digest was compiled, when this machine recorded it.
    pub(crate) fn stats(&self, wasm_digest: &blake3::Hash) -> Option<CompileStats> {
        let path = self
            .dir
            .join("stats")
            .join(format!("{}.json", self.key(wasm_digest)));
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Loads the cached module with this digest as a new process would (verify + mmap),
    /// bypassing the in-process memo. For measurements.
    pub(crate) fn load_uncached(
        &self,
        engine: &wasmtime::Engine,
        wasm_digest: &blake3::Hash,
    ) -> Result<Option<wasmtime::Module>, String> {
        self.load(engine, &self.key(wasm_digest))
    }
}

/// What identifies one unchanged file: device, inode, size, mtime and ctime (which no
/// unprivileged call can set back). Recorded after a full blake3 check, it lets later loads
/// of the same file skip re-hashing hundreds of megabytes; any write to the file, or a new
/// file in its place, changes it.
struct VerifiedStamp(String);

impl VerifiedStamp {
    fn of(file: &std::fs::File) -> std::io::Result<VerifiedStamp> {
        let meta = file.metadata()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Ok(VerifiedStamp(format!(
                "v1 dev={} ino={} len={} mtime={}.{} ctime={}.{}",
                meta.dev(),
                meta.ino(),
                meta.len(),
                meta.mtime(),
                meta.mtime_nsec(),
                meta.ctime(),
                meta.ctime_nsec()
            )))
        }
        #[cfg(not(unix))]
        {
            // No ctime to trust: a stamp that never matches keeps full verification.
            Ok(VerifiedStamp(format!("unverifiable {}", meta.len())))
        }
    }
}

/// Publishes `bytes` at `target` through the home ([`crate::home::publish`], synced).
fn publish(target: &Path, bytes: &[u8]) -> Result<(), String> {
    crate::home::publish(target, bytes, crate::home::Durability::Synced).map_err(|e| e.to_string())
}
