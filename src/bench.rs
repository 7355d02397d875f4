//! Measurements: hooks for the criterion benches (each stage of a run, alone) and the
//! `dvm bench` report (per-runtime latency and throughput, whole-process runs beside native
//! interpreters measured in the same run, module load and compile times, memory per
//! sandbox). Not a stable API.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::dvm::{Dvm, Program, Runtime};
use crate::error::Error;
use crate::sandbox::RunInput;

pub mod evals;

impl Dvm {
    /// Compiles wasm without touching any cache; returns the serialized module.
    #[doc(hidden)]
    pub fn bench_compile(&self, wasm: &[u8]) -> Result<Vec<u8>, Error> {
        let module =
            wasmtime::Module::new(self.wasm_engine(), wasm).map_err(|e| Error::InvalidModule {
                what: "bench".into(),
                message: e.to_string(),
            })?;
        module
            .serialize()
            .map_err(|e| crate::error::HostError::wasmtime("serialize the module", e).into())
    }

    /// Compiles wasm and writes the serialized module to a private temporary file, ready for
    /// [`Dvm::bench_load_precompiled`].
    #[doc(hidden)]
    pub fn bench_precompile(&self, wasm: &[u8]) -> Result<Precompiled, Error> {
        let serialized = self.bench_compile(wasm)?;
        let io = |source: std::io::Error| -> Error {
            crate::error::HostError::Io {
                action: "write the precompiled module to a temporary file".into(),
                source,
            }
            .into()
        };
        // Created with mode 0600 under a fresh name; nothing but this value writes it.
        let mut file = tempfile::Builder::new()
            .prefix("dvm-bench-")
            .suffix(".cwasm")
            .tempfile()
            .map_err(io)?;
        std::io::Write::write_all(&mut file, &serialized).map_err(io)?;
        file.as_file().sync_all().map_err(io)?;
        let mut permissions = file.as_file().metadata().map_err(io)?.permissions();
        permissions.set_readonly(true);
        file.as_file().set_permissions(permissions).map_err(io)?;
        Ok(Precompiled { file })
    }

    /// Loads a module [`Dvm::bench_precompile`] wrote, by mmap, as the module cache does.
    #[doc(hidden)]
    pub fn bench_load_precompiled(&self, precompiled: &Precompiled) -> Result<(), Error> {
        // SAFETY: `Precompiled` can only be made by `bench_precompile`, which wrote the file
        // from `Module::serialize` into a private, read-only temporary file this value owns;
        // wasmtime checks its header against this engine's configuration, so a module
        // compiled by another engine is refused, not misread.
        unsafe { wasmtime::Module::deserialize_file(self.wasm_engine(), precompiled.file.path()) }
            .map(drop)
            .map_err(|e| crate::error::HostError::wasmtime("deserialize the module", e).into())
    }
}

/// A serialized module in a temporary file dvm wrote (see [`Dvm::bench_precompile`]); the
/// file is removed when this is dropped.
#[doc(hidden)]
pub struct Precompiled {
    file: tempfile::NamedTempFile,
}

impl Program {
    /// Instantiates the program in a fresh store with default limits and drops it, without
    /// running the guest.
    #[doc(hidden)]
    pub fn bench_instantiate(&self) -> Result<(), Error> {
        self.instantiate_only().map(drop)
    }
}

impl Runtime {
    /// Runs a script the way a fresh sandbox would without dvm's cheapest entry: for the
    /// `python` reactor, `run()` over the argv `python.wasm SCRIPT` instead of one `turn`;
    /// other runtimes run as usual. For the criterion bench of that lever.
    #[doc(hidden)]
    pub fn bench_run_via_argv(
        &self,
        name: &str,
        source: &[u8],
        input: &RunInput,
    ) -> Result<crate::Outcome, Error> {
        self.run_via_argv(name, source, input)
    }
}

/// The source of a hello program for a runtime's language.
fn hello(language: crate::Language) -> (&'static str, &'static str) {
    match language {
        crate::Language::JavaScript => ("hello.js", "console.log(1)"),
        crate::Language::Python | crate::Language::Wasm => ("hello.py", "print(1)"),
    }
}

