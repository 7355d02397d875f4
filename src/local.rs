//! The local server: `dvm serve --local` keeps one process with the engine, the compiled
//! modules and a warm instance pool, and `dvm run` on the same machine hands it the runs it
//! can describe completely (a script, its arguments, environment, stdin, limits, determinism
//! and cache policy) through a Unix socket in the home, `$DVM_HOME/run/local.sock`. The run
//! then costs the client a connect, not a load of the runtime, and gives the same outcome,
//! output and exit code as a run in the client's own process.
//!
//! Nothing starts a server on its own: without one listening, `dvm run` runs in its own
//! process as always. Runs with host paths (uploads, grants, `--out`, `--keep`, packages,
//! locks) are never sent.
//!
//! Trust: the socket lives in the home, which dvm keeps private to its user (mode 0700), is
//! itself mode 0600, and the server answers only peers of its own user id (`SO_PEERCRED`).
//! Every frame has a bounded size, read before its body; requests are parsed into the same
//! validated [`Job`] every surface builds, and a client that goes away cancels its run.
//!
//! Wire: frames of a one-byte kind, a little-endian `u32` length and that many bytes. The
//! client sends a request (JSON), the script and stdin; the server sends output chunks and
//! install steps as they happen, then one result (JSON).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::error::{Error, HostError};
use crate::guest::install::{InstallStep, Progress};
use crate::limits::Limits;
use crate::outcome::{CacheMode, Outcome};
use crate::sandbox::determinism::Determinism;
use crate::sandbox::{CancelHandle, OutputCallback, RunInput, Stream};
use crate::{Dvm, Job, JobOutcome, JobSource};

/// Largest request header.
const MAX_REQUEST_BYTES: u32 = 1 << 20;
/// Largest stdin a client may send (as `dvm run` reads at most).
const MAX_STDIN_BYTES: u64 = 1 << 30;
/// How long a client has to send its whole request.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Largest result or install step the server may send.
const MAX_REPLY_BYTES: u32 = 1 << 30;

const REQUEST: u8 = b'R';
const CODE: u8 = b'C';
const STDIN: u8 = b'I';
const STDOUT: u8 = b'o';
const STDERR: u8 = b'e';
const STEP: u8 = b's';
const RESULT: u8 = b'r';

/// Where the server listens: `run/local.sock` under the home.
pub fn socket_path(home: &Path) -> PathBuf {
    crate::home::local_socket(home)
}

/// A run `dvm run` hands over: everything but the script and stdin, which follow as frames
/// of their own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalRequest {
    pub runtime: String,
    /// The script's file name.
    pub name: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub limits: Limits,
    pub deterministic: Option<Determinism>,
    pub cache: CacheMode,
    pub preload: Vec<String>,
    pub no_preload: bool,
    /// Packages to install for the run (PEP 508, or `name@range` for JavaScript).
    #[serde(default)]
    pub requirements: Vec<String>,
    /// Also install what the script imports that the runtime lacks.
    #[serde(default)]
    pub auto_deps: bool,
}

/// The server's answer: the job's outcome, or the error it met with its kind.
#[derive(Debug, Serialize, Deserialize)]
struct LocalResult {
    outcome: Option<Outcome>,
    runtime: String,
    version: String,
    /// The packages on the run's path, in their JSON form (what `--json` shows).
    packages: Option<serde_json::Value>,
    error: Option<String>,
    error_kind: Option<String>,
    user_error: bool,
}

fn write_frame(stream: &mut impl Write, kind: u8, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::other("a frame larger than 4 GiB"))?;
    let mut header = [0u8; 5];
    header[0] = kind;
    header[1..].copy_from_slice(&len.to_le_bytes());
    stream.write_all(&header)?;
    stream.write_all(body)
}

/// Reads one frame whose body is at most `max` bytes; `None` at a clean end of stream.
fn read_frame(stream: &mut impl Read, max: u64) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut header = [0u8; 5];
    match stream.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    if u64::from(len) > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes, over the {max}-byte cap"),
        ));
    }
    let mut body = Vec::new();
    stream.take(u64::from(len)).read_to_end(&mut body)?;
    if body.len() != len as usize {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some((header[0], body)))
}

