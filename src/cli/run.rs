//! `dvm run`: a script, a WASI command module or a stored artifact in a fresh sandbox, with
//! its files, grants, packages and limits.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::common::{LimitArgs, chosen_runtime, upload_spec};
use super::output::{Extra, pass_through, progress_display, render, render_error};
use crate::profile::parse_size as parse_bytes;
use crate::{Catalog, Config, Dvm, Error, Outcome, RunInput};

/// Sandbox slots of a `dvm run` process's instance pool.
const ONE_SHOT_POOL_SLOTS: u32 = 8;

/// Largest stdin dvm will read for a guest.
const MAX_STDIN_BYTES: u64 = 1 << 30;

#[derive(Debug, clap::Args)]
pub(super) struct RunArgs {
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

    /// Start from the runtime's own module, without any snapshot of dvm's (by default a
    /// `python` script starts from one with the standard library, and the data libraries it
    /// imports when such a snapshot exists, already imported).
    #[arg(long, conflicts_with = "preload")]
    no_preload: bool,

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

    /// Let the guest reach this host over HTTP, through dvm (repeatable): `HOST`, `HOST:PORT`,
    /// `*.example.com`, or an address (`127.0.0.1:8080`, `[::1]:8080`). Names resolving to
    /// private, loopback or link-local addresses are refused unless allowed by address.
    #[arg(long = "allow-net", value_name = "HOST[:PORT]", value_parser = parse_allowed_host)]
    allow_net: Vec<crate::AllowedHost>,

    /// Write every HTTP exchange of the run (requests and responses, bodies included) to
    /// FILE as JSON, for --net-replay.
    #[arg(
        long,
        value_name = "FILE",
        requires = "allow_net",
        conflicts_with = "net_replay"
    )]
    net_record: Option<PathBuf>,

    /// Answer the guest's HTTP requests from a recording (--net-record) instead of the
    /// network: the run repeats, so it may be deterministic and cached.
    #[arg(long, value_name = "FILE", requires = "allow_net")]
    net_replay: Option<PathBuf>,

    /// Copy the files the run created or changed in its workspace into DIR.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// Write what the run displayed (figures, rich values) into DIR: `display-N.EXT` for
    /// each form of item N (`.png`, `.html`, `.txt`, `.json`…).
    #[arg(long, value_name = "DIR")]
    display: Option<PathBuf>,

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

    /// Run in this process even when a local server (`dvm serve --local`) is listening.
    #[arg(long, conflicts_with = "local_socket")]
    in_process: bool,
    /// Hand the run to the local server listening on this socket rather than the home's
    /// (`dvm bench` times its own server this way, leaving the home's socket alone).
    #[arg(long, value_name = "PATH", hide = true)]
    local_socket: Option<std::path::PathBuf>,
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

pub(super) fn parse_allowed_host(text: &str) -> Result<crate::AllowedHost, String> {
    text.parse().map_err(|e: Error| e.to_string())
}

