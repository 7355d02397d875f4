//! The `dvm` command line, in layers: parse arguments → validate into a run configuration →
//! run → render. `main` returns the exit code; data goes to stdout, diagnostics to stderr.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::{
    Config, Dvm, Error, LimitKind, Limits, Outcome, OutputOverflow, RunInput, Status, Stream,
};

/// Exit code when a deadline stopped the guest.
pub const EXIT_DEADLINE: u8 = 124;
/// Exit code when any other limit stopped the guest.
pub const EXIT_LIMIT: u8 = 125;
/// Exit code when the guest crashed (trapped).
pub const EXIT_CRASH: u8 = 126;
/// Exit code for a usage or input error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when dvm itself failed (I/O on its home, pool exhausted, internal error).
pub const EXIT_HOST: u8 = 3;

/// Writes one diagnostic line on stderr; a closed stderr is not worth a panic.
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// Largest stdin dvm will read for a guest.
const MAX_STDIN_BYTES: u64 = 1 << 30;

#[derive(Debug, Parser)]
#[command(
    name = "dvm",
    version,
    about = "Run untrusted code in WebAssembly sandboxes with hard limits"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a WASI command module (.wasm or .wat) in a fresh sandbox.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The module to run (.wasm binary or .wat text).
    file: PathBuf,

    /// Arguments passed to the guest after `--`.
    #[arg(last = true)]
    guest_args: Vec<OsString>,

    /// Guest stdin from a file, or `-` for dvm's own stdin [default: empty].
    #[arg(long, value_name = "PATH|-")]
    stdin: Option<PathBuf>,

    /// Guest environment variable (repeatable); the host environment is never inherited.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,

    /// Wall-clock deadline, e.g. 500ms, 10s, 2m.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,

    /// Fuel budget (about one unit per wasm instruction) [default: unlimited].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    fuel: Option<u64>,

    /// Memory cap, e.g. 64MiB, 1GiB (at most 4GiB).
    #[arg(long, value_name = "SIZE", default_value = "512MiB", value_parser = parse_bytes)]
    memory: u64,

    /// Cap on each of stdout and stderr, e.g. 64KiB.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_bytes)]
    max_output: u64,

    /// What a write past the output cap does: keep the first bytes and go on (`truncate`),
    /// or stop the guest (`stop`, limit `output`).
    #[arg(long, value_name = "MODE", default_value = "truncate", value_parser = parse_overflow)]
    output_overflow: OutputOverflow,

    /// Print exactly one JSON object describing the outcome on stdout.
    #[arg(long)]
    json: bool,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration such as 500ms or 10s ({e})"))?;
    if duration.is_zero() {
        return Err("the timeout must be greater than zero".into());
    }
    Ok(duration)
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(text)
        .map_err(|e| format!("`{text}` is not a size such as 64MiB or 1GiB ({e})"))
}

fn parse_overflow(text: &str) -> Result<OutputOverflow, String> {
    match text {
        "truncate" => Ok(OutputOverflow::Truncate),
        "stop" => Ok(OutputOverflow::Stop),
        _ => Err(format!("`{text}` is not `truncate` or `stop`")),
    }
}

/// Runs the CLI with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Run(args) => run(args),
    }
}

fn init_logging() {
    let level = std::env::var("DVM_LOG")
        .ok()
        .and_then(|level| level.parse().ok())
        .unwrap_or(tracing::Level::WARN);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
}

/// A validated `dvm run`.
struct RunConfig {
    file: PathBuf,
    input: RunInput,
    json: bool,
}

