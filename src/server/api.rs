//! The native JSON API: runtimes, one-shot execution, sandboxes and sessions with their
//! files, packages and executions, streaming as Server-Sent Events, cancellation, health,
//! metrics and the OpenAPI document.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;

use super::{ApiError, ApiJson, AppState, Execution, LimitsRequest};
use crate::limits::Limits;
use crate::sandbox::{RunInput, Stream};

type Shared = State<Arc<AppState>>;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/runtimes", get(runtimes))
        .route("/execute", post(execute_once))
        .route("/runs/{run_id}/cancel", post(cancel_run))
        .route("/runs/{run_id}/tool_results/{call_id}", post(tool_result))
        .route("/sandboxes", get(list_sandboxes).post(create_sandbox))
        .route("/sessions", get(list_sandboxes).post(create_session))
        .route("/sandboxes/{id}", get(show_sandbox).delete(delete_sandbox))
        .route("/sessions/{id}", get(show_sandbox).delete(delete_sandbox))
        .route("/sandboxes/{id}/execute", post(execute_in))
        .route("/sessions/{id}/execute", post(execute_in))
        .route("/sessions/{id}/snapshot", post(snapshot_session))
        .route("/sessions/{id}/fork", post(fork_session))
        .route(
            "/snapshots/{id}",
            get(show_snapshot).delete(delete_snapshot),
        )
        .route("/sandboxes/{id}/cancel", post(cancel_in))
        .route("/sessions/{id}/cancel", post(cancel_in))
        .route("/sandboxes/{id}/packages", post(install_in))
        .route("/sessions/{id}/packages", post(install_in))
        .route("/sandboxes/{id}/files", get(list_files))
        .route("/sessions/{id}/files", get(list_files))
        .route(
            "/sandboxes/{id}/files/{*path}",
            get(read_file).put(write_file).delete(delete_file),
        )
        .route(
            "/sessions/{id}/files/{*path}",
            get(read_file).put(write_file).delete(delete_file),
        )
}

/// Checks Host and Origin (every route), then the bearer token (every route but
/// `/health`), and counts requests.
pub(super) async fn guard(State(state): Shared, request: Request, next: Next) -> Response {
    if let Err(refused) = state.check_access(request.uri(), request.headers()) {
        state.metrics.http(refused.status.as_u16());
        return refused.into_response();
    }
    if let Some(token) = &state.config.token
        && request.uri().path() != "/health"
    {
        let headers = request.headers();
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let judge0 = headers.get("x-auth-token").and_then(|v| v.to_str().ok());
        let given = bearer.or(judge0).unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this server needs `Authorization: Bearer TOKEN` (or `X-Auth-Token: TOKEN`)",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    let response = next.run(request).await;
    state.metrics.http(response.status().as_u16());
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn health(State(state): Shared) -> impl IntoResponse {
    let sandboxes = state
        .sandboxes
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let sessions = sandboxes.values().filter(|s| s.session.is_some()).count();
    axum::Json(serde_json::json!({
        "status": if state.shutting_down.load(std::sync::atomic::Ordering::Acquire) {
            "shutting_down"
        } else {
            "ok"
        },
        "version": env!("CARGO_PKG_VERSION"),
        "sessions": sessions,
        "sandboxes": sandboxes.len() - sessions,
        "running": state.runs.lock().unwrap_or_else(PoisonError::into_inner).len(),
        "queued": state.limiter.waiting(),
    }))
}

async fn metrics(State(state): Shared, headers: HeaderMap) -> impl IntoResponse {
    let (sessions, sandboxes) = {
        let all = state
            .sandboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let sessions = all.values().filter(|s| s.session.is_some()).count();
        (sessions, all.len() - sessions)
    };
    let (_, session_memory, session_slots) = state.admitted();
    let (retained, retained_bytes) = state.submissions.retained();
    let text = state.metrics.render(super::metrics::Live {
        sessions,
        sandboxes,
        queued: state.limiter.waiting(),
        session_memory,
        session_slots,
        retained,
        retained_bytes,
    });
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if super::metrics::wants_openmetrics(accept) {
        ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text)
    } else {
        (
            [(header::CONTENT_TYPE, super::metrics::CLASSIC_CONTENT_TYPE)],
            super::metrics::classic_text(&text),
        )
    }
}

async fn openapi() -> impl IntoResponse {
    axum::Json(super::openapi::document())
}

async fn runtimes(State(state): Shared) -> Result<impl IntoResponse, ApiError> {
    let dvm = state.dvm.clone();
    let statuses = tokio::task::spawn_blocking(move || dvm.runtime_statuses())
        .await
        .map_err(|e| {
            ApiError::from(crate::Error::from(crate::error::HostError::Task {
                what: "listing the runtimes",
                source: Box::new(e),
            }))
        })?;
    let list: Vec<serde_json::Value> = statuses
        .into_iter()
        .map(|status| {
            serde_json::json!({
                "id": status.id,
                "language": status.language,
                "version": status.version,
                "installed": status.installed,
                "sessions": status.capabilities.sessions,
            })
        })
        .collect();
    Ok(axum::Json(list))
}

/// A one-shot execution, or one in a sandbox or session.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"runtime": "python", "code": "import sys\nprint(sys.argv[1:], open('in.txt').read())",
    "name": "main.py", "stdin": "", "args": ["a"], "env": {"K": "v"},
    "limits": {"memory_bytes": 268435456}, "timeout_ms": 10000, "requirements": [],
    "files": {"in.txt": "text"}, "files_base64": {"data.bin": "AAEC"}, "stream": false,
    "run_id": "example-run", "seed": 7})))]
