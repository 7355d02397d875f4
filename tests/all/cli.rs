//! The `dvm run` contract, tested as a black box: exit code, stdout and stderr together.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::support::*;

pub(crate) fn dvm_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dvm"));
    command
        .args(args)
        .env("DVM_HOME", shared_home())
        .env_remove("DVM_LOG")
        .env_remove("DVM_CONFIG");
    command
}

pub(crate) fn dvm(args: &[&str]) -> Output {
    dvm_command(args).output().expect("dvm starts")
}

fn dvm_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = dvm_command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dvm starts");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn fx(name: &str) -> String {
    fixture(name).to_str().unwrap().to_string()
}

#[track_caller]
pub(crate) fn expect(output: &Output, code: i32, stdout: &str, stderr_contains: &str) {
    assert_eq!(output.status.code(), Some(code), "{}", show(output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        stdout,
        "{}",
        show(output)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(stderr_contains),
        "stderr lacks {stderr_contains:?}: {}",
        show(output)
    );
}

pub(crate) fn json(output: &Output) -> serde_json::Value {
    let text = String::from_utf8(output.stdout.clone()).expect("UTF-8 JSON");
    assert_eq!(
        text.lines().count(),
        1,
        "exactly one line: {}",
        show(output)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", show(output)))
}

#[test]
fn hello_passes_output_through_and_exits_zero() {
    expect(
        &dvm(&["run", &fx("wat/hello.wat")]),
        0,
        "hello from dvm\n",
        "",
    );
    assert!(dvm(&["run", &fx("wat/hello.wat")]).stderr.is_empty());
}

#[test]
fn the_guest_exit_code_becomes_dvms() {
    expect(&dvm(&["run", &fx("wat/exit.wat")]), 3, "", "");
}

#[test]
fn json_has_every_contract_field() {
    let output = dvm(&["run", "--json", &fx("wat/hello.wat")]);
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let value = json(&output);
    for field in [
        "status",
        "exit_code",
        "stdout",
        "stderr",
        "truncated",
        "limit",
        "fuel_used",
        "duration_ms",
        "memory_peak_bytes",
    ] {
        assert!(value.get(field).is_some(), "missing {field}: {value}");
    }
    assert_eq!(value["status"], "ok");
    assert_eq!(value["exit_code"], 0);
    assert_eq!(value["stdout"], "hello from dvm\n");
    assert_eq!(value["stderr"], "");
    assert_eq!(value["truncated"]["stdout"], false);
    assert_eq!(value["truncated"]["stderr"], false);
    assert!(value["limit"].is_null());
    assert!(value["fuel_used"].as_u64().unwrap() > 0);
    assert!(value["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(value["memory_peak_bytes"], 65536);
}

#[test]
fn json_exit_code_follows_the_same_rules() {
    let output = dvm(&["run", "--json", &fx("wat/exit.wat")]);
    assert_eq!(output.status.code(), Some(3));
    let value = json(&output);
    assert_eq!(value["status"], "error");
    assert_eq!(value["exit_code"], 3);
}

#[test]
fn a_deadline_exits_124_and_names_the_limit() {
    let output = dvm(&["run", "--timeout", "300ms", &fx("wat/loop.wat")]);
    expect(&output, 124, "", "deadline");
    let output = dvm(&["run", "--timeout", "200ms", "--json", &fx("wat/sleep.wat")]);
    assert_eq!(output.status.code(), Some(124));
    let value = json(&output);
    assert_eq!(value["status"], "limit");
    assert_eq!(value["limit"], "deadline");
    assert!(value["exit_code"].is_null());
}

#[test]
fn fuel_exhaustion_exits_125() {
    let path = tempfile::Builder::new().suffix(".wat").tempfile().unwrap();
    std::fs::write(path.path(), command(1, "", &counting_loop(None))).unwrap();
    let output = dvm(&["run", "--fuel", "100000", path.path().to_str().unwrap()]);
    expect(&output, 125, "", "fuel");
    let output = dvm(&[
        "run",
        "--fuel",
        "100000",
        "--json",
        path.path().to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(125));
    assert_eq!(json(&output)["limit"], "fuel");
    assert_eq!(json(&output)["fuel_used"], 100000);
}

#[test]
fn memory_exhaustion_exits_125() {
    let output = dvm(&["run", "--memory", "1MiB", "--json", &fx("wat/grow.wat")]);
    assert_eq!(output.status.code(), Some(125), "{}", show(&output));
    let value = json(&output);
    assert_eq!(value["limit"], "memory");
    assert_eq!(value["memory_peak_bytes"], 1 << 20);
    expect(
        &dvm(&["run", "--memory", "1MiB", &fx("wat/grow.wat")]),
        125,
        "",
        "memory",
    );
}

#[test]
fn output_is_truncated_at_max_output() {
    let output = dvm(&["run", "--max-output", "5", &fx("wat/hello.wat")]);
    expect(&output, 0, "hello", "stdout truncated: kept 5 of 15 bytes");
    let output = dvm(&[
        "run",
        "--max-output",
        "64KiB",
        "--json",
        &fx("wat/flood.wat"),
    ]);
    let value = json(&output);
    assert_eq!(value["truncated"]["stdout"], true);
    assert_eq!(value["stdout"].as_str().unwrap().len(), 65536);
    assert_eq!(value["stdout_bytes"], 4 << 20);
    let output = dvm(&[
        "run",
        "--max-output",
        "1KiB",
        "--output-overflow",
        "stop",
        &fx("wat/flood.wat"),
    ]);
    assert_eq!(output.status.code(), Some(125), "{}", show(&output));
    assert_eq!(output.stdout.len(), 1024);
}

#[test]
fn a_crash_exits_126_with_the_trap() {
    expect(
        &dvm(&["run", &fx("wat/unreachable.wat")]),
        126,
        "",
        "unreachable",
    );
    let output = dvm(&["run", "--json", &fx("wat/recurse.wat")]);
    assert_eq!(output.status.code(), Some(126));
    assert_eq!(json(&output)["status"], "crashed");
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    expect(
        &dvm(&["run", "/nonexistent/prog.wasm"]),
        2,
        "",
        "cannot read /nonexistent/prog.wasm",
    );
    expect(
        &dvm(&["run", &fx("malformed/corrupt.wasm")]),
        2,
        "",
        "not a valid WebAssembly module",
    );
    expect(
        &dvm(&["run", &fx("malformed/not_wasm.wasm")]),
        2,
        "",
        "not a WebAssembly module",
    );
    expect(
        &dvm(&["run", &fx("malformed/unknown_import.wat")]),
        2,
        "",
        "env::launch_missiles",
    );
    expect(
        &dvm(&["run", &fx("malformed/no_start.wat")]),
        2,
        "",
        "_start",
    );
}

#[test]
fn bad_flags_exit_2() {
    let hello = fx("wat/hello.wat");
    for args in [
        vec!["run", "--bogus", &hello],
        vec!["run", "--memory", "12XB", &hello],
        vec!["run", "--memory", "8GiB", &hello],
        vec!["run", "--timeout", "soon", &hello],
        vec!["run", "--timeout", "0s", &hello],
        vec!["run", "--timeout", "10000000000000000000s", &hello],
        vec!["run", "--max-output", "16EiB", &hello],
        vec!["run", "--fuel", "-5", &hello],
        vec!["run", "--fuel", "0", &hello],
        vec!["run", "--max-output", "lots", &hello],
        vec!["run", "--env", "NOEQUALS", &hello],
        vec!["run", "--output-overflow", "explode", &hello],
        vec!["run"],
        vec!["explode"],
    ] {
        let output = dvm(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", show(&output));
        assert!(output.stdout.is_empty(), "{args:?}: {}", show(&output));
        assert!(!output.stderr.is_empty(), "{args:?}");
    }
    let output = dvm(&["run", "--memory", "12XB", &hello]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("12XB"));
}

#[test]
fn json_errors_are_one_json_object() {
    let output = dvm(&["run", "--json", &fx("malformed/unknown_import.wat")]);
    assert_eq!(output.status.code(), Some(2));
    let value = json(&output);
    assert_eq!(value["error"]["kind"], "unknown_import");
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("launch_missiles")
    );
}

#[test]
fn stdin_comes_from_a_file_or_from_dvms_stdin() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), b"from a file\n").unwrap();
    let output = dvm(&[
        "run",
        "--stdin",
        file.path().to_str().unwrap(),
        &fx("wat/cat.wat"),
    ]);
    expect(&output, 0, "from a file\n", "");
    let output = dvm_with_stdin(&["run", "--stdin", "-", &fx("wat/cat.wat")], b"piped\n");
    expect(&output, 0, "piped\n", "");
    // Without --stdin the guest's stdin is empty even when dvm's is not.
    let output = dvm_with_stdin(&["run", &fx("wat/cat.wat")], b"ignored\n");
    expect(&output, 0, "", "");
    expect(
        &dvm(&["run", "--stdin", "/nonexistent/input", &fx("wat/cat.wat")]),
        2,
        "",
        "/nonexistent/input",
    );
}

#[test]
fn env_and_guest_arguments_reach_the_guest() {
    let output = dvm(&["run", "--env", "A=1", "--env", "B=x=y", &fx("wat/env.wat")]);
    expect(&output, 0, "A=1\nB=x=y\n", "");
    let output = dvm_command(&["run", &fx("wat/env.wat")])
        .env("SECRET_TOKEN", "hunter2")
        .output()
        .unwrap();
    expect(&output, 0, "", "");
    let output = dvm(&[
        "run",
        &fx("wat/echo.wat"),
        "--",
        "one",
        "--two",
        "three four",
    ]);
    expect(&output, 0, "one\n--two\nthree four\n", "");
}

#[test]
fn exit_codes_outside_0_to_255_exit_1_and_keep_the_code_in_json() {
    let path = tempfile::Builder::new().suffix(".wat").tempfile().unwrap();
    std::fs::write(
        path.path(),
        command(1, "", "(call $proc_exit (i32.const 256))"),
    )
    .unwrap();
    let output = dvm(&["run", "--json", path.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    assert_eq!(json(&output)["exit_code"], 256);
}

#[test]
fn scripts_pick_their_runtime_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let py = dir.path().join("hello.py");
    std::fs::write(&py, "import sys\nprint('py', sys.argv[1:])").unwrap();
    let output = dvm(&["run", py.to_str().unwrap(), "--", "x"]);
    expect(&output, 0, "py ['x']\n", "");
    let js = dir.path().join("hello.js");
    std::fs::write(&js, "console.log('js', scriptArgs.length)").unwrap();
    expect(&dvm(&["run", js.to_str().unwrap()]), 0, "js 1\n", "");
}

#[test]
fn json_names_the_runtime() {
    let output = dvm(&[
        "run",
        "--json",
        "--runtime",
        "python",
        "--code",
        "print(6 * 7)",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let value = json(&output);
    assert_eq!(value["stdout"], "42\n");
    assert_eq!(value["runtime"]["id"], "python");
    assert_eq!(value["runtime"]["version"], "3.15.0");
    let output = dvm(&[
        "run",
        "--json",
        "--runtime",
        "javascript",
        "--code",
        "console.log(1)",
    ]);
    assert_eq!(json(&output)["runtime"]["id"], "javascript");
    // Plain modules have no runtime.
    let output = dvm(&["run", "--json", &fx("wat/hello.wat")]);
    assert!(json(&output).get("runtime").is_none());
}

#[test]
fn script_limits_and_exit_codes_follow_the_contract() {
    let output = dvm(&[
        "run",
        "--runtime",
        "python",
        "--code",
        "import sys; sys.exit(7)",
    ]);
    expect(&output, 7, "", "");
    let output = dvm(&[
        "run",
        "--timeout",
        "1s",
        "--runtime",
        "python",
        "--code",
        "while True: pass",
    ]);
    expect(&output, 124, "", "deadline");
    let output = dvm(&[
        "run",
        "--runtime",
        "python",
        "--code",
        "raise KeyError('k')",
    ]);
    expect(&output, 1, "", "KeyError: 'k'");
}

#[test]
fn bad_runtime_requests_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let rb = dir.path().join("x.rb");
    std::fs::write(&rb, "puts 1").unwrap();
    for (args, message) in [
        (
            vec!["run", "--runtime", "cobol", "--code", "x"],
            "unknown runtime `cobol`",
        ),
        (vec!["run", "--code", "print(1)"], "--runtime"),
        (
            vec!["run", rb.to_str().unwrap()],
            "no runtime runs `.rb` files",
        ),
        (vec!["run", "/nonexistent/x.py"], "/nonexistent/x.py"),
        (
            vec!["run", "--runtime", "python", "/dev/zero"],
            "not a regular file",
        ),
        (vec!["runtimes", "install", "cobol"], "unknown runtime"),
        (vec!["runtimes", "install"], "required"),
    ] {
        let output = dvm(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", show(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(message),
            "{args:?}: {}",
            show(&output)
        );
    }
}

#[test]
fn bench_reports_a_runtime_as_json_and_as_a_table() {
    let output = dvm(&["bench", "javascript", "--runs", "3", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let report = json(&output);
    let row = &report["in_process"][0];
    assert_eq!(row["runtime"], "javascript");
    assert!(row["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(row["per_second_all_cores"].as_f64().unwrap() > 0.0);
    assert!(report["modules"][0]["load_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(
        report["whole_process"][0]["command"],
        "dvm run --runtime javascript hello.js"
    );
    let table = dvm(&["bench", "javascript", "--runs", "2"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("fresh sandbox, hello, in process") && text.contains("javascript"),
        "{text}"
    );
    expect(&dvm(&["bench", "cobol"]), 2, "", "unknown runtime");
}

#[test]
fn preload_starts_python_with_modules_imported() {
    let output = dvm(&[
        "run",
        "--json",
        "--preload",
        "numpy,pandas",
        "--runtime",
        "python",
        "--code",
        "import sys\nprint('pandas' in sys.modules)",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(json(&output)["stdout"], "True\n");
    let output = dvm(&["run", "--preload", "numpy", &fx("wat/hello.wat")]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    let output = dvm(&[
        "run",
        "--preload",
        "os;x",
        "--runtime",
        "python",
        "--code",
        "1",
    ]);
    expect(&output, 2, "", "not a Python module name");
}
