//! Guest stdout/stderr: a stream that keeps the first N bytes, reports every write as
//! complete so the guest never sees an I/O error, and records what it dropped.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use crate::limits::OutputOverflow;
use crate::sandbox::Stop;

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Called with each chunk of kept output as the guest writes it (live pass-through,
/// streaming to a client). It runs on the sandbox thread: keep it quick.
pub type OutputCallback = Arc<dyn Fn(Stream, &[u8]) + Send + Sync>;

/// Size of the write permit offered to the guest; any size works since every write is
/// accepted whole.
const WRITE_PERMIT: usize = 1 << 20;

#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    written: u64,
    truncated: bool,
}

/// One capped output stream. Clones share the same buffer.
#[derive(Clone)]
pub(crate) struct CappedOutput {
    stream: Stream,
    cap: u64,
    overflow: OutputOverflow,
    callback: Option<OutputCallback>,
    captured: Arc<Mutex<Captured>>,
}

/// What a capped stream holds once the run is over.
pub(crate) struct CapturedOutput {
    pub kept: Vec<u8>,
    pub written: u64,
    pub truncated: bool,
}

impl CappedOutput {
    pub(crate) fn new(
        stream: Stream,
        cap: u64,
        overflow: OutputOverflow,
        callback: Option<OutputCallback>,
    ) -> Self {
        CappedOutput {
            stream,
            cap,
            overflow,
            callback,
            captured: Arc::default(),
        }
    }

    /// A run's stdout and stderr under its limits.
    pub(crate) fn pair(
        limits: &crate::limits::Limits,
        callback: Option<OutputCallback>,
    ) -> (CappedOutput, CappedOutput) {
        (
            CappedOutput::new(
                Stream::Stdout,
                limits.stdout_bytes,
                limits.output_overflow,
                callback.clone(),
            ),
            CappedOutput::new(
                Stream::Stderr,
                limits.stderr_bytes,
                limits.output_overflow,
                callback,
            ),
        )
    }

    /// Records `bytes`; returns false when they crossed the cap under `Stop`.
    pub(crate) fn accept(&self, bytes: &[u8]) -> bool {
        let mut captured = self.captured.lock().unwrap_or_else(PoisonError::into_inner);
        captured.written = captured.written.saturating_add(bytes.len() as u64);
        let room = self.cap.saturating_sub(captured.kept.len() as u64);
        let keep = bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        if keep > 0 {
            captured.kept.extend_from_slice(&bytes[..keep]);
            if let Some(callback) = &self.callback {
                callback(self.stream, &bytes[..keep]);
            }
        }
        if keep < bytes.len() {
            captured.truncated = true;
            return self.overflow == OutputOverflow::Truncate;
        }
        true
    }

    pub(crate) fn take(&self) -> CapturedOutput {
        let mut captured = self.captured.lock().unwrap_or_else(PoisonError::into_inner);
        let captured = std::mem::take(&mut *captured);
        CapturedOutput {
            kept: captured.kept,
            written: captured.written,
            truncated: captured.truncated,
        }
    }
}

/// Something that takes a guest's output bytes: false when a write must stop the guest.
pub(crate) trait Accept: Clone + Send + Sync + 'static {
    fn accept(&self, bytes: &[u8]) -> bool;
}

impl Accept for CappedOutput {
    fn accept(&self, bytes: &[u8]) -> bool {
        CappedOutput::accept(self, bytes)
    }
}

/// A guest stdout or stderr over an [`Accept`]: every write is reported complete (or stops
/// the guest), so the guest never sees an I/O error.
#[derive(Clone)]
pub(crate) struct GuestOutput<A>(pub A);

impl<A: Accept> IsTerminal for GuestOutput<A> {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl<A: Accept> StdoutStream for GuestOutput<A> {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl<A: Accept> OutputStream for GuestOutput<A> {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        if self.0.accept(&bytes) {
            Ok(())
        } else {
            Err(StreamError::Trap(wasmtime::Error::new(Stop::Output)))
        }
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl<A: Accept> Pollable for GuestOutput<A> {
    async fn ready(&mut self) {}
}

impl<A: Accept> tokio::io::AsyncWrite for GuestOutput<A> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.0.accept(buf) {
            Poll::Ready(Ok(buf.len()))
        } else {
            Poll::Ready(Err(io::Error::other("output limit reached")))
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