/// Latency of fresh-sandbox hello runs in one runtime, in process.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InProcess {
    pub runtime: String,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Sequential sandboxes per second (one thread).
    pub per_second_one_thread: f64,
    /// Sandboxes per second with one thread per core.
    pub per_second_all_cores: f64,
    pub threads: usize,
}

/// One command timed as a whole process.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WholeProcess {
    pub command: String,
    pub median_ms: f64,
    /// The native command it is compared with, and its median.
    pub native: Option<(String, f64)>,
}

/// Compiled-module costs for one runtime.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModuleCosts {
    pub runtime: String,
    pub wasm_mb: f64,
    pub compiled_mb: Option<f64>,
    /// Verify (blake3) + mmap-deserialize, as a new process does.
    pub load_ms: f64,
    /// Recorded when this machine compiled it.
    pub first_compile_s: Option<f64>,
    /// RSS growth per instantiated, idle sandbox.
    pub idle_sandbox_mib: f64,
    /// The guest's linear memory after hello.
    pub hello_memory_mib: f64,
    /// RSS growth per instance kept alive after one small turn: what an idle session
    /// costs (`python` only).
    pub idle_after_turn_mib: Option<f64>,
}

/// A small DataFrame script, cold (importing numpy and pandas) and from the preload
/// snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Preloaded {
    pub runtime: String,
    pub modules: Vec<String>,
    /// What the script does, e.g. `small DataFrame script`.
    pub script: String,
    pub cold_p50_ms: f64,
    pub preloaded_p50_ms: f64,
    pub preloaded_p99_ms: f64,
    /// The same script as a job with no flag (the snapshot picked from its imports).
    pub no_flag_p50_ms: f64,
}

/// A script `dvm bench` times cold, preloaded and with no flag.
struct WarmScript {
    what: &'static str,
    name: &'static str,
    source: &'static str,
    preload: &'static [&'static str],
}

const WARM_SCRIPTS: &[WarmScript] = &[
    WarmScript {
        what: "small DataFrame script",
        name: "df.py",
        source: DATAFRAME_SCRIPT,
        preload: &["numpy", "pandas"],
    },
    WarmScript {
        what: "matplotlib line plot to PNG",
        name: "plot.py",
        source: PLOT_SCRIPT,
        preload: &["matplotlib.pyplot"],
    },
];

/// A figure drawn and saved as a PNG in the workspace, as a generated analysis script does.
const PLOT_SCRIPT: &str = "import matplotlib\nmatplotlib.use('Agg')\n\
    import matplotlib.pyplot as plt\n\
    fig, ax = plt.subplots(figsize=(4, 3))\n\
    ax.plot([1, 2, 3, 4], [1, 4, 2, 3], marker='o')\n\
    ax.set_title('sales')\n\
    fig.savefig('plot.png', dpi=80)\n\
    print(open('plot.png', 'rb').read(8) == b'\\x89PNG\\r\\n\\x1a\\n')\n";

/// The script `dvm bench` times with and without preloading.
const DATAFRAME_SCRIPT: &str = "import numpy as np, pandas as pd\n\
    df = pd.DataFrame({'region': ['n', 's', 'n', 'e'], 'sales': np.array([10.5, 4.0, 7.0, 1.25])})\n\
    print(df.groupby('region')['sales'].sum().to_dict())\n";

