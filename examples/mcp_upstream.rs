//! A small MCP server over stdio, an issue tracker in memory: the upstream that code-mode
//! tests (and anyone trying `dvm serve --mcp-upstream`) connect to.
//!
//! ```text
//! cargo build --example mcp_upstream
//! dvm mcp --mcp-upstream tracker=target/debug/examples/mcp_upstream
//! ```
//!
//! Tools: `search_issues(query, limit?)`, `get-issue(number)` (a name with a dash, as many
//! servers have) and `close_issue(number)`, which always fails.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, ServiceExt as _, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;

const ISSUES: &[(u32, &str, &[&str])] = &[
    (1, "Crash when the input is empty", &["bug"]),
    (2, "Add a dark theme", &["feature"]),
    (3, "Crash on very long lines", &["bug", "parser"]),
    (4, "Document the config file", &["docs"]),
    (5, "Crash after an upgrade", &["bug"]),
];

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct SearchArgs {
    /// Text the title must contain (case-insensitive).
    query: String,
    /// At most this many results (default 10).
    limit: Option<usize>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct NumberArgs {
    /// The issue's number.
    number: u32,
}

#[derive(Clone)]
struct Tracker {
    tool_router: ToolRouter<Tracker>,
}

fn issue(number: u32, title: &str, labels: &[&str]) -> serde_json::Value {
    serde_json::json!({"number": number, "title": title, "labels": labels})
}

#[tool_router]
impl Tracker {
    #[tool(description = "Issues whose title contains the query.")]
    async fn search_issues(&self, Parameters(args): Parameters<SearchArgs>) -> CallToolResult {
        let query = args.query.to_lowercase();
        let found: Vec<serde_json::Value> = ISSUES
            .iter()
            .filter(|(_, title, _)| title.to_lowercase().contains(&query))
            .take(args.limit.unwrap_or(10))
            .map(|(number, title, labels)| issue(*number, title, labels))
            .collect();
        CallToolResult::success(vec![ContentBlock::text(
            serde_json::Value::from(found).to_string(),
        )])
    }

    #[tool(name = "get-issue", description = "One issue by number.")]
    async fn get_issue(&self, Parameters(args): Parameters<NumberArgs>) -> CallToolResult {
        match ISSUES.iter().find(|(number, _, _)| *number == args.number) {
            Some((number, title, labels)) => CallToolResult::success(vec![ContentBlock::text(
                issue(*number, title, labels).to_string(),
            )]),
            None => CallToolResult::error(vec![ContentBlock::text(format!(
                "there is no issue {}",
                args.number
            ))]),
        }
    }

    #[tool(description = "Close an issue (this tracker is read-only: it always fails).")]
    async fn close_issue(&self, Parameters(args): Parameters<NumberArgs>) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text(format!(
            "issue {} cannot be closed: the tracker is read-only",
            args.number
        ))])
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tracker {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let tracker = Tracker {
            tool_router: Tracker::tool_router(),
        };
        let running = tracker.serve(rmcp::transport::stdio()).await?;
        running.waiting().await?;
        Ok(())
    })
}