pub(super) struct ExecuteRequest {
    /// Runtime id [default: python]; in a sandbox, the sandbox's.
    #[serde(default)]
    runtime: Option<String>,
    code: String,
    /// The script's file name in the workspace [default: main.py or main.mjs].
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    limits: LimitsRequest,
    /// Shorthand for `limits.timeout_ms`.
    #[serde(default)]
    #[schema(minimum = 1)]
    timeout_ms: Option<u64>,
    /// Packages to install first (one-shot runs).
    #[serde(default)]
    requirements: Vec<String>,
    /// Also install what the script imports that the runtime lacks (Python; one-shot runs
    /// and sandboxes). PEP 723 blocks and `requirements.txt`/`package.json` among the files
    /// are always read.
    #[serde(default)]
    auto_deps: bool,
    /// Files written into the workspace first: path → UTF-8 text.
    #[serde(default)]
    files: BTreeMap<String, String>,
    /// Files written into the workspace first: path → base64 bytes.
    #[serde(default)]
    files_base64: BTreeMap<String, String>,
    /// Stream stdout and stderr as Server-Sent Events while it runs.
    #[serde(default)]
    stream: bool,
    /// A client-chosen id, for `POST /runs/{id}/cancel`.
    #[serde(default)]
    run_id: Option<String>,
    /// Run deterministically with this seed (result-cacheable).
    #[serde(default)]
    seed: Option<u64>,
    /// Host tools the client answers (python): the guest calls them through `dvm_tools`,
    /// each call comes as a `tool_call` event on the execution's stream (so `stream` must be
    /// set), answered with `POST /runs/{run_id}/tool_results/{call_id}`.
    #[serde(default)]
    #[schema(max_items = 64)]
    tools: Vec<ToolDeclaration>,
    /// Hosts the guest may reach over HTTP through the server (`HOST`, `HOST:PORT`,
    /// `*.example.com`, `127.0.0.1:8080`), each within what the server's operator allows
    /// (`dvm serve --allow-net`); requests are recorded in the outcome's `net`. Not with
    /// `seed`.
    #[serde(default)]
    #[schema(max_items = 64)]
    allow_net: Vec<String>,
}

/// A host tool a client declares and answers.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ToolDeclaration {
    /// The function's name in the guest (`dvm_tools.NAME`): letters, digits and `_`.
    name: String,
    /// Told to the guest (its docstring).
    #[serde(default)]
    description: String,
    /// A JSON schema (`"type": "object"`) of the arguments.
    #[serde(default)]
    #[schema(value_type = Object)]
    parameters: serde_json::Value,
    /// How long the client may take to answer one call [default: 30000].
    #[serde(default)]
    #[schema(minimum = 1)]
    timeout_ms: Option<u64>,
}

