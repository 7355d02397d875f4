//! Filesystem quotas, enforced while the guest runs: bytes written to files, files created,
//! files open at once.
//!
//! The WASI p1 calls that write, create or open go through wrappers that check the run's
//! [`FileGuard`] and then call wasmtime-wasi's own implementation of the call, so paths,
//! permissions (read-only mounts) and errno values stay wasmtime-wasi's. A call that would
//! cross a quota stops the guest (`limit: "disk"` or `"files"`) before anything is written.
//! Writes to stdout and stderr are not file writes: their caps are the output caps.

use wasmtime::{AsContextMut, Caller, Extern, Linker};
use wasmtime_wasi::p1::wasi_snapshot_preview1 as p1;
use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1 as _;

use super::{SandboxState, Stop};
use crate::limits::Limits;

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_NOENT: i32 = 44;
const OFLAGS_CREAT: i32 = 1;
const RIGHTS_FD_READ: i64 = 1 << 1;

/// A run's file quotas and what it has used of them.
#[derive(Debug)]
pub(crate) struct FileGuard {
    disk_bytes: u64,
    files: u64,
    open_files: u64,
    /// Bytes written to files so far.
    pub(crate) written: u64,
    /// Files, directories and links created so far.
    pub(crate) created: u64,
    /// Files the guest opened and has not closed.
    open: u64,
    /// Descriptors that are stdin, stdout or stderr (renumbering can move them).
    stdio: Vec<i32>,
}

impl FileGuard {
    pub(crate) fn new(limits: &Limits) -> Self {
        FileGuard {
            disk_bytes: limits.disk_bytes,
            files: limits.files,
            open_files: limits.open_files,
            written: 0,
            created: 0,
            open: 0,
            stdio: vec![0, 1, 2],
        }
    }

    /// Takes a new run's quotas, keeping what was counted (a prestarted sandbox).
    pub(crate) fn rebind(&mut self, limits: &Limits) {
        self.disk_bytes = limits.disk_bytes;
        self.files = limits.files;
        self.open_files = limits.open_files;
        self.written = 0;
        self.created = 0;
    }

    fn is_stdio(&self, fd: i32) -> bool {
        self.stdio.contains(&fd)
    }

    fn check_write(&self, bytes: u64) -> Result<(), Stop> {
        if self.written.saturating_add(bytes) > self.disk_bytes {
            return Err(Stop::Disk(self.disk_bytes));
        }
        Ok(())
    }

    fn check_create(&self) -> Result<(), Stop> {
        if self.created >= self.files {
            return Err(Stop::FilesCreated(self.files));
        }
        Ok(())
    }

    fn check_open(&self) -> Result<(), Stop> {
        if self.open >= self.open_files {
            return Err(Stop::FilesOpen(self.open_files));
        }
        Ok(())
    }
}

/// Calls wasmtime-wasi's own implementation of a p1 function with the guest's memory, as
/// its generated host function does.
macro_rules! stock {
    ($caller:expr, $func:ident($($arg:expr),* $(,)?)) => {{
        let fuel = $caller.as_context_mut().hostcall_fuel();
        let Some(Extern::Memory(memory)) = $caller.get_export("memory") else {
            wasmtime::bail!("the guest exports no memory");
        };
        let (data, state) = memory.data_and_store_mut(&mut $caller);
        state.wasi.set_hostcall_fuel(fuel);
        let mut guest = wiggle::GuestMemory::Unshared(data);
        wasmtime_wasi::runtime::in_tokio(p1::$func(&mut state.wasi, &mut guest, $($arg),*))
    }};
}

