//! The sandbox side of a session: one guest instance (python's, or javascript's) kept alive on
//! its own thread, serving turns one at a time. Each turn takes its own limits, stdin, output sinks and
//! cancellation, exactly as a fresh run would; the store, the instance and the interpreter's
//! `__main__` carry over.

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use wasmtime::{Instance, InstancePre, Store};

mod layers;
pub(crate) use layers::Layers;

use super::output::{Accept, CappedOutput, GuestOutput};
use super::prestart::LateInput;
use super::{GuestSetup, RunInput, SandboxState, capacity_error, new_store, outcome_of};
use crate::error::Error;
use crate::limits::{self, FuelMeter, Limits};
use crate::outcome::Outcome;

/// What a session's memory was last frozen as or restored from, for the next freeze.
#[derive(Debug, Default)]
struct Frozen {
    /// `None`: as a fresh instance made it.
    layers: Option<Arc<Layers>>,
    /// How large a fresh instance's memory is.
    fresh: usize,
    /// The mappings it holds from layers.
    mapped: layers::Mapped,
    /// What the last snapshot found in each chunk of the memory, kept for the chunks not
    /// written since (`None`: look again). Only a frozen memory says which those are.
    chunks: Vec<Option<Chunk>>,
}

impl Frozen {
    /// Freezes `memory` from where it last was (see [`Layers::freeze`]), and forgets what
    /// is known of the chunks written since.
    ///
    /// # Safety
    /// As for [`Layers::freeze`].
    unsafe fn freeze(&mut self, memory: &mut [u8]) -> std::io::Result<Arc<Layers>> {
        // SAFETY: the caller's guarantees.
        let (layers, written) =
            unsafe { Layers::freeze(memory, self.layers.as_ref(), self.fresh, &mut self.mapped) }?;
        let page = layers.page();
        self.chunks.resize(memory.len() / CHUNK_BYTES, None);
        for (index, _) in written.iter().enumerate().filter(|(_, w)| **w) {
            if let Some(chunk) = self.chunks.get_mut(index * page / CHUNK_BYTES) {
                *chunk = None;
            }
        }
        self.layers = Some(layers.clone());
        Ok(layers)
    }
}

/// Bytes of memory per chunk of a stored snapshot (one wasm page).
pub(crate) const CHUNK_BYTES: usize = 64 << 10;

/// What a chunk of a session's memory holds, for a stored snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// What a fresh instance of the module has there (zeros past its initial memory).
    Fresh,
    /// Zeros, where a fresh instance has something else.
    Zero,
    /// These bytes, stored under their blake3.
    Stored(blake3::Hash),
}

/// Stores a chunk's bytes in the content store: the bytes, and their blake3 when known.
/// Returns the blake3.
pub(crate) type SaveChunk =
    dyn Fn(&[u8], Option<&blake3::Hash>) -> std::io::Result<blake3::Hash> + Send + Sync;

/// A session's state as a stored snapshot keeps it.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The chunks that differ from a fresh instance's memory: index, and the blake3 of the
    /// stored bytes (`None`: all zero).
    pub chunks: Vec<(u64, Option<blake3::Hash>)>,
    /// Bytes of memory.
    pub memory_bytes: usize,
    /// The guest's clock when taken.
    pub clock: Duration,
    /// The memory frozen into layers, when the session's memory could be: what a resume in
    /// this process maps instead of reading the store.
    pub frozen: Option<Arc<Image>>,
}

/// How long `shutdown()` may take when a session closes.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// What a session's thread is asked to do, in order.
pub(crate) enum Request {
    Turn(Box<Turn>),
    /// Copy the instance's state (between turns, so no guest code is running).
    Capture(Capture, SyncSender<Result<Image, Error>>),
    /// Store the memory's chunks and say which they are (between turns, too).
    Snapshot(Arc<SaveChunk>, SyncSender<Result<Snapshot, Error>>),
}

