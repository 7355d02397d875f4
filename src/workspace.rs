//! A sandbox's files: the private read-write workspace (the guest's working directory,
//! `/workspace`), host directories granted to it, and the files a run created or changed.
//!
//! Every host-side operation on a workspace goes through a capability handle on its
//! directory (cap-std), so a symlink the guest left behind can never lead the host outside
//! it.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
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

/// A path inside the workspace from what a user wrote: relative (`data/x.csv`) or under
/// `/workspace`. `..`, other absolute paths and the workspace itself are refused.
fn relative(guest: &str) -> Result<PathBuf, Error> {
    let bad = |why: &str| {
        Error::InvalidInput(format!(
            "`{guest}` is not a path in the workspace ({why}); use a relative path such as \
             data/input.csv or one under {WORKSPACE}/"
        ))
    };
    let rest = match guest.strip_prefix(WORKSPACE) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ if guest.starts_with('/') => return Err(bad("absolute, outside the workspace")),
        _ => guest,
    };
    let mut path = PathBuf::new();
    for component in Path::new(rest).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => return Err(bad("`..` is not allowed")),
            Component::Prefix(_) => return Err(bad("not a guest path")),
        }
    }
    if path.as_os_str().is_empty() {
        return Err(bad("it names the workspace itself"));
    }
    if guest.contains('\0') {
        return Err(bad("it contains a NUL byte"));
    }
    Ok(path)
}

/// The absolute guest path of `name` (relative, or under `/workspace`).
pub(crate) fn guest_path(name: &str) -> Result<String, Error> {
    Ok(format!("{WORKSPACE}/{}", slash(&relative(name)?)))
}

fn io_error(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::InvalidInput(format!("{what}: {e}"))
}

