//! Filesystem quotas and the descriptor calls, enforced while the guest runs: the disk a
//! run's files occupy, files created, files open at once.
//!
//! The WASI p1 calls that write, resize, create, open, close or renumber go through wrappers
//! that check the run's [`FileGuard`] and then call wasmtime-wasi's own implementation of
//! the call, so paths, permissions (read-only mounts) and errno values stay wasmtime-wasi's.
//! A call that would cross a quota stops the guest (`limit: "disk"` or `"files"`) before
//! anything is written.
//!
//! **Disk** is charged by how far a call moves the end of a regular file: a write, `pwrite`,
//! append, `fd_filestat_set_size` or `fd_allocate` that leaves a file `n` bytes longer than
//! it was costs `n`, holes included (one byte at offset 1 GiB costs 1 GiB). Writing inside
//! a file costs nothing; shrinking refunds nothing, so truncate-then-extend loops pay for
//! every extension (the count is cumulative over the run, an upper bound of what the run
//! occupies). The check before the call uses the end the call can reach; the charge after
//! it is the growth measured on the file, so the two cannot disagree in the guest's favour.
//! Writes to stdout and stderr are not file writes: their caps are the output caps.
//!
//! **Open files** are counted as the set of descriptors the guest opened with `path_open`
//! and has not closed: `fd_close` and `fd_renumber` update the set from what the stock call
//! did (renumbering onto an open descriptor closes it; renumbering a descriptor onto itself
//! or from or to a bad one changes nothing), so the count cannot drift from the table.
//!
//! Opening anything but a regular file, a directory or a symlink (a FIFO, a device, a
//! socket: opens that can block the host thread) is refused with `EACCES`. Nothing here
//! waits on the disk: `fd_sync`/`fd_datasync` check their descriptor and return, and the
//! `SYNC`/`DSYNC`/`RSYNC` open flags are dropped (a sandbox promises no durability).

use std::collections::HashSet;

use wasmtime::{AsContextMut, Caller, Linker, Memory};
use wasmtime_wasi::p1::types;
use wasmtime_wasi::p1::wasi_snapshot_preview1 as p1;
use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1 as _;
use wasmtime_wasi::runtime::in_tokio;

use super::iovec::{
    self, ERRNO_FAULT, ERRNO_SUCCESS, Iovecs, Op, guest_memory, read_u32, transfer, write_u32,
};
use super::{SandboxState, Stop};
use crate::limits::Limits;

/// Bytes of guest strings one stock call may copy to the host (the "hostcall fuel" of every
/// sandbox's store): two paths of Linux's `PATH_MAX` with room to spare. A longer path
/// fails with `ENOMEM` before it is copied or resolved, so resolving a path costs the host
/// a bounded number of steps.
pub(crate) const PATH_BYTES: usize = 16 << 10;

const ERRNO_ACCES: i32 = 2;
const ERRNO_BADF: i32 = 8;
const OFLAGS_CREAT: i32 = 1;
/// `DSYNC | RSYNC | SYNC`.
const FDFLAGS_SYNCS: i32 = 2 | 8 | 16;

/// A run's file quotas and what it has used of them.
#[derive(Debug)]
pub(crate) struct FileGuard {
    disk_bytes: u64,
    files: u64,
    open_files: u64,
    /// Bytes by which the ends of files moved out so far (see the module's docs).
    pub(crate) grown: u64,
    /// Files, directories and links created so far.
    pub(crate) created: u64,
    /// Descriptors the guest opened and has not closed (preopens and stdio are not).
    open: HashSet<u32>,
}

impl FileGuard {
    pub(crate) fn new(limits: &Limits) -> Self {
        FileGuard {
            disk_bytes: limits.disk_bytes,
            files: limits.files,
            open_files: limits.open_files,
            grown: 0,
            created: 0,
            open: HashSet::new(),
        }
    }

    /// Takes a new run's quotas, keeping the descriptors still open (a prestarted sandbox,
    /// a session's next turn).
    pub(crate) fn rebind(&mut self, limits: &Limits) {
        self.disk_bytes = limits.disk_bytes;
        self.files = limits.files;
        self.open_files = limits.open_files;
        self.grown = 0;
        self.created = 0;
    }

    /// Descriptors open now.
    pub(crate) fn open_count(&self) -> u64 {
        self.open.len() as u64
    }

    fn check_growth(&self, bytes: u64) -> Result<(), Stop> {
        if self.grown.saturating_add(bytes) > self.disk_bytes {
            return Err(Stop::Disk(self.disk_bytes));
        }
        Ok(())
    }

