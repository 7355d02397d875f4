//! [`Program`]: a loaded guest module, run in fresh sandboxes.

use wasmtime::InstancePre;

use super::Dvm;
use super::run::{in_workspace, sandbox_mounts};
use crate::engine;
use crate::engine::cache::ModuleSource;
use crate::error::Error;
use crate::guest::Abi;
use crate::guest::catalog::RuntimeSpec;
use crate::outcome::Outcome;
use crate::sandbox::{self, GuestSetup, RunInput, SandboxState};

/// A guest module checked, compiled and linked, ready to run in fresh sandboxes.
#[derive(Clone)]
pub struct Program {
    pub(super) dvm: Dvm,
    pub(super) name: String,
    pub(super) digest: blake3::Hash,
    pub(super) pre: InstancePre<SandboxState>,
    pub(super) abi: Abi,
    pub(super) source: ModuleSource,
    /// The module linked on the session engine, once a session asked for it.
    pub(super) for_sessions: std::sync::Arc<std::sync::OnceLock<Option<InstancePre<SandboxState>>>>,
}

impl Program {
    /// The name the guest sees as `argv[0]`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// blake3 of the module's wasm bytes.
    pub fn digest(&self) -> &blake3::Hash {
        &self.digest
    }

    /// Whether the compiled module came from this process, the disk cache, or a compile.
    pub fn source(&self) -> ModuleSource {
        self.source
    }

    /// What a session of this program instantiates, and whether each instance's memory is
    /// its own mapping (the session engine's, or any engine's without a pool), so that it
    /// can be remapped onto a frozen copy.
    pub(crate) fn session_pre(&self) -> (InstancePre<SandboxState>, bool) {
        if self.dvm.config().pool.is_none() {
            return (self.pre.clone(), true);
        }
        match self
            .for_sessions
            .get_or_init(|| self.dvm.session_module(self))
        {
            Some(pre) => (pre.clone(), true),
            None => (self.pre.clone(), false),
        }
    }

    pub(crate) fn instantiate_only(&self) -> Result<wasmtime::Store<SandboxState>, Error> {
        sandbox::instantiate_only(&self.pre, &self.name)
    }

    /// Runs the program once in a fresh sandbox, on its own thread with room for the guest's
    /// wasm stack. Errors are problems with the input or the host; every way the guest can
    /// end (including traps and limits) is an [`Outcome`].
    pub fn run(&self, input: &RunInput) -> Result<Outcome, Error> {
        let identity = self.key_identity(None, &self.digest);
        in_workspace(&self.dvm, input, None, identity, |workspace, grants| {
            let mut setup = GuestSetup::command(&self.name, input);
            setup.mounts = sandbox_mounts(workspace.scratch());
            setup.mounts.extend(grants);
            self.run_with(setup, input)
        })
    }

    /// The part of a result-cache key that names what runs: the runtime (when a catalogue
    /// runtime runs a script), the module (for a runtime's snapshot, the module it was made
    /// from: it behaves the same), the engine.
    pub(super) fn key_identity(
        &self,
        runtime: Option<&RuntimeSpec>,
        module: &blake3::Hash,
    ) -> crate::results::KeyBuilder {
        let mut key = crate::results::KeyBuilder::new();
        if let Some(spec) = runtime {
            key.str(2, &spec.id).str(3, &spec.version);
        }
        key.str(4, &module.to_hex())
            .bytes(5, &self.dvm.engine_id())
            .str(6, engine::cache::WASMTIME_VERSION);
        key
    }

    pub(super) fn run_with(&self, setup: GuestSetup, input: &RunInput) -> Result<Outcome, Error> {
        if input.tools.is_some() && !crate::guest::has_door(self.pre.module()) {
            return Err(Error::InvalidInput(format!(
                "`{}` cannot call host tools: its module does not import the `host.call` door \
                 they are called through (the python and javascript runtimes do)",
                self.name
            )));
        }
        if input.net.is_some() && !crate::guest::has_door(self.pre.module()) {
            return Err(Error::InvalidInput(format!(
                "`{}` cannot use the network: its module does not import the `host.call` door \
                 requests go through (the python and javascript runtimes do)",
                self.name
            )));
        }
        self.run_entry(setup, input, self.abi.entry())
    }

    /// Runs on a sandbox thread (reused across runs) with room for the guest's wasm stack.
    pub(super) fn run_entry(
        &self,
        setup: GuestSetup,
        input: &RunInput,
        entry: sandbox::Entry,
    ) -> Result<Outcome, Error> {
        let _active = self.dvm.inner.ticker.activate()?;
        let pre = self.pre.clone();
        let input = input.clone();
        self.dvm
            .inner
            .threads
            .run(move || sandbox::execute(&pre, &setup, &input, &entry))?
    }
}
