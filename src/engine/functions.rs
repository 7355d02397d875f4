//! Cranelift's incremental compilation cache, kept on disk: each compiled function is stored
//! under a hash of its input, so a module whose functions were compiled before (a snapshot of
//! a runtime differs from the runtime only in its data and globals) compiles from the cache.
//!
//! Layout under `$DVM_HOME/modules/v1/functions/`: `<2 hex>/<62 hex>`, the blake3 of
//! Cranelift's key (which covers the function's body, the target and the compiler's flags)
//! under a domain and the wasmtime version. Each file holds the blake3 of the value, then the
//! value; a file that does not match is removed and the function compiled again. Files are
//! published whole by rename; a lost one only costs a recompile, so none is synced.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const KEY_DOMAIN: &[u8] = b"dvm cranelift function cache v1";

/// The on-disk store Cranelift reads and writes compiled functions through.
#[derive(Debug)]
pub(crate) struct FunctionCache {
    dir: PathBuf,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl FunctionCache {
    pub(crate) fn new(home: &Path) -> FunctionCache {
        FunctionCache {
            dir: crate::home::modules(home).join("functions"),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn path(&self, key: &[u8]) -> PathBuf {
        let mut hasher = blake3::Hasher::new();
        hasher.update(KEY_DOMAIN);
        hasher.update(super::WASMTIME_VERSION.as_bytes());
        hasher.update(&(key.len() as u64).to_le_bytes());
        hasher.update(key);
        let name = hasher.finalize().to_hex();
        self.dir.join(&name[..2]).join(&name[2..])
    }

    /// Functions found in the cache and functions compiled, since this store was made.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    fn lookup(&self, key: &[u8]) -> Option<Vec<u8>> {
        let path = self.path(key);
        let mut bytes = std::fs::read(&path).ok()?;
        let checked = bytes.len() >= 32 && blake3::hash(&bytes[32..]).as_bytes() == &bytes[..32];
        if !checked {
            tracing::warn!(
                "compiled-function cache entry {} is damaged; compiling again",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
            return None;
        }
        bytes.drain(..32);
        Some(bytes)
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let found = self.lookup(key);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found.map(Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let mut bytes = Vec::with_capacity(32 + value.len());
        bytes.extend_from_slice(blake3::hash(&value).as_bytes());
        bytes.extend_from_slice(&value);
        crate::home::publish(&self.path(key), &bytes, crate::home::Durability::Renamed).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::CacheStore as _;

    #[test]
    fn stores_checks_and_drops_damaged_entries() {
        let home = tempfile::tempdir().unwrap();
        let cache = FunctionCache::new(home.path());
        assert!(cache.get(b"key").is_none());
        assert!(cache.insert(b"key", b"compiled".to_vec()));
        assert_eq!(cache.get(b"key").as_deref(), Some(&b"compiled"[..]));
        assert!(cache.get(b"other").is_none());
        assert_eq!(cache.counts(), (1, 2));

        // A flipped byte is noticed, and the entry removed so a good one can replace it.
        let path = cache.path(b"key");
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(cache.get(b"key").is_none());
        assert!(!path.exists());
        std::fs::write(&path, b"short").unwrap();
        assert!(cache.get(b"key").is_none());
    }

    /// Two modules with the same code and different data (a runtime and its snapshot): the
    /// second compiles its functions from the cache the first filled.
    #[test]
    fn a_module_that_differs_only_in_data_compiles_from_the_cache() {
        let home = tempfile::tempdir().unwrap();
        let config = crate::Config {
            home: home.path().to_path_buf(),
            pool: None,
            ..crate::Config::default()
        };
        let functions = std::sync::Arc::new(FunctionCache::new(home.path()));
        let engine = crate::engine::engine(&config, functions.clone()).unwrap();
        let modules =
            crate::engine::cache::ModuleCache::new(home.path(), &engine, false, functions);
        let module = |data: &str| {
            wat::parse_str(format!(
                r#"(module
                    (memory (export "memory") 1)
                    (global $counter (mut i32) (i32.const 0))
                    (data (i32.const 16) "{data}")
                    (func (export "sum") (param i32) (result i32)
                        (global.set $counter (i32.add (global.get $counter) (i32.const 1)))
                        (i32.add (i32.load (local.get 0)) (global.get $counter)))
                    (func (export "twice") (param i32) (result i32)
                        (i32.mul (local.get 0) (i32.const 2))))"#
            ))
            .unwrap()
        };
        let mut stats = Vec::new();
        for data in ["before the snapshot", "after the snapshot, with more data"] {
            let bytes = module(data);
            let digest = blake3::hash(&bytes);
            modules
                .load_or_compile(
                    &engine,
                    &digest,
                    "test module",
                    &|| Ok(bytes.clone()),
                    &|| {},
                )
                .unwrap();
            stats.push(modules.stats(&digest).unwrap());
        }
        // Cranelift may still compile a function or so of its own (seen: one of ten); the
        // module's functions come from the cache.
        assert!(stats[0].functions_compiled >= 2, "{:?}", stats[0]);
        assert!(stats[1].functions_cached >= 2, "{:?}", stats[1]);
        assert!(
            stats[1].functions_compiled * 4 < stats[1].functions_cached,
            "{:?}",
            stats[1]
        );
    }
}