/// How a session's memory is captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capture {
    /// Copied out, byte for byte (a pooled slot's memory, which must not be remapped).
    Copy,
    /// Frozen into layers that copies map (see [`Layers`]), where the session's memory is its
    /// instance's own mapping; copied otherwise.
    Share,
}

/// A session between turns: everything a fresh instance of the same module needs to go on
/// from where the session stands. That is its linear memory, and how far its clock had
/// run: the python and javascript modules' one mutable global is the stack pointer, which
/// is back at its initial value whenever no turn runs, and their tables are never written.
#[derive(Debug)]
pub struct Image {
    pub(crate) memory: ImageMemory,
    /// The guest's monotonic clock when captured; the clock of a session restored from the
    /// image goes on from there, so it never runs backwards.
    pub(crate) clock: Duration,
}

/// An image's linear memory.
#[derive(Debug)]
pub(crate) enum ImageMemory {
    Copy(MemoryCopy),
    Frozen(Arc<Layers>),
}

impl ImageMemory {
    /// Bytes of memory.
    pub(crate) fn len(&self) -> usize {
        match self {
            ImageMemory::Copy(copy) => copy.len(),
            ImageMemory::Frozen(layers) => layers.len(),
        }
    }
}

/// Guest-specific code a session runs around its turns (none by default).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Hooks {
    /// Run after each turn that leaves the session open (as a turn of its own, sharing the
    /// turn's limits and output); empty for none.
    pub after_turn: &'static str,
    /// Run before the state is captured, with output dropped: drops what refers to the
    /// session's own host resources (open descriptors) that a copy would not have.
    pub before_capture: &'static str,
    /// Run before each turn that has host tools bound (as a turn of its own, sharing the
    /// turn's limits and output): makes them importable.
    pub tools_setup: &'static str,
    /// Run before each turn that may use the network (as `tools_setup` is).
    pub net_setup: &'static str,
}

/// A copy of a guest's linear memory, in an anonymous private mapping of its own that is
/// faulted in by the kernel in one call (`MAP_POPULATE`) instead of a page fault per 4 KiB
/// page as the copy is written: most of the cost of copying a large memory.
pub(crate) struct MemoryCopy {
    base: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by the value alone (no aliases), like a `Vec<u8>`.
unsafe impl Send for MemoryCopy {}
unsafe impl Sync for MemoryCopy {}

impl MemoryCopy {
    /// `len` zero bytes.
    pub(crate) fn zeroed(len: usize) -> std::io::Result<MemoryCopy> {
        if len == 0 {
            return Ok(MemoryCopy {
                base: std::ptr::NonNull::dangling(),
                len: 0,
            });
        }
        // SAFETY: a fresh anonymous mapping at an address the kernel picks; nothing else
        // refers to it, and it is unmapped once, in `drop`.
        let base = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::POPULATE,
            )
        }?;
        let base = std::ptr::NonNull::new(base.cast::<u8>())
            .ok_or_else(|| std::io::Error::other("mmap returned a null mapping"))?;
        Ok(MemoryCopy { base, len })
    }

    /// A copy of `bytes`.
    pub(crate) fn of(bytes: &[u8]) -> std::io::Result<MemoryCopy> {
        let mut copy = MemoryCopy::zeroed(bytes.len())?;
        copy.copy_from_slice(bytes);
        Ok(copy)
    }
}

impl std::ops::Deref for MemoryCopy {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `base` maps `len` readable bytes for as long as `self` lives (or is
        // dangling with `len` 0).
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for MemoryCopy {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), self.len) }
    }
}

impl Drop for MemoryCopy {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping made in `zeroed`, unmapped only here.
            let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
        }
    }
}

impl std::fmt::Debug for MemoryCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryCopy({} bytes)", self.len)
    }
}

/// One turn: code, and the run settings it takes (limits, stdin, on_output, cancel).
pub(crate) struct Turn {
    pub code: String,
    pub input: RunInput,
    /// Receives the outcome, and whether the session is still open after it.
    pub done: SyncSender<Result<(Outcome, bool), Error>>,
}