    /// Counts growth that happened; past the quota the guest stops.
    fn charge(&mut self, bytes: u64) -> Result<(), Stop> {
        self.grown = self.grown.saturating_add(bytes);
        if self.grown > self.disk_bytes {
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
        if self.open_count() >= self.open_files {
            return Err(Stop::FilesOpen(self.open_files));
        }
        Ok(())
    }

    fn opened(&mut self, fd: u32) {
        self.open.insert(fd);
    }

    fn closed(&mut self, fd: u32) {
        self.open.remove(&fd);
    }

    /// What a successful `fd_renumber(from, to)` did to the table.
    fn renumbered(&mut self, from: u32, to: u32) {
        if from == to {
            return;
        }
        self.open.remove(&to);
        if self.open.remove(&from) {
            self.open.insert(to);
        }
    }
}

/// Calls wasmtime-wasi's own implementation of a p1 function with the guest's memory, as
/// its generated host function does.
macro_rules! stock {
    ($caller:expr, $func:ident($($arg:expr),* $(,)?)) => {{
        let fuel = $caller.as_context_mut().hostcall_fuel();
        let Some(memory) = guest_memory(&mut $caller) else {
            wasmtime::bail!("the guest exports no memory");
        };
        let (data, state) = memory.data_and_store_mut(&mut $caller);
        state.wasi.set_hostcall_fuel(fuel);
        let mut guest = wiggle::GuestMemory::Unshared(data);
        in_tokio(p1::$func(&mut state.wasi, &mut guest, $($arg),*))
    }};
}

/// The errno of a failed stock call; a trap stays a trap.
fn errno(error: types::Error) -> wasmtime::Result<types::Errno> {
    error.downcast()
}

/// The size of `fd` when it is a regular file; `None` for anything else (stdio, a
/// directory, a bad descriptor: calls that write nothing to a file).
fn regular_size(caller: &mut Caller<'_, SandboxState>, fd: i32) -> wasmtime::Result<Option<u64>> {
    let wasi = &mut caller.data_mut().wasi;
    let mut none = wiggle::GuestMemory::Unshared(&mut []);
    match in_tokio(wasi.fd_filestat_get(&mut none, types::Fd::from(fd))) {
        Ok(stat) if matches!(stat.filetype, types::Filetype::RegularFile) => Ok(Some(stat.size)),
        Ok(_) => Ok(None),
        Err(error) => errno(error).map(|_| None),
    }
}

/// The offset a plain `fd_write` on `fd` starts at.
fn position(caller: &mut Caller<'_, SandboxState>, fd: i32) -> Option<u64> {
    let wasi = &mut caller.data_mut().wasi;
    let mut none = wiggle::GuestMemory::Unshared(&mut []);
    wasi.fd_tell(&mut none, types::Fd::from(fd)).ok()
}

/// Whether `fd` was opened to append (every write lands at the end).
fn appends(caller: &mut Caller<'_, SandboxState>, fd: i32) -> bool {
    let wasi = &mut caller.data_mut().wasi;
    let mut none = wiggle::GuestMemory::Unshared(&mut []);
    in_tokio(wasi.fd_fdstat_get(&mut none, types::Fd::from(fd)))
        .is_ok_and(|stat| stat.fs_flags.contains(types::Fdflags::APPEND))
}

/// Stops the guest before a call that could move the end of regular file `fd` (of `size`
/// bytes) out to `end` past its disk quota.
fn check_end(caller: &Caller<'_, SandboxState>, size: u64, end: u64) -> Result<(), Stop> {
    caller.data().files.check_growth(end.saturating_sub(size))
}

/// Charges what a call did to the size of regular file `fd`, which was `before` bytes.
fn charge_growth(
    caller: &mut Caller<'_, SandboxState>,
    fd: i32,
    before: u64,
) -> wasmtime::Result<()> {
    if let Some(after) = regular_size(caller, fd)? {
        caller
            .data_mut()
            .files
            .charge(after.saturating_sub(before))?;
    }
    Ok(())
}

/// Stores a transfer's byte count at `result`, or returns its errno.
fn finish(
    caller: &mut Caller<'_, SandboxState>,
    memory: Memory,
    moved: Result<u64, i32>,
    result: i32,
) -> i32 {
    match moved {
        Ok(bytes) => {
            let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
            if write_u32(memory.data_mut(caller), result, bytes) {
                ERRNO_SUCCESS
            } else {
                ERRNO_FAULT
            }
        }
        Err(errno) => errno,
    }
}

/// `fd_write` (`at: None`) and `fd_pwrite` (`at: Some(offset)`).
fn write(
    mut caller: Caller<'_, SandboxState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    at: Option<i64>,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    let Some(memory) = guest_memory(&mut caller) else {
        return Ok(ERRNO_FAULT);
    };
    let iovecs = match Iovecs::parse(memory.data(&caller), iovs, iovs_len) {
        Ok(iovecs) => iovecs,
        Err(errno) => return Ok(errno),
    };
    if read_u32(memory.data(&caller), nwritten).is_none() {
        return Ok(ERRNO_FAULT);
    }
    let before = regular_size(&mut caller, fd)?;
    match before {
        // Writing nothing moves no end, wherever it would start.
        Some(_) if iovecs.total() == 0 => {}
        Some(size) => {
            // Where the bytes land: the end when appending (Linux ignores a pwrite's offset
            // on a file opened to append), else the offset or the position.
            let start = if appends(&mut caller, fd) {
                size
            } else {
                match at {
                    Some(offset) => offset as u64,
                    None => position(&mut caller, fd).unwrap_or(size),
                }
            };
            check_end(&caller, size, start.saturating_add(iovecs.total()))?;
        }
        None => {}
    }
    let op = match at {
        Some(offset) => Op::Pwrite(offset as u64),
        None => Op::Write,
    };
    let moved = transfer(&mut caller, memory, fd, &iovecs, op)?;
    if let Some(size) = before {
        charge_growth(&mut caller, fd, size)?;
    }
    Ok(finish(&mut caller, memory, moved, nwritten))
}

