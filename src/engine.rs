//! The process-wide half of dvm: one wasmtime `Engine`, the epoch ticker, the pooling
//! allocator and the compiled-module cache.

pub(crate) mod cache;
pub(crate) mod functions;
#[cfg(target_os = "linux")]
pub(crate) mod residency;

pub use self::cache::WASMTIME_VERSION;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, Thread};
use std::time::Duration;

use crate::error::Error;
use crate::limits::MAX_MEMORY_BYTES;

/// Wasm stack available to a guest. CPython needs far more than wasmtime's 512 KiB default.
pub const WASM_STACK_BYTES: usize = 8 << 20;
/// Native stack of the thread a guest runs on: the wasm stack plus room for host frames.
pub(crate) const RUN_THREAD_STACK_BYTES: usize = WASM_STACK_BYTES + (8 << 20);
/// Default cap on the size of a module dvm will load.
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 512 << 20;
/// Default bound on the local result cache's size ([`crate::results::DEFAULT_MAX_BYTES`]).
pub(crate) const DEFAULT_RESULT_CACHE_BYTES: u64 = 1 << 30;
/// How often the epoch advances while guests run; a deadline is met within about one tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Pooling-allocator sizing: how many sandboxes can be live at once and how large each may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Sandboxes that can be instantiated at the same time. Default: 1,000.
    pub slots: u32,
    /// Largest linear memory any sandbox can be given. Default: 4 GiB (all of wasm32).
    pub max_memory_bytes: u64,
    /// Largest table any module can declare or grow to. Default: 131,072 elements.
    pub table_elements: usize,
    /// Largest instance metadata (globals, function references…). Default: 8 MiB.
    pub max_core_instance_bytes: usize,
    /// Bytes of each memory slot reset in place rather than unmapped when a sandbox ends.
    /// Default: 32 MiB.
    pub keep_resident_bytes: usize,
    /// Idle slots kept warm (memory resident, ready for the same module). Default: 16.
    pub warm_slots: u32,
    /// When a sandbox ends, also make the gaps between the pages it wrote resident, so that
    /// the slot's in-place reset keeps them all (wasmtime keeps at most 32 runs of pages and
    /// unmaps the rest, which the next sandbox faults back in one by one). Costs up to 8 MiB
    /// per warm slot; python hello 1.4 -> 0.8 ms. Linux only; process-wide once any pooled
    /// [`Dvm`](crate::Dvm) has turned it on. Default: `true`.
    pub fill_resident_gaps: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            slots: 1000,
            max_memory_bytes: MAX_MEMORY_BYTES,
            table_elements: 1 << 17,
            max_core_instance_bytes: 8 << 20,
            keep_resident_bytes: 32 << 20,
            warm_slots: 16,
            fill_resident_gaps: true,
        }
    }
}

/// Configuration of a [`Dvm`](crate::Dvm) instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where compiled modules (and later, runtimes and caches) live. Default: `$DVM_HOME`, or
    /// the platform cache directory + `/dvm`.
    pub home: PathBuf,
    /// `Some` to preallocate sandbox slots with the pooling allocator and copy-on-write memory
    /// images (fast instantiation); `None` to allocate on demand. Default: a 1,000-slot pool.
    pub pool: Option<PoolConfig>,
    /// Modules larger than this are refused before parsing. Default: 512 MiB.
    pub max_module_bytes: u64,
    /// Bound on the result cache under the home; least recently used entries are evicted
    /// past it. Default: 1 GiB.
    pub result_cache_bytes: u64,
    /// Re-hash every compiled module at every load instead of trusting the stamp of an
    /// earlier check. Default: `false` (`DVM_VERIFY=always` sets it).
    pub reverify_modules: bool,
    /// Where per-run scratch directories go; `None` for the system temp directory. The
    /// directory is process-wide: the first [`Dvm`](crate::Dvm) made decides it. Default:
    /// `$DVM_SCRATCH`.
    pub scratch: Option<PathBuf>,
    /// The Python that runs `pip download` for runtime and package installs. Default:
    /// `$DVM_PYTHON`, else `python3`.
    pub python: String,
    /// What pip and npm get of the operator's environment: the variables passed through
    /// (`PATH`, locale, proxies, CA bundles) and the package index and registry given as
    /// explicit flags. Default: read from the environment ([`crate::deps::ToolEnv::from_env`]).
    pub package_tools: crate::deps::ToolEnv,
    /// The configuration file (profiles, model settings, trusted cache keys); `None` for
    /// `HOME/config.toml` (see [`Config::config_file_path`]). Default: `$DVM_CONFIG`.
    pub config_file: Option<PathBuf>,
    /// More public keys whose result-cache entries are trusted, as text (`ed25519:…`); ones
    /// that do not parse are reported and not trusted. Default: `$DVM_CACHE_TRUST`, split at
    /// commas, spaces and newlines.
    pub cache_trust: Vec<String>,
    /// Whether snapshots for the library imports scripts make repeatedly are built without
    /// being asked (see [`WarmBuilds`]). Default: `$DVM_WARM_BUILDS` (`off`, `thread`,
    /// `process`), else [`WarmBuilds::Thread`].
    pub warm_builds: WarmBuilds,
}