fn preloaded(dvm: &Dvm, id: &str, script: &WarmScript, runs: usize) -> Result<Preloaded, Error> {
    let modules: Vec<String> = script.preload.iter().map(|m| m.to_string()).collect();
    let quiet: crate::Progress = std::sync::Arc::new(|_| {});
    let warm = dvm.runtime_preloaded(id, &modules, &quiet)?;
    let cold = dvm.runtime_cold(id, &quiet)?;
    let input = RunInput::default();
    let time = |runtime: &Runtime, n: usize| -> Result<Vec<Duration>, Error> {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            let outcome = runtime.run_script(script.name, script.source.as_bytes(), &input)?;
            times.push(started.elapsed());
            if outcome.status != crate::Status::Ok || outcome.stdout.starts_with(b"False") {
                return Err(crate::error::HostError::Guest(format!(
                    "the bench's {} failed: {}",
                    script.what,
                    String::from_utf8_lossy(&outcome.stderr)
                ))
                .into());
            }
        }
        times.sort();
        Ok(times)
    };
    time(&warm, 3)?;
    let warm_times = time(&warm, runs.clamp(5, 100))?;
    let cold_times = time(&cold, 3)?;
    // With no flag: the whole job path, which picks the snapshot from the script's imports.
    let mut job = crate::Job::code(id, script.source);
    job.source = crate::JobSource::Code {
        code: script.source.as_bytes().to_vec(),
        name: Some(script.name.to_string()),
    };
    let mut no_flag = Vec::new();
    for _ in 0..runs.clamp(5, 100) {
        let started = Instant::now();
        dvm.run(&job, &quiet)?;
        no_flag.push(started.elapsed());
    }
    no_flag.sort();
    Ok(Preloaded {
        runtime: id.to_string(),
        modules,
        script: script.what.to_string(),
        cold_p50_ms: percentile(&cold_times, 0.5),
        preloaded_p50_ms: percentile(&warm_times, 0.5),
        preloaded_p99_ms: percentile(&warm_times, 0.99),
        no_flag_p50_ms: percentile(&no_flag, 0.5),
    })
}

/// Hello latency in sandboxes started ahead of demand, and the rate they can be replaced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PrestartedRuns {
    pub runtime: String,
    /// Sandboxes kept started.
    pub pool: usize,
    /// Cold hello, for comparison.
    pub cold_p50_ms: f64,
    /// Each run finds a sandbox ready (the pool refills between runs).
    pub ready_p50_ms: f64,
    pub ready_p99_ms: f64,
    /// Runs back to back from one thread, so the pool must keep up: bounded by start-up.
    pub sustained_per_second: f64,
}

/// Sandboxes kept started by the bench.
const PRESTART_POOL: usize = 2;

fn prestarted(dvm: &Dvm, id: &str, runs: usize) -> Result<PrestartedRuns, Error> {
    // A runtime object of its own, so the pool does not change the other rows.
    let runtime = Dvm::new(dvm.config().clone())?.runtime(id)?;
    let (name, source) = hello(runtime.language());
    let input = RunInput::default();
    let timed = |runtime: &Runtime| -> Result<Duration, Error> {
        let started = Instant::now();
        let outcome = runtime.run_script(name, source.as_bytes(), &input)?;
        let elapsed = started.elapsed();
        if outcome.status != crate::Status::Ok {
            return Err(crate::error::HostError::Guest(format!(
                "the bench's hello failed in {id}: {}",
                String::from_utf8_lossy(&outcome.stderr)
            ))
            .into());
        }
        Ok(elapsed)
    };
    let mut cold = (0..5)
        .map(|_| timed(&runtime))
        .collect::<Result<Vec<_>, _>>()?;
    cold.sort();
    runtime.prestart(PRESTART_POOL)?;
    let mut ready = Vec::new();
    for _ in 0..runs.clamp(5, 40) {
        // Long enough for the replacement of the last claimed sandbox to start.
        std::thread::sleep(Duration::from_millis(150));
        ready.push(timed(&runtime)?);
    }
    ready.sort();
    std::thread::sleep(Duration::from_millis(150));
    let back_to_back = runs.clamp(10, 50);
    let started = Instant::now();
    for _ in 0..back_to_back {
        timed(&runtime)?;
    }
    let sustained_per_second = back_to_back as f64 / started.elapsed().as_secs_f64();
    runtime.prestart(0)?;
    Ok(PrestartedRuns {
        runtime: id.to_string(),
        pool: PRESTART_POOL,
        cold_p50_ms: percentile(&cold, 0.5),
        ready_p50_ms: percentile(&ready, 0.5),
        ready_p99_ms: percentile(&ready, 0.99),
        sustained_per_second,
    })
}

/// A deterministic python hello answered from the result cache against the same run
/// computed, in process and as a whole `dvm run`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CachedRuns {
    /// What ran: `hello`, or the DataFrame script from the preload snapshot.
    pub script: String,
    pub runtime: String,
    pub hit_p50_ms: f64,
    pub computed_p50_ms: f64,
    pub process_hit_ms: f64,
    pub process_computed_ms: f64,
}

