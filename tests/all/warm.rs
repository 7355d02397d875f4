//! Warm starts without flags: every `python` sandbox starts from dvm's standard-library
//! snapshot, and a script importing data libraries starts from a snapshot holding them when
//! one exists. Neither changes what a run outputs, under a fixed seed included.

use dvm::{Determinism, Job, RunInput, Runtime, Status};

use crate::support::*;

fn cold() -> Runtime {
    shared()
        .runtime_cold("python", &quiet())
        .expect("the cold python runtime opens")
}

/// Programs whose output must not tell a warm start from a cold one.
const PROGRAMS: &[&str] = &[
    "print('hello')",
    "from typing import List\nx: List[int] = [3, 1, 2]\nprint(sorted(x))",
    "import sys\nprint(sys.argv, __name__, __file__)",
    // Nothing the snapshot imported is bound in the script's namespace.
    "print(json.dumps([1]))",
    "print(sorted(globals()))",
    "import collections, itertools\nprint(list(itertools.accumulate([1, 2, 3])), collections.Counter('aab'))",
    "from dataclasses import dataclass\n@dataclass\nclass P:\n    x: int\nprint(P(1))",
    "raise ValueError('same traceback')",
    "import sys\nsys.exit(4)",
    "import os\nprint(sorted(os.environ), os.getcwd(), os.listdir('.'))",
    "import atexit\natexit.register(lambda: print('bye'))\nprint('hi')",
];

#[test]
fn python_starts_from_the_standard_library_snapshot_and_behaves_like_a_cold_start() {
    let warm = runtime("python");
    let modules = warm.preloaded_modules();
    for module in ["typing", "collections", "re", "json", "dataclasses"] {
        assert!(
            modules.iter().any(|m| m == module),
            "{module} in {modules:?}"
        );
    }
    assert!(cold().preloaded_modules().is_empty());
    for program in PROGRAMS {
        let a = run_main(&cold(), program, &RunInput::default());
        let b = run_main(&warm, program, &RunInput::default());
        assert_eq!(
            (a.status, a.exit_code, stdout(&a), stderr(&a)),
            (b.status, b.exit_code, stdout(&b), stderr(&b)),
            "{program}"
        );
    }
}

#[test]
fn common_imports_cost_almost_nothing_warm() {
    let fuel = |runtime: &Runtime, source: &str| {
        let outcome = run_main(runtime, source, &RunInput::default());
        expect_status(&outcome, Status::Ok);
        outcome.fuel_used
    };
    let typing = "from typing import List, Dict, Optional\nimport collections, itertools, functools, \
                  math, re, json, dataclasses, heapq, bisect, string, datetime, decimal, fractions\n\
                  print(1)";
    let warm = runtime("python");
    let warm_extra = fuel(&warm, typing).saturating_sub(fuel(&warm, "print(1)"));
    let cold_extra = fuel(&cold(), typing).saturating_sub(fuel(&cold(), "print(1)"));
    assert!(
        warm_extra < 1_000_000,
        "the imports cost {warm_extra} fuel warm (cold: {cold_extra})"
    );
    assert!(
        cold_extra > 10_000_000,
        "cold imports cost {cold_extra} fuel"
    );
}

#[test]
fn the_snapshot_holds_nothing_seeded_from_the_process() {
    let source = "import sys\nprint([m for m in ('random', 'logging', 'tempfile', 'secrets', \
                  'statistics') if m in sys.modules])";
    let outcome = run_main(&runtime("python"), source, &RunInput::default());
    assert_eq!(stdout(&outcome), "[]\n", "{}", describe(&outcome));
}

#[test]
fn seeded_runs_are_the_same_warm_and_cold() {
    let source = "import random, os, uuid, time\n\
                  print(random.random(), random.randint(1, 10**9), os.urandom(8).hex(), uuid.uuid4())\n\
                  print(time.time(), time.monotonic())";
    let input = RunInput {
        deterministic: Some(Determinism { seed: 7 }),
        ..RunInput::default()
    };
    let a = run_main(&cold(), source, &input);
    let b = run_main(&runtime("python"), source, &input);
    expect_status(&a, Status::Ok);
    assert_eq!(stdout(&a), stdout(&b));
}

const DATAFRAME: &str = "import numpy as np\nimport pandas as pd\n\
    df = pd.DataFrame({'k': ['a', 'b', 'a'], 'v': np.array([1.5, 2.0, 3.0])})\n\
    print(df.groupby('k').v.sum().to_dict())\n";

#[test]
fn a_script_importing_data_libraries_starts_warm_without_a_flag() {
    let made = preloaded_numpy_pandas();
    let dvm = shared();
    let job = Job::code("python", DATAFRAME);
    let chosen = dvm
        .job_runtime(&job, &quiet())
        .expect("a runtime is chosen");
    assert_eq!(chosen.preloaded_modules(), made.preloaded_modules());
    let warm = dvm.run(&job, &quiet()).expect("the job runs").outcome;
    // Importing numpy and pandas cold takes most of a second, more on a busy machine.
    let cold = run_main(&cold(), DATAFRAME, &patient());
    expect_status(&warm, Status::Ok);
    assert_eq!(
        (stdout(&warm), stderr(&warm), warm.exit_code),
        (stdout(&cold), stderr(&cold), cold.exit_code)
    );
    assert!(
        warm.fuel_used * 20 < cold.fuel_used,
        "warm {} fuel vs cold {}",
        warm.fuel_used,
        cold.fuel_used
    );

    // A script without those imports, `--no-preload`, a fixed seed and a memory limit the
    // snapshot does not fit in all start elsewhere.
    let plain = Job::code("python", "print(1)");
    let has_pandas = |runtime: &Runtime| runtime.preloaded_modules().iter().any(|m| m == "pandas");
    assert!(!has_pandas(&dvm.job_runtime(&plain, &quiet()).unwrap()));
    let mut opted_out = job.clone();
    opted_out.no_preload = true;
    assert!(
        dvm.job_runtime(&opted_out, &quiet())
            .unwrap()
            .preloaded_modules()
            .is_empty()
    );
    let mut seeded = job.clone();
    seeded.input.deterministic = Some(Determinism { seed: 1 });
    assert!(!has_pandas(&dvm.job_runtime(&seeded, &quiet()).unwrap()));
    let mut small = job.clone();
    small.input.limits.memory_bytes = 32 << 20;
    assert!(!has_pandas(&dvm.job_runtime(&small, &quiet()).unwrap()));
    let mut both = job;
    both.preload = vec!["numpy".into()];
    both.no_preload = true;
    assert!(matches!(
        dvm.job_runtime(&both, &quiet()),
        Err(dvm::Error::InvalidInput(_))
    ));
}

