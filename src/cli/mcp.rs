//! `dvm mcp`: MCP over stdin/stdout.

use std::process::ExitCode;
use std::time::Duration;

use super::common::async_runtime;
use super::output::render_error;
use crate::profile::parse_duration;
use crate::{Config, Dvm, Error};

#[derive(Debug, clap::Args)]
pub(super) struct McpArgs {
    /// Largest deadline a tool call may ask for.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    max_timeout: Duration,
}

pub(super) fn mcp(args: McpArgs, config: Config) -> ExitCode {
    let result = (|| -> Result<(), Error> {
        let dvm = Dvm::new(config)?;
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
