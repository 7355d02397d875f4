//! Checking what a run produced: expected stdout (exact, whitespace-normalised, regex or
//! JSON-equal), exit code and output files; and test-case files, each case run in its own
//! sandbox, in parallel, with a Judge0-style verdict.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dvm::Runtime;
use crate::error::Error;
use crate::limits::LimitKind;
use crate::outcome::{Outcome, Status};
use crate::sandbox::RunInput;
use crate::workspace::Workspace;

/// How actual stdout is compared with the expected text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchMode {
    /// Byte for byte.
    Exact,
    /// Lines compared with surrounding whitespace trimmed and trailing blank lines dropped
    /// (the default, as judges do).
    #[default]
    Normalized,
    /// The expected text is a regular expression that must match the whole output.
    Regex,
    /// Both parse as JSON and are equal as values.
    Json,
}

/// The names `--match` and test-case files use: exact, normalized, regex, json.
impl std::str::FromStr for MatchMode {
    type Err = String;

    fn from_str(text: &str) -> Result<MatchMode, String> {
        match text {
            "exact" => Ok(MatchMode::Exact),
            "normalized" => Ok(MatchMode::Normalized),
            "regex" => Ok(MatchMode::Regex),
            "json" => Ok(MatchMode::Json),
            _ => Err(format!("`{text}` is not exact, normalized, regex or json")),
        }
    }
}

/// A Judge0-style verdict. `id` and `description` follow Judge0's status table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accepted,
    WrongAnswer,
    TimeLimitExceeded,
    MemoryLimitExceeded,
    /// Killed for writing too much (output, disk or file quotas): Judge0's SIGXFSZ.
    OutputLimitExceeded,
    /// Exited non-zero.
    RuntimeErrorNzec,
    /// Trapped (crashed).
    RuntimeErrorOther,
    InternalError,
}

impl Verdict {
    /// Judge0's status id.
    pub fn id(self) -> u32 {
        match self {
            Verdict::Accepted => 3,
            Verdict::WrongAnswer => 4,
            Verdict::TimeLimitExceeded => 5,
            Verdict::OutputLimitExceeded => 8,
            Verdict::RuntimeErrorNzec => 11,
            Verdict::RuntimeErrorOther | Verdict::MemoryLimitExceeded => 12,
            Verdict::InternalError => 13,
        }
    }

    /// Judge0's status description (memory has no status of its own there; dvm names it).
    pub fn description(self) -> &'static str {
        match self {
            Verdict::Accepted => "Accepted",
            Verdict::WrongAnswer => "Wrong Answer",
            Verdict::TimeLimitExceeded => "Time Limit Exceeded",
            Verdict::MemoryLimitExceeded => "Memory Limit Exceeded",
            Verdict::OutputLimitExceeded => "Runtime Error (SIGXFSZ)",
            Verdict::RuntimeErrorNzec => "Runtime Error (NZEC)",
            Verdict::RuntimeErrorOther => "Runtime Error (Other)",
            Verdict::InternalError => "Internal Error",
        }
    }

    /// The verdict of an outcome that ran to an end other than a mismatch.
    pub fn of_ending(outcome: &Outcome) -> Option<Verdict> {
        match (outcome.status, outcome.limit) {
            (Status::Ok, _) => None,
            (Status::Error, _) => Some(Verdict::RuntimeErrorNzec),
            (Status::Crashed, _) => Some(Verdict::RuntimeErrorOther),
            (Status::Limit, Some(LimitKind::Deadline | LimitKind::Fuel)) => {
                Some(Verdict::TimeLimitExceeded)
            }
            (Status::Limit, Some(LimitKind::Memory | LimitKind::Table)) => {
                Some(Verdict::MemoryLimitExceeded)
            }
            (Status::Limit, Some(LimitKind::Output | LimitKind::Disk | LimitKind::Files)) => {
                Some(Verdict::OutputLimitExceeded)
            }
            (Status::Limit, _) => Some(Verdict::InternalError),
        }
    }
}

/// Whether `actual` matches `expected` under `mode`; `Err` for an invalid pattern.
pub fn matches(mode: MatchMode, expected: &str, actual: &str) -> Result<bool, Error> {
    Ok(match mode {
        MatchMode::Exact => expected == actual,
        MatchMode::Normalized => normalized(expected) == normalized(actual),
        MatchMode::Regex => {
            let pattern = regex::Regex::new(&format!("^(?:{expected})$")).map_err(|e| {
                Error::InvalidInput(format!("expected output `{expected}` is not a regex: {e}"))
            })?;
            pattern.is_match(actual)
        }
        MatchMode::Json => {
            let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).ok();
            match (parse(expected), parse(actual)) {
                (Some(expected), Some(actual)) => expected == actual,
                _ => false,
            }
        }
    })
}

/// Lines with surrounding whitespace trimmed, trailing blank lines dropped.
fn normalized(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().map(str::trim).collect();
    while lines.last().is_some_and(|line| line.is_empty()) {
        lines.pop();
    }
    lines
}

