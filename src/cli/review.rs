//! `dvm review`: a Python project's own test suite with pytest.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::common::{LimitArgs, chosen_runtime};
use super::output::{print_json, progress_display, render_error};
use super::{EXIT_CRASH, EXIT_DEADLINE, EXIT_LIMIT};
use crate::{Config, Dvm, Error, LimitKind, Limits, RunInput, Status};

#[derive(Debug, clap::Args)]
pub(super) struct ReviewArgs {
    /// The project's root directory.
    dir: PathBuf,
    /// Arguments for pytest, after `--`: test paths, `-k EXPR`, `-x`…
    #[arg(last = true)]
    pytest_args: Vec<String>,
    /// More packages to install (repeatable, PEP 508); the project's requirements files and
    /// pyproject.toml dependencies are read, and pytest is always installed.
    #[arg(long = "with", value_name = "SPEC")]
    with: Vec<String>,
    /// Take wheels from this directory instead of the package index (offline).
    #[arg(long, value_name = "DIR")]
    find_links: Option<PathBuf>,
    /// A Python runtime id [default: the profile's, else python].
    #[arg(long, value_name = "ID")]
    runtime: Option<String>,
    /// Also write the results as JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Limits of the suite's run (the timeout covers the whole suite; default 5m), and
    /// --profile.
    #[command(flatten)]
    limits: LimitArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// How long a whole test suite may run when neither a flag nor a profile says.
const REVIEW_DEADLINE: Duration = Duration::from_secs(300);

pub(super) fn review(args: ReviewArgs, config: Config) -> ExitCode {
    let json = args.json;
    let result = (|| -> Result<crate::review::ReviewReport, Error> {
        let profile = args.limits.profile(&config)?;
        let limits = args.limits.limits_over(
            Limits {
                deadline: REVIEW_DEADLINE,
                ..Limits::default()
            },
            profile.as_ref(),
        )?;
        let runtime = chosen_runtime(args.runtime, profile.as_ref(), Some("python"));
        let dvm = Dvm::new(config)?;
        if let Some(id) = &runtime {
            dvm.runtime_with_progress(id, &progress_display(json))?;
        }
        let request = crate::review::ReviewRequest {
            project: args.dir.clone(),
            requirements: profile
                .map(|p| p.packages)
                .unwrap_or_default()
                .into_iter()
                .chain(args.with)
                .collect(),
            pytest_args: args.pytest_args,
            runtime,
            find_links: args.find_links,
            input: RunInput {
                limits,
                ..RunInput::default()
            },
        };
        let report = crate::review::review(&dvm, &request)?;
        if let Some(path) = &args.junit {
            let name = args
                .dir
                .canonicalize()
                .ok()
                .and_then(|dir| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "project".into());
            let written = report
                .suite
                .junit_xml(&name)
                .and_then(|xml| std::fs::write(path, xml));
            written.map_err(|source| Error::WriteOutput {
                path: path.clone(),
                source,
            })?;
        }
        Ok(report)
    })();
    match result {
        Ok(report) => {
            if json {
                print_json(&report);
            } else {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(
                    out,
                    "{} on {}: {} package(s) installed in {:.0} ms",
                    report.project,
                    report.runtime,
                    report.packages.len(),
                    report.install_ms
                );
                let _ = write!(out, "{}", report.suite.render());
            }
            let suite = &report.suite;
            match (suite.status, suite.limit) {
                _ if suite.passed => ExitCode::SUCCESS,
                (Status::Limit, Some(LimitKind::Deadline)) => ExitCode::from(EXIT_DEADLINE),
                (Status::Limit, _) => ExitCode::from(EXIT_LIMIT),
                (Status::Crashed, _) => ExitCode::from(EXIT_CRASH),
                _ => ExitCode::from(1),
            }
        }
        Err(error) => render_error(&error, json),
    }
}
