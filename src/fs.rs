//! What a sandbox can see of the host filesystem: nothing but explicit mounts.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

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

/// Where per-run directories go, for the whole process: [`crate::Config::scratch`] of the
/// first [`Dvm`](crate::Dvm) made (until then, and without one, the system temp directory). A memory-backed directory
/// (`DVM_SCRATCH=/dev/shm`) makes creating and removing a run's directories several times
/// cheaper than a disk filesystem with discard, but whatever guests write there (up to each
/// run's disk quota) is held in RAM, so it is opt-in.
static SCRATCH_BASE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Chooses the scratch base unless one was chosen already (emptied run directories are
/// reused process-wide, so the base cannot change once runs have used it).
pub(crate) fn set_scratch_base(dir: Option<&Path>) {
    let _ = SCRATCH_BASE.get_or_init(|| dir.map_or_else(std::env::temp_dir, Path::to_path_buf));
}

/// The scratch base in use: the chosen one, else the system temp directory.
pub(crate) fn scratch_base() -> PathBuf {
    SCRATCH_BASE
        .get()
        .cloned()
        .unwrap_or_else(std::env::temp_dir)
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
    empty: PathBuf,
    /// Left on disk when dropped.
    keep: std::sync::atomic::AtomicBool,
}

/// Emptied run directories ready for reuse.
static EMPTIED: std::sync::Mutex<Vec<tempfile::TempDir>> = std::sync::Mutex::new(Vec::new());
/// Emptied run directories kept at most.
const MAX_EMPTIED: usize = 64;

/// Removes everything inside `dir` (never following links, at any depth), then checks it
/// is empty.
fn empty_dir(dir: &Path) -> bool {
    let Ok(fd) = open_dir(dir) else {
        return false;
    };
    if let Err(e) = empty_dir_at(fd.as_fd()) {
        tracing::debug!("cannot empty {}: {e}", dir.display());
        return false;
    }
    names_of(fd.as_fd()).is_ok_and(|names| names.is_empty())
}

/// Removes a run directory that is not reused.
fn discard(dir: tempfile::TempDir) {
    let path = dir.keep();
    if let Err(e) = remove_tree(&path) {
        tracing::warn!("cannot remove the run directory {}: {e}", path.display());
    }
}

/// Removes the emptied run directories kept for reuse. The CLI calls this before it exits
/// (statics are never dropped, so they would stay behind in the scratch directory); a
/// long-running embedder may call it whenever it wants them gone.
pub fn remove_idle_scratch() {
    let idle = std::mem::take(
        &mut *EMPTIED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for dir in idle {
        discard(dir);
    }
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
                return;
            }
        }
        // Not reusable: removed whole, iteratively (the TempDir's own removal recurses
        // and holds a descriptor per level).
        discard(dir);
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
                let fail = |source: std::io::Error| {
                    Error::from(crate::error::HostError::Io {
                        action: "create a run directory".into(),
                        source,
                    })
                };
                let dir = tempfile::Builder::new()
                    .prefix("dvm-run-")
                    .tempdir_in(scratch_base())
                    .map_err(fail)?;
                std::fs::create_dir(dir.path().join("workspace")).map_err(fail)?;
                std::fs::create_dir(dir.path().join("tmp")).map_err(fail)?;
                std::fs::create_dir(dir.path().join("empty")).map_err(fail)?;
                dir
            }
        };
        Ok(Scratch {
            workspace: dir.path().join("workspace"),
            tmp: dir.path().join("tmp"),
            empty: dir.path().join("empty"),
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

    /// An empty directory, mounted read-only where a run has nothing to put (so every run of
    /// a runtime has the same mounts in the same order, as its snapshots were made with).
    pub(crate) fn empty(&self) -> &Path {
        &self.empty
    }

    /// Writes `bytes` to `name` directly inside the directory. `name` must be a plain file
    /// name.
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(Error::InvalidLimits(format!(
                "`{name}` is not a plain file name for the script"
            )));
        }
        use std::io::Write;
        // Never through a link: a reused or prestarted directory may hold one.
        open_dir(&self.workspace)
            .and_then(|dir| create_file_at(dir.as_fd(), OsStr::new(name), false))
            .and_then(|mut file| file.write_all(bytes))
            .map_err(|source| {
                crate::error::HostError::Io {
                    action: "write the script".into(),
                    source,
                }
                .into()
            })
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

// Host-side file operations that never follow a link and never need a whole path: every
// step is `openat`-relative to a directory descriptor, so a tree deeper than PATH_MAX can
// be walked and removed, and a symlink a guest planted is seen as what it is (a link),
// never as what it points at.

/// Directory descriptors a walk or removal holds at most at once, however deep the tree.
/// Levels above the deepest few are closed and reopened through `..` (checked to be the
/// same directory) when the walk climbs back.
const MAX_HELD_DIRS: usize = 16;

/// Opens a directory named by the host user (the path is theirs, so links in it are theirs
/// to follow).
pub(crate) fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the directory `name` in `parent`; a symlink there is refused (`ELOOP`), whatever
/// it points at.
pub(crate) fn open_subdir(parent: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// A new descriptor for the directory `dir` itself.
pub(crate) fn reopen_dir(dir: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    open_subdir(dir, OsStr::new("."))
}

/// What is at `name` in `parent`, without following a link there.
pub(crate) fn stat_at(parent: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<Stat> {
    Ok(rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

pub(crate) fn file_type(stat: &Stat) -> FileType {
    FileType::from_raw_mode(stat.st_mode)
}

/// Opens the regular file `name` in `parent` for reading. A link, FIFO, device or
/// directory there is refused without blocking or following it.
pub(crate) fn open_file_at(parent: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<std::fs::File> {
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if file_type(&rustix::fs::fstat(&fd)?) != FileType::RegularFile {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is not a regular file",
        ));
    }
    Ok(std::fs::File::from(fd))
}

/// Creates (or truncates) the regular file `name` in `parent` for writing; a link there is
/// refused (`ELOOP`), never written through.
pub(crate) fn create_file_at(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    exclusive: bool,
) -> std::io::Result<std::fs::File> {
    let mut flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    flags |= if exclusive {
        OFlags::EXCL
    } else {
        OFlags::TRUNC
    };
    let fd = rustix::fs::openat(parent, name, flags, Mode::from_raw_mode(0o666))?;
    if file_type(&rustix::fs::fstat(&fd)?) != FileType::RegularFile {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is not a regular file",
        ));
    }
    Ok(std::fs::File::from(fd))
}

/// Creates the directory `name` in `parent` unless something is there already.
pub(crate) fn make_dir_at(parent: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<()> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o777)) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether an error means a link (or a non-directory) stood where a directory was needed.
pub(crate) fn is_link_refusal(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(code) if code == Errno::LOOP.raw_os_error() || code == Errno::NOTDIR.raw_os_error()
    )
}