/// Most tools one execution may declare.
const MAX_DECLARED_TOOLS: usize = 64;

#[derive(Debug, Default, Deserialize)]
pub(super) struct StreamQuery {
    #[serde(default)]
    stream: Option<bool>,
}

fn wants_stream(request: &ExecuteRequest, query: &StreamQuery, headers: &HeaderMap) -> bool {
    request.stream
        || query.stream.unwrap_or(false)
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"))
}

impl ExecuteRequest {
    fn input(&self, base: &Limits, state: &AppState) -> Result<RunInput, ApiError> {
        let mut limits = self.limits.clone();
        if self.timeout_ms.is_some() {
            limits.timeout_ms = self.timeout_ms;
        }
        Ok(RunInput {
            args: self.args.clone(),
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            stdin: self.stdin.clone().unwrap_or_default().into_bytes(),
            limits: limits.apply(base, &state.config)?,
            deterministic: self.seed.map(|seed| crate::Determinism { seed }),
            net: net_policy(&self.allow_net, state)?,
            ..RunInput::default()
        })
    }

    /// The files to write first, decoded.
    fn uploads(&self) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
        let mut files: Vec<(String, Vec<u8>)> = self
            .files
            .iter()
            .map(|(path, text)| (path.clone(), text.clone().into_bytes()))
            .collect();
        for (path, encoded) in &self.files_base64 {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| ApiError::bad_request(format!("files_base64 `{path}`: {e}")))?;
            files.push((path.clone(), bytes));
        }
        Ok(files)
    }
}

/// The network a request asks for, if the server allows all of it: each entry must be
/// within one the operator allowed (`dvm serve --allow-net`).
pub(super) fn net_policy(
    entries: &[String],
    state: &AppState,
) -> Result<Option<Arc<crate::NetPolicy>>, ApiError> {
    if entries.is_empty() {
        return Ok(None);
    }
    if entries.len() > 64 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            "at most 64 hosts may be allowed",
        ));
    }
    let ceiling = &state.config.allow_net;
    let mut allowed = Vec::with_capacity(entries.len());
    for entry in entries {
        let host: crate::AllowedHost = entry.parse().map_err(ApiError::from)?;
        if !ceiling.iter().any(|outer| host.within(outer)) {
            let hint = match ceiling.is_empty() {
                true => "this server allows no network (its operator can allow hosts with `dvm \
                         serve --allow-net`)"
                    .to_string(),
                false => format!(
                    "this server allows only {}",
                    ceiling
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_net",
                format!("`{host}` may not be allowed: {hint}"),
            ));
        }
        allowed.push(host);
    }
    Ok(Some(Arc::new(
        crate::NetPolicy::new(allowed).map_err(ApiError::from)?,
    )))
}

fn default_limits(state: &AppState) -> Limits {
    super::default_limits(&state.config)
}

async fn execute_once(
    State(state): Shared,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ExecuteRequest>,
) -> Result<Response, ApiError> {
    let mut input = request.input(&default_limits(&state), &state)?;
    let uploads = request.uploads()?;
    if !uploads.is_empty() {
        let quota = input.limits.clone();
        let (workspace, limits) = super::blocking(move || {
            let workspace = crate::Workspace::new()?;
            super::write_within(&workspace, &quota, &uploads)?;
            let mut limits = quota.clone();
            super::fit_to_workspace(&workspace, &quota, &mut limits)?;
            Ok::<_, ApiError>((workspace, limits))
        })
        .await?;
        input.workspace = Some(workspace);
        input.limits = limits;
    }
    let job = Execution {
        runtime: request
            .runtime
            .clone()
            .unwrap_or_else(|| "python".to_string()),
        code: request.code.clone(),
        name: request.name.clone().unwrap_or_default(),
        input,
        sandbox: None,
        hold: None,
        requirements: request.requirements.clone(),
        auto_deps: request.auto_deps,
        run_id: request.run_id.clone(),
        on_start: None,
    };
    let stream = wants_stream(&request, &query, &headers);
    respond(state, job, stream, &request.tools).await
}

