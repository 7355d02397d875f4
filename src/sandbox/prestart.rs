//! Sandboxes started ahead of demand, for guests that cannot be snapshotted (a WASI command
//! such as `python-lite` has no export to stop at). A prestarted guest runs its own start-up
//! (interpreter initialisation, the bulk of its latency), then blocks in a short sleep; dvm
//! holds it there until a run claims it. The claim brings the run's limits, stdin and output
//! sinks, and the guest carries on with them as if it had just started. Each prestarted
//! sandbox serves exactly one run.

use std::io;
use std::pin::Pin;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use wasmtime::Caller;
use wasmtime_wasi::cli::{IsTerminal, StdinStream};
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError};

use super::output::{Accept, CappedOutput};
use super::{CancelHandle, SandboxState, Stop};
use crate::limits::{FuelMeter, Limits};
use crate::outcome::Outcome;

/// A run taking over a prestarted sandbox.
pub(crate) struct Claim {
    /// What the guest reads on stdin: the run's request for the guest's bootstrap, then the
    /// user's stdin.
    pub stdin: Vec<u8>,
    pub limits: Limits,
    pub on_output: Option<super::OutputCallback>,
    pub cancel: CancelHandle,
    pub started: Instant,
    /// Receives the outcome once the run is over.
    pub done: SyncSender<Outcome>,
}

/// What a prestarted sandbox waits with, kept in its store until the claim arrives.
pub(crate) struct Waiting {
    pub claims: Receiver<Claim>,
    pub io: LateIo,
}

/// What a claimed run needs to build its outcome.
pub(crate) struct Claimed {
    pub stdout: CappedOutput,
    pub stderr: CappedOutput,
    pub fuel: FuelMeter,
    pub started: Instant,
    pub done: SyncSender<Outcome>,
}

/// Stdio bound at claim time. Clones share everything.
#[derive(Clone, Default)]
pub(crate) struct LateIo {
    pub stdin: LateInput,
    pub stdout: LateOutput,
    pub stderr: LateOutput,
}

/// If the guest is a prestarted sandbox not yet claimed, blocks until a run claims it and
/// applies that run's limits, stdio and cancellation. A sandbox nobody will claim (its pool
/// is gone) is stopped.
pub(crate) fn wait_for_claim(caller: &mut Caller<'_, SandboxState>) -> wasmtime::Result<()> {
    let Some(waiting) = caller.data_mut().waiting.take() else {
        return Ok(());
    };
    let Ok(claim) = waiting.claims.recv() else {
        return Err(Stop::Cancelled.into());
    };
    let limits = &claim.limits;
    let (stdout, stderr) = CappedOutput::pair(limits, claim.on_output.clone());
    waiting.io.stdin.fill(claim.stdin);
    waiting.io.stdout.bind(stdout.clone());
    waiting.io.stderr.bind(stderr.clone());
    let fuel = FuelMeter::new(limits);
    fuel.arm(&mut *caller)?;
    let state = caller.data_mut();
    state.guard.rebind(limits);
    state.files.rebind(limits);
    state.cancel = claim.cancel;
    // `Limits::validate` keeps the deadline within days.
    state.deadline = claim.started + limits.deadline;
    state.claimed = Some(Claimed {
        stdout,
        stderr,
        fuel,
        started: claim.started,
        done: claim.done,
    });
    Ok(())
}

/// Stdin whose bytes arrive with the claim; reads before it see end of file.
#[derive(Clone, Default)]
pub(crate) struct LateInput {
    bytes: Arc<Mutex<Bytes>>,
}

impl LateInput {
    pub(crate) fn fill(&self, bytes: Vec<u8>) {
        *self.bytes.lock().unwrap_or_else(PoisonError::into_inner) = Bytes::from(bytes);
    }

    fn take(&self, size: usize) -> Bytes {
        let mut bytes = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        let size = size.min(bytes.len());
        bytes.split_to(size)
    }
}

impl IsTerminal for LateInput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for LateInput {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl InputStream for LateInput {
    fn read(&mut self, size: usize) -> Result<Bytes, StreamError> {
        let read = self.take(size);
        if read.is_empty() && size > 0 {
            return Err(StreamError::Closed);
        }
        Ok(read)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LateInput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncRead for LateInput {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = self.take(buf.remaining());
        buf.put_slice(&read);
        Poll::Ready(Ok(()))
    }
}

/// An output bound to the claiming run's capped output; what the guest writes before the
/// claim (its start-up prints nothing) is dropped.
#[derive(Clone, Default)]
pub(crate) struct LateOutput {
    target: Arc<OnceLock<CappedOutput>>,
}

impl LateOutput {
    fn bind(&self, output: CappedOutput) {
        let _ = self.target.set(output);
    }
}

impl Accept for LateOutput {
    fn accept(&self, bytes: &[u8]) -> bool {
        self.target.get().is_none_or(|output| output.accept(bytes))
    }
}
