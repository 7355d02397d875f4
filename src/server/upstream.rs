//! MCP tools inside the sandbox ("code mode"): dvm connects as an MCP client (rmcp) to the
//! upstream servers its operator names and hands their tools to guest code as host tools,
//! one group per server (`from dvm_tools.github import search_issues` in Python,
//! `import { github } from 'dvm:tools'` in JavaScript). A model then writes one program
//! that calls many tools and returns only what matters; each call is still bounded and
//! recorded as any host tool's is.
//!
//! Upstreams are the operator's choice (command lines or URLs given to `dvm serve` or
//! `dvm mcp`), never a client's: a request cannot start a process or name a server.

use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt as _;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{Peer, RoleClient, RunningService};
use serde_json::Value;

use crate::error::Error;
use crate::{HostTool, HostTools};

/// How long connecting to an upstream and listing its tools may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// The most tools dvm takes from one upstream; one that lists more is refused.
const MAX_UPSTREAM_TOOLS: usize = 1000;
/// Where a tool's description is cut (it becomes a docstring and a line of `run_code`'s
/// description).
const MAX_DESCRIPTION_CHARS: usize = 4096;

/// Where an upstream MCP server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// A program dvm starts and speaks to over its stdin and stdout: the program and its
    /// arguments (split at whitespace; no shell).
    Command(Vec<String>),
    /// A streamable-HTTP MCP endpoint.
    Url(String),
}

/// One `NAME=COMMAND…` or `NAME=URL` of `--mcp-upstream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// The group its tools are in (`dvm_tools.NAME`).
    pub name: String,
    pub target: UpstreamTarget,
}

impl std::str::FromStr for UpstreamSpec {
    type Err = Error;

    fn from_str(text: &str) -> Result<UpstreamSpec, Error> {
        let Some((name, target)) = text.split_once('=') else {
            return Err(Error::InvalidInput(format!(
                "`{text}` is not NAME=COMMAND or NAME=URL"
            )));
        };
        UpstreamSpec::new(name.trim(), target.trim())
    }
}

impl UpstreamSpec {
    /// An upstream named `name` (a Python identifier: it becomes `dvm_tools.NAME`) at
    /// `target`: an `http://` or `https://` URL, or a command line.
    pub fn new(name: &str, target: &str) -> Result<UpstreamSpec, Error> {
        // The group's name rules are the host tools' own.
        HostTool::new("probe", "", Value::Null, |_| Ok(Value::Null))?.in_group(name)?;
        let target = if target.starts_with("http://") || target.starts_with("https://") {
            UpstreamTarget::Url(target.to_string())
        } else {
            let words: Vec<String> = target.split_whitespace().map(str::to_string).collect();
            if words.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "the MCP upstream `{name}` has no command"
                )));
            }
            UpstreamTarget::Command(words)
        };
        Ok(UpstreamSpec {
            name: name.to_string(),
            target,
        })
    }
}

/// The connected upstreams and the host tools made from their tools.
pub struct Upstreams {
    /// Kept for the connections' lifetime: the commands dvm started end with them.
    services: Vec<RunningService<RoleClient, ()>>,
    tools: Arc<HostTools>,
    /// `(group, tool, description)` of each tool, for the `run_code` description.
    listing: Vec<(String, String, String)>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("servers", &self.services.len())
            .field("tools", &self.listing.len())
            .finish()
    }
}

/// An identifier for the MCP tool `name`: other characters become `_`, a leading digit
/// gets a `_`, leading underscores are cut to one (`__all__` → `_all__`), and a Python
/// keyword or a name the guest modules keep gets a `_` at the end.
fn identifier(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(63)
        .collect();
    while out.starts_with("__") {
        out.remove(0);
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    if crate::sandbox::tools::is_reserved(&out) {
        out.push('_');
    }
    out
}

/// `base`, or `base_2`, `base_3`… (within 64 characters), whichever `taken` does not hold
/// yet; it is added to `taken`. Two MCP names that become the same identifier
/// (`get-item`, `get.item`) each get one.
fn unique(base: String, taken: &mut std::collections::HashSet<String>) -> String {
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        let suffix = format!("_{n}");
        let mut stem = base.clone();
        stem.truncate(64 - suffix.len());
        name = stem + &suffix;
        n += 1;
    }
    taken.insert(name.clone());
    name
}

