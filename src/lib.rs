//! dvm runs untrusted and machine-generated code in WebAssembly sandboxes with hard limits.
//!
//! ```no_run
//! let dvm = dvm::Dvm::new(dvm::Config::default())?;
//! let program = dvm.load_file(std::path::Path::new("hello.wat"))?;
//! let outcome = program.run(&dvm::RunInput::default())?;
//! println!("{:?}: {}", outcome.status, String::from_utf8_lossy(&outcome.stdout));
//! # Ok::<(), dvm::Error>(())
//! ```

pub mod agent;
pub mod artifact;
#[doc(hidden)]
pub mod bench;
pub mod cli;
pub mod deps;
mod dvm;
pub mod engine;
mod error;
pub(crate) mod fs;
mod guest;
pub mod home;
pub mod limits;
pub mod llm;
pub mod nats;
mod outcome;
pub mod profile;
pub mod results;
pub mod review;
mod sandbox;
pub mod server;
pub mod session;
mod store;
pub mod validate;
pub mod workspace;

pub use crate::artifact::{ArtifactLimits, ArtifactStore, ArtifactSummary};
pub use crate::deps::{PackageRequest, PackageSet};
pub use crate::dvm::{Dvm, Program, Runtime, RuntimeStatus};
pub use crate::engine::cache::ModuleSource;
pub use crate::engine::{Config, PoolConfig};
pub use crate::error::{Error, Result};
pub use crate::fs::remove_idle_scratch;
pub use crate::guest::Abi;
pub use crate::guest::catalog::{Catalog, RuntimeSpec};
pub use crate::guest::install::{InstallStep, Progress};
pub use crate::limits::{LimitKind, Limits, OutputOverflow};
pub use crate::outcome::{Outcome, Status, Truncated};
pub use crate::profile::{ConfigFile, Profile};
pub use crate::sandbox::determinism::Determinism;
pub use crate::sandbox::{CancelHandle, OutputCallback, RunInput, Stream};
pub use crate::session::{Session, SessionOptions};
pub use crate::workspace::{CopyReport, Grant, OutputFile, Workspace, WorkspacePath};
