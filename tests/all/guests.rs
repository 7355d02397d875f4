//! WASI command guests: exit codes, stdio, arguments, environment, and what a fresh sandbox
//! cannot see.

use dvm::{RunInput, Status};

use crate::support::*;

fn run_fixture(name: &str, input: &RunInput) -> dvm::Outcome {
    shared()
        .load_file(&fixture(name))
        .unwrap()
        .run(input)
        .unwrap()
}

#[test]
fn hello_prints_and_exits_zero() {
    let outcome = run_fixture("wat/hello.wat", &RunInput::default());
    expect_status(&outcome, Status::Ok);
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(outcome.stdout, b"hello from dvm\n");
    assert!(outcome.stderr.is_empty());
    assert!(outcome.fuel_used > 0);
    assert_eq!(outcome.memory_peak_bytes, 64 * 1024);
}

#[test]
fn proc_exit_codes_are_reported() {
    for code in [0, 1, 3, 42, 126, 255, 256, -1] {
        let outcome = run(
            &command(1, "", &format!("(call $proc_exit (i32.const {code}))")),
            &RunInput::default(),
        );
        assert_eq!(outcome.exit_code, Some(code), "{}", describe(&outcome));
        let expected = if code == 0 { Status::Ok } else { Status::Error };
        expect_status(&outcome, expected);
    }
}

#[test]
fn stdin_is_given_bytes_or_empty() {
    let input = RunInput {
        stdin: b"line one\nline two\n".to_vec(),
        ..RunInput::default()
    };
    assert_eq!(
        run_fixture("wat/cat.wat", &input).stdout,
        b"line one\nline two\n"
    );
    let empty = run_fixture("wat/cat.wat", &RunInput::default());
    expect_status(&empty, Status::Ok);
    assert!(empty.stdout.is_empty());
}

#[test]
fn arguments_follow_the_program_name() {
    let input = RunInput {
        args: vec!["one".into(), "two words".into(), "".into()],
        ..RunInput::default()
    };
    assert_eq!(
        run_fixture("wat/echo.wat", &input).stdout,
        b"one\ntwo words\n\n"
    );
}

#[test]
fn environment_is_exactly_what_was_given() {
    let input = RunInput {
        env: vec![
            ("GREETING".into(), "hi".into()),
            ("EMPTY".into(), "".into()),
        ],
        ..RunInput::default()
    };
    assert_eq!(
        run_fixture("wat/env.wat", &input).stdout,
        b"GREETING=hi\nEMPTY=\n"
    );
}

#[test]
fn host_environment_is_never_inherited() {
    // The test process has PATH, HOME, CARGO_* and more; the guest must see none of them.
    assert!(std::env::vars().next().is_some());
    let outcome = run_fixture("wat/env.wat", &RunInput::default());
    expect_status(&outcome, Status::Ok);
    assert!(outcome.stdout.is_empty(), "{}", describe(&outcome));
}

#[test]
fn a_fresh_sandbox_preopens_only_tmp_and_its_workspace() {
    // Preopens are fds 3.. : /tmp, /workspace and / (the workspace again). fd_prestat_get
    // answers 0 for each and EBADF (8) after them; exit with the sum of the answers.
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        (call $proc_exit
          (i32.add
            (i32.add (call $prestat (i32.const 3) (i32.const 0)) (call $prestat (i32.const 4) (i32.const 0)))
            (i32.add (call $prestat (i32.const 5) (i32.const 0)) (call $prestat (i32.const 6) (i32.const 0)))))))"#;
    let outcome = run(wat, &RunInput::default());
    assert_eq!(outcome.exit_code, Some(8), "{}", describe(&outcome));
}

#[test]
fn sockets_are_denied() {
    // sock_accept on fd 3 fails: there are no sockets to accept on and no way to open one.
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
      (memory (export "memory") 1)
      (func (export "_start") (call $proc_exit (call $accept (i32.const 3) (i32.const 0) (i32.const 16)))))"#;
    let outcome = run(wat, &RunInput::default());
    assert_eq!(outcome.status, Status::Error, "{}", describe(&outcome));
    assert_ne!(outcome.exit_code, Some(0));
}

#[test]
fn poll_on_stdin_is_ready_at_once() {
    // One fd_read subscription on stdin: poll returns one event without waiting.
    let body = "(i64.store (i32.const 0) (i64.const 9))
                (i32.store8 (i32.const 8) (i32.const 1))
                (i32.store (i32.const 16) (i32.const 0))
                (drop (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
                (call $proc_exit (i32.load (i32.const 128)))";
    let outcome = run(&command(1, "", body), &RunInput::default());
    assert_eq!(outcome.exit_code, Some(1), "{}", describe(&outcome));
}

#[test]
fn a_relative_sleep_reports_its_clock_event() {
    // Regression: the event of a relative clock subscription must be reported after the
    // wait (Rust's std::thread::sleep panics when nevents is 0). Exit with nevents * 100 +
    // the event's userdata (1) + its type (clock = 0).
    let body = format!(
        "{}
         (call $proc_exit (i32.add
           (i32.mul (i32.load (i32.const 128)) (i32.const 100))
           (i32.add (i32.load (i32.const 64)) (i32.load8_u (i32.const 74)))))",
        sleep_body(5_000_000)
    );
    let outcome = run(&command(1, "", &body), &RunInput::default());
    assert_eq!(outcome.exit_code, Some(101), "{}", describe(&outcome));
}

#[test]
fn poll_with_no_subscriptions_is_invalid_not_a_hang() {
    let body = "(call $proc_exit (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 0) (i32.const 128)))";
    let outcome = run(&command(1, "", body), &RunInput::default());
    assert_eq!(outcome.exit_code, Some(28), "{}", describe(&outcome));
}

#[test]
fn poll_with_pointers_out_of_bounds_is_a_fault_not_a_crash() {
    let body = "(call $proc_exit (call $poll_oneoff (i32.const 65530) (i32.const 64) (i32.const 1) (i32.const 128)))";
    let outcome = run(&command(1, "", body), &RunInput::default());
    assert_eq!(outcome.exit_code, Some(21), "{}", describe(&outcome));
}

#[test]
fn output_callback_sees_kept_output_live() {
    use std::sync::{Arc, Mutex};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let input = RunInput {
        on_output: Some(Arc::new(move |stream, bytes: &[u8]| {
            sink.lock().unwrap().push((stream, bytes.to_vec()));
        })),
        ..limits(|l| l.stdout_bytes = 5)
    };
    let outcome = run_fixture("wat/hello.wat", &input);
    assert_eq!(outcome.stdout, b"hello");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(dvm::Stream::Stdout, b"hello".to_vec())]
    );
}