/// What a guest gets back from an MCP tool: its structured content when it has one;
/// else its text (parsed as JSON when it is JSON), or a list of the content's texts. A
/// result marked as an error becomes the tool's error.
fn answer(result: CallToolResult) -> Result<Value, String> {
    let texts: Vec<String> = result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|text| text.text.clone()))
        .collect();
    if result.is_error == Some(true) {
        return Err(match texts.is_empty() {
            true => "the upstream tool failed".to_string(),
            false => texts.join("\n"),
        });
    }
    if let Some(structured) = result.structured_content {
        return Ok(structured);
    }
    let parse = |text: &str| serde_json::from_str(text).unwrap_or_else(|_| Value::from(text));
    Ok(match texts.as_slice() {
        [] => Value::Null,
        [one] => parse(one),
        many => Value::Array(many.iter().map(|text| parse(text)).collect()),
    })
}

/// An upstream tool's description, cut at [`MAX_DESCRIPTION_CHARS`].
fn description(tool: &rmcp::model::Tool) -> String {
    tool.description
        .as_deref()
        .unwrap_or_default()
        .chars()
        .take(MAX_DESCRIPTION_CHARS)
        .collect()
}

/// A host tool named `name` that calls `tool` on the upstream `peer`, driven by `handle`.
fn upstream_tool(
    group: &str,
    name: String,
    tool: &rmcp::model::Tool,
    peer: Peer<RoleClient>,
    handle: tokio::runtime::Handle,
) -> Result<HostTool, Error> {
    let upstream_name = tool.name.to_string();
    let description = description(tool);
    let schema = Value::Object((*tool.input_schema).clone());
    HostTool::new(name, description, schema, move |args: Value| {
        let arguments = match args {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let params = CallToolRequestParams::new(upstream_name.clone()).with_arguments(arguments);
        let peer = peer.clone();
        // The door stops waiting at the tool's timeout; the call itself ends soon after,
        // so a server that never answers leaves no thread behind.
        let limit = crate::DEFAULT_TOOL_TIMEOUT + Duration::from_secs(1);
        let called = handle
            .block_on(async move { tokio::time::timeout(limit, peer.call_tool(params)).await });
        match called {
            Ok(Ok(result)) => answer(result),
            Ok(Err(e)) => Err(format!("the MCP server did not answer: {e}")),
            Err(_) => Err("the MCP server did not answer in time".to_string()),
        }
    })?
    .in_group(group)
}

impl Upstreams {
    /// Connects to each upstream (starting the commands), lists its tools and makes host
    /// tools of them. Fails when an upstream cannot be reached: the operator named it.
    pub async fn connect(specs: &[UpstreamSpec]) -> Result<Upstreams, Error> {
        // rmcp's HTTP client is reqwest's, which takes rustls with ring, installed once per
        // process (another part may have installed it already, which is as good).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let handle = tokio::runtime::Handle::current();
        let mut tools = HostTools::new();
        let mut services = Vec::new();
        let mut listing = Vec::new();
        for spec in specs {
            let failed = |what: &str, e: &dyn std::fmt::Display| {
                Error::InvalidInput(format!("the MCP upstream `{}` ({what}): {e}", spec.name))
            };
            let connect = async {
                let service = match &spec.target {
                    UpstreamTarget::Command(words) => {
                        let mut command = tokio::process::Command::new(&words[0]);
                        command.args(&words[1..]).kill_on_drop(true);
                        let (transport, _stderr) =
                            rmcp::transport::TokioChildProcess::builder(command)
                                .stderr(std::process::Stdio::inherit())
                                .spawn()
                                .map_err(|e| failed("cannot start it", &e))?;
                        ().serve(transport)
                            .await
                            .map_err(|e| failed("no MCP handshake", &e))?
                    }
                    UpstreamTarget::Url(url) => {
                        let transport =
                            rmcp::transport::StreamableHttpClientTransport::from_uri(url.as_str());
                        ().serve(transport)
                            .await
                            .map_err(|e| failed("no MCP handshake", &e))?
                    }
                };
                let listed = service
                    .peer()
                    .list_all_tools()
                    .await
                    .map_err(|e| failed("cannot list its tools", &e))?;
                Ok::<_, Error>((service, listed))
            };
            let (service, listed) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| failed("connecting", &"no answer within 60 s"))??;
            if listed.len() > MAX_UPSTREAM_TOOLS {
                return Err(failed(
                    "its tools",
                    &format!(
                        "it lists {}, more than the {MAX_UPSTREAM_TOOLS} dvm takes from one server",
                        listed.len()
                    ),
                ));
            }
            let mut names = std::collections::HashSet::new();
            for tool in &listed {
                let name = unique(identifier(&tool.name), &mut names);
                let made = upstream_tool(
                    &spec.name,
                    name,
                    tool,
                    service.peer().clone(),
                    handle.clone(),
                )
                .map_err(|e| failed(&format!("tool `{}`", tool.name), &e))?;
                listing.push((
                    spec.name.clone(),
                    made.name().to_string(),
                    description(tool),
                ));
                tools = tools
                    .with(made)
                    .map_err(|e| failed(&format!("tool `{}`", tool.name), &e))?;
            }
            services.push(service);
        }
        Ok(Upstreams {
            services,
            tools: Arc::new(tools),
            listing,
        })
    }

    pub fn tools(&self) -> &Arc<HostTools> {
        &self.tools
    }

    pub fn is_empty(&self) -> bool {
        self.listing.is_empty()
    }

    /// The tools as the `run_code` description lists them: one line each.
    pub fn describe(&self) -> String {
        self.listing
            .iter()
            .map(|(group, tool, description)| {
                let first = description.lines().next().unwrap_or_default();
                format!("- dvm_tools.{group}.{tool}: {first}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Whether `code` asks for the host tools (`dvm_tools` in Python, `dvm:tools` in
/// JavaScript): only such runs get the upstreams' tools, so every other run stays
/// cacheable and prestartable.
pub fn wants_tools(code: &str) -> bool {
    code.contains("dvm_tools") || code.contains("dvm:tools")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_into_commands_and_urls() {
        let spec: UpstreamSpec = "github=npx -y server-github".parse().unwrap();
        assert_eq!(spec.name, "github");
        assert_eq!(
            spec.target,
            UpstreamTarget::Command(vec!["npx".into(), "-y".into(), "server-github".into()])
        );
        let spec: UpstreamSpec = "docs=http://127.0.0.1:9/mcp".parse().unwrap();
        assert_eq!(
            spec.target,
            UpstreamTarget::Url("http://127.0.0.1:9/mcp".into())
        );
        for bad in ["github", "git-hub=x", "class=x", "tools=x", "a=", "=x"] {
            assert!(bad.parse::<UpstreamSpec>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tool_names_become_identifiers_and_answers_become_json() {
        assert_eq!(identifier("search-issues"), "search_issues");
        assert_eq!(identifier("2fa.check"), "_2fa_check");
        assert_eq!(identifier("class"), "class_");
        assert_eq!(identifier("call"), "call_");
        assert_eq!(identifier("__all__"), "_all__");
        assert_eq!(identifier("__class__"), "_class__");
        assert_eq!(identifier("make"), "make_");
        assert_eq!(identifier("___"), "_");
        let mut taken = std::collections::HashSet::new();
        let names: Vec<String> = ["get-item", "get.item", "get_item"]
            .iter()
            .map(|name| unique(identifier(name), &mut taken))
            .collect();
        assert_eq!(names, ["get_item", "get_item_2", "get_item_3"]);
        let long = "x".repeat(64);
        taken.insert(long.clone());
        let other = unique(long, &mut taken);
        assert_eq!((other.len(), &other[60..]), (64, "xx_2"));
        let schema = Arc::new(serde_json::Map::new());
        let wordy = rmcp::model::Tool::new("t", "é".repeat(5000), schema.clone());
        assert_eq!(description(&wordy).chars().count(), MAX_DESCRIPTION_CHARS);
        let bare = rmcp::model::Tool::new_with_raw("t", None, schema);
        assert_eq!(description(&bare), "");
        let text = |t: &str| rmcp::model::ContentBlock::text(t.to_string());
        assert_eq!(
            answer(CallToolResult::success(vec![text("{\"n\": 1}")])),
            Ok(serde_json::json!({"n": 1}))
        );
        assert_eq!(
            answer(CallToolResult::success(vec![text("plain"), text("2")])),
            Ok(serde_json::json!(["plain", 2]))
        );
        assert_eq!(
            answer(CallToolResult::error(vec![text("no such issue")])),
            Err("no such issue".to_string())
        );
        assert!(wants_tools("from dvm_tools.github import x") && !wants_tools("print(1)"));
    }
}
