//! Sandboxes of a runtime started ahead of demand.

use std::sync::Arc;

use super::{Runtime, lock};
use crate::engine;
use crate::error::Error;
use crate::fs::Scratch;
use crate::guest;
use crate::outcome::Outcome;
use crate::sandbox::{self, RunInput};
use crate::workspace::Workspace;

/// A runtime's pool of prestarted sandboxes and how many it keeps.
#[derive(Default)]
pub(super) struct Prestarts {
    pub(super) target: usize,
    pub(super) ready: std::collections::VecDeque<Prestarted>,
}

/// One prestarted sandbox: the way to claim it, and its run directory.
pub(super) struct Prestarted {
    pub(super) claims: std::sync::mpsc::SyncSender<sandbox::prestart::Claim>,
    pub(super) scratch: Arc<Scratch>,
}

impl Runtime {
    /// Whether [`Runtime::prestart`] works for this runtime: a Python WASI command, which
    /// cannot be snapshotted.
    pub fn supports_prestart(&self) -> bool {
        self.capabilities().prestart
    }

    /// Keeps `count` sandboxes of this runtime started ahead of demand: each has gone
    /// through the interpreter's start-up and waits for one script run, which then skips
    /// that start-up. Every claimed sandbox is replaced at once, in the background; runs
    /// that find none ready start cold. `count` 0 stops prestarting and frees those waiting.
    pub fn prestart(&self, count: usize) -> Result<(), Error> {
        if !self.supports_prestart() {
            return Err(Error::InvalidInput(format!(
                "the `{}` runtime cannot be prestarted; only Python WASI-command runtimes \
                 (e.g. python-lite) can, and `python` starts from a snapshot instead",
                self.spec.id
            )));
        }
        let mut prestarts = lock(&self.prestarts);
        prestarts.target = count;
        prestarts.ready.truncate(count);
        while prestarts.ready.len() < count {
            let started = self.start_prestarted()?;
            prestarts.ready.push_back(started);
        }
        Ok(())
    }

    /// Starts one sandbox that runs the interpreter's start-up and waits to be claimed.
    fn start_prestarted(&self) -> Result<Prestarted, Error> {
        let scratch = Arc::new(Scratch::new()?);
        let mut setup = self.script_setup(&scratch);
        setup.argv = guest::python::prestart_argv(&self.spec.argv[0]);
        let (claims, waiting) = std::sync::mpsc::sync_channel(1);
        let waiting = sandbox::prestart::Waiting {
            claims: waiting,
            io: sandbox::prestart::LateIo::default(),
        };
        let pre = self.program.pre.clone();
        let entry = self.program.abi.entry();
        let held = scratch.clone();
        std::thread::Builder::new()
            .name("dvm-prestart".into())
            .stack_size(engine::RUN_THREAD_STACK_BYTES)
            .spawn(move || {
                // A sandbox that fails to start is simply never claimed: its run starts cold.
                let _ = sandbox::serve_prestarted(&pre, &setup, &entry, waiting);
                drop(held);
            })
            .map_err(|source| crate::error::HostError::Thread {
                what: "a prestart thread",
                source,
            })?;
        Ok(Prestarted { claims, scratch })
    }

    /// Takes a prestarted sandbox, if one is ready.
    fn take_prestarted(&self) -> Option<Prestarted> {
        lock(&self.prestarts).ready.pop_front()
    }

    /// Starts sandboxes until the pool holds its target again. Called once a claimed run is
    /// over, so that start-up work does not compete with the run for memory and cores.
    fn refill_prestarted(&self) {
        let mut prestarts = lock(&self.prestarts);
        while prestarts.ready.len() < prestarts.target {
            match self.start_prestarted() {
                Ok(started) => prestarts.ready.push_back(started),
                // Runs start cold until a later refill succeeds.
                Err(_) => break,
            }
        }
    }

    /// Runs a script in a prestarted sandbox; `None` when the run should start cold (none
    /// is ready, the run sets the interpreter's start-up variables, or the sandbox died).
    pub(super) fn run_prestarted(
        &self,
        name: &str,
        source: &[u8],
        input: &RunInput,
    ) -> Option<Result<Outcome, Error>> {
        if input.env.iter().any(|(key, _)| key.starts_with("PYTHON"))
            || input.workspace.is_some()
            || !input.grants.is_empty()
            || input.packages.is_some()
            || input.deterministic.is_some()
            || input.tools.is_some()
            || input.net.is_some()
        {
            return None;
        }
        let script = match crate::workspace::guest_path(name) {
            Ok(script) => script,
            Err(e) => return Some(Err(e)),
        };
        let mut env: Vec<(String, String)> = self
            .spec
            .env
            .iter()
            .filter(|(key, _)| !input.env.iter().any(|(user, _)| user == *key))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.extend(input.env.iter().cloned());
        let mut stdin = guest::python::prestart_request(&script, &input.args, &env)?;
        if let Err(e) = input.limits.validate() {
            return Some(Err(e));
        }
        let prestarted = self.take_prestarted()?;
        let workspace = Workspace::from_scratch(prestarted.scratch.clone());
        let before = match workspace
            .write(name, source)
            .and_then(|()| workspace.state())
        {
            Ok(before) => before,
            Err(e) => return Some(Err(e)),
        };
        stdin.extend_from_slice(&input.stdin);
        let active = match self.program.dvm.inner.ticker.activate() {
            Ok(active) => active,
            Err(e) => return Some(Err(e)),
        };
        let (done, outcome) = std::sync::mpsc::sync_channel(1);
        let claim = sandbox::prestart::Claim {
            stdin,
            limits: input.limits.clone(),
            on_output: input.on_output.clone(),
            cancel: input.cancel.clone().unwrap_or_default(),
            started: std::time::Instant::now(),
            done,
        };
        let sent = prestarted.claims.send(claim);
        let outcome = sent.ok().and_then(|()| outcome.recv().ok());
        drop(active);
        self.refill_prestarted();
        let mut outcome = outcome?;
        Some(
            workspace
                .changes(&before, input.limits.disk_bytes)
                .map(|files| {
                    outcome.files = files;
                    outcome
                }),
        )
    }
}