/// Runs the job and answers with its outcome as JSON, or as a stream of events.
async fn respond(
    state: Arc<AppState>,
    mut job: Execution,
    stream: bool,
    tools: &[ToolDeclaration],
) -> Result<Response, ApiError> {
    let runtime = job.runtime.clone();
    if !tools.is_empty() && !stream {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            "host tools are called back over the execution's event stream: ask for one \
             (`\"stream\": true`), then answer each `tool_call` event with POST \
             /runs/{run_id}/tool_results/{call_id}",
        ));
    }
    if tools.len() > MAX_DECLARED_TOOLS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            format!("at most {MAX_DECLARED_TOOLS} tools may be declared"),
        ));
    }
    // Code mode: the upstream MCP servers' tools, for code that asks for them.
    job.input.tools = state.upstream_tools(&job.code);
    if !stream {
        let (run_id, outcome) = state.execute(job).await?;
        let mut body = outcome.to_json();
        body["run_id"] = run_id.clone().into();
        body["runtime"] = runtime.into();
        let mut response = axum::Json(body).into_response();
        if let Ok(value) = HeaderValue::from_str(&run_id) {
            response.headers_mut().insert("x-dvm-run-id", value);
        }
        return Ok(response);
    }
    let (events, receiver) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let run_id = job.run_id.clone().unwrap_or_else(super::new_id);
    job.run_id = Some(run_id.clone());
    let cancel = job.input.cancel.clone().unwrap_or_default();
    job.input.cancel = Some(cancel.clone());
    if !tools.is_empty() {
        let declared = client_tools(&state, &run_id, tools, events.downgrade())?;
        job.input.tools = Some(Arc::new(match &job.input.tools {
            Some(upstream) => declared.merged(upstream).map_err(ApiError::from)?,
            None => declared,
        }));
    }
    let chunks = events.clone();
    job.input.on_output = Some(Arc::new(move |stream: Stream, bytes: &[u8]| {
        let name = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        let data = serde_json::json!({ "text": String::from_utf8_lossy(bytes) }).to_string();
        // A client that went away cancels its run.
        if chunks
            .send(Event::default().event(name).data(data))
            .is_err()
        {
            cancel.cancel();
        }
    }));
    // Display items go out as the guest sends them; those a run could not send live (a
    // cached outcome, a run in a worker process) go out after it, before the result.
    let shown = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let displays = events.clone();
    let counted = shown.clone();
    job.input.on_display = Some(Arc::new(move |item: &crate::Display| {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = displays.send(display_event(item));
    }));
    let _ = events.send(
        Event::default()
            .event("start")
            .data(serde_json::json!({ "run_id": run_id, "runtime": runtime }).to_string()),
    );
    let ended = run_id.clone();
    // A client that went away cancels its run, even one that prints nothing.
    let watched = events.clone();
    let watcher = tokio::spawn({
        let cancel = job.input.cancel.clone().unwrap_or_default();
        async move {
            watched.closed().await;
            cancel.cancel();
        }
    });
    tokio::spawn(async move {
        let executed = state.execute(job).await;
        state.forget_tool_calls(&ended);
        let last = match executed {
            Ok((run_id, outcome)) => {
                // What the run displayed and was not sent live, an event per item, before
                // the result (which carries them all).
                let sent = shown.load(std::sync::atomic::Ordering::Relaxed);
                for item in outcome.display.iter().skip(sent) {
                    let _ = events.send(display_event(item));
                }
                let mut body = outcome.to_json();
                body["run_id"] = run_id.into();
                body["runtime"] = runtime.into();
                Event::default().event("result").data(body.to_string())
            }
            Err(error) => Event::default().event("error").data(
                serde_json::json!({ "error": { "kind": error.kind, "message": super::scrub_paths(&error.message) }, "status": error.status.as_u16() })
                    .to_string(),
            ),
        };
        let _ = events.send(last);
        watcher.abort();
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|event| (Ok::<Event, Infallible>(event), receiver))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The tools a client declared, each answered by the client: a call becomes a `tool_call`
/// event (`{id, name, args}`) on the run's stream, and waits for
/// `POST /runs/{run_id}/tool_results/{id}` (or its timeout). The stream is held weakly, so a
/// call left waiting never keeps a finished run's stream open.
fn client_tools(
    state: &Arc<AppState>,
    run_id: &str,
    declared: &[ToolDeclaration],
    events: tokio::sync::mpsc::WeakUnboundedSender<Event>,
) -> Result<crate::HostTools, ApiError> {
    let mut tools = crate::HostTools::new();
    for declaration in declared {
        let timeout = std::time::Duration::from_millis(
            declaration
                .timeout_ms
                .unwrap_or(crate::DEFAULT_TOOL_TIMEOUT.as_millis() as u64)
                .clamp(1, 600_000),
        );
        let (state, run_id, events) = (state.clone(), run_id.to_string(), events.clone());
        let name = declaration.name.clone();
        let tool = crate::HostTool::new(
            declaration.name.clone(),
            declaration.description.clone(),
            declaration.parameters.clone(),
            move |args: serde_json::Value| {
                let call_id = super::new_id();
                let (answer, answered) = std::sync::mpsc::sync_channel(1);
                state.tool_answers_insert(&call_id, &run_id, answer);
                let event = Event::default().event("tool_call").data(
                    serde_json::json!({ "id": call_id, "name": name, "args": args }).to_string(),
                );
                let sent = events
                    .upgrade()
                    .is_some_and(|events| events.send(event).is_ok());
                let result = if sent {
                    // The door gives up at `timeout`; a little longer here, then the call
                    // is forgotten.
                    answered
                        .recv_timeout(timeout + std::time::Duration::from_secs(1))
                        .unwrap_or_else(|_| Err(format!("no answer to tool call {call_id}")))
                } else {
                    Err("the client that declared the tool went away".to_string())
                };
                state.tool_answers_remove(&call_id);
                result
            },
        )
        .map_err(ApiError::from)?
        .with_timeout(timeout);
        tools = tools.with(tool).map_err(ApiError::from)?;
    }
    Ok(tools)
}

/// `POST /runs/{run_id}/tool_results/{call_id}`: the client's answer to a tool call, as
/// `{"result": JSON}` or `{"error": "message"}`.
async fn tool_result(
    State(state): Shared,
    Path((run_id, call_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let answer = match body.as_object() {
        Some(fields) if fields.len() == 1 && fields.contains_key("result") => {
            Ok(fields["result"].clone())
        }
        Some(fields) if fields.len() == 1 && fields.get("error").is_some_and(|e| e.is_string()) => {
            Err(fields
                .get("error")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .chars()
                .take(4096)
                .collect::<String>())
        }
        _ => {
            return Err(ApiError::bad_request(
                "answer a tool call with {\"result\": JSON} or {\"error\": \"message\"}",
            ));
        }
    };
    if state.answer_tool_call(&run_id, &call_id, answer) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(
            "tool call waiting for an answer",
            &call_id,
        ))
    }
}

/// The SSE event of one display item: `{"data": {MIME: content}}`.
fn display_event(item: &crate::Display) -> Event {
    let data = serde_json::json!({ "data": item.data }).to_string();
    Event::default().event("display").data(data)
}

async fn cancel_run(
    State(state): Shared,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    if state.cancel_run(&run_id) {
        Ok((
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({ "cancelled": run_id })),
        )
            .into_response())
    } else {
        Err(ApiError::not_found("run in flight", &run_id))
    }
}

