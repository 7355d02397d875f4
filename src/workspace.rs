//! A sandbox's files: the private read-write workspace (the guest's working directory,
//! `/workspace`), host directories granted to it, and the files a run created or changed.
//!
//! Every host-side operation on a workspace goes through a capability handle on its
//! directory (cap-std), so a symlink the guest left behind can never lead the host outside
//! it.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Error;
use crate::fs::{Scratch, WORKSPACE};

/// A sandbox workspace that outlives single runs: upload files, run any number of times
/// with it in [`RunInput::workspace`](crate::RunInput::workspace), read what the runs wrote.
/// Removed when the last clone is dropped, unless [`Workspace::keep`] was called. Clones
/// share the same directory.
#[derive(Clone)]
pub struct Workspace {
    scratch: Arc<Scratch>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("path", &self.scratch.workspace())
            .finish()
    }
}

/// What a workspace entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One entry of [`Workspace::list`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// Relative to the workspace, `/`-separated.
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
}

/// A file a run created or changed in its workspace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutputFile {
    /// Relative to the workspace, `/`-separated.
    pub path: String,
    pub size: u64,
    /// blake3 of the contents, hex. `None` for a file larger than the run's disk quota
    /// (only a sparse file can be), which is neither hashed nor copied out.
    pub blake3: Option<String>,
}

/// A host directory mounted in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub host: PathBuf,
    /// Absolute guest path, e.g. `/data`.
    pub guest: String,
    pub writable: bool,
}

impl Grant {
    /// Parses `HOST:GUEST[:ro|rw]` (read-only unless `rw`).
    pub fn parse(text: &str) -> Result<Grant, Error> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "--grant `{text}`: {why}; write HOST:GUEST[:ro|rw], e.g. ./data:/data:ro"
            ))
        };
        let mut parts = text.split(':');
        let (Some(host), Some(guest)) = (parts.next(), parts.next()) else {
            return Err(bad("missing the guest path"));
        };
        let writable = match parts.next() {
            None | Some("ro") => false,
            Some("rw") => true,
            Some(mode) => return Err(bad(&format!("`{mode}` is not ro or rw"))),
        };
        if parts.next().is_some() {
            return Err(bad("too many `:`"));
        }
        if host.is_empty() {
            return Err(bad("the host path is empty"));
        }
        Ok(Grant {
            host: PathBuf::from(host),
            guest: guest.to_string(),
            writable,
        })
    }

    /// Checks the grant and resolves its host directory.
    pub(crate) fn validated(&self, reserved: &[&str]) -> Result<Grant, Error> {
        let guest = normalize_absolute(&self.guest).ok_or_else(|| {
            Error::InvalidInput(format!(
                "grant guest path `{}` must be absolute, without `..`, e.g. /data",
                self.guest
            ))
        })?;
        if guest == "/" || reserved.contains(&guest.as_str()) {
            return Err(Error::InvalidInput(format!(
                "grant guest path `{guest}` is taken by the sandbox itself; pick another, \
                 e.g. /data"
            )));
        }
        let host = std::fs::canonicalize(&self.host).map_err(|source| Error::ReadInput {
            path: self.host.clone(),
            source,
        })?;
        if !host.is_dir() {
            return Err(Error::InvalidInput(format!(
                "grant `{}` is not a directory; grants mount directories (use --file to \
                 upload a single file)",
                self.host.display()
            )));
        }
        Ok(Grant {
            host,
            guest,
            writable: self.writable,
        })
    }
}

