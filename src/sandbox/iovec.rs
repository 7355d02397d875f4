//! Guest iovec arrays and the transfers behind `fd_read`, `fd_pread`, `fd_write`,
//! `fd_pwrite` and `random_get`.
//!
//! An iovec array is read from guest memory once, at most [`MAX_IOVECS`] entries (`EINVAL`
//! past that, before memory is touched), every buffer checked to lie inside memory
//! (`EFAULT` otherwise). The bytes then move in chunks of at most [`CHUNK`] bytes through
//! wasmtime-wasi's own implementation of the call, which is handed a host buffer as its
//! "memory": it never reads the guest's iovecs itself, so what dvm checked is what it
//! writes. Between chunks the run's deadline and cancellation are checked, so no call
//! outlives the deadline by more than one chunk's work.

use std::time::Instant;

use wasmtime::{Caller, Extern, Memory};
use wasmtime_wasi::p1::wasi_snapshot_preview1 as p1;
use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1 as _;

use super::{SandboxState, Stop};

pub(crate) const ERRNO_SUCCESS: i32 = 0;
pub(crate) const ERRNO_FAULT: i32 = 21;
pub(crate) const ERRNO_INVAL: i32 = 28;

/// Most iovecs one call takes (Linux's `IOV_MAX`).
pub(crate) const MAX_IOVECS: u32 = 1024;

/// Most bytes moved by one call of the stock implementation.
pub(crate) const CHUNK: usize = 1 << 20;

/// Layout of the host buffer the stock call sees: one iovec at 0, its result at 8, the
/// bytes from 16.
const HEADER: usize = 16;
const RESULT_AT: i32 = 8;

/// One guest buffer, inside the guest's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Buf {
    pub ptr: u32,
    pub len: u32,
}

/// An iovec array as read once from guest memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Iovecs(Vec<Buf>);

impl Iovecs {
    /// Reads `count` iovecs at `ptr` in `memory`. `Err(EINVAL)` for a count outside
    /// `0..=MAX_IOVECS` (memory untouched), `Err(EFAULT)` when the array or one of its
    /// buffers lies outside memory.
    pub(crate) fn parse(memory: &[u8], ptr: i32, count: i32) -> Result<Self, i32> {
        let count = count as u32;
        if count > MAX_IOVECS {
            return Err(ERRNO_INVAL);
        }
        let start = ptr as u32 as usize;
        let array = start
            .checked_add(count as usize * 8)
            .and_then(|end| memory.get(start..end))
            .ok_or(ERRNO_FAULT)?;
        let mut bufs = Vec::with_capacity(count as usize);
        for raw in array.chunks_exact(8) {
            let buf = Buf {
                ptr: u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]),
                len: u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]),
            };
            let end = u64::from(buf.ptr) + u64::from(buf.len);
            if end > memory.len() as u64 {
                return Err(ERRNO_FAULT);
            }
            bufs.push(buf);
        }
        Ok(Iovecs(bufs))
    }

    /// Bytes one call can move: the buffers' total, capped at what the call's `u32` result
    /// can report.
    pub(crate) fn total(&self) -> u64 {
        let sum: u64 = self.0.iter().map(|b| u64::from(b.len)).sum();
        sum.min(u64::from(u32::MAX))
    }

    #[cfg(test)]
    pub(crate) fn bufs(&self) -> &[Buf] {
        &self.0
    }
}

/// Which stock call moves the bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Read,
    Pread(u64),
    Write,
    Pwrite(u64),
}

/// The guest's memory; `None` when it exports none (or a shared one, which dvm's guests
/// never have).
pub(crate) fn guest_memory(caller: &mut Caller<'_, SandboxState>) -> Option<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Some(memory),
        _ => None,
    }
}

/// Stops the guest when its deadline has passed or its run was cancelled.
pub(crate) fn in_time(state: &SandboxState) -> Result<(), Stop> {
    if state.cancel.is_cancelled() {
        return Err(Stop::Cancelled);
    }
    if Instant::now() >= state.deadline {
        return Err(Stop::Deadline);
    }
    Ok(())
}

/// Calls wasmtime-wasi's implementation of a p1 function with `scratch`, a host buffer, as
/// the guest's memory.
macro_rules! stock_in {
    ($caller:expr, $scratch:expr, $func:ident($($arg:expr),* $(,)?)) => {{
        // Room for the one iovec and the chunk it names, whatever the store allows paths.
        let state = $caller.data_mut();
        state.wasi.set_hostcall_fuel(HEADER + CHUNK);
        let mut memory = wiggle::GuestMemory::Unshared(&mut *$scratch);
        wasmtime_wasi::runtime::in_tokio(p1::$func(&mut state.wasi, &mut memory, $($arg),*))
    }};
}