/// An output the current turn's capped stream is swapped into; between turns (and during
/// shutdown) writes are dropped.
#[derive(Clone, Default)]
struct SwitchOutput {
    target: Arc<Mutex<Option<CappedOutput>>>,
}

impl SwitchOutput {
    fn set(&self, output: Option<CappedOutput>) {
        *self.target.lock().unwrap_or_else(PoisonError::into_inner) = output;
    }
}

impl Accept for SwitchOutput {
    fn accept(&self, bytes: &[u8]) -> bool {
        match &*self.target.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(output) => output.accept(bytes),
            None => true,
        }
    }
}

/// Instantiates the session's guest, reports on `ready`, then serves turns from `turns`
/// until the channel closes, a turn traps or the guest calls `exit()`. Calls the guest's
/// `shutdown()` when the instance is still sound. Runs on the session's own thread.
///
/// `shared` says the instance's memory is its own mapping, never a pooled slot's: it may then
/// be frozen and remapped between turns (see [`Layers`]).
pub(crate) fn serve(
    (pre, mut shared): (&InstancePre<SandboxState>, bool),
    setup: &GuestSetup,
    env: &[(String, String)],
    (hooks, image): (Hooks, Option<&Image>),
    ready: SyncSender<Result<(), Error>>,
    turns: Receiver<Request>,
    mut activate: impl FnMut() -> Result<Box<dyn Send>, Error>,
) {
    // A session restored from an image keeps its clock running from the image's reading.
    let started = image
        .and_then(|image| Instant::now().checked_sub(image.clock))
        .unwrap_or_else(Instant::now);
    let stdin = LateInput::default();
    let (stdout, stderr) = (SwitchOutput::default(), SwitchOutput::default());
    let input = RunInput {
        env: env.to_vec(),
        limits: Limits {
            deadline: limits::MAX_DEADLINE,
            ..Limits::default()
        },
        ..RunInput::default()
    };
    let created = new_store(
        pre,
        setup,
        &input,
        started,
        (
            stdin.clone(),
            GuestOutput(stdout.clone()),
            GuestOutput(stderr.clone()),
        ),
    )
    .and_then(|(mut store, _)| {
        let active = activate()?;
        let instance = pre.instantiate(&mut store).map_err(|e| {
            capacity_error(&e).unwrap_or_else(|| {
                crate::error::HostError::wasmtime("instantiate the module", e).into()
            })
        });
        drop(active);
        let instance = instance?;
        let mut frozen = Frozen {
            fresh: instance
                .get_memory(&mut store, "memory")
                .map_or(0, |memory| memory.data_size(&store)),
            ..Frozen::default()
        };
        if let Some(image) = image {
            frozen.layers = restore(&mut store, instance, image, (shared, &mut frozen.mapped))?;
        }
        Ok((store, instance, frozen))
    });
    let (mut store, instance, mut frozen) = match created {
        Ok(created) => created,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut sound = true;
    for request in turns {
        let turn = match request {
            Request::Turn(turn) => *turn,
            Request::Capture(how, reply) => {
                // The set-up call before a capture is guest code: its deadline must tick.
                let active = match activate() {
                    Ok(active) => active,
                    Err(error) => {
                        let _ = reply.send(Err(error));
                        continue;
                    }
                };
                let how = if shared { how } else { Capture::Copy };
                let mut captured = capture(
                    &mut store,
                    instance,
                    (how, &mut frozen),
                    hooks.before_capture,
                    started,
                );
                if how == Capture::Share && captured.is_err() {
                    // A freeze that failed part way may have remapped some pages: which
                    // layer backs each is no longer known, so this session copies from now on,
                    // starting with this capture.
                    shared = false;
                    captured = capture(
                        &mut store,
                        instance,
                        (Capture::Copy, &mut frozen),
                        hooks.before_capture,
                        started,
                    );
                }
                drop(active);
                let _ = reply.send(captured);
                continue;
            }
            Request::Snapshot(save, reply) => {
                let active = match activate() {
                    Ok(active) => active,
                    Err(error) => {
                        let _ = reply.send(Err(error));
                        continue;
                    }
                };
                let taken = snapshot(
                    &mut store,
                    instance,
                    (&mut shared, &mut frozen),
                    hooks.before_capture,
                    (started, &*save),
                );
                drop(active);
                let _ = reply.send(taken);
                continue;
            }
        };
        let active = match activate() {
            Ok(active) => active,
            Err(error) => {
                let _ = turn.done.send(Err(error));
                continue;
            }
        };
        let (outcome, end) = one_turn(
            &mut store,
            instance,
            &turn,
            hooks,
            (&stdin, &stdout, &stderr),
        );
        drop(active);
        let _ = turn.done.send(Ok((outcome, end == TurnEnd::Open)));
        match end {
            TurnEnd::Open => {}
            TurnEnd::Exited => break,
            TurnEnd::Trapped => {
                sound = false;
                break;
            }
        }
    }
    // A trap unwinds the interpreter mid-instruction: its state cannot be trusted to shut
    // down. Otherwise `shutdown()` runs atexit handlers and flushes.
    if sound && let Ok(active) = activate() {
        shut_down(&mut store, instance);
        drop(active);
    }
}

/// How a turn left the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TurnEnd {
    Open,
    /// The code called `exit()` or `quit()`.
    Exited,
    /// A limit or a fault trapped the guest.
    Trapped,
}

