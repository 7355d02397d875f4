//! One run in one `Store`: the WASI context, captured stdio, limits, and how the run ended.

pub(crate) mod determinism;
pub(crate) mod display;
pub(crate) mod files;
mod iovec;
pub(crate) mod net;
pub(crate) mod output;
mod poll;
pub(crate) mod prestart;
pub(crate) mod session;
pub(crate) mod threads;
pub(crate) mod tools;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use wasmtime::{Instance, InstancePre, Store, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{HostMonotonicClock, I32Exit, WasiCtxBuilder};

pub use self::display::DisplayCallback;
pub use self::net::{
    AllowedHost, DEFAULT_NET_TIMEOUT, NetExchange, NetPolicy, NetRecorder, NetRecording, Resolver,
};
use self::output::CappedOutput;
pub use self::output::{OutputCallback, Stream};
pub use self::tools::{DEFAULT_TOOL_TIMEOUT, HostTool, HostTools, ToolHandler};
use crate::error::Error;
use crate::limits::{self, LimitKind, Limits, ResourceGuard};
use crate::outcome::{Outcome, Status, Truncated};

pub(crate) use self::poll::poll_oneoff;

/// Everything a run needs besides the program: arguments, environment, stdin, limits.
///
/// The default is the safe sandbox: no arguments, an empty environment (the host's is
/// never inherited), empty stdin, [`Limits::default`].
#[derive(Clone, Default)]
pub struct RunInput {
    /// Arguments after `argv[0]` (which is the program's name).
    pub args: Vec<String>,
    /// The guest's whole environment.
    pub env: Vec<(String, String)>,
    /// The guest's stdin, read to the end before the run starts.
    pub stdin: Vec<u8>,
    pub limits: Limits,
    /// Receives kept output as the guest writes it. Default: none (output is only captured).
    pub on_output: Option<OutputCallback>,
    /// Receives each display item the run keeps (a figure, a rich value) as the guest sends
    /// it; the outcome's `display` has them all too. Default: none.
    pub on_display: Option<DisplayCallback>,
    /// Host tools the guest may call (`import dvm_tools` in Python). A run with tools is
    /// never answered from or kept in the result cache. Default: none.
    pub tools: Option<Arc<HostTools>>,
    /// The hosts the guest may reach over HTTP, through the host (`urllib`, `http.client`
    /// and `requests` in Python, `fetch` in JavaScript). A run with network is never
    /// answered from or kept in the result cache, and a deterministic run refuses it.
    /// Default: none, no network.
    pub net: Option<Arc<NetPolicy>>,
    /// Lets another thread stop the run (`limit: "cancelled"`). Default: none.
    pub cancel: Option<CancelHandle>,
    /// The workspace to run in (mounted at `/workspace`, the working directory). Default:
    /// none, a fresh private one per run, removed after it.
    pub workspace: Option<crate::workspace::Workspace>,
    /// Host directories mounted in the sandbox. Default: none.
    pub grants: Vec<crate::workspace::Grant>,
    /// Make the run deterministic: virtual clocks and seeded random bytes (see
    /// [`Determinism`](crate::Determinism)). Default: none, real clocks and randomness.
    pub deterministic: Option<determinism::Determinism>,
    /// Whether the result cache may answer or keep this run. Default:
    /// [`CacheMode::Auto`](crate::results::CacheMode): deterministic runs without grants.
    pub cache: crate::outcome::CacheMode,
    /// Installed Python packages to put on the guest's `sys.path`
    /// ([`Runtime::install_packages`](crate::Runtime::install_packages)). Default: none.
    pub packages: Option<crate::deps::PackageSet>,
}

impl std::fmt::Debug for RunInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunInput")
            .field("args", &self.args)
            .field("env", &self.env)
            .field("stdin_bytes", &self.stdin.len())
            .field("limits", &self.limits)
            .field("on_output", &self.on_output.is_some())
            .field("on_display", &self.on_display.is_some())
            .field("tools", &self.tools.as_ref().map(|t| t.tools().len()))
            .field("net", &self.net.as_ref().map(|n| n.allowed().len()))
            .field("cancel", &self.cancel.is_some())
            .field("workspace", &self.workspace)
            .field("grants", &self.grants)
            .field(
                "packages",
                &self.packages.as_ref().map(|p| p.installed.len()),
            )
            .finish()
    }
}

/// Stops a run from another thread; a guest blocked in a sleep wakes at once.
#[derive(Clone, Default)]
pub struct CancelHandle {
    inner: Arc<CancelInner>,
}

