//! Python packages for sandboxes.
//!
//! Requirements come from `--with`, a `requirements.txt` among the uploaded files, PEP 723
//! inline metadata in the script, or the script's imports (see [`crate::Runtime::detect_imports`]).
//! pip resolves and downloads them for the guest's Python with only pure wheels allowed
//! (`--only-binary=:all: --abi none --platform any`), or from a local wheel directory. dvm
//! then installs each wheel itself: the sha256 is checked against the lock when there is
//! one, members that escape or are links are refused, the unpacked size is capped (zip
//! bombs), and every file must match the wheel's RECORD. Unpacked wheels are stored by their
//! sha256 under `$DVM_HOME/packages/v1/python/trees/`; a set of them is merged (hard links)
//! into one read-only directory mounted at [`GUEST_SITE`] on the guest's `sys.path`. The
//! resolution of a request is remembered, so installing the same set again is a store hit:
//! no pip call, no unpacking.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;

mod imports;
mod inline;
mod lock;
pub mod npm;
mod pip;
pub mod requirements;
pub mod spec;
mod store;
#[cfg(test)]
mod tests;
mod wheel;

pub(crate) use imports::{DETECT_IMPORTS, LIST_DISTRIBUTIONS, parse_detected};
pub use imports::{DetectedImport, distribution_for};
pub use inline::parse_inline_metadata;
pub(crate) use lock::LOCK_SCHEMA;
pub use lock::{Lock, LockedPackage};
#[cfg(test)]
pub(crate) use pip::KEPT_ENV;
pub use pip::ToolEnv;
pub(crate) use pip::controlled_command;
pub use requirements::{
    LocalPaths, read_directory_requirements, read_requirements, read_requirements_path,
};
pub use spec::{NpmName, NpmSpec, PyName, PythonRequirement, Sha256, WheelFilename};
pub use store::{PackageStore, StoredWheel};
pub(crate) use store::{link_tree, make_read_only, package_io, remove_tree, set_key};

/// Where a package set is mounted in the guest.
pub const GUEST_SITE: &str = "/packages/python";

/// What to install.
#[derive(Debug, Clone, Default)]
pub struct PackageRequest {
    /// PEP 508 requirements, e.g. `tabulate>=0.9`, `attrs; python_version >= "3.8"`.
    pub requirements: Vec<String>,
    /// A directory of wheels to use instead of the package index (offline installs).
    pub find_links: Option<PathBuf>,
    /// Install exactly these packages, checking each wheel's sha256 (`--locked`).
    pub locked: Option<Lock>,
}

/// One installed package of a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    pub sha256: Sha256,
    /// Already unpacked in the store before this install.
    pub from_store: bool,
}

/// Installed packages, ready to mount in a run ([`crate::RunInput::packages`]).
#[derive(Debug, Clone, Serialize)]
pub struct PackageSet {
    pub lock: Lock,
    pub installed: Vec<InstalledPackage>,
    /// Requirements the runtime satisfies with its own built-in packages.
    pub built_in: Vec<String>,
    /// The merged directory mounted at [`GUEST_SITE`]; `None` when nothing was installed.
    #[serde(skip)]
    pub(crate) site: Option<PathBuf>,
    /// The resolution came from the store (no pip call).
    pub resolved_from_store: bool,
}

impl PackageSet {
    /// Requirements that reinstall exactly this set: `name==version` for Python,
    /// `name@version` for JavaScript.
    pub fn pinned(&self) -> Vec<String> {
        let javascript = self.lock.python.is_empty();
        self.lock
            .packages
            .iter()
            .map(|p| match javascript {
                true => format!("{}@{}", p.name, p.version),
                false => format!("{}=={}", p.name, p.version),
            })
            .collect()
    }

    /// The installed packages as `name version`.
    pub fn installed_names(&self) -> Vec<String> {
        self.installed
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect()
    }

    /// The installed packages as `name version`, then the built-in ones as
    /// `name (built in)`.
    pub fn summary(&self) -> Vec<String> {
        let mut all = self.installed_names();
        all.extend(self.built_in.iter().map(|b| format!("{b} (built in)")));
        all
    }

    /// The mount of this set, if it has packages.
    pub(crate) fn site(&self) -> Option<&Path> {
        self.site.as_deref()
    }
}

/// PEP 503 normalisation: lower case, runs of `-_.` as one `-`.
pub(crate) fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut dash = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            dash = true;
        } else {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Requirements of one `requirements.txt` read on its own: one per line, each validated as a
/// [`PythonRequirement`], `#` comments and `--hash` options dropped; includes and pip options
/// are refused. [`read_requirements`] also follows `-r`/`-c` inside an upload.
pub fn parse_requirements_txt(text: &str) -> Result<Vec<String>, Error> {
    requirements::parse_requirements_text(text, LocalPaths::Refuse)
}