/// Moves the bytes of `iovecs` between the guest's memory and `fd`, chunk by chunk, until
/// all are moved or one chunk moves less than asked (end of file, a short write).
/// `Ok(Ok(bytes))` when something moved or nothing was asked, `Ok(Err(errno))` when the
/// first chunk failed; a later failure ends the transfer with what moved before it.
pub(crate) fn transfer(
    caller: &mut Caller<'_, SandboxState>,
    memory: Memory,
    fd: i32,
    iovecs: &Iovecs,
    op: Op,
) -> wasmtime::Result<Result<u64, i32>> {
    let limit = iovecs.total();
    let mut scratch = vec![0u8; HEADER + usize::try_from(limit).unwrap_or(CHUNK).min(CHUNK)];
    let mut done = 0u64;
    if limit == 0 {
        // Nothing to move: one empty call, for its errno (a bad descriptor is still one).
        return Ok(match call(caller, &mut scratch, fd, 0, op, 0)? {
            Ok(_) => Ok(0),
            Err(errno) => Err(errno),
        });
    }
    for buf in &iovecs.0 {
        let mut at = 0u32;
        while at < buf.len && done < limit {
            in_time(caller.data())?;
            let want = (buf.len - at)
                .min(CHUNK as u32)
                .min(u32::try_from(limit - done).unwrap_or(u32::MAX));
            let from = (buf.ptr + at) as usize;
            let span = want as usize;
            if matches!(op, Op::Write | Op::Pwrite(_)) {
                scratch[HEADER..HEADER + span]
                    .copy_from_slice(&memory.data(&*caller)[from..from + span]);
            }
            let moved = match call(caller, &mut scratch, fd, want, op, done)? {
                Ok(moved) => moved.min(want),
                Err(errno) if done == 0 => return Ok(Err(errno)),
                Err(_) => return Ok(Ok(done)),
            };
            if matches!(op, Op::Read | Op::Pread(_)) {
                let moved = moved as usize;
                memory.data_mut(&mut *caller)[from..from + moved]
                    .copy_from_slice(&scratch[HEADER..HEADER + moved]);
            }
            done += u64::from(moved);
            at += moved;
            if moved < want {
                return Ok(Ok(done));
            }
        }
    }
    Ok(Ok(done))
}

/// One stock call over the first `len` bytes after the header of `scratch`, `done` bytes
/// into the transfer (for the offset of `pread`/`pwrite`).
fn call(
    caller: &mut Caller<'_, SandboxState>,
    scratch: &mut [u8],
    fd: i32,
    len: u32,
    op: Op,
    done: u64,
) -> wasmtime::Result<Result<u32, i32>> {
    scratch[0..4].copy_from_slice(&(HEADER as u32).to_le_bytes());
    scratch[4..8].copy_from_slice(&len.to_le_bytes());
    scratch[8..12].fill(0);
    let errno = match op {
        Op::Read => stock_in!(caller, scratch, fd_read(fd, 0, 1, RESULT_AT))?,
        Op::Write => stock_in!(caller, scratch, fd_write(fd, 0, 1, RESULT_AT))?,
        Op::Pread(offset) => {
            let offset = offset.saturating_add(done) as i64;
            stock_in!(caller, scratch, fd_pread(fd, 0, 1, offset, RESULT_AT))?
        }
        Op::Pwrite(offset) => {
            let offset = offset.saturating_add(done) as i64;
            stock_in!(caller, scratch, fd_pwrite(fd, 0, 1, offset, RESULT_AT))?
        }
    };
    if errno != ERRNO_SUCCESS {
        return Ok(Err(errno));
    }
    Ok(Ok(u32::from_le_bytes([
        scratch[8],
        scratch[9],
        scratch[10],
        scratch[11],
    ])))
}