/// A unified diff of expected against actual, for reports.
pub fn diff(expected: &str, actual: &str) -> String {
    similar::TextDiff::from_lines(expected, actual)
        .unified_diff()
        .context_radius(3)
        .header("expected", "actual")
        .to_string()
}

/// A test-case file (TOML): defaults, then `[[case]]` tables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    #[serde(default)]
    pub defaults: CaseDefaults,
    #[serde(default, rename = "case")]
    pub cases: Vec<TestCase>,
}

/// Settings every case takes unless it sets its own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseDefaults {
    #[serde(default, rename = "match")]
    pub match_mode: Option<MatchMode>,
    /// Wall-clock limit per case, e.g. `2s`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Memory cap per case, e.g. `256MiB`.
    #[serde(default)]
    pub memory: Option<String>,
}

/// One case: what goes in and what must come out.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub stdin: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Files written into the workspace first: path → contents.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    #[serde(default)]
    pub expected_stdout: Option<String>,
    #[serde(default, rename = "match")]
    pub match_mode: Option<MatchMode>,
    /// Exit code required (default 0).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Files the run must leave in the workspace: path → contents (compared normalised).
    #[serde(default)]
    pub expected_files: BTreeMap<String, String>,
    #[serde(default)]
    pub timeout: Option<String>,
}

impl CaseFile {
    pub fn read(path: &Path) -> Result<CaseFile, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadInput {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<CaseFile, Error> {
        let file: CaseFile = toml::from_str(text)
            .map_err(|e| Error::InvalidInput(format!("not a test-case file: {e}")))?;
        if file.cases.is_empty() {
            return Err(Error::InvalidInput(
                "the test-case file has no [[case]] tables".into(),
            ));
        }
        Ok(file)
    }
}

fn parse_duration(text: &str) -> Result<Duration, Error> {
    humantime::parse_duration(text)
        .map_err(|e| Error::InvalidInput(format!("`{text}` is not a duration such as 2s ({e})")))
}

/// How one case went.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub verdict: Verdict,
    pub status_id: u32,
    pub description: String,
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Expected against actual stdout (or a file), when they differ.
    pub diff: Option<String>,
    pub duration_ms: f64,
    pub memory_peak_bytes: u64,
}

/// Every case's result and the totals.
#[derive(Debug, Clone, Serialize)]
pub struct CasesReport {
    pub cases: Vec<CaseResult>,
    pub accepted: usize,
    pub total: usize,
}

impl CasesReport {
    pub fn all_accepted(&self) -> bool {
        self.accepted == self.total
    }

    /// A table for a person.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for case in &self.cases {
            let _ = writeln!(
                out,
                "{:<28} {:<26} {:>8.1} ms",
                case.name, case.description, case.duration_ms
            );
            if let Some(diff) = &case.diff {
                for line in diff.lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
        let _ = writeln!(out, "{} of {} accepted", self.accepted, self.total);
        out
    }
}

/// Judges one finished run against `case`.
pub fn judge(
    case: &TestCase,
    mode: MatchMode,
    outcome: &Outcome,
    workspace: &Workspace,
) -> Result<(Verdict, Option<String>), Error> {
    let expected_exit = case.exit_code.unwrap_or(0);
    let ended_as_expected = outcome.status != Status::Limit
        && outcome.status != Status::Crashed
        && outcome.exit_code == Some(expected_exit);
    if !ended_as_expected {
        let verdict = Verdict::of_ending(outcome).unwrap_or(Verdict::RuntimeErrorNzec);
        return Ok((verdict, None));
    }
    let stdout = String::from_utf8_lossy(&outcome.stdout);
    if let Some(expected) = &case.expected_stdout
        && !matches(mode, expected, &stdout)?
    {
        return Ok((Verdict::WrongAnswer, Some(diff(expected, &stdout))));
    }
    for (path, expected) in &case.expected_files {
        let actual = workspace
            .read(path, 64 << 20)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        if normalized(expected) != normalized(&actual) {
            let diff = format!("{path}:\n{}", diff(expected, &actual));
            return Ok((Verdict::WrongAnswer, Some(diff)));
        }
    }
    Ok((Verdict::Accepted, None))
}

