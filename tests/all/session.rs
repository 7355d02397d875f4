//! Sessions: one python interpreter across calls, each call with its own limits.

use std::time::Duration;

use dvm::{Limits, RunInput, SessionOptions, Status};

use crate::support::*;

fn call(session: &dvm::Session, code: &str) -> dvm::Outcome {
    session.run(code, &RunInput::default()).unwrap()
}

#[test]
fn state_carries_over_and_final_expressions_are_echoed() {
    let session = runtime("python")
        .session(SessionOptions::default())
        .unwrap();
    let first = call(&session, "import math\nx = 20");
    assert_eq!(first.status, Status::Ok, "{}", describe(&first));
    assert_eq!(stdout(&first), "");
    let second = call(&session, "x + 1");
    assert_eq!(stdout(&second), "21\n");
    let third = call(&session, "print(math.sqrt(x + 5))\ny = [x] * 2\ny");
    assert_eq!(stdout(&third), "5.0\n[20, 20]\n");
    assert_eq!(session.calls(), 3);

    // An exception is reported and the session goes on.
    let failed = call(&session, "1 / 0");
    assert_eq!(failed.status, Status::Error);
    assert!(
        stderr(&failed).contains("ZeroDivisionError"),
        "{}",
        describe(&failed)
    );
    assert!(session.is_open());
    assert_eq!(stdout(&call(&session, "x")), "20\n");

    // Each call has its own stdin.
    let read = session
        .run("import sys\nsys.stdin.read().upper()", &with_stdin("abc"))
        .unwrap();
    assert_eq!(stdout(&read), "'ABC'\n");
    session.close();
    assert!(!session.is_open());
    assert!(matches!(
        session.run("x", &RunInput::default()),
        Err(dvm::Error::SessionClosed(_))
    ));
}

#[test]
fn each_call_has_its_own_limits_and_a_stopped_call_ends_the_session() {
    let session = runtime("python")
        .session(SessionOptions::default())
        .unwrap();
    call(&session, "n = 0");
    // A short deadline on one call; the next call has the default again.
    let slow = session
        .run(
            "import time\ntime.sleep(0.3)\n'slept'",
            &limits(|l| l.deadline = Duration::from_secs(5)),
        )
        .unwrap();
    assert_eq!(stdout(&slow), "'slept'\n");
    let output = session
        .run(
            "print('x' * 100)",
            &limits(|l| {
                l.stdout_bytes = 10;
            }),
        )
        .unwrap();
    assert_eq!(output.stdout.len(), 10);
    assert!(output.truncated.stdout);
    assert!(session.is_open());

    let spun = session
        .run(
            "while True:\n    n += 1",
            &limits(|l| l.deadline = Duration::from_millis(500)),
        )
        .unwrap();
    expect_limit(&spun, dvm::LimitKind::Deadline, "a spinning call");
    assert!(!session.is_open(), "a trapped interpreter is not reused");
    assert!(matches!(
        session.run("n", &RunInput::default()),
        Err(dvm::Error::SessionClosed(_))
    ));

    let session = runtime("python")
        .session(SessionOptions::default())
        .unwrap();
    let fuel = session
        .run("sum(range(10**9))", &limits(|l| l.fuel = Some(50_000_000)))
        .unwrap();
    expect_limit(&fuel, dvm::LimitKind::Fuel, "fuel");

    let session = runtime("python")
        .session(SessionOptions::default())
        .unwrap();
    let exited = call(&session, "exit(3)");
    assert_eq!(exited.exit_code, Some(3), "{}", describe(&exited));
    assert!(!session.is_open(), "exit() ends the session");
}

