//! `dvm agent`: the coding-agent pipeline from the command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::common::{LimitArgs, chosen_runtime, upload_spec};
use super::output::{print_json, progress_display, render_error};
use crate::profile::parse_duration;
use crate::{Config, Dvm, Error, RunInput};

#[derive(Debug, clap::Args)]
pub(super) struct AgentArgs {
    /// What the program should do.
    request: String,
    /// Use this file's code as the generated code (every attempt).
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    code: Option<PathBuf>,
    /// Play recorded replies from a JSON file (an array of reply texts), one per attempt.
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// The model to ask (an OpenAI-compatible chat-completions endpoint: OPENAI_BASE_URL
    /// and OPENAI_API_KEY from the environment, the config file's [model], or --base-url)
    /// [default: the config file's [model] name].
    #[arg(long, value_name = "NAME", conflicts_with_all = ["code", "replay"])]
    model: Option<String>,
    /// The endpoint, e.g. http://127.0.0.1:11434/v1 [default: the config file's [model]
    /// base_url, else $OPENAI_BASE_URL, else OpenAI].
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// Seconds to wait for each model answer [default: the config file's, else 120].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    model_timeout: Option<u64>,
    /// Upload a host file or directory into the workspace (repeatable): HOST[:GUEST].
    #[arg(long = "file", value_name = "HOST[:GUEST]")]
    files_in: Vec<String>,
    /// The program must print this file's contents.
    #[arg(long, value_name = "FILE", conflicts_with = "tests")]
    expect_stdout: Option<PathBuf>,
    /// How --expect-stdout compares: exact, normalized, regex, json.
    #[arg(long = "match", value_name = "MODE", default_value = "normalized", value_parser = parse_match)]
    match_mode: crate::validate::MatchMode,
    /// Every case of this test-case file must be accepted.
    #[arg(long, value_name = "FILE")]
    tests: Option<PathBuf>,
    /// Attempts before giving up.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    attempts: u64,
    /// Also ask for unit tests (pytest style, in test_main.py) and run them in a separate
    /// sandbox against the code; an attempt passes only when they pass too.
    #[arg(long)]
    unit_tests: bool,
    /// Runtime id [default: the profile's, else python].
    #[arg(long, value_name = "ID")]
    runtime: Option<String>,
    /// Limits of each run, and --profile.
    #[command(flatten)]
    limits: LimitArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

pub(super) fn agent(args: AgentArgs, config: Config) -> ExitCode {
    use crate::agent::{AgentRequest, CodeProvider, Expectation, Provider, ReplayProvider};
    let json = args.json;
    let result = (|| -> Result<crate::agent::AgentReport, Error> {
        let settings = crate::ConfigFile::load_from(&config.config_file_path())?;
        let model = args.model.clone().or_else(|| {
            (args.code.is_none() && args.replay.is_none())
                .then(|| settings.model.name.clone())
                .flatten()
        });
        let mut provider: Box<dyn Provider> = match (&args.code, &args.replay, model) {
            (None, None, Some(model)) => Box::new(crate::llm::ChatProvider::new(model_config(
                &model, &args, &settings,
            )?)?),
            (Some(path), _, _) => Box::new(CodeProvider {
                name: path
                    .file_name()
                    .map_or_else(|| "main.py".into(), |n| n.to_string_lossy().into_owned()),
                code: String::from_utf8_lossy(&crate::job::read_script(path)?).into_owned(),
            }),
            (None, Some(path), _) => Box::new(ReplayProvider::read(path)?),
            (None, None, None) => {
                return Err(Error::InvalidInput(format!(
                    "say where the code comes from: --model NAME (an OpenAI-compatible \
                     endpoint, or a [model] name in {}), --code FILE, or recorded replies \
                     with --replay FILE",
                    config.config_file_path().display()
                )));
            }
        };
        let expect = match (&args.expect_stdout, &args.tests) {
            (Some(path), _) => Expectation::Stdout {
                expected: std::fs::read_to_string(path).map_err(|source| Error::ReadInput {
                    path: path.clone(),
                    source,
                })?,
                mode: args.match_mode,
            },
            (None, Some(path)) => Expectation::Cases(crate::validate::CaseFile::read(path)?),
            (None, None) => Expectation::ExitZero,
        };
        let files = args
            .files_in
            .iter()
            .map(|spec| upload_spec(spec))
            .collect::<Result<Vec<_>, _>>()?;
        let profile = args.limits.profile(&config)?;
        let request = AgentRequest {
            request: args.request.clone(),
            files,
            expect,
            attempts: args.attempts as usize,
            runtime: chosen_runtime(args.runtime.clone(), profile.as_ref(), Some("python")),
            packages: profile
                .as_ref()
                .map(|p| p.packages.clone())
                .unwrap_or_default(),
            unit_tests: args.unit_tests,
            input: RunInput {
                limits: args.limits.limits(profile.as_ref())?,
                ..RunInput::default()
            },
        };
        let dvm = Dvm::new(config)?;
        if let Some(id) = &request.runtime {
            dvm.runtime_with_progress(id, &progress_display(json))?;
        }
        crate::agent::run(&dvm, provider.as_mut(), &request)
    })();
    match result {
        Ok(report) => {
            if json {
                print_json(&report);
            } else {
                let _ = write!(std::io::stdout().lock(), "{}", report.render());
            }
            if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => render_error(&error, json),
    }
}

fn parse_match(text: &str) -> Result<crate::validate::MatchMode, String> {
    text.parse()
}

/// The chat endpoint: flags, then the config file's `[model]`, then the environment.
fn model_config(
    model: &str,
    args: &AgentArgs,
    settings: &crate::ConfigFile,
) -> Result<crate::llm::LlmConfig, Error> {
    let base_url = args
        .base_url
        .clone()
        .or_else(|| settings.model.base_url.clone());
    let api_key = settings.api_key();
    let mut config =
        crate::llm::LlmConfig::from_env(model, base_url.as_deref(), api_key.as_deref());
    config.timeout = match (args.model_timeout, &settings.model.timeout) {
        (Some(seconds), _) => Duration::from_secs(seconds),
        (None, Some(text)) => parse_duration(text).map_err(|e| {
            Error::InvalidInput(format!("[model] timeout in {}: {e}", settings.source))
        })?,
        (None, None) => config.timeout,
    };
    Ok(config)
}
