//! The content-addressed blob store under `$DVM_HOME/store/v1/blobs`: each blob is named by
//! the blake3 of its bytes, written once through a temp file and a rename, and never modified.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub(crate) struct BlobStore {
    dir: PathBuf,
}

/// A blob added to the store, with the sha256 computed in the same pass (catalogue pins are
/// sha256; the store is blake3).
pub(crate) struct Added {
    pub blake3: blake3::Hash,
    pub sha256: String,
    pub size: u64,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// sha256 of a file, streamed.
pub(crate) fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut file = File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

impl BlobStore {
    pub(crate) fn new(home: &Path) -> Self {
        BlobStore {
            dir: crate::home::blobs(home),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn path(&self, hash: &blake3::Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.dir.join(&hex[..2]).join(hex.as_str())
    }

    /// Streams `reader` into the store, hashing as it goes, and publishes it under its blake3.
    /// Stops with an error past `max_bytes`.
    pub(crate) fn add(&self, reader: &mut dyn Read, max_bytes: u64) -> std::io::Result<Added> {
        use sha2::Digest;
        std::fs::create_dir_all(&self.dir)?;
        let mut temp = tempfile::NamedTempFile::new_in(&self.dir)?;
        let mut b3 = blake3::Hasher::new();
        let mut sha = sha2::Sha256::new();
        let mut size = 0u64;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            if size > max_bytes {
                return Err(std::io::Error::other(format!(
                    "more than the expected {max_bytes} bytes"
                )));
            }
            b3.update(&buffer[..n]);
            sha.update(&buffer[..n]);
            temp.write_all(&buffer[..n])?;
        }
        temp.as_file().sync_data()?;
        let blake3 = b3.finalize();
        let target = self.path(&blake3);
        // A blob already there is kept only if it still holds what its name says: a damaged
        // one is replaced by this good copy.
        if !target.exists() || !self.verify(&blake3).unwrap_or(false) {
            std::fs::create_dir_all(target.parent().expect("blob paths have a parent"))?;
            let mut permissions = temp.as_file().metadata()?.permissions();
            permissions.set_readonly(true);
            temp.as_file().set_permissions(permissions)?;
            temp.persist(&target).map_err(|e| e.error)?;
        }
        Ok(Added {
            blake3,
            sha256: hex(&sha.finalize()),
            size,
        })
    }

    /// Stores `bytes` (already in memory, e.g. a chunk of a session's memory) under their
    /// blake3. A blob of that name and size already there is kept as it is: readers of these
    /// blobs hash them again anyway. Not synced to disk one by one (a snapshot writes
    /// thousands); a blob lost in a crash makes what names it refused, never wrong.
    /// Whether blob `hash` is stored: a regular file of `len` bytes (its contents are not
    /// read; readers hash them).
    pub(crate) fn holds(&self, hash: &blake3::Hash, len: usize) -> bool {
        std::fs::symlink_metadata(self.path(hash))
            .is_ok_and(|meta| meta.is_file() && meta.len() == len as u64)
    }

    pub(crate) fn put(&self, bytes: &[u8]) -> std::io::Result<blake3::Hash> {
        let hash = blake3::hash(bytes);
        if self.holds(&hash, bytes.len()) {
            return Ok(hash);
        }
        let target = self.path(&hash);
        let dir = target.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(dir)?;
        let mut temp = tempfile::NamedTempFile::new_in(dir)?;
        temp.write_all(bytes)?;
        let mut permissions = temp.as_file().metadata()?.permissions();
        permissions.set_readonly(true);
        temp.as_file().set_permissions(permissions)?;
        temp.persist(&target).map_err(|e| e.error)?;
        Ok(hash)
    }

    /// Reads blob `hash` into `into`, which is its size. False (and `into` not to be
    /// trusted) when the blob is not a regular file of that size, is a link, or its bytes
    /// do not hash to its name; an error when it cannot be read (`NotFound` when missing).
    pub(crate) fn read_into(&self, hash: &blake3::Hash, into: &mut [u8]) -> std::io::Result<bool> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(self.path(hash));
        let mut file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(e),
            // A link (ELOOP) or anything else that is not a plain file.
            Err(_) => return Ok(false),
        };
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() != into.len() as u64 {
            return Ok(false);
        }
        file.read_exact(into)?;
        Ok(blake3::hash(into) == *hash)
    }

    /// Re-hashes a blob; true when its contents still match its name.
    pub(crate) fn verify(&self, hash: &blake3::Hash) -> std::io::Result<bool> {
        let mut hasher = blake3::Hasher::new();
        hasher.update_mmap_rayon(self.path(hash))?;
        Ok(hasher.finalize() == *hash)
    }
}
