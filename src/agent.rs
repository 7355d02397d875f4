//! The coding-agent pipeline: a request becomes code (from a provider), the code runs in a
//! fresh sandbox with the user's files and its detected dependencies, the result is
//! validated, and on failure the errors go back to the provider for another attempt. Every
//! step is in the report.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::dvm::{Dvm, Runtime};
use crate::error::Error;
use crate::outcome::Status;
use crate::sandbox::RunInput;
use crate::validate::{self, CaseFile, MatchMode, Verdict};
use crate::workspace::{OutputFile, Workspace};

/// One message of the conversation with a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl Message {
    fn new(role: &str, content: impl Into<String>) -> Self {
        Message {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// Where code comes from: given the conversation so far, the next reply.
pub trait Provider {
    /// What the report calls this provider.
    fn describe(&self) -> String;
    fn reply(&mut self, conversation: &[Message]) -> Result<String, Error>;
}

/// The user's own code as the "generated" step: the same code every attempt.
pub struct CodeProvider {
    pub name: String,
    pub code: String,
}

impl Provider for CodeProvider {
    fn describe(&self) -> String {
        format!("code from {}", self.name)
    }

    fn reply(&mut self, _: &[Message]) -> Result<String, Error> {
        Ok(format!("```{}\n{}\n```\n", self.name, self.code))
    }
}

/// Recorded replies played back in order (for tests and demos; not a model).
pub struct ReplayProvider {
    source: String,
    replies: Vec<String>,
    next: usize,
}

impl ReplayProvider {
    /// Reads a JSON array of reply strings, or an object with a `replies` array.
    pub fn read(path: &std::path::Path) -> Result<ReplayProvider, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadInput {
            path: path.to_path_buf(),
            source,
        })?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            Error::InvalidInput(format!("{} is not a JSON replay file: {e}", path.display()))
        })?;
        let list = match &value {
            serde_json::Value::Array(_) => &value,
            _ => &value["replies"],
        };
        let replies: Vec<String> = list
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if replies.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{} holds no replies: write a JSON array of reply strings",
                path.display()
            )));
        }
        Ok(ReplayProvider {
            source: path.display().to_string(),
            replies,
            next: 0,
        })
    }
}

impl Provider for ReplayProvider {
    fn describe(&self) -> String {
        format!(
            "replay of recorded replies from {} (not a model)",
            self.source
        )
    }

    fn reply(&mut self, _: &[Message]) -> Result<String, Error> {
        let reply = self.replies.get(self.next).cloned().ok_or_else(|| {
            Error::InvalidInput(format!(
                "the replay file has {} replies and attempt {} needs another",
                self.replies.len(),
                self.next + 1
            ))
        })?;
        self.next += 1;
        Ok(reply)
    }
}

/// A file of code taken from a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeFile {
    pub name: String,
    pub code: String,
}

/// The code files of a reply: each fenced block (```` ``` ```` or `~~~`, as CommonMark reads
/// them, so indented, nested and longer fences work), named by a file name in its info string
/// (```` ```python main.py ````), by a `# file: NAME` first line, or by a file name on the line
/// just before the fence; unnamed blocks are `main.EXT` for the first and `file2.EXT`… after
/// it. A reply without a fence is refused.
pub fn extract_code(reply: &str, extension: &str) -> Result<Vec<CodeFile>, Error> {
    use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};
    let mut files = Vec::new();
    // The block being read: its name so far and its text.
    let mut open: Option<(Option<String>, String)> = None;
    for (event, range) in Parser::new(reply).into_offset_iter() {
        match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) => {
                let name = info
                    .split_whitespace()
                    .find(|word| word.contains('.') && !word.starts_with('.'))
                    .map(str::to_string)
                    .or_else(|| {
                        let before = line_before(reply, range.start)?
                            .trim()
                            .trim_matches(['*', '`', ':', '#', ' ']);
                        is_file_name(before).then(|| before.to_string())
                    });
                open = Some((name, String::new()));
            }
            Event::Text(text) => {
                if let Some((_, code)) = open.as_mut() {
                    code.push_str(&text);
                }
            }
            Event::End(TagEnd::CodeBlock) => {
                let Some((mut name, mut code)) = open.take() else {
                    continue;
                };
                let first_end = code.find('\n').unwrap_or(code.len());
                if let Some(named) = code[..first_end].trim().strip_prefix("# file:") {
                    name = Some(named.trim().to_string());
                    code.drain(..(first_end + 1).min(code.len()));
                }
                if !code.ends_with('\n') {
                    code.push('\n');
                }
                let name = name.unwrap_or_else(|| {
                    if files.is_empty() {
                        format!("main.{extension}")
                    } else {
                        format!("file{}.{extension}", files.len() + 1)
                    }
                });
                files.push(CodeFile { name, code });
            }
            _ => {}
        }
    }
    if files.is_empty() {
        return Err(Error::InvalidInput(
            "the reply has no fenced code block".into(),
        ));
    }
    Ok(files)
}

