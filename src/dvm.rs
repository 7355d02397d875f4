//! The facade: one [`Dvm`] per process holds the engine and caches; a [`Program`] is a
//! loaded guest ready to run any number of times.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use wasmtime::{InstancePre, Linker, Module};

use crate::engine::cache::{ModuleCache, ModuleSource};
use crate::engine::{self, Config, EpochTicker, RUN_THREAD_STACK_BYTES};
use crate::error::Error;
use crate::guest::{self, Abi};
use crate::outcome::Outcome;
use crate::sandbox::{self, RunInput, SandboxState};

/// The dvm runtime: a configured engine, its epoch ticker and compiled-module cache.
/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Dvm {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    engine: wasmtime::Engine,
    ticker: EpochTicker,
    modules: ModuleCache,
    linker: Linker<SandboxState>,
    defined_imports: HashSet<(String, String)>,
    /// Modules this process has loaded, by blake3 of their wasm bytes.
    loaded: Mutex<HashMap<[u8; 32], Module>>,
}

/// A guest module checked, compiled and linked, ready to run in fresh sandboxes.
#[derive(Clone)]
pub struct Program {
    dvm: Dvm,
    name: String,
    digest: blake3::Hash,
    pre: InstancePre<SandboxState>,
    abi: Abi,
    source: ModuleSource,
}

impl Dvm {
    /// Sets up the engine. Creates nothing on disk until a module is compiled.
    pub fn new(config: Config) -> Result<Dvm, Error> {
        let engine = engine::engine(&config)?;
        let linker = guest::command_linker(&engine)?;
        let defined_imports = guest::defined_imports(&engine, &linker);
        Ok(Dvm {
            inner: Arc::new(Inner {
                ticker: EpochTicker::new(&engine),
                modules: ModuleCache::new(&config.home, &engine),
                config,
                engine,
                linker,
                defined_imports,
                loaded: Mutex::default(),
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Loads a WASI command from a `.wasm` or `.wat` file.
    pub fn load_file(&self, path: &Path) -> Result<Program, Error> {
        let bytes = guest::read_file(path, self.inner.config.max_module_bytes)?;
        let is_text = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("wat"));
        let name = path
            .file_name()
            .map_or_else(|| "main.wasm".into(), |n| n.to_string_lossy().into_owned());
        self.load(&name, &path.display().to_string(), bytes, is_text)
    }

    /// Loads a WASI command from bytes (binary wasm, or WebAssembly text).
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<Program, Error> {
        let max = self.inner.config.max_module_bytes;
        if bytes.len() as u64 > max {
            return Err(Error::ModuleTooLarge {
                what: name.to_string(),
                actual: bytes.len() as u64,
                limit: max,
            });
        }
        self.load(name, name, bytes.to_vec(), false)
    }

    fn load(
        &self,
        name: &str,
        what: &str,
        bytes: Vec<u8>,
        is_text: bool,
    ) -> Result<Program, Error> {
        let wasm = guest::to_wasm(what, bytes, is_text)?;
        let max = self.inner.config.max_module_bytes;
        if wasm.len() as u64 > max {
            return Err(Error::ModuleTooLarge {
                what: format!("the module compiled from {what}"),
                actual: wasm.len() as u64,
                limit: max,
            });
        }
        let digest = blake3::hash(&wasm);
        let (module, source) = self.module(&wasm, &digest, what)?;
        guest::check_command(what, &module, &self.inner.defined_imports)?;
        let pre =
            self.inner
                .linker
                .instantiate_pre(&module)
                .map_err(|e| Error::IncompatibleImport {
                    what: what.to_string(),
                    message: format!("{e:#}"),
                })?;
        Ok(Program {
            dvm: self.clone(),
            name: name.to_string(),
            digest,
            pre,
            abi: Abi::Command,
            source,
        })
    }

    fn module(
        &self,
        wasm: &[u8],
        digest: &blake3::Hash,
        what: &str,
    ) -> Result<(Module, ModuleSource), Error> {
        let key = *digest.as_bytes();
        if let Some(module) = self.loaded().get(&key) {
            return Ok((module.clone(), ModuleSource::Memory));
        }
        let (module, source) =
            self.inner
                .modules
                .load_or_compile(&self.inner.engine, wasm, digest, what)?;
        self.loaded().insert(key, module.clone());
        Ok((module, source))
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Module>> {
        self.inner
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn wasm_engine(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    /// blake3 of the engine's compatibility hash and wasmtime version: compiled code and
    /// results from another engine identity are not interchangeable.
    pub fn engine_id(&self) -> [u8; 32] {
        self.inner.modules.engine_id()
    }
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

    pub(crate) fn instantiate_only(&self) -> Result<(), Error> {
        sandbox::instantiate_only(&self.pre, &self.name)
    }

    /// Runs the program once in a fresh sandbox, on its own thread with room for the guest's
    /// wasm stack. Errors are problems with the input or the host; every way the guest can
    /// end (including traps and limits) is an [`Outcome`].
    pub fn run(&self, input: &RunInput) -> Result<Outcome, Error> {
        let _active = self.dvm.inner.ticker.activate()?;
        let entry = self.abi.entry();
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("dvm-sandbox".into())
                .stack_size(RUN_THREAD_STACK_BYTES)
                .spawn_scoped(scope, || {
                    sandbox::execute(&self.pre, &self.name, input, entry)
                })
                .map_err(|e| Error::Internal(format!("cannot start a sandbox thread: {e}")))?;
            worker
                .join()
                .map_err(|_| Error::Internal("the sandbox thread panicked".into()))?
        })
    }
}
