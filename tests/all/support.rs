//! Shared helpers: one process-wide `Dvm`, WAT builders, and assertions that print the
//! guest's captured output when they fail.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use dvm::{Config, Dvm, Limits, Outcome, Program, RunInput, Status};

/// A `dvm` home private to this test binary's shared runtime.
pub fn shared_home() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dvm-home-shared")
}

/// One runtime for the whole test binary, as a host application would hold one.
pub fn shared() -> &'static Dvm {
    static DVM: OnceLock<Dvm> = OnceLock::new();
    DVM.get_or_init(|| {
        Dvm::new(Config {
            home: shared_home(),
            ..Config::default()
        })
        .expect("dvm starts")
    })
}

/// A runtime with its own empty home and no pool, for tests about configuration and caching.
pub fn isolated(home: &std::path::Path) -> Dvm {
    Dvm::new(Config {
        home: home.to_path_buf(),
        pool: None,
        ..Config::default()
    })
    .expect("dvm starts")
}

pub fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(relative)
}

pub fn program(wat: &str) -> Program {
    shared()
        .load_bytes("test.wasm", wat.as_bytes())
        .unwrap_or_else(|e| panic!("test module does not load: {e}\n{wat}"))
}

/// A WASI command whose `_start` is `body`, with `fd_write`, `proc_exit` and `poll_oneoff`
/// imported as `$fd_write`, `$proc_exit`, `$poll_oneoff`, one page of memory (more with
/// `pages`), and `extra` module fields.
pub fn command(pages: u32, extra: &str, body: &str) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") {pages})
  {extra}
  (func (export "_start") {body}))"#
    )
}

/// Body fragment: sleep `nanos` on the monotonic clock (uses memory 0..140).
pub fn sleep_body(nanos: u64) -> String {
    format!(
        "(i64.store (i32.const 0) (i64.const 1))
         (i32.store8 (i32.const 8) (i32.const 0))
         (i32.store (i32.const 16) (i32.const 1))
         (i64.store (i32.const 24) (i64.const {nanos}))
         (i32.store16 (i32.const 40) (i32.const 0))
         (drop (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))"
    )
}

/// A loop that does `iterations` additions and returns (infinite when `None`).
pub fn counting_loop(iterations: Option<u32>) -> String {
    let exit = match iterations {
        Some(n) => format!("(br_if $again (i32.lt_u (local.get $i) (i32.const {n})))"),
        None => "(br $again)".to_string(),
    };
    format!(
        "(local $i i32)
         (loop $again
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           {exit})"
    )
}

pub fn limits(edit: impl FnOnce(&mut Limits)) -> RunInput {
    let mut limits = Limits::default();
    edit(&mut limits);
    RunInput {
        limits,
        ..RunInput::default()
    }
}

/// Input for a run that imports large libraries cold (pandas, matplotlib): how long that
/// takes on a loaded machine is not what such a test checks, so its deadline is far off.
/// Fuel and memory keep their defaults.
pub fn patient() -> RunInput {
    limits(|l| l.deadline = Duration::from_secs(300))
}

pub fn run(wat: &str, input: &RunInput) -> Outcome {
    program(wat).run(input).expect("the run starts")
}

/// Everything about an outcome, for failure messages.
pub fn describe(outcome: &Outcome) -> String {
    format!(
        "status {:?}, exit {:?}, limit {:?}, trap {:?}, fuel {}, {:?}, peak {} bytes\n\
         --- stdout ({} of {} bytes) ---\n{}\n--- stderr ({} of {} bytes) ---\n{}",
        outcome.status,
        outcome.exit_code,
        outcome.limit,
        outcome.trap,
        outcome.fuel_used,
        outcome.duration,
        outcome.memory_peak_bytes,
        outcome.stdout.len(),
        outcome.stdout_bytes,
        String::from_utf8_lossy(&outcome.stdout),
        outcome.stderr.len(),
        outcome.stderr_bytes,
        String::from_utf8_lossy(&outcome.stderr),
    )
}

#[track_caller]
pub fn expect_status(outcome: &Outcome, status: Status) {
    assert_eq!(
        outcome.status,
        status,
        "unexpected outcome: {}",
        describe(outcome)
    );
}

/// A bound far above the expected time, to catch a limit that does not fire without turning
/// machine noise into failures.
pub const GENEROUS: Duration = Duration::from_secs(5);

/// A catalogue runtime in the shared home, installed and compiled on first use.
pub fn runtime(id: &str) -> dvm::Runtime {
    shared()
        .runtime(id)
        .unwrap_or_else(|e| panic!("runtime {id} is not available: {e}"))
}

/// A progress callback that reports nothing.
pub fn quiet() -> dvm::Progress {
    std::sync::Arc::new(|_| {})
}