fn fd_write(
    caller: Caller<'_, SandboxState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    write(caller, fd, iovs, iovs_len, None, nwritten)
}

fn fd_pwrite(
    caller: Caller<'_, SandboxState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    offset: i64,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    write(caller, fd, iovs, iovs_len, Some(offset), nwritten)
}

/// `fd_read` (`at: None`) and `fd_pread` (`at: Some(offset)`).
fn read(
    mut caller: Caller<'_, SandboxState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    at: Option<i64>,
    nread: i32,
) -> wasmtime::Result<i32> {
    let Some(memory) = guest_memory(&mut caller) else {
        return Ok(ERRNO_FAULT);
    };
    let iovecs = match Iovecs::parse(memory.data(&caller), iovs, iovs_len) {
        Ok(iovecs) => iovecs,
        Err(errno) => return Ok(errno),
    };
    if read_u32(memory.data(&caller), nread).is_none() {
        return Ok(ERRNO_FAULT);
    }
    let op = match at {
        Some(offset) => Op::Pread(offset as u64),
        None => Op::Read,
    };
    let moved = transfer(&mut caller, memory, fd, &iovecs, op)?;
    Ok(finish(&mut caller, memory, moved, nread))
}

fn fd_read(
    caller: Caller<'_, SandboxState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nread: i32,
) -> wasmtime::Result<i32> {
    read(caller, fd, iovs, iovs_len, None, nread)
}

fn fd_pread(
    caller: Caller<'_, SandboxState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    offset: i64,
    nread: i32,
) -> wasmtime::Result<i32> {
    read(caller, fd, iovs, iovs_len, Some(offset), nread)
}

/// Growing a file by setting its size costs the growth, holes included.
fn fd_filestat_set_size(
    mut caller: Caller<'_, SandboxState>,
    fd: i32,
    size: i64,
) -> wasmtime::Result<i32> {
    let before = regular_size(&mut caller, fd)?;
    if let Some(before) = before {
        check_end(&caller, before, size as u64)?;
    }
    let errno = stock!(caller, fd_filestat_set_size(fd, size))?;
    if let Some(before) = before {
        charge_growth(&mut caller, fd, before)?;
    }
    Ok(errno)
}