/// Fills `len` bytes at `buf` with random bytes from the sandbox's generator, chunk by
/// chunk, checking the deadline between chunks.
pub(crate) fn random_get(
    mut caller: Caller<'_, SandboxState>,
    buf: i32,
    len: i32,
) -> wasmtime::Result<i32> {
    let Some(memory) = guest_memory(&mut caller) else {
        return Ok(ERRNO_FAULT);
    };
    let (start, len) = (buf as u32 as usize, len as u32 as usize);
    if start
        .checked_add(len)
        .is_none_or(|end| end > memory.data_size(&caller))
    {
        return Ok(ERRNO_FAULT);
    }
    let mut scratch = vec![0u8; len.min(CHUNK)];
    let mut at = 0;
    while at < len {
        in_time(caller.data())?;
        let n = (len - at).min(CHUNK);
        // The stock `random_get` is synchronous.
        let errno = {
            let wasi = &mut caller.data_mut().wasi;
            let mut memory = wiggle::GuestMemory::Unshared(&mut scratch[..n]);
            p1::random_get(wasi, &mut memory, 0, n as i32)?
        };
        if errno != ERRNO_SUCCESS {
            return Ok(errno);
        }
        memory.data_mut(&mut caller)[start + at..start + at + n].copy_from_slice(&scratch[..n]);
        at += n;
    }
    Ok(ERRNO_SUCCESS)
}

/// Reads the little-endian `u32` at `ptr`; `None` outside memory.
pub(crate) fn read_u32(memory: &[u8], ptr: i32) -> Option<u32> {
    let start = ptr as u32 as usize;
    let bytes = memory.get(start..start.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Writes `value` at `ptr`; false outside memory.
pub(crate) fn write_u32(memory: &mut [u8], ptr: i32, value: u32) -> bool {
    let start = ptr as u32 as usize;
    match start
        .checked_add(4)
        .and_then(|end| memory.get_mut(start..end))
    {
        Some(slot) => {
            slot.copy_from_slice(&value.to_le_bytes());
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn iovec_bytes(bufs: &[(u32, u32)]) -> Vec<u8> {
        bufs.iter()
            .flat_map(|(p, l)| p.to_le_bytes().into_iter().chain(l.to_le_bytes()))
            .collect()
    }

    #[test]
    fn counts_past_the_cap_are_einval_without_reading() {
        // An empty memory: any read would be EFAULT, so EINVAL proves nothing was read.
        for count in [1025, i32::MAX, -1, i32::MIN] {
            assert_eq!(Iovecs::parse(&[], 0, count), Err(ERRNO_INVAL), "{count}");
        }
        assert_eq!(Iovecs::parse(&[], 0, 1024), Err(ERRNO_FAULT));
        assert_eq!(Iovecs::parse(&[], 0, 0).unwrap().total(), 0);
    }

    #[test]
    fn buffers_outside_memory_are_efault() {
        let mut memory = iovec_bytes(&[(0, 8), (60, 5)]);
        memory.resize(64, 0);
        assert_eq!(Iovecs::parse(&memory, 0, 2), Err(ERRNO_FAULT));
        let mut memory = iovec_bytes(&[(0, 8), (u32::MAX, 2)]);
        memory.resize(64, 0);
        assert_eq!(Iovecs::parse(&memory, 0, 2), Err(ERRNO_FAULT));
        assert_eq!(Iovecs::parse(&memory, 60, 1), Err(ERRNO_FAULT));
        assert_eq!(Iovecs::parse(&memory, -8, 1), Err(ERRNO_FAULT));
    }

    proptest! {
        #[test]
        fn parsing_matches_a_plain_decode(
            bufs in proptest::collection::vec((0u32..300, 0u32..300), 0..40),
            at in 0usize..64,
            size in 0usize..1024,
        ) {
            let mut memory = vec![0u8; at];
            memory.extend(iovec_bytes(&bufs));
            memory.resize(memory.len().max(size), 0);
            let parsed = Iovecs::parse(&memory, at as i32, bufs.len() as i32);
            let inside = bufs.iter().all(|&(p, l)| (p + l) as usize <= memory.len());
            if inside {
                let parsed = parsed.unwrap();
                let expect: Vec<Buf> = bufs.iter().map(|&(ptr, len)| Buf { ptr, len }).collect();
                prop_assert_eq!(parsed.bufs(), &expect[..]);
                prop_assert_eq!(parsed.total(), bufs.iter().map(|&(_, l)| u64::from(l)).sum::<u64>());
            } else {
                prop_assert_eq!(parsed, Err(ERRNO_FAULT));
            }
        }

        #[test]
        fn parsing_never_panics(memory in proptest::collection::vec(any::<u8>(), 0..256),
                                ptr in any::<i32>(), count in any::<i32>()) {
            if let Ok(iovecs) = Iovecs::parse(&memory, ptr, count) {
                prop_assert!(iovecs.bufs().len() <= MAX_IOVECS as usize);
                for buf in iovecs.bufs() {
                    prop_assert!(u64::from(buf.ptr) + u64::from(buf.len) <= memory.len() as u64);
                }
            }
        }
    }
}