fn parse_grant(text: &str) -> Result<crate::Grant, String> {
    crate::Grant::parse(text).map_err(|e| e.to_string())
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
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
const MAX_SCRIPT_BYTES: u64 = crate::job::MAX_SCRIPT_BYTES;

/// A validated `dvm run`.
struct RunConfig {
    target: Target,
    preload: Vec<String>,
    no_preload: bool,
    input: RunInput,
    /// Where to copy the run's new and changed files.
    out: Option<PathBuf>,
    keep: bool,
    deps: DepsArgs,
    cache_size: Option<u64>,
    json: bool,
    in_process: bool,
    local_socket: Option<std::path::PathBuf>,
    /// Where the run's HTTP exchanges go (`--net-record`), and what records them.
    net_record: Option<(PathBuf, crate::NetRecorder)>,
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
        // `--code` JavaScript runs as a classic script (`main.js`), as it always has.
        let extension = match catalog.get(&runtime).map(|spec| spec.language) {
            Some(crate::Language::JavaScript) => "js",
            Some(language) => language.script_extension(),
            None => "py",
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
        None => catalog.for_file(&file)?.id.clone(),
    };
    let source = crate::job::read_script(&file)?;
    let name = file
        .file_name()
        .map_or_else(|| "main".into(), |n| n.to_string_lossy().into_owned());
    Ok(Target::Script {
        runtime,
        name,
        source,
    })
}

fn validate(args: RunArgs, dvm_config: &Config) -> Result<RunConfig, Error> {
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
    let profile = args.limits.profile(dvm_config)?;
    let limits = args.limits.limits(profile.as_ref())?;
    let by_extension = args
        .file
        .as_deref()
        .and_then(|file| Catalog::embedded().for_file(file).ok())
        .map(|spec| spec.id.clone());
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
    let mut allow_net = Vec::new();
    if let Some(profile) = &profile {
        for entry in &profile.allow_net {
            allow_net.push(entry.parse::<crate::AllowedHost>().map_err(|e| {
                Error::InvalidInput(format!("profile `{}`, allow_net: {e}", profile.source))
            })?);
        }
    }
    allow_net.extend(args.allow_net);
    let mut net_record = None;
    let net = match allow_net.is_empty() {
        true => None,
        false => {
            let mut policy = crate::NetPolicy::new(allow_net)?;
            if let Some(path) = &args.net_replay {
                policy = policy.replaying(crate::NetRecording::read(path)?);
            }
            if let Some(path) = args.net_record {
                let (recording, recorder) = policy.recording();
                policy = recording;
                net_record = Some((path, recorder));
            }
            Some(std::sync::Arc::new(policy))
        }
    };
    Ok(RunConfig {
        target,
        preload: args.preload,
        no_preload: args.no_preload,
        input: RunInput {
            args: guest_args,
            env: args.env,
            stdin,
            limits,
            workspace,
            grants: args.grants,
            net,
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
        in_process: args.in_process,
        local_socket: args.local_socket,
        net_record,
    })
}

fn read_limited(reader: impl Read, path: &Path) -> Result<Vec<u8>, Error> {
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

pub(super) fn run(args: RunArgs, dvm_config: Config) -> ExitCode {
    let json = args.json;
    let display_dir = args.display.clone();
    let mut writer = None;
    let result = validate(args, &dvm_config).and_then(|mut config| {
        if !config.json {
            let (callback, thread) = pass_through();
            config.input.on_output = Some(callback);
            writer = Some(thread);
        }
        #[cfg(unix)]
        if let Some(done) = on_local_server(&dvm_config, &config) {
            return done.map(|done| {
                let packages = done.packages;
                let extra = extra_of(&done.runtime, &done.version, packages);
                (done.outcome, extra)
            });
        }
        let mut dvm_config = dvm_config;
        // This process ends with the run: a warm snapshot worth building is built by a
        // process of its own.
        if dvm_config.warm_builds == crate::WarmBuilds::Thread {
            dvm_config.warm_builds = crate::WarmBuilds::Process;
        }
        if let Some(size) = config.cache_size {
            dvm_config.result_cache_bytes = size;
        }
        // One run needs a few sandbox slots (its own, a snapshot build, the guest's import
        // parser), not the thousand a server keeps: setting up each costs the process time.
        if let Some(pool) = &mut dvm_config.pool
            && pool.slots == crate::PoolConfig::default().slots
        {
            pool.slots = ONE_SHOT_POOL_SLOTS;
        }
        let dvm = Dvm::new(dvm_config)?;
        let ran = run_target(&dvm, &config);
        if let Some((path, recorder)) = &config.net_record {
            write_recording(path, &recorder.recording())?;
        }
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
    if let (Some(dir), Ok((outcome, _))) = (&display_dir, &result) {
        match write_display(&outcome.display, dir) {
            Ok(0) => {}
            Ok(written) => note!("dvm: --display: {written} files in {}", dir.display()),
            Err(why) => note!("dvm: --display: {why}"),
        }
    }
    match result {
        Ok((outcome, extra)) => render(&outcome, extra, json),
        Err(error) => render_error(&error, json),
    }
}

/// Writes `recording` to `path` (beside it first, then renamed over it).
fn write_recording(path: &Path, recording: &crate::NetRecording) -> Result<(), Error> {
    let failed = |e: &dyn std::fmt::Display| {
        Error::InvalidInput(format!(
            "--net-record: cannot write {}: {e}",
            path.display()
        ))
    };
    let json = serde_json::to_vec_pretty(recording).map_err(|e| failed(&e))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| failed(&e))?;
    file.write_all(&json).map_err(|e| failed(&e))?;
    file.persist(path).map_err(|e| failed(&e.error))?;
    Ok(())
}

/// Writes each form of each display item to `dir` as `display-N.EXT` (N from 1), and
/// returns how many files it wrote. The names are dvm's own; nothing in `dir` is followed
/// (each file is written beside its target and renamed over it).
fn write_display(items: &[crate::Display], dir: &Path) -> Result<usize, String> {
    use std::os::fd::AsFd;
    if items.is_empty() {
        return Ok(0);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let parent =
        crate::fs::open_dir(dir).map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
    let mut written = 0;
    for (n, item) in items.iter().enumerate() {
        for (mime, extension) in crate::DISPLAY_TYPES {
            let Some(bytes) = item.bytes(mime) else {
                continue;
            };
            let name = format!("display-{}.{extension}", n + 1);
            let temp = format!(".dvm-display-{:016x}", rand::random::<u64>());
            let put = crate::fs::create_file_at(parent.as_fd(), temp.as_ref(), true)
                .and_then(|mut file| file.write_all(&bytes))
                .and_then(|()| {
                    rustix::fs::renameat(
                        parent.as_fd(),
                        temp.as_str(),
                        parent.as_fd(),
                        name.as_str(),
                    )
                    .map_err(std::io::Error::from)
                });
            if let Err(error) = put {
                let _ = rustix::fs::unlinkat(
                    parent.as_fd(),
                    temp.as_str(),
                    rustix::fs::AtFlags::empty(),
                );
                return Err(format!("cannot write {name}: {error}"));
            }
            written += 1;
        }
    }
    Ok(written)
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
        } => run_job(
            dvm,
            config,
            runtime,
            crate::JobSource::Code {
                code: source.clone(),
                name: Some(name.clone()),
            },
        ),
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
            let artifacts = dvm.artifacts();
            let resolved =
                artifacts.get(spec, workspace.path(), crate::artifact::Overwrite::Refuse)?;
            // The job reads the entry; a missing one is named here with what the artifact holds.
            if let Err(error) = workspace.read(entry, MAX_SCRIPT_BYTES) {
                return Err(artifacts.missing_entry(&resolved, entry)?.unwrap_or(error));
            }
            let runtime = match runtime {
                Some(runtime) => runtime.clone(),
                None => Catalog::embedded().for_file(Path::new(entry))?.id.clone(),
            };
            run_job(
                dvm,
                config,
                &runtime,
                crate::JobSource::Entry(entry.clone()),
            )
        }
    }
}

/// Runs a script as a [`crate::Job`]: the packages `--with`, `--lock`/`--locked` and
/// `--auto-deps` ask for and those its files declare.
fn run_job(
    dvm: &Dvm,
    config: &RunConfig,
    runtime: &str,
    source: crate::JobSource,
) -> Result<(Outcome, Extra), Error> {
    let deps = &config.deps;
    let lock = match (&deps.lock, deps.locked) {
        (Some(path), true) => Some(crate::LockFile::Install(path.clone())),
        (Some(path), false) => Some(crate::LockFile::Write(path.clone())),
        (None, true) => {
            return Err(Error::InvalidInput(
                "--locked needs --lock FILE, the lock to install".into(),
            ));
        }
        (None, false) => None,
    };
    let job = crate::Job {
        runtime: runtime.to_string(),
        source,
        requirements: deps.with.clone(),
        discovery: crate::Discovery {
            auto_deps: deps.auto,
            ..crate::Discovery::default()
        },
        find_links: deps.find_links.clone(),
        lock,
        preload: config.preload.clone(),
        no_preload: config.no_preload,
        input: config.input.clone(),
    };
    let done = dvm.run(&job, &progress_display(config.json))?;
    let packages = done
        .packages
        .as_ref()
        .map(|packages| serde_json::to_value(packages).unwrap_or_default());
    let extra = extra_of(&done.runtime, &done.version, packages);
    Ok((done.outcome, extra))
}

/// What `--json` adds to a job's outcome: the runtime and the packages on its path.
fn extra_of(runtime: &str, version: &str, packages: Option<serde_json::Value>) -> Extra {
    let mut extra = Extra::new();
    extra.insert(
        "runtime".into(),
        serde_json::json!({ "id": runtime, "version": version }),
    );
    if let Some(packages) = packages {
        extra.insert("packages".into(), packages);
    }
    extra
}

/// Hands the run to the local server (`dvm serve --local`) when one is listening on this
/// home and the run needs nothing of this process's files: a script with its arguments,
/// environment, stdin, limits, determinism and cache policy. `None`: run it here.
#[cfg(unix)]
fn on_local_server(
    dvm_config: &Config,
    config: &RunConfig,
) -> Option<Result<crate::local::Served, Error>> {
    let Target::Script {
        runtime,
        name,
        source,
    } = &config.target
    else {
        return None;
    };
    let input = &config.input;
    let host_paths = input.workspace.is_some()
        || !input.grants.is_empty()
        || input.net.is_some()
        || config.out.is_some()
        || config.keep
        || !config.deps.is_empty()
        || config.deps.find_links.is_some()
        || config.deps.lock.is_some()
        || config.cache_size.is_some();
    if config.in_process || host_paths {
        return None;
    }
    let request = crate::local::LocalRequest {
        runtime: runtime.clone(),
        name: name.clone(),
        args: input.args.clone(),
        env: input.env.clone(),
        limits: input.limits.clone(),
        deterministic: input.deterministic,
        cache: input.cache,
        preload: config.preload.clone(),
        no_preload: config.no_preload,
        requirements: Vec::new(),
        auto_deps: false,
    };
    let socket = config
        .local_socket
        .clone()
        .unwrap_or_else(|| crate::home::local_socket(&dvm_config.home));
    crate::local::try_run(
        &socket,
        &request,
        source,
        &input.stdin,
        input.on_output.as_ref(),
        &progress_display(config.json),
    )
}