#[derive(Default)]
struct CancelInner {
    cancelled: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl CancelHandle {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        let _guard = self
            .inner
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.inner.cancelled.store(true, Ordering::Release);
        self.inner.wake.notify_all();
    }

    /// Whether `other` is a clone of this handle.
    pub fn same(&self, other: &CancelHandle) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// Sleeps until `until` or cancellation; true when cancelled.
    pub(crate) fn wait_until(&self, until: Instant) -> bool {
        let mut guard = self
            .inner
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.is_cancelled() {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            guard = self
                .inner
                .wake
                .wait_timeout(guard, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl std::fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelHandle")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// Why the host stopped a guest. Raised as a trap from host code; read back by downcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Stop {
    #[error("the deadline passed")]
    Deadline,
    #[error("the run was cancelled")]
    Cancelled,
    #[error("the guest wrote past its output cap")]
    Output,
    #[error("the guest's files grew past its disk quota of {0} bytes")]
    Disk(u64),
    #[error("the guest created more than its quota of {0} files")]
    FilesCreated(u64),
    #[error("the guest had more than {0} files open")]
    FilesOpen(u64),
    #[error("the guest called host tools more than its budget of {0} times")]
    ToolCalls(u32),
}

impl Stop {
    fn limit(self) -> LimitKind {
        match self {
            Stop::Deadline => LimitKind::Deadline,
            Stop::Cancelled => LimitKind::Cancelled,
            Stop::Output => LimitKind::Output,
            Stop::Disk(_) => LimitKind::Disk,
            Stop::FilesCreated(_) | Stop::FilesOpen(_) => LimitKind::Files,
            Stop::ToolCalls(_) => LimitKind::ToolCalls,
        }
    }
}

/// The data of one store.
pub(crate) struct SandboxState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) guard: ResourceGuard,
    pub(crate) files: files::FileGuard,
    pub(crate) deadline: Instant,
    pub(crate) cancel: CancelHandle,
    /// Zero of the guest's monotonic clock.
    pub(crate) clock_origin: Instant,
    /// The run's virtual time in a deterministic run.
    pub(crate) virtual_time: Option<Arc<determinism::VirtualTime>>,
    /// A prestarted sandbox not yet claimed by a run.
    pub(crate) waiting: Option<prestart::Waiting>,
    /// The run that claimed a prestarted sandbox.
    pub(crate) claimed: Option<prestart::Claimed>,
    /// What the run displayed.
    pub(crate) display: display::DisplaySink,
    /// The host tools the run may call, and its calls.
    pub(crate) tools: tools::ToolDoor,
    /// The hosts the run may reach, and its requests.
    pub(crate) net: net::NetDoor,
}

/// The guest's monotonic clock: nanoseconds since the sandbox was made, the same zero the
/// deadline-aware `poll_oneoff` uses.
struct SandboxClock {
    origin: Instant,
}

impl HostMonotonicClock for SandboxClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl SandboxState {
    /// A state with no guest attached, for linker introspection.
    pub(crate) fn inert() -> Self {
        let now = Instant::now();
        SandboxState {
            wasi: WasiCtxBuilder::new().build_p1(),
            guard: ResourceGuard::new(&Limits::default()),
            files: files::FileGuard::new(&Limits::default()),
            deadline: now,
            cancel: CancelHandle::new(),
            clock_origin: now,
            virtual_time: None,
            waiting: None,
            claimed: None,
            display: display::DisplaySink::default(),
            tools: tools::ToolDoor::default(),
            net: net::NetDoor::default(),
        }
    }
}

/// How an ABI adapter starts the guest once it is instantiated; `Ok(code)` is an exit code.
pub(crate) type Entry = std::sync::Arc<
    dyn Fn(&mut Store<SandboxState>, Instance) -> wasmtime::Result<i32> + Send + Sync,
>;

/// What the ABI adapter decides about a sandbox: the guest's argv, the environment the
/// runtime needs under the user's, and the runtime's mounts.
#[derive(Debug, Default)]
pub(crate) struct GuestSetup {
    pub argv: Vec<String>,
    /// Set before the user's environment, which overrides it.
    pub env: Vec<(String, String)>,
    pub mounts: Vec<crate::fs::Mount>,
}

impl GuestSetup {
    /// A WASI command named `argv0` with the user's arguments after it.
    pub(crate) fn command(argv0: &str, input: &RunInput) -> Self {
        let mut argv = Vec::with_capacity(input.args.len() + 1);
        argv.push(argv0.to_string());
        argv.extend(input.args.iter().cloned());
        GuestSetup {
            argv,
            ..GuestSetup::default()
        }
    }
}

/// A fresh store for one run, with its captured output streams and fuel meter.
struct Prepared {
    store: Store<SandboxState>,
    stdout: CappedOutput,
    stderr: CappedOutput,
    fuel: limits::FuelMeter,
}

/// Builds a store for one run: its WASI context (args, env, stdin, capped stdout/stderr, the
/// sandbox clock, no sockets, no files) and every limit applied.
fn prepare(
    pre: &InstancePre<SandboxState>,
    setup: &GuestSetup,
    input: &RunInput,
    started: Instant,
) -> Result<Prepared, Error> {
    let limits = &input.limits;
    limits.validate()?;
    let (stdout, stderr) = CappedOutput::pair(limits, input.on_output.clone());
    let stdio = (
        MemoryInputPipe::new(input.stdin.clone()),
        output::GuestOutput(stdout.clone()),
        output::GuestOutput(stderr.clone()),
    );
    let (store, fuel) = new_store(pre, setup, input, started, stdio)?;
    Ok(Prepared {
        store,
        stdout,
        stderr,
        fuel,
    })
}

/// A store with the WASI context `setup` and `input` describe, over the given stdio, with
/// every limit applied.
fn new_store<I, O>(
    pre: &InstancePre<SandboxState>,
    setup: &GuestSetup,
    input: &RunInput,
    started: Instant,
    (stdin, stdout, stderr): (I, O, O),
) -> Result<(Store<SandboxState>, limits::FuelMeter), Error>
where
    I: wasmtime_wasi::cli::StdinStream + 'static,
    O: wasmtime_wasi::cli::StdoutStream + 'static,
{
    let limits = &input.limits;
    let mut env = setup.env.clone();
    env.retain(|(key, _)| !input.env.iter().any(|(user, _)| user == key));
    env.extend(input.env.iter().cloned());
    let mut wasi = WasiCtxBuilder::new();
    wasi.args(&setup.argv)
        .envs(&env)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    let virtual_time = match input.deterministic {
        Some(determinism) => {
            let time = Arc::new(determinism::VirtualTime::default());
            let (secure, insecure) = determinism::generators(determinism.seed);
            wasi.wall_clock(determinism::VirtualWall(time.clone()))
                .monotonic_clock(determinism::VirtualMonotonic(time.clone()))
                .secure_random(secure)
                .insecure_random(insecure)
                .insecure_random_seed(u128::from(determinism.seed));
            Some(time)
        }
        None => {
            wasi.monotonic_clock(SandboxClock { origin: started });
            None
        }
    };
    for mount in &setup.mounts {
        let perms = if mount.writable {
            wasmtime_wasi::FsPerms::ReadWrite
        } else {
            wasmtime_wasi::FsPerms::ReadOnly
        };
        wasi.preopened_dir(&mount.host, &mount.guest, perms)
            .map_err(|e| crate::error::HostError::wasmtime(format!("mount {}", mount.guest), e))?;
    }
    let state = SandboxState {
        wasi: wasi.build_p1(),
        guard: ResourceGuard::new(limits),
        files: files::FileGuard::new(limits),
        // `validate` keeps the deadline within days, which any clock can add.
        deadline: started
            .checked_add(limits.deadline)
            .ok_or_else(|| Error::InvalidLimits("the deadline is out of range".into()))?,
        cancel: input.cancel.clone().unwrap_or_default(),
        clock_origin: started,
        virtual_time,
        waiting: None,
        claimed: None,
        display: display::DisplaySink::new(limits, input.on_display.clone()),
        tools: tools::ToolDoor::new(input.tools.clone()),
        net: net::NetDoor::new(input.net.clone()),
    };
    let mut store = Store::new(pre.module().engine(), state);
    store.set_hostcall_fuel(files::PATH_BYTES);
    let fuel = apply_limits(&mut store, limits)?;
    Ok((store, fuel))
}

/// Applies every limit to a fresh store: the resource guard, the deadline (checked on each
/// epoch tick against the wall clock, and by the sleep host call), and fuel.
fn apply_limits(
    store: &mut Store<SandboxState>,
    limits: &Limits,
) -> Result<limits::FuelMeter, Error> {
    store.limiter(|state| &mut state.guard);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|context| {
        let state = context.data();
        if state.cancel.is_cancelled() {
            Err(Stop::Cancelled.into())
        } else if std::time::Instant::now() >= state.deadline {
            Err(Stop::Deadline.into())
        } else {
            Ok(wasmtime::UpdateDeadline::Continue(1))
        }
    });
    // Instantiation runs unmetered; the budget is armed just before the entry point.
    store
        .set_fuel(limits::UNLIMITED_FUEL)
        .map_err(|e| crate::error::HostError::wasmtime("set fuel", e))?;
    Ok(limits::FuelMeter::new(limits))
}