/// How dvm builds a `python` snapshot for a set of library imports it has seen scripts make
/// repeatedly (see the README's Warm starts). A run never waits for one: it starts from the
/// best snapshot that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmBuilds {
    /// Never: snapshots are made only when asked (`--preload`, `dvm runtimes install python
    /// --preload …`).
    Off,
    /// On a background thread of this process, one at a time: for long-lived hosts (`dvm
    /// serve`, `dvm worker`, an embedding application).
    Thread,
    /// In a separate `dvm runtimes install --preload …` process that outlives this one, at low
    /// priority: for one-shot commands (`dvm run`), whose process ends before a build would.
    Process,
}

impl WarmBuilds {
    /// Reads `off`, `thread` or `process`.
    pub fn parse(text: &str) -> Option<WarmBuilds> {
        match text.trim() {
            "off" | "0" | "false" | "no" => Some(WarmBuilds::Off),
            "thread" | "on" | "1" | "true" | "yes" => Some(WarmBuilds::Thread),
            "process" => Some(WarmBuilds::Process),
            _ => None,
        }
    }
}

impl Config {
    /// The configuration the `dvm` command uses: the defaults, with each setting the
    /// environment gives taken from it (`DVM_HOME`, `DVM_VERIFY`, `DVM_SCRATCH`,
    /// `DVM_PYTHON`, `DVM_CONFIG`, `DVM_CACHE_TRUST`, `DVM_WARM_BUILDS`, and what pip and npm get: see [`crate::deps::ToolEnv`] and the README's
    /// Environment section). These are read here and nowhere
    /// deeper in the library.
    pub fn from_env() -> Config {
        let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        Config {
            home: default_home(),
            pool: Some(PoolConfig::default()),
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            result_cache_bytes: DEFAULT_RESULT_CACHE_BYTES,
            reverify_modules: std::env::var("DVM_VERIFY").is_ok_and(|v| v == "always"),
            scratch: var("DVM_SCRATCH").map(PathBuf::from),
            python: std::env::var("DVM_PYTHON")
                .unwrap_or_else(|_| crate::tool::DEFAULT_PYTHON.into()),
            package_tools: crate::deps::ToolEnv::from_env(),
            config_file: crate::profile::config_file_from_env(),
            cache_trust: cache_trust_from_env(),
            warm_builds: std::env::var("DVM_WARM_BUILDS")
                .ok()
                .and_then(|v| WarmBuilds::parse(&v))
                .unwrap_or(WarmBuilds::Thread),
        }
    }

    /// Where the configuration file is: [`Config::config_file`], else `HOME/config.toml`.
    pub fn config_file_path(&self) -> PathBuf {
        crate::profile::ConfigFile::path_in(&self.home, self.config_file.as_deref())
    }
}

/// The same as [`Config::from_env`], so that code written before the environment settings
/// became fields behaves as it did. An embedder that wants nothing taken from the
/// environment sets the fields it cares about after this, or builds the whole struct.
impl Default for Config {
    fn default() -> Self {
        Config::from_env()
    }
}

/// The keys `$DVM_CACHE_TRUST` lists (separated by commas, spaces or newlines), unparsed.
pub(crate) fn cache_trust_from_env() -> Vec<String> {
    std::env::var("DVM_CACHE_TRUST")
        .map(|text| split_keys(&text))
        .unwrap_or_default()
}

/// Splits a list of keys at commas, spaces and newlines, dropping empty entries.
fn split_keys(text: &str) -> Vec<String> {
    text.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .map(String::from)
        .collect()
}

/// `$DVM_HOME` if set, otherwise the platform cache directory + `/dvm`.
pub fn default_home() -> PathBuf {
    match std::env::var_os("DVM_HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home),
        _ => dirs::cache_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("dvm"),
    }
}

/// Builds the one engine configuration dvm uses. Anything that changes here changes the
/// engine's precompile compatibility hash, so cached modules from another setting are
/// recompiled rather than refused.
///
/// Compiled functions are kept in `functions` (Cranelift's incremental cache), so a snapshot
/// of a runtime, which shares all its code with the runtime, compiles mostly from the cache.
pub(crate) fn engine(
    config: &Config,
    functions: Arc<functions::FunctionCache>,
) -> Result<wasmtime::Engine, Error> {
    engine_with(functions, config.pool.as_ref())
}

