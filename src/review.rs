//! Running a Python project's own test suite in a sandbox (`dvm review`), and the pytest
//! runs the agent uses for model-written unit tests.
//!
//! The project is uploaded into a fresh workspace (leaving out version-control, virtualenv
//! and cache directories), its requirements and pytest are installed as pure-Python wheels,
//! and pytest runs inside the sandbox with a small collector plugin (`review/runner.py`) that
//! appends one JSON line per finished test to `/workspace/.dvm-tests/results.jsonl`. The host
//! reads those lines back, so a suite cut short by a limit still reports what finished, and
//! writes the JUnit XML itself from the same records.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::dvm::{Dvm, Runtime};
use crate::error::Error;
use crate::limits::LimitKind;
use crate::outcome::Status;
use crate::sandbox::RunInput;
use crate::workspace::Workspace;

/// The runner script, run as the sandbox's entry.
const RUNNER: &str = include_str!("review/runner.py");
/// Its name in the workspace (pytest collects only `test_*.py` / `*_test.py`).
const RUNNER_NAME: &str = "__dvm_pytest__.py";
/// Where the runner writes its records, relative to the workspace.
const RESULTS: &str = ".dvm-tests/results.jsonl";
/// The most result bytes read back.
const MAX_RESULTS_BYTES: u64 = 64 << 20;
/// Top-level entries of a project that are not uploaded.
const SKIPPED_ENTRIES: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    "node_modules",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".dvm-tests",
];

/// How one test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestOutcome {
    Passed,
    Failed,
    /// An error outside the test body: collection, a fixture's setup or teardown.
    Error,
    Skipped,
    /// Expected to fail, and failed.
    Xfailed,
    /// Expected to fail, and passed.
    Xpassed,
}

/// One test's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// pytest's node id, e.g. `tests/test_calc.py::TestAdd::test_zero`.
    pub nodeid: String,
    pub outcome: TestOutcome,
    /// `collect`, `setup`, `call` or `teardown`: where a failure or error happened.
    pub phase: String,
    #[serde(
        rename(serialize = "duration_ms", deserialize = "duration"),
        serialize_with = "seconds_as_ms"
    )]
    pub duration_seconds: f64,
    /// The one-line reason of a failure, error or skip.
    pub message: String,
    /// The traceback of a failure or error, as pytest prints it.
    pub traceback: String,
    pub stdout: String,
    pub stderr: String,
}

fn seconds_as_ms<S: serde::Serializer>(seconds: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(seconds * 1000.0)
}

/// Counts by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TestSummary {
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
    pub skipped: usize,
    pub xfailed: usize,
    pub xpassed: usize,
}

/// One pytest run in a sandbox.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    /// True when pytest ran to the end and no test failed or errored (pytest exit 0).
    pub passed: bool,
    /// How the sandbox ended.
    pub status: Status,
    pub limit: Option<LimitKind>,
    /// pytest's exit code: 0 passed, 1 failures, 2 interrupted, 3 internal error, 4 usage
    /// error, 5 no tests collected.
    pub exit_code: Option<i32>,
    pub summary: TestSummary,
    pub tests: Vec<TestResult>,
    /// pytest's own output (its summary, and the tracebacks in its words).
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: f64,
}

impl SuiteReport {
    /// The failures and errors.
    pub fn failures(&self) -> impl Iterator<Item = &TestResult> {
        self.tests
            .iter()
            .filter(|t| matches!(t.outcome, TestOutcome::Failed | TestOutcome::Error))
    }

