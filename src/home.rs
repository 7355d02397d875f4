//! The `$DVM_HOME` directory: where each kind of thing dvm keeps lives, how files are published
//! into it (whole or not at all), and its locks. dvm trusts what it finds there (compiled
//! native code, runtimes, signed cache entries, keys), so it refuses a home that someone else
//! could change.
//!
//! Versioned directory names (`v1`, `v2`) change when the format of what they hold does, so an
//! older dvm and a newer one can share a home.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Compiled modules: `modules/v1/` (index, objects, stats, locks).
pub(crate) fn modules(home: &Path) -> PathBuf {
    home.join("modules").join("v1")
}

/// Installed runtimes: `runtimes/v1/<id>/<version>/`.
pub(crate) fn runtimes(home: &Path) -> PathBuf {
    home.join("runtimes").join("v1")
}

/// Content-addressed blobs (runtime files, snapshots): `store/v1/blobs/`.
pub(crate) fn blobs(home: &Path) -> PathBuf {
    home.join("store").join("v1").join("blobs")
}

/// Session snapshots (signed manifests; their bytes are blobs): `sessions/v1/`.
pub(crate) fn session_snapshots(home: &Path) -> PathBuf {
    home.join("sessions").join("v1")
}

/// The Python package store: `packages/v1/python/`.
pub(crate) fn python_packages(home: &Path) -> PathBuf {
    home.join("packages").join("v1").join("python")
}

/// The npm package store: `packages/v1/npm/`.
pub(crate) fn npm_packages(home: &Path) -> PathBuf {
    home.join("packages").join("v1").join("npm")
}

/// The local result cache of entry format `schema`: `results/v<schema>/`.
pub(crate) fn results(home: &Path, schema: u32) -> PathBuf {
    home.join("results").join(format!("v{schema}"))
}

/// The home's own result-cache signing key: `keys/results.ed25519`.
pub(crate) fn result_signing_key(home: &Path) -> PathBuf {
    home.join("keys").join("results.ed25519")
}

/// Public keys whose result-cache entries are trusted: `keys/trusted`.
pub(crate) fn trusted_keys(home: &Path) -> PathBuf {
    home.join("keys").join("trusted")
}

/// The code-artifact store: `artifacts/v1/`.
pub(crate) fn artifacts(home: &Path) -> PathBuf {
    home.join("artifacts").join("v1")
}

/// Preload snapshots, an index by key (blobs in [`blobs`]): `snapshots/v1/`.
pub(crate) fn snapshots(home: &Path) -> PathBuf {
    home.join("snapshots").join("v1")
}

/// Generated runner scripts: `runners/v1/`.
pub(crate) fn runners(home: &Path) -> PathBuf {
    home.join("runners").join("v1")
}

/// Home-wide locks (runtime installs): `locks/`.
pub(crate) fn locks(home: &Path) -> PathBuf {
    home.join("locks")
}

/// Sockets of servers running on this machine for this home (`dvm serve --local`): `run/`,
/// owner-only.
pub(crate) fn run_dir(home: &Path) -> PathBuf {
    home.join("run")
}

/// The socket `dvm serve --local` listens on: `run/local.sock`.
pub(crate) fn local_socket(home: &Path) -> PathBuf {
    run_dir(home).join("local.sock")
}

/// Makes `dir` (and missing parents) and leaves it readable, writable and searchable by its
/// owner alone.
#[cfg(feature = "cli")]
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), HomeIoError> {
    let fail = |action, source| HomeIoError {
        action,
        path: dir.to_path_buf(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail("create", e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| fail("make private", e))
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir).map_err(|e| fail("create", e))
    }
}

/// Scratch space for work that is published into the home when done: `tmp/`.
pub(crate) fn tmp(home: &Path) -> PathBuf {
    home.join("tmp")
}

/// The configuration file when no other is named: `config.toml`.
pub(crate) fn config_file(home: &Path) -> PathBuf {
    home.join("config.toml")
}

/// The user's execution profiles: `profiles/<name>.toml`.
pub(crate) fn profiles(home: &Path) -> PathBuf {
    home.join("profiles")
}