/// Runs one turn under its own limits and output, and classifies how it ended.
fn one_turn(
    store: &mut Store<SandboxState>,
    instance: Instance,
    turn: &Turn,
    hooks: Hooks,
    (stdin, stdout, stderr): (&LateInput, &SwitchOutput, &SwitchOutput),
) -> (Outcome, TurnEnd) {
    let after_turn = hooks.after_turn;
    let started = Instant::now();
    let limits = &turn.input.limits;
    let (out, err) = CappedOutput::pair(limits, turn.input.on_output.clone());
    stdout.set(Some(out.clone()));
    stderr.set(Some(err.clone()));
    stdin.fill(turn.input.stdin.clone());
    let fuel = FuelMeter::new(limits);
    {
        let state = store.data_mut();
        state.guard.rebind(limits);
        state.files.rebind(limits);
        state.cancel = turn.input.cancel.clone().unwrap_or_default();
        state.display = super::display::DisplaySink::new(limits, turn.input.on_display.clone());
        state.tools = super::tools::ToolDoor::new(turn.input.tools.clone());
        state.net = super::net::NetDoor::new(turn.input.net.clone());
        // `Limits::validate` (checked by the caller) keeps the deadline within days.
        state.deadline = started + limits.deadline;
    }
    let tools_setup = match (&turn.input.tools, &turn.input.net) {
        (Some(_), Some(_)) => format!("{}\n{}", hooks.tools_setup, hooks.net_setup),
        (Some(_), None) => hooks.tools_setup.to_string(),
        (None, Some(_)) => hooks.net_setup.to_string(),
        (None, None) => String::new(),
    };
    let value = fuel
        .arm(&mut *store)
        .map_err(wasmtime::Error::new)
        .and_then(|()| match tools_setup.as_str() {
            "" => Ok(0),
            setup => call_turn(store, instance, setup),
        })
        .and_then(|setup| match setup & 0xff {
            0 => call_turn(store, instance, &turn.code),
            _ => Ok(setup),
        });
    // `after_turn` (the python guest's: show the figures the turn left open, as a notebook
    // cell does) runs as a turn of its own: appended to the user's code, it would no longer
    // end with their final expression. It shares the turn's fuel, deadline and output; a
    // trap in it ends the turn as one.
    let value = match value {
        Ok(code) if code < 256 && !after_turn.is_empty() => {
            call_turn(store, instance, after_turn).map(|_| code)
        }
        other => other,
    };
    let end = match &value {
        Ok(value) if *value >= 256 => TurnEnd::Exited,
        Ok(_) => TurnEnd::Open,
        Err(_) => TurnEnd::Trapped,
    };
    stdout.set(None);
    stderr.set(None);
    let outcome = outcome_of(store, &out, &err, &fuel, value.map(|v| v & 0xff), started);
    (outcome, end)
}