    /// A JUnit XML document of the results (the shape CI systems read: one `testsuite`,
    /// `testcase` per test with `failure`, `error` or `skipped`), written by quick-junit,
    /// which escapes names and text and drops what XML cannot hold.
    pub fn junit_xml(&self, suite: &str) -> std::io::Result<String> {
        use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
        let seconds = |value: f64| {
            std::time::Duration::try_from_secs_f64(value).unwrap_or(std::time::Duration::ZERO)
        };
        let mut test_suite = TestSuite::new(suite);
        test_suite.set_time(seconds(self.tests.iter().map(|t| t.duration_seconds).sum()));
        for test in &self.tests {
            let (classname, name) = junit_names(&test.nodeid);
            let failed = |kind| {
                let mut status = TestCaseStatus::non_success(kind);
                status.set_message(test.message.as_str());
                status.set_description(test.traceback.as_str());
                status
            };
            let status = match test.outcome {
                TestOutcome::Passed | TestOutcome::Xpassed => TestCaseStatus::success(),
                TestOutcome::Failed => failed(NonSuccessKind::Failure),
                TestOutcome::Error => failed(NonSuccessKind::Error),
                TestOutcome::Skipped | TestOutcome::Xfailed => {
                    let mut status = TestCaseStatus::skipped();
                    status.set_message(test.message.as_str());
                    status
                }
            };
            let mut case = TestCase::new(name, status);
            case.set_classname(classname);
            case.set_time(seconds(test.duration_seconds));
            if !test.stdout.is_empty() {
                case.set_system_out(test.stdout.as_str());
            }
            if !test.stderr.is_empty() {
                case.set_system_err(test.stderr.as_str());
            }
            test_suite.add_test_case(case);
        }
        let mut report = Report::new(suite);
        report.add_test_suite(test_suite);
        report.to_string().map_err(std::io::Error::other)
    }

    /// A readable summary: the counts, then each failure with its traceback.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for test in self.failures() {
            let _ = writeln!(out, "{} {}", outcome_word(test.outcome), test.nodeid);
            for line in test.traceback.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "{}: {} tests, {} passed, {} failed, {} errors, {} skipped{}",
            if self.passed { "PASSED" } else { "FAILED" },
            s.total,
            s.passed,
            s.failed,
            s.errors,
            s.skipped + s.xfailed,
            match (self.status, self.limit) {
                (Status::Limit, Some(limit)) =>
                    format!("; stopped by the {} limit", limit.as_str()),
                (Status::Crashed, _) => "; the sandbox crashed".to_string(),
                _ => match self.exit_code {
                    Some(2) => "; interrupted".to_string(),
                    Some(3) => "; pytest hit an internal error".to_string(),
                    Some(4) => "; pytest refused its arguments".to_string(),
                    Some(5) => "; no tests were collected".to_string(),
                    _ => String::new(),
                },
            }
        );
        out
    }
}

fn outcome_word(outcome: TestOutcome) -> &'static str {
    match outcome {
        TestOutcome::Passed => "PASSED",
        TestOutcome::Failed => "FAILED",
        TestOutcome::Error => "ERROR",
        TestOutcome::Skipped => "SKIPPED",
        TestOutcome::Xfailed => "XFAIL",
        TestOutcome::Xpassed => "XPASS",
    }
}

/// `tests/test_calc.py::TestAdd::test_zero` → (`tests.test_calc.TestAdd`, `test_zero`), as
/// pytest's own JUnit writer names them.
fn junit_names(nodeid: &str) -> (String, String) {
    let mut parts: Vec<&str> = nodeid.split("::").collect();
    let name = if parts.len() > 1 {
        parts.pop().unwrap_or_default().to_string()
    } else {
        nodeid.to_string()
    };
    let mut classname: Vec<String> = Vec::new();
    if let Some(file) = parts.first() {
        let module = file.strip_suffix(".py").unwrap_or(file);
        classname.push(module.replace('/', "."));
    }
    classname.extend(parts.iter().skip(1).map(|p| p.to_string()));
    (classname.join("."), name)
}

