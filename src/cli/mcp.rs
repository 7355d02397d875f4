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
    /// An MCP server whose tools guest code may call (repeatable; "code mode"), as in
    /// `dvm serve --mcp-upstream`: `NAME=COMMAND ARGS…` or `NAME=https://…/mcp`.
    #[arg(long = "mcp-upstream", value_name = "NAME=COMMAND|URL", value_parser = super::serve::parse_upstream)]
    mcp_upstream: Vec<crate::server::upstream::UpstreamSpec>,
    /// A host run_code may let programs reach over HTTP (repeatable), as in `dvm serve
    /// --allow-net`: each call names the hosts it needs (`allow_net`), within these.
    #[arg(long = "allow-net", value_name = "HOST[:PORT]", value_parser = super::run::parse_allowed_host)]
    allow_net: Vec<crate::AllowedHost>,
}

pub(super) fn mcp(args: McpArgs, config: Config) -> ExitCode {
    let result = (|| -> Result<(), Error> {
        let dvm = Dvm::new(config)?;
        let upstreams = super::serve::upstream_specs(&args.mcp_upstream, dvm.config())?;
        let config = crate::server::ServerConfig {
            max_timeout: args.max_timeout,
            allow_net: args.allow_net,
            ..crate::server::ServerConfig::default()
        };
        let state = crate::server::AppState::new(config, dvm);
        async_runtime()?.block_on(async {
            super::serve::connect_upstreams(&state, &upstreams).await?;
            crate::server::mcp::serve_stdio(state).await
        })
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => render_error(&error, false),
    }
}
