//! `dvm test`: a test-case file against a solution, with Judge0-style verdicts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::common::{LimitArgs, chosen_runtime};
use super::output::{print_json, progress_display, render_error};
use crate::{Catalog, Config, Dvm, Error, RunInput};

#[derive(Debug, clap::Args)]
pub(super) struct TestArgs {
    /// The test-case file (TOML: [defaults], then [[case]] tables).
    cases: PathBuf,
    /// The solution to test.
    #[arg(long, value_name = "FILE")]
    code: PathBuf,
    /// Runtime id [default: from the solution's extension].
    #[arg(long, value_name = "ID")]
    runtime: Option<String>,
    /// Cases run at once [default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=256))]
    parallel: Option<u64>,
    /// Python packages for the solution (repeatable, PEP 508).
    #[arg(long = "with", value_name = "SPEC")]
    with: Vec<String>,
    /// Limits of each case (the case file's own timeout and memory win), and --profile.
    #[command(flatten)]
    limits: LimitArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

pub(super) fn test(args: TestArgs, config: Config) -> ExitCode {
    let json = args.json;
    let result = (|| -> Result<crate::validate::CasesReport, Error> {
        let file = crate::validate::CaseFile::read(&args.cases)?;
        let source = crate::job::read_script(&args.code)?;
        let name = args
            .code
            .file_name()
            .map_or_else(|| "main.py".into(), |n| n.to_string_lossy().into_owned());
        let profile = args.limits.profile(&config)?;
        let by_extension = Catalog::embedded()
            .for_file(Path::new(&name))
            .map(|spec| spec.id.clone());
        let runtime_id =
            match chosen_runtime(args.runtime, profile.as_ref(), by_extension.as_deref().ok()) {
                Some(id) => id,
                None => by_extension?,
            };
        let dvm = Dvm::new(config)?;
        let runtime = dvm.runtime_with_progress(&runtime_id, &progress_display(json))?;
        let mut base = RunInput {
            limits: args.limits.limits(profile.as_ref())?,
            ..RunInput::default()
        };
        let requirements: Vec<String> = profile
            .map(|p| p.packages)
            .unwrap_or_default()
            .into_iter()
            .chain(args.with)
            .collect();
        if !requirements.is_empty() {
            base.packages = Some(runtime.install_packages(&crate::PackageRequest {
                requirements,
                ..crate::PackageRequest::default()
            })?);
        }
        let parallel = args.parallel.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            |n| n as usize,
        );
        crate::validate::run_cases(&runtime, &name, &source, &file, &base, parallel)
    })();
    match result {
        Ok(report) => {
            if json {
                print_json(&report);
            } else {
                let _ = write!(std::io::stdout().lock(), "{}", report.render());
            }
            if report.all_accepted() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => render_error(&error, json),
    }
}
