//! The facade: one [`Dvm`] per process holds the engine and caches; a [`Program`] is a
//! loaded guest ready to run any number of times; a [`Runtime`] is an installed language
//! runtime that runs scripts.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use wasmtime::{Linker, Module};

use crate::engine::cache::{ModuleCache, ModuleSource};
use crate::engine::{self, Config, EpochTicker};
use crate::error::Error;
use crate::guest::catalog::{Catalog, Role, RuntimeSpec};
use crate::guest::install::{Installed, Installer, PackageSource, Progress};
use crate::guest::{self, Abi};
use crate::sandbox::{self, SandboxState};

mod packages;
mod preload;
mod prestart;
mod program;
mod run;
mod runtime;
mod session_snapshots;
mod sessions;

pub use program::Program;
pub use runtime::{Runtime, RuntimeStatus};
pub use session_snapshots::{
    SessionSnapshotInfo, SnapshotGc, delete_session_snapshot, gc_session_snapshots,
    session_snapshot_info,
};

/// The dvm runtime: a configured engine, its epoch ticker and compiled-module cache.
/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Dvm {
    inner: Arc<Inner>,
}

struct AbiLinker {
    linker: Linker<SandboxState>,
    defined: HashSet<(String, String)>,
}

struct Inner {
    config: Config,
    engine: wasmtime::Engine,
    ticker: EpochTicker,
    modules: ModuleCache,
    installer: Installer,
    linkers: HashMap<Abi, AbiLinker>,
    /// Modules this process has loaded, by blake3 of their wasm bytes.
    loaded: Mutex<HashMap<[u8; 32], Module>>,
    /// Runtimes this process has opened, by id.
    runtimes: Mutex<HashMap<String, Runtime>>,
    threads: sandbox::threads::SandboxThreads,
    results: crate::results::ResultCache,
    /// Snapshot sets being built on a background thread ([`crate::WarmBuilds::Thread`]).
    warm_building: Mutex<HashSet<String>>,
    /// The published-snapshot listing as last read, with the directory's modification time
    /// then: a run re-reads it only when a snapshot was published since.
    warm_listing: Mutex<Option<(std::time::SystemTime, Arc<Vec<guest::warm::Published>>)>>,
    /// Runtimes whose missing standard-library snapshot this process has asked for once.
    default_requested: Mutex<HashSet<String>>,
    /// Kept to make the session engine with (it compiles nothing, but is configured alike).
    functions: Arc<engine::functions::FunctionCache>,
    /// The engine sessions run on when sandboxes are pooled, made at the first session;
    /// `None` when it could not be made (sessions then run pooled, and forks copy memory).
    session_side: OnceLock<Option<SessionSide>>,
    /// Frozen images of session snapshots taken or resumed here, for quick resumes.
    held_images: session_snapshots::HeldImages,
}

/// Sessions' own engine (see [`engine::session_engine`]) and what runs on it.
struct SessionSide {
    engine: wasmtime::Engine,
    ticker: EpochTicker,
    linkers: HashMap<Abi, AbiLinker>,
    /// Modules loaded into it, by blake3 of their wasm bytes.
    loaded: Mutex<HashMap<[u8; 32], Module>>,
}

/// Each ABI's linker on `engine`, and what it defines.
fn abi_linkers(engine: &wasmtime::Engine) -> Result<HashMap<Abi, AbiLinker>, Error> {
    let mut linkers = HashMap::new();
    for abi in [Abi::Command, Abi::PythonReactor] {
        let linker = abi.linker(engine)?;
        let defined = guest::defined_imports(engine, &linker);
        linkers.insert(abi, AbiLinker { linker, defined });
    }
    Ok(linkers)
}

