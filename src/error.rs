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

    #[error("the worker could not run it: {0}")]
    Remote(String),

    #[error("internal error: {0}")]
    Internal(String),
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
            Error::Remote(_) => "remote",
            Error::Internal(_) => "internal",
        }
    }

    /// True when the problem is in what the user gave dvm (exit code 2 in the CLI), false
    /// when the host itself failed.
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            Error::Capacity(_)
                | Error::Nats(_)
                | Error::QueueFull(_)
                | Error::Remote(_)
                | Error::Home { .. }
                | Error::HomeNotPrivate { .. }
                | Error::Internal(_)
                | Error::Install { .. }
                | Error::Damaged { .. }
                | Error::ArtifactDamaged { .. }
                | Error::ArtifactStore { .. }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
