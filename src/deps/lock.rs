//! The lock: exactly which packages a set is made of, read, written and validated.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::spec::{self, Sha256, WheelFilename};
use crate::error::{DepsError, Error};

pub(crate) const LOCK_SCHEMA: u32 = 1;

/// Exactly which wheels a set is made of. Every lock read is validated field by field
/// ([`Lock::validate`]) before any of it is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LockFile")]
pub struct Lock {
    pub schema: u32,
    pub runtime: String,
    /// The guest's Python version, e.g. `3.15` (empty for JavaScript).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub python: String,
    pub packages: Vec<LockedPackage>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LockedPackage {
    /// The PEP 503-normalised name (Python) or the npm name.
    pub name: String,
    pub version: String,
    /// The wheel's file name, or the `npm pack` tarball's.
    pub file: String,
    pub sha256: Sha256,
}

/// A lock as stored, before its fields are checked.
#[derive(Deserialize)]
struct LockFile {
    schema: u32,
    runtime: String,
    #[serde(default)]
    python: String,
    packages: Vec<LockedPackage>,
}

/// Most packages one lock may hold.
const MAX_LOCKED_PACKAGES: usize = 10_000;

impl TryFrom<LockFile> for Lock {
    type Error = String;

    fn try_from(file: LockFile) -> Result<Lock, String> {
        let lock = Lock {
            schema: file.schema,
            runtime: file.runtime,
            python: file.python,
            packages: file.packages,
        };
        lock.validate()?;
        Ok(lock)
    }
}

impl Lock {
    /// Checks every field: Python locks hold PEP 503 names, PEP 440 versions and wheel file
    /// names that agree with them; JavaScript locks (empty `python`) npm names, semver
    /// versions and tarball names; every sha256 is 64 lowercase hex digits (by its type).
    pub fn validate(&self) -> Result<(), String> {
        let javascript = self.python.is_empty();
        let python_version =
            self.python.len() <= 16 && self.python.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if !javascript && !python_version {
            return Err(format!("`{}` is not a Python version", self.python));
        }
        if self.packages.len() > MAX_LOCKED_PACKAGES {
            return Err(format!("it holds more than {MAX_LOCKED_PACKAGES} packages"));
        }
        for (index, package) in self.packages.iter().enumerate() {
            let checked = if javascript {
                spec::NpmName::parse(&package.name)
                    .and_then(|_| spec::check_npm_version(&package.version))
                    .and_then(|()| spec::check_tarball_name(&package.file))
            } else {
                spec::PyName::parse(&package.name).and_then(|name| {
                    if name.as_str() != package.name {
                        return Err(format!(
                            "`{}` is not PEP 503-normalised (`{name}`)",
                            package.name
                        ));
                    }
                    spec::check_py_version(&package.version)?;
                    let wheel = WheelFilename::parse(&package.file)?;
                    if wheel.name() != &name || wheel.version() != package.version {
                        return Err(format!(
                            "the wheel {} is not {} {}",
                            package.file, package.name, package.version
                        ));
                    }
                    Ok(())
                })
            };
            checked.map_err(|why| format!("package {}: {why}", index + 1))?;
        }
        Ok(())
    }

    /// Reads a lock file written by `--lock`.
    pub fn read(path: &Path) -> Result<Lock, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadInput {
            path: path.to_path_buf(),
            source,
        })?;
        let lock: Lock = serde_json::from_str(&text).map_err(|e| {
            Error::InvalidInput(format!(
                "{} is not a valid dvm lock file ({e}); nothing was installed. Write the lock \
                 again with --lock",
                path.display()
            ))
        })?;
        if lock.schema != LOCK_SCHEMA {
            return Err(Error::InvalidInput(format!(
                "{} is a lock of schema {}, this dvm reads schema {LOCK_SCHEMA}",
                path.display(),
                lock.schema
            )));
        }
        Ok(lock)
    }

    pub fn write(&self, path: &Path) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(self).map_err(|source| DepsError::Encode {
            what: "the lock",
            source,
        })?;
        std::fs::write(path, text + "\n").map_err(|e| {
            Error::InvalidInput(format!("cannot write the lock {}: {e}", path.display()))
        })
    }
}