/// `/a//b/./c/` → `/a/b/c`; `None` for a relative path or one with `..`.
fn normalize_absolute(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    let mut parts = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part if part.contains('\0') => return None,
            part => parts.push(part),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Components a [`WorkspacePath`] may have.
pub const MAX_PATH_DEPTH: usize = 256;
/// Bytes a [`WorkspacePath`] may have (a component at most 255, as on Linux).
pub const MAX_PATH_BYTES: usize = 4096;
const MAX_NAME_BYTES: usize = 255;

/// A path inside a workspace (or inside an `--out` directory): relative, normalised, every
/// component a plain name (no `..`, `.`, empty part, `/` or NUL), at most
/// [`MAX_PATH_DEPTH`] components and [`MAX_PATH_BYTES`] bytes. Every host path dvm makes
/// from a name a guest, a user, a client or a cache entry gave is built from one of these,
/// one component at a time beneath a directory descriptor, so it can never leave the
/// directory it is resolved in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkspacePath(String);

impl WorkspacePath {
    /// Parses what a user wrote: relative (`data/x.csv`, `./a//b`) or under `/workspace`
    /// (`/workspace/data/x.csv`). `..`, other absolute paths, NUL bytes, the workspace
    /// itself and paths past the depth and length bounds are refused.
    pub fn parse(text: &str) -> Result<WorkspacePath, Error> {
        let rest = match text.strip_prefix(WORKSPACE) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
            _ if text.starts_with('/') => {
                return Err(Self::refuse(text, "absolute, outside the workspace"));
            }
            _ => text,
        };
        Self::from_parts(
            rest.split('/')
                .filter(|part| !part.is_empty() && *part != "."),
        )
        .map_err(|why| Self::refuse(text, why))
    }

    /// This path with one more component (a name read from a directory).
    pub fn join(&self, name: &OsStr) -> Result<WorkspacePath, &'static str> {
        let name = name.to_str().ok_or("the name is not UTF-8")?;
        Self::from_parts(self.components().chain([name]))
    }

    /// The one constructor every other goes through.
    fn from_parts<'a>(parts: impl Iterator<Item = &'a str>) -> Result<WorkspacePath, &'static str> {
        let mut path = String::new();
        let mut depth = 0;
        for part in parts {
            if part.is_empty() || part == "." {
                return Err("it has an empty or `.` component");
            }
            if part == ".." {
                return Err("`..` is not allowed");
            }
            if part.contains(['/', '\0']) {
                return Err("a component holds `/` or a NUL byte");
            }
            if part.len() > MAX_NAME_BYTES {
                return Err("a component is longer than 255 bytes");
            }
            depth += 1;
            if depth > MAX_PATH_DEPTH {
                return Err("it is deeper than 256 components");
            }
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(part);
            if path.len() > MAX_PATH_BYTES {
                return Err("it is longer than 4096 bytes");
            }
        }
        if path.is_empty() {
            return Err("it names the workspace itself");
        }
        Ok(WorkspacePath(path))
    }

    fn refuse(text: &str, why: &str) -> Error {
        let mut shown: String = text.chars().take(120).collect();
        if shown.len() < text.len() {
            shown.push('…');
        }
        Error::InvalidInput(format!(
            "`{}` is not a path in the workspace ({why}); use a relative path such as \
             data/input.csv or one under {WORKSPACE}/",
            shown.escape_debug()
        ))
    }

    /// The `/`-separated relative form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, first to last.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The directories leading to the last component, and that component.
    fn split_last(&self) -> (impl Iterator<Item = &str>, &OsStr) {
        let (parents, name) = match self.0.rsplit_once('/') {
            Some((parents, name)) => (Some(parents), name),
            None => (None, self.0.as_str()),
        };
        (
            parents.into_iter().flat_map(|p| p.split('/')),
            OsStr::new(name),
        )
    }
}

impl std::fmt::Display for WorkspacePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The absolute guest path of `name` (relative, or under `/workspace`).
pub(crate) fn guest_path(name: &str) -> Result<String, Error> {
    Ok(format!("{WORKSPACE}/{}", WorkspacePath::parse(name)?))
}

fn io_error(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::InvalidInput(format!("{what}: {}", describe(&e)))
}

/// An I/O error, with what a refused link means spelled out.
fn describe(error: &std::io::Error) -> String {
    if crate::fs::is_link_refusal(error) {
        format!(
            "{error} (a symlink or a non-directory is in the way; dvm never follows links \
             when it reads or writes files for a sandbox)"
        )
    } else {
        error.to_string()
    }
}

