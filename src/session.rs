//! Sessions: one interpreter kept alive across calls, like a notebook kernel.
//!
//! Variables and imports carry over from call to call; each call has its own deadline, fuel,
//! output caps, stdin and cancellation; a final bare expression is echoed on stdout. The
//! session's files live in its workspace, which stays readable and writable between calls.
//!
//! The `python` and `javascript` runtimes have sessions: their guests export `turn(code)`,
//! which runs code in a persistent `__main__` (python) or global scope (javascript, with
//! top-level `await`; the promises and timers a call starts settle within it).
//! `python-lite` is a WASI command that exits after one program (see the README). A call
//! that a limit or a fault stops ends the session: a trap unwinds the interpreter
//! mid-instruction, so its state cannot be trusted; so does `exit()`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::outcome::Outcome;
use crate::sandbox::RunInput;
use crate::sandbox::session::{Capture, Image, Request, SaveChunk, Turn};
use crate::workspace::Workspace;

/// The most copies one [`Session::fork`] makes.
pub const MAX_FORKS: usize = 64;

/// What a session is opened with.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// The session's files; a fresh workspace when `None`.
    pub workspace: Option<Workspace>,
    /// Installed packages on the session's `sys.path`.
    pub packages: Option<crate::deps::PackageSet>,
    /// Environment variables of the interpreter.
    pub env: Vec<(String, String)>,
}

/// Starts a new live session of the same runtime and options from an image, in a workspace.
pub(crate) type Resume = Box<dyn Fn(Workspace, Arc<Image>) -> Result<Session, Error> + Send + Sync>;
/// Takes the session's memory as a snapshot keeps it, storing its chunks through the given
/// saver.
pub(crate) type TakeSnapshot<'a> =
    &'a dyn Fn(Arc<SaveChunk>) -> Result<crate::sandbox::session::Snapshot, Error>;
/// Stores a session's snapshot, taken through the first argument, and its workspace; returns
/// the snapshot's id.
pub(crate) type Store =
    Box<dyn Fn(TakeSnapshot<'_>, &Workspace) -> Result<String, Error> + Send + Sync>;

/// What a session can be copied into: made by the runtime that opened it.
pub(crate) struct Copies {
    pub resume: Resume,
    pub store: Store,
}

/// A live interpreter. Calls are served one at a time, in order; dropping or closing the
/// session frees its instance, thread and (unless kept) workspace.
pub struct Session {
    runtime: String,
    workspace: Workspace,
    copies: Option<Arc<Copies>>,
    /// Whether the guest reaches host tools ([`RunInput::tools`]).
    host_tools: bool,
    turns: Mutex<Option<SyncSender<Request>>>,
    open: Arc<AtomicBool>,
    calls: AtomicU64,
    created: Instant,
    last_used: Mutex<Instant>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("runtime", &self.runtime)
            .field("open", &self.is_open())
            .field("calls", &self.calls())
            .finish()
    }
}