/// Writes `code` into the guest and calls `turn(ptr, len)`; returns its raw result (the
/// status in the low byte; 256 and up after python's `exit()`).
pub(crate) fn call_turn(
    store: &mut Store<SandboxState>,
    instance: Instance,
    code: &str,
) -> wasmtime::Result<i32> {
    let host_alloc = instance.get_typed_func::<i32, i32>(&mut *store, "host_alloc")?;
    let turn = instance.get_typed_func::<(i32, i32), i32>(&mut *store, "turn")?;
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| wasmtime::format_err!("the guest exports no memory"))?;
    let len = i32::try_from(code.len())?;
    let ptr = host_alloc.call(&mut *store, len)?;
    if ptr == 0 {
        wasmtime::bail!("the guest could not allocate {len} bytes for the code");
    }
    memory.write(&mut *store, ptr as u32 as usize, code.as_bytes())?;
    turn.call(&mut *store, (ptr, len))
}

/// Writes `image`'s memory into a fresh instance: grows the memory to the image's size, then
/// maps a frozen image's layers over it (`shared`: the memory is the instance's own mapping)
/// or copies a copied image in. Returns the layers the memory now matches.
fn restore(
    store: &mut Store<SandboxState>,
    instance: Instance,
    image: &Image,
    (shared, mapped): (bool, &mut layers::Mapped),
) -> Result<Option<Arc<Layers>>, Error> {
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| crate::error::HostError::Guest("the guest exports no memory".into()))?;
    let current = memory.data_size(&*store);
    if image.memory.len() < current || !image.memory.len().is_multiple_of(64 << 10) {
        return Err(Error::InvalidInput(format!(
            "the session image has {} bytes of memory; this module starts with {current}",
            image.memory.len()
        )));
    }
    let pages = ((image.memory.len() - current) / (64 << 10)) as u64;
    if pages > 0 {
        memory.grow(&mut *store, pages).map_err(|e| {
            Error::InvalidInput(format!(
                "the session image needs {} bytes of memory, over the session's limit: {e}",
                image.memory.len()
            ))
        })?;
    }
    let data = memory.data_mut(&mut *store);
    let copy = match &image.memory {
        ImageMemory::Frozen(layers) => {
            // SAFETY: only when `shared` says the memory is this instance's own mapping are
            // pages remapped (otherwise they are copied in), and no guest code runs while the
            // session's thread is here.
            unsafe { layers.restore(data, mapped, shared) }.map_err(|e| {
                crate::error::HostError::Guest(format!("the session copy cannot be mapped: {e}"))
            })?;
            return Ok(shared.then(|| layers.clone()));
        }
        ImageMemory::Copy(copy) => copy,
    };
    // Faulting every page in with one call, then copying, takes about two thirds of the
    // time of comparing chunk by chunk and letting each page fault as it is written (171 MiB:
    // 70 ms against 100–107 ms here). Populating only makes pages private with the contents
    // they already have; every byte is then overwritten.
    // SAFETY: the range is the memory's accessible bytes, and no guest code runs.
    let _ = unsafe {
        rustix::mm::madvise(
            data.as_mut_ptr().cast(),
            data.len(),
            rustix::mm::Advice::LinuxPopulateWrite,
        )
    };
    let target = data.get_mut(..image.memory.len()).ok_or_else(|| {
        crate::error::HostError::Guest(
            "the session's memory did not grow to the image's size".into(),
        )
    })?;
    target.copy_from_slice(copy);
    Ok(None)
}

