//! `dvm serve`: the HTTP API (native, Judge0, MCP, metrics), optionally handing one-shot
//! runs to NATS workers.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use super::common::{async_runtime, shutdown_signal};
use super::nats::{NatsArgs, nats_dvm};
use super::output::{progress_display, render_error};
use super::run::parse_allowed_host;
use crate::profile::{parse_duration, parse_size as parse_bytes};
use crate::{Config, Dvm, Error};

#[derive(Debug, clap::Args)]
pub(super) struct ServeArgs {
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
    /// A host executions may let their guests reach over HTTP (repeatable): `HOST`,
    /// `HOST:PORT`, `*.example.com` or an address. Each request names the hosts it needs
    /// (`allow_net`), within these; none by default.
    #[arg(long = "allow-net", value_name = "HOST[:PORT]", value_parser = parse_allowed_host)]
    allow_net: Vec<crate::AllowedHost>,
    /// An MCP server whose tools guest code may call (repeatable; "code mode"):
    /// `NAME=COMMAND ARGS…` (started by dvm, spoken to over stdio; no shell) or
    /// `NAME=https://…/mcp` (streamable HTTP). Its tools are `dvm_tools.NAME.TOOL` in the
    /// guest, and MCP's run_code lists them. Also `[mcp_upstream]` in the config file.
    #[arg(long = "mcp-upstream", value_name = "NAME=COMMAND|URL", value_parser = parse_upstream)]
    mcp_upstream: Vec<crate::server::upstream::UpstreamSpec>,
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
    /// Serve `dvm run` on this machine instead of HTTP: listen on a socket in the home
    /// (`$DVM_HOME/run/local.sock`, this user only) that `dvm run` hands its runs to while
    /// the server is up, skipping its own start-up (`dvm run --in-process` opts out).
    /// --workers, --no-warm, --prestart and --shutdown-grace apply; stops on Ctrl-C or
    /// SIGTERM.
    #[arg(long, conflicts_with = "nats")]
    local: bool,
    /// Hand one-shot runs (without files or streamed output) to N sandbox worker processes,
    /// one address space each, so runs on different cores do not slow each other down;
    /// sessions and sandboxes stay in this process [default: 1, every run here].
    #[arg(long, value_name = "N", conflicts_with = "nats", value_parser = clap::value_parser!(u64).range(1..=256))]
    processes: Option<u64>,
    /// A sandbox worker process of `--processes`: serve runs on this socket, and end with
    /// the process that started it.
    #[arg(long, value_name = "PATH", hide = true)]
    local_socket: Option<std::path::PathBuf>,
}

pub(super) fn serve(args: ServeArgs, dvm_config: Config) -> ExitCode {
    #[cfg(unix)]
    if args.local || args.local_socket.is_some() {
        return match serve_local(&args, dvm_config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => render_error(&error, false),
        };
    }
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
            allow_net: args.allow_net,
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
            ..dvm_config
        };
        let runtime = async_runtime()?;
        let (dvm, queue) = match &args.nats {
            Some(url) => {
                let nats = args.nats_queue.config(url, &dvm_config)?;
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
        warm(&dvm, args.no_warm, args.prestart)?;
        #[cfg(unix)]
        let pool = match args.processes {
            Some(processes) if processes > 1 => {
                let exe =
                    std::env::current_exe().map_err(|source| crate::error::HostError::Io {
                        action: "find the dvm executable".into(),
                        source,
                    })?;
                let pool = crate::local::WorkerPool::start(
                    &exe,
                    &dvm.config().home,
                    processes as usize,
                    workers.div_ceil(processes as usize),
                    (!args.no_warm, args.prestart as usize),
                )?;
                note!(
                    "dvm: one-shot runs go to {} sandbox worker processes",
                    pool.processes()
                );
                Some(pool)
            }
            _ => None,
        };
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(config.addr)
                .await
                .map_err(|e| {
                    Error::InvalidInput(format!("cannot listen on {}: {e}", config.addr))
                })?;
            let bound = listener
                .local_addr()
                .map_err(|source| crate::error::HostError::Io {
                    action: "read the listener's local address".into(),
                    source,
                })?;
            note!(
                "dvm: listening on http://{bound} ({} workers{})",
                config.workers,
                if config.token.is_some() {
                    ", bearer token required"
                } else {
                    ""
                }
            );
            let upstreams = upstream_specs(&args.mcp_upstream, dvm.config())?;
            let state = crate::server::AppState::new(config, dvm);
            connect_upstreams(&state, &upstreams).await?;
            if let Some(queue) = queue {
                state.set_queue(queue);
            }
            #[cfg(unix)]
            if let Some(pool) = pool {
                state.set_queue(pool);
            }
            crate::server::serve(state, listener, shutdown_signal()).await
        })
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => render_error(&error, false),
    }
}

