//! The facade: one [`Dvm`] per process holds the engine and caches; a [`Program`] is a
//! loaded guest ready to run any number of times; a [`Runtime`] is an installed language
//! runtime that runs scripts.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use wasmtime::{InstancePre, Linker, Module};

use crate::deps;
use crate::engine::cache::{ModuleCache, ModuleSource};
use crate::engine::{self, Config, EpochTicker};
use crate::error::Error;
use crate::fs::{Mount, Scratch, WORKSPACE};
use crate::guest::catalog::{Catalog, Role, RuntimeSpec};
use crate::guest::install::{Installed, Installer, PackageSource, Progress};
use crate::guest::{self, Abi, snapshot};
use crate::outcome::Outcome;
use crate::sandbox::{self, GuestSetup, RunInput, SandboxState};
use crate::store::BlobStore;
use crate::workspace::Workspace;

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

/// An installed, compiled language runtime (see `runtime/catalog.toml`).
#[derive(Clone)]
pub struct Runtime {
    spec: &'static RuntimeSpec,
    installed: Installed,
    program: Program,
    /// `python`: the script runner as the guest compiled it (marshal data in hex), made on
    /// the first run; `None` inside when the guest could not make it.
    runner: Arc<std::sync::OnceLock<Option<String>>>,
    /// Sandboxes started ahead of demand (see [`Runtime::prestart`]).
    prestarts: Arc<Mutex<Prestarts>>,
    /// The guest's own distributions (normalised name → version), asked once.
    built_in: Arc<std::sync::OnceLock<std::collections::BTreeMap<String, String>>>,
}

/// A runtime's pool of prestarted sandboxes and how many it keeps.
#[derive(Default)]
struct Prestarts {
    target: usize,
    ready: std::collections::VecDeque<Prestarted>,
}

/// One prestarted sandbox: the way to claim it, and its run directory.
struct Prestarted {
    claims: std::sync::mpsc::SyncSender<sandbox::prestart::Claim>,
    scratch: Arc<Scratch>,
}