/// A sandbox or session to create.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"runtime": "python", "requirements": ["humanize"], "env": {"K": "v"},
    "limits": {"memory_bytes": 268435456}, "session": false})))]
pub(super) struct CreateRequest {
    #[serde(default)]
    runtime: Option<String>,
    /// Packages installed at creation (PEP 508, or `name@range` for JavaScript).
    #[serde(default)]
    requirements: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// The default limits of its executions.
    #[serde(default)]
    limits: LimitsRequest,
    /// On `/sandboxes`: make it a session (one live interpreter).
    #[serde(default)]
    session: bool,
    /// Start the session from this session snapshot (`POST /sessions/{id}/snapshot`):
    /// variables, imports and files as they were. Its runtime is the snapshot's; no
    /// `requirements` or `env` with it.
    #[serde(default)]
    from_snapshot: Option<String>,
    /// Host tools every execution in it may call (each execution must then stream): as
    /// an execution's `tools`, which are added to these (and win on a name).
    #[serde(default)]
    #[schema(max_items = 64)]
    tools: Vec<ToolDeclaration>,
    /// Hosts every execution in it may reach over HTTP, within the server's
    /// `--allow-net`; an execution's own `allow_net` replaces them.
    #[serde(default)]
    #[schema(max_items = 64)]
    allow_net: Vec<String>,
}

