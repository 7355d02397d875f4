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

/// A private, writable directory for one run, removed when dropped.
pub(crate) struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub(crate) fn new(purpose: &str) -> Result<Scratch, Error> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("dvm-{purpose}-"))
            .tempdir()
            .map_err(|e| Error::Internal(format!("cannot create a {purpose} directory: {e}")))?;
        Ok(Scratch { dir })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `bytes` to `name` directly inside the directory. `name` must be a plain file
    /// name.
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(Error::InvalidLimits(format!(
                "`{name}` is not a plain file name for the script"
            )));
        }
        std::fs::write(self.dir.path().join(name), bytes)
            .map_err(|e| Error::Internal(format!("cannot write the script: {e}")))
    }
}