/// Opens the directory holding `path`'s last component beneath `root`, one component at a
/// time without following a link; with `create`, missing directories are made.
fn open_parent(
    root: BorrowedFd<'_>,
    path: &WorkspacePath,
    create: bool,
) -> std::io::Result<OwnedFd> {
    let mut dir = crate::fs::reopen_dir(root)?;
    let (parents, _) = path.split_last();
    for part in parents {
        let part = OsStr::new(part);
        if create {
            crate::fs::make_dir_at(dir.as_fd(), part)?;
        }
        dir = crate::fs::open_subdir(dir.as_fd(), part)?;
    }
    Ok(dir)
}

/// What [`Workspace::copy_out`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Paths written, relative to the destination.
    pub copied: Vec<String>,
    /// Paths left out, each with why (not read because over the byte budget, a symlink in
    /// the way, changed since the run…).
    pub skipped: Vec<(String, String)>,
}

/// What a walk of a workspace left out.
#[derive(Debug, Default)]
struct Unlisted {
    /// Entries past [`MAX_PATH_DEPTH`] or [`MAX_PATH_BYTES`], or with non-UTF-8 names.
    entries: u64,
}

impl Unlisted {
    fn warn(&self, what: &str) {
        if self.entries > 0 {
            tracing::warn!(
                "{what}: {} entries (with what is under them) were left out: deeper than \
                 {MAX_PATH_DEPTH} components, longer than {MAX_PATH_BYTES} bytes or not \
                 UTF-8",
                self.entries
            );
        }
    }
}

impl Workspace {
    /// A fresh, empty workspace.
    pub fn new() -> Result<Workspace, Error> {
        Ok(Workspace {
            scratch: Arc::new(Scratch::new()?),
        })
    }

    /// The workspace's directory on the host.
    pub fn path(&self) -> &Path {
        self.scratch.workspace()
    }

    /// A workspace over an existing run directory (a prestarted sandbox's).
    pub(crate) fn from_scratch(scratch: Arc<Scratch>) -> Workspace {
        Workspace { scratch }
    }

    pub(crate) fn scratch(&self) -> &Scratch {
        &self.scratch
    }

    /// Keeps the workspace on disk when it is dropped and returns where it is.
    pub fn keep(&self) -> PathBuf {
        self.scratch.keep();
        self.path().to_path_buf()
    }

    fn root(&self) -> Result<OwnedFd, Error> {
        crate::fs::open_dir(self.path()).map_err(|source| {
            crate::error::HostError::Io {
                action: "open the workspace".into(),
                source,
            }
            .into()
        })
    }

    /// Calls `visit` with every entry's path and status, depth first in name order, never
    /// following a link; entries past the path bounds are counted in the result instead.
    fn walk(
        &self,
        visit: &mut dyn FnMut(&WorkspacePath, &crate::fs::WalkEntry<'_>),
    ) -> Result<Unlisted, Error> {
        let root = self.root()?;
        let mut unlisted = Unlisted::default();
        crate::fs::walk(
            root.as_fd(),
            None::<WorkspacePath>,
            &mut |dir: &Option<WorkspacePath>, entry: &crate::fs::WalkEntry<'_>| {
                let path = match dir {
                    None => WorkspacePath::from_parts(entry.name.to_str().into_iter()),
                    Some(dir) => dir.join(entry.name),
                };
                let Ok(path) = path else {
                    unlisted.entries += 1;
                    return None;
                };
                visit(&path, entry);
                Some(Some(path))
            },
        )
        .map_err(io_error("cannot list the workspace"))?;
        Ok(unlisted)
    }

    /// Writes `bytes` to `guest` (relative, or under `/workspace`), creating directories.
    /// A symlink anywhere on the way is refused, never written through.
    pub fn write(&self, guest: &str, bytes: &[u8]) -> Result<(), Error> {
        use std::io::Write;
        let path = WorkspacePath::parse(guest)?;
        let parent = open_parent(self.root()?.as_fd(), &path, true)
            .map_err(io_error(format!("cannot create the directories of {path}")))?;
        let (_, name) = path.split_last();
        crate::fs::create_file_at(parent.as_fd(), name, false)
            .and_then(|mut file| file.write_all(bytes))
            .map_err(io_error(format!("cannot write {path}")))
    }

