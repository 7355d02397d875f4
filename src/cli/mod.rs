//! The `dvm` command line, in layers: parse arguments → validate into a run configuration →
//! run → render. `main` returns the exit code; data goes to stdout, diagnostics to stderr.
//!
//! This file holds the top-level parser, the command enum and the dispatch; each command (or
//! group of subcommands) lives in its own file, `output.rs` holds what they print with, and
//! `common.rs` the flags and helpers several commands share.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::Config;

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

mod agent;
mod artifact;
mod bench;
mod cache;
mod common;
mod deps;
mod mcp;
mod nats;
mod output;
mod review;
mod run;
mod runtimes;
mod serve;
mod snapshots;
mod test;
mod worker;

pub use output::exit_code;

use agent::AgentArgs;
use artifact::ArtifactCommand;
use bench::BenchArgs;
use cache::CacheCommand;
use deps::DepsCommand;
use mcp::McpArgs;
use review::ReviewArgs;
use run::RunArgs;
use runtimes::RuntimesCommand;
use serve::ServeArgs;
use snapshots::SnapshotsCommand;
use test::TestArgs;
use worker::WorkerArgs;

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
    /// Run a script (.py, .js, .mjs…) or a WASI command module (.wasm, .wat) in a fresh
    /// sandbox.
    Run(Box<RunArgs>),
    /// List, install, import and verify language runtimes.
    #[command(subcommand)]
    Runtimes(RuntimesCommand),
    /// Install, list, lock and clean Python and JavaScript packages for sandboxes.
    #[command(subcommand)]
    Deps(DepsCommand),
    /// The coding-agent pipeline: code for a request (from --code or a --replay file), run
    /// in a sandbox with your files and its detected packages, validated, and on failure
    /// sent back for another attempt. Exits 0 when an attempt passes, 1 otherwise.
    Agent(AgentArgs),
    /// Run a test-case file against a solution: each case in its own sandbox, in parallel,
    /// with a Judge0-style verdict. Exits 0 when every case is accepted, 1 otherwise.
    Test(TestArgs),
    /// Run a Python project's own test suite (pytest) in a sandbox: the project uploaded,
    /// its requirements and pytest installed, per-test results as JSON and JUnit XML, and
    /// the failures with their tracebacks. Exits 0 when every test passes, 1 otherwise
    /// (124/125/126 when a limit or a crash ended the suite).
    Review(ReviewArgs),
    /// Serve the HTTP API: native JSON (sandboxes, sessions, files, packages, execution with
    /// Server-Sent Events), Judge0-compatible endpoints, MCP at /mcp, /metrics and
    /// /openapi.json. Stops gracefully on Ctrl-C or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Serve MCP over stdin/stdout (for agents that start dvm as a tool server).
    Mcp(McpArgs),
    /// Pull run requests from NATS JetStream, run them in local sandboxes and store their
    /// outcomes; many workers on many machines share one queue and one result cache.
    Worker(Box<WorkerArgs>),
    /// Inspect and manage the execution result cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Show, remove and garbage-collect session snapshots (and the blobs nothing names).
    #[command(subcommand)]
    Snapshots(SnapshotsCommand),
    /// Store, version and fetch code artifacts (file trees) under $DVM_HOME.
    #[command(subcommand)]
    Artifact(ArtifactCommand),
    /// Measure fresh-sandbox latency and throughput per runtime, whole-process runs beside
    /// native interpreters, module load and compile times, and memory per sandbox.
    Bench(BenchArgs),
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
    // The environment is read once, here; every command takes its settings from `config`.
    let config = Config::from_env();
    // Workspaces made before the first `Dvm` (uploads, `--files`) use the same scratch base.
    crate::fs::set_scratch_base(config.scratch.as_deref());
    let code = match cli.command {
        Command::Run(args) => run::run(*args, config),
        Command::Artifact(command) => artifact::artifact(command, config),
        Command::Deps(command) => deps::deps(command, config),
        Command::Cache(command) => cache::cache(command, config),
        Command::Snapshots(command) => snapshots::snapshots(command, config),
        Command::Test(args) => test::test(args, config),
        Command::Agent(args) => agent::agent(args, config),
        Command::Review(args) => review::review(args, config),
        Command::Serve(args) => serve::serve(*args, config),
        Command::Mcp(args) => mcp::mcp(args, config),
        Command::Worker(args) => worker::worker(*args, config),
        Command::Runtimes(command) => runtimes::runtimes(command, config),
        Command::Bench(args) => bench::bench(args, config),
    };
    // Emptied run directories kept for reuse would outlive the process otherwise.
    crate::fs::remove_idle_scratch();
    code
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