/// What `dvm runtimes list` shows about one runtime.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuntimeStatus {
    pub id: String,
    pub language: String,
    pub version: String,
    pub installed: bool,
    pub compiled: bool,
    /// Bytes of the runtime's files on disk (0 when not installed).
    pub size_on_disk: u64,
    pub package: String,
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
        let results = crate::results::ResultCache::local(&config.home, config.result_cache_bytes);
        Dvm::with_results(config, results)
    }

    /// [`Dvm::new`] with another result-cache store, e.g. one shared by many machines
    /// ([`crate::nats::JetStreamBackend`]).
    pub fn with_results(
        config: Config,
        results: crate::results::ResultCache,
    ) -> Result<Dvm, Error> {
        crate::home::ensure_private(&config.home)?;
        let engine = engine::engine(&config)?;
        let mut linkers = HashMap::new();
        for abi in [Abi::Command, Abi::PythonReactor] {
            let linker = abi.linker(&engine)?;
            let defined = guest::defined_imports(&engine, &linker);
            linkers.insert(abi, AbiLinker { linker, defined });
        }
        Ok(Dvm {
            inner: Arc::new(Inner {
                ticker: EpochTicker::new(&engine),
                modules: ModuleCache::new(&config.home, &engine),
                installer: Installer::new(&config.home),
                results,
                config,
                engine,
                linkers,
                loaded: Mutex::default(),
                runtimes: Mutex::default(),
                threads: sandbox::threads::SandboxThreads::default(),
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
        })
    }

    fn module(
        &self,
        digest: &blake3::Hash,
        what: &str,
        wasm: &dyn Fn() -> Result<Vec<u8>, Error>,
        on_compile: &dyn Fn(),
    ) -> Result<(Module, ModuleSource), Error> {
        let key = *digest.as_bytes();
        if let Some(module) = lock(&self.inner.loaded).get(&key) {
            return Ok((module.clone(), ModuleSource::Memory));
        }
        let (module, source) = self.inner.modules.load_or_compile(
            &self.inner.engine,
            digest,
            what,
            wasm,
            on_compile,
        )?;
        lock(&self.inner.loaded).insert(key, module.clone());
        Ok((module, source))
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
    pub fn runtime(&self, id: &str) -> Result<Runtime, Error> {
        self.runtime_with_progress(id, &no_progress())
    }

    /// [`Dvm::runtime`], reporting install and compile steps to `progress`.
    pub fn runtime_with_progress(&self, id: &str, progress: &Progress) -> Result<Runtime, Error> {
        if let Some(runtime) = lock(&self.inner.runtimes).get(id) {
            return Ok(runtime.clone());
        }
        let spec = Self::spec(id)?;
        let installed = match self.inner.installer.installed(spec) {
            Some(installed) => installed,
            None => self
                .inner
                .installer
                .install(spec, &PackageSource::Fetch, false, progress)?,
        };
        self.open_runtime(spec, installed, progress)
    }

    /// Installs a runtime through its package client (again, with `force`), and compiles it.
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
        lock(&self.inner.runtimes).remove(id);
        self.open_runtime(spec, installed, progress)
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
        lock(&self.inner.runtimes).remove(&spec.id);
        self.open_runtime(spec, installed, progress)
    }

    fn open_runtime(
        &self,
        spec: &'static RuntimeSpec,
        installed: Installed,
        progress: &Progress,
    ) -> Result<Runtime, Error> {
        let damaged = |message: String| Error::Damaged {
            runtime: spec.id.clone(),
            message,
        };
        let entry = installed
            .record
            .files
            .iter()
            .find(|f| f.role == Role::Module)
            .ok_or_else(|| damaged("the install record names no module".into()))?;
        let digest = blake3::Hash::from_hex(&entry.blake3)
            .map_err(|_| damaged("the install record has a bad hash".into()))?;
        let path = installed
            .file(Role::Module)
            .ok_or_else(|| damaged("the module file is missing".into()))?;
        let bytes = entry.size;
        let what = format!("runtime {}", spec.id);
        let read = || -> Result<Vec<u8>, Error> {
            let wasm = std::fs::read(&path)
                .map_err(|e| damaged(format!("cannot read the module: {e}")))?;
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
            runner: Arc::default(),
            prestarts: Arc::default(),
            built_in: Arc::default(),
        };
        lock(&self.inner.runtimes).insert(spec.id.clone(), runtime.clone());
        progress(&crate::InstallStep::Done {
            runtime: spec.id.clone(),
        });
        Ok(runtime)
    }

    /// The runtime `id` started from a snapshot with `modules` already imported, made on
    /// first use (by instrumenting the runtime's module with wasmtime-wizer, importing the
    /// modules in a sandbox laid out like every run, and snapshotting it) and kept
    /// content-addressed under `$DVM_HOME`. Sandboxes from it skip the imports. Only
    /// `python` supports it.
    pub fn runtime_preloaded(
        &self,
        id: &str,
        modules: &[String],
        progress: &Progress,
    ) -> Result<Runtime, Error> {
        let base = self.runtime_with_progress(id, progress)?;
        if modules.is_empty() {
            return Ok(base);
        }
        if base.program.abi != Abi::PythonReactor {
            return Err(Error::InvalidInput(format!(
                "--preload needs the python runtime; {id} cannot be snapshotted"
            )));
        }
        let mut modules = modules.to_vec();
        modules.sort();
        modules.dedup();
        if let Some(bad) = modules.iter().find(|m| !snapshot::valid_module_name(m)) {
            return Err(Error::InvalidInput(format!(
                "`{bad}` is not a Python module name (letters, digits, `_`, dotted)"
            )));
        }
        let label = format!("{id}+{}", modules.join(","));
        if let Some(runtime) = lock(&self.inner.runtimes).get(&label) {
            return Ok(runtime.clone());
        }
        let key = snapshot::key(base.module_digest(), &modules);
        let dir = self.inner.config.home.join("snapshots").join("v1");
        let index = dir.join(key.to_hex().as_str());
        let blobs = BlobStore::new(&self.inner.config.home);
        let home_error = |source| Error::Home {
            path: dir.clone(),
            source,
        };
        let recorded = |index: &Path| {
            std::fs::read_to_string(index)
                .ok()
                .and_then(|hex| blake3::Hash::from_hex(hex.trim()).ok())
                .filter(|digest| blobs.path(digest).is_file())
        };
        let digest = match recorded(&index) {
            Some(digest) => digest,
            None => {
                std::fs::create_dir_all(&dir).map_err(home_error)?;
                let lock_file = std::fs::File::create(dir.join(format!("{}.lock", key.to_hex())))
                    .map_err(home_error)?;
                lock_file.lock().map_err(home_error)?;
                match recorded(&index) {
                    Some(digest) => digest,
                    None => {
                        // Fail fast, before minutes of snapshotting, if an import fails.
                        let probe = base.run_script(
                            "preload.py",
                            snapshot::preload_code(&modules).as_bytes(),
                            &RunInput::default(),
                        )?;
                        if probe.status != crate::Status::Ok {
                            return Err(Error::InvalidInput(format!(
                                "cannot preload {}:\n{}",
                                modules.join(", "),
                                String::from_utf8_lossy(&probe.stderr).trim_end()
                            )));
                        }
                        progress(&crate::InstallStep::Snapshotting {
                            runtime: id.to_string(),
                            modules: modules.clone(),
                        });
                        let wasm = self.make_snapshot(&base, &modules)?;
                        let added = blobs
                            .add(&mut wasm.as_slice(), wasm.len() as u64)
                            .map_err(home_error)?;
                        crate::engine::cache::publish(&index, added.blake3.to_hex().as_bytes())
                            .map_err(Error::Internal)?;
                        added.blake3
                    }
                }
            }
        };
        let path = blobs.path(&digest);
        let what = format!("runtime {label}");
        let read = || -> Result<Vec<u8>, Error> {
            let wasm = std::fs::read(&path)
                .map_err(|e| Error::Internal(format!("cannot read the snapshot: {e}")))?;
            if blake3::hash(&wasm) != digest {
                return Err(Error::Damaged {
                    runtime: id.to_string(),
                    message: format!("the {label} snapshot no longer matches its hash"),
                });
            }
            Ok(wasm)
        };
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        let on_compile = || {
            progress(&crate::InstallStep::Compiling {
                runtime: label.clone(),
                bytes,
            })
        };
        let (module, source) = self.module(&digest, &what, &read, &on_compile)?;
        let program = self.link(&label, &what, module, digest, source, Abi::PythonReactor)?;
        let runtime = Runtime {
            spec: base.spec,
            installed: base.installed.clone(),
            program,
            runner: Arc::default(),
            prestarts: Arc::default(),
            built_in: Arc::default(),
        };
        lock(&self.inner.runtimes).insert(label, runtime.clone());
        Ok(runtime)
    }

    /// Instruments `base`'s module, imports `modules` in a sandbox laid out like a run, and
    /// returns the snapshot as a module.
    fn make_snapshot(&self, base: &Runtime, modules: &[String]) -> Result<Vec<u8>, Error> {
        let fail = |message: String| Error::Install {
            runtime: base.id().to_string(),
            message,
        };
        let path = base
            .installed
            .file(Role::Module)
            .ok_or_else(|| fail("the module file is missing".into()))?;
        let wasm =
            std::fs::read(&path).map_err(|e| fail(format!("cannot read the module: {e}")))?;
        let scratch = Scratch::new()?;
        let setup = base.script_setup(&scratch);
        let input = RunInput {
            limits: crate::Limits {
                deadline: std::time::Duration::from_secs(600),
                memory_bytes: 2 << 30,
                ..crate::Limits::default()
            },
            ..RunInput::default()
        };
        let code = snapshot::preload_code(modules);
        let dvm = self.clone();
        let linker = self.inner.linkers[&Abi::PythonReactor].linker.clone();
        let runtime = base.id().to_string();
        let _active = self.inner.ticker.activate()?;
        // On a sandbox thread: the guest needs its deep wasm stack while it imports.
        let made = self.inner.threads.run(move || -> Result<_, Error> {
            let fail = |message: String| Error::Install {
                runtime: runtime.clone(),
                message,
            };
            let wizer = wasmtime_wizer::Wizer::new();
            let (context, instrumented) = wizer
                .instrument(&wasm)
                .map_err(|e| fail(format!("cannot instrument the module: {e:#}")))?;
            // Compiled through the module cache: every preload set of this runtime starts
            // from the same instrumented module.
            let digest = blake3::hash(&instrumented);
            let (module, _) = dvm.module(
                &digest,
                "the instrumented module",
                &|| Ok(instrumented.clone()),
                &|| {},
            )?;
            let pre = linker
                .instantiate_pre(&module)
                .map_err(|e| fail(format!("cannot link the instrumented module: {e:#}")))?;
            sandbox::with_instance(&pre, &setup, &input, |store, instance| {
                let status = guest::python::turn_entry(code)(store, instance)?;
                if status != 0 {
                    wasmtime::bail!("the preload turn exited with status {status}");
                }
                let mut live = snapshot::LiveInstance {
                    store,
                    instance,
                    missing: None,
                };
                let wasm = snapshot::block_on(wizer.snapshot(&context, &mut live))?;
                match live.missing {
                    Some(missing) => wasmtime::bail!("the instance has no {missing} to snapshot"),
                    None => Ok(wasm),
                }
            })
        })??;
        made.map_err(|outcome| {
            fail(format!(
                "importing {} failed ({:?}{}):\n{}",
                modules.join(", "),
                outcome.status,
                outcome.trap.map(|t| format!(": {t}")).unwrap_or_default(),
                String::from_utf8_lossy(&outcome.stderr)
            ))
        })
    }

    /// Every catalogue runtime with its install state.
    pub fn runtime_statuses(&self) -> Vec<RuntimeStatus> {
        Catalog::embedded()
            .runtimes()
            .iter()
            .map(|spec| {
                let installed = self.inner.installer.installed(spec);
                let compiled = installed.as_ref().is_some_and(|installed| {
                    installed
                        .record
                        .files
                        .iter()
                        .find(|f| f.role == Role::Module)
                        .and_then(|f| blake3::Hash::from_hex(&f.blake3).ok())
                        .is_some_and(|digest| self.inner.modules.contains(&digest))
                });
                RuntimeStatus {
                    id: spec.id.clone(),
                    language: spec.language.clone(),
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

    pub(crate) fn instantiate_only(&self) -> Result<wasmtime::Store<SandboxState>, Error> {
        sandbox::instantiate_only(&self.pre, &self.name)
    }

    /// Runs the program once in a fresh sandbox, on its own thread with room for the guest's
    /// wasm stack. Errors are problems with the input or the host; every way the guest can
    /// end (including traps and limits) is an [`Outcome`].
    pub fn run(&self, input: &RunInput) -> Result<Outcome, Error> {
        let identity = self.key_identity(None);
        in_workspace(&self.dvm, input, None, identity, |workspace, grants| {
            let mut setup = GuestSetup::command(&self.name, input);
            setup.mounts = sandbox_mounts(workspace.scratch());
            setup.mounts.extend(grants);
            self.run_with(setup, input)
        })
    }

    /// The part of a result-cache key that names what runs: the runtime (when a catalogue
    /// runtime runs a script), the module, the engine.
    fn key_identity(&self, runtime: Option<&RuntimeSpec>) -> crate::results::KeyBuilder {
        let mut key = crate::results::KeyBuilder::new();
        if let Some(spec) = runtime {
            key.str(2, &spec.id).str(3, &spec.version);
        }
        key.str(4, &self.digest.to_hex())
            .bytes(5, &self.dvm.engine_id())
            .str(6, engine::cache::WASMTIME_VERSION);
        key
    }

    fn run_with(&self, setup: GuestSetup, input: &RunInput) -> Result<Outcome, Error> {
        self.run_entry(setup, input, self.abi.entry())
    }

    /// Runs on a sandbox thread (reused across runs) with room for the guest's wasm stack.
    fn run_entry(
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

impl Runtime {
    pub(crate) fn program(&self) -> &Program {
        &self.program
    }

    pub(crate) fn module_digest(&self) -> &blake3::Hash {
        &self.program.digest
    }

    /// Size of the runtime's wasm module.
    pub(crate) fn module_bytes(&self) -> u64 {
        self.spec.artifact(Role::Module).map_or(0, |a| a.size)
    }

    /// Pool slots one instance of this runtime takes of the scarcest kind: the pool has as
    /// many tables and memories as instances; each defined one takes a slot, and a store's
    /// GC heap (made when the guest first throws a wasm exception) takes a memory slot too.
    pub(crate) fn pool_units(&self) -> usize {
        let needs = self.program.pre.module().resources_required();
        needs.num_tables.max(needs.num_memories + 1).max(1) as usize
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// Whether [`Dvm::runtime_preloaded`] can snapshot this runtime.
    pub fn supports_preload(&self) -> bool {
        self.program.abi == Abi::PythonReactor
    }

    pub fn version(&self) -> &str {
        &self.spec.version
    }

    /// Whether [`Runtime::prestart`] works for this runtime: a Python WASI command, which
    /// cannot be snapshotted.
    pub fn supports_prestart(&self) -> bool {
        self.program.abi == Abi::Command && self.spec.language == "python"
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
            .map_err(|e| Error::Internal(format!("cannot start a prestart thread: {e}")))?;
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
    fn run_prestarted(
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

    pub fn language(&self) -> &str {
        &self.spec.language
    }

    /// The mounts and environment every script run (and every snapshot) of this runtime
    /// gets, in one fixed order; the argv is the python turn's (others replace it).
    pub(crate) fn script_setup(&self, scratch: &Scratch) -> GuestSetup {
        let mut mounts = match self.program.abi {
            Abi::PythonReactor => guest::python::mounts(&self.spec.version, &self.installed.tree()),
            Abi::Command => Vec::new(),
        };
        mounts.extend(sandbox_mounts(scratch));
        let env = self
            .spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        GuestSetup {
            argv: guest::python::turn_argv(),
            env,
            mounts,
        }
    }

    /// Where the answer this runtime's guest module gave to `question` (a program) is kept,
    /// so later processes read it instead of asking again.
    fn guest_answer_path(&self, question: &str, suffix: &str) -> std::path::PathBuf {
        let mut hasher = blake3::Hasher::new();
        hasher.update(self.program.digest.as_bytes());
        hasher.update(question.as_bytes());
        let name = format!("{}{suffix}", hasher.finalize().to_hex());
        let home = &self.program.dvm.inner.config.home;
        home.join("runners").join("v1").join(name)
    }

    /// Has the guest compile the python script runner once, so later turns load it instead
    /// of compiling it. Falls back to compiling it per run if anything goes wrong.
    fn compile_runner(&self) -> Option<String> {
        let (code, runner) = guest::python::runner_compile_turn();
        // Kept per guest module and runner text, so a one-shot process reads it instead of
        // spending a turn on it.
        let cached = self.guest_answer_path(runner, "");
        if let Ok(hex) = std::fs::read_to_string(&cached)
            && guest::python::is_compiled_runner(&hex)
        {
            return Some(hex);
        }
        let scratch = Scratch::new().ok()?;
        let input = RunInput {
            stdin: runner.as_bytes().to_vec(),
            ..RunInput::default()
        };
        let outcome = self
            .program
            .run_entry(
                self.script_setup(&scratch),
                &input,
                guest::python::turn_entry(code),
            )
            .ok()?;
        let hex = String::from_utf8(outcome.stdout).ok()?;
        if outcome.status != crate::Status::Ok || !guest::python::is_compiled_runner(&hex) {
            return None;
        }
        // A cache that cannot be written only costs the next process this turn again.
        let _ = crate::engine::cache::publish(&cached, hex.as_bytes());
        Some(hex)
    }

    /// Keeps `count` python instances alive after one turn of `code` each (what an idle
    /// session holds) and calls `measure` while they are all held. For `dvm bench`.
    /// Whether [`Runtime::session`] works for this runtime (it needs the python guest's
    /// `turn` export).
    pub fn supports_sessions(&self) -> bool {
        self.program.abi == Abi::PythonReactor
    }

    /// Opens a session: one interpreter kept alive across calls (see [`crate::session`]).
    pub fn session(
        &self,
        options: crate::session::SessionOptions,
    ) -> Result<crate::session::Session, Error> {
        if !self.supports_sessions() {
            return Err(Error::InvalidInput(format!(
                "`{}` has no sessions: its guest is a WASI command that exits after one \
                 program; use the `python` runtime for a session, or run one-shot",
                self.spec.id
            )));
        }
        let workspace = match options.workspace {
            Some(workspace) => workspace,
            None => Workspace::new()?,
        };
        let mut setup = self.script_setup(workspace.scratch());
        let input = RunInput {
            packages: options.packages.clone(),
            ..RunInput::default()
        };
        let site = self.package_site(&input)?;
        if let Some((site, guest)) = &site {
            setup.mounts.push(Mount::read_only(site, *guest));
        }
        let pre = self.program.pre.clone();
        let dvm = self.program.dvm.clone();
        let env = options.env.clone();
        let session =
            crate::session::Session::start(&self.spec.id, workspace, move |ready, turns| {
                sandbox::session::serve(&pre, &setup, &env, ready, turns, || {
                    dvm.inner
                        .ticker
                        .activate()
                        .map(|active| Box::new(active) as Box<dyn Send>)
                })
            })?;
        if site.is_some() {
            // The packages go on sys.path in a first, silent call.
            let setup_call = format!("import sys\nsys.path.append({:?})", deps::GUEST_SITE);
            let outcome = session.run(&setup_call, &RunInput::default())?;
            if outcome.status != crate::Status::Ok {
                return Err(Error::Internal(format!(
                    "the session could not add its packages to sys.path: {}",
                    String::from_utf8_lossy(&outcome.stderr)
                )));
            }
            session.forget_calls();
        }
        Ok(session)
    }

    pub(crate) fn with_idle_turns(
        &self,
        count: usize,
        code: &str,
        measure: impl FnOnce(),
    ) -> Result<(), Error> {
        if self.program.abi != Abi::PythonReactor {
            return Err(Error::InvalidInput(format!(
                "`{}` has no turns to keep an instance between",
                self.spec.id
            )));
        }
        let (ready, turned) = std::sync::mpsc::channel::<Result<(), String>>();
        let mut releases = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for _ in 0..count {
            let (release, released) = std::sync::mpsc::channel::<()>();
            releases.push(release);
            let scratch = Scratch::new()?;
            let setup = self.script_setup(&scratch);
            let pre = self.program.pre.clone();
            let entry = guest::python::turn_entry(code.to_string());
            let ready = ready.clone();
            let thread = std::thread::Builder::new()
                .stack_size(engine::RUN_THREAD_STACK_BYTES)
                .spawn(move || {
                    let held = sandbox::with_instance(
                        &pre,
                        &setup,
                        &RunInput::default(),
                        |store, instance| {
                            let code = entry(store, instance)?;
                            let _ = ready.send(Ok(()));
                            let _ = released.recv();
                            Ok(code)
                        },
                    );
                    if !matches!(held, Ok(Ok(0))) {
                        let _ =
                            ready.send(Err(format!("{:?}", held.map(|r| r.map_err(|o| o.status)))));
                    }
                    drop(scratch);
                })
                .map_err(|e| Error::Internal(format!("cannot start a thread: {e}")))?;
            threads.push(thread);
        }
        let mut failed = None;
        for _ in 0..count {
            match turned.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed = Some(e),
                Err(_) => failed = Some("a held instance ended early".into()),
            }
            if failed.is_some() {
                break;
            }
        }
        if failed.is_none() {
            measure();
        }
        drop(releases);
        for thread in threads {
            let _ = thread.join();
        }
        match failed {
            Some(e) => Err(Error::Internal(format!("an idle turn failed: {e}"))),
            None => Ok(()),
        }
    }

    /// The package set's directory to mount and where, checking this runtime can use it.
    fn package_site(
        &self,
        input: &RunInput,
    ) -> Result<Option<(std::path::PathBuf, &'static str)>, Error> {
        let Some(packages) = &input.packages else {
            return Ok(None);
        };
        if packages.lock.runtime != self.spec.id {
            return Err(Error::InvalidInput(format!(
                "these packages were installed for `{}`, not `{}`",
                packages.lock.runtime, self.spec.id
            )));
        }
        let guest = match self.spec.language.as_str() {
            "python" => deps::GUEST_SITE,
            _ => deps::npm::GUEST_NODE_MODULES,
        };
        Ok(packages.site().map(|site| (site.to_path_buf(), guest)))
    }

    /// Runs a small Python program in a fresh sandbox of this runtime and returns its
    /// stdout, or an error naming `what`.
    fn ask_guest(&self, what: &str, code: &str, stdin: &[u8]) -> Result<String, Error> {
        let input = RunInput {
            stdin: stdin.to_vec(),
            ..RunInput::default()
        };
        let outcome = self.run_script("__dvm_ask__.py", code.as_bytes(), &input)?;
        if outcome.status != crate::Status::Ok {
            return Err(Error::Internal(format!(
                "the {} guest could not {what}: {}",
                self.spec.id,
                String::from_utf8_lossy(&outcome.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&outcome.stdout).into_owned())
    }

    /// The distributions this runtime has built in (normalised name → version).
    pub fn built_in_packages(&self) -> Result<std::collections::BTreeMap<String, String>, Error> {
        if let Some(known) = self.built_in.get() {
            return Ok(known.clone());
        }
        let mut known = std::collections::BTreeMap::new();
        if self.spec.language == "python" {
            // Kept per guest module, so a one-shot process reads it instead of asking.
            let cached = self.guest_answer_path(deps::LIST_DISTRIBUTIONS, ".dists");
            let listing = match std::fs::read_to_string(&cached) {
                Ok(listing) => listing,
                Err(_) => {
                    let listing =
                        self.ask_guest("list its packages", deps::LIST_DISTRIBUTIONS, b"")?;
                    let _ = crate::engine::cache::publish(&cached, listing.as_bytes());
                    listing
                }
            };
            for line in listing.lines() {
                if let Some((name, version)) = line.split_once("==") {
                    known.insert(deps::normalize(name), version.to_string());
                }
            }
        }
        Ok(self.built_in.get_or_init(|| known).clone())
    }

    /// Installs packages for this runtime: Python wheels (see [`crate::deps`]) or npm
    /// packages (see [`crate::deps::npm`]); pass the set in [`RunInput::packages`] to runs.
    pub fn install_packages(
        &self,
        request: &deps::PackageRequest,
    ) -> Result<deps::PackageSet, Error> {
        let home = &self.program.dvm.inner.config.home;
        match self.spec.language.as_str() {
            "python" => {}
            "javascript" => return deps::npm::NpmStore::new(home).install(&self.spec.id, request),
            other => {
                return Err(Error::InvalidInput(format!(
                    "dvm installs Python and JavaScript packages; `{}` is a {other} runtime",
                    self.spec.id
                )));
            }
        }
        let built_in = self.built_in_packages()?;
        let installed = deps::PackageStore::new(home).install(
            &self.spec.id,
            &self.spec.version,
            &built_in,
            request,
        );
        match installed {
            Err(Error::Packages(message)) if message.contains("no pure-Python wheel") => {
                Err(Error::Packages(self.built_in_elsewhere(message, request)))
            }
            other => other,
        }
    }

    /// Adds to a "no pure wheel" message which installed Python runtime has the packages
    /// built in.
    fn built_in_elsewhere(&self, message: String, request: &deps::PackageRequest) -> String {
        let dvm = &self.program.dvm;
        let hints: Vec<String> = Catalog::embedded()
            .all_ids()
            .into_iter()
            .filter(|id| *id != self.spec.id)
            .filter_map(|id| {
                let spec = Dvm::spec(&id).ok()?;
                if spec.language != "python" || dvm.inner.installer.installed(spec).is_none() {
                    return None;
                }
                let built_in = dvm.runtime(&id).ok()?.built_in_packages().ok()?;
                let names: Vec<String> = request
                    .requirements
                    .iter()
                    .filter_map(|text| {
                        let name = deps::normalize(
                            text.split(['<', '>', '=', '!', '~', ';', '[', ' '])
                                .next()?,
                        );
                        built_in
                            .get(&name)
                            .map(|version| format!("{name} {version}"))
                    })
                    .collect();
                (!names.is_empty()).then(|| {
                    format!(
                        "The `{id}` runtime has {} built in: use --runtime {id}",
                        names.join(", ")
                    )
                })
            })
            .collect();
        if hints.is_empty() {
            message
        } else {
            format!("{message}.\n{}.", hints.join(". "))
        }
    }

    /// The modules a Python script imports that this runtime cannot import yet: not the
    /// standard library, not its built-in packages, not `local` modules (files and
    /// directories beside the script), each with the distribution that provides it.
    pub fn detect_imports(
        &self,
        source: &[u8],
        local: &[String],
    ) -> Result<Vec<deps::DetectedImport>, Error> {
        if self.spec.language != "python" {
            return Ok(Vec::new());
        }
        let found = self.ask_guest("read the script's imports", deps::DETECT_IMPORTS, source)?;
        Ok(deps::parse_detected(&found)
            .into_iter()
            .filter(|import| !local.contains(&import.module))
            .collect())
    }

    /// Runs a python-reactor script through `run()` and the argv, the guest's own entry.
    pub(crate) fn run_via_argv(
        &self,
        name: &str,
        source: &[u8],
        input: &RunInput,
    ) -> Result<Outcome, Error> {
        if self.program.abi != Abi::PythonReactor {
            return self.run_script(name, source, input);
        }
        let scratch = Scratch::new()?;
        scratch.write(name, source)?;
        let mut setup = self.script_setup(&scratch);
        setup.argv.push(format!("{WORKSPACE}/{name}"));
        setup.argv.extend(input.args.iter().cloned());
        self.program.run_with(setup, input)
    }

    /// Runs a script in a fresh sandbox: the script is written to a private working
    /// directory mounted at `/workspace` and run from there, with a private writable `/tmp`.
    /// `name` is its file name (`main.py`, `app.mjs`…); it picks module mode for `.mjs`.
    pub fn run_script(
        &self,
        name: &str,
        source: &[u8],
        input: &RunInput,
    ) -> Result<Outcome, Error> {
        if self.supports_prestart()
            && let Some(ran) = self.run_prestarted(name, source, input)
        {
            return ran;
        }
        let identity = self.program.key_identity(Some(self.spec));
        in_workspace(
            &self.program.dvm,
            input,
            Some((name, source)),
            identity,
            |workspace, grants| {
                let script = crate::workspace::guest_path(name)?;
                let mut setup = self.script_setup(workspace.scratch());
                setup.mounts.extend(grants);
                let site = self.package_site(input)?;
                if let Some((site, guest)) = &site {
                    setup.mounts.push(Mount::read_only(site, *guest));
                    if self.program.abi == Abi::Command && self.spec.language == "python" {
                        setup
                            .env
                            .push(("PYTHONPATH".to_string(), deps::GUEST_SITE.to_string()));
                    }
                }
                match self.program.abi {
                    // The cheapest way into the python guest: one turn on a fresh instance, with
                    // the same behaviour as `python SCRIPT ARGS…` (see `python::script_turn`).
                    Abi::PythonReactor => {
                        let runner = self.runner.get_or_init(|| self.compile_runner()).as_deref();
                        let mut code =
                            guest::python::script_turn(&script, source, &input.args, runner);
                        if site.is_some() {
                            code = format!(
                                "__import__(\"sys\").path.append({:?})\n{code}",
                                deps::GUEST_SITE
                            );
                        }
                        self.program
                            .run_entry(setup, input, guest::python::turn_entry(code))
                    }
                    Abi::Command => {
                        let template = match (&self.spec.module_argv, name.ends_with(".mjs")) {
                            (Some(module_argv), true) => module_argv,
                            _ => &self.spec.argv,
                        };
                        setup.argv = template
                            .iter()
                            .map(|arg| arg.replace("{script}", &script))
                            .chain(input.args.iter().cloned())
                            .collect();
                        self.program.run_with(setup, input)
                    }
                }
            },
        )
    }
}

/// The mounts every sandbox has: a private `/tmp` and the workspace, at `/workspace` and at
/// `/`. WASI has no working directory: wasi-libc starts every guest at `/`, so mounting the
/// workspace there as well makes relative paths and `os.getcwd()`-based paths land in it,
/// while longer mounts (the runtime's own, grants) still win.
fn sandbox_mounts(scratch: &Scratch) -> Vec<Mount> {
    vec![
        Mount::read_write(scratch.tmp(), "/tmp"),
        Mount::read_write(scratch.workspace(), WORKSPACE),
        Mount::read_write(scratch.workspace(), "/"),
    ]
}

/// Guest paths a grant may not take.
const RESERVED: &[&str] = &[
    WORKSPACE,
    "/tmp",
    "/usr",
    "/usr/local",
    "/usr/local/lib",
    "/packages",
    deps::GUEST_SITE,
    deps::npm::GUEST_NODE_MODULES,
];

/// Runs in the input's workspace (or a fresh one, removed afterwards) with `script` written
/// into it first, passes `run` the grants' mounts, and reports the regular files the run
/// created or changed there. A deterministic run without grants is looked up in the result
/// cache under `identity` plus everything else it depends on, and stored after it ran.
fn in_workspace(
    dvm: &Dvm,
    input: &RunInput,
    script: Option<(&str, &[u8])>,
    identity: crate::results::KeyBuilder,
    run: impl FnOnce(&Workspace, Vec<Mount>) -> Result<Outcome, Error>,
) -> Result<Outcome, Error> {
    input.limits.validate()?;
    let grants = input
        .grants
        .iter()
        .map(|grant| {
            let grant = grant.validated(RESERVED)?;
            Ok(Mount {
                host: grant.host,
                guest: grant.guest,
                writable: grant.writable,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let workspace = match &input.workspace {
        Some(workspace) => workspace.clone(),
        None => Workspace::new()?,
    };
    if let Some((name, source)) = script {
        workspace.write(name, source)?;
    }
    let results = &dvm.inner.results;
    let key = match (input.deterministic, &input.cache) {
        (Some(determinism), crate::results::CacheMode::Auto) if grants.is_empty() => Some(
            result_key(identity, input, script, &workspace, determinism)?,
        ),
        _ => None,
    };
    if let Some(key) = &key
        && let Some(hit) = results.get(key)
    {
        for (file, bytes) in &hit.files {
            workspace.write(&file.path, bytes)?;
        }
        return Ok(hit.outcome);
    }
    let before = workspace.state()?;
    let mut outcome = run(&workspace, grants)?;
    outcome.files = workspace.changes(&before, input.limits.disk_bytes)?;
    if let Some(key) = key {
        outcome.cache = crate::results::CacheStatus::Miss;
        // Output files are read whole into memory to be stored: a run whose hashed outputs
        // are over the bound is not stored (a later run recomputes it).
        let kept: u64 = outcome
            .files
            .iter()
            .filter(|file| file.blake3.is_some())
            .fold(0, |total, file| total.saturating_add(file.size));
        if kept > MAX_CACHED_OUTPUT_BYTES {
            tracing::info!(
                "result cache: not storing this run: its output files are {kept} bytes, over \
                 the {MAX_CACHED_OUTPUT_BYTES}-byte bound for one entry"
            );
        } else if crate::results::storable(&outcome) {
            let read =
                |file: &crate::OutputFile| workspace.read(&file.path, MAX_CACHED_OUTPUT_BYTES).ok();
            // A cache that cannot be written costs only a later recomputation.
            if let Err(e) = results.put(&key, &outcome, read) {
                tracing::warn!("{e}");
            }
        }
        outcome.cache_key = Some(key);
    }
    Ok(outcome)
}

/// Bytes of output files one result-cache entry may hold (they pass through memory).
const MAX_CACHED_OUTPUT_BYTES: u64 = 64 << 20;

/// The result-cache key of a run: `identity`, then the script, the workspace before the
/// run, the packages, argv, environment, stdin, limits and seed.
fn result_key(
    mut key: crate::results::KeyBuilder,
    input: &RunInput,
    script: Option<(&str, &[u8])>,
    workspace: &Workspace,
    determinism: crate::Determinism,
) -> Result<String, Error> {
    if let Some((name, source)) = script {
        key.str(10, name).bytes(11, source);
    }
    key.str(12, &workspace.tree_root()?);
    let lock = match &input.packages {
        Some(packages) => serde_json::to_string(&packages.lock)
            .map_err(|e| Error::Internal(format!("cannot encode the package lock: {e}")))?,
        None => String::new(),
    };
    key.str(13, &lock).strings(14, &input.args);
    key.u64(15, input.env.len() as u64);
    for (name, value) in &input.env {
        key.str(16, name).str(17, value);
    }
    key.bytes(18, &input.stdin)
        .limits(&input.limits)
        .u64(50, determinism.seed);
    Ok(key.finish())
}