/// Runs `before` ahead of a capture (output dropped, default limits, a short deadline).
fn prepare_capture(
    store: &mut Store<SandboxState>,
    instance: Instance,
    before: &str,
) -> Result<(), Error> {
    if !before.is_empty() {
        let state = store.data_mut();
        state.deadline = Instant::now() + SHUTDOWN_DEADLINE;
        state.cancel = Default::default();
        FuelMeter::new(&Limits::default()).arm(&mut *store)?;
        let status = call_turn(store, instance, before).map_err(|e| {
            crate::error::HostError::Guest(format!("the session could not be captured: {e}"))
        })?;
        if status & 0xff != 0 {
            return Err(crate::error::HostError::Guest(
                "the session could not be prepared for capture".into(),
            )
            .into());
        }
    }
    Ok(())
}

/// Copies the session's state after running `before` (see [`prepare_capture`]). `frozen` is
/// what the memory was last frozen as: updated when it is frozen again.
fn capture(
    store: &mut Store<SandboxState>,
    instance: Instance,
    (how, frozen): (Capture, &mut Frozen),
    before: &str,
    started: Instant,
) -> Result<Image, Error> {
    prepare_capture(store, instance, before)?;
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| crate::error::HostError::Guest("the guest exports no memory".into()))?;
    let memory = match how {
        Capture::Copy => {
            ImageMemory::Copy(MemoryCopy::of(memory.data(&*store)).map_err(|source| {
                crate::error::HostError::Guest(format!(
                    "no memory for a copy of the session: {source}"
                ))
            })?)
        }
        Capture::Share => {
            // SAFETY: the caller passes `Share` only for a memory that is the instance's own
            // mapping, and no guest code runs while the session's thread is here.
            let layers =
                unsafe { frozen.freeze(memory.data_mut(&mut *store)) }.map_err(|source| {
                    crate::error::HostError::Guest(format!(
                        "the session's memory cannot be frozen for copies: {source}"
                    ))
                })?;
            ImageMemory::Frozen(layers)
        }
    };
    Ok(Image {
        memory,
        clock: started.elapsed(),
    })
}

/// Takes a snapshot of the session after running `before` (see [`prepare_capture`]): stores
/// each chunk of its memory that differs from a fresh instance's through `save` and says
/// which they are. Where the memory is the instance's own (`shared`), it is frozen first:
/// chunks not written since the last snapshot are then known without being read again, and
/// the frozen layers come back for resumes in this process. A freeze that fails leaves the
/// session copying (`shared` false) from then on, as a failed fork does.
fn snapshot(
    store: &mut Store<SandboxState>,
    instance: Instance,
    (shared, frozen): (&mut bool, &mut Frozen),
    before: &str,
    (started, save): (Instant, &SaveChunk),
) -> Result<Snapshot, Error> {
    prepare_capture(store, instance, before)?;
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| crate::error::HostError::Guest("the guest exports no memory".into()))?;
    let clock = started.elapsed();
    let page = rustix::param::page_size();
    let mut layers = None;
    if *shared {
        // SAFETY: `shared` says the memory is the instance's own mapping, and no guest code
        // runs while the session's thread is here.
        match unsafe { frozen.freeze(memory.data_mut(&mut *store)) } {
            Ok(now) => layers = Some(now),
            Err(error) => {
                tracing::warn!("a session's memory could not be frozen, so it copies: {error}");
                *shared = false;
            }
        }
    }
    let data = memory.data(&*store);
    let chunks = match &layers {
        Some(layers) => look_at_chunks(
            data,
            &|index| layers.holds(index),
            frozen.fresh,
            &mut frozen.chunks,
            save,
        ),
        None => {
            // Pages not written since the instance was made are as a fresh instance has them.
            frozen.chunks.clear();
            let written = layers::written_pages(data, page).map_err(|e| {
                crate::error::HostError::Guest(format!("the session's pages cannot be read: {e}"))
            })?;
            let touched = |index: usize| written.get(index).copied().unwrap_or(true);
            look_at_chunks(data, &touched, frozen.fresh, &mut Vec::new(), save)
        }
    }
    .map_err(|e| crate::error::HostError::Guest(format!("the session cannot be stored: {e}")))?;
    Ok(Snapshot {
        chunks,
        memory_bytes: data.len(),
        clock,
        frozen: layers.map(|layers| {
            Arc::new(Image {
                memory: ImageMemory::Frozen(layers),
                clock,
            })
        }),
    })
}

