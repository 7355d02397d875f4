//! Flags and helpers several commands share: the limit flags and `--profile`, the runtime a
//! run uses, `--file HOST[:GUEST]`, and the async runtime and shutdown signal of the
//! long-running commands.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::profile::{parse_duration, parse_overflow, parse_size as parse_bytes};
use crate::{Catalog, Error, Limits, OutputOverflow};

/// The limit flags shared by `run`, `test`, `agent` and `review`, and `--profile`. A flag
/// given overrides the profile, which overrides dvm's defaults.
#[derive(Debug, Clone, Default, clap::Args)]
pub(super) struct LimitArgs {
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
    pub(super) fn profile(&self, config: &crate::Config) -> Result<Option<crate::Profile>, Error> {
        let config_file = config.config_file_path();
        self.profile
            .as_deref()
            .map(|name| crate::Profile::find_in(name, &config.home, &config_file))
            .transpose()
    }

    /// dvm's defaults, then the profile's limits, then the flags given.
    pub(super) fn limits(&self, profile: Option<&crate::Profile>) -> Result<Limits, Error> {
        self.limits_over(Limits::default(), profile)
    }

    /// `base`, then the profile's limits, then the flags given.
    pub(super) fn limits_over(
        &self,
        base: Limits,
        profile: Option<&crate::Profile>,
    ) -> Result<Limits, Error> {
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
pub(super) fn chosen_runtime(
    flag: Option<String>,
    profile: Option<&crate::Profile>,
    default: Option<&str>,
) -> Option<String> {
    if flag.is_some() {
        return flag;
    }
    let catalog = Catalog::embedded();
    let language = |id: &str| catalog.get(id).map(|spec| spec.language);
    match (profile.and_then(|p| p.runtime.as_deref()), default) {
        (Some(wanted), Some(default)) if language(wanted) == language(default) => {
            Some(wanted.to_string())
        }
        (Some(wanted), None) => Some(wanted.to_string()),
        (_, default) => default.map(str::to_string),
    }
}

/// `HOST[:GUEST]` of `--file`: the host path, and where it goes in the workspace.
pub(super) fn upload_spec(text: &str) -> Result<(PathBuf, String), Error> {
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

pub(super) fn async_runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| {
            crate::error::HostError::Io {
                action: "start the async runtime".into(),
                source,
            }
            .into()
        })
}

/// Resolves on Ctrl-C or SIGTERM.
pub(super) async fn shutdown_signal() {
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