// `stat` field types differ between targets.
#[allow(clippy::unnecessary_cast)]
fn identity(stat: &Stat) -> (u64, u64) {
    (stat.st_dev as u64, stat.st_ino as u64)
}

fn moved() -> std::io::Error {
    std::io::Error::other("the directory tree was moved while dvm walked it")
}

/// One directory entry of a walk: `name` in the directory `parent`.
pub(crate) struct WalkEntry<'a> {
    pub parent: BorrowedFd<'a>,
    pub name: &'a OsStr,
    pub stat: &'a Stat,
}

/// A directory being walked or removed.
struct Level<T> {
    /// `None` for levels closed to bound the descriptors held.
    fd: Option<OwnedFd>,
    id: (u64, u64),
    context: T,
    /// Names still to visit, last first.
    pending: Vec<OsString>,
}

/// The stack of a walk: the deepest [`MAX_HELD_DIRS`] levels hold their descriptors
/// (`levels[held..]`), the ones above are reopened through `..` on the way back up.
struct Levels<T> {
    levels: Vec<Level<T>>,
    held: usize,
}

impl<T> Levels<T> {
    fn push(&mut self, level: Level<T>) {
        self.levels.push(level);
        if self.levels.len() - self.held > MAX_HELD_DIRS {
            self.levels[self.held].fd = None;
            self.held += 1;
        }
    }

