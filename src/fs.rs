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
/// directories several times cheaper than a disk filesystem with discard, but until
/// workspace quotas exist whatever a guest writes there is held in RAM, so it is opt-in.
fn scratch_base() -> &'static Path {
    static BASE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BASE.get_or_init(|| match std::env::var_os("DVM_SCRATCH") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::temp_dir(),
    })
}

/// A private directory for one run, removed when dropped, with a writable `workspace/` and
/// `tmp/` inside.
pub(crate) struct Scratch {
    /// Removes the whole tree when dropped.
    _dir: tempfile::TempDir,
    workspace: PathBuf,
    tmp: PathBuf,
}

impl Scratch {
    pub(crate) fn new() -> Result<Scratch, Error> {
        let fail =
            |e: std::io::Error| Error::Internal(format!("cannot create a run directory: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("dvm-run-")
            .tempdir_in(scratch_base())
            .map_err(fail)?;
        let workspace = dir.path().join("workspace");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&workspace).map_err(fail)?;
        std::fs::create_dir(&tmp).map_err(fail)?;
        Ok(Scratch {
            _dir: dir,
            workspace,
            tmp,
        })
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