/// How many copies `POST /sessions/{id}/fork` makes.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"count": 3})))]
pub(super) struct ForkRequest {
    /// 1 to 16. Default: 1.
    #[serde(default)]
    count: Option<u32>,
}

/// The most forks one request makes.
const MAX_FORKS: u32 = 16;

fn snapshot_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no session snapshot `{id}`"),
    )
}

async fn snapshot_session(
    State(state): Shared,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let sandbox = state.sandbox(&id)?;
    if sandbox.session.is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            format!("`{id}` is a sandbox, not a session: only sessions have snapshots"),
        ));
    }
    let _hold = sandbox.busy.clone().lock_owned().await;
    let config = state.dvm.config().clone();
    let info = super::blocking(move || {
        let session = sandbox
            .session
            .as_ref()
            .ok_or_else(|| crate::Error::InvalidInput("only sessions have snapshots".into()))?;
        let snapshot = session.snapshot()?;
        crate::session_snapshot_info(&config, &snapshot)?
            .ok_or_else(|| crate::Error::InvalidInput("the snapshot was not kept".into()))
    })
    .await?;
    let mut body = serde_json::to_value(info).unwrap_or_default();
    body["session_id"] = id.into();
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

async fn fork_session(
    state: Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ForkRequest = json_or_default(&headers, &body)?;
    let count = request.count.unwrap_or(1);
    if !(1..=MAX_FORKS).contains(&count) {
        return Err(ApiError::bad_request(format!(
            "count must be from 1 to {MAX_FORKS}, not {count}"
        )));
    }
    let State(state) = state;
    let parent = state.sandbox(&id)?;
    let limits = parent.limits.clone();
    let _hold = parent.busy.clone().lock_owned().await;
    let forks = state
        .copy_session(
            super::SessionCopy::Fork(parent.clone()),
            count as usize,
            limits,
        )
        .await?;
    let sessions: Vec<serde_json::Value> = forks.iter().map(|s| s.describe()).collect();
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({ "sessions": sessions })),
    )
        .into_response())
}

async fn show_snapshot(State(state): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let config = state.dvm.config().clone();
    let lookup = id.clone();
    match super::blocking(move || crate::session_snapshot_info(&config, &lookup)).await? {
        Some(info) => Ok(axum::Json(info).into_response()),
        None => Err(snapshot_not_found(&id)),
    }
}

async fn delete_snapshot(
    State(state): Shared,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let home = state.dvm.config().home.clone();
    let lookup = id.clone();
    if super::blocking(move || crate::delete_session_snapshot(&home, &lookup)).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(snapshot_not_found(&id))
    }
}

async fn create_sandbox(
    state: Shared,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = json_or_default::<CreateRequest>(&headers, &body)?;
    let session = request.session;
    create(state, request, session).await
}

async fn create_session(
    state: Shared,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    create(state, json_or_default(&headers, &body)?, true).await
}

/// A JSON body (declared `application/json`), or the default for an empty one.
fn json_or_default<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, ApiError> {
    let empty = body.iter().all(u8::is_ascii_whitespace);
    super::access::require_json(headers, body.is_empty())?;
    if empty {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the body is not valid JSON for this request: {e}"))
    })
}