/// Starts a guest ahead of demand and serves the one run that claims it (see
/// [`prestart`]): instantiates and calls `entry` with unbounded limits until the guest's
/// bootstrap waits for its claim, then under the claiming run's limits. Returns when the
/// guest ends; the claiming run gets its outcome through the claim.
pub(crate) fn serve_prestarted(
    pre: &InstancePre<SandboxState>,
    setup: &GuestSetup,
    entry: &Entry,
    waiting: prestart::Waiting,
) -> Result<(), Error> {
    let started = Instant::now();
    let input = RunInput {
        limits: Limits {
            deadline: limits::MAX_DEADLINE,
            ..Limits::default()
        },
        ..RunInput::default()
    };
    let io = waiting.io.clone();
    let (mut store, fuel) = new_store(
        pre,
        setup,
        &input,
        started,
        (
            io.stdin,
            output::GuestOutput(io.stdout),
            output::GuestOutput(io.stderr),
        ),
    )?;
    store.data_mut().waiting = Some(waiting);
    let instance = pre.instantiate(&mut store).map_err(|e| {
        capacity_error(&e).unwrap_or_else(|| {
            crate::error::HostError::wasmtime("instantiate the module", e).into()
        })
    })?;
    fuel.arm(&mut store)?;
    let ended = entry(&mut store, instance);
    settle_memory(&mut store, instance);
    let Some(claimed) = store.data_mut().claimed.take() else {
        return Ok(());
    };
    let prestart::Claimed {
        stdout,
        stderr,
        fuel,
        started,
        done,
    } = claimed;
    let prepared = Prepared {
        store,
        stdout,
        stderr,
        fuel,
    };
    let _ = done.send(prepared.finish(ended, started));
    Ok(())
}