/// Says what each 64 KiB chunk of `memory` holds, saving those that differ from a fresh
/// instance's memory (`fresh` bytes, zeros past it) through `save`. A chunk with no page
/// `touched` is as a fresh instance has it; `memo` holds what is already known of each
/// chunk (`None`: look), and is updated. Two threads look at once.
fn look_at_chunks(
    memory: &[u8],
    touched: &(dyn Fn(usize) -> bool + Sync),
    fresh: usize,
    memo: &mut Vec<Option<Chunk>>,
    save: &SaveChunk,
) -> std::io::Result<Vec<(u64, Option<blake3::Hash>)>> {
    let page = rustix::param::page_size();
    let count = memory.len() / CHUNK_BYTES;
    memo.resize(count, None);
    let look = |index: usize, known: Option<Chunk>| -> std::io::Result<Chunk> {
        let range = index * CHUNK_BYTES..(index + 1) * CHUNK_BYTES;
        if !(range.start / page..range.end.div_ceil(page)).any(touched) {
            return Ok(Chunk::Fresh);
        }
        let bytes = &memory[range.clone()];
        match known {
            // Still stored? (gc may have removed it since.)
            Some(Chunk::Stored(hash)) => return Ok(Chunk::Stored(save(bytes, Some(&hash))?)),
            Some(known) => return Ok(known),
            None => {}
        }
        if bytes.iter().all(|&b| b == 0) {
            return Ok(if range.start < fresh {
                Chunk::Zero
            } else {
                Chunk::Fresh
            });
        }
        Ok(Chunk::Stored(save(bytes, None)?))
    };
    let half = count / 2;
    let (first, second) = memo.split_at(half);
    let looked = std::thread::scope(|scope| {
        let run = |from: usize, known: &[Option<Chunk>]| {
            known
                .iter()
                .enumerate()
                .map(|(at, &known)| look(from + at, known))
                .collect::<std::io::Result<Vec<Chunk>>>()
        };
        let helper = std::thread::Builder::new()
            .name("dvm-snapshot".into())
            .spawn_scoped(scope, move || run(half, second));
        let mut looked = run(0, first)?;
        match helper {
            Ok(helper) => looked.extend(helper.join().unwrap_or_else(|_| {
                Err(std::io::Error::other(
                    "a thread storing a snapshot panicked",
                ))
            })?),
            Err(_) => looked.extend(run(half, second)?),
        }
        Ok::<_, std::io::Error>(looked)
    })?;
    let mut chunks = Vec::new();
    for (index, chunk) in looked.into_iter().enumerate() {
        memo[index] = Some(chunk);
        match chunk {
            Chunk::Fresh => {}
            Chunk::Zero => chunks.push((index as u64, None)),
            Chunk::Stored(hash) => chunks.push((index as u64, Some(hash))),
        }
    }
    Ok(chunks)
}

/// Calls the guest's `shutdown()` (atexit handlers, flushing) under a short deadline, with
/// its output dropped.
fn shut_down(store: &mut Store<SandboxState>, instance: Instance) {
    let state = store.data_mut();
    state.deadline = Instant::now() + SHUTDOWN_DEADLINE;
    state.cancel = Default::default();
    let _ = FuelMeter::new(&Limits::default()).arm(&mut *store);
    if let Ok(shutdown) = instance.get_typed_func::<(), i32>(&mut *store, "shutdown") {
        let _ = shutdown.call(&mut *store, ());
    }
}