    /// Pops the deepest level; the new deepest one holds its descriptor again.
    fn pop(&mut self) -> std::io::Result<Option<Level<T>>> {
        let Some(done) = self.levels.pop() else {
            return Ok(None);
        };
        if let Some(parent) = self.levels.last_mut()
            && parent.fd.is_none()
        {
            let below = done.fd.as_ref().ok_or_else(moved)?;
            let up = open_subdir(below.as_fd(), OsStr::new(".."))?;
            if identity(&rustix::fs::fstat(&up)?) != parent.id {
                return Err(moved());
            }
            parent.fd = Some(up);
            self.held = self.levels.len() - 1;
        }
        Ok(Some(done))
    }
}

/// The names in `dir`, sorted, last first.
fn names_of(dir: BorrowedFd<'_>) -> std::io::Result<Vec<OsString>> {
    use std::os::unix::ffi::OsStrExt;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    names.sort_unstable_by(|a, b| b.cmp(a));
    Ok(names)
}

/// Visits every entry under the directory `root`, depth first in name order, never
/// following a link. `visit` gets the context of the entry's directory and returns the
/// context to descend with, or `None` to leave a directory's contents out. Iterative
/// (no recursion) and holding at most [`MAX_HELD_DIRS`] descriptors at any depth.
pub(crate) fn walk<T>(
    root: BorrowedFd<'_>,
    context: T,
    visit: &mut dyn FnMut(&T, &WalkEntry<'_>) -> Option<T>,
) -> std::io::Result<()> {
    let fd = reopen_dir(root)?;
    let id = identity(&rustix::fs::fstat(&fd)?);
    let pending = names_of(fd.as_fd())?;
    let mut levels = Levels {
        levels: Vec::new(),
        held: 0,
    };
    levels.push(Level {
        fd: Some(fd),
        id,
        context,
        pending,
    });
    while let Some(top) = levels.levels.last_mut() {
        let Some(name) = top.pending.pop() else {
            levels.pop()?;
            continue;
        };
        let fd = top.fd.as_ref().ok_or_else(moved)?;
        let stat = match stat_at(fd.as_fd(), &name) {
            Ok(stat) => stat,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let entry = WalkEntry {
            parent: fd.as_fd(),
            name: &name,
            stat: &stat,
        };
        let Some(context) = visit(&top.context, &entry) else {
            continue;
        };
        if file_type(&stat) != FileType::Directory {
            continue;
        }
        let child = match open_subdir(fd.as_fd(), &name) {
            Ok(child) => child,
            // Gone or replaced since it was looked at: nothing to descend into.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || is_link_refusal(&e) => continue,
            Err(e) => return Err(e),
        };
        let id = identity(&rustix::fs::fstat(&child)?);
        if id != identity(&stat) {
            continue;
        }
        let pending = names_of(child.as_fd())?;
        levels.push(Level {
            fd: Some(child),
            id,
            context,
            pending,
        });
    }
    Ok(())
}

/// Unlinks every non-directory in `dir` and returns the subdirectories' names, last first.
fn clear_files(dir: BorrowedFd<'_>) -> std::io::Result<Vec<OsString>> {
    let mut subdirs = Vec::new();
    for name in names_of(dir)? {
        let is_dir = match stat_at(dir, &name) {
            Ok(stat) => file_type(&stat) == FileType::Directory,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if is_dir {
            subdirs.push(name);
            continue;
        }
        match rustix::fs::unlinkat(dir, &name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(Errno::ISDIR) => subdirs.push(name),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(subdirs)
}

/// Removes everything inside the directory `dir`, never following a link. Iterative and
/// holding at most [`MAX_HELD_DIRS`] descriptors, so neither the depth of the tree nor
/// `ulimit -n` stops it.
pub(crate) fn empty_dir_at(dir: BorrowedFd<'_>) -> std::io::Result<()> {
    let fd = reopen_dir(dir)?;
    let id = identity(&rustix::fs::fstat(&fd)?);
    let pending = clear_files(fd.as_fd())?;
    let mut levels = Levels {
        levels: Vec::new(),
        held: 0,
    };
    levels.push(Level {
        fd: Some(fd),
        id,
        context: OsString::new(),
        pending,
    });
    while let Some(top) = levels.levels.last_mut() {
        let fd = top.fd.as_ref().ok_or_else(moved)?;
        if let Some(name) = top.pending.pop() {
            let child = match open_subdir(fd.as_fd(), &name) {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                // Replaced by a non-directory since it was listed: unlink that.
                Err(e) if is_link_refusal(&e) => {
                    match rustix::fs::unlinkat(fd.as_fd(), &name, AtFlags::empty()) {
                        Ok(()) | Err(Errno::NOENT) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e),
            };
            let id = identity(&rustix::fs::fstat(&child)?);
            let pending = clear_files(child.as_fd())?;
            levels.push(Level {
                fd: Some(child),
                id,
                context: name,
                pending,
            });
            continue;
        }
        let Some(done) = levels.pop()? else {
            break;
        };
        let Some(parent) = levels.levels.last() else {
            break;
        };
        let parent = parent.fd.as_ref().ok_or_else(moved)?;
        match rustix::fs::unlinkat(parent.as_fd(), &done.context, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Removes `name` in `parent`, a whole tree if it is a directory, never following a link.
pub(crate) fn remove_at(parent: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<()> {
    let stat = stat_at(parent, name)?;
    if file_type(&stat) != FileType::Directory {
        return Ok(rustix::fs::unlinkat(parent, name, AtFlags::empty())?);
    }
    let dir = open_subdir(parent, name)?;
    empty_dir_at(dir.as_fd())?;
    drop(dir);
    Ok(rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?)
}

/// Removes the host directory `path` and everything in it (see [`remove_at`]).
pub(crate) fn remove_tree(path: &Path) -> std::io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "refusing to remove a root directory",
        ));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    remove_at(open_dir(parent)?.as_fd(), name)
}

/// Zeros standing in for a hole while hashing.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Reads the first `size` bytes of `from` extent by extent (`SEEK_DATA`/`SEEK_HOLE`):
/// only data is read (and written to `to` at the same offsets, which must start empty);
/// holes are skipped on disk and hashed as zeros. Memory stays at one buffer; a sparse GiB
/// costs what its data costs plus hashing its zeros. Returns the blake3 of the `size` bytes.
pub(crate) fn copy_extents(
    from: &std::fs::File,
    to: Option<&std::fs::File>,
    size: u64,
) -> std::io::Result<blake3::Hash> {
    use rustix::fs::SeekFrom;
    use std::os::unix::fs::FileExt;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut position = 0u64;
    while position < size {
        let data = match rustix::fs::seek(from, SeekFrom::Data(position)) {
            Ok(data) => data.clamp(position, size),
            // Only a hole up to the end.
            Err(Errno::NXIO) => size,
            // A filesystem without extent queries: read it all.
            Err(_) => position,
        };
        let mut zeros = data - position;
        while zeros > 0 {
            let n = zeros.min(ZEROS.len() as u64) as usize;
            hasher.update(&ZEROS[..n]);
            zeros -= n as u64;
        }
        if data >= size {
            break;
        }
        let end = match rustix::fs::seek(from, SeekFrom::Hole(data)) {
            Ok(hole) if hole > data => hole.min(size),
            _ => size,
        };
        let mut offset = data;
        while offset < end {
            let want = (end - offset).min(buffer.len() as u64) as usize;
            let n = match from.read_at(&mut buffer[..want], offset) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was being read",
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buffer[..n]);
            if let Some(to) = to {
                to.write_all_at(&buffer[..n], offset)?;
            }
            offset += n as u64;
        }
        position = end;
    }
    if let Some(to) = to {
        to.set_len(size)?;
    }
    Ok(hasher.finalize())
}