impl Prepared {
    /// How the run ended, with everything measured about it.
    fn finish(self, ended: wasmtime::Result<i32>, started: Instant) -> Outcome {
        let Prepared {
            mut store,
            stdout,
            stderr,
            fuel,
        } = self;
        outcome_of(&mut store, &stdout, &stderr, &fuel, ended, started)
    }
}

/// How a run (or a session's turn) that started at `started` ended, from its store, output
/// streams and fuel meter. The guest must not be running.
fn outcome_of(
    store: &mut Store<SandboxState>,
    stdout: &CappedOutput,
    stderr: &CappedOutput,
    fuel: &limits::FuelMeter,
    ended: wasmtime::Result<i32>,
    started: Instant,
) -> Outcome {
    {
        let fuel_used = fuel.used(store);
        let duration = started.elapsed();
        let guard = &store.data().guard;
        let (status, exit_code, limit, trap) = classify(ended, guard);
        let memory_peak_bytes = guard.memory_peak;
        let out = stdout.take();
        let err = stderr.take();
        let (display, display_truncated) = store.data_mut().display.take();
        let tool_calls = store.data_mut().tools.take();
        let net = store.data_mut().net.take();
        Outcome {
            status,
            exit_code,
            stdout_bytes: out.written,
            stderr_bytes: err.written,
            truncated: Truncated {
                stdout: out.truncated,
                stderr: err.truncated,
                display: display_truncated,
            },
            stdout: out.kept,
            stderr: err.kept,
            limit,
            fuel_used,
            duration,
            memory_peak_bytes,
            trap,
            files: Vec::new(),
            cache: crate::outcome::CacheStatus::Off,
            cache_key: None,
            display,
            tool_calls,
            net,
        }
    }
}

fn capacity_error(error: &wasmtime::Error) -> Option<Error> {
    error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .map(|e| Error::Capacity(e.to_string()))
}

/// Instantiates in a fresh store without running anything, and hands the store back (for
/// benches and measurements).
pub(crate) fn instantiate_only(
    pre: &InstancePre<SandboxState>,
    argv0: &str,
) -> Result<Store<SandboxState>, Error> {
    let input = RunInput::default();
    let setup = GuestSetup::command(argv0, &input);
    let mut prepared = prepare(pre, &setup, &input, Instant::now())?;
    match pre.instantiate(&mut prepared.store) {
        Ok(_) => Ok(prepared.store),
        Err(e) => Err(capacity_error(&e).unwrap_or_else(|| {
            crate::error::HostError::wasmtime("instantiate the module", e).into()
        })),
    }
}