/// Runs pytest in `workspace` (already holding the code and tests) with `input`'s limits and
/// packages, which must include pytest.
pub fn run_pytest(
    runtime: &Runtime,
    workspace: Workspace,
    input: &RunInput,
    pytest_args: &[String],
) -> Result<SuiteReport, Error> {
    python_only(runtime)?;
    let started = Instant::now();
    let mut input = input.clone();
    input.args = pytest_args.to_vec();
    input.workspace = Some(workspace);
    // The runner is one job like any other run; its packages are already in `input`.
    let job = crate::Job {
        source: crate::JobSource::Code {
            code: RUNNER.as_bytes().to_vec(),
            name: Some(RUNNER_NAME.to_string()),
        },
        discovery: crate::Discovery::NONE,
        input,
        ..crate::Job::code(runtime.id(), "")
    };
    let outcome = runtime.run_job(&job)?.outcome;
    let records = match job.input.workspace.as_ref() {
        Some(workspace) => workspace
            .read(RESULTS, MAX_RESULTS_BYTES)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut tests = Vec::new();
    for line in String::from_utf8_lossy(&records).lines() {
        // A line cut short by a limit is the only one that can fail to parse.
        if let Ok(test) = serde_json::from_str::<TestResult>(line) {
            tests.push(test);
        }
    }
    let mut summary = TestSummary {
        total: tests.len(),
        ..TestSummary::default()
    };
    for test in &tests {
        let count = match test.outcome {
            TestOutcome::Passed => &mut summary.passed,
            TestOutcome::Failed => &mut summary.failed,
            TestOutcome::Error => &mut summary.errors,
            TestOutcome::Skipped => &mut summary.skipped,
            TestOutcome::Xfailed => &mut summary.xfailed,
            TestOutcome::Xpassed => &mut summary.xpassed,
        };
        *count += 1;
    }
    Ok(SuiteReport {
        passed: outcome.status == Status::Ok && outcome.exit_code == Some(0),
        status: outcome.status,
        limit: outcome.limit,
        exit_code: outcome.exit_code,
        summary,
        tests,
        stdout: String::from_utf8_lossy(&outcome.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&outcome.stderr).into_owned(),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

fn python_only(runtime: &Runtime) -> Result<(), Error> {
    if runtime.language() == crate::Language::Python {
        return Ok(());
    }
    Err(Error::InvalidInput(format!(
        "test suites run with pytest, on a Python runtime; `{}` is {}",
        runtime.id(),
        runtime.language()
    )))
}

/// What `dvm review` runs.
#[derive(Debug, Clone, Default)]
pub struct ReviewRequest {
    /// The project's directory on the host.
    pub project: PathBuf,
    /// Requirements beyond the project's own (PEP 508).
    pub requirements: Vec<String>,
    /// Arguments for pytest, e.g. test paths or `-k name`.
    pub pytest_args: Vec<String>,
    /// The runtime id; default `python`.
    pub runtime: Option<String>,
    /// Wheels from this directory instead of the package index.
    pub find_links: Option<PathBuf>,
    /// Limits of the run.
    pub input: RunInput,
}

/// The result of `dvm review`.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewReport {
    pub project: String,
    pub runtime: String,
    /// Requirements found in the project (requirements files, pyproject.toml) and given.
    pub requirements: Vec<String>,
    /// Installed packages, `name version`.
    pub packages: Vec<String>,
    pub install_ms: f64,
    #[serde(flatten)]
    pub suite: SuiteReport,
}

/// Runs a project's test suite: upload, install its requirements and pytest, run, report.
pub fn review(dvm: &Dvm, request: &ReviewRequest) -> Result<ReviewReport, Error> {
    let project = &request.project;
    if !project.is_dir() {
        return Err(Error::InvalidInput(format!(
            "{} is not a directory: give the project's root",
            project.display()
        )));
    }
    let runtime_id = request.runtime.clone().unwrap_or_else(|| "python".into());
    let runtime = dvm.runtime(&runtime_id)?;
    python_only(&runtime)?;
    let workspace = Workspace::new()?;
    upload_project(&workspace, project)?;
    let mut requirements = project_requirements(project)?;
    requirements.extend(request.requirements.iter().cloned());
    if !requirements
        .iter()
        .any(|r| requirement_name(r).eq_ignore_ascii_case("pytest"))
    {
        requirements.push("pytest".into());
    }
    let installing = Instant::now();
    // The project's requirements and pytest, as a job's explicit requirements.
    let packages = runtime
        .job_packages(&crate::Job {
            requirements: requirements.clone(),
            find_links: request.find_links.clone(),
            discovery: crate::Discovery::NONE,
            ..crate::Job::code(runtime.id(), "")
        })?
        .ok_or_else(|| {
            Error::InvalidInput("the review installed no packages; pytest is needed".into())
        })?;
    let install_ms = installing.elapsed().as_secs_f64() * 1000.0;
    let installed = packages.summary();
    let mut input = request.input.clone();
    input.packages = Some(packages);
    let suite = run_pytest(&runtime, workspace, &input, &request.pytest_args)?;
    Ok(ReviewReport {
        project: project.display().to_string(),
        runtime: runtime_id,
        requirements,
        packages: installed,
        install_ms,
        suite,
    })
}

/// Copies the project's top-level entries into the workspace, leaving out
/// [`SKIPPED_ENTRIES`].
fn upload_project(workspace: &Workspace, project: &Path) -> Result<(), Error> {
    let entries = std::fs::read_dir(project).map_err(|source| Error::ReadInput {
        path: project.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| Error::ReadInput {
            path: project.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(Error::InvalidInput(format!(
                "{} has a name that is not UTF-8; rename it",
                entry.path().display()
            )));
        };
        if SKIPPED_ENTRIES.contains(&name) {
            continue;
        }
        workspace.upload(&entry.path(), name)?;
    }
    Ok(())
}

/// The distribution name a requirement starts with.
fn requirement_name(requirement: &str) -> &str {
    let end = requirement
        .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .unwrap_or(requirement.len());
    &requirement[..end]
}

/// Requirements the project declares: `requirements.txt`, `requirements-dev.txt`,
/// `requirements-test.txt` (and `-r` files they include), and pyproject.toml's
/// `[project].dependencies`, its `test`, `tests` and `dev` optional dependencies and
/// dependency groups. `-e .` and local paths are left out: the project is uploaded as is.
pub fn project_requirements(project: &Path) -> Result<Vec<String>, Error> {
    let mut found = Vec::new();
    for name in [
        "requirements.txt",
        "requirements-dev.txt",
        "requirements-test.txt",
        "requirements_dev.txt",
        "requirements_test.txt",
    ] {
        // Includes resolve inside the project only; `-e .` and paths inside it are left out.
        found.extend(crate::deps::read_directory_requirements(
            project,
            name,
            crate::deps::LocalPaths::SkipInsideRoot,
        )?);
    }
    let pyproject = project.join("pyproject.toml");
    if pyproject.is_file() {
        let text = std::fs::read_to_string(&pyproject).map_err(|source| Error::ReadInput {
            path: pyproject.clone(),
            source,
        })?;
        let value: toml::Value = toml::from_str(&text).map_err(|e| {
            Error::InvalidInput(format!("{} is not valid TOML: {e}", pyproject.display()))
        })?;
        let strings = |v: Option<&toml::Value>| -> Vec<String> {
            v.and_then(|v| v.as_array())
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let own_name = value
            .get("project")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_string();
        let mut declared = strings(value.get("project").and_then(|p| p.get("dependencies")));
        for group in ["test", "tests", "testing", "dev"] {
            declared.extend(strings(
                value
                    .get("project")
                    .and_then(|p| p.get("optional-dependencies"))
                    .and_then(|o| o.get(group)),
            ));
            declared.extend(strings(
                value.get("dependency-groups").and_then(|g| g.get(group)),
            ));
        }
        // A group may include the project itself (`name[test]`); it is uploaded, not installed.
        declared.retain(|r| {
            own_name.is_empty() || !requirement_name(r).eq_ignore_ascii_case(&own_name)
        });
        for requirement in declared {
            let validated = crate::deps::PythonRequirement::parse(&requirement)
                .map_err(|e| crate::deps::spec::from_origin(e, "pyproject.toml"))?;
            found.push(validated.to_string());
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    found.retain(|r| seen.insert(r.clone()));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_names_follow_pytest() {
        assert_eq!(
            junit_names("tests/test_calc.py::TestAdd::test_zero"),
            ("tests.test_calc.TestAdd".into(), "test_zero".into())
        );
        assert_eq!(
            junit_names("test_x.py::test_y[1-2]"),
            ("test_x".into(), "test_y[1-2]".into())
        );
    }

    fn result(nodeid: &str, outcome: TestOutcome, message: &str, stdout: &str) -> TestResult {
        TestResult {
            nodeid: nodeid.into(),
            outcome,
            phase: "call".into(),
            duration_seconds: 0.25,
            message: message.into(),
            traceback: "Traceback <&>\n".into(),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    #[test]
    fn junit_names_and_text_with_xml_special_characters_are_escaped() {
        let tests = vec![
            result(
                "tests/test_<x>.py::Test&Co::test_\"q\"['a'<b]",
                TestOutcome::Failed,
                "assert 1 < 2 & \"x\"\u{1}",
                "out <tag> & \u{1b}[31mred\u{1b}[0m\n",
            ),
            result("t.py::test_ok", TestOutcome::Passed, "", ""),
            result("t.py::test_skip", TestOutcome::Xfailed, "why <not>", ""),
        ];
        let report = SuiteReport {
            passed: false,
            status: Status::Error,
            limit: None,
            exit_code: Some(1),
            summary: TestSummary::default(),
            tests,
            stdout: String::new(),
            stderr: String::new(),
            duration_ms: 0.0,
        };
        let xml = report.junit_xml("suite & <co>").unwrap();
        assert!(xml.starts_with("<?xml"), "{xml}");
        assert!(
            xml.contains(
                "<testsuite name=\"suite &amp; &lt;co&gt;\" tests=\"3\" skipped=\"1\" \
                 errors=\"0\" failures=\"1\" time=\"0.750\">"
            ),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<testcase name=\"test_&quot;q&quot;[&apos;a&apos;&lt;b]\" \
                 classname=\"tests.test_&lt;x&gt;.Test&amp;Co\" time=\"0.250\">"
            ),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<failure message=\"assert 1 &lt; 2 &amp; &quot;x&quot;\">Traceback &lt;&amp;&gt;"
            ),
            "{xml}"
        );
        // Control characters and terminal colours are not XML; they are dropped.
        assert!(
            xml.contains("<system-out>out &lt;tag&gt; &amp; red\n</system-out>"),
            "{xml}"
        );
        assert!(
            xml.contains("<skipped message=\"why &lt;not&gt;\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains("<testcase name=\"test_ok\" classname=\"t\" time=\"0.250\"/>"),
            "{xml}"
        );
    }

    #[test]
    fn requirements_come_from_files_and_pyproject() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("requirements.txt"),
            "attrs>=22\n-r requirements/extra.txt\n-e .\n-c constraints.txt\n# comment\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("requirements")).unwrap();
        std::fs::write(
            dir.path().join("requirements/extra.txt"),
            "-r base.txt\ntabulate\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("requirements/base.txt"), "six\n").unwrap();
        std::fs::write(dir.path().join("constraints.txt"), "six<2\n").unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname = \"calc\"\ndependencies = [\"humanize\"]\n\
             [project.optional-dependencies]\ntest = [\"calc[extra]\", \"pytest>=8\"]\n",
        )
        .unwrap();
        assert_eq!(
            project_requirements(dir.path()).unwrap(),
            ["attrs>=22", "six", "tabulate", "humanize", "pytest>=8"]
        );
    }

    #[test]
    fn project_requirements_stay_inside_the_project() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), "leaked-name\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path();
        let fifo = std::process::Command::new("mkfifo")
            .arg(project.join("fifo"))
            .status()
            .unwrap();
        assert!(fifo.success());
        for (text, label) in [
            ("-r ../outside.txt\n", "dotdot"),
            (
                &format!("-r {}\n", outside.path().join("secret.txt").display()) as &str,
                "absolute",
            ),
            ("-r linked.txt\n", "symlink"),
            ("--index-url https://example.invalid/simple\nsix\n", "index"),
            ("evil @ file:///tmp/evil\n", "url"),
            ("-e ../other\n", "editable outside"),
            ("-r fifo\n", "fifo"),
        ] {
            std::fs::write(project.join("requirements.txt"), text).unwrap();
            let _ = std::fs::remove_file(project.join("linked.txt"));
            std::os::unix::fs::symlink(
                outside.path().join("secret.txt"),
                project.join("linked.txt"),
            )
            .unwrap();
            let error = project_requirements(project).expect_err(label);
            assert_eq!(error.kind(), "unsupported_requirement", "{label}: {error}");
        }
        std::fs::write(project.join("requirements.txt"), "six\n").unwrap();
        std::fs::write(
            project.join("pyproject.toml"),
            "[project]\nname = \"p\"\ndependencies = [\"evil @ file:///tmp/evil\"]\n",
        )
        .unwrap();
        let error = project_requirements(project).unwrap_err();
        assert_eq!(error.kind(), "unsupported_requirement", "{error}");
        assert!(error.to_string().contains("pyproject.toml"), "{error}");
    }
}
