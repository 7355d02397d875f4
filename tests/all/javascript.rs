//! The `javascript` runtime (QuickJS-NG 0.17, a WASI command built by the recipe in
//! guest-toolchains/quickjs).

use std::time::Duration;

use dvm::{LimitKind, RunInput, Status};

use crate::support::*;

fn js(source: &str, input: &RunInput) -> dvm::Outcome {
    script("javascript", "main.js", source, input)
}

#[test]
fn hello() {
    let outcome = js("console.log('hello')", &RunInput::default());
    expect_status(&outcome, Status::Ok);
    assert_eq!(stdout(&outcome), "hello\n");
}

#[test]
fn stdin_is_echoed() {
    let outcome = js(
        "std.out.puts(std.in.readAsString().toUpperCase())",
        &with_stdin("abc\n"),
    );
    assert_eq!(stdout(&outcome), "ABC\n", "{}", describe(&outcome));
}

#[test]
fn argv_and_env_reach_the_script() {
    let input = RunInput {
        args: vec!["a".into(), "b c".into()],
        env: vec![("GREETING".into(), "hi".into())],
        ..RunInput::default()
    };
    let source = "console.log(JSON.stringify(scriptArgs.slice(1)), std.getenv('GREETING'), std.getenv('PATH'))";
    let outcome = js(source, &input);
    assert_eq!(
        stdout(&outcome),
        "[\"a\",\"b c\"] hi undefined\n",
        "{}",
        describe(&outcome)
    );
}

#[test]
fn unicode_round_trips() {
    let text = "héllo wörld — 你好 🌍\n";
    let outcome = js("std.out.puts(std.in.readAsString())", &with_stdin(text));
    assert_eq!(stdout(&outcome), text, "{}", describe(&outcome));
    // UTF-16 code units: the emoji is a surrogate pair.
    let outcome = js(
        "console.log('ünï 🌍'.length, [...'ünï 🌍'].length)",
        &RunInput::default(),
    );
    assert_eq!(stdout(&outcome), "6 5\n");
}

#[test]
fn console_error_goes_to_stderr() {
    let outcome = js(
        "console.log('out'); console.error('err', 2); console.warn('w')",
        &RunInput::default(),
    );
    assert_eq!(stdout(&outcome), "out\n");
    assert_eq!(stderr(&outcome), "err 2\nw\n");
}

#[test]
fn exit_codes() {
    for (source, code) in [("1 + 1", 0), ("std.exit(3)", 3), ("std.exit(42)", 42)] {
        let outcome = js(source, &RunInput::default());
        assert_eq!(
            outcome.exit_code,
            Some(code),
            "{source}: {}",
            describe(&outcome)
        );
    }
}

#[test]
fn an_uncaught_exception_exits_nonzero_with_its_message() {
    let outcome = js(
        "function boom() { throw new Error('kaput') }\nboom()",
        &RunInput::default(),
    );
    expect_status(&outcome, Status::Error);
    assert_eq!(outcome.exit_code, Some(1));
    let err = stderr(&outcome);
    assert!(err.contains("Error: kaput"), "{err}");
    assert!(err.contains("boom"), "{err}");
}

#[test]
fn an_unhandled_rejection_exits_nonzero() {
    let outcome = js("Promise.reject(new Error('nope'))", &RunInput::default());
    assert_eq!(outcome.exit_code, Some(1), "{}", describe(&outcome));
    assert!(stderr(&outcome).contains("nope"));
}

#[test]
fn an_infinite_loop_is_stopped_by_the_deadline() {
    let outcome = js(
        "for (;;) {}",
        &limits(|l| l.deadline = Duration::from_millis(500)),
    );
    expect_limit(&outcome, LimitKind::Deadline, "javascript");
    assert!(outcome.duration < GENEROUS);
}

#[test]
fn an_infinite_loop_is_stopped_by_fuel() {
    let outcome = js("for (;;) {}", &limits(|l| l.fuel = Some(500_000_000)));
    expect_limit(&outcome, LimitKind::Fuel, "javascript");
}