    /// Makes the directory `guest` (and its parents); one already there is fine.
    pub fn create_dir(&self, guest: &str) -> Result<(), Error> {
        let path = WorkspacePath::parse(guest)?;
        let parent = open_parent(self.root()?.as_fd(), &path, true)
            .map_err(io_error(format!("cannot create the directories of {path}")))?;
        match rustix::fs::mkdirat(
            parent.as_fd(),
            path.split_last().1,
            rustix::fs::Mode::from_raw_mode(0o755),
        ) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => Err(io_error(format!("cannot create {path}"))(e.into())),
        }
    }

    /// Reads the file `guest`, refusing one larger than `max_bytes` (before reading it), a
    /// symlink or anything but a regular file.
    pub fn read(&self, guest: &str, max_bytes: u64) -> Result<Vec<u8>, Error> {
        let path = WorkspacePath::parse(guest)?;
        let file = open_parent(self.root()?.as_fd(), &path, false)
            .and_then(|parent| crate::fs::open_file_at(parent.as_fd(), path.split_last().1))
            .map_err(io_error(format!("cannot read {path}")))?;
        let size = file
            .metadata()
            .map_err(io_error(format!("cannot read {path}")))?
            .len();
        if size > max_bytes {
            return Err(Error::InvalidInput(format!(
                "{path} is {size} bytes, over the {max_bytes}-byte cap for reading it"
            )));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(max_bytes)
            .read_to_end(&mut bytes)
            .map_err(io_error(format!("cannot read {path}")))?;
        Ok(bytes)
    }

    /// Removes a file, link or whole directory (iteratively, at any depth, never
    /// following a link).
    pub fn remove(&self, guest: &str) -> Result<(), Error> {
        let path = WorkspacePath::parse(guest)?;
        open_parent(self.root()?.as_fd(), &path, false)
            .and_then(|parent| crate::fs::remove_at(parent.as_fd(), path.split_last().1))
            .map_err(io_error(format!("cannot remove {path}")))
    }

    /// Every entry, depth first in name order; symlinks are listed, never followed.
    /// Entries deeper than [`MAX_PATH_DEPTH`] components or longer than [`MAX_PATH_BYTES`]
    /// are left out (with a warning).
    pub fn list(&self) -> Result<Vec<Entry>, Error> {
        let mut entries = Vec::new();
        self.walk(&mut |path, entry| {
            let kind = match crate::fs::file_type(entry.stat) {
                rustix::fs::FileType::Directory => EntryKind::Dir,
                rustix::fs::FileType::Symlink => EntryKind::Symlink,
                _ => EntryKind::File,
            };
            entries.push(Entry {
                path: path.to_string(),
                kind,
                size: if kind == EntryKind::File {
                    entry.stat.st_size as u64
                } else {
                    0
                },
            });
        })?
        .warn("listing the workspace");
        Ok(entries)
    }

    /// Whether something is at `guest` (a file, directory or link).
    pub fn exists(&self, guest: &str) -> Result<bool, Error> {
        let path = WorkspacePath::parse(guest)?;
        Ok(open_parent(self.root()?.as_fd(), &path, false)
            .and_then(|parent| crate::fs::stat_at(parent.as_fd(), path.split_last().1))
            .is_ok())
    }

    /// A new workspace holding a copy of this one's files (links are copied as links, never
    /// followed).
    pub fn duplicate(&self) -> Result<Workspace, Error> {
        let copy = Workspace::new()?;
        let entries = std::fs::read_dir(self.path())
            .map_err(io_error(format!("cannot list {}", self.path().display())))?;
        for entry in entries {
            let entry = entry.map_err(io_error("cannot list the workspace".to_string()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(Error::InvalidInput(format!(
                    "the workspace has a name that is not UTF-8 ({}); rename it first",
                    name.to_string_lossy()
                )));
            };
            copy.upload(&entry.path(), name)?;
        }
        Ok(copy)
    }

    /// Copies a host file or directory into the workspace at `guest` (relative, or under
    /// `/workspace`). Symlinks are copied as symlinks; inside the sandbox they resolve only
    /// within its mounts. Sparse files stay sparse.
    pub fn upload(&self, host: &Path, guest: &str) -> Result<(), Error> {
        let path = WorkspacePath::parse(guest)?;
        let root = self.root()?;
        let mut pending = vec![(host.to_path_buf(), path)];
        while let Some((source, target)) = pending.pop() {
            let mut children = copy_in(root.as_fd(), &source, &target)?;
            children.sort_by(|a, b| b.cmp(a));
            for name in children {
                let child = target.join(&name).map_err(|why| {
                    Error::InvalidInput(format!(
                        "cannot upload {}: {why}; upload a shallower tree",
                        source.join(&name).display()
                    ))
                })?;
                pending.push((source.join(&name), child));
            }
        }
        Ok(())
    }

    /// The Merkle root of the workspace: blake3 over each entry in path order (kind, path,
    /// and the contents' blake3 for a file or the target for a link). A workspace with
    /// entries past the path bounds gets a root no other workspace has (its run is never a
    /// cache hit).
    pub(crate) fn tree_root(&self) -> Result<String, Error> {
        let mut hasher = blake3::Hasher::new();
        let mut failed = None;
        let unlisted = self.walk(&mut |path, entry| {
            let name = path.as_str().as_bytes();
            let (kind, detail): (u8, Vec<u8>) = match crate::fs::file_type(entry.stat) {
                rustix::fs::FileType::Directory => (0, Vec::new()),
                rustix::fs::FileType::Symlink => (
                    1,
                    rustix::fs::readlinkat(entry.parent, entry.name, Vec::new())
                        .map(|target| target.into_bytes())
                        .unwrap_or_default(),
                ),
                _ => {
                    let hash = crate::fs::open_file_at(entry.parent, entry.name).and_then(|file| {
                        crate::fs::copy_extents(&file, None, entry.stat.st_size as u64)
                    });
                    match hash {
                        Ok(hash) => (2, hash.as_bytes().to_vec()),
                        Err(e) => {
                            failed.get_or_insert(e);
                            (2, Vec::new())
                        }
                    }
                }
            };
            hasher.update(&[kind]);
            hasher.update(&(name.len() as u64).to_le_bytes());
            hasher.update(name);
            hasher.update(&(detail.len() as u64).to_le_bytes());
            hasher.update(&detail);
        })?;
        if let Some(e) = failed {
            return Err(io_error("cannot read the workspace")(e));
        }
        if unlisted.entries > 0 {
            unlisted.warn("keying the workspace for the result cache");
            hasher.update(&rand::random::<[u8; 32]>());
        }
        Ok(hasher.finalize().to_hex().to_string())
    }

    /// What every regular file looks like now, to find what a run changes.
    pub(crate) fn state(&self) -> Result<FileStates, Error> {
        let mut states = HashMap::new();
        self.walk(&mut |path, entry| {
            if crate::fs::file_type(entry.stat) == rustix::fs::FileType::RegularFile {
                states.insert(path.clone(), FileState::of(entry.stat));
            }
        })?;
        Ok(FileStates(states))
    }

    /// The regular files created or changed since `before`, in path order, with their
    /// sizes (`st_size`: holes count). They are hashed in that order while the bytes hashed
    /// stay within `max_hashed` (the run's disk quota) in total; the rest are listed
    /// without a hash, unread. Hashing reads only a file's data extents, never a buffer of
    /// the whole file.
    pub(crate) fn changes(
        &self,
        before: &FileStates,
        max_hashed: u64,
    ) -> Result<Vec<OutputFile>, Error> {
        let mut changed = Vec::new();
        let mut budget = max_hashed;
        let mut unread = (0u64, 0u64);
        let unlisted = self.walk(&mut |path, entry| {
            if crate::fs::file_type(entry.stat) != rustix::fs::FileType::RegularFile
                || before.0.get(path) == Some(&FileState::of(entry.stat))
            {
                return;
            }
            let size = entry.stat.st_size as u64;
            let blake3 = if size <= budget {
                budget -= size;
                match crate::fs::open_file_at(entry.parent, entry.name)
                    .and_then(|file| crate::fs::copy_extents(&file, None, size))
                {
                    Ok(hash) => Some(hash.to_hex().to_string()),
                    Err(e) => {
                        tracing::warn!("output file {path} is listed unhashed: {e}");
                        None
                    }
                }
            } else {
                unread.0 += 1;
                unread.1 = unread.1.saturating_add(size);
                None
            };
            changed.push(OutputFile {
                path: path.to_string(),
                size,
                blake3,
            });
        })?;
        unlisted.warn("collecting the run's output files");
        if unread.0 > 0 {
            tracing::warn!(
                "{} output files ({} bytes) are listed but were not read, hashed or kept: \
                 they are over the run's {max_hashed}-byte disk quota of bytes read back",
                unread.0,
                unread.1
            );
        }
        Ok(changed)
    }

    /// Copies `files` (from [`Outcome::files`](crate::Outcome::files)) out to `out`,
    /// keeping their relative paths. Nothing on either side is followed: a symlink in the
    /// workspace or in `out` (say one a guest with a writable grant on `out` planted) is
    /// reported in [`CopyReport::skipped`], never written through. Each file is written to
    /// a fresh temp file beside its target, checked against its hash and renamed over the
    /// target (replacing a link or file there, never writing into it). Files without a
    /// hash (not read after the run) are skipped. Sparse files stay sparse.
    pub fn copy_out(&self, files: &[OutputFile], out: &Path) -> Result<CopyReport, Error> {
        std::fs::create_dir_all(out)
            .map_err(io_error(format!("cannot create {}", out.display())))?;
        let out_dir =
            crate::fs::open_dir(out).map_err(io_error(format!("cannot open {}", out.display())))?;
        let root = self.root()?;
        let mut report = CopyReport::default();
        for file in files {
            let Some(hash) = &file.blake3 else {
                report.skipped.push((
                    file.path.clone(),
                    "not read after the run (over the disk quota of bytes read back)".into(),
                ));
                continue;
            };
            match copy_one(root.as_fd(), out_dir.as_fd(), file, hash) {
                Ok(()) => report.copied.push(file.path.clone()),
                Err(why) => report.skipped.push((file.path.clone(), why)),
            }
        }
        Ok(report)
    }
}

/// Copies one output file from the workspace `root` to the directory `out`.
fn copy_one(
    root: BorrowedFd<'_>,
    out: BorrowedFd<'_>,
    file: &OutputFile,
    hash: &str,
) -> Result<(), String> {
    let path = WorkspacePath::parse(&file.path).map_err(|e| e.to_string())?;
    let (_, name) = path.split_last();
    let source = open_parent(root, &path, false)
        .and_then(|parent| crate::fs::open_file_at(parent.as_fd(), name))
        .map_err(|e| format!("cannot read it in the workspace: {}", describe(&e)))?;
    let size = source.metadata().map_err(|e| e.to_string())?.len();
    if size != file.size {
        return Err("it changed since the run".into());
    }
    let parent = open_parent(out, &path, true)
        .map_err(|e| format!("cannot make its directory: {}", describe(&e)))?;
    let temp = format!(".dvm-out-{:016x}", rand::random::<u64>());
    let temp = OsStr::new(&temp);
    let written = crate::fs::create_file_at(parent.as_fd(), temp, true)
        .map_err(|e| format!("cannot create a temp file beside it: {}", describe(&e)))
        .and_then(|sink| {
            crate::fs::copy_extents(&source, Some(&sink), size).map_err(|e| e.to_string())
        })
        .and_then(|actual| {
            if actual.to_hex().as_str() == hash {
                Ok(())
            } else {
                Err("it changed since the run".to_string())
            }
        })
        .and_then(|()| {
            rustix::fs::renameat(parent.as_fd(), temp, parent.as_fd(), name)
                .map_err(|e| format!("cannot put it in place: {}", describe(&e.into())))
        });
    if written.is_err() {
        let _ = rustix::fs::unlinkat(parent.as_fd(), temp, rustix::fs::AtFlags::empty());
    }
    written
}

/// Size, modification time and inode of a file: a run that changes a file changes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileState {
    size: u64,
    modified: (i64, i64),
    inode: u64,
}

