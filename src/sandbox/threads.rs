//! Threads that run guests: each has a stack with room for the guest's wasm stack, and is
//! reused for later runs instead of being created per run. A run takes an idle thread or
//! starts a new one, so concurrent runs never queue behind each other.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, PoisonError};

use crate::engine::RUN_THREAD_STACK_BYTES;
use crate::error::Error;

type Job = Box<dyn FnOnce() + Send>;

/// Idle threads kept for reuse; more than this many finish when their run ends.
const MAX_IDLE: usize = 64;

#[derive(Default)]
pub(crate) struct SandboxThreads {
    idle: Mutex<Vec<Sender<Job>>>,
}

impl SandboxThreads {
    /// Runs `work` on a sandbox thread and waits for its result.
    pub(crate) fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Error> {
        let (done, result) = mpsc::sync_channel(1);
        let mut job: Job = Box::new(move || {
            let outcome = catch_unwind(AssertUnwindSafe(work));
            let _ = done.send(outcome);
        });
        // An idle thread whose receiver is gone hands the job back; try the next one.
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match idle {
                Some(thread) => match thread.send(job) {
                    Ok(()) => return self.finish(thread, &result),
                    Err(returned) => job = returned.0,
                },
                None => {
                    let thread = self.spawn()?;
                    let _ = thread.send(job);
                    return self.finish(thread, &result);
                }
            }
        }
    }

    fn finish<R>(
        &self,
        thread: Sender<Job>,
        result: &mpsc::Receiver<std::thread::Result<R>>,
    ) -> Result<R, Error> {
        let outcome = result
            .recv()
            .map_err(|_| crate::error::HostError::Stopped {
                what: "a sandbox thread".into(),
            })?;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(thread);
        }
        drop(idle);
        outcome.map_err(|_| {
            crate::error::HostError::Stopped {
                what: "the sandbox thread".into(),
            }
            .into()
        })
    }

    fn spawn(&self) -> Result<Sender<Job>, Error> {
        let (sender, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("dvm-sandbox".into())
            .stack_size(RUN_THREAD_STACK_BYTES)
            .spawn(move || {
                // Ends when the pool drops this thread's sender.
                for job in jobs {
                    job();
                }
            })
            .map_err(|source| crate::error::HostError::Thread {
                what: "a sandbox thread",
                source,
            })?;
        Ok(sender)
    }
}