/// wasmtime-wasi answers `ENOTSUP`; wrapped all the same so an implementation that grows
/// files would be charged like `fd_filestat_set_size`.
fn fd_allocate(
    mut caller: Caller<'_, SandboxState>,
    fd: i32,
    offset: i64,
    len: i64,
) -> wasmtime::Result<i32> {
    let before = regular_size(&mut caller, fd)?;
    if let Some(before) = before {
        check_end(&caller, before, (offset as u64).saturating_add(len as u64))?;
    }
    // The stock `fd_allocate` is synchronous.
    let errno = {
        let Some(memory) = guest_memory(&mut caller) else {
            return Ok(ERRNO_FAULT);
        };
        let (data, state) = memory.data_and_store_mut(&mut caller);
        p1::fd_allocate(
            &mut state.wasi,
            &mut wiggle::GuestMemory::Unshared(data),
            fd,
            offset,
            len,
        )?
    };
    if let Some(before) = before {
        charge_growth(&mut caller, fd, before)?;
    }
    Ok(errno)
}

/// A file sync is checked (a file descriptor, else `EBADF`, as the stock call answers) but
/// not performed: flushing a large file to a slow disk can hold the host thread for
/// seconds, and a sandbox promises no durability.
fn fd_sync(mut caller: Caller<'_, SandboxState>, fd: i32) -> wasmtime::Result<i32> {
    let wasi = &mut caller.data_mut().wasi;
    let mut none = wiggle::GuestMemory::Unshared(&mut []);
    Ok(match wasi.fd_tell(&mut none, types::Fd::from(fd)) {
        Ok(_) => ERRNO_SUCCESS,
        Err(error) => {
            errno(error)?;
            ERRNO_BADF
        }
    })
}

/// The stock `fd_readdir` lists the whole directory and looks at every entry on each call;
/// it runs under a timer that drops it at the deadline, so a directory of many entries
/// cannot hold the host thread past it.
fn fd_readdir(
    mut caller: Caller<'_, SandboxState>,
    fd: i32,
    buf: i32,
    buf_len: i32,
    cookie: i64,
    bufused: i32,
) -> wasmtime::Result<i32> {
    iovec::in_time(caller.data())?;
    let deadline = tokio::time::Instant::from_std(caller.data().deadline);
    let fuel = caller.as_context_mut().hostcall_fuel();
    let Some(memory) = guest_memory(&mut caller) else {
        return Ok(ERRNO_FAULT);
    };
    let (data, state) = memory.data_and_store_mut(&mut caller);
    state.wasi.set_hostcall_fuel(fuel);
    let mut guest = wiggle::GuestMemory::Unshared(data);
    let listed = in_tokio(async {
        let call = p1::fd_readdir(
            &mut state.wasi,
            &mut guest,
            fd,
            buf,
            buf_len,
            cookie,
            bufused,
        );
        tokio::time::timeout_at(deadline, call).await
    });
    match listed {
        Ok(errno) => errno,
        // The run ends here, so the listing left half done is never seen.
        Err(_) => Err(Stop::Deadline.into()),
    }
}

/// What a path names before it is opened.
enum Found {
    /// A regular file, a directory or a symlink.
    Openable,
    /// A FIFO, a device or a socket.
    Special,
    Missing,
    /// The lookup failed otherwise; the stock open reports it.
    Unknown,
}

/// Looks at what `path` under `dirfd` names, following links as `dirflags` says, without
/// opening it.
fn look(
    caller: &mut Caller<'_, SandboxState>,
    dirfd: i32,
    dirflags: i32,
    path: i32,
    path_len: i32,
) -> wasmtime::Result<Found> {
    let Ok(flags) = types::Lookupflags::try_from(dirflags) else {
        return Ok(Found::Unknown);
    };
    let fuel = caller.as_context_mut().hostcall_fuel();
    let Some(memory) = guest_memory(caller) else {
        return Ok(Found::Unknown);
    };
    let (data, state) = memory.data_and_store_mut(caller);
    state.wasi.set_hostcall_fuel(fuel);
    let mut guest = wiggle::GuestMemory::Unshared(data);
    let path = wiggle::GuestPtr::<str>::new((path as u32, path_len as u32));
    let stat = in_tokio(state.wasi.path_filestat_get(
        &mut guest,
        types::Fd::from(dirfd),
        flags,
        path,
    ));
    Ok(match stat {
        Ok(stat) => match stat.filetype {
            types::Filetype::RegularFile
            | types::Filetype::Directory
            | types::Filetype::SymbolicLink => Found::Openable,
            _ => Found::Special,
        },
        Err(error) => match errno(error)? {
            types::Errno::Noent => Found::Missing,
            _ => Found::Unknown,
        },
    })
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
    // Nothing the guest runs can change the path between this look and the open: the
    // guest is single-threaded and waits in this call.
    let creating = match look(&mut caller, dirfd, dirflags, path, path_len)? {
        Found::Special => return Ok(ERRNO_ACCES),
        Found::Missing if oflags & OFLAGS_CREAT != 0 => {
            caller.data().files.check_create()?;
            true
        }
        Found::Openable | Found::Missing | Found::Unknown => false,
    };
    // Synchronous writes would make every write a flush to disk, which can hold the host
    // thread far past the deadline; like `fd_sync`, they are not performed.
    let fdflags = fdflags & !FDFLAGS_SYNCS;
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
        // The stock call stored the new descriptor there (or trapped).
        let fd = guest_memory(&mut caller)
            .and_then(|memory| read_u32(memory.data(&caller), fd_out))
            .ok_or_else(|| wasmtime::Error::msg("path_open stored no descriptor"))?;
        let files = &mut caller.data_mut().files;
        files.opened(fd);
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
        caller.data_mut().files.closed(fd as u32);
    }
    Ok(errno)
}

