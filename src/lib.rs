//! dvm runs untrusted and machine-generated code in WebAssembly sandboxes with hard limits.
//!
//! ```no_run
//! let dvm = dvm::Dvm::new(dvm::Config::default())?;
//! let program = dvm.load_file(std::path::Path::new("hello.wat"))?;
//! let outcome = program.run(&dvm::RunInput::default())?;
//! println!("{:?}: {}", outcome.status, String::from_utf8_lossy(&outcome.stdout));
//! # Ok::<(), dvm::Error>(())
//! ```
//!
//! The sandbox core is always built; each surface is a Cargo feature: `server` (the HTTP API,
//! Judge0 and MCP), `nats` (the JetStream queue and worker), `agent` (the coding agent and its
//! model clients) and `cli` (the `dvm` command; it turns on the other three and is the
//! default). An embedder that needs only sandboxes sets `default-features = false`.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "agent")]
#[cfg_attr(docsrs, doc(cfg(feature = "agent")))]
pub mod agent;
mod archive;
pub mod artifact;
#[doc(hidden)]
pub mod bench;
#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub mod cli;
pub mod deps;
mod dvm;
pub mod engine;
mod error;
pub(crate) mod fs;
mod guest;
pub mod home;
#[cfg(any(feature = "server", feature = "nats"))]
mod id;
mod job;
pub mod limits;
#[cfg(feature = "agent")]
#[cfg_attr(docsrs, doc(cfg(feature = "agent")))]
pub mod llm;
#[cfg(all(unix, feature = "cli"))]
#[cfg_attr(docsrs, doc(cfg(all(unix, feature = "cli"))))]
pub mod local;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod nats;
mod outcome;
pub mod profile;
#[cfg(feature = "server")]
mod remote;
pub mod results;
pub mod review;
mod sandbox;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
pub mod session;
mod store;
mod tool;
pub mod validate;
pub mod workspace;

pub use crate::artifact::{ArtifactLimits, ArtifactStore, ArtifactSummary};
pub use crate::deps::{PackageRequest, PackageSet};
pub use crate::dvm::{
    Dvm, Program, Runtime, RuntimeStatus, SessionSnapshotInfo, SnapshotGc, delete_session_snapshot,
    gc_session_snapshots, session_snapshot_info,
};
pub use crate::engine::cache::ModuleSource;
pub use crate::engine::{Config, PoolConfig, WarmBuilds};
pub use crate::error::{
    ArtifactError, CacheError, DepsError, Error, HostError, InstallError, NatsError, Result,
};
pub use crate::fs::remove_idle_scratch;
pub use crate::guest::Abi;
pub use crate::guest::catalog::{Capabilities, Catalog, Language, RuntimeSpec};
pub use crate::guest::install::{InstallStep, Progress};
pub use crate::job::{
    Discovery, Job, JobOutcome, JobSource, LockFile, MAX_SCRIPT_BYTES, read_script,
};
pub use crate::limits::{LimitKind, Limits, OutputOverflow};
pub use crate::outcome::{
    DISPLAY_TYPES, Display, NetRequest, Outcome, Status, ToolCall, Truncated,
};
pub use crate::profile::{ConfigFile, Profile};
pub use crate::sandbox::determinism::Determinism;
pub use crate::sandbox::{
    AllowedHost, CancelHandle, DEFAULT_NET_TIMEOUT, DEFAULT_TOOL_TIMEOUT, DisplayCallback,
    HostTool, HostTools, NetExchange, NetPolicy, NetRecorder, NetRecording, OutputCallback,
    Resolver, RunInput, Stream, ToolHandler,
};
pub use crate::session::{MAX_FORKS, Session, SessionOptions};
pub use crate::workspace::{CopyReport, Grant, OutputFile, Workspace, WorkspacePath};