/// Times `source` (written at `script`) from `runtime` answered from the result cache and
/// computed, in process and as whole `dvm run` processes with `flags`.
fn cached_runs(
    runtime: &Runtime,
    label: &str,
    (exe, flags): (&Path, &[&str]),
    (script, source): (&Path, &str),
    runs: usize,
) -> Result<Option<CachedRuns>, Error> {
    let name = script
        .file_name()
        .map_or_else(|| "main.py".into(), |n| n.to_string_lossy().into_owned());
    let cached = RunInput {
        deterministic: Some(crate::Determinism::default()),
        ..RunInput::default()
    };
    let computed = RunInput {
        cache: crate::results::CacheMode::Off,
        ..cached.clone()
    };
    let time = |input: &RunInput, n: usize| -> Result<Vec<Duration>, Error> {
        let mut times = Vec::new();
        for _ in 0..n {
            let started = Instant::now();
            runtime.run_script(&name, source.as_bytes(), input)?;
            times.push(started.elapsed());
        }
        times.sort();
        Ok(times)
    };
    runtime.run_script(&name, source.as_bytes(), &cached)?;
    let hits = time(&cached, runs.clamp(5, 100))?;
    let computes = time(&computed, runs.clamp(5, 30))?;
    let script = script.to_string_lossy();
    let process_runs = (runs / 5).clamp(5, 20);
    let with = |extra: &[&str]| -> Vec<String> {
        ["run", "--runtime", runtime.id()]
            .iter()
            .chain(flags)
            .chain(extra)
            .map(|s| s.to_string())
            .chain([script.to_string()])
            .collect()
    };
    let hit_args = with(&["--in-process", "--cache"]);
    let computed_args = with(&["--in-process", "--deterministic", "--no-cache"]);
    let hit_args: Vec<&str> = hit_args.iter().map(String::as_str).collect();
    let computed_args: Vec<&str> = computed_args.iter().map(String::as_str).collect();
    let (Some(process_hit_ms), Some(process_computed_ms)) = (
        median_process(exe, &hit_args, process_runs),
        median_process(exe, &computed_args, process_runs),
    ) else {
        return Ok(None);
    };
    Ok(Some(CachedRuns {
        script: label.to_string(),
        runtime: runtime.id().to_string(),
        hit_p50_ms: percentile(&hits, 0.5),
        computed_p50_ms: percentile(&computes, 0.5),
        process_hit_ms,
        process_computed_ms,
    }))
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub machine: String,
    pub runs: usize,
    pub in_process: Vec<InProcess>,
    pub preloaded: Vec<Preloaded>,
    pub prestarted: Vec<PrestartedRuns>,
    pub cached: Vec<CachedRuns>,
    pub whole_process: Vec<WholeProcess>,
    pub modules: Vec<ModuleCosts>,
    /// The native python3 the whole-process and eval rows compare with: the fastest of the
    /// interpreters found (Debian's `/usr/bin/python3`, the one behind `python3` on PATH).
    pub native_python: Option<NativePython>,
    /// The eval-throughput suite: library, `dvm serve` (when the command line adds it) and
    /// native python3, programs per second on one thread and on every core.
    pub evals: Vec<evals::EvalRow>,
}

/// A native interpreter found on the machine and its `-c 'print(1)'` median.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NativePython {
    pub path: String,
    pub median_ms: f64,
    /// Every candidate measured, with its median.
    pub candidates: Vec<(String, f64)>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

fn in_process(runtime: &Runtime, runs: usize) -> Result<InProcess, Error> {
    let (name, source) = hello(runtime.language());
    let input = RunInput::default();
    runtime.run_script(name, source.as_bytes(), &input)?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        runtime.run_script(name, source.as_bytes(), &input)?;
        times.push(started.elapsed());
    }
    times.sort();
    let mean = times.iter().sum::<Duration>().as_secs_f64() / runs.max(1) as f64;

    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let per_thread = runs.div_ceil(threads).max(1);
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<(), Error> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<(), Error> {
                    for _ in 0..per_thread {
                        runtime.run_script(name, source.as_bytes(), &input)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| crate::error::HostError::Stopped {
                    what: "a bench thread".into(),
                })??;
        }
        Ok(())
    })?;
    let all_cores = (threads * per_thread) as f64 / started.elapsed().as_secs_f64();
    Ok(InProcess {
        runtime: runtime.id().to_string(),
        p50_ms: percentile(&times, 0.5),
        p99_ms: percentile(&times, 0.99),
        per_second_one_thread: 1.0 / mean,
        per_second_all_cores: all_cores,
        threads,
    })
}