async fn create(
    State(state): Shared,
    request: CreateRequest,
    session: bool,
) -> Result<Response, ApiError> {
    let limits = request
        .limits
        .apply(&default_limits(&state), &state.config)?;
    if request.tools.len() > MAX_DECLARED_TOOLS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            format!("at most {MAX_DECLARED_TOOLS} tools may be declared"),
        ));
    }
    // Checked now (names, schemas, hosts), so that a bad declaration creates nothing.
    let (unused, _) = tokio::sync::mpsc::unbounded_channel::<Event>();
    client_tools(&state, "", &request.tools, unused.downgrade())?;
    let doors = super::SandboxDoors {
        tools: request.tools.clone(),
        net: net_policy(&request.allow_net, &state)?,
    };
    if let Some(snapshot) = request.from_snapshot {
        if !session {
            return Err(ApiError::bad_request(
                "from_snapshot makes a session: POST /sessions, or `session: true`",
            ));
        }
        if !request.requirements.is_empty() || !request.env.is_empty() {
            return Err(ApiError::bad_request(
                "a session from a snapshot has the snapshot's packages and environment: \
                 leave out requirements and env",
            ));
        }
        let config = state.dvm.config().clone();
        let lookup = snapshot.clone();
        let info = super::blocking(move || crate::session_snapshot_info(&config, &lookup))
            .await?
            .ok_or_else(|| snapshot_not_found(&snapshot))?;
        if let Some(runtime) = &request.runtime
            && *runtime != info.runtime
        {
            return Err(ApiError::bad_request(format!(
                "the snapshot is of `{}`, not `{runtime}`",
                info.runtime
            )));
        }
        let copy = super::SessionCopy::Snapshot {
            id: snapshot,
            runtime: info.runtime,
        };
        let made = state.copy_session(copy, 1, limits).await?;
        for sandbox in &made {
            sandbox.set_doors(doors.clone());
        }
        let describe = made.first().map(|s| s.describe()).unwrap_or_default();
        return Ok((StatusCode::CREATED, axum::Json(describe)).into_response());
    }
    let sandbox = state
        .create_sandbox(
            request.runtime.as_deref().unwrap_or("python"),
            session,
            request.requirements,
            request.env.into_iter().collect(),
            limits,
        )
        .await?;
    sandbox.set_doors(doors);
    Ok((StatusCode::CREATED, axum::Json(sandbox.describe())).into_response())
}

async fn list_sandboxes(State(state): Shared) -> impl IntoResponse {
    let all: Vec<serde_json::Value> = state
        .sandboxes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .map(|s| s.describe())
        .collect();
    axum::Json(all)
}

async fn show_sandbox(State(state): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(axum::Json(state.sandbox(&id)?.describe()).into_response())
}

async fn delete_sandbox(
    State(state): Shared,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.close_sandbox(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn execute_in(
    State(state): Shared,
    Path(id): Path<String>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ExecuteRequest>,
) -> Result<Response, ApiError> {
    let sandbox = state.sandbox(&id)?;
    if request
        .runtime
        .as_ref()
        .is_some_and(|r| *r != sandbox.runtime)
    {
        return Err(ApiError::bad_request(format!(
            "this sandbox runs `{}`; leave out `runtime`",
            sandbox.runtime
        )));
    }
    if !request.requirements.is_empty() {
        return Err(ApiError::bad_request(
            "install packages into a sandbox with POST …/packages, or at creation",
        ));
    }
    if request.auto_deps && sandbox.session.is_some() {
        return Err(ApiError::bad_request(
            "auto_deps applies to one-shot runs and sandboxes; install into a session with \
             POST …/packages",
        ));
    }
    let mut input = request.input(&sandbox.limits, &state)?;
    within_session(&sandbox, &input.limits)?;
    let uploads = request.uploads()?;
    let hold = sandbox.busy.clone().lock_owned().await;
    input.limits = {
        let sandbox = sandbox.clone();
        let mut limits = input.limits;
        super::blocking(move || {
            super::write_within(&sandbox.workspace, &sandbox.limits, &uploads)?;
            super::fit_to_workspace(&sandbox.workspace, &sandbox.limits, &mut limits)?;
            Ok::<_, ApiError>(limits)
        })
        .await?
    };
    input.env = sandbox.env.iter().cloned().chain(input.env).collect();
    input.workspace = Some(sandbox.workspace.clone());
    input.packages = sandbox
        .packages
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let job = Execution {
        runtime: sandbox.runtime.clone(),
        code: request.code.clone(),
        name: request.name.clone().unwrap_or_default(),
        input,
        sandbox: Some(sandbox.clone()),
        hold: Some(hold),
        requirements: Vec::new(),
        auto_deps: request.auto_deps,
        run_id: request.run_id.clone(),
        on_start: None,
    };
    let stream = wants_stream(&request, &query, &headers);
    // What the sandbox was created with, and the execution's own on top.
    let doors = sandbox.doors();
    let mut tools: Vec<ToolDeclaration> = doors
        .tools
        .into_iter()
        .filter(|declared| !request.tools.iter().any(|own| own.name == declared.name))
        .collect();
    tools.extend(request.tools.iter().cloned());
    let mut job = job;
    if job.input.net.is_none() {
        job.input.net = doors.net;
    }
    respond(state, job, stream, &tools).await
}

/// A session's calls stay within the memory it reserved when it was made.
pub(super) fn within_session(sandbox: &super::Sandbox, limits: &Limits) -> Result<(), ApiError> {
    if sandbox.session.is_some() && limits.memory_bytes > sandbox.limits.memory_bytes {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "over_maximum",
            format!(
                "memory_bytes of {} is over the {} bytes this session reserved when it was \
                 made; create the session with a larger limits.memory_bytes",
                limits.memory_bytes, sandbox.limits.memory_bytes
            ),
        ));
    }
    Ok(())
}