/// The module `digest` names on `engine`: from `loaded` (this process's), else from the
/// compiled-module cache (compiling `wasm` when it has none), then kept in `loaded`.
fn load_on(
    (engine, loaded): (&wasmtime::Engine, &Mutex<HashMap<[u8; 32], Module>>),
    modules: &ModuleCache,
    (digest, what): (&blake3::Hash, &str),
    wasm: &dyn Fn() -> Result<Vec<u8>, Error>,
    on_compile: &dyn Fn(),
) -> Result<(Module, ModuleSource), Error> {
    let key = *digest.as_bytes();
    if let Some(module) = lock(loaded).get(&key) {
        return Ok((module.clone(), ModuleSource::Memory));
    }
    let (module, source) = modules.load_or_compile(engine, digest, what, wasm, on_compile)?;
    lock(loaded).insert(key, module.clone());
    Ok((module, source))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn no_progress() -> Progress {
    Arc::new(|_| {})
}

impl Dvm {
    /// Sets up the engine. Makes the home directory (owner-only) if it is missing and refuses
    /// one that another user, or anyone but its owner, can write
    /// ([`Error::HomeNotPrivate`]); nothing else is written until a module is compiled.
    pub fn new(config: Config) -> Result<Dvm, Error> {
        let results = crate::results::ResultCache::of_config(&config, config.result_cache_bytes);
        Dvm::with_results(config, results)
    }

    /// [`Dvm::new`] with another result-cache store, e.g. one shared by many machines
    /// ([`crate::nats::JetStreamBackend`]).
    pub fn with_results(
        config: Config,
        results: crate::results::ResultCache,
    ) -> Result<Dvm, Error> {
        crate::home::ensure_private(&config.home)?;
        crate::fs::set_scratch_base(config.scratch.as_deref());
        let functions = Arc::new(engine::functions::FunctionCache::new(&config.home));
        let engine = engine::engine(&config, functions.clone())?;
        let linkers = abi_linkers(&engine)?;
        Ok(Dvm {
            inner: Arc::new(Inner {
                ticker: EpochTicker::new(&engine),
                modules: ModuleCache::new(
                    &config.home,
                    &engine,
                    config.reverify_modules,
                    functions.clone(),
                ),
                installer: Installer::new(&config.home, &config.python),
                results,
                config,
                engine,
                linkers,
                loaded: Mutex::default(),
                runtimes: Mutex::default(),
                threads: sandbox::threads::SandboxThreads::default(),
                warm_building: Mutex::default(),
                warm_listing: Mutex::default(),
                default_requested: Mutex::default(),
                functions,
                session_side: OnceLock::new(),
                held_images: Default::default(),
            }),
        })
    }

    /// The execution result cache under this runtime's home.
    pub fn results(&self) -> &crate::results::ResultCache {
        &self.inner.results
    }

    /// The versioned code-artifact store under this runtime's home.
    pub fn artifacts(&self) -> crate::artifact::ArtifactStore {
        crate::artifact::ArtifactStore::new(&self.inner.config.home)
    }

    /// Frozen images of session snapshots taken or resumed by this `Dvm`.
    pub(crate) fn held_images(&self) -> &session_snapshots::HeldImages {
        &self.inner.held_images
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
        let wasm = guest::to_wasm(&path.display().to_string(), bytes, is_text)?;
        self.load(&name, &path.display().to_string(), &wasm, Abi::Command)
    }

    /// Loads a WASI command from bytes (binary wasm, or WebAssembly text).
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<Program, Error> {
        self.check_size(name, bytes.len() as u64)?;
        let wasm = guest::to_wasm(name, bytes.to_vec(), false)?;
        self.load(name, name, &wasm, Abi::Command)
    }

    fn check_size(&self, what: &str, size: u64) -> Result<(), Error> {
        let limit = self.inner.config.max_module_bytes;
        if size > limit {
            return Err(Error::ModuleTooLarge {
                what: what.to_string(),
                actual: size,
                limit,
            });
        }
        Ok(())
    }

    fn load(&self, name: &str, what: &str, wasm: &[u8], abi: Abi) -> Result<Program, Error> {
        self.check_size(what, wasm.len() as u64)?;
        let digest = blake3::hash(wasm);
        let (module, source) = self.module(&digest, what, &|| Ok(wasm.to_vec()), &|| {})?;
        self.link(name, what, module, digest, source, abi)
    }

    fn link(
        &self,
        name: &str,
        what: &str,
        module: Module,
        digest: blake3::Hash,
        source: ModuleSource,
        abi: Abi,
    ) -> Result<Program, Error> {
        let linker = &self.inner.linkers[&abi];
        abi.check(what, &module, &linker.defined)?;
        let pre =
            linker
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
            abi,
            source,
            for_sessions: Arc::default(),
        })
    }

    fn module(
        &self,
        digest: &blake3::Hash,
        what: &str,
        wasm: &dyn Fn() -> Result<Vec<u8>, Error>,
        on_compile: &dyn Fn(),
    ) -> Result<(Module, ModuleSource), Error> {
        load_on(
            (&self.inner.engine, &self.inner.loaded),
            &self.inner.modules,
            (digest, what),
            wasm,
            on_compile,
        )
    }

    /// The session engine, made on first use; `None` without a pool (the one engine already
    /// maps each memory on its own) or when it cannot be made.
    fn session_side(&self) -> Option<&SessionSide> {
        self.inner
            .session_side
            .get_or_init(|| {
                self.inner.config.pool.as_ref()?;
                let made =
                    engine::session_engine(self.inner.functions.clone()).and_then(|engine| {
                        Ok(SessionSide {
                            linkers: abi_linkers(&engine)?,
                            ticker: EpochTicker::new(&engine),
                            engine,
                            loaded: Mutex::default(),
                        })
                    });
                made.inspect_err(|e| {
                    tracing::warn!("no session engine (forks will copy memory): {e}")
                })
                .ok()
            })
            .as_ref()
    }

    /// `program` linked on the session engine, from the compiled-module cache (never
    /// compiled here); `None` when there is no session engine or the module is not in the
    /// cache, and sessions run on `program`'s own engine.
    fn session_module(&self, program: &Program) -> Option<wasmtime::InstancePre<SandboxState>> {
        let side = self.session_side()?;
        let (module, _) = load_on(
            (&side.engine, &side.loaded),
            &self.inner.modules,
            (&program.digest, &program.name),
            &|| {
                Err(Error::InvalidInput(
                    "the session engine loads compiled modules only".into(),
                ))
            },
            &|| {},
        )
        .inspect_err(|e| {
            tracing::warn!(
                "{} is not loaded on the session engine (forks will copy memory): {e}",
                program.name
            )
        })
        .ok()?;
        side.linkers[&program.abi]
            .linker
            .instantiate_pre(&module)
            .inspect_err(|e| tracing::warn!("{}: no session engine link: {e:#}", program.name))
            .ok()
    }

    /// Marks a session's call as running, on the engine it runs on, so that its deadline
    /// ticks.
    pub(crate) fn activate_session(&self, on_side: bool) -> Result<engine::ActiveRun, Error> {
        match self.session_side() {
            Some(side) if on_side => side.ticker.activate(),
            _ => self.inner.ticker.activate(),
        }
    }

    pub(crate) fn wasm_engine(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    pub(crate) fn module_cache(&self) -> &ModuleCache {
        &self.inner.modules
    }

    /// blake3 of the engine's compatibility hash and wasmtime version: compiled code and
    /// results from another engine identity are not interchangeable.
    pub fn engine_id(&self) -> [u8; 32] {
        self.inner.modules.engine_id()
    }

    fn spec(id: &str) -> Result<&'static RuntimeSpec, Error> {
        let catalog = Catalog::embedded();
        catalog.get(id).ok_or_else(|| Error::UnknownRuntime {
            id: id.to_string(),
            known: catalog.ids().join(", "),
        })
    }

    /// The runtime `id`, installed (through its package client) and compiled on first use.
    /// `python` starts from dvm's standard-library snapshot (see [`Dvm::runtime_preloaded`]),
    /// made when it is installed; [`Dvm::runtime_cold`] is the catalogue module alone.
    pub fn runtime(&self, id: &str) -> Result<Runtime, Error> {
        self.runtime_with_progress(id, &no_progress())
    }

    /// [`Dvm::runtime`], reporting install and compile steps to `progress`.
    pub fn runtime_with_progress(&self, id: &str, progress: &Progress) -> Result<Runtime, Error> {
        let open = lock(&self.inner.runtimes).get(id).cloned();
        if let Some(runtime) = open {
            // A cold default is looked at again: its snapshot may have been built since.
            if runtime.warm.is_some() || !runtime.supports_preload() {
                return Ok(runtime.clone());
            }
            if let Some(warm) =
                self.open_default_snapshot(runtime.spec, &runtime.installed, false, progress)
            {
                lock(&self.inner.runtimes).insert(id.to_string(), warm.clone());
                return Ok(warm);
            }
            return Ok(runtime.clone());
        }
        let (spec, installed, fresh) = self.installed(id, progress)?;
        self.open_default(spec, installed, fresh, progress)
    }

    /// Installs a runtime through its package client (again, with `force`), and compiles it
    /// (with `python`, making its standard-library snapshot).
    pub fn install_runtime(
        &self,
        id: &str,
        force: bool,
        progress: &Progress,
    ) -> Result<Runtime, Error> {
        let spec = Self::spec(id)?;
        let installed =
            self.inner
                .installer
                .install(spec, &PackageSource::Fetch, force, progress)?;
        self.forget(id);
        self.open_default(spec, installed, true, progress)
    }

    /// Drops what this process holds open of runtime `id`.
    fn forget(&self, id: &str) {
        let mut runtimes = lock(&self.inner.runtimes);
        runtimes.remove(id);
        runtimes.remove(&preload::cold_label(id));
    }

    /// Opens the runtime a plain `runtime(id)` gives: the standard-library snapshot where the
    /// runtime has one (made now when `make`), else the catalogue module.
    fn open_default(
        &self,
        spec: &'static RuntimeSpec,
        installed: Installed,
        make: bool,
        progress: &Progress,
    ) -> Result<Runtime, Error> {
        if spec.capabilities().preload
            && let Some(runtime) = self.open_default_snapshot(spec, &installed, make, progress)
        {
            lock(&self.inner.runtimes).insert(spec.id.clone(), runtime.clone());
            progress(&crate::InstallStep::Done {
                runtime: spec.id.clone(),
            });
            return Ok(runtime);
        }
        let runtime =
            self.open_runtime(spec, installed, &preload::cold_label(&spec.id), progress)?;
        lock(&self.inner.runtimes).insert(spec.id.clone(), runtime.clone());
        Ok(runtime)
    }

    /// Installs a runtime from a package file the user brought (found by its sha256).
    pub fn import_runtime(&self, file: &Path, progress: &Progress) -> Result<Runtime, Error> {
        let spec = crate::guest::install::identify(file)?;
        let installed = self.inner.installer.install(
            spec,
            &PackageSource::File(file.to_path_buf()),
            true,
            progress,
        )?;
        self.forget(&spec.id);
        self.open_default(spec, installed, true, progress)
    }

    /// Opens the catalogue module of an installed runtime (compiling it on first use) and
    /// keeps it under `label`.
    fn open_runtime(
        &self,
        spec: &'static RuntimeSpec,
        installed: Installed,
        label: &str,
        progress: &Progress,
    ) -> Result<Runtime, Error> {
        let damaged = |message: String| Error::Damaged {
            runtime: spec.id.clone(),
            message,
        };
        let digest = preload::base_digest(spec, &installed)?;
        let path = installed
            .file(Role::Module)
            .ok_or_else(|| damaged("the module file is missing".into()))?;
        let bytes = spec.artifact(Role::Module).map_or(0, |a| a.size);
        let what = format!("runtime {}", spec.id);
        let read = || -> Result<Vec<u8>, Error> {
            let wasm =
                std::fs::read(&path).map_err(|source| crate::error::InstallError::Unreadable {
                    runtime: spec.id.clone(),
                    action: "read the module".into(),
                    source,
                })?;
            if blake3::hash(&wasm) != digest {
                return Err(damaged("the module no longer matches its hash".into()));
            }
            Ok(wasm)
        };
        let on_compile = || {
            progress(&crate::InstallStep::Compiling {
                runtime: spec.id.clone(),
                bytes,
            })
        };
        let (module, source) = self.module(&digest, &what, &read, &on_compile)?;
        let program = self.link(
            &spec.id,
            &what,
            module,
            digest,
            source,
            Abi::from_catalog(spec.abi),
        )?;
        let runtime = Runtime {
            spec,
            installed,
            program,
            base: digest,
            warm: None,
            runner: Arc::default(),
            prestarts: Arc::default(),
            built_in: Arc::default(),
        };
        lock(&self.inner.runtimes).insert(label.to_string(), runtime.clone());
        progress(&crate::InstallStep::Done {
            runtime: spec.id.clone(),
        });
        Ok(runtime)
    }

    /// Every catalogue runtime with its install state.
    pub fn runtime_statuses(&self) -> Vec<RuntimeStatus> {
        Catalog::embedded()
            .runtimes()
            .iter()
            .map(|spec| {
                let installed = self.inner.installer.installed(spec);
                let compiled = installed.as_ref().is_some_and(|installed| {
                    preload::base_digest(spec, installed)
                        .is_ok_and(|digest| self.inner.modules.contains(&digest))
                });
                RuntimeStatus {
                    id: spec.id.clone(),
                    language: spec.language,
                    capabilities: spec.capabilities(),
                    version: spec.version.clone(),
                    installed: installed.is_some(),
                    compiled,
                    size_on_disk: installed.as_ref().map_or(0, Installed::size),
                    package: format!("{} {}", spec.package.name, spec.package.version),
                }
            })
            .collect()
    }

    /// Re-hashes every installed runtime's files: `(id, problems)` for each installed one.
    pub fn verify_runtimes(&self) -> Result<Vec<(String, Vec<String>)>, Error> {
        let mut report = Vec::new();
        for spec in Catalog::embedded().runtimes() {
            if self.inner.installer.installed(spec).is_some() {
                report.push((spec.id.clone(), self.inner.installer.verify(spec)?));
            }
        }
        Ok(report)
    }
}