/// The line before the one holding byte `at` of `text`, if there is one.
fn line_before(text: &str, at: usize) -> Option<&str> {
    let this_line_start = text.get(..at)?.rfind('\n')?;
    let previous = &text[..this_line_start];
    Some(match previous.rfind('\n') {
        Some(newline) => &previous[newline + 1..],
        None => previous,
    })
}

fn is_file_name(text: &str) -> bool {
    !text.is_empty()
        && !text.contains(' ')
        && text.contains('.')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
}

/// What a run must produce to pass.
#[derive(Debug, Clone, Default)]
pub enum Expectation {
    /// Exit 0.
    #[default]
    ExitZero,
    /// Exit 0 and this stdout.
    Stdout { expected: String, mode: MatchMode },
    /// Every case of a test-case file accepted.
    Cases(CaseFile),
}

/// A request to the pipeline.
#[derive(Debug, Clone, Default)]
pub struct AgentRequest {
    pub request: String,
    /// Host files and directories uploaded into the workspace: (host, guest).
    pub files: Vec<(PathBuf, String)>,
    pub expect: Expectation,
    pub attempts: usize,
    /// The runtime id; default `python`.
    pub runtime: Option<String>,
    /// Requirements installed for every attempt besides those detected in the code (from a
    /// profile).
    pub packages: Vec<String>,
    /// Ask the provider for pytest unit tests once, and run them against each attempt's code
    /// in a separate sandbox; an attempt passes only when they pass.
    pub unit_tests: bool,
    /// Limits and other settings of every run.
    pub input: RunInput,
}

/// Where an attempt's time went, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Waiting for the provider's reply.
    pub generate_ms: f64,
    /// Detecting and installing packages.
    pub install_ms: f64,
    /// Running (and judging) the code.
    pub execute_ms: f64,
    /// Running the unit tests.
    pub unit_tests_ms: f64,
}

/// One attempt, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub number: usize,
    pub files: Vec<CodeFile>,
    pub passed: bool,
    /// Why the code could not run at all (no code block, an install failure…).
    pub error: Option<String>,
    pub status: Option<Status>,
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub diff: Option<String>,
    pub verdicts: Option<validate::CasesReport>,
    pub packages: Vec<String>,
    /// Whether the packages came from the store (installed before) rather than downloaded.
    pub packages_from_store: bool,
    pub output_files: Vec<OutputFile>,
    /// The unit tests' results, when they were asked for.
    pub unit_tests: Option<crate::review::SuiteReport>,
    pub timings: Timings,
    pub duration_ms: f64,
}

/// The whole run of the pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct AgentReport {
    pub request: String,
    pub provider: String,
    pub runtime: String,
    pub passed: bool,
    pub attempts: Vec<Attempt>,
    /// The code of the last attempt.
    pub final_code: Vec<CodeFile>,
    /// The unit tests the provider wrote, when they were asked for.
    pub unit_tests: Vec<CodeFile>,
    pub duration_ms: f64,
}

