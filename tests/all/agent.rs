//! `dvm agent`: code from a provider (the user's file or recorded replies), run, validated,
//! repaired, reported.

use crate::cli::{dvm, json};
use crate::support::*;

const BUGGY: &str = "First try:\n```python\nimport csv\ntotals = {}\nfor row in csv.DictReader(open('sales.csv')):\n    totals[row['region']] = totals.get(row['region'], 0) + row['sales']\nfor k in sorted(totals):\n    print(k, totals[k])\n```\n";
const FIXED: &str = "Fixed:\n```python\nimport csv\ntotals = {}\nfor row in csv.DictReader(open('sales.csv')):\n    totals[row['region']] = totals.get(row['region'], 0) + int(row['sales'])\nfor k in sorted(totals):\n    print(k, totals[k])\nopen('summary.txt', 'w').write(str(totals))\n```\n";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("sales.csv"),
            "region,sales\nnorth,10\nsouth,4\nnorth,7\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("expected.txt"), "north 17\nsouth 4\n").unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    fn replies(&self, replies: &[&str]) -> String {
        let path = self.path("replies.json");
        std::fs::write(&path, serde_json::to_string(replies).unwrap()).unwrap();
        path
    }
}

#[test]
fn a_failing_attempt_is_repaired_and_reported() {
    let f = Fixture::new();
    let replies = f.replies(&[BUGGY, FIXED]);
    let output = dvm(&[
        "agent",
        "summarise sales.csv by region",
        "--replay",
        &replies,
        "--file",
        &f.path("sales.csv"),
        "--expect-stdout",
        &f.path("expected.txt"),
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let report = json(&output);
    assert_eq!(report["passed"], true);
    assert!(report["provider"].as_str().unwrap().contains("not a model"));
    let attempts = report["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["passed"], false);
    assert!(
        attempts[0]["stderr"]
            .as_str()
            .unwrap()
            .contains("TypeError"),
        "{}",
        attempts[0]
    );
    assert_eq!(attempts[1]["passed"], true);
    assert_eq!(attempts[1]["stdout"], "north 17\nsouth 4\n");
    assert_eq!(attempts[1]["output_files"][0]["path"], "summary.txt");
    assert!(
        report["final_code"][0]["code"]
            .as_str()
            .unwrap()
            .contains("int(row['sales'])")
    );

    // The readable summary says the same.
    let text = dvm(&[
        "agent",
        "summarise",
        "--replay",
        &replies,
        "--file",
        &f.path("sales.csv"),
        "--expect-stdout",
        &f.path("expected.txt"),
    ]);
    let summary = String::from_utf8_lossy(&text.stdout);
    assert!(
        summary.contains("attempt 1: failed") && summary.contains("PASSED after 2"),
        "{summary}"
    );
}

#[test]
fn wrong_output_gets_a_diff_and_attempts_run_out() {
    let f = Fixture::new();
    let wrong = "```python\nprint('north 1')\n```";
    let replies = f.replies(&[wrong, wrong]);
    let output = dvm(&[
        "agent",
        "summarise",
        "--replay",
        &replies,
        "--attempts",
        "2",
        "--file",
        &f.path("sales.csv"),
        "--expect-stdout",
        &f.path("expected.txt"),
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let report = json(&output);
    assert_eq!(report["passed"], false);
    let diff = report["attempts"][1]["diff"].as_str().unwrap();
    assert!(
        diff.contains("-north 17") && diff.contains("+north 1"),
        "{diff}"
    );

    // A reply with no code block is a failed attempt, not a crash; running out of
    // recorded replies is an error.
    let replies = f.replies(&["I cannot help with that."]);
    let output = dvm(&[
        "agent",
        "x",
        "--replay",
        &replies,
        "--attempts",
        "2",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("replies"),
        "{}",
        show(&output)
    );
    let output = dvm(&[
        "agent",
        "x",
        "--replay",
        &replies,
        "--attempts",
        "1",
        "--json",
    ]);
    let report = json(&output);
    assert!(
        report["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("no fenced code block")
    );
}

#[test]
fn code_from_a_file_with_test_cases_and_detected_packages() {
    let f = Fixture::new();
    let solution = f.path("solution.py");
    std::fs::write(
        &solution,
        "import sys, humanize\nn = int(sys.stdin.read())\nprint(humanize.intcomma(n))\n",
    )
    .unwrap();
    let cases = f.path("cases.toml");
    std::fs::write(
        &cases,
        "[[case]]\nstdin = \"1000\"\nexpected_stdout = \"1,000\"\n\n[[case]]\nstdin = \"1234567\"\nexpected_stdout = \"1,234,567\"\n",
    )
    .unwrap();
    let output = dvm(&[
        "agent",
        "format numbers",
        "--code",
        &solution,
        "--tests",
        &cases,
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let report = json(&output);
    let attempt = &report["attempts"][0];
    assert!(
        attempt["packages"][0]
            .as_str()
            .unwrap()
            .starts_with("humanize"),
        "{attempt}"
    );
    assert_eq!(attempt["verdicts"]["accepted"], 2);
    assert!(report["provider"].as_str().unwrap().contains("solution.py"));

    let missing = dvm(&["agent", "x"]);
    assert_eq!(missing.status.code(), Some(2), "{}", show(&missing));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--code"));
}

#[test]
fn the_readme_quick_start_runs_offline() {
    let output = dvm(&[
        "agent",
        "summarise sales.csv by region",
        "--replay",
        &fx("agent/replies.json"),
        "--file",
        &fx("agent/sales.csv"),
        "--expect-stdout",
        &fx("agent/expected.txt"),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains("attempt 1: failed"), "{summary}");
    assert!(summary.contains("PASSED after 2 attempt(s)"), "{summary}");
}

fn fx(relative: &str) -> String {
    fixture(relative).to_str().unwrap().to_string()
}

const MEAN_BUGGY: &str = "```python\ndef mean(values):\n    return sum(values) / len(values)\n\nprint(mean([1, 2, 3]))\n```";
const MEAN_TESTS: &str = "Tests:\n```python\nfrom main import mean\n\ndef test_three():\n    assert mean([1, 2, 3]) == 2\n\ndef test_empty_is_zero():\n    assert mean([]) == 0\n```";
const MEAN_FIXED: &str = "```python\ndef mean(values):\n    return sum(values) / len(values) if values else 0\n\nprint(mean([1, 2, 3]))\n```";

#[test]
fn unit_tests_from_the_provider_run_apart_and_drive_the_repair() {
    let f = Fixture::new();
    // The provider's replies in order: code, then (once) its tests, then the fix.
    let replies = f.replies(&[MEAN_BUGGY, MEAN_TESTS, MEAN_FIXED]);
    let output = dvm(&[
        "agent",
        "a mean function that gives 0 for an empty list",
        "--replay",
        &replies,
        "--unit-tests",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let report = json(&output);
    assert_eq!(report["unit_tests"][0]["name"], "test_main.py");
    let attempts = report["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    // The first program ran fine on its own; its unit tests failed it.
    assert_eq!(attempts[0]["status"], "ok");
    assert_eq!(attempts[0]["passed"], false);
    let first = &attempts[0]["unit_tests"];
    assert_eq!(first["summary"]["failed"], 1, "{first}");
    let failure = first["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["outcome"] == "failed")
        .unwrap();
    assert_eq!(failure["nodeid"], "test_main.py::test_empty_is_zero");
    assert!(
        failure["traceback"]
            .as_str()
            .unwrap()
            .contains("ZeroDivisionError")
    );
    assert_eq!(attempts[1]["passed"], true);
    assert_eq!(attempts[1]["unit_tests"]["summary"]["passed"], 2);
    for field in ["generate_ms", "install_ms", "execute_ms", "unit_tests_ms"] {
        assert!(
            attempts[1]["timings"][field].as_f64().unwrap() >= 0.0,
            "{field}"
        );
    }

    // Unit tests are pytest's: a JavaScript runtime is refused with the reason.
    let output = dvm(&[
        "agent",
        "x",
        "--replay",
        &f.replies(&["```js\nconsole.log(1)\n```", "```js\n```"]),
        "--runtime",
        "javascript",
        "--unit-tests",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("Python runtime"));
}