#[test]
fn files_and_packages_live_in_the_session() {
    let python = runtime("python");
    let packages = python
        .install_packages(&dvm::PackageRequest {
            requirements: vec!["humanize".into()],
            ..Default::default()
        })
        .unwrap();
    let session = python
        .session(SessionOptions {
            packages: Some(packages),
            env: vec![("GREETING".into(), "hej".into())],
            ..SessionOptions::default()
        })
        .unwrap();
    assert_eq!(session.calls(), 0, "the setup call is not counted");
    session.workspace().write("in.txt", b"41").unwrap();
    let wrote = call(
        &session,
        "import humanize, os\nv = int(open('in.txt').read()) + 1\nopen('out.txt', 'w').write(str(v))\nhumanize.intcomma(v * 1000), os.environ['GREETING']",
    );
    assert_eq!(
        stdout(&wrote),
        "('42,000', 'hej')\n",
        "{}",
        describe(&wrote)
    );
    assert_eq!(wrote.files.len(), 1);
    assert_eq!(wrote.files[0].path, "out.txt");
    assert_eq!(session.workspace().read("out.txt", 100).unwrap(), b"42");
    assert!(call(&session, "open('out.txt').read()").files.is_empty());

    let lite = runtime("python-lite").session(SessionOptions::default());
    assert!(
        lite.unwrap_err()
            .to_string()
            .contains("use the `python` or `javascript` runtime")
    );
}

/// A JavaScript call: its outcome, with the status and output checked by the caller.
fn js(session: &dvm::Session, code: &str) -> dvm::Outcome {
    session.run(code, &RunInput::default()).unwrap()
}

#[track_caller]
fn js_ok(session: &dvm::Session, code: &str) -> String {
    let outcome = js(session, code);
    assert_eq!(outcome.status, Status::Ok, "{code}: {}", describe(&outcome));
    stdout(&outcome)
}

#[test]
fn javascript_sessions_keep_globals_echo_values_and_settle_promises() {
    let session = runtime("javascript")
        .session(SessionOptions::default())
        .unwrap();
    // Declarations of every kind carry over; a declaration alone echoes nothing.
    assert_eq!(
        js_ok(
            &session,
            "let x = 20; var y = 1; const z = 3;\nfunction twice(a) { return a * 2 }\nclass P {}"
        ),
        ""
    );
    assert_eq!(js_ok(&session, "x + y + z"), "24\n");
    assert_eq!(js_ok(&session, "twice(x)"), "40\n");
    assert_eq!(js_ok(&session, "x = 21; twice(x)"), "42\n");
    // Values are shown as a REPL shows them.
    assert_eq!(
        js_ok(
            &session,
            "const o = {a: 1, b: 'two', c: [1, 2n], d: null}; o"
        ),
        "{ a: 1, b: 'two', c: [ 1, 2n ], d: null }\n"
    );
    assert_eq!(js_ok(&session, "'it\\'s'"), "'it\\'s'\n");
    assert_eq!(
        js_ok(
            &session,
            "[new Map([[1, 'a']]), new Set([2]), new P(), twice, P]"
        ),
        "[ Map(1) { 1 => 'a' }, Set(1) { 2 }, P {}, [Function: twice], [class P] ]\n"
    );
    assert_eq!(
        js_ok(&session, "const self = {}; self.me = self; self"),
        "{ me: [Circular] }\n"
    );
    assert_eq!(js_ok(&session, "undefined"), "");
    assert_eq!(js_ok(&session, "console.log('printed'); 7"), "printed\n7\n");

    // Top-level await settles within the call, as do the jobs and timers it starts; the
    // value shows when it settles, before what runs after it.
    assert_eq!(
        js_ok(
            &session,
            "await new Promise(resolve => os.setTimeout(() => resolve(x * 2), 20))"
        ),
        "42\n"
    );
    assert_eq!(
        js_ok(
            &session,
            "let got; Promise.resolve(5).then(v => { got = v });\n\
             os.setTimeout(() => console.log('later', got), 10); 'now'"
        ),
        "'now'\nlater 5\n"
    );
    assert_eq!(js_ok(&session, "got"), "5\n");
    let imported = js_ok(&session, "const m = await import('qjs:std'); typeof m.exit");
    assert_eq!(imported, "'function'\n");

    // Errors are reported and the session goes on.
    let thrown = js(&session, "throw new Error('boom')");
    assert_eq!(thrown.status, Status::Error);
    assert!(stderr(&thrown).contains("boom"), "{}", describe(&thrown));
    let syntax = js(&session, "let = ;");
    assert_eq!(syntax.status, Status::Error);
    assert!(
        stderr(&syntax).contains("SyntaxError"),
        "{}",
        describe(&syntax)
    );
    let rejected = js(&session, "await Promise.reject(new TypeError('no'))");
    assert_eq!(rejected.status, Status::Error);
    assert!(
        stderr(&rejected).contains("TypeError: no"),
        "{}",
        describe(&rejected)
    );
    let lost = js(&session, "Promise.reject(new Error('lost')); 1");
    assert_eq!(lost.status, Status::Error);
    assert_eq!(stdout(&lost), "1\n");
    assert!(
        stderr(&lost).contains("Uncaught (in promise)") && stderr(&lost).contains("lost"),
        "{}",
        describe(&lost)
    );
    let stuck = js(&session, "await new Promise(() => {})");
    assert_eq!(stuck.status, Status::Error);
    assert!(
        stderr(&stuck).contains("never settled"),
        "{}",
        describe(&stuck)
    );
    assert!(session.is_open());
    assert_eq!(js_ok(&session, "x"), "21\n");

    // Each call has its own stdin, read to its end.
    for text in ["abc", "de"] {
        let read = session
            .run("std.in.readAsString().toUpperCase()", &with_stdin(text))
            .unwrap();
        assert_eq!(stdout(&read), format!("'{}'\n", text.to_uppercase()));
    }

    // Files live in the session's workspace.
    js_ok(&session, "std.writeFile('out.txt', String(x * 2))");
    assert_eq!(session.workspace().read("out.txt", 100).unwrap(), b"42");

    // `std.exit` ends the session with its status.
    let exited = js(&session, "console.log('bye'); std.exit(3)");
    assert_eq!(exited.exit_code, Some(3), "{}", describe(&exited));
    assert_eq!(stdout(&exited), "bye\n");
    assert!(!session.is_open());
}

