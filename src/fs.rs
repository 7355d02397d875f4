//! What a sandbox can see of the host filesystem: nothing but explicit mounts.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// A host directory preopened in the sandbox at `guest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    pub host: PathBuf,
    pub guest: String,
    pub writable: bool,
}

impl Mount {
    pub(crate) fn read_only(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Mount {
            host: host.into(),
            guest: guest.into(),
            writable: false,
        }
    }

    pub(crate) fn read_write(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Mount {
            host: host.into(),
            guest: guest.into(),
            writable: true,
        }
    }
}

/// The guest path of a run's private working directory.
pub const WORKSPACE: &str = "/workspace";

/// Where per-run directories go: `$DVM_SCRATCH`, else the system temp directory. A
/// memory-backed directory (`DVM_SCRATCH=/dev/shm`) makes creating and removing a run's
/// directories several times cheaper than a disk filesystem with discard, but whatever
/// guests write there (up to each run's disk quota) is held in RAM, so it is opt-in.
fn scratch_base() -> &'static Path {
    static BASE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BASE.get_or_init(|| match std::env::var_os("DVM_SCRATCH") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::temp_dir(),
    })
}

/// A private directory for one run with a writable `workspace/` and `tmp/` inside. When the
/// run is over its contents are removed; an emptied directory is kept for a later run (so a
/// run costs no directory creation or removal), anything that cannot be emptied is removed
/// whole.
pub(crate) struct Scratch {
    /// `None` only while being dropped.
    dir: Option<tempfile::TempDir>,
    workspace: PathBuf,
    tmp: PathBuf,
    /// Left on disk when dropped.
    keep: std::sync::atomic::AtomicBool,
}

/// Emptied run directories ready for reuse.
static EMPTIED: std::sync::Mutex<Vec<tempfile::TempDir>> = std::sync::Mutex::new(Vec::new());
/// Emptied run directories kept at most.
const MAX_EMPTIED: usize = 64;

/// Removes everything inside `dir` (never following links), then checks it is empty.
fn empty_dir(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    for entry in entries {
        let Ok(entry) = entry else {
            return false;
        };
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        if removed.is_err() {
            return false;
        }
    }
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else {
            return;
        };
        if self.keep.load(std::sync::atomic::Ordering::Acquire) {
            let _ = dir.keep();
            return;
        }
        if empty_dir(&self.workspace) && empty_dir(&self.tmp) {
            let mut emptied = EMPTIED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if emptied.len() < MAX_EMPTIED {
                emptied.push(dir);
            }
        }
        // Otherwise `dir` drops here and removes the whole tree.
    }
}

impl Scratch {
    pub(crate) fn new() -> Result<Scratch, Error> {
        let reused = EMPTIED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let dir = match reused {
            Some(dir) => dir,
            None => {
                let fail = |e: std::io::Error| {
                    Error::Internal(format!("cannot create a run directory: {e}"))
                };
                let dir = tempfile::Builder::new()
                    .prefix("dvm-run-")
                    .tempdir_in(scratch_base())
                    .map_err(fail)?;
                std::fs::create_dir(dir.path().join("workspace")).map_err(fail)?;
                std::fs::create_dir(dir.path().join("tmp")).map_err(fail)?;
                dir
            }
        };
        Ok(Scratch {
            workspace: dir.path().join("workspace"),
            tmp: dir.path().join("tmp"),
            dir: Some(dir),
            keep: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Leaves the directory on disk when this is dropped.
    pub(crate) fn keep(&self) {
        self.keep.store(true, std::sync::atomic::Ordering::Release);
    }

    /// The run's working directory.
    pub(crate) fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// The run's `/tmp`.
    pub(crate) fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// Writes `bytes` to `name` directly inside the directory. `name` must be a plain file
    /// name.
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(Error::InvalidLimits(format!(
                "`{name}` is not a plain file name for the script"
            )));
        }
        std::fs::write(self.workspace.join(name), bytes)
            .map_err(|e| Error::Internal(format!("cannot write the script: {e}")))
    }
}

/// Reads a regular file of at most `max` bytes, opening it once: `Ok(Err(size))` when it is
/// larger. Devices, FIFOs and directories are refused rather than read (a device can be
/// endless, a FIFO can block forever), and a file growing while it is read stops at the cap.
pub(crate) fn read_regular_file(path: &Path, max: u64) -> std::io::Result<Result<Vec<u8>, u64>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            if meta.is_dir() {
                "it is a directory, not a file"
            } else {
                "it is not a regular file"
            },
        ));
    }
    if meta.len() > max {
        return Ok(Err(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Ok(Err(bytes.len() as u64));
    }
    Ok(Ok(bytes))
}