/// The `/`-separated form of a relative path.
fn slash(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
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

    fn dir(&self) -> Result<cap_std::fs::Dir, Error> {
        cap_std::fs::Dir::open_ambient_dir(self.path(), cap_std::ambient_authority())
            .map_err(|e| Error::Internal(format!("cannot open the workspace: {e}")))
    }

    /// Writes `bytes` to `guest` (relative, or under `/workspace`), creating directories.
    pub fn write(&self, guest: &str, bytes: &[u8]) -> Result<(), Error> {
        let path = relative(guest)?;
        let dir = self.dir()?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            dir.create_dir_all(parent)
                .map_err(io_error(format!("cannot create {}", parent.display())))?;
        }
        dir.write(&path, bytes)
            .map_err(io_error(format!("cannot write {guest}")))
    }

    /// Reads the file `guest`, refusing one larger than `max_bytes`.
    pub fn read(&self, guest: &str, max_bytes: u64) -> Result<Vec<u8>, Error> {
        let path = relative(guest)?;
        let file = self
            .dir()?
            .open(&path)
            .map_err(io_error(format!("cannot read {guest}")))?;
        let meta = file
            .metadata()
            .map_err(io_error(format!("cannot read {guest}")))?;
        if !meta.is_file() {
            return Err(Error::InvalidInput(format!(
                "{guest} is not a regular file"
            )));
        }
        if meta.len() > max_bytes {
            return Err(Error::InvalidInput(format!(
                "{guest} is {} bytes, over the {max_bytes}-byte cap for reading it",
                meta.len()
            )));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.into_std()
            .take(max_bytes)
            .read_to_end(&mut bytes)
            .map_err(io_error(format!("cannot read {guest}")))?;
        Ok(bytes)
    }

    /// Removes a file, link or whole directory.
    pub fn remove(&self, guest: &str) -> Result<(), Error> {
        let path = relative(guest)?;
        let dir = self.dir()?;
        let meta = dir
            .symlink_metadata(&path)
            .map_err(io_error(format!("cannot remove {guest}")))?;
        let removed = if meta.is_dir() {
            dir.remove_dir_all(&path)
        } else {
            dir.remove_file(&path)
        };
        removed.map_err(io_error(format!("cannot remove {guest}")))
    }

    /// Every entry, depth first in name order; symlinks are listed, never followed.
    pub fn list(&self) -> Result<Vec<Entry>, Error> {
        let mut entries = Vec::new();
        walk(&self.dir()?, Path::new(""), &mut |path, meta| {
            let kind = if meta.is_dir() {
                EntryKind::Dir
            } else if meta.is_symlink() {
                EntryKind::Symlink
            } else {
                EntryKind::File
            };
            entries.push(Entry {
                path: slash(path),
                kind,
                size: if kind == EntryKind::File {
                    meta.len()
                } else {
                    0
                },
            });
        })
        .map_err(io_error("cannot list the workspace"))?;
        Ok(entries)
    }

    /// Whether something is at `guest` (a file, directory or link).
    pub fn exists(&self, guest: &str) -> Result<bool, Error> {
        let path = relative(guest)?;
        Ok(self.dir()?.symlink_metadata(&path).is_ok())
    }

    /// Copies a host file or directory into the workspace at `guest` (relative, or under
    /// `/workspace`). Symlinks are copied as symlinks; inside the sandbox they resolve only
    /// within its mounts.
    pub fn upload(&self, host: &Path, guest: &str) -> Result<(), Error> {
        let path = relative(guest)?;
        let dir = self.dir()?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            dir.create_dir_all(parent)
                .map_err(io_error(format!("cannot create {}", parent.display())))?;
        }
        copy_in(&dir, host, &path)
    }

    /// The Merkle root of the workspace: blake3 over each entry in path order (kind, path,
    /// and the contents' blake3 for a file or the target for a link).
    pub(crate) fn tree_root(&self) -> Result<String, Error> {
        let dir = self.dir()?;
        let mut hasher = blake3::Hasher::new();
        let mut failed = None;
        walk(&dir, Path::new(""), &mut |path, meta| {
            let name = path.as_os_str().as_encoded_bytes();
            let (kind, detail): (u8, Vec<u8>) = if meta.is_dir() {
                (0, Vec::new())
            } else if meta.is_symlink() {
                let target = dir.read_link(path).unwrap_or_default();
                (1, target.as_os_str().as_encoded_bytes().to_vec())
            } else {
                let mut file_hasher = blake3::Hasher::new();
                match dir.open(path) {
                    Ok(file) => {
                        if let Err(e) = file_hasher.update_reader(file.into_std()) {
                            failed = Some(e);
                        }
                    }
                    Err(e) => failed = Some(e),
                }
                (2, file_hasher.finalize().as_bytes().to_vec())
            };
            hasher.update(&[kind]);
            hasher.update(&(name.len() as u64).to_le_bytes());
            hasher.update(name);
            hasher.update(&(detail.len() as u64).to_le_bytes());
            hasher.update(&detail);
        })
        .map_err(io_error("cannot list the workspace"))?;
        if let Some(e) = failed {
            return Err(io_error("cannot read the workspace")(e));
        }
        Ok(hasher.finalize().to_hex().to_string())
    }

    /// What every regular file looks like now, to find what a run changes.
    pub(crate) fn state(&self) -> Result<FileStates, Error> {
        let mut states = HashMap::new();
        walk(&self.dir()?, Path::new(""), &mut |path, meta| {
            if meta.is_file() {
                states.insert(path.to_path_buf(), FileState::of(meta));
            }
        })
        .map_err(io_error("cannot list the workspace"))?;
        Ok(FileStates(states))
    }

    /// The regular files created or changed since `before`, hashed, in path order. Files
    /// larger than `max_hashed` are listed without a hash.
    pub(crate) fn changes(
        &self,
        before: &FileStates,
        max_hashed: u64,
    ) -> Result<Vec<OutputFile>, Error> {
        let dir = self.dir()?;
        let mut changed = Vec::new();
        walk(&dir, Path::new(""), &mut |path, meta| {
            if meta.is_file() && before.0.get(path) != Some(&FileState::of(meta)) {
                changed.push((path.to_path_buf(), meta.len()));
            }
        })
        .map_err(io_error("cannot list the workspace"))?;
        changed.sort();
        changed
            .into_iter()
            .map(|(path, size)| {
                let blake3 = if size <= max_hashed {
                    let file = dir
                        .open(&path)
                        .map_err(io_error(format!("cannot read {}", path.display())))?;
                    let mut hasher = blake3::Hasher::new();
                    hasher
                        .update_reader(file.into_std().take(max_hashed))
                        .map_err(io_error(format!("cannot read {}", path.display())))?;
                    Some(hasher.finalize().to_hex().to_string())
                } else {
                    None
                };
                Ok(OutputFile {
                    path: slash(&path),
                    size,
                    blake3,
                })
            })
            .collect()
    }

    /// Copies `files` (from [`Outcome::files`](crate::Outcome::files)) out to `out`,
    /// keeping their relative paths. Files without a hash are skipped.
    pub fn copy_out(&self, files: &[OutputFile], out: &Path) -> Result<(), Error> {
        let dir = self.dir()?;
        for file in files.iter().filter(|f| f.blake3.is_some()) {
            let path = relative(&file.path)?;
            let target = out.join(&path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io_error(format!("cannot create {}", parent.display())))?;
            }
            let mut source = dir
                .open(&path)
                .map_err(io_error(format!("cannot read {}", file.path)))?
                .into_std();
            let mut sink = std::fs::File::create(&target)
                .map_err(io_error(format!("cannot write {}", target.display())))?;
            std::io::copy(&mut source, &mut sink)
                .map_err(io_error(format!("cannot write {}", target.display())))?;
        }
        Ok(())
    }
}

