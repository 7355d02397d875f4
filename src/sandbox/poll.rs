//! A deadline-aware `wasi_snapshot_preview1::poll_oneoff`.
//!
//! The stock wasmtime-wasi p1 version blocks the thread for the whole requested sleep, so a
//! guest sleeping 30 s under a 1 s deadline would hold its sandbox for 30 s. This one sleeps
//! only until the earlier of the requested wake-up and the run's deadline, wakes at once on
//! cancellation, and stops the guest when the deadline comes first.
//!
//! File-descriptor subscriptions are reported ready at once: a dvm sandbox has no sockets or
//! pipes, and stdin, stdout, stderr and files never block. A subscription on an fd that does
//! not exist is also reported ready; the guest's next read or write on it fails with `EBADF`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Extern};

use crate::sandbox::{SandboxState, Stop};

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;

/// More subscriptions than any real program polls at once; bounds the host's bookkeeping.
const MAX_SUBSCRIPTIONS: u32 = 1 << 16;

const SUBSCRIPTION_SIZE: u64 = 48;
const EVENT_SIZE: u64 = 32;

const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;

const CLOCKID_REALTIME: u32 = 0;
const CLOCKID_MONOTONIC: u32 = 1;
const SUBCLOCKFLAGS_ABSTIME: u16 = 1;

enum Subscription {
    /// Wake when the sandbox's monotonic clock reaches this many nanoseconds.
    Clock {
        wake_ns: u64,
    },
    Fd {
        kind: u8,
    },
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8-byte slice"))
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4-byte slice"))
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().expect("2-byte slice"))
}

/// The guest range `[ptr, ptr + count * size)` if it lies inside `len` bytes of memory.
fn guest_range(ptr: u32, count: u32, size: u64, len: usize) -> Option<std::ops::Range<usize>> {
    let start = u64::from(ptr);
    let end = start.checked_add(u64::from(count).checked_mul(size)?)?;
    (end <= len as u64).then_some(start as usize..end as usize)
}

fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Decodes one subscription; `Err(errno)` for an unsupported clock or a bad tag.
fn decode(raw: &[u8], now_ns: u64, wall_ns: u64) -> Result<(u64, Subscription), i32> {
    let userdata = read_u64(raw, 0);
    let sub = match raw[8] {
        EVENTTYPE_CLOCK => {
            let id = read_u32(raw, 16);
            let timeout = read_u64(raw, 24);
            let absolute = read_u16(raw, 40) & SUBCLOCKFLAGS_ABSTIME != 0;
            let wake_ns = match (id, absolute) {
                (CLOCKID_MONOTONIC, true) => timeout,
                (CLOCKID_MONOTONIC | CLOCKID_REALTIME, false) => now_ns.saturating_add(timeout),
                (CLOCKID_REALTIME, true) => now_ns.saturating_add(timeout.saturating_sub(wall_ns)),
                _ => return Err(ERRNO_INVAL),
            };
            Subscription::Clock { wake_ns }
        }
        kind @ (EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE) => Subscription::Fd { kind },
        _ => return Err(ERRNO_INVAL),
    };
    Ok((userdata, sub))
}

fn encode_event(out: &mut [u8], userdata: u64, kind: u8, nbytes: u64) {
    out.fill(0);
    out[0..8].copy_from_slice(&userdata.to_le_bytes());
    out[8..10].copy_from_slice(&0u16.to_le_bytes());
    out[10] = kind;
    out[16..24].copy_from_slice(&nbytes.to_le_bytes());
}