/// Lets the pool keep the pages this sandbox made private resident for the next sandbox in
/// its slot (see `engine::residency`). The guest must have returned.
fn settle_memory(store: &mut Store<SandboxState>, instance: Instance) {
    #[cfg(target_os = "linux")]
    if let Some(memory) = instance.get_memory(&mut *store, "memory") {
        crate::engine::residency::settle(memory.data_ptr(&*store), memory.data_size(&*store));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (store, instance);
}

/// Prepares a fresh store, instantiates, arms the fuel budget and hands the instance to
/// `work`. A full pool is an error; every other way of ending is left to the caller.
fn drive<R>(
    pre: &InstancePre<SandboxState>,
    setup: &GuestSetup,
    input: &RunInput,
    work: impl FnOnce(&mut Store<SandboxState>, Instance) -> wasmtime::Result<R>,
) -> Result<(Prepared, Instant, wasmtime::Result<R>), Error> {
    let started = Instant::now();
    let mut prepared = prepare(pre, setup, input, started)?;
    let ended = match pre.instantiate(&mut prepared.store) {
        Ok(instance) => {
            prepared.fuel.arm(&mut prepared.store)?;
            let ended = work(&mut prepared.store, instance);
            settle_memory(&mut prepared.store, instance);
            ended
        }
        Err(e) => match capacity_error(&e) {
            Some(error) => return Err(error),
            None => Err(e),
        },
    };
    Ok((prepared, started, ended))
}

/// Runs one guest in a fresh store: builds its WASI context, applies the limits,
/// instantiates, calls `entry`, and turns however it ended into an [`Outcome`].
pub(crate) fn execute(
    pre: &InstancePre<SandboxState>,
    setup: &GuestSetup,
    input: &RunInput,
    entry: &Entry,
) -> Result<Outcome, Error> {
    let (prepared, started, ended) =
        drive(pre, setup, input, |store, instance| entry(store, instance))?;
    Ok(prepared.finish(ended, started))
}

type Classified = (Status, Option<i32>, Option<LimitKind>, Option<String>);

/// Maps how the guest's entry returned to a status, by type, never by message.
fn classify(ended: wasmtime::Result<i32>, guard: &ResourceGuard) -> Classified {
    // A guest that fails after being refused memory or table space failed because of it.
    let refused = if guard.memory_refused {
        Some(LimitKind::Memory)
    } else if guard.table_refused {
        Some(LimitKind::Table)
    } else {
        None
    };
    let exited = |code: i32| -> Classified {
        match (code, refused) {
            (0, _) => (Status::Ok, Some(0), None, None),
            (code, Some(kind)) => (Status::Limit, Some(code), Some(kind), None),
            (code, None) => (Status::Error, Some(code), None, None),
        }
    };
    let error = match ended {
        Ok(code) => return exited(code),
        Err(error) => error,
    };
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return exited(exit.0);
    }
    if let Some(stop) = error.downcast_ref::<Stop>() {
        return (
            Status::Limit,
            None,
            Some(stop.limit()),
            Some(stop.to_string()),
        );
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => (
            Status::Limit,
            None,
            Some(LimitKind::Fuel),
            Some(Trap::OutOfFuel.to_string()),
        ),
        Some(Trap::Interrupt) => (
            Status::Limit,
            None,
            Some(LimitKind::Deadline),
            Some(Trap::Interrupt.to_string()),
        ),
        Some(trap) => match refused {
            Some(kind) => (Status::Limit, None, Some(kind), Some(trap.to_string())),
            None => (Status::Crashed, None, None, Some(trap.to_string())),
        },
        None => match refused {
            Some(kind) => (Status::Limit, None, Some(kind), Some(format!("{error:#}"))),
            None => (Status::Crashed, None, None, Some(format!("{error:#}"))),
        },
    }
}

/// Instantiates in a fresh store set up like a run (mounts, environment, limits) and hands
/// the store and instance to `work`, e.g. to drive the guest and snapshot it. A failure of
/// the guest comes back as the outcome it would have been.
pub(crate) fn with_instance<R>(
    pre: &InstancePre<SandboxState>,
    setup: &GuestSetup,
    input: &RunInput,
    work: impl FnOnce(&mut Store<SandboxState>, Instance) -> wasmtime::Result<R>,
) -> Result<Result<R, Outcome>, Error> {
    let (prepared, started, ended) = drive(pre, setup, input, work)?;
    Ok(match ended {
        Ok(value) => Ok(value),
        Err(error) => Err(prepared.finish(Err(error), started)),
    })
}