#[test]
fn sessions_from_the_snapshot_start_with_a_clean_namespace() {
    let session = runtime("python")
        .session(dvm::SessionOptions::default())
        .expect("a session opens");
    let outcome = session
        .run(
            "sorted(k for k in globals() if not k.startswith('__'))",
            &RunInput::default(),
        )
        .expect("the turn runs");
    assert_eq!(stdout(&outcome), "[]\n", "{}", describe(&outcome));
    let outcome = session
        .run("'__dvm_run' in globals()", &RunInput::default())
        .expect("the turn runs");
    assert_eq!(stdout(&outcome), "False\n");
}

#[test]
fn imports_seen_repeatedly_get_a_snapshot_built_in_the_background() {
    // A second Dvm on the shared home, building on a thread as a long-lived host does.
    let dvm = dvm::Dvm::new(dvm::Config {
        home: shared_home(),
        warm_builds: dvm::WarmBuilds::Thread,
        ..dvm::Config::default()
    })
    .expect("dvm starts");
    let source = "import numpy\nprint(numpy.array([1, 2, 3]).sum())";
    let job = Job::code("python", source);
    let only_numpy = |runtime: &Runtime| {
        let libraries: Vec<&String> = runtime
            .preloaded_modules()
            .iter()
            .filter(|m| {
                ["numpy", "pandas", "scipy", "sklearn", "matplotlib"]
                    .iter()
                    .any(|l| m.starts_with(l))
            })
            .collect();
        libraries == [&"numpy".to_string()]
    };
    // Each run starts at once from what exists and counts the set; the second starts a build.
    for _ in 0..2 {
        let done = dvm.run(&job, &quiet()).expect("the job runs");
        assert_eq!(stdout(&done.outcome), "6\n", "{}", describe(&done.outcome));
    }
    let started = std::time::Instant::now();
    loop {
        let chosen = dvm
            .job_runtime(&job, &quiet())
            .expect("a runtime is chosen");
        if only_numpy(&chosen) {
            let outcome = chosen
                .run_script("main.py", source.as_bytes(), &RunInput::default())
                .expect("the run starts");
            assert_eq!(stdout(&outcome), "6\n");
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(900),
            "no numpy snapshot was built in the background"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
fn the_command_line_can_opt_out_and_build_ahead() {
    use crate::cli::dvm;
    runtime("python");
    let cold = dvm(&[
        "run",
        "--runtime",
        "python",
        "--no-preload",
        "--code",
        "print(40 + 2)",
    ]);
    assert_eq!(cold.status.code(), Some(0), "{}", show(&cold));
    assert_eq!(String::from_utf8_lossy(&cold.stdout), "42\n");
    let both = dvm(&[
        "run",
        "--runtime",
        "python",
        "--no-preload",
        "--preload",
        "numpy",
        "--code",
        "1",
    ]);
    assert_eq!(both.status.code(), Some(2), "{}", show(&both));
    let quiet = dvm(&["runtimes", "install", "python", "--quiet"]);
    assert_eq!(quiet.status.code(), Some(0), "{}", show(&quiet));
    assert!(
        quiet.stdout.is_empty() && quiet.stderr.is_empty(),
        "{}",
        show(&quiet)
    );
    let bad = dvm(&[
        "runtimes",
        "install",
        "python",
        "--preload",
        "os; import shutil",
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", show(&bad));
}

#[test]
fn a_matplotlib_snapshot_draws_text_as_a_cold_start_does() {
    // Text needs the font files: the snapshot must not keep the build's open fonts.
    let source = "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n\
                  fig, ax = plt.subplots(figsize=(3, 2))\n\
                  ax.plot([1, 2, 3], [2, 1, 3], label='series')\n\
                  ax.set_title('a title')\nax.set_xlabel('x')\nax.legend()\n\
                  fig.savefig('plot.png', dpi=60)\nprint('saved')\n";
    let preloaded = shared()
        .runtime_preloaded("python", &["matplotlib.pyplot".into()], &quiet())
        .expect("the matplotlib snapshot is made");
    let cold = shared()
        .runtime_cold("python", &quiet())
        .expect("the cold runtime loads");
    let warm = run_main(&preloaded, source, &patient());
    let cold = run_main(&cold, source, &patient());
    assert_eq!(stdout(&warm), "saved\n", "{}", describe(&warm));
    assert_eq!(warm.stderr, cold.stderr, "{}", describe(&warm));
    assert_eq!(warm.files, cold.files, "the same PNG, byte for byte");
    assert!(warm.files.iter().any(|f| f.path == "plot.png"));
}