impl FileState {
    // `stat` field types differ between targets.
    #[allow(clippy::unnecessary_cast)]
    fn of(stat: &rustix::fs::Stat) -> FileState {
        FileState {
            size: stat.st_size as u64,
            modified: (stat.st_mtime as i64, stat.st_mtime_nsec as i64),
            inode: stat.st_ino as u64,
        }
    }
}

/// The regular files of a workspace and their states.
pub(crate) struct FileStates(HashMap<WorkspacePath, FileState>);

/// Copies host `source` (the user's own file, directory or link) to `target` beneath the
/// workspace `root`, without following anything on the workspace side. Returns the names
/// in a directory, to be copied next.
fn copy_in(
    root: BorrowedFd<'_>,
    source: &Path,
    target: &WorkspacePath,
) -> Result<Vec<OsString>, Error> {
    let read = |e| Error::ReadInput {
        path: source.to_path_buf(),
        source: e,
    };
    let meta = std::fs::symlink_metadata(source).map_err(read)?;
    let write = || io_error(format!("cannot upload to {target}"));
    let parent = open_parent(root, target, true).map_err(write())?;
    let (_, name) = target.split_last();
    if meta.is_symlink() {
        let link = std::fs::read_link(source).map_err(read)?;
        return rustix::fs::symlinkat(&link, parent.as_fd(), name)
            .map(|()| Vec::new())
            .map_err(|e| write()(e.into()));
    }
    if meta.is_dir() {
        crate::fs::make_dir_at(parent.as_fd(), name).map_err(write())?;
        return std::fs::read_dir(source)
            .map_err(read)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(read);
    }
    if !meta.is_file() {
        return Err(Error::InvalidInput(format!(
            "{} is not a regular file, directory or symlink; only those can be uploaded",
            source.display()
        )));
    }
    let from = std::fs::File::open(source).map_err(read)?;
    let size = from.metadata().map_err(read)?.len();
    let to = crate::fs::create_file_at(parent.as_fd(), name, false).map_err(write())?;
    crate::fs::copy_extents(&from, Some(&to), size)
        .map(|_| Vec::new())
        .map_err(io_error(format!("cannot upload {}", source.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_paths_stay_inside() {
        let relative = |text| WorkspacePath::parse(text).map(|p| p.as_str().to_string());
        assert_eq!(relative("a/b.txt").unwrap(), "a/b.txt");
        assert_eq!(relative("/workspace/a").unwrap(), "a");
        assert_eq!(relative("./a//b").unwrap(), "a/b");
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "/workspace",
            "",
            "/workspacex/a",
            "a\0b",
            "./.",
        ] {
            assert!(relative(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grants_parse_with_read_only_default() {
        let grant = Grant::parse("/srv/data:/data").unwrap();
        assert_eq!((grant.guest.as_str(), grant.writable), ("/data", false));
        assert!(Grant::parse("/srv:/out:rw").unwrap().writable);
        assert!(Grant::parse("/srv:/out:rx").is_err());
        assert!(Grant::parse("/srv").is_err());
        assert_eq!(normalize_absolute("/a//b/./c/").as_deref(), Some("/a/b/c"));
        assert_eq!(normalize_absolute("/a/../b"), None);
        assert_eq!(normalize_absolute("a"), None);
    }
}