fn expect_frame(stream: &mut impl Read, kind: u8, max: u64) -> std::io::Result<Vec<u8>> {
    match read_frame(stream, max)? {
        Some((got, body)) if got == kind => Ok(body),
        Some((got, _)) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("expected frame {:?}, got {:?}", kind as char, got as char),
        )),
        None => Err(std::io::ErrorKind::UnexpectedEof.into()),
    }
}

/// What the server ran: the outcome, the runtime's id and version, and the packages on the
/// run's path in their JSON form.
#[derive(Debug)]
pub struct Served {
    pub outcome: Outcome,
    pub runtime: String,
    pub version: String,
    pub packages: Option<serde_json::Value>,
}

/// Runs `request` on the local server when one is listening on `socket` (the home's is
/// [`crate::home::local_socket`]). `None` when none is (or it went away before taking the
/// run): the caller runs the job itself. Output reaches `on_output` and install steps
/// `progress` as the server reports them.
pub fn try_run(
    socket: &Path,
    request: &LocalRequest,
    code: &[u8],
    stdin: &[u8],
    on_output: Option<&OutputCallback>,
    progress: &Progress,
) -> Option<Result<Served, Error>> {
    run_on(socket, request, (code, stdin), on_output, progress, None)
}

/// Runs `request` on the server listening on `socket`; `None` when none took it. A
/// `cancel` that fires closes the sending side, which cancels the run there.
fn run_on(
    socket: &Path,
    request: &LocalRequest,
    (code, stdin): (&[u8], &[u8]),
    on_output: Option<&OutputCallback>,
    progress: &Progress,
    cancel: Option<&CancelHandle>,
) -> Option<Result<Served, Error>> {
    let mut stream = UnixStream::connect(socket).ok()?;
    let header = serde_json::to_vec(request).ok()?;
    let sent = write_frame(&mut stream, REQUEST, &header)
        .and_then(|()| write_frame(&mut stream, CODE, code))
        .and_then(|()| write_frame(&mut stream, STDIN, stdin));
    if sent.is_err() {
        return None;
    }
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let (Some(cancel), Ok(sender)) = (cancel, stream.try_clone()) {
        let (cancel, finished) = (cancel.clone(), finished.clone());
        let _ = std::thread::Builder::new()
            .name("dvm-local-cancel".into())
            .spawn(move || {
                while !finished.load(std::sync::atomic::Ordering::Acquire) {
                    if cancel.is_cancelled() {
                        let _ = sender.shutdown(std::net::Shutdown::Write);
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            });
    }
    let _finish = Finish(finished);
    let mut reader = std::io::BufReader::with_capacity(1 << 16, stream);
    let mut started = false;
    loop {
        let frame = match read_frame(&mut reader, u64::from(MAX_REPLY_BYTES)) {
            Ok(Some(frame)) => frame,
            // The server went away: before anything happened the run can still happen
            // elsewhere; after output, running it again would repeat it.
            Ok(None) | Err(_) if !started => return None,
            Ok(None) | Err(_) => {
                return Some(Err(Error::Internal(
                    "the local server (dvm serve --local) went away during the run".into(),
                )));
            }
        };
        started = true;
        match frame {
            (STDOUT, bytes) => {
                if let Some(on_output) = on_output {
                    on_output(Stream::Stdout, &bytes);
                }
            }
            (STDERR, bytes) => {
                if let Some(on_output) = on_output {
                    on_output(Stream::Stderr, &bytes);
                }
            }
            (STEP, json) => {
                if let Ok(step) = serde_json::from_slice::<InstallStep>(&json) {
                    progress(&step);
                }
            }
            (RESULT, json) => return Some(result_of(&json)),
            _ => {}
        }
    }
}

/// Sets its flag when dropped: the run's reply is complete (or abandoned).
struct Finish(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Finish {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

fn result_of(json: &[u8]) -> Result<Served, Error> {
    let result: LocalResult = serde_json::from_slice(json).map_err(|e| {
        Error::Internal(format!(
            "the local server (dvm serve --local) sent a result this dvm cannot read: {e}"
        ))
    })?;
    if let Some(message) = result.error {
        let kind = result.error_kind.as_deref().and_then(Error::known_kind);
        return Err(match (kind, result.user_error) {
            (Some("invalid_input"), _) => Error::InvalidInput(message),
            (kind, user_error) => Error::Remote {
                kind,
                user_error,
                message,
            },
        });
    }
    let outcome = result.outcome.ok_or_else(|| {
        Error::Internal("the local server (dvm serve --local) sent no outcome".into())
    })?;
    Ok(Served {
        outcome,
        runtime: result.runtime,
        version: result.version,
        packages: result.packages,
    })
}

/// How many runs the server has at once; further clients wait to be accepted.
struct Slots {
    free: Mutex<usize>,
    total: usize,
    returned: Condvar,
}

impl Slots {
    /// Waits until no run is going on, or `timeout` passed.
    fn wait_idle(&self, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free < self.total {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            free = self
                .returned
                .wait_timeout(free, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn take(self: &Arc<Self>) -> SlotGuard {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self
                .returned
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        SlotGuard(self.clone())
    }
}

struct SlotGuard(Arc<Slots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.0.returned.notify_all();
    }
}

/// A listening local server; the socket file is removed when it is dropped.
pub struct LocalServer {
    listener: UnixListener,
    path: PathBuf,
    slots: Arc<Slots>,
}

/// Lets another thread wait for a [`LocalServer`]'s runs to finish.
#[derive(Clone)]
pub struct IdleWaiter(Arc<Slots>);

impl IdleWaiter {
    /// Returns once no run is going on, or after `timeout`.
    pub fn wait(&self, timeout: std::time::Duration) {
        self.0.wait_idle(timeout);
    }
}

impl LocalServer {
    /// Binds `home`'s socket, to serve `workers` runs at a time. A socket left by a server
    /// that is gone is replaced; one that answers means another server is running, which is
    /// an error.
    pub fn bind(home: &Path, workers: usize) -> Result<LocalServer, Error> {
        LocalServer::bind_at(&socket_path(home), workers)
    }

    /// [`LocalServer::bind`] on the socket `path`; its directory is made owner-only.
    pub fn bind_at(path: &Path, workers: usize) -> Result<LocalServer, Error> {
        let path = path.to_path_buf();
        let dir = path.parent().unwrap_or(Path::new("."));
        crate::home::create_private_dir(dir).map_err(|e| {
            let (action, source) = e.into_parts();
            HostError::Io { action, source }
        })?;
        if UnixStream::connect(&path).is_ok() {
            return Err(Error::InvalidInput(format!(
                "a local server is already listening on {}; stop it first",
                path.display()
            )));
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(HostError::Io {
                    action: format!("remove the stale socket {}", path.display()),
                    source,
                }
                .into());
            }
        }
        let listener = UnixListener::bind(&path).map_err(|source| HostError::Io {
            action: format!("listen on {}", path.display()),
            source,
        })?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| HostError::Io {
                action: format!("make {} private", path.display()),
                source,
            },
        )?;
        let workers = workers.max(1);
        let slots = Arc::new(Slots {
            free: Mutex::new(workers),
            total: workers,
            returned: Condvar::new(),
        });
        Ok(LocalServer {
            listener,
            path,
            slots,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle to wait for the runs going on to finish (at shutdown).
    pub fn idle_waiter(&self) -> IdleWaiter {
        IdleWaiter(self.slots.clone())
    }

    /// Serves clients until the listener fails.
    pub fn serve(&self, dvm: &Dvm) -> Result<(), Error> {
        let slots = &self.slots;
        let own_uid = rustix::process::geteuid();
        for stream in self.listener.incoming() {
            let stream = match stream {
                Ok(stream) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(HostError::Io {
                        action: format!("accept on {}", self.path.display()),
                        source,
                    }
                    .into());
                }
            };
            let peer = rustix::net::sockopt::socket_peercred(&stream);
            if !peer.is_ok_and(|peer| peer.uid == own_uid) {
                tracing::warn!("refused a local client of another user");
                continue;
            }
            let slot = slots.take();
            let dvm = dvm.clone();
            let spawned = std::thread::Builder::new()
                .name("dvm-local".into())
                .spawn(move || {
                    let _slot = slot;
                    if let Err(e) = serve_client(&dvm, stream) {
                        tracing::debug!("local client: {e}");
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start a thread for a local client: {e}");
            }
        }
        Ok(())
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sandbox worker processes that one-shot runs are handed to, each a `dvm serve --local`
/// on a socket of its own under the home's `run/`. Sandboxes in one process share its
/// address space, and every copy-on-write fault a guest takes on its memory image flushes
/// that page from the TLB of each core running another of the process's sandboxes (an
/// inter-processor interrupt, costly in a VM); sandboxes in separate processes do not
/// interrupt each other. Runs go to the process with the fewest in flight; a process that
/// died is started again at its next run. The processes end with this one.
#[derive(Clone)]
pub struct WorkerPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    exe: PathBuf,
    home: PathBuf,
    runs_per_process: usize,
    warm: bool,
    prestart: usize,
    processes: Vec<Mutex<Worker>>,
    in_flight: Vec<std::sync::atomic::AtomicUsize>,
    next: std::sync::atomic::AtomicUsize,
}

struct Worker {
    child: Option<std::process::Child>,
    socket: PathBuf,
}

impl WorkerPool {
    /// Starts `processes` workers of the executable `exe` on `home`, each running up to
    /// `runs_per_process` sandboxes at once (and, when `warm`, loading the runtimes first
    /// and keeping `prestart` python-lite sandboxes started), and waits until each answers.
    pub fn start(
        exe: &Path,
        home: &Path,
        processes: usize,
        runs_per_process: usize,
        (warm, prestart): (bool, usize),
    ) -> Result<WorkerPool, Error> {
        let processes = processes.max(1);
        let inner = PoolInner {
            exe: exe.to_path_buf(),
            home: home.to_path_buf(),
            runs_per_process: runs_per_process.max(1),
            warm,
            prestart,
            processes: (0..processes)
                .map(|i| {
                    Mutex::new(Worker {
                        child: None,
                        socket: crate::home::run_dir(home)
                            .join(format!("worker-{}-{i}.sock", std::process::id())),
                    })
                })
                .collect(),
            in_flight: (0..processes)
                .map(|_| std::sync::atomic::AtomicUsize::new(0))
                .collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
        };
        for worker in &inner.processes {
            let mut worker = worker.lock().unwrap_or_else(PoisonError::into_inner);
            inner.spawn(&mut worker)?;
        }
        Ok(WorkerPool {
            inner: Arc::new(inner),
        })
    }

    /// How many worker processes there are.
    pub fn processes(&self) -> usize {
        self.inner.processes.len()
    }

    /// The process ids of the workers now running.
    pub fn pids(&self) -> Vec<u32> {
        self.inner
            .processes
            .iter()
            .filter_map(|worker| {
                let worker = worker.lock().unwrap_or_else(PoisonError::into_inner);
                worker.child.as_ref().map(std::process::Child::id)
            })
            .collect()
    }

    /// Runs `request` on the least busy worker; a worker found dead is started again and
    /// given the run.
    pub fn run(
        &self,
        request: &LocalRequest,
        code: &[u8],
        stdin: &[u8],
        cancel: &CancelHandle,
    ) -> Result<Served, Error> {
        let inner = &self.inner;
        // The least busy process, ties taken in turn from a rotating start.
        let count = inner.processes.len();
        let start = inner
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let index = (0..count)
            .map(|i| (start + i) % count)
            .min_by_key(|&i| inner.in_flight[i].load(std::sync::atomic::Ordering::Relaxed))
            .unwrap_or(0);
        inner.in_flight[index].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        struct Leave<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _leave = Leave(&inner.in_flight[index]);
        let quiet: Progress = Arc::new(|_| {});
        for attempt in 0..2 {
            let socket = {
                let mut worker = inner.processes[index]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if attempt > 0 {
                    inner.spawn(&mut worker)?;
                }
                worker.socket.clone()
            };
            if let Some(ran) = run_on(&socket, request, (code, stdin), None, &quiet, Some(cancel)) {
                return ran;
            }
        }
        Err(Error::Internal(format!(
            "sandbox worker process {index} does not answer on its socket"
        )))
    }
}

impl PoolInner {
    /// Starts (or restarts) `worker` and waits until its socket answers.
    fn spawn(&self, worker: &mut Worker) -> Result<(), Error> {
        if let Some(mut old) = worker.child.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        let mut command = std::process::Command::new(&self.exe);
        command
            .arg("serve")
            .arg("--local-socket")
            .arg(&worker.socket)
            .args(["--workers", &self.runs_per_process.to_string()])
            .args(["--prestart", &self.prestart.to_string()])
            .env("DVM_HOME", &self.home)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        if !self.warm {
            command.arg("--no-warm");
        }
        let mut child = command.spawn().map_err(|source| HostError::Io {
            action: format!("start a sandbox worker process ({})", self.exe.display()),
            source,
        })?;
        let deadline = std::time::Instant::now() + WORKER_START_TIMEOUT;
        while UnixStream::connect(&worker.socket).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Internal(format!(
                    "a sandbox worker process ended as it started ({status})"
                )));
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Internal(format!(
                    "a sandbox worker process did not listen within {WORKER_START_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        worker.child = Some(child);
        Ok(())
    }
}

/// How long a worker process may take to load its runtimes and listen.
const WORKER_START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

impl Drop for PoolInner {
    fn drop(&mut self) {
        for worker in &self.processes {
            let mut worker = worker.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(mut child) = worker.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = std::fs::remove_file(&worker.socket);
        }
    }
}

impl crate::remote::RemoteRunner for WorkerPool {
    fn run_remote<'a>(
        &'a self,
        run: crate::remote::RemoteRun<'_>,
        timeout: std::time::Duration,
    ) -> crate::remote::RemoteOutcome<'a> {
        let request = LocalRequest {
            runtime: run.runtime.to_string(),
            name: run.name.to_string(),
            args: run.input.args.clone(),
            env: run.input.env.clone(),
            limits: run.input.limits.clone(),
            deterministic: run.input.deterministic,
            cache: run.input.cache,
            preload: Vec::new(),
            no_preload: false,
            requirements: run.requirements.to_vec(),
            auto_deps: run.auto_deps,
        };
        let code = run.code.as_bytes().to_vec();
        let stdin = run.input.stdin.clone();
        // The caller's cancel handle, or one of our own for the timeout.
        let cancel = run.input.cancel.clone().unwrap_or_default();
        let pool = self.clone();
        Box::pin(async move {
            let stop = cancel.clone();
            let task =
                tokio::task::spawn_blocking(move || pool.run(&request, &code, &stdin, &cancel));
            match tokio::time::timeout(timeout, task).await {
                Ok(Ok(ran)) => ran.map(|served| served.outcome),
                Ok(Err(join)) => Err(HostError::Task {
                    what: "a run on a sandbox worker process",
                    source: Box::new(join),
                }
                .into()),
                Err(_) => {
                    stop.cancel();
                    Err(Error::Internal(format!(
                        "no outcome from the sandbox worker process within {timeout:?}"
                    )))
                }
            }
        })
    }
}

/// Reads one request, runs it, streams what it writes and answers with its result.
fn serve_client(dvm: &Dvm, stream: UnixStream) -> std::io::Result<()> {
    let mut reader = stream.try_clone()?;
    // A client that connects and sends nothing does not keep a worker for long.
    reader.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let header = expect_frame(&mut reader, REQUEST, u64::from(MAX_REQUEST_BYTES))?;
    let code = expect_frame(&mut reader, CODE, crate::job::MAX_SCRIPT_BYTES)?;
    let stdin = expect_frame(&mut reader, STDIN, MAX_STDIN_BYTES)?;
    reader.set_read_timeout(None)?;
    let writer = Arc::new(Mutex::new(stream));
    let request: LocalRequest = match serde_json::from_slice(&header) {
        Ok(request) => request,
        Err(e) => {
            let error = Error::InvalidInput(format!("a local request that does not parse: {e}"));
            return send_result(&writer, Err(error));
        }
    };

    // The client going away (Ctrl-C) cancels the run: it sends nothing after stdin, so a
    // read that returns means it closed.
    let cancel = CancelHandle::default();
    {
        let cancel = cancel.clone();
        std::thread::Builder::new()
            .name("dvm-local-watch".into())
            .spawn(move || {
                let mut byte = [0u8; 1];
                let _ = reader.read(&mut byte);
                cancel.cancel();
            })?;
    }
    let output: OutputCallback = {
        let writer = writer.clone();
        Arc::new(move |stream: Stream, bytes: &[u8]| {
            let kind = match stream {
                Stream::Stdout => STDOUT,
                Stream::Stderr => STDERR,
            };
            let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = write_frame(&mut *writer, kind, bytes);
        })
    };
    let progress: Progress = {
        let writer = writer.clone();
        Arc::new(move |step: &InstallStep| {
            if let Ok(json) = serde_json::to_vec(step) {
                let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = write_frame(&mut *writer, STEP, &json);
            }
        })
    };
    let job = Job {
        runtime: request.runtime,
        source: JobSource::Code {
            code,
            name: Some(request.name),
        },
        requirements: request.requirements,
        discovery: crate::Discovery {
            auto_deps: request.auto_deps,
            ..crate::Discovery::default()
        },
        preload: request.preload,
        no_preload: request.no_preload,
        input: RunInput {
            args: request.args,
            env: request.env,
            stdin,
            limits: request.limits,
            on_output: Some(output),
            cancel: Some(cancel.clone()),
            deterministic: request.deterministic,
            cache: request.cache,
            ..RunInput::default()
        },
        ..Job::code("", Vec::new())
    };
    let ran = dvm.run(&job, &progress);
    let sent = send_result(&writer, ran);
    cancel.cancel();
    sent
}

fn send_result(writer: &Mutex<UnixStream>, ran: Result<JobOutcome, Error>) -> std::io::Result<()> {
    let result = match ran {
        Ok(done) => LocalResult {
            outcome: Some(done.outcome),
            runtime: done.runtime,
            version: done.version,
            packages: done
                .packages
                .as_ref()
                .and_then(|packages| serde_json::to_value(packages).ok()),
            error: None,
            error_kind: None,
            user_error: false,
        },
        Err(error) => LocalResult {
            outcome: None,
            runtime: String::new(),
            version: String::new(),
            packages: None,
            error_kind: Some(error.kind().to_string()),
            user_error: error.is_user_error(),
            error: Some(error.to_string()),
        },
    };
    let json = serde_json::to_vec(&result).map_err(std::io::Error::other)?;
    let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
    write_frame(&mut *writer, RESULT, &json)?;
    writer.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused_before_their_body() {
        let mut wire = Vec::new();
        write_frame(&mut wire, STDOUT, b"hello").unwrap();
        write_frame(&mut wire, RESULT, b"").unwrap();
        let mut reader = &wire[..];
        assert_eq!(
            read_frame(&mut reader, 16).unwrap(),
            Some((STDOUT, b"hello".to_vec()))
        );
        assert_eq!(read_frame(&mut reader, 16).unwrap(), Some((RESULT, vec![])));
        assert_eq!(read_frame(&mut reader, 16).unwrap(), None);

        // A header claiming 4 GiB is refused without reading (or allocating) the body.
        let mut huge = vec![REQUEST];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let error = read_frame(&mut &huge[..], 1 << 20).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        // A body shorter than its header says is an error, not a short frame.
        let mut short = vec![CODE];
        short.extend_from_slice(&10u32.to_le_bytes());
        short.extend_from_slice(b"abc");
        assert!(read_frame(&mut &short[..], 1 << 20).is_err());
        assert!(expect_frame(&mut &wire[..], CODE, 16).is_err());
    }

    #[test]
    fn an_error_keeps_its_kind_and_user_error_across_the_socket() {
        let writer = Mutex::new(UnixStream::pair().unwrap());
        let (ours, mut theirs) = writer.into_inner().unwrap();
        let writer = Mutex::new(ours);
        send_result(
            &writer,
            Err(Error::UnknownRuntime {
                id: "cobol".into(),
                known: "python".into(),
            }),
        )
        .unwrap();
        let (kind, json) = read_frame(&mut theirs, 1 << 20).unwrap().unwrap();
        assert_eq!(kind, RESULT);
        let error = result_of(&json).unwrap_err();
        assert!(error.is_user_error());
        assert_eq!(error.kind(), "unknown_runtime");
        assert!(error.to_string().contains("cobol"), "{error}");
    }
}