/// `dvm serve --local`: one process with the engine and warm runtimes answering `dvm run`
/// through the home's socket until Ctrl-C or SIGTERM.
#[cfg(unix)]
fn serve_local(args: &ServeArgs, dvm_config: Config) -> Result<(), Error> {
    let workers = args
        .workers
        .map_or(crate::server::ServerConfig::default().workers, |n| {
            n as usize
        });
    let home = dvm_config.home.clone();
    if args.local_socket.is_some() {
        // A worker of `--processes` ends with the server that started it: once it has
        // another parent, its own has gone. (Not PR_SET_PDEATHSIG, which fires when the
        // *thread* that started it ends.)
        let parent = rustix::process::getppid();
        std::thread::Builder::new()
            .name("dvm-worker-parent".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(250));
                    if rustix::process::getppid() != parent {
                        std::process::exit(0);
                    }
                }
            })
            .map_err(|source| crate::error::HostError::Io {
                action: "start the parent watch".into(),
                source,
            })?;
    }
    let dvm = Dvm::new(dvm_config)?;
    warm(&dvm, args.no_warm, args.prestart)?;
    // Listening once warm: until then `dvm run` runs in its own process rather than wait.
    let server = match &args.local_socket {
        Some(path) => crate::local::LocalServer::bind_at(path, workers)?,
        None => crate::local::LocalServer::bind(&home, workers)?,
    };
    // A signal removes the socket first, so the next `dvm run` runs in its own process, then
    // gives the runs going on --shutdown-grace to finish; any still going end with the
    // process and their clients say so.
    let socket = server.path().to_path_buf();
    let idle = server.idle_waiter();
    let grace = args.shutdown_grace;
    std::thread::Builder::new()
        .name("dvm-local-signals".into())
        .spawn(move || {
            if let Ok(runtime) = async_runtime() {
                runtime.block_on(shutdown_signal());
            }
            let _ = std::fs::remove_file(&socket);
            idle.wait(grace);
            std::process::exit(0);
        })
        .map_err(|source| crate::error::HostError::Io {
            action: "start the signal thread".into(),
            source,
        })?;
    if args.local_socket.is_none() {
        note!(
            "dvm: serving `dvm run` on {} ({workers} at a time)",
            server.path().display()
        );
    }
    server.serve(&dvm)
}

/// Unless `--no-warm`: installs and loads the python and javascript runtimes, and keeps
/// `--prestart` python-lite sandboxes started.
fn warm(dvm: &Dvm, no_warm: bool, prestart: u64) -> Result<(), Error> {
    if no_warm {
        return Ok(());
    }
    for id in ["python", "javascript"] {
        dvm.runtime_with_progress(id, &progress_display(false))?;
    }
    if prestart > 0 {
        dvm.runtime_with_progress("python-lite", &progress_display(false))?
            .prestart(prestart as usize)?;
    }
    Ok(())
}

pub(super) fn parse_upstream(text: &str) -> Result<crate::server::upstream::UpstreamSpec, String> {
    text.parse().map_err(|e: Error| e.to_string())
}

/// The upstreams of `--mcp-upstream` and of the configuration file's `[mcp_upstream]`.
pub(super) fn upstream_specs(
    flags: &[crate::server::upstream::UpstreamSpec],
    config: &Config,
) -> Result<Vec<crate::server::upstream::UpstreamSpec>, Error> {
    let file = crate::ConfigFile::load_from(&config.config_file_path())?;
    let mut specs = Vec::new();
    for (name, target) in &file.mcp_upstream {
        specs.push(
            crate::server::upstream::UpstreamSpec::new(name, target).map_err(|e| {
                Error::InvalidInput(format!("{}, [mcp_upstream]: {e}", file.source))
            })?,
        );
    }
    specs.extend(flags.iter().cloned());
    Ok(specs)
}

/// Connects to the upstreams and gives their tools to `state`'s runs.
pub(super) async fn connect_upstreams(
    state: &crate::server::AppState,
    specs: &[crate::server::upstream::UpstreamSpec],
) -> Result<(), Error> {
    if specs.is_empty() {
        return Ok(());
    }
    let upstreams = crate::server::upstream::Upstreams::connect(specs).await?;
    note!(
        "dvm: code mode: tools of {} MCP upstream(s) for guest code",
        specs.len()
    );
    state.set_upstreams(upstreams);
    Ok(())
}