async fn cancel_in(State(state): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let sandbox = state.sandbox(&id)?;
    let running = sandbox
        .running
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    match running {
        Some(cancel) => {
            cancel.cancel();
            Ok(StatusCode::ACCEPTED.into_response())
        }
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "idle",
            "nothing is running in this sandbox",
        )),
    }
}

/// Packages to install into a sandbox.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"requirements": ["humanize"]})))]
pub(super) struct InstallRequest {
    requirements: Vec<String>,
}

async fn install_in(
    State(state): Shared,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<InstallRequest>,
) -> Result<Response, ApiError> {
    let sandbox = state.sandbox(&id)?;
    if sandbox.session.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "session_packages",
            "a session's packages are fixed when it is created (its interpreter has them on \
             sys.path from the start); create it with `requirements`",
        ));
    }
    let runtime = state.runtime(&sandbox.runtime).await?;
    // Not beside an execution or another install: each reads the set the other replaces.
    let _hold = sandbox.busy.clone().lock_owned().await;
    let _permit = state.limiter.acquire().await?;
    let current = sandbox
        .packages
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let set = super::install_more(runtime, current.as_ref(), request.requirements).await?;
    let body = serde_json::json!({
        "installed": set.installed.iter().map(|p| serde_json::json!({
            "name": p.name, "version": p.version, "from_store": p.from_store,
        })).collect::<Vec<_>>(),
        "built_in": set.built_in,
    });
    *sandbox
        .packages
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(set);
    Ok(axum::Json(body).into_response())
}

/// 404 unless the sandbox's workspace has something at `path` (blocking).
fn existing(sandbox: &super::Sandbox, path: &str) -> Result<(), ApiError> {
    if sandbox.workspace.exists(path)? {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no file `{path}` in this workspace"),
    ))
}

async fn list_files(State(state): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let sandbox = state.sandbox(&id)?;
    let entries = super::blocking(move || sandbox.workspace.list()).await?;
    Ok(axum::Json(entries).into_response())
}

async fn read_file(
    State(state): Shared,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let sandbox = state.sandbox(&id)?;
    let limit = state.config.max_body_bytes as u64;
    let bytes = super::blocking(move || {
        existing(&sandbox, &path)?;
        Ok::<_, ApiError>(sandbox.workspace.read(&path, limit)?)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn write_file(
    State(state): Shared,
    Path((id, path)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let sandbox = state.sandbox(&id)?;
    let size = body.len();
    let written = path.clone();
    // Not beside an execution: the workspace's quota counts what both write.
    let _hold = sandbox.busy.clone().lock_owned().await;
    super::blocking(move || {
        super::write_within(
            &sandbox.workspace,
            &sandbox.limits,
            &[(written, body.to_vec())],
        )
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({ "path": path, "size": size })),
    )
        .into_response())
}

async fn delete_file(
    State(state): Shared,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let sandbox = state.sandbox(&id)?;
    super::blocking(move || {
        existing(&sandbox, &path)?;
        Ok::<_, ApiError>(sandbox.workspace.remove(&path)?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