#[test]
fn a_javascript_call_past_its_limit_ends_the_session_alone() {
    let session = runtime("javascript")
        .session(SessionOptions::default())
        .unwrap();
    js_ok(&session, "let n = 0");
    let spun = session
        .run(
            "for (;;) n++",
            &limits(|l| l.deadline = Duration::from_millis(300)),
        )
        .unwrap();
    expect_limit(&spun, dvm::LimitKind::Deadline, "a spinning call");
    assert!(!session.is_open());
    // Another session is untouched by it, and starts clean.
    let other = runtime("javascript")
        .session(SessionOptions::default())
        .unwrap();
    assert_eq!(js_ok(&other, "typeof n"), "'undefined'\n");
}

#[test]
fn a_session_survives_a_thousand_calls_without_growing() {
    let session = runtime("python")
        .session(SessionOptions::default())
        .unwrap();
    call(&session, "total = 0");
    let mut peak_at_100 = 0;
    for i in 0..1000 {
        let outcome = session
            .run(
                "chunk = [i * i for i in range(2000)]\ntotal += len(chunk)\ndel chunk",
                &RunInput {
                    limits: Limits {
                        deadline: Duration::from_secs(10),
                        ..Limits::default()
                    },
                    ..RunInput::default()
                },
            )
            .unwrap();
        assert_eq!(
            outcome.status,
            Status::Ok,
            "call {i}: {}",
            describe(&outcome)
        );
        if i == 99 {
            peak_at_100 = outcome.memory_peak_bytes;
        }
        if i == 999 {
            assert_eq!(
                outcome.memory_peak_bytes, peak_at_100,
                "linear memory grew between call 100 and call 1000"
            );
        }
    }
    assert_eq!(stdout(&call(&session, "total")), "2000000\n");
    assert_eq!(session.calls(), 1002);
}