/// Size, modification time and inode of a file: a run that changes a file changes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileState {
    size: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl FileState {
    fn of(meta: &cap_std::fs::Metadata) -> FileState {
        use cap_std::fs::MetadataExt;
        FileState {
            size: meta.len(),
            modified: meta.modified().ok().map(|t| t.into_std()),
            inode: meta.ino(),
        }
    }
}

/// The regular files of a workspace and their states.
pub(crate) struct FileStates(HashMap<PathBuf, FileState>);

/// Calls `visit` with every entry under `at` (relative to `dir`), never following links.
fn walk(
    dir: &cap_std::fs::Dir,
    at: &Path,
    visit: &mut dyn FnMut(&Path, &cap_std::fs::Metadata),
) -> std::io::Result<()> {
    let entries = if at.as_os_str().is_empty() {
        dir.entries()?
    } else {
        dir.read_dir(at)?
    };
    let mut names: Vec<_> = entries
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let path = at.join(&name);
        let meta = dir.symlink_metadata(&path)?;
        visit(&path, &meta);
        if meta.is_dir() {
            walk(dir, &path, visit)?;
        }
    }
    Ok(())
}

/// Copies host `source` to `target` in `dir`.
fn copy_in(dir: &cap_std::fs::Dir, source: &Path, target: &Path) -> Result<(), Error> {
    let read = |e| Error::ReadInput {
        path: source.to_path_buf(),
        source: e,
    };
    let meta = std::fs::symlink_metadata(source).map_err(read)?;
    let write = io_error(format!("cannot upload to {}", target.display()));
    if meta.is_symlink() {
        let link = std::fs::read_link(source).map_err(read)?;
        return dir.symlink(link, target).map_err(write);
    }
    if meta.is_dir() {
        match dir.create_dir(target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(write(e)),
        }
        let mut names: Vec<_> = std::fs::read_dir(source)
            .map_err(read)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(read)?;
        names.sort();
        for name in names {
            copy_in(dir, &source.join(&name), &target.join(&name))?;
        }
        return Ok(());
    }
    if !meta.is_file() {
        return Err(Error::InvalidInput(format!(
            "{} is not a regular file, directory or symlink; only those can be uploaded",
            source.display()
        )));
    }
    let mut from = std::fs::File::open(source).map_err(read)?;
    let mut to = dir.create(target).map_err(write)?.into_std();
    std::io::copy(&mut from, &mut to)
        .map(drop)
        .map_err(io_error(format!("cannot upload {}", source.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_paths_stay_inside() {
        assert_eq!(relative("a/b.txt").unwrap(), PathBuf::from("a/b.txt"));
        assert_eq!(relative("/workspace/a").unwrap(), PathBuf::from("a"));
        assert_eq!(relative("./a//b").unwrap(), PathBuf::from("a/b"));
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "/workspace",
            "",
            "/workspacex/a",
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