pub(crate) fn poll_oneoff(
    mut caller: Caller<'_, SandboxState>,
    subs_ptr: u32,
    events_ptr: u32,
    nsubscriptions: u32,
    nevents_ptr: u32,
) -> wasmtime::Result<i32> {
    // A prestarted guest's first sleep is where it waits to be claimed by a run.
    crate::sandbox::prestart::wait_for_claim(&mut caller)?;
    if nsubscriptions == 0 || nsubscriptions > MAX_SUBSCRIPTIONS {
        // Sleeping forever is not expressible in WASI p1.
        return Ok(ERRNO_INVAL);
    }
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Ok(ERRNO_FAULT);
    };
    let origin = caller.data().clock_origin;
    let virtual_time = caller.data().virtual_time.clone();
    let now_ns = match &virtual_time {
        Some(time) => time.now_ns(),
        None => nanos_since(origin),
    };
    let wall_ns = match &virtual_time {
        Some(time) => time.wall_ns(),
        None => wall_clock_ns(),
    };

    // First pass: validate and find the earliest wake-up.
    let mem_len = memory.data_size(&caller);
    let Some(subs) = guest_range(subs_ptr, nsubscriptions, SUBSCRIPTION_SIZE, mem_len) else {
        return Ok(ERRNO_FAULT);
    };
    let Some(events) = guest_range(events_ptr, nsubscriptions, EVENT_SIZE, mem_len) else {
        return Ok(ERRNO_FAULT);
    };
    if guest_range(nevents_ptr, 1, 4, mem_len).is_none() {
        return Ok(ERRNO_FAULT);
    }
    // Decode once: relative timeouts become absolute wake times against one reading of the
    // clock, and stay so after the wait.
    let mut decoded = Vec::with_capacity(nsubscriptions as usize);
    for raw in memory.data(&caller)[subs].chunks_exact(SUBSCRIPTION_SIZE as usize) {
        match decode(raw, now_ns, wall_ns) {
            Ok(sub) => decoded.push(sub),
            Err(errno) => return Ok(errno),
        }
    }
    let any_fd = decoded
        .iter()
        .any(|(_, sub)| matches!(sub, Subscription::Fd { .. }));
    let earliest_wake = decoded
        .iter()
        .filter_map(|(_, sub)| match sub {
            Subscription::Clock { wake_ns } => Some(*wake_ns),
            Subscription::Fd { .. } => None,
        })
        .min()
        .unwrap_or(u64::MAX);

    if !any_fd && earliest_wake > now_ns {
        match &virtual_time {
            // Virtual time jumps to the wake-up; the real deadline and cancellation still
            // hold.
            Some(time) => {
                caller.data().wait_until(Instant::now())?;
                time.advance_to(earliest_wake);
            }
            None => {
                let wake_at = origin
                    .checked_add(Duration::from_nanos(earliest_wake))
                    // Beyond what an Instant holds: past any deadline.
                    .unwrap_or_else(|| caller.data().deadline + Duration::from_nanos(1));
                caller.data().wait_until(wake_at)?;
            }
        }
    }

    // Report every fd subscription and every clock that has fired.
    let elapsed = match &virtual_time {
        Some(time) => time.now_ns(),
        None => nanos_since(origin),
    };
    let now_ns = elapsed.max(if any_fd { 0 } else { earliest_wake });
    let ready: Vec<(u64, u8, u64)> = decoded
        .iter()
        .filter_map(|(userdata, sub)| match *sub {
            Subscription::Clock { wake_ns } if wake_ns <= now_ns => {
                Some((*userdata, EVENTTYPE_CLOCK, 0))
            }
            Subscription::Clock { .. } => None,
            Subscription::Fd { kind } => Some((*userdata, kind, 1)),
        })
        .collect();
    let data = memory.data_mut(&mut caller);
    let out = &mut data[events];
    for ((userdata, kind, nbytes), slot) in
        ready.iter().zip(out.chunks_exact_mut(EVENT_SIZE as usize))
    {
        encode_event(slot, *userdata, *kind, *nbytes);
    }
    let count = ready.len() as u32;
    let at = nevents_ptr as usize;
    data[at..at + 4].copy_from_slice(&count.to_le_bytes());
    Ok(ERRNO_SUCCESS)
}

fn nanos_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Stops the guest when sleeping would carry it past its deadline.
impl SandboxState {
    fn wait_until(&self, wake_at: Instant) -> Result<(), Stop> {
        if self.cancel.wait_until(wake_at.min(self.deadline)) {
            return Err(Stop::Cancelled);
        }
        if wake_at > self.deadline {
            return Err(Stop::Deadline);
        }
        Ok(())
    }
}
