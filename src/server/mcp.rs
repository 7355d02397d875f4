//! The MCP server (official Rust SDK, rmcp): tools an LLM calls to run code, manage files
//! and packages, and keep sessions. Served over stdio by `dvm mcp` and over streamable HTTP
//! at `/mcp` by `dvm serve` (rmcp checks the Host header against loopback names, the fix for
//! DNS rebinding; dvm also refuses browser Origins it was not told to allow).
//!
//! Each MCP connection has a workspace of its own: `write_file`, `read_file` and
//! `list_files` without a `session_id` use it, and `run_code` runs there, so a model can
//! upload data and then run code on it. Sessions are shared with the HTTP API (and its idle
//! timeout).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;

use super::{AppState, Execution, LimitsRequest};
use crate::limits::Limits;
use crate::sandbox::RunInput;
use crate::workspace::Workspace;

/// Largest file `read_file` returns.
const MAX_READ_BYTES: u64 = 4 << 20;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RunCodeArgs {
    /// The program's source code.
    pub code: String,
    /// `python` (CPython 3.15 with numpy and pandas; the default), `python-lite` (CPython
    /// 3.12, fast start) or `javascript` (QuickJS-NG, ES2023 modules).
    pub runtime: Option<String>,
    /// Text the program reads on standard input.
    pub stdin: Option<String>,
    /// Command-line arguments (sys.argv[1:] / scriptArgs).
    pub args: Option<Vec<String>>,
    /// Wall-clock limit in milliseconds (default 10000).
    pub timeout_ms: Option<u64>,
    /// Also install what a Python program imports that the runtime lacks (default false).
    /// A PEP 723 block and a requirements.txt or package.json in the workspace are always
    /// read.
    pub auto_deps: Option<bool>,
    /// Hosts the program may reach over HTTP (`HOST`, `HOST:PORT`), among those this
    /// server allows (default: none, no network).
    pub allow_net: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct InstallArgs {
    /// Requirements: PEP 508 for Python (`tabulate>=0.9`), `name@range` for JavaScript.
    /// Pure-Python wheels only; numpy and pandas are built into `python`.
    pub requirements: Vec<String>,
    /// The runtime they are for (default `python`); later `run_code` calls with it see them.
    pub runtime: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct WriteFileArgs {
    /// Relative path in the workspace, e.g. `data/input.csv`.
    pub path: String,
    /// The file's text (UTF-8).
    pub content: String,
    /// Write into this session's workspace instead of this connection's.
    pub session_id: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct PathArgs {
    /// Relative path in the workspace.
    pub path: String,
    /// Read from this session's workspace instead of this connection's.
    pub session_id: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ListArgs {
    /// List this session's workspace instead of this connection's.
    pub session_id: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CreateSessionArgs {
    /// `python` (the default) or `javascript`; `python-lite` has no sessions.
    pub runtime: Option<String>,
    /// Packages on the session's sys.path (PEP 508, pure-Python wheels).
    pub requirements: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SnapshotSessionArgs {
    /// The session to snapshot.
    pub session_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RestoreSessionArgs {
    /// A snapshot_id from snapshot_session.
    pub snapshot_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ForkSessionArgs {
    /// The session to fork.
    pub session_id: String,
    /// How many copies, 1 to 16 (default 1).
    pub count: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RunInSessionArgs {
    /// The session from create_session.
    pub session_id: String,
    /// Code to run; variables and imports from earlier calls are there, and a final bare
    /// expression's value is printed.
    pub code: String,
    /// Text this call reads on standard input.
    pub stdin: Option<String>,
    /// Wall-clock limit of this call in milliseconds (default 10000). A call stopped by a
    /// limit ends the session.
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SessionArgs {
    /// The session to close.
    pub session_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct NoArgs {}

/// One MCP connection's server.
#[derive(Clone)]
pub struct DvmTools {
    state: Arc<AppState>,
    /// The connection's place among the server's sessions and sandboxes.
    _place: Arc<super::Reservation>,
    workspace: Workspace,
    /// Packages installed for this connection, by runtime.
    packages: Arc<Mutex<BTreeMap<String, crate::deps::PackageSet>>>,
    /// One run_code at a time per connection: they share its workspace.
    running: Arc<tokio::sync::Mutex<()>>,
    tool_router: ToolRouter<DvmTools>,
    /// Declared after `workspace`: holds its last handle, so the directory is removed off
    /// the async threads when the connection ends.
    _removal: Arc<super::DropOffThread<Workspace>>,
}

type ToolResult = Result<CallToolResult, rmcp::ErrorData>;

fn text(value: serde_json::Value) -> ToolResult {
    Ok(CallToolResult::success(vec![ContentBlock::text(
        serde_json::to_string_pretty(&value).unwrap_or_default(),
    )]))
}

fn failure(message: impl Into<String>) -> ToolResult {
    Ok(CallToolResult::error(vec![ContentBlock::text(
        super::scrub_paths(&message.into()),
    )]))
}

/// What a model sees of an outcome. Images the run displayed are left out of the JSON (it
/// says where they went): [`with_images`] sends them as image content.
fn summary(outcome: &crate::Outcome) -> serde_json::Value {
    let mut value = outcome.to_json();
    if let Some(object) = value.as_object_mut() {
        for noise in ["cache_key", "stdout_bytes", "stderr_bytes", "fuel_used"] {
            object.remove(noise);
        }
    }
    let mut image = 0;
    if let Some(items) = value.get_mut("display").and_then(|d| d.as_array_mut()) {
        for item in items {
            let Some(data) = item.get_mut("data").and_then(|d| d.as_object_mut()) else {
                continue;
            };
            for mime in IMAGE_TYPES {
                if let Some(form) = data.get_mut(mime) {
                    image += 1;
                    *form = format!("(image {image}, sent as image content)").into();
                }
            }
        }
    }
    value
}

/// Display forms a model is shown as images.
const IMAGE_TYPES: [&str; 3] = ["image/png", "image/jpeg", "image/gif"];

/// The outcome's summary as text, then each image it displayed as image content, so a model
/// can look at its chart.
fn with_images(value: serde_json::Value, outcome: &crate::Outcome) -> ToolResult {
    let mut blocks = vec![ContentBlock::text(
        serde_json::to_string_pretty(&value).unwrap_or_default(),
    )];
    for item in &outcome.display {
        for mime in IMAGE_TYPES {
            if let Some(serde_json::Value::String(data)) = item.data.get(mime) {
                blocks.push(ContentBlock::image(data.clone(), mime));
            }
        }
    }
    Ok(CallToolResult::success(blocks))
}

impl DvmTools {
    pub fn new(state: Arc<AppState>) -> Result<DvmTools, crate::Error> {
        // A connection's workspace is a sandbox of sorts: it counts toward --max-sessions.
        let place = state
            .admit(None)
            .map_err(|refused| crate::Error::QueueFull(refused.message))?;
        let workspace = Workspace::new()?;
        let mut tool_router = Self::tool_router();
        if !state.config.allow_net.is_empty()
            && let Some(route) = tool_router.map.get_mut("run_code")
        {
            let told = route.attr.description.as_deref().unwrap_or_default();
            let hosts: Vec<String> = state
                .config
                .allow_net
                .iter()
                .map(ToString::to_string)
                .collect();
            route.attr.description = Some(
                format!(
                    "{told}\n\nThe program may reach these hosts over HTTP (urllib, \
                     requests, fetch) when it names them in allow_net: {}",
                    hosts.join(", ")
                )
                .into(),
            );
        }
        if let Some(upstreams) = state.upstreams() {
            // Code mode: the model learns here which tools its programs can call.
            for name in ["run_code", "run_in_session"] {
                if let Some(route) = tool_router.map.get_mut(name) {
                    let told = route.attr.description.as_deref().unwrap_or_default();
                    route.attr.description = Some(
                        format!(
                            "{told}\n\nThe program can call these tools (Python: `from \
                             dvm_tools.GROUP import TOOL`, then `TOOL(...)` with the tool's \
                             parameters, positional or by name; it returns the tool's JSON \
                             and raises dvm_tools.ToolError when the tool fails. JavaScript: \
                             `import {{ GROUP }} from 'dvm:tools'`, then `GROUP.TOOL(...)`). \
                             Call them in loops and filter in code; print only what \
                             matters:\n{}",
                            upstreams.describe()
                        )
                        .into(),
                    );
                }
            }
        }
        Ok(DvmTools {
            state,
            _place: Arc::new(place),
            _removal: Arc::new(super::DropOffThread::new(workspace.clone())),
            workspace,
            packages: Arc::default(),
            running: Arc::default(),
            tool_router,
        })
    }

    /// The workspace (this connection's, or a session's), the limits whose disk and files
    /// caps are its quota, and the session's one-execution-at-a-time lock.
    fn workspace_for(
        &self,
        session_id: Option<&str>,
    ) -> Result<(Workspace, Limits, Arc<tokio::sync::Mutex<()>>), String> {
        match session_id {
            Some(id) => self
                .state
                .sandbox(id)
                .map(|s| (s.workspace.clone(), s.limits.clone(), s.busy.clone()))
                .map_err(|e| e.message),
            None => Ok((
                self.workspace.clone(),
                super::default_limits(&self.state.config),
                self.running.clone(),
            )),
        }
    }

    fn limits(&self, timeout_ms: Option<u64>, base: &Limits) -> Result<Limits, String> {
        LimitsRequest {
            timeout_ms,
            ..LimitsRequest::default()
        }
        .apply(base, &self.state.config)
        .map_err(|e| e.message)
    }
}

#[tool_router]
impl DvmTools {
    #[tool(
        description = "Run a program in a fresh WebAssembly sandbox (no network, hard time and \
        memory limits) and return its status, exit code, stdout, stderr and the files it \
        wrote. It runs in this connection's workspace, where write_file puts files; relative \
        paths work. Python runs CPython 3.15 with numpy and pandas available; matplotlib \
        figures shown or left open (and display(obj)) come back as images."
    )]
    async fn run_code(&self, Parameters(args): Parameters<RunCodeArgs>) -> ToolResult {
        let runtime = args.runtime.unwrap_or_else(|| "python".into());
        let limits = match self.limits(args.timeout_ms, &super::default_limits(&self.state.config))
        {
            Ok(limits) => limits,
            Err(e) => return failure(e),
        };
        let packages = self
            .packages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&runtime)
            .cloned();
        let _running = self.running.lock().await;
        // The code goes in as a script file that is removed afterwards; a name the workspace
        // does not have yet, so the model's own files are never overwritten. The run may
        // write what the connection's workspace quota leaves.
        let extension = crate::Catalog::embedded()
            .get(&runtime)
            .map_or("py", |spec| spec.language.script_extension());
        let prepared = {
            let workspace = self.workspace.clone();
            let quota = super::default_limits(&self.state.config);
            let mut limits = limits;
            super::blocking(move || {
                super::fit_to_workspace(&workspace, &quota, &mut limits)?;
                let name = (1..=1000)
                    .map(|n| match n {
                        1 => format!("main.{extension}"),
                        n => format!("main_{n}.{extension}"),
                    })
                    .find(|name| !workspace.exists(name).unwrap_or(true))
                    .unwrap_or_else(|| format!("main_{}.{extension}", super::new_id()));
                Ok::<_, crate::Error>((name, limits))
            })
            .await
        };
        let (name, limits) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => return failure(error.message),
        };
        let tools = self.state.upstream_tools(&args.code);
        let net = match super::api::net_policy(
            args.allow_net.as_deref().unwrap_or_default(),
            &self.state,
        ) {
            Ok(net) => net,
            Err(error) => return failure(error.message),
        };
        let job = Execution {
            runtime: runtime.clone(),
            code: args.code,
            name: name.clone(),
            input: RunInput {
                args: args.args.unwrap_or_default(),
                stdin: args.stdin.unwrap_or_default().into_bytes(),
                limits,
                workspace: Some(self.workspace.clone()),
                packages,
                tools,
                net,
                ..RunInput::default()
            },
            sandbox: None,
            hold: None,
            requirements: Vec::new(),
            auto_deps: args.auto_deps.unwrap_or(false),
            run_id: None,
            on_start: None,
        };
        let ran = self.state.execute(job).await;
        let workspace = self.workspace.clone();
        let _ = tokio::task::spawn_blocking(move || workspace.remove(&name)).await;
        match ran {
            Ok((_, outcome)) => with_images(summary(&outcome), &outcome),
            Err(error) => failure(error.message),
        }
    }

    #[tool(
        description = "Install packages for later run_code calls of a runtime in this \
        connection: pure-Python wheels for python (numpy and pandas are already built in), npm \
        packages for javascript. Returns what was installed."
    )]
    async fn install_packages(&self, Parameters(args): Parameters<InstallArgs>) -> ToolResult {
        let runtime_id = args.runtime.unwrap_or_else(|| "python".into());
        let runtime = match self.state.runtime(&runtime_id).await {
            Ok(runtime) => runtime,
            Err(error) => return failure(error.message),
        };
        let current = self
            .packages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&runtime_id)
            .cloned();
        let installed = super::install_more(runtime, current.as_ref(), args.requirements).await;
        match installed {
            Ok(set) => {
                let body = serde_json::json!({
                    "installed": set.installed_names(),
                    "built_in": set.built_in,
                });
                self.packages
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(runtime_id, set);
                text(body)
            }
            Err(error) => failure(error.to_string()),
        }
    }

    #[tool(
        description = "Write a text file into the workspace (this connection's, or a \
        session's with session_id). Paths are relative; directories are created."
    )]
    async fn write_file(&self, Parameters(args): Parameters<WriteFileArgs>) -> ToolResult {
        let (workspace, quota, busy) = match self.workspace_for(args.session_id.as_deref()) {
            Ok(found) => found,
            Err(e) => return failure(e),
        };
        // Not beside a run in the same workspace: its quota counts what both write.
        let _hold = busy.lock_owned().await;
        let size = args.content.len();
        let path = args.path.clone();
        let written = super::blocking(move || {
            super::write_within(&workspace, &quota, &[(path, args.content.into_bytes())])
        })
        .await;
        match written {
            Ok(()) => text(serde_json::json!({ "path": args.path, "size": size })),
            Err(error) => failure(error.message),
        }
    }

    #[tool(
        description = "Read a file from the workspace (this connection's, or a session's \
        with session_id) as text, e.g. output a program wrote. Up to 4 MiB."
    )]
    async fn read_file(&self, Parameters(args): Parameters<PathArgs>) -> ToolResult {
        let (workspace, ..) = match self.workspace_for(args.session_id.as_deref()) {
            Ok(found) => found,
            Err(e) => return failure(e),
        };
        let read = super::blocking(move || workspace.read(&args.path, MAX_READ_BYTES)).await;
        match read {
            Ok(bytes) => Ok(CallToolResult::success(vec![ContentBlock::text(
                String::from_utf8_lossy(&bytes).into_owned(),
            )])),
            Err(error) => failure(error.message),
        }
    }

    #[tool(
        description = "List the files in the workspace (this connection's, or a session's \
        with session_id) with their sizes."
    )]
    async fn list_files(&self, Parameters(args): Parameters<ListArgs>) -> ToolResult {
        let (workspace, ..) = match self.workspace_for(args.session_id.as_deref()) {
            Ok(found) => found,
            Err(e) => return failure(e),
        };
        match super::blocking(move || workspace.list()).await {
            Ok(entries) => text(serde_json::to_value(entries).unwrap_or_default()),
            Err(error) => failure(error.message),
        }
    }

    #[tool(
        description = "Start a session: one interpreter (runtime `python`, the default, or \
        `javascript`) kept alive across run_in_session calls, like a notebook kernel \
        (variables and imports carry over; a final expression is echoed). It \
        has a workspace of its own. Returns session_id. Close it with close_session; an idle \
        session is closed after a while."
    )]
    async fn create_session(&self, Parameters(args): Parameters<CreateSessionArgs>) -> ToolResult {
        let runtime = args.runtime.unwrap_or_else(|| "python".into());
        match self
            .state
            .create_sandbox(
                &runtime,
                true,
                args.requirements.unwrap_or_default(),
                Vec::new(),
                super::default_limits(&self.state.config),
            )
            .await
        {
            Ok(sandbox) => text(serde_json::json!({
                "session_id": sandbox.id,
                "runtime": sandbox.runtime,
            })),
            Err(error) => failure(error.message),
        }
    }

    #[tool(
        description = "Run code in a session. Earlier calls' variables and imports are \
        there; the value of a final bare expression is printed (DataFrames also as HTML in \
        display). Returns status, stdout, stderr; figures come back as images. A call stopped by a limit (time, memory) or calling exit() ends the session."
    )]
    async fn run_in_session(&self, Parameters(args): Parameters<RunInSessionArgs>) -> ToolResult {
        let sandbox = match self.state.sandbox(&args.session_id) {
            Ok(sandbox) if sandbox.session.is_some() => sandbox,
            Ok(_) => return failure(format!("`{}` is a sandbox, not a session", args.session_id)),
            Err(error) => return failure(error.message),
        };
        let limits = match self.limits(args.timeout_ms, &sandbox.limits) {
            Ok(limits) => limits,
            Err(e) => return failure(e),
        };
        let hold = sandbox.busy.clone().lock_owned().await;
        let fitted = {
            let sandbox = sandbox.clone();
            let mut limits = limits;
            super::blocking(move || {
                super::fit_to_workspace(&sandbox.workspace, &sandbox.limits, &mut limits)
                    .map(|()| limits)
            })
            .await
        };
        let limits = match fitted {
            Ok(limits) => limits,
            Err(error) => return failure(error.message),
        };
        let tools = self.state.upstream_tools(&args.code);
        let job = Execution {
            runtime: sandbox.runtime.clone(),
            code: args.code,
            name: String::new(),
            input: RunInput {
                stdin: args.stdin.unwrap_or_default().into_bytes(),
                limits,
                tools,
                ..RunInput::default()
            },
            sandbox: Some(sandbox.clone()),
            hold: Some(hold),
            requirements: Vec::new(),
            auto_deps: false,
            run_id: None,
            on_start: None,
        };
        match self.state.execute(job).await {
            Ok((_, outcome)) => {
                let mut value = summary(&outcome);
                value["session_open"] =
                    sandbox.session.as_ref().is_some_and(|s| s.is_open()).into();
                with_images(value, &outcome)
            }
            Err(error) => failure(error.message),
        }
    }

    #[tool(
        description = "Save a session (its variables, imports and files) as a snapshot that \
        outlives the session and the server. Returns snapshot_id, for restore_session."
    )]
    async fn snapshot_session(
        &self,
        Parameters(args): Parameters<SnapshotSessionArgs>,
    ) -> ToolResult {
        let sandbox = match self.state.sandbox(&args.session_id) {
            Ok(sandbox) if sandbox.session.is_some() => sandbox,
            Ok(_) => return failure(format!("`{}` is a sandbox, not a session", args.session_id)),
            Err(error) => return failure(error.message),
        };
        let _hold = sandbox.busy.clone().lock_owned().await;
        let taken = super::blocking(move || match &sandbox.session {
            Some(session) => session.snapshot(),
            None => Err(crate::Error::InvalidInput("not a session".into())),
        })
        .await;
        match taken {
            Ok(id) => text(serde_json::json!({ "snapshot_id": id, "session_id": args.session_id })),
            Err(error) => failure(error.message),
        }
    }

    #[tool(
        description = "Start a new session from a snapshot_session snapshot: variables, \
        imports and files as they were. Returns session_id."
    )]
    async fn restore_session(
        &self,
        Parameters(args): Parameters<RestoreSessionArgs>,
    ) -> ToolResult {
        let config = self.state.dvm.config().clone();
        let id = args.snapshot_id.clone();
        let info = match super::blocking(move || crate::session_snapshot_info(&config, &id)).await {
            Ok(Some(info)) => info,
            Ok(None) => return failure(format!("no session snapshot `{}`", args.snapshot_id)),
            Err(error) => return failure(error.message),
        };
        let copy = super::SessionCopy::Snapshot {
            id: args.snapshot_id,
            runtime: info.runtime,
        };
        let limits = super::default_limits(&self.state.config);
        match self.state.copy_session(copy, 1, limits).await {
            Ok(made) => text(serde_json::json!({
                "session_id": made.first().map(|s| s.id.clone()),
                "runtime": made.first().map(|s| s.runtime.clone()),
            })),
            Err(error) => failure(error.message),
        }
    }

    #[tool(
        description = "Fork a session into count new sessions (default 1) that go on from \
        where it stands, each with a copy of its files: try several next steps from the \
        same state. Returns session_ids."
    )]
    async fn fork_session(&self, Parameters(args): Parameters<ForkSessionArgs>) -> ToolResult {
        let count = args.count.unwrap_or(1);
        if !(1..=16).contains(&count) {
            return failure(format!("count must be from 1 to 16, not {count}"));
        }
        let parent = match self.state.sandbox(&args.session_id) {
            Ok(sandbox) if sandbox.session.is_some() => sandbox,
            Ok(_) => return failure(format!("`{}` is a sandbox, not a session", args.session_id)),
            Err(error) => return failure(error.message),
        };
        let limits = parent.limits.clone();
        let _hold = parent.busy.clone().lock_owned().await;
        match self
            .state
            .copy_session(
                super::SessionCopy::Fork(parent.clone()),
                count as usize,
                limits,
            )
            .await
        {
            Ok(made) => text(serde_json::json!({
                "session_ids": made.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
            })),
            Err(error) => failure(error.message),
        }
    }

    #[tool(description = "Close a session and free its interpreter and files.")]
    async fn close_session(&self, Parameters(args): Parameters<SessionArgs>) -> ToolResult {
        match self.state.close_sandbox(&args.session_id).await {
            Ok(()) => text(serde_json::json!({ "closed": args.session_id })),
            Err(error) => failure(error.message),
        }
    }

    #[tool(
        description = "List the runtimes (languages) this server runs, with versions and \
        whether they support sessions."
    )]
    async fn list_runtimes(&self, Parameters(_): Parameters<NoArgs>) -> ToolResult {
        let dvm = self.state.dvm.clone();
        let statuses = tokio::task::spawn_blocking(move || dvm.runtime_statuses())
            .await
            .unwrap_or_default();
        text(serde_json::json!(
            statuses
                .iter()
                .map(|s| serde_json::json!({
                    "id": s.id,
                    "language": s.language,
                    "version": s.version,
                    "sessions": s.capabilities.sessions,
                }))
                .collect::<Vec<_>>()
        ))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for DvmTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("dvm", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "dvm runs code in WebAssembly sandboxes with hard limits and no network. Use \
                 run_code for one-off programs, write_file/read_file/list_files for data, and \
                 create_session + run_in_session to keep Python state across calls.",
            )
    }
}

/// The streamable-HTTP MCP endpoint, mounted at `/mcp`.
pub(super) fn http_service(
    state: Arc<AppState>,
) -> StreamableHttpService<DvmTools, LocalSessionManager> {
    let hosts = ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(str::to_string)
        .chain(state.config.allowed_hosts.iter().cloned());
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(state.config.allowed_origins.clone())
        .enforce_origin_validation()
        .with_max_request_body_bytes(state.config.max_body_bytes)
        .with_cancellation_token(state.mcp_cancel.child_token());
    StreamableHttpService::new(
        move || DvmTools::new(state.clone()).map_err(std::io::Error::other),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

/// Serves MCP over stdin and stdout until the client closes them.
pub async fn serve_stdio(state: Arc<AppState>) -> Result<(), crate::Error> {
    use rmcp::ServiceExt as _;
    let tools = DvmTools::new(state.clone())?;
    let running =
        tools
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| crate::error::HostError::Task {
                what: "MCP over stdio",
                source: Box::new(e),
            })?;
    let ended = running.waiting().await.map_err(|e| {
        crate::Error::from(crate::error::HostError::Task {
            what: "MCP over stdio",
            source: Box::new(e),
        })
    });
    state.shut_down().await;
    ended.map(|_| ())
}