impl AgentReport {
    /// A readable summary.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "request: {}", self.request);
        let _ = writeln!(
            out,
            "code from: {}; runtime: {}",
            self.provider, self.runtime
        );
        for attempt in &self.attempts {
            let result = if attempt.passed { "passed" } else { "failed" };
            let _ = writeln!(
                out,
                "attempt {}: {result} in {:.0} ms ({})",
                attempt.number,
                attempt.duration_ms,
                attempt
                    .files
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if let Some(error) = &attempt.error {
                let _ = writeln!(out, "  {error}");
            }
            if !attempt.packages.is_empty() {
                let _ = writeln!(out, "  packages: {}", attempt.packages.join(", "));
            }
            if let Some(verdicts) = &attempt.verdicts {
                for line in verdicts.render().lines() {
                    let _ = writeln!(out, "  {line}");
                }
            } else if let Some(diff) = &attempt.diff {
                for line in diff.lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
            if let Some(suite) = &attempt.unit_tests {
                let _ = write!(out, "  unit tests: ");
                for line in suite.render().lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
            if !attempt.passed && !attempt.stderr.is_empty() {
                let tail: Vec<&str> = attempt.stderr.lines().rev().take(6).collect();
                for line in tail.into_iter().rev() {
                    let _ = writeln!(out, "  stderr: {line}");
                }
            }
            for file in &attempt.output_files {
                let _ = writeln!(out, "  wrote {} ({} bytes)", file.path, file.size);
            }
        }
        let _ = writeln!(
            out,
            "{} after {} attempt(s), {:.0} ms",
            if self.passed { "PASSED" } else { "FAILED" },
            self.attempts.len(),
            self.duration_ms
        );
        out
    }
}

const SYSTEM_PROMPT: &str = "You write one complete program that does what the user asks. \
It runs in a sandbox with no network, from its working directory, where the user's files are. \
Answer with the program in one fenced code block; name extra files in the fence's info string.";

/// Runs the pipeline: up to `request.attempts` rounds of reply → code → sandbox → validate.
pub fn run(
    dvm: &Dvm,
    provider: &mut dyn Provider,
    request: &AgentRequest,
) -> Result<AgentReport, Error> {
    let started = Instant::now();
    let runtime_id = request.runtime.clone().unwrap_or_else(|| "python".into());
    let runtime = dvm.runtime(&runtime_id)?;
    let extension = runtime.language().script_extension();
    let mut conversation = vec![
        Message::new("system", SYSTEM_PROMPT),
        Message::new(
            "user",
            describe_request(request, runtime.language().as_str()),
        ),
    ];
    let mut attempts = Vec::new();
    let mut tests: Option<Vec<CodeFile>> = None;
    for number in 1..=request.attempts.max(1) {
        let asked = Instant::now();
        let reply = provider.reply(&conversation)?;
        let generate_ms = asked.elapsed().as_secs_f64() * 1000.0;
        conversation.push(Message::new("assistant", reply.clone()));
        if request.unit_tests
            && tests.is_none()
            && let Ok(code) = extract_code(&reply, extension)
        {
            tests = Some(ask_for_tests(provider, request, &runtime, &code)?);
        }
        let mut attempt = attempt(
            &runtime,
            request,
            number,
            &reply,
            extension,
            tests.as_deref(),
        );
        attempt.timings.generate_ms = generate_ms;
        let passed = attempt.passed;
        conversation.push(Message::new("user", feedback(&attempt)));
        attempts.push(attempt);
        if passed {
            break;
        }
    }
    let final_code = attempts.last().map(|a| a.files.clone()).unwrap_or_default();
    Ok(AgentReport {
        request: request.request.clone(),
        provider: provider.describe(),
        runtime: runtime_id,
        passed: attempts.last().is_some_and(|a| a.passed),
        attempts,
        final_code,
        unit_tests: tests.unwrap_or_default(),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// The name of the unit-test file the provider is asked for.
pub const UNIT_TEST_FILE: &str = "test_main.py";

const TESTS_PROMPT: &str = "You write pytest unit tests. The tests run in a sandbox with no \
network, next to the program in its working directory. Answer with one fenced code block \
holding the whole test file.";

/// Asks the provider, in a conversation of its own, for unit tests of the first code.
fn ask_for_tests(
    provider: &mut dyn Provider,
    request: &AgentRequest,
    runtime: &Runtime,
    code: &[CodeFile],
) -> Result<Vec<CodeFile>, Error> {
    if runtime.language() != crate::Language::Python {
        return Err(Error::InvalidInput(format!(
            "unit tests are written for pytest and run on a Python runtime; `{}` is {}",
            runtime.id(),
            runtime.language()
        )));
    }
    let module = code[0].name.trim_end_matches(".py");
    let mut text = format!(
        "A program was written for this request: {}\n\nIt is saved as `{}`:\n```python\n{}```\n\n\
         Write pytest tests for it in `{UNIT_TEST_FILE}`. Import what you test from `{module}` \
         (importing runs its top-level code). Test the behaviour the request asks for, not \
         this program's accidents.",
        request.request, code[0].name, code[0].code
    );
    if let Expectation::Stdout { expected, .. } = &request.expect {
        text.push_str(&format!("\nThe program must print:\n```\n{expected}\n```"));
    }
    let conversation = [
        Message::new("system", TESTS_PROMPT),
        Message::new("user", text),
    ];
    let reply = provider.reply(&conversation)?;
    let mut files = extract_code(&reply, "py")?;
    files.truncate(1);
    files[0].name = UNIT_TEST_FILE.to_string();
    Ok(files)
}

/// The first user message: the request and what the sandbox holds.
fn describe_request(request: &AgentRequest, language: &str) -> String {
    let mut text = format!("Write a {language} program. {}\n", request.request);
    for (host, guest) in &request.files {
        text.push_str(&format!("\nThe file `{guest}` is in the working directory"));
        if let Ok(head) = std::fs::read(host) {
            let head = String::from_utf8_lossy(&head[..head.len().min(400)]).into_owned();
            text.push_str(&format!("; it begins:\n```\n{head}\n```"));
        } else {
            text.push('.');
        }
    }
    if let Expectation::Stdout { expected, .. } = &request.expect {
        text.push_str(&format!("\n\nIt must print exactly:\n```\n{expected}\n```"));
    }
    text
}

/// What the provider hears after an attempt.
fn feedback(attempt: &Attempt) -> String {
    if attempt.passed {
        return "It passed.".into();
    }
    let mut text = String::from("It failed.");
    if let Some(error) = &attempt.error {
        text.push_str(&format!("\n{error}"));
    }
    if let Some(code) = attempt.exit_code.filter(|code| *code != 0) {
        text.push_str(&format!("\nIt exited with code {code}."));
    }
    if !attempt.stderr.is_empty() {
        text.push_str(&format!("\nstderr:\n```\n{}\n```", attempt.stderr));
    }
    if let Some(diff) = &attempt.diff {
        text.push_str(&format!(
            "\nExpected against actual output:\n```diff\n{diff}\n```"
        ));
    }
    if let Some(verdicts) = &attempt.verdicts {
        text.push_str(&format!("\nTest cases:\n```\n{}\n```", verdicts.render()));
    }
    if let Some(suite) = attempt.unit_tests.as_ref().filter(|s| !s.passed) {
        text.push_str(&format!(
            "\nUnit tests ({UNIT_TEST_FILE}):\n```\n{}\n```",
            suite.render()
        ));
    }
    text.push_str("\nFix the program and answer with the whole corrected program.");
    text
}

/// One attempt: code from the reply, run and judged.
fn attempt(
    runtime: &Runtime,
    request: &AgentRequest,
    number: usize,
    reply: &str,
    extension: &str,
    tests: Option<&[CodeFile]>,
) -> Attempt {
    let started = Instant::now();
    let mut attempt = Attempt {
        number,
        files: Vec::new(),
        passed: false,
        error: None,
        status: None,
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
        diff: None,
        verdicts: None,
        packages: Vec::new(),
        packages_from_store: false,
        output_files: Vec::new(),
        unit_tests: None,
        timings: Timings::default(),
        duration_ms: 0.0,
    };
    if let Err(error) = run_attempt(runtime, request, reply, extension, tests, &mut attempt) {
        attempt.error = Some(error.to_string());
    }
    attempt.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    attempt
}

fn run_attempt(
    runtime: &Runtime,
    request: &AgentRequest,
    reply: &str,
    extension: &str,
    tests: Option<&[CodeFile]>,
    attempt: &mut Attempt,
) -> Result<(), Error> {
    attempt.files = extract_code(reply, extension)?;
    let entry = attempt.files[0].clone();
    let workspace = Workspace::new()?;
    for (host, guest) in &request.files {
        workspace.upload(host, guest)?;
    }
    for file in &attempt.files[1..] {
        workspace.write(&file.name, file.code.as_bytes())?;
    }
    let mut input = request.input.clone();
    let installing = Instant::now();
    // The packages come as for any job: the request's, the code's PEP 723 block, a
    // requirements.txt or package.json among the files, and what a Python program imports.
    let job = crate::Job {
        source: crate::JobSource::Code {
            code: entry.code.clone().into_bytes(),
            name: Some(entry.name.clone()),
        },
        requirements: request.packages.clone(),
        discovery: crate::Discovery {
            auto_deps: runtime.language() == crate::Language::Python,
            ..crate::Discovery::default()
        },
        input: RunInput {
            workspace: Some(workspace.clone()),
            ..input.clone()
        },
        ..crate::Job::code(runtime.id(), "")
    };
    if let Some(packages) = runtime.job_packages(&job)? {
        attempt.packages_from_store = packages.installed.iter().all(|p| p.from_store);
        attempt.packages = packages.summary();
        input.packages = Some(packages);
    }
    attempt.timings.install_ms = installing.elapsed().as_secs_f64() * 1000.0;
    let executing = Instant::now();
    match &request.expect {
        Expectation::Cases(cases) => {
            // Each case gets its own sandbox; the user's files are uploaded into each.
            let mut with_files = cases.clone();
            for case in &mut with_files.cases {
                for (host, guest) in &request.files {
                    if let Ok(bytes) = std::fs::read(host) {
                        case.files
                            .entry(guest.clone())
                            .or_insert_with(|| String::from_utf8_lossy(&bytes).into_owned());
                    }
                }
                for file in &attempt.files[1..] {
                    case.files.insert(file.name.clone(), file.code.clone());
                }
            }
            let parallel = std::thread::available_parallelism().map_or(1, usize::from);
            let report = validate::run_cases(
                runtime,
                &entry.name,
                entry.code.as_bytes(),
                &with_files,
                &input,
                parallel,
            )?;
            attempt.passed = report.all_accepted();
            if let Some(first) = report.cases.iter().find(|c| c.verdict != Verdict::Accepted) {
                attempt.stderr = first.stderr.clone();
                attempt.diff = first.diff.clone();
            }
            attempt.verdicts = Some(report);
        }
        expectation => {
            input.workspace = Some(workspace);
            let outcome = runtime.run_script(&entry.name, entry.code.as_bytes(), &input)?;
            attempt.status = Some(outcome.status);
            attempt.exit_code = outcome.exit_code;
            attempt.stdout = String::from_utf8_lossy(&outcome.stdout).into_owned();
            attempt.stderr = String::from_utf8_lossy(&outcome.stderr).into_owned();
            attempt.output_files = outcome.files.clone();
            let ran = outcome.status == Status::Ok;
            attempt.passed = match expectation {
                Expectation::Stdout { expected, mode } if ran => {
                    let ok = validate::matches(*mode, expected, &attempt.stdout)?;
                    if !ok {
                        attempt.diff = Some(validate::diff(expected, &attempt.stdout));
                    }
                    ok
                }
                _ => ran,
            };
        }
    }
    attempt.timings.execute_ms = executing.elapsed().as_secs_f64() * 1000.0;
    if let Some(tests) = tests {
        let testing = Instant::now();
        let suite = run_unit_tests(runtime, request, &attempt.files, tests, &input)?;
        attempt.passed &= suite.passed;
        attempt.unit_tests = Some(suite);
        attempt.timings.unit_tests_ms = testing.elapsed().as_secs_f64() * 1000.0;
    }
    Ok(())
}

/// Runs the unit tests against the code in a sandbox of their own, with the user's files,
/// the code's packages and pytest.
fn run_unit_tests(
    runtime: &Runtime,
    request: &AgentRequest,
    code: &[CodeFile],
    tests: &[CodeFile],
    input: &RunInput,
) -> Result<crate::review::SuiteReport, Error> {
    let workspace = Workspace::new()?;
    for (host, guest) in &request.files {
        workspace.upload(host, guest)?;
    }
    for file in code.iter().chain(tests) {
        workspace.write(&file.name, file.code.as_bytes())?;
    }
    let mut requirements = input
        .packages
        .as_ref()
        .map(crate::deps::PackageSet::pinned)
        .unwrap_or_default();
    requirements.push("pytest".into());
    let mut input = input.clone();
    input.packages = Some(runtime.install_packages(&crate::PackageRequest {
        requirements,
        ..crate::PackageRequest::default()
    })?);
    input.workspace = None;
    crate::review::run_pytest(
        runtime,
        workspace,
        &input,
        &tests.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_comes_out_of_fences_with_names() {
        let reply = "Here you go:\n\n```python\nprint(1)\n```\n\nhelpers.py:\n```python\nX = 1\n```\n~~~ python extra.py\nY = 2\n~~~\n```\n# file: data/conf.py\nZ = 3\n```\n";
        let files = extract_code(reply, "py").unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["main.py", "helpers.py", "extra.py", "data/conf.py"]);
        assert_eq!(files[0].code, "print(1)\n");
        assert_eq!(files[3].code, "Z = 3\n");
        assert!(extract_code("no code here", "py").is_err());
        let unnamed = extract_code("```\na\n```\n```\nb\n```", "mjs").unwrap();
        assert_eq!(unnamed[1].name, "file2.mjs");
    }

    #[test]
    fn fences_are_read_as_commonmark_reads_them() {
        // A longer fence holds a shorter one; a tilde fence is closed only by tildes.
        let reply = "Use this:\n\n````markdown README.md\n```python\nprint(1)\n```\n````\n\n\
                     ~~~python\nprint('```')\n~~~\n";
        let files = extract_code(reply, "py").unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
        assert_eq!(files[0].name, "README.md");
        assert_eq!(files[0].code, "```python\nprint(1)\n```\n");
        assert_eq!(files[1].name, "file2.py");
        assert_eq!(files[1].code, "print('```')\n");

        // A fence indented up to three spaces, or inside a list item, loses that indentation;
        // four spaces make an indented code block, which is not a fence.
        let reply = "1. First:\n\n   ```python\n   def f():\n       return 1\n   ```\n\n\
                     text\n\n    ```\n    not a fence\n    ```\n";
        let files = extract_code(reply, "py").unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(files[0].code, "def f():\n    return 1\n");

        // Info strings name the file wherever the name stands among the words.
        let files = extract_code("```py title=x app/run.py\nX = 1\n```", "py").unwrap();
        assert_eq!(files[0].name, "app/run.py");
        // An unclosed fence runs to the end of the reply; an empty block is one empty line.
        let files = extract_code("```\n```\ntext\n```python\nY = 2\n", "py").unwrap();
        assert_eq!(files[0].code, "\n");
        assert_eq!(files[1].code, "Y = 2\n");
        assert!(extract_code("    indented only\n", "py").is_err());
    }
}