fn validate(args: RunArgs) -> Result<RunConfig, Error> {
    let stdin = match &args.stdin {
        None => Vec::new(),
        Some(path) if path.as_os_str() == "-" => read_limited(std::io::stdin().lock(), path)?,
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|source| Error::ReadInput {
                path: path.clone(),
                source,
            })?;
            read_limited(file, path)?
        }
    };
    let guest_args = args
        .guest_args
        .into_iter()
        .map(|arg| {
            arg.into_string().map_err(|arg| {
                Error::InvalidLimits(format!("guest argument {arg:?} is not valid UTF-8"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let limits = Limits {
        deadline: args.timeout,
        fuel: args.fuel,
        memory_bytes: args.memory,
        stdout_bytes: args.max_output,
        stderr_bytes: args.max_output,
        output_overflow: args.output_overflow,
        ..Limits::default()
    };
    limits.validate()?;
    Ok(RunConfig {
        file: args.file,
        input: RunInput {
            args: guest_args,
            env: args.env,
            stdin,
            limits,
            ..RunInput::default()
        },
        json: args.json,
    })
}

fn read_limited(reader: impl Read, path: &std::path::Path) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_STDIN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::ReadInput {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_STDIN_BYTES {
        return Err(Error::InvalidLimits(format!(
            "stdin is larger than the {MAX_STDIN_BYTES}-byte cap"
        )));
    }
    Ok(bytes)
}

fn run(args: RunArgs) -> ExitCode {
    let json = args.json;
    match validate(args).and_then(|mut config| {
        if !config.json {
            config.input.on_output = Some(Arc::new(pass_through));
        }
        let dvm = Dvm::new(Config::default())?;
        let program = dvm.load_file(&config.file)?;
        program.run(&config.input)
    }) {
        Ok(outcome) => render(&outcome, json),
        Err(error) => render_error(&error, json),
    }
}

/// Writes guest output through as it arrives. A closed pipe is not an error.
fn pass_through(stream: Stream, bytes: &[u8]) {
    let _ = match stream {
        Stream::Stdout => std::io::stdout().lock().write_all(bytes),
        Stream::Stderr => std::io::stderr().lock().write_all(bytes),
    };
}

fn render(outcome: &Outcome, json: bool) -> ExitCode {
    if json {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", outcome.to_json());
        let _ = stdout.flush();
    } else {
        let _ = std::io::stdout().flush();
        for (name, truncated, written, kept) in [
            (
                "stdout",
                outcome.truncated.stdout,
                outcome.stdout_bytes,
                outcome.stdout.len(),
            ),
            (
                "stderr",
                outcome.truncated.stderr,
                outcome.stderr_bytes,
                outcome.stderr.len(),
            ),
        ] {
            if truncated {
                note!("dvm: {name} truncated: kept {kept} of {written} bytes written");
            }
        }
        match outcome.status {
            Status::Limit => note!("dvm: {}", describe_limit(outcome)),
            Status::Crashed => note!(
                "dvm: the guest crashed: {}",
                outcome.trap.as_deref().unwrap_or("unknown trap")
            ),
            Status::Ok | Status::Error => {}
        }
    }
    exit_code(outcome)
}

fn describe_limit(outcome: &Outcome) -> String {
    match outcome.limit {
        Some(LimitKind::Deadline) => format!(
            "limit reached: deadline (stopped after {:.0?})",
            outcome.duration
        ),
        Some(LimitKind::Fuel) => format!(
            "limit reached: fuel (budget of {} units used up)",
            outcome.fuel_used
        ),
        Some(LimitKind::Memory) => format!(
            "limit reached: memory (the guest failed after being refused memory; peak {} bytes)",
            outcome.memory_peak_bytes
        ),
        Some(kind) => format!("limit reached: {kind}"),
        None => "limit reached".into(),
    }
}

/// The process exit code for an outcome: the guest's own for ok/error, 124 for a deadline,
/// 125 for another limit, 126 for a crash. Guest codes outside 0–255 become 1.
pub fn exit_code(outcome: &Outcome) -> ExitCode {
    ExitCode::from(match outcome.status {
        Status::Ok | Status::Error => match outcome.exit_code {
            Some(code) => u8::try_from(code).unwrap_or(1),
            None => 1,
        },
        Status::Limit if outcome.limit == Some(LimitKind::Deadline) => EXIT_DEADLINE,
        Status::Limit => EXIT_LIMIT,
        Status::Crashed => EXIT_CRASH,
    })
}

fn render_error(error: &Error, json: bool) -> ExitCode {
    note!("dvm: error: {error}");
    if json {
        let body = serde_json::json!({
            "error": { "kind": error.kind(), "message": error.to_string() }
        });
        let _ = writeln!(std::io::stdout().lock(), "{body}");
    }
    ExitCode::from(if error.is_user_error() {
        EXIT_USAGE
    } else {
        EXIT_HOST
    })
}
