//! `dvm test`: a test-case file against a solution, each case in its own sandbox, with
//! Judge0-style verdicts.

use crate::cli::{dvm, json};
use crate::support::*;

const SOLUTION: &str = r#"import sys
data = sys.stdin.read().split()
if data[:1] == ["loop"]:
    while True:
        pass
if data[:1] == ["mem"]:
    hog = bytearray(1 << 30)
if data[:1] == ["crash"]:
    raise ValueError("boom")
if data[:1] == ["file"]:
    open("out.txt", "w").write("written\n")
if data[:1] == ["read"]:
    print(open("in.txt").read().upper(), end="")
    sys.exit(0)
print(sum(int(x) for x in data if x.isdigit()))
"#;

const CASES: &str = r#"
[defaults]
timeout = "1s"
memory = "128MiB"

[[case]]
name = "adds"
stdin = "1 2"
expected_stdout = "3"

[[case]]
name = "wrong"
stdin = "2 2"
expected_stdout = "5\n"

[[case]]
name = "regex"
stdin = "40 2"
expected_stdout = '4\d\n'
match = "regex"

[[case]]
name = "json"
stdin = "1"
expected_stdout = ' 1 '
match = "json"

[[case]]
name = "exact"
stdin = "1"
expected_stdout = "1"
match = "exact"

[[case]]
name = "time"
stdin = "loop"

[[case]]
name = "memory"
stdin = "mem"

[[case]]
name = "crash"
stdin = "crash"

[[case]]
name = "file"
stdin = "file"
[case.expected_files]
"out.txt" = "written"

[[case]]
name = "input file"
stdin = "read"
expected_stdout = "HELLO"
[case.files]
"in.txt" = "hello"
"#;

#[test]
fn every_verdict_kind_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let solution = dir.path().join("solution.py");
    let cases = dir.path().join("cases.toml");
    std::fs::write(&solution, SOLUTION).unwrap();
    std::fs::write(&cases, CASES).unwrap();
    let output = dvm(&[
        "test",
        cases.to_str().unwrap(),
        "--code",
        solution.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let report = json(&output);
    let verdicts: Vec<(&str, &str, u64)> = report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            (
                case["name"].as_str().unwrap(),
                case["verdict"].as_str().unwrap(),
                case["status_id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("adds", "accepted", 3),
            ("wrong", "wrong_answer", 4),
            ("regex", "accepted", 3),
            ("json", "accepted", 3),
            ("exact", "wrong_answer", 4),
            ("time", "time_limit_exceeded", 5),
            ("memory", "memory_limit_exceeded", 12),
            ("crash", "runtime_error_nzec", 11),
            ("file", "accepted", 3),
            ("input file", "accepted", 3),
        ]
    );
    let wrong = &report["cases"][1];
    assert!(wrong["diff"].as_str().unwrap().contains("-5"), "{wrong}");
    assert_eq!(
        (report["accepted"].as_u64(), report["total"].as_u64()),
        (Some(5), Some(10))
    );

    // The table names each verdict; all accepted exits 0.
    std::fs::write(
        &cases,
        "[[case]]\nstdin = \"2 3\"\nexpected_stdout = \"5\"\n",
    )
    .unwrap();
    let passing = dvm(&[
        "test",
        cases.to_str().unwrap(),
        "--code",
        solution.to_str().unwrap(),
    ]);
    assert_eq!(passing.status.code(), Some(0), "{}", show(&passing));
    assert!(String::from_utf8_lossy(&passing.stdout).contains("case 1"));
    assert!(String::from_utf8_lossy(&passing.stdout).contains("1 of 1 accepted"));
}

#[test]
fn bad_case_files_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let solution = dir.path().join("s.py");
    std::fs::write(&solution, "print(1)").unwrap();
    for (text, says) in [
        ("", "no [[case]]"),
        ("[[case]]\nexpected = 1\n", "unknown field"),
        ("[[case]]\nmatch = \"fuzzy\"\n", "fuzzy"),
        ("[defaults]\ntimeout = \"soon\"\n[[case]]\n", "duration"),
    ] {
        let cases = dir.path().join("cases.toml");
        std::fs::write(&cases, text).unwrap();
        let output = dvm(&[
            "test",
            cases.to_str().unwrap(),
            "--code",
            solution.to_str().unwrap(),
        ]);
        assert_eq!(output.status.code(), Some(2), "{text}: {}", show(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(says),
            "{text}: {}",
            show(&output)
        );
    }
}