/// Runs `source` as `main.py` in an open runtime.
pub fn run_main(runtime: &dvm::Runtime, source: &str, input: &RunInput) -> Outcome {
    runtime
        .run_script("main.py", source.as_bytes(), input)
        .expect("the run starts")
}

/// The numpy + pandas snapshot of `python`, made on first use.
pub fn preloaded_numpy_pandas() -> dvm::Runtime {
    shared()
        .runtime_preloaded("python", &["pandas".into(), "numpy".into()], &quiet())
        .expect("the numpy+pandas snapshot is made")
}

/// Runs `source` as `name` in runtime `id`.
pub fn script(id: &str, name: &str, source: &str, input: &RunInput) -> Outcome {
    runtime(id)
        .run_script(name, source.as_bytes(), input)
        .expect("the run starts")
}

pub fn with_stdin(stdin: &str) -> RunInput {
    RunInput {
        stdin: stdin.as_bytes().to_vec(),
        ..RunInput::default()
    }
}

pub fn stdout(outcome: &Outcome) -> String {
    String::from_utf8_lossy(&outcome.stdout).into_owned()
}

pub fn stderr(outcome: &Outcome) -> String {
    String::from_utf8_lossy(&outcome.stderr).into_owned()
}

/// A finished process, for failure messages.
pub fn show(output: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[track_caller]
pub fn expect_limit(outcome: &Outcome, kind: dvm::LimitKind, context: &str) {
    assert_eq!(
        outcome.status,
        Status::Limit,
        "{context}: {}",
        describe(outcome)
    );
    assert_eq!(
        outcome.limit,
        Some(kind),
        "{context}: {}",
        describe(outcome)
    );
}

/// Overwrites a file dvm keeps read-only (a cache object, a store blob), to damage it.
pub fn overwrite(path: &std::path::Path, bytes: &[u8]) {
    let mut permissions = std::fs::metadata(path).unwrap().permissions();
    #[expect(
        clippy::permissions_set_readonly_false,
        reason = "the test damages the file on purpose"
    )]
    permissions.set_readonly(false);
    std::fs::set_permissions(path, permissions).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A venv's script or binary named `name` (`bin/NAME`, or `Scripts\NAME.exe` on Windows).
pub fn venv_script(venv: &std::path::Path, name: &str) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join(format!("{name}.exe"))
    } else {
        venv.join("bin").join(name)
    }
}

/// A venv `target/tmp/NAME` holding exactly `requirements`, built once per machine: a venv is
/// reused when its marker lists `requirements` and `works` accepts it. It is built beside its
/// place and renamed into it, so no test sees a half-installed venv; when two test processes
/// build at once, the first to publish wins and the other's copy is discarded.
pub fn tool_venv(
    name: &str,
    requirements: &[&str],
    works: impl Fn(&std::path::Path) -> bool,
) -> Result<PathBuf, String> {
    const MARKER: &str = "dvm-test-requirements.txt";
    const LIMIT: Duration = Duration::from_secs(900);
    let marker = requirements.join("\n") + "\n";
    let ready = |venv: &std::path::Path| {
        std::fs::read_to_string(venv.join(MARKER)).is_ok_and(|listed| listed == marker)
            && works(venv)
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("tmp");
    let venv = root.join(name);
    if ready(&venv) {
        return Ok(venv);
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let staging = root.join(format!("{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let built = (|| {
        let made = crate::sdk::bounded(
            std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&staging),
            LIMIT,
        )?;
        if !made.status.success() {
            return Err(format!(
                "python3 -m venv failed (install Python 3 with its venv module):\n{}",
                show(&made)
            ));
        }
        let installed = crate::sdk::bounded(
            std::process::Command::new(venv_script(&staging, "python"))
                .args(["-m", "pip", "install", "--disable-pip-version-check"])
                .args(requirements),
            LIMIT,
        )?;
        if !installed.status.success() {
            return Err(format!(
                "pip install {} failed:\n{}",
                requirements.join(" "),
                show(&installed)
            ));
        }
        std::fs::write(staging.join(MARKER), &marker)
            .map_err(|e| format!("{}: {e}", staging.display()))
    })();
    if let Err(problem) = built {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(problem);
    }
    if ready(&venv) {
        let _ = std::fs::remove_dir_all(&staging);
        return Ok(venv);
    }
    // Stale (another pin, or broken): replace it.
    let _ = std::fs::remove_dir_all(&venv);
    if let Err(e) = std::fs::rename(&staging, &venv) {
        let _ = std::fs::remove_dir_all(&staging);
        if !ready(&venv) {
            return Err(format!("publishing {}: {e}", venv.display()));
        }
    }
    if ready(&venv) {
        Ok(venv)
    } else {
        Err(format!(
            "{} was installed but does not work; delete it and run the tests again",
            venv.display()
        ))
    }
}