/// Reads a little-endian u32 at `ptr` in the guest's memory; `None` when out of bounds.
fn read_u32(caller: &mut Caller<'_, SandboxState>, ptr: i32) -> Option<u32> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return None;
    };
    let start = usize::try_from(ptr as u32).ok()?;
    let bytes = memory.data(&*caller).get(start..start.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Total length of an iovec array in the guest's memory; 0 when it is out of bounds (the
/// stock call then fails with `EFAULT` and writes nothing).
fn iovec_total(caller: &mut Caller<'_, SandboxState>, iovs: i32, count: i32) -> u64 {
    let mut total = 0u64;
    for i in 0..count.max(0) {
        let at = (iovs as u32)
            .wrapping_add((i as u32).wrapping_mul(8))
            .wrapping_add(4);
        match read_u32(caller, at as i32) {
            Some(len) => total = total.saturating_add(u64::from(len)),
            None => return 0,
        }
    }
    total
}

/// Adds the byte count a successful write stored at `nwritten` to the bytes written.
fn count_written(caller: &mut Caller<'_, SandboxState>, nwritten: i32) {
    let wrote = read_u32(caller, nwritten).unwrap_or(0);
    let files = &mut caller.data_mut().files;
    files.written = files.written.saturating_add(u64::from(wrote));
}

fn fd_write(
    mut caller: Caller<'_, SandboxState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    let counted = !caller.data().files.is_stdio(fd);
    if counted {
        let bytes = iovec_total(&mut caller, iovs, iovs_len);
        caller.data().files.check_write(bytes)?;
    }
    let errno = stock!(caller, fd_write(fd, iovs, iovs_len, nwritten))?;
    if counted && errno == ERRNO_SUCCESS {
        count_written(&mut caller, nwritten);
    }
    Ok(errno)
}

fn fd_pwrite(
    mut caller: Caller<'_, SandboxState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    offset: i64,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    let bytes = iovec_total(&mut caller, iovs, iovs_len);
    caller.data().files.check_write(bytes)?;
    let errno = stock!(caller, fd_pwrite(fd, iovs, iovs_len, offset, nwritten))?;
    if errno == ERRNO_SUCCESS {
        count_written(&mut caller, nwritten);
    }
    Ok(errno)
}

/// Setting a size counts the whole new size: growing a file by truncation reserves it.
fn fd_filestat_set_size(
    mut caller: Caller<'_, SandboxState>,
    fd: i32,
    size: i64,
) -> wasmtime::Result<i32> {
    let size = size.max(0) as u64;
    caller.data().files.check_write(size)?;
    let errno = stock!(caller, fd_filestat_set_size(fd, size as i64))?;
    if errno == ERRNO_SUCCESS {
        let files = &mut caller.data_mut().files;
        files.written = files.written.saturating_add(size);
    }
    Ok(errno)
}

#[allow(clippy::too_many_arguments)]
fn path_open(
    mut caller: Caller<'_, SandboxState>,
    dirfd: i32,
    dirflags: i32,
    path: i32,
    path_len: i32,
    oflags: i32,
    rights_base: i64,
    rights_inheriting: i64,
    fdflags: i32,
    fd_out: i32,
) -> wasmtime::Result<i32> {
    caller.data().files.check_open()?;
    let creates = oflags & OFLAGS_CREAT != 0;
    // Whether the open would create the file: look first, through the same call without
    // any flags (its descriptor, written where the real one will be, is closed at once).
    let mut creating = false;
    if creates {
        let probe = stock!(
            caller,
            path_open(
                dirfd,
                dirflags,
                path,
                path_len,
                0,
                RIGHTS_FD_READ,
                0,
                0,
                fd_out
            )
        )?;
        if probe == ERRNO_SUCCESS {
            if let Some(fd) = read_u32(&mut caller, fd_out) {
                stock!(caller, fd_close(fd as i32))?;
            }
        } else if probe == ERRNO_NOENT {
            caller.data().files.check_create()?;
            creating = true;
        }
    }
    let errno = stock!(
        caller,
        path_open(
            dirfd,
            dirflags,
            path,
            path_len,
            oflags,
            rights_base,
            rights_inheriting,
            fdflags,
            fd_out
        )
    )?;
    if errno == ERRNO_SUCCESS {
        let files = &mut caller.data_mut().files;
        files.open += 1;
        if creating {
            files.created += 1;
        }
    }
    Ok(errno)
}

fn path_create_directory(
    mut caller: Caller<'_, SandboxState>,
    dirfd: i32,
    path: i32,
    path_len: i32,
) -> wasmtime::Result<i32> {
    caller.data().files.check_create()?;
    let errno = stock!(caller, path_create_directory(dirfd, path, path_len))?;
    if errno == ERRNO_SUCCESS {
        caller.data_mut().files.created += 1;
    }
    Ok(errno)
}

fn path_symlink(
    mut caller: Caller<'_, SandboxState>,
    old_path: i32,
    old_len: i32,
    dirfd: i32,
    new_path: i32,
    new_len: i32,
) -> wasmtime::Result<i32> {
    caller.data().files.check_create()?;
    let errno = stock!(
        caller,
        path_symlink(old_path, old_len, dirfd, new_path, new_len)
    )?;
    if errno == ERRNO_SUCCESS {
        caller.data_mut().files.created += 1;
    }
    Ok(errno)
}

#[allow(clippy::too_many_arguments)]
fn path_link(
    mut caller: Caller<'_, SandboxState>,
    old_fd: i32,
    old_flags: i32,
    old_path: i32,
    old_len: i32,
    new_fd: i32,
    new_path: i32,
    new_len: i32,
) -> wasmtime::Result<i32> {
    caller.data().files.check_create()?;
    let errno = stock!(
        caller,
        path_link(
            old_fd, old_flags, old_path, old_len, new_fd, new_path, new_len
        )
    )?;
    if errno == ERRNO_SUCCESS {
        caller.data_mut().files.created += 1;
    }
    Ok(errno)
}

fn fd_close(mut caller: Caller<'_, SandboxState>, fd: i32) -> wasmtime::Result<i32> {
    let errno = stock!(caller, fd_close(fd))?;
    if errno == ERRNO_SUCCESS {
        let files = &mut caller.data_mut().files;
        files.open = files.open.saturating_sub(1);
        files.stdio.retain(|&stdio| stdio != fd);
    }
    Ok(errno)
}

fn fd_renumber(mut caller: Caller<'_, SandboxState>, from: i32, to: i32) -> wasmtime::Result<i32> {
    let errno = stock!(caller, fd_renumber(from, to))?;
    if errno == ERRNO_SUCCESS {
        let files = &mut caller.data_mut().files;
        // `to` was closed and now is what `from` was.
        files.open = files.open.saturating_sub(1);
        let moved_stdio = files.is_stdio(from);
        files.stdio.retain(|&fd| fd != from && fd != to);
        if moved_stdio {
            files.stdio.push(to);
        }
    }
    Ok(errno)
}

/// Replaces the p1 calls that write, create or open with the quota-checking wrappers.
pub(crate) fn add_to_linker(linker: &mut Linker<SandboxState>) -> wasmtime::Result<()> {
    const WASI_P1: &str = "wasi_snapshot_preview1";
    linker.func_wrap(WASI_P1, "fd_write", fd_write)?;
    linker.func_wrap(WASI_P1, "fd_pwrite", fd_pwrite)?;
    linker.func_wrap(WASI_P1, "fd_filestat_set_size", fd_filestat_set_size)?;
    linker.func_wrap(WASI_P1, "path_open", path_open)?;
    linker.func_wrap(WASI_P1, "path_create_directory", path_create_directory)?;
    linker.func_wrap(WASI_P1, "path_symlink", path_symlink)?;
    linker.func_wrap(WASI_P1, "path_link", path_link)?;
    linker.func_wrap(WASI_P1, "fd_close", fd_close)?;
    linker.func_wrap(WASI_P1, "fd_renumber", fd_renumber)?;
    Ok(())
}