#[test]
fn a_timer_past_the_deadline_ends_at_the_deadline() {
    let source = "os.setTimeout(() => console.log('late'), 30000)";
    let outcome = js(source, &limits(|l| l.deadline = Duration::from_secs(1)));
    expect_limit(&outcome, LimitKind::Deadline, "javascript");
    assert!(outcome.duration < GENEROUS, "{}", describe(&outcome));
}

#[test]
fn a_memory_bomb_is_stopped_cleanly() {
    let source = "const chunks = []; for (;;) chunks.push(new ArrayBuffer(16 << 20));";
    let outcome = js(source, &limits(|l| l.memory_bytes = 128 << 20));
    expect_status(&outcome, Status::Limit);
    expect_limit(&outcome, LimitKind::Memory, "javascript");
    assert!(outcome.memory_peak_bytes <= 128 << 20);
}

#[test]
fn a_huge_array_is_stopped_cleanly() {
    let outcome = js(
        "const a = new Array(2 ** 28).fill(1.5); console.log(a.length)",
        &limits(|l| l.memory_bytes = 128 << 20),
    );
    expect_limit(&outcome, LimitKind::Memory, "javascript");
}

#[test]
fn an_output_flood_is_truncated() {
    let source = "const line = 'y'.repeat(999); for (let i = 0; i < 2000; i++) console.log(line)";
    let outcome = js(source, &limits(|l| l.stdout_bytes = 100_000));
    expect_status(&outcome, Status::Ok);
    assert!(outcome.truncated.stdout);
    assert_eq!(outcome.stdout.len(), 100_000);
    assert_eq!(outcome.stdout_bytes, 2_000_000);
}

#[test]
fn json_regexp_bigint_map_and_set() {
    let source = r#"
const o = JSON.parse('{"a":[1,"x",{"b":null}],"c":true}');
console.log(JSON.stringify(o));
console.log(/(\d+)-(\d+)/.exec("call 555-1234 now").slice(1).join(","), "a1b22c333".replace(/\d+/g, n => n.length));
console.log(2n ** 100n, (2n ** 64n - 1n).toString(16));
const m = new Map([["k", 1]]); m.set("j", 2);
const s = new Set([3, 1, 3, 2]);
console.log([...m.keys()].join(""), [...s].join(","), s.has(2));
"#;
    let outcome = js(source, &RunInput::default());
    assert_eq!(
        stdout(&outcome),
        "{\"a\":[1,\"x\",{\"b\":null}],\"c\":true}\n555,1234 a1b2c3\n\
         1267650600228229401496703205376 ffffffffffffffff\nkj 3,1,2 true\n",
        "{}",
        describe(&outcome)
    );
}

#[test]
fn async_ordering_follows_the_job_queue() {
    let source = r#"
const log = [];
setTimeoutish(() => log.push("timer"));
Promise.resolve().then(() => log.push("micro1")).then(() => log.push("micro2"));
(async () => { log.push("async-start"); await null; log.push("async-after-await"); })();
queueMicrotask(() => log.push("queued"));
log.push("sync");
function setTimeoutish(f) { os.setTimeout(() => { f(); console.log(log.join(" ")); }, 0); }
"#;
    let outcome = js(source, &RunInput::default());
    assert_eq!(
        stdout(&outcome),
        "async-start sync micro1 async-after-await queued micro2 timer\n",
        "{}",
        describe(&outcome)
    );
}

#[test]
fn an_mjs_file_is_a_module_with_top_level_await() {
    let source = "import * as std from 'qjs:std';\nconst v = await Promise.resolve(7);\nstd.out.puts(`v=${v}\\n`);";
    let outcome = script("javascript", "main.mjs", source, &RunInput::default());
    assert_eq!(stdout(&outcome), "v=7\n", "{}", describe(&outcome));
}

#[test]
fn deep_recursion_is_a_range_error_not_a_crash() {
    let source = "function f() { return f() + 1 }\ntry { f() } catch (e) { console.log(e.constructor.name) }";
    let outcome = js(source, &RunInput::default());
    assert_eq!(stdout(&outcome), "RangeError\n", "{}", describe(&outcome));
}