/// Runs every case of `file` against the script `name`/`source` in its own sandbox, at most
/// `parallel` at a time, starting from `base` (limits, packages…).
pub fn run_cases(
    runtime: &Runtime,
    name: &str,
    source: &[u8],
    file: &CaseFile,
    base: &RunInput,
    parallel: usize,
) -> Result<CasesReport, Error> {
    let mut inputs = Vec::with_capacity(file.cases.len());
    for (index, case) in file.cases.iter().enumerate() {
        let mut input = base.clone();
        input.stdin = case.stdin.clone().into_bytes();
        input.args = case.args.clone();
        if let Some(timeout) = case.timeout.as_ref().or(file.defaults.timeout.as_ref()) {
            input.limits.deadline = parse_duration(timeout)?;
        }
        if let Some(memory) = &file.defaults.memory {
            input.limits.memory_bytes = parse_size::Config::new()
                .with_binary()
                .parse_size(memory)
                .map_err(|e| Error::InvalidInput(format!("`{memory}` is not a size ({e})")))?;
        }
        let workspace = Workspace::new()?;
        for (path, contents) in &case.files {
            workspace.write(path, contents.as_bytes())?;
        }
        input.workspace = Some(workspace);
        let label = case
            .name
            .clone()
            .unwrap_or_else(|| format!("case {}", index + 1));
        let mode = case
            .match_mode
            .or(file.defaults.match_mode)
            .unwrap_or_default();
        inputs.push((label, case, mode, input));
    }
    let parallel = parallel.max(1);
    let mut results: Vec<Option<Result<CaseResult, Error>>> = Vec::new();
    results.resize_with(inputs.len(), || None);
    for (chunk_index, chunk) in inputs.chunks(parallel).enumerate() {
        let finished: Vec<Result<CaseResult, Error>> = std::thread::scope(|scope| {
            let workers: Vec<_> = chunk
                .iter()
                .map(|(label, case, mode, input)| {
                    scope.spawn(move || -> Result<CaseResult, Error> {
                        let outcome = runtime.run_script(name, source, input)?;
                        let workspace = input.workspace.as_ref().expect("set above");
                        let (verdict, diff) = judge(case, *mode, &outcome, workspace)?;
                        Ok(CaseResult {
                            name: label.clone(),
                            verdict,
                            status_id: verdict.id(),
                            description: verdict.description().to_string(),
                            exit_code: outcome.exit_code,
                            stdout: String::from_utf8_lossy(&outcome.stdout).into_owned(),
                            stderr: String::from_utf8_lossy(&outcome.stderr).into_owned(),
                            diff,
                            duration_ms: outcome.duration.as_secs_f64() * 1000.0,
                            memory_peak_bytes: outcome.memory_peak_bytes,
                        })
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| {
                    worker.join().unwrap_or_else(|_| {
                        Err(crate::error::HostError::Stopped {
                            what: "a test-case thread".into(),
                        }
                        .into())
                    })
                })
                .collect()
        });
        for (offset, result) in finished.into_iter().enumerate() {
            results[chunk_index * parallel + offset] = Some(result);
        }
    }
    let cases = results
        .into_iter()
        .map(|result| result.unwrap_or_else(|| Err(Error::Internal("a case did not run".into()))))
        .collect::<Result<Vec<_>, _>>()?;
    let accepted = cases
        .iter()
        .filter(|case| case.verdict == Verdict::Accepted)
        .count();
    Ok(CasesReport {
        total: cases.len(),
        accepted,
        cases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_modes_parse_from_their_serde_names() {
        for mode in [
            MatchMode::Exact,
            MatchMode::Normalized,
            MatchMode::Regex,
            MatchMode::Json,
        ] {
            let name = serde_json::to_value(mode).unwrap();
            assert_eq!(name.as_str().unwrap().parse::<MatchMode>(), Ok(mode));
        }
        assert_eq!(
            "Exact".parse::<MatchMode>(),
            Err("`Exact` is not exact, normalized, regex or json".to_string())
        );
    }

    #[test]
    fn match_modes_compare_as_documented() {
        assert!(matches(MatchMode::Exact, "a\n", "a\n").unwrap());
        assert!(!matches(MatchMode::Exact, "a\n", "a").unwrap());
        assert!(matches(MatchMode::Normalized, "a \nb\n\n", "  a\nb").unwrap());
        assert!(!matches(MatchMode::Normalized, "a b", "a  b").unwrap());
        assert!(matches(MatchMode::Regex, r"total: \d+\n?", "total: 42\n").unwrap());
        assert!(!matches(MatchMode::Regex, r"\d+", "x42").unwrap());
        assert!(matches(MatchMode::Regex, "(", "").is_err());
        assert!(matches(MatchMode::Json, r#"{"a": [1, 2]}"#, "{\"a\":[1,2]}\n").unwrap());
        assert!(!matches(MatchMode::Json, r#"{"a": 1}"#, "not json").unwrap());
    }

    #[test]
    fn diffs_show_both_sides() {
        let diff = diff("1\n2\n3\n", "1\nX\n3\n");
        assert!(diff.contains("-2") && diff.contains("+X"), "{diff}");
    }

    #[test]
    fn case_files_parse_and_refuse_unknown_fields() {
        let file = CaseFile::parse(
            "[defaults]\nmatch = \"exact\"\ntimeout = \"2s\"\n\n[[case]]\nname = \"sum\"\nstdin = \"1 2\\n\"\nexpected_stdout = \"3\\n\"\n[case.files]\n\"in.txt\" = \"x\"\n",
        )
        .unwrap();
        assert_eq!(file.cases.len(), 1);
        assert_eq!(file.defaults.match_mode, Some(MatchMode::Exact));
        assert_eq!(file.cases[0].files["in.txt"], "x");
        assert!(CaseFile::parse("[[case]]\nexpected = \"typo\"\n").is_err());
        assert!(CaseFile::parse("").is_err());
    }
}