impl Session {
    /// Starts the session's thread, which instantiates the guest and then serves turns;
    /// returns once the guest is ready.
    pub(crate) fn start(
        runtime: &str,
        workspace: Workspace,
        (copies, host_tools): (Option<Arc<Copies>>, bool),
        serve: impl FnOnce(SyncSender<Result<(), Error>>, Receiver<Request>) + Send + 'static,
    ) -> Result<Session, Error> {
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (turns_tx, turns_rx) = std::sync::mpsc::sync_channel::<Request>(0);
        let open = Arc::new(AtomicBool::new(true));
        let closed = open.clone();
        let thread = std::thread::Builder::new()
            .name("dvm-session".into())
            .stack_size(crate::engine::RUN_THREAD_STACK_BYTES)
            .spawn(move || {
                serve(ready_tx, turns_rx);
                closed.store(false, Ordering::Release);
            })
            .map_err(|source| crate::error::HostError::Thread {
                what: "a session thread",
                source,
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                let _ = thread.join();
                return Err(error);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(crate::error::HostError::Stopped {
                    what: "the session (while starting)".into(),
                }
                .into());
            }
        }
        let now = Instant::now();
        Ok(Session {
            runtime: runtime.to_string(),
            workspace,
            copies,
            host_tools,
            turns: Mutex::new(Some(turns_tx)),
            open,
            calls: AtomicU64::new(0),
            created: now,
            last_used: Mutex::new(now),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `code` in the session under `input`'s limits, stdin, output callback and
    /// cancellation (its other fields are the session's). A final bare expression is echoed.
    /// The outcome's `files` lists what the call changed in the workspace.
    pub fn run(&self, code: &str, input: &RunInput) -> Result<Outcome, Error> {
        input.limits.validate()?;
        if input.net.is_some() && !self.host_tools {
            return Err(Error::InvalidInput(format!(
                "a `{}` session cannot use the network: its guest has no door to the host (the \
                 python and javascript runtimes do)",
                self.runtime
            )));
        }
        if input.tools.is_some() && !self.host_tools {
            return Err(Error::InvalidInput(format!(
                "a `{}` session cannot call host tools: its guest has no door to them (the \
                 python and javascript runtimes do)",
                self.runtime
            )));
        }
        let sender = self.sender()?;
        self.touch();
        let before = self.workspace.state()?;
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        let turn = Turn {
            code: code.to_string(),
            input: RunInput {
                stdin: input.stdin.clone(),
                limits: input.limits.clone(),
                on_output: input.on_output.clone(),
                on_display: input.on_display.clone(),
                tools: input.tools.clone(),
                net: input.net.clone(),
                cancel: input.cancel.clone(),
                ..RunInput::default()
            },
            done: done_tx,
        };
        sender
            .send(Request::Turn(Box::new(turn)))
            .map_err(|_| Error::SessionClosed(self.runtime.clone()))?;
        let (mut outcome, open) = done_rx
            .recv()
            .map_err(|_| Error::SessionClosed(self.runtime.clone()))??;
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.touch();
        if !open {
            self.open.store(false, Ordering::Release);
            self.close();
        }
        outcome.files = self.workspace.changes(&before, input.limits.disk_bytes)?;
        Ok(outcome)
    }

    /// Where the session's thread takes requests, while it is open.
    fn sender(&self) -> Result<SyncSender<Request>, Error> {
        self.turns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .filter(|_| self.is_open())
            .ok_or_else(|| Error::SessionClosed(self.runtime.clone()))
    }

    /// The session's state between calls (waits for a call in progress to end).
    fn capture(&self, how: Capture) -> Result<Image, Error> {
        let sender = self.sender()?;
        let (reply, captured) = std::sync::mpsc::sync_channel(1);
        sender
            .send(Request::Capture(how, reply))
            .map_err(|_| Error::SessionClosed(self.runtime.clone()))?;
        captured
            .recv()
            .map_err(|_| Error::SessionClosed(self.runtime.clone()))?
    }

    fn copies(&self) -> Result<&Copies, Error> {
        self.copies.as_deref().ok_or_else(|| {
            Error::InvalidInput(format!(
                "this `{}` session cannot be copied (it has installed packages)",
                self.runtime
            ))
        })
    }

    /// `count` new, independent sessions that go on from where this one stands: the same
    /// variables, imports and random state, and a copy of its files each. The next call in a
    /// fork gives what it would have given here. Files the session keeps open across calls
    /// are not carried over (they read as closed in the forks).
    pub fn fork(&self, count: usize) -> Result<Vec<Session>, Error> {
        if count > MAX_FORKS {
            return Err(Error::InvalidInput(format!(
                "at most {MAX_FORKS} forks at a time ({count} were asked for): each is a whole \
                 copy of the session's memory"
            )));
        }
        let copies = self.copies()?;
        let image = Arc::new(self.capture(Capture::Share)?);
        (0..count)
            .map(|_| {
                let workspace = self.workspace.duplicate()?;
                (copies.resume)(workspace, image.clone())
            })
            .collect()
    }

    /// Stores the session's state (memory, clock, files) as a signed snapshot under the home
    /// and returns its id, for [`Runtime::resume`](crate::Runtime::resume). The session goes
    /// on unchanged.
    pub fn snapshot(&self) -> Result<String, Error> {
        let copies = self.copies()?;
        let take = |save: Arc<SaveChunk>| {
            let sender = self.sender()?;
            let (reply, taken) = std::sync::mpsc::sync_channel(1);
            sender
                .send(Request::Snapshot(save, reply))
                .map_err(|_| Error::SessionClosed(self.runtime.clone()))?;
            taken
                .recv()
                .map_err(|_| Error::SessionClosed(self.runtime.clone()))?
        };
        (copies.store)(&take, &self.workspace)
    }

    /// Forgets the calls so far (the session's own setup call).
    pub(crate) fn forget_calls(&self) {
        self.calls.store(0, Ordering::Relaxed);
    }

    /// Whether calls can still run.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Ends the session: the guest shuts down (atexit handlers run, within 5 s) and its
    /// instance and thread are freed. Calls after it fail with [`Error::SessionClosed`].
    pub fn close(&self) {
        self.open.store(false, Ordering::Release);
        drop(
            self.turns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }

    /// The session's files.
    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    pub fn runtime(&self) -> &str {
        &self.runtime
    }

    /// Calls served so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Time since the session started.
    pub fn age(&self) -> Duration {
        self.created.elapsed()
    }

    /// Time since the last call began or ended.
    pub fn idle(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }

    fn touch(&self) {
        *self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}
