//! `python-lite` sandboxes started ahead of demand: a prestarted sandbox must behave exactly
//! like a cold one, serve one run only, and obey the run's limits.

use std::sync::OnceLock;
use std::time::Duration;

use dvm::{Config, Dvm, LimitKind, RunInput, Runtime, Status};

use crate::support::*;

/// `python-lite` from a `Dvm` of its own (sharing the test home), so that its pool does not
/// turn other tests' cold runs into prestarted ones.
fn prestarted() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let dvm = Dvm::new(Config {
            home: shared_home(),
            ..Config::default()
        })
        .expect("dvm starts");
        let runtime = dvm
            .runtime("python-lite")
            .expect("python-lite is available");
        runtime.prestart(2).expect("python-lite can be prestarted");
        runtime
    })
}

fn warm(source: &str, input: &RunInput) -> dvm::Outcome {
    prestarted()
        .run_script("main.py", source.as_bytes(), input)
        .expect("the run starts")
}

/// Runs `source` cold and prestarted and checks both end the same way with the same output.
fn same_as_cold(source: &str, input: &RunInput) -> dvm::Outcome {
    let cold = script("python-lite", "main.py", source, input);
    let warm = warm(source, input);
    assert_eq!(
        (warm.status, warm.exit_code, warm.limit),
        (cold.status, cold.exit_code, cold.limit),
        "prestarted: {}\ncold: {}",
        describe(&warm),
        describe(&cold)
    );
    assert_eq!(stdout(&warm), stdout(&cold), "stdout differs");
    assert_eq!(stderr(&warm), stderr(&cold), "stderr differs");
    warm
}

#[test]
fn behaves_like_a_cold_sandbox() {
    let input = RunInput {
        args: vec!["one".into(), "two words".into(), "ünï".into()],
        env: vec![("GREETING".into(), "hi".into())],
        stdin: b"line 1\nline 2\n".to_vec(),
        ..RunInput::default()
    };
    let programs = [
        "print('hello')",
        "import sys\nprint(__name__, __file__, sys.argv, sys.path[0], sys.orig_argv[1:])",
        "import os\nprint(sorted(os.environ.items()))",
        "import sys\nprint(sys.stdin.read().upper(), end='')",
        "import sys\nprint('to stderr', file=sys.stderr)\nsys.exit(3)",
        "def f():\n    return 1 / 0\nf()\n",
        "open('out.txt', 'w').write('kept')\nprint(open('/workspace/out.txt').read())",
        "print(sorted(k for k in globals() if not k.startswith('__')), __doc__)",
        "raise SystemExit('bye')",
        "import sys\nsys.exit(None)",
        "import atexit, sys\natexit.register(lambda: print('at exit', file=sys.stderr))\nprint('body')",
        "import sys\nsys.stdout.write('no newline')",
    ];
    for program in programs {
        same_as_cold(program, &input);
    }
    let outcome = same_as_cold(programs[5], &input);
    assert!(
        stderr(&outcome).starts_with(
            "Traceback (most recent call last):\n  File \"/workspace/main.py\", line 3"
        ),
        "{}",
        describe(&outcome)
    );
}

#[test]
fn each_sandbox_serves_one_run() {
    let source = "import os, random\n\
                  print(os.listdir('.'), os.listdir('/tmp'), random.random())\n\
                  open('/tmp/left', 'w').write('x')\nopen('left', 'w').write('x')";
    let outputs: Vec<String> = (0..4)
        .map(|_| {
            let outcome = warm(source, &RunInput::default());
            expect_status(&outcome, Status::Ok);
            stdout(&outcome)
        })
        .collect();
    for output in &outputs {
        assert!(output.starts_with("['main.py'] [] "), "{output}");
    }
    let randoms: std::collections::HashSet<_> = outputs.iter().collect();
    assert_eq!(
        randoms.len(),
        outputs.len(),
        "random state repeats: {outputs:?}"
    );
}

#[test]
fn the_run_limits_apply_after_the_claim() {
    let deadline = warm(
        "while True:\n    pass",
        &limits(|l| l.deadline = Duration::from_millis(300)),
    );
    expect_limit(&deadline, LimitKind::Deadline, "deadline");
    let fuel = warm(
        "x = 0\nwhile True:\n    x += 1",
        &limits(|l| l.fuel = Some(50_000_000)),
    );
    expect_limit(&fuel, LimitKind::Fuel, "fuel");
    assert!(fuel.fuel_used <= 50_000_000, "{}", describe(&fuel));
    let output = warm("print('x' * 100)", &limits(|l| l.stdout_bytes = 10));
    expect_status(&output, Status::Ok);
    assert_eq!(stdout(&output), "xxxxxxxxxx");
    assert!(output.truncated.stdout);
    let cancel = dvm::CancelHandle::new();
    let canceller = cancel.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        canceller.cancel();
    });
    let cancelled = warm(
        "import time\ntime.sleep(30)",
        &RunInput {
            cancel: Some(cancel),
            ..RunInput::default()
        },
    );
    stopper.join().unwrap();
    expect_limit(&cancelled, LimitKind::Cancelled, "cancel");
}

#[test]
fn interpreter_start_up_variables_get_a_cold_sandbox() {
    let input = RunInput {
        env: vec![("PYTHONHASHSEED".into(), "0".into())],
        ..RunInput::default()
    };
    let source = "import sys\nprint(sys.flags.hash_randomization, hash('a') == hash('a'))";
    let outcome = same_as_cold(source, &input);
    assert_eq!(stdout(&outcome), "0 True\n");
}

#[test]
fn only_python_commands_prestart() {
    for id in ["javascript", "python"] {
        let runtime = runtime(id);
        assert!(!runtime.supports_prestart());
        let error = runtime
            .prestart(1)
            .expect_err("cannot prestart")
            .to_string();
        assert!(error.contains("cannot be prestarted"), "{error}");
    }
    assert!(runtime("python-lite").supports_prestart());
}