/// The engine sessions run on: the same compiled code as [`engine`]'s (the pooling allocator
/// does not change what is compiled, so one cached module loads into both), but each memory
/// is mapped for its instance alone and unmapped when it ends, never reset and handed to
/// another sandbox. That lets a session's memory be remapped onto a shared, frozen copy of
/// another's (see `sandbox::session::Layers`): a fork shares its parent's pages until either
/// writes them.
pub(crate) fn session_engine(
    functions: Arc<functions::FunctionCache>,
) -> Result<wasmtime::Engine, Error> {
    engine_with(functions, None)
}

fn engine_with(
    functions: Arc<functions::FunctionCache>,
    pool: Option<&PoolConfig>,
) -> Result<wasmtime::Engine, Error> {
    let mut wasm = wasmtime::Config::new();
    wasm.enable_incremental_compilation(functions)
        .map_err(|e| crate::error::HostError::wasmtime("set up the compiler cache", e))?;
    wasm.consume_fuel(true)
        .epoch_interruption(true)
        .wasm_exceptions(true)
        .max_wasm_stack(WASM_STACK_BYTES)
        .async_stack_size(WASM_STACK_BYTES + (1 << 20))
        .memory_init_cow(true)
        .parallel_compilation(true);
    if let Some(pool) = pool {
        let mut pooling = wasmtime::PoolingAllocationConfig::new();
        pooling
            .total_core_instances(pool.slots)
            .total_memories(pool.slots)
            .total_tables(pool.slots)
            .total_stacks(pool.slots)
            .max_memories_per_module(1)
            .max_tables_per_module(8)
            .max_memory_size(usize::try_from(pool.max_memory_bytes).unwrap_or(usize::MAX))
            .table_elements(pool.table_elements)
            .max_core_instance_size(pool.max_core_instance_bytes)
            // Reset a slot's memory by rewriting just the pages the last guest dirtied (found
            // with PAGEMAP_SCAN where the kernel has it) instead of unmapping them: the next
            // sandbox in the slot takes no page faults for them, and no TLB shootdown is
            // needed.
            .linear_memory_keep_resident(pool.keep_resident_bytes)
            .table_keep_resident(1 << 20)
            .pagemap_scan(wasmtime::Enabled::Auto)
            .max_unused_warm_slots(pool.warm_slots);
        wasm.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling));
        #[cfg(target_os = "linux")]
        if pool.fill_resident_gaps {
            residency::enable(pool.keep_resident_bytes);
        }
    }
    wasmtime::Engine::new(&wasm)
        .map_err(|e| crate::error::HostError::wasmtime("set up the engine", e).into())
}

/// Advances the engine's epoch while any guest runs, and sleeps otherwise. Holds only a weak
/// handle: the thread ends once the engine is dropped.
pub(crate) struct EpochTicker {
    active: Arc<AtomicUsize>,
    thread: Mutex<Option<Thread>>,
    engine: wasmtime::EngineWeak,
}

/// Marks one run as active for as long as it lives.
pub(crate) struct ActiveRun {
    active: Arc<AtomicUsize>,
}

impl Drop for ActiveRun {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl EpochTicker {
    pub(crate) fn new(engine: &wasmtime::Engine) -> Self {
        EpochTicker {
            active: Arc::new(AtomicUsize::new(0)),
            thread: Mutex::new(None),
            engine: engine.weak(),
        }
    }

    /// Registers a run; the ticker ticks until every registration is dropped.
    pub(crate) fn activate(&self) -> Result<ActiveRun, Error> {
        self.active.fetch_add(1, Ordering::AcqRel);
        let run = ActiveRun {
            active: self.active.clone(),
        };
        let mut thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
        match &*thread {
            Some(ticker) => ticker.unpark(),
            None => {
                let active = self.active.clone();
                let engine = self.engine.clone();
                let handle = thread::Builder::new()
                    .name("dvm-epoch".into())
                    .spawn(move || tick(&engine, &active))
                    .map_err(|source| crate::error::HostError::Thread {
                        what: "the epoch thread",
                        source,
                    })?;
                *thread = Some(handle.thread().clone());
            }
        }
        Ok(run)
    }
}

fn tick(engine: &wasmtime::EngineWeak, active: &AtomicUsize) {
    loop {
        if active.load(Ordering::Acquire) == 0 {
            // Idle: nothing to interrupt. Wake now and then to notice a dropped engine.
            thread::park_timeout(Duration::from_secs(1));
        } else {
            thread::sleep(EPOCH_TICK);
        }
        match engine.upgrade() {
            Some(engine) => engine.increment_epoch(),
            None => return,
        }
    }
}