/// A file-system step that failed under the home: what was being done, and to which path.
#[derive(Debug)]
pub(crate) struct HomeIoError {
    pub action: &'static str,
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl HomeIoError {
    /// What was being done (with the path) and the underlying error, for a domain error that
    /// keeps the source.
    pub(crate) fn into_parts(self) -> (String, std::io::Error) {
        (
            format!("{} {}", self.action, self.path.display()),
            self.source,
        )
    }
}

impl std::fmt::Display for HomeIoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.action,
            self.path.display(),
            self.source
        )
    }
}

/// Whether [`publish`] waits for the data to reach the disk before the rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// `fsync` the data first: after a crash the file is whole or absent.
    Synced,
    /// Only the rename is atomic: other processes never see a partial file.
    Renamed,
}

/// Publishes `bytes` at `target` whole or not at all: writes a temp file in the target's
/// directory (made if missing), optionally syncs it, and renames it over the target.
pub(crate) fn publish(
    target: &Path,
    bytes: &[u8],
    durability: Durability,
) -> Result<(), HomeIoError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let mut temp = temp_file_in(dir)?;
    temp.write_all(bytes)
        .and_then(|()| match durability {
            Durability::Synced => temp.as_file().sync_data(),
            Durability::Renamed => Ok(()),
        })
        .map_err(|source| HomeIoError {
            action: "write",
            path: temp.path().to_path_buf(),
            source,
        })?;
    temp.persist(target).map_err(|e| HomeIoError {
        action: "rename into",
        path: target.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// A temp file in `dir` (made if missing), to fill and then rename into place there.
pub(crate) fn temp_file_in(dir: &Path) -> Result<tempfile::NamedTempFile, HomeIoError> {
    std::fs::create_dir_all(dir).map_err(|source| HomeIoError {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    tempfile::NamedTempFile::new_in(dir).map_err(|source| HomeIoError {
        action: "temp file in",
        path: dir.to_path_buf(),
        source,
    })
}

/// Whether a lock is shared with other holders or held alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockMode {
    Shared,
    Exclusive,
}

/// Blocks until this process holds the lock `dir/<name>.lock` (the directory and file are
/// made if missing); it is released when the returned file is dropped, or when the process
/// ends.
pub(crate) fn lock(dir: &Path, name: &str, mode: LockMode) -> Result<File, HomeIoError> {
    std::fs::create_dir_all(dir).map_err(|source| HomeIoError {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(format!("{name}.lock"));
    let fail = |action, source| HomeIoError {
        action,
        path: path.clone(),
        source,
    };
    let file = File::create(&path).map_err(|e| fail("create", e))?;
    match mode {
        LockMode::Shared => file.lock_shared(),
        LockMode::Exclusive => file.lock(),
    }
    .map_err(|e| fail("lock", e))?;
    Ok(file)
}

/// Makes `home` if it is missing (owner-only), then checks that the directory is owned by this
/// user and that neither group nor others can write it, as ssh checks its key files. A home
/// that fails is refused with [`Error::HomeNotPrivate`], which says how to fix it. A home that
/// cannot be made or is not a directory is left to degrade as before: nothing is read from it
/// and every cache write there fails with a warning.
pub fn ensure_private(home: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};

        let metadata = match std::fs::metadata(home) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                // A home that cannot be made degrades to compiling in memory later, with a
                // warning where the write fails; only a home that exists can be someone else's.
                let made = std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(home);
                match made.and_then(|()| std::fs::metadata(home)) {
                    Ok(metadata) => metadata,
                    Err(_) => return Ok(()),
                }
            }
            // Unreadable or not a directory: nothing can be loaded from it, and every write
            // there fails and degrades the same way.
            Err(_) => return Ok(()),
        };
        if !metadata.is_dir() {
            return Ok(());
        }
        let refuse = |problem: String| {
            Err(Error::HomeNotPrivate {
                path: home.to_path_buf(),
                problem,
            })
        };
        let me = rustix::process::geteuid().as_raw();
        if metadata.uid() != me {
            return refuse(format!(
                "is owned by user id {}, not by you (user id {me})",
                metadata.uid()
            ));
        }
        let mode = metadata.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return refuse(format!(
                "can be written by {} (mode {mode:o})",
                if mode & 0o002 != 0 {
                    "everyone"
                } else {
                    "its group"
                }
            ));
        }
    }
    #[cfg(not(unix))]
    {
        // Ownership and modes are not checked here; a home that cannot be made degrades.
        let _ = std::fs::create_dir_all(home);
    }
    Ok(())
}
