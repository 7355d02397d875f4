//! Runs handed to other machines. A surface that can send runs elsewhere (the server, given a
//! NATS queue) holds a [`RemoteRunner`], so it never names the surface that implements one.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::error::Error;
use crate::outcome::Outcome;
use crate::sandbox::RunInput;

/// One script to run elsewhere: what a local run of it would be given. The input's
/// workspace, grants and callbacks stay on this machine.
pub struct RemoteRun<'a> {
    pub runtime: &'a str,
    /// The script's file name.
    pub name: &'a str,
    pub code: &'a str,
    pub input: &'a RunInput,
    /// Packages to install before the run.
    pub requirements: &'a [String],
    /// Whether the worker also installs what the script imports.
    pub auto_deps: bool,
}

/// What [`RemoteRunner::run_remote`] returns: the run's outcome once it is back.
pub type RemoteOutcome<'a> = Pin<Box<dyn Future<Output = Result<Outcome, Error>> + Send + 'a>>;

/// Somewhere else to run scripts, e.g. [`crate::nats::Queue`].
pub trait RemoteRunner: Send + Sync + 'static {
    /// Sends `run` and waits up to `timeout` for its outcome.
    fn run_remote<'a>(&'a self, run: RemoteRun<'_>, timeout: Duration) -> RemoteOutcome<'a>;
}