fn fd_renumber(mut caller: Caller<'_, SandboxState>, from: i32, to: i32) -> wasmtime::Result<i32> {
    let errno = stock!(caller, fd_renumber(from, to))?;
    if errno == ERRNO_SUCCESS {
        caller.data_mut().files.renumbered(from as u32, to as u32);
    }
    Ok(errno)
}

/// Replaces the p1 calls that move bytes, resize, create, open, close, renumber or sync with
/// the wrappers above (see the README's table of the WASI surface).
pub(crate) fn add_to_linker(linker: &mut Linker<SandboxState>) -> wasmtime::Result<()> {
    const WASI_P1: &str = "wasi_snapshot_preview1";
    linker.func_wrap(WASI_P1, "fd_write", fd_write)?;
    linker.func_wrap(WASI_P1, "fd_pwrite", fd_pwrite)?;
    linker.func_wrap(WASI_P1, "fd_read", fd_read)?;
    linker.func_wrap(WASI_P1, "fd_pread", fd_pread)?;
    linker.func_wrap(WASI_P1, "fd_filestat_set_size", fd_filestat_set_size)?;
    linker.func_wrap(WASI_P1, "fd_allocate", fd_allocate)?;
    linker.func_wrap(WASI_P1, "fd_sync", fd_sync)?;
    linker.func_wrap(WASI_P1, "fd_datasync", fd_sync)?;
    linker.func_wrap(WASI_P1, "path_open", path_open)?;
    linker.func_wrap(WASI_P1, "path_create_directory", path_create_directory)?;
    linker.func_wrap(WASI_P1, "path_symlink", path_symlink)?;
    linker.func_wrap(WASI_P1, "path_link", path_link)?;
    linker.func_wrap(WASI_P1, "fd_close", fd_close)?;
    linker.func_wrap(WASI_P1, "fd_renumber", fd_renumber)?;
    linker.func_wrap(WASI_P1, "random_get", iovec::random_get)?;
    linker.func_wrap(WASI_P1, "fd_readdir", fd_readdir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(open_files: u64) -> FileGuard {
        FileGuard::new(&Limits {
            open_files,
            ..Limits::default()
        })
    }

    #[test]
    fn renumbering_keeps_the_open_count_exact() {
        let mut files = guard(10);
        files.opened(5);
        files.opened(6);
        // Onto itself: nothing happens.
        files.renumbered(5, 5);
        assert_eq!(files.open_count(), 2);
        // Onto another open one: that one is closed.
        files.renumbered(5, 6);
        assert_eq!(files.open_count(), 1);
        // A preopen or stdio onto an opened one: the opened one is closed, and what moved
        // in is not the guest's.
        files.renumbered(1, 6);
        assert_eq!(files.open_count(), 0);
        // An opened one onto stdio: still one open, under the new number.
        files.opened(7);
        files.renumbered(7, 2);
        assert_eq!(files.open_count(), 1);
        files.closed(7);
        assert_eq!(files.open_count(), 1);
        files.closed(2);
        assert_eq!(files.open_count(), 0);
    }

    #[test]
    fn growth_is_cumulative_and_checked_before() {
        let mut files = FileGuard::new(&Limits {
            disk_bytes: 100,
            ..Limits::default()
        });
        assert!(files.check_growth(100).is_ok());
        assert_eq!(files.check_growth(101), Err(Stop::Disk(100)));
        files.charge(60).unwrap();
        assert_eq!(files.check_growth(41), Err(Stop::Disk(100)));
        files.charge(40).unwrap();
        assert_eq!(files.charge(1), Err(Stop::Disk(100)));
    }
}