/// Median wall time of `program args…` over `runs` runs; `None` when it cannot start or fails.
fn median_process(program: &Path, args: &[&str], runs: usize) -> Option<f64> {
    let run = || {
        let started = Instant::now();
        let status = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| started.elapsed())
    };
    // One untimed run first: file caches, and a local server's first load of the runtime.
    run()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        times.push(run()?);
    }
    times.sort();
    Some(percentile(&times, 0.5))
}

/// The local server the bench hands `dvm run` to: a `dvm serve --local` of its own, on a
/// socket of its own (not the home's, so the `dvm run`s of other programs on this home never
/// reach it, nor fail when the bench stops it), stopped after the bench.
struct LocalServerChild {
    child: std::process::Child,
    socket: std::path::PathBuf,
}

impl LocalServerChild {
    fn start(exe: &Path, home: &Path) -> Option<LocalServerChild> {
        #[cfg(unix)]
        {
            let socket = crate::home::local_socket(home)
                .with_file_name(format!("bench-{}.sock", std::process::id()));
            let answers = || std::os::unix::net::UnixStream::connect(&socket).is_ok();
            let mut child = Command::new(exe)
                .args(["serve", "--no-warm", "--local-socket"])
                .arg(&socket)
                .env("DVM_HOME", home)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            let deadline = Instant::now() + std::time::Duration::from_secs(60);
            while !answers() {
                if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Some(LocalServerChild { child, socket })
        }
        #[cfg(not(unix))]
        {
            let _ = (exe, home);
            None
        }
    }
}

impl Drop for LocalServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// `name` on PATH, if there.
fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// The real interpreter behind `python3` on PATH: version managers put a shell-script shim
/// there whose own start-up would flatter the comparison.
fn path_python() -> Option<std::path::PathBuf> {
    let shim = which("python3")?;
    let output = Command::new(&shim)
        .args(["-c", "import sys; print(sys.executable)"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let path = String::from_utf8(output.stdout).ok()?;
    let path = std::path::PathBuf::from(path.trim());
    Some(if path.is_file() { path } else { shim })
}

/// The fastest native python3 on the machine: the system's (`/usr/bin/python3`) and the one
/// behind `python3` on PATH, each timed starting `-c 'print(1)'`; the honest baseline is the
/// quickest of them, not whichever comes first on PATH.
pub fn fastest_native_python(runs: usize) -> Option<NativePython> {
    let mut candidates: Vec<std::path::PathBuf> = Vec::new();
    for candidate in [
        Some(std::path::PathBuf::from("/usr/bin/python3")),
        path_python(),
    ]
    .into_iter()
    .flatten()
    {
        let real = std::fs::canonicalize(&candidate).unwrap_or(candidate.clone());
        if candidate.is_file()
            && !candidates
                .iter()
                .any(|c| std::fs::canonicalize(c).unwrap_or(c.clone()) == real)
        {
            candidates.push(candidate);
        }
    }
    let measured: Vec<(String, f64)> = candidates
        .iter()
        .filter_map(|path| {
            median_process(path, &["-c", "print(1)"], runs)
                .map(|ms| (path.display().to_string(), ms))
        })
        .collect();
    let (path, median_ms) = measured
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .cloned()?;
    Some(NativePython {
        path,
        median_ms,
        candidates: measured,
    })
}

/// The eval suite through the library (a fresh sandbox per program, the runtime's default
/// start) and through native python3 started once per program.
pub fn eval_rows(
    dvm: &Dvm,
    native: Option<&NativePython>,
    rounds: usize,
) -> Result<Vec<evals::EvalRow>, Error> {
    let programs = evals::suite();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let runtime = dvm.runtime("python")?;
    let input = RunInput::default();
    let mut rows = vec![evals::throughput(
        "library, python",
        &programs,
        rounds,
        threads,
        &|program| {
            let outcome = runtime.run_script("main.py", program.source.as_bytes(), &input)?;
            Ok(outcome.status == crate::Status::Ok && outcome.exit_code == Some(0))
        },
    )?];
    if let Some(native) = native {
        rows.push(evals::throughput(
            &format!("native {}", native.path),
            &programs,
            rounds,
            threads,
            &|program| {
                let status = Command::new(&native.path)
                    .args(["-c", &program.source])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map_err(|source| crate::error::HostError::Io {
                        action: format!("start {}", native.path),
                        source,
                    })?;
                Ok(status.success())
            },
        )?);
    }
    Ok(rows)
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn module_costs(dvm: &Dvm, runtime: &Runtime) -> Result<ModuleCosts, Error> {
    // What a sandbox of this runtime starts from: for `python`, dvm's snapshot.
    let digest = *runtime.program().digest();
    let cache = dvm.module_cache();
    let started = Instant::now();
    cache
        .load_uncached(dvm.wasm_engine(), &digest)
        .map_err(Error::Internal)?;
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let stats = cache.stats(&digest);

    const HELD: usize = 32;
    let before = resident_bytes().unwrap_or(0);
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        held.push(runtime.program().instantiate_only()?);
    }
    let after = resident_bytes().unwrap_or(0);
    drop(held);
    let (name, source) = hello(runtime.language());
    let outcome = runtime.run_script(name, source.as_bytes(), &RunInput::default())?;
    const MIB: f64 = 1024.0 * 1024.0;
    let idle_after_turn_mib = if runtime.supports_preload() {
        let before = resident_bytes().unwrap_or(0);
        let mut after = before;
        runtime.with_idle_turns(HELD, "x = [i * i for i in range(1000)]", || {
            after = resident_bytes().unwrap_or(0);
        })?;
        Some(after.saturating_sub(before) as f64 / HELD as f64 / MIB)
    } else {
        None
    };
    Ok(ModuleCosts {
        runtime: runtime.id().to_string(),
        wasm_mb: runtime.module_bytes() as f64 / 1e6,
        compiled_mb: stats.as_ref().map(|s| s.compiled_bytes as f64 / 1e6),
        load_ms,
        first_compile_s: stats.as_ref().map(|s| s.compile_ms / 1000.0),
        idle_sandbox_mib: after.saturating_sub(before) as f64 / HELD as f64 / MIB,
        hello_memory_mib: outcome.memory_peak_bytes as f64 / MIB,
        idle_after_turn_mib,
    })
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let kb: u64 = info
                .lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!(", {:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        })
        .unwrap_or_default();
    format!(
        "{cores} cores, {cpu}{memory}, {} {}, wasmtime {}",
        std::env::consts::OS,
        if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        },
        crate::engine::WASMTIME_VERSION
    )
}

/// Measures `runtimes` (installed and compiled first if needed).
pub fn measure(dvm: &Dvm, runtimes: &[String], runs: usize) -> Result<Report, Error> {
    let mut report = Report {
        machine: machine(),
        runs,
        in_process: Vec::new(),
        preloaded: Vec::new(),
        prestarted: Vec::new(),
        cached: Vec::new(),
        whole_process: Vec::new(),
        modules: Vec::new(),
        native_python: None,
        evals: Vec::new(),
    };
    let exe = std::env::current_exe().map_err(|source| crate::error::HostError::Io {
        action: "find the dvm executable".into(),
        source,
    })?;
    let scripts = tempfile::tempdir().map_err(|source| crate::error::HostError::Io {
        action: "make a directory for the bench's scripts".into(),
        source,
    })?;
    let process_runs = (runs / 5).clamp(5, 40);
    report.native_python = fastest_native_python(process_runs);
    let local_server = LocalServerChild::start(&exe, &dvm.config().home);
    for id in runtimes {
        let runtime = dvm.runtime(id)?;
        report.in_process.push(in_process(&runtime, runs)?);
        if runtime.supports_preload() {
            for script in WARM_SCRIPTS {
                report.preloaded.push(preloaded(dvm, id, script, runs)?);
            }
        }
        if runtime.supports_prestart() {
            report.prestarted.push(prestarted(dvm, id, runs)?);
        }
        report.modules.push(module_costs(dvm, &runtime)?);

        let (name, source) = hello(runtime.language());
        let script = scripts.path().join(name);
        std::fs::write(&script, source).map_err(|source| crate::error::HostError::Io {
            action: "write the bench's script".into(),
            source,
        })?;
        let script = script.to_string_lossy().into_owned();
        if runtime.supports_preload() {
            let df = scripts.path().join("df.py");
            std::fs::write(&df, DATAFRAME_SCRIPT).map_err(|source| {
                crate::error::HostError::Io {
                    action: "write the bench's script".into(),
                    source,
                }
            })?;
            let quiet: crate::Progress = std::sync::Arc::new(|_| {});
            let modules = ["numpy".to_string(), "pandas".to_string()];
            let preloaded = dvm.runtime_preloaded(id, &modules, &quiet)?;
            let targets = [
                (&runtime, "hello", Path::new(&script), source, &[][..]),
                (
                    &preloaded,
                    "DataFrame, preloaded",
                    df.as_path(),
                    DATAFRAME_SCRIPT,
                    &["--preload", "numpy,pandas"][..],
                ),
            ];
            for (runtime, label, path, source, flags) in targets {
                if let Some(cached) =
                    cached_runs(runtime, label, (&exe, flags), (path, source), runs)?
                {
                    report.cached.push(cached);
                }
            }
        }
        let args = [
            "run",
            "--in-process",
            "--runtime",
            id.as_str(),
            script.as_str(),
        ];
        let Some(median_ms) = median_process(&exe, &args, process_runs) else {
            continue;
        };
        let native = match runtime.language() {
            crate::Language::JavaScript => which("node").and_then(|node| {
                median_process(&node, &["-e", "console.log(1)"], process_runs)
                    .map(|ms| ("node -e 'console.log(1)'".to_string(), ms))
            }),
            _ => report
                .native_python
                .as_ref()
                .map(|python| (format!("{} -c 'print(1)'", python.path), python.median_ms)),
        };
        report.whole_process.push(WholeProcess {
            command: format!("dvm run --runtime {id} {name}"),
            median_ms,
            native: native.clone(),
        });
        // The same command handed to a local server (`dvm serve --local`).
        if let Some(server) = &local_server {
            let socket = server.socket.to_string_lossy();
            let args = [
                "run",
                "--local-socket",
                &socket,
                "--runtime",
                id.as_str(),
                script.as_str(),
            ];
            if let Some(median_ms) = median_process(&exe, &args, process_runs) {
                report.whole_process.push(WholeProcess {
                    command: "  same, via dvm serve --local".to_string(),
                    median_ms,
                    native,
                });
            }
        }
    }
    drop(local_server);
    if runtimes.iter().any(|id| id == "python") {
        let rounds = (runs / 40).clamp(1, 10);
        report.evals = eval_rows(dvm, report.native_python.as_ref(), rounds)?;
    }
    Ok(report)
}

impl Report {
    /// A table for a person.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "dvm bench — {}; {} runs each\n",
            self.machine, self.runs
        );
        let _ = writeln!(
            out,
            "fresh sandbox, hello, in process   {:>9} {:>9} {:>14} {:>16}",
            "p50", "p99", "per s, 1 thread", "per s, all cores"
        );
        for row in &self.in_process {
            let _ = writeln!(
                out,
                "  {:<32} {:>6.2} ms {:>6.2} ms {:>14.0} {:>16.0}",
                row.runtime,
                row.p50_ms,
                row.p99_ms,
                row.per_second_one_thread,
                row.per_second_all_cores
            );
        }
        for row in &self.preloaded {
            let _ = writeln!(
                out,
                "\n{}, {}: cold (imports {}) {:.0} ms; preloaded snapshot p50 {:.1} ms, p99 {:.1} ms; \
                 no flag (snapshot picked from its imports) p50 {:.1} ms",
                row.script,
                row.runtime,
                row.modules.join(" + "),
                row.cold_p50_ms,
                row.preloaded_p50_ms,
                row.preloaded_p99_ms,
                row.no_flag_p50_ms
            );
        }
        for row in &self.prestarted {
            let _ = writeln!(
                out,
                "\nhello, {} started ahead of demand ({} kept): cold p50 {:.1} ms; a started sandbox ready p50 {:.2} ms, p99 {:.2} ms;\n  \
                 back to back (bounded by start-up) {:.0} per s",
                row.runtime,
                row.pool,
                row.cold_p50_ms,
                row.ready_p50_ms,
                row.ready_p99_ms,
                row.sustained_per_second
            );
        }
        for row in &self.cached {
            let _ = writeln!(
                out,
                "\nresult cache, {} {} (deterministic): in process hit {:.2} ms vs computed {:.2} ms; \
                 whole process hit {:.1} ms vs computed {:.1} ms",
                row.runtime,
                row.script,
                row.hit_p50_ms,
                row.computed_p50_ms,
                row.process_hit_ms,
                row.process_computed_ms
            );
        }
        if let Some(native) = &self.native_python {
            let measured: Vec<String> = native
                .candidates
                .iter()
                .map(|(path, ms)| format!("{path} {ms:.1} ms"))
                .collect();
            let _ = writeln!(
                out,
                "\nnative baseline: {} (fastest of: {})",
                native.path,
                measured.join(", ")
            );
        }
        let _ = writeln!(out, "\nwhole process, warm caches (median)");
        for row in &self.whole_process {
            match &row.native {
                Some((native, ms)) => {
                    let _ = writeln!(
                        out,
                        "  {:<36} {:>7.1} ms   {:<26} {:>7.1} ms   ratio {:.2}",
                        row.command,
                        row.median_ms,
                        native,
                        ms,
                        row.median_ms / ms
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "  {:<36} {:>7.1} ms   (no native interpreter on PATH)",
                        row.command, row.median_ms
                    );
                }
            }
        }
        if !self.evals.is_empty() {
            let native = self
                .evals
                .iter()
                .find(|row| row.how.starts_with("native"))
                .map(|row| (row.one_thread, row.all_cores));
            let _ = writeln!(
                out,
                "\neval throughput: {} programs with tests (half broken), a fresh interpreter each, programs/s",
                evals::suite().len()
            );
            let _ = writeln!(
                out,
                "  {:<36} {:>10} {:>12} {:>7} {:>10} {:>7}",
                "", "1 thread", "all cores", "scale", "vs native", "wrong"
            );
            for row in &self.evals {
                let ratio = native.map_or_else(
                    || "—".to_string(),
                    |(_, all)| format!("{:.2}×", row.all_cores / all),
                );
                let _ = writeln!(
                    out,
                    "  {:<36} {:>10.0} {:>12.0} {:>6.2}× {:>10} {:>7}",
                    row.how,
                    row.one_thread,
                    row.all_cores,
                    row.all_cores / row.one_thread,
                    ratio,
                    row.wrong
                );
            }
        }
        let _ = writeln!(
            out,
            "\ncompiled modules          {:>8} {:>10} {:>12} {:>14} {:>13} {:>13} {:>16}",
            "wasm",
            "compiled",
            "load",
            "first compile",
            "idle sandbox",
            "hello memory",
            "idle after turn"
        );
        for row in &self.modules {
            let compiled = row
                .compiled_mb
                .map_or_else(|| "—".to_string(), |mb| format!("{mb:.0} MB"));
            let first = row
                .first_compile_s
                .map_or_else(|| "—".to_string(), |s| format!("{s:.1} s"));
            let after_turn = row
                .idle_after_turn_mib
                .map_or_else(|| "—".to_string(), |mib| format!("{mib:.2} MiB"));
            let _ = writeln!(
                out,
                "  {:<22} {:>5.0} MB {:>10} {:>9.1} ms {:>14} {:>9.2} MiB {:>9.1} MiB {:>16}",
                row.runtime,
                row.wasm_mb,
                compiled,
                row.load_ms,
                first,
                row.idle_sandbox_mib,
                row.hello_memory_mib,
                after_turn
            );
        }
        let _ = writeln!(
            out,
            "\nload = blake3 verify + mmap deserialize, as a new process does; first compile is recorded\n\
             when this machine compiled the module; idle sandbox = resident growth per instantiated,\n\
             unrun sandbox (32 held); hello memory = the guest's linear memory after hello; idle after\n\
             turn = resident growth per instance kept alive after one small turn (32 held), what an\n\
             idle session costs."
        );
        out
    }
}
