//! `dvm review`: a project's own pytest suite in a sandbox, reported per test as JSON and
//! JUnit XML.

use crate::cli::{dvm, json};
use crate::support::*;

fn calc() -> String {
    fixture("review/calc").to_str().unwrap().to_string()
}

fn outcome_of<'a>(report: &'a serde_json::Value, nodeid: &str) -> &'a serde_json::Value {
    report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["nodeid"] == nodeid)
        .unwrap_or_else(|| panic!("no test {nodeid} in {report}"))
}

#[test]
fn a_project_suite_reports_every_test_with_tracebacks_and_junit() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let output = dvm(&[
        "review",
        &calc(),
        "--junit",
        junit.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let report = json(&output);
    assert_eq!(
        report["summary"],
        serde_json::json!({"total": 11, "passed": 6, "failed": 2, "errors": 1,
                           "skipped": 1, "xfailed": 1, "xpassed": 0})
    );
    assert_eq!(report["exit_code"], 1);
    assert!(
        report["requirements"]
            .as_array()
            .unwrap()
            .contains(&"attrs>=22".into())
    );
    assert!(
        report["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().starts_with("pytest "))
    );

    let wrong = outcome_of(
        &report,
        "tests/test_ops.py::test_add_strings_is_wrong_on_purpose",
    );
    assert_eq!(wrong["outcome"], "failed");
    assert!(
        wrong["traceback"]
            .as_str()
            .unwrap()
            .contains("assert 'ab' == 'ba'")
    );
    let empty = outcome_of(&report, "tests/test_ops.py::test_mean[values2-0]");
    assert_eq!(empty["outcome"], "failed");
    assert!(
        empty["message"]
            .as_str()
            .unwrap()
            .contains("ZeroDivisionError")
    );
    assert!(empty["traceback"].as_str().unwrap().contains("calc/ops.py"));
    let fixture_error = outcome_of(&report, "tests/test_ops.py::test_with_broken_fixture");
    assert_eq!(fixture_error["outcome"], "error");
    assert_eq!(fixture_error["phase"], "setup");
    assert_eq!(
        outcome_of(&report, "tests/test_ops.py::test_later")["outcome"],
        "skipped"
    );
    assert_eq!(
        outcome_of(&report, "tests/test_ops.py::test_float_sum")["outcome"],
        "xfailed"
    );
    let printed = outcome_of(&report, "tests/test_ops.py::test_div_prints_and_passes");
    assert_eq!(printed["outcome"], "passed");
    assert_eq!(printed["stdout"], "dividing 6 by 3\n");
    assert_eq!(
        outcome_of(&report, "tests/test_style.py::DivTest::test_whole")["outcome"],
        "passed"
    );

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(
        xml.contains("tests=\"11\" skipped=\"2\" errors=\"1\" failures=\"2\""),
        "{xml}"
    );
    assert_eq!(xml.matches("<testcase ").count(), 11, "{xml}");
    assert!(xml.contains("<testcase name=\"test_whole\" classname=\"tests.test_style.DivTest\""));
    assert!(xml.contains("<failure message=\"ZeroDivisionError: division by zero\">"));
    assert!(xml.contains("<error message=\"RuntimeError: the fixture could not start\">"));
    assert!(xml.contains("<system-out>dividing 6 by 3\n</system-out>"));
    assert_eq!(
        xml.matches("<testcase").count(),
        xml.matches("</testcase>").count() + 5
    );

    let text = dvm(&["review", &calc()]);
    assert_eq!(text.status.code(), Some(1), "{}", show(&text));
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains("FAILED tests/test_ops.py::test_mean[values2-0]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ERROR tests/test_ops.py::test_with_broken_fixture"),
        "{stdout}"
    );
    assert!(
        stdout.contains("11 tests, 6 passed, 2 failed, 1 errors, 2 skipped"),
        "{stdout}"
    );
}

#[test]
fn pytest_arguments_select_tests_and_a_green_suite_exits_zero() {
    let output = dvm(&[
        "review",
        &calc(),
        "--json",
        "--",
        "-k",
        "test_add or DivTest",
    ]);
    let report = json(&output);
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    assert_eq!(report["summary"]["total"], 4);

    let output = dvm(&["review", &calc(), "--json", "--", "tests/test_style.py"]);
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let report = json(&output);
    assert_eq!(report["passed"], true);
    assert_eq!(report["summary"]["passed"], 2);
}

#[test]
fn collection_errors_deadlines_and_bad_projects_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("p");
    std::fs::create_dir_all(project.join(".git")).unwrap();
    std::fs::write(
        project.join(".git/test_hidden.py"),
        "def test_x(): assert 0\n",
    )
    .unwrap();
    std::fs::write(project.join("test_ok.py"), "def test_ok():\n    assert 1\n").unwrap();
    std::fs::write(project.join("test_broken.py"), "def test_(:\n").unwrap();
    let path = project.to_str().unwrap();
    let output = dvm(&["review", path, "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let report = json(&output);
    assert_eq!(report["exit_code"], 2, "pytest stops on a collection error");
    let broken = outcome_of(&report, "test_broken.py");
    assert_eq!(broken["outcome"], "error");
    assert_eq!(broken["phase"], "collect");
    assert!(
        broken["traceback"]
            .as_str()
            .unwrap()
            .contains("SyntaxError")
    );
    assert!(
        !report.to_string().contains("test_hidden"),
        ".git is not uploaded"
    );

    std::fs::remove_file(project.join("test_broken.py")).unwrap();
    std::fs::write(
        project.join("test_slow.py"),
        "def test_forever():\n    while True:\n        pass\n",
    )
    .unwrap();
    let output = dvm(&[
        "review",
        path,
        "--timeout",
        "10s",
        "--json",
        "--",
        "test_ok.py",
        "test_slow.py",
    ]);
    assert_eq!(output.status.code(), Some(124), "{}", show(&output));
    let report = json(&output);
    assert_eq!(report["limit"], "deadline");
    assert_eq!(
        outcome_of(&report, "test_ok.py::test_ok")["outcome"],
        "passed",
        "tests that finished before the deadline are kept"
    );

    let output = dvm(&["review", "/nonexistent/project", "--json"]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    let output = dvm(&["review", path, "--runtime", "javascript", "--json"]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("Python runtime"));
}
