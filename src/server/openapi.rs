//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the request types the
//! handlers parse and the response shapes they answer with (`tests/all/openapi.rs` checks
//! every route's real answers against it and that every request it allows is accepted).
//!
//! The request types are the handlers' own (`ExecuteRequest`, `CreateRequest`,
//! `LimitsRequest`, Judge0's `SubmissionRequest`…). The response types below are the JSON
//! views the handlers write; each refuses unknown properties, so a field a handler adds
//! without adding it here fails the validation test.

#![allow(dead_code)] // The view types exist for their schemas; handlers build the JSON.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::LimitsRequest;
use super::api::{CreateRequest, ExecuteRequest, ForkRequest, InstallRequest};
use super::judge0::{Batch, StatusBody, SubmissionRequest};

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(Doc::openapi()).unwrap_or_else(|e| {
        serde_json::json!({ "openapi": "3.1.0", "info": { "title": "dvm", "version": env!("CARGO_PKG_VERSION"), "description": format!("the document could not be generated: {e}") }, "paths": {} })
    })
}

/// The error body of the native API (and of the access checks on every route).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Error)]
pub(super) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ErrorDetail {
    /// A stable, machine-readable kind (`bad_request`, `not_found`, `over_maximum`…).
    kind: String,
    /// What went wrong and what to do.
    message: String,
}

/// How one run ended, with the run's id and runtime.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RunResult {
    status: RunStatus,
    /// The exit code for `ok` and `error`; null when a limit or a trap ended the run.
    exit_code: Option<i32>,
    /// The kept stdout (at most the output cap), as UTF-8 (invalid bytes replaced).
    stdout: String,
    stderr: String,
    /// Every byte written to stdout, kept or not.
    stdout_bytes: u64,
    stderr_bytes: u64,
    truncated: Truncated,
    limit: Option<LimitKind>,
    fuel_used: u64,
    duration_ms: f64,
    memory_peak_bytes: u64,
    /// The trap message when the guest crashed or a trap stopped it.
    trap: Option<String>,
    /// Files the run created or changed in its workspace.
    files: Vec<OutputFile>,
    cache: CacheStatus,
    cache_key: Option<String>,
    /// What the run displayed (figures, rich values), in order; absent when nothing was.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    display: Vec<DisplayItem>,
    /// The host tools the run called, in order; absent when it called none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallRecord>,
    /// The HTTP requests the guest made through the server, in order; absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    net: Vec<NetRecord>,
    /// The run's id (also in the `X-Dvm-Run-Id` header): the client's `run_id`, or a
    /// new UUID v4.
    run_id: String,
    runtime: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum RunStatus {
    Ok,
    Error,
    Limit,
    Crashed,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum LimitKind {
    Deadline,
    Fuel,
    Memory,
    Table,
    Output,
    Cancelled,
    Disk,
    Files,
    #[serde(rename = "tool_calls")]
    ToolCalls,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum CacheStatus {
    Off,
    Hit,
    Miss,
}

/// One call of a host tool.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ToolCall)]
pub(super) struct ToolCallRecord {
    name: String,
    request_bytes: u64,
    response_bytes: u64,
    /// Wall-clock time of the call, in milliseconds.
    ms: f64,
    /// Why the call failed; null when it succeeded.
    error: Option<String>,
}

/// One HTTP request of the guest (see `allow_net`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NetRequest)]
pub(super) struct NetRecord {
    method: String,
    /// The URL the guest asked for.
    url: String,
    /// The response's status; null when none came back (refused or failed).
    status: Option<u16>,
    /// Bytes of the response body handed to the guest.
    bytes: u64,
    /// Wall-clock time of the request, in milliseconds.
    ms: f64,
    /// Why the request was refused or failed; null when a response came back.
    error: Option<String>,
}

/// One display item: the same value in several forms, keyed by MIME type (`text/plain`,
/// `text/html`, `image/png` as base64, `application/json` as JSON…), as Jupyter's bundles.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DisplayItem {
    #[schema(value_type = Object)]
    data: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Truncated {
    stdout: bool,
    stderr: bool,
    /// Display items were dropped at the stdout cap; absent when none were.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    display: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OutputFile {
    path: String,
    size: u64,
    /// Hex blake3 of the contents; null for a sparse file past the disk quota.
    blake3: Option<String>,
}

/// `/health`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Health {
    status: HealthStatus,
    version: String,
    sessions: u64,
    sandboxes: u64,
    running: u64,
    queued: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum HealthStatus {
    Ok,
    ShuttingDown,
}

/// One entry of `/runtimes`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RuntimeInfo {
    id: String,
    language: String,
    version: String,
    installed: bool,
    /// Whether sessions (one live interpreter) can run it.
    sessions: bool,
}

/// A sandbox or session.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SandboxInfo {
    #[schema(pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")]
    id: String,
    kind: SandboxKind,
    runtime: String,
    /// False once a session's interpreter has gone.
    open: bool,
    /// Executions a session has served; null for a sandbox.
    calls: Option<u64>,
    /// Names of the packages installed in it.
    packages: Vec<String>,
    age_ms: u64,
    idle_ms: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum SandboxKind {
    Sandbox,
    Session,
}

/// A session snapshot (`POST /sessions/{id}/snapshot`, `GET /snapshots/{id}`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SnapshotInfo {
    /// The snapshot's id: `from_snapshot` of `POST /sessions` resumes it.
    #[schema(pattern = "^[0-9a-f]{32}$")]
    id: String,
    runtime: String,
    version: String,
    /// blake3 of the module the session ran; only it can resume the snapshot.
    module: String,
    memory_bytes: u64,
    /// 64 KiB chunks of memory that differ from the module's initial memory (only these
    /// are stored).
    changed_chunks: u64,
    /// Files and directories of its workspace.
    files: u64,
    /// Unix seconds.
    created: u64,
    /// The session it was taken of (on `POST /sessions/{id}/snapshot` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
}

/// `POST /sessions/{id}/fork`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Forked {
    /// The new sessions, each going on from where the session stood.
    sessions: Vec<SandboxInfo>,
}

/// `POST /runs/{run_id}/cancel`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Cancelled {
    /// The run's id.
    cancelled: String,
}

/// The answer to a tool call: exactly one of `result` (any JSON, handed to the guest) and
/// `error` (a message the guest raises as `dvm_tools.ToolError`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"result": {"rows": 3}})))]
pub(super) struct ToolAnswer {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// What `POST …/packages` installed.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Installed {
    installed: Vec<InstalledPackage>,
    /// Requirements the runtime satisfies with its built-in packages.
    built_in: Vec<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct InstalledPackage {
    name: String,
    version: String,
    /// Already unpacked in the store before this install.
    from_store: bool,
}

/// One workspace entry.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FileEntry {
    /// Relative to the workspace, `/`-separated.
    path: String,
    kind: FileKind,
    size: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum FileKind {
    File,
    Dir,
    Symlink,
}

/// A file written by `PUT …/files/{path}`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Written {
    path: String,
    size: u64,
}

/// A Judge0 error: `{"error": "…"}`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Judge0Error {
    error: String,
}

/// Judge0's answer to an invalid submission: each field's problems.
#[derive(Serialize, ToSchema)]
pub(super) struct Judge0Problems(BTreeMap<String, Vec<String>>);

/// An error on a Judge0 route: Judge0's shape, or the native one from the access checks.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(super) enum Judge0Failure {
    Judge0(Judge0Error),
    Native(ErrorBody),
}

/// One entry of `/languages`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Language {
    id: u32,
    /// What actually runs it.
    name: String,
}

/// `/languages/{id}`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LanguageDetail {
    id: u32,
    name: String,
    is_archived: bool,
    source_file: String,
    /// Always null: dvm's languages are not compiled.
    compile_cmd: Option<String>,
    run_cmd: String,
}

/// `/about`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct About {
    /// The Judge0 version whose API this follows.
    version: String,
    dvm_version: String,
    homepage: String,
    source_code: String,
    maintainer: String,
}

/// `/config_info`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigInfo {
    maintenance_mode: bool,
    enable_wait_result: bool,
    enable_compiler_options: bool,
    allowed_languages_for_compile_options: Vec<String>,
    enable_command_line_arguments: bool,
    enable_submission_delete: bool,
    enable_callbacks: bool,
    callbacks_max_tries: u64,
    callbacks_timeout: f64,
    enable_additional_files: bool,
    max_queue_size: u64,
    cpu_time_limit: f64,
    max_cpu_time_limit: f64,
    cpu_extra_time: f64,
    max_cpu_extra_time: f64,
    wall_time_limit: f64,
    max_wall_time_limit: f64,
    memory_limit: f64,
    max_memory_limit: f64,
    stack_limit: u64,
    max_stack_limit: u64,
    max_processes_and_or_threads: u64,
    max_max_processes_and_or_threads: u64,
    enable_per_process_and_thread_time_limit: bool,
    allow_enable_per_process_and_thread_time_limit: bool,
    enable_per_process_and_thread_memory_limit: bool,
    allow_enable_per_process_and_thread_memory_limit: bool,
    max_file_size: u64,
    max_max_file_size: u64,
    number_of_runs: u64,
    max_number_of_runs: u64,
    redirect_stderr_to_stdout: bool,
    max_extract_size: u64,
    enable_batched_submissions: bool,
    max_submission_batch_size: u64,
    submission_cache_duration: f64,
    use_docs_as_homepage: bool,
    allow_enable_network: bool,
    enable_network: bool,
}

/// One entry of `/workers`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Worker {
    queue: String,
    size: u64,
    available: u64,
    idle: u64,
    working: u64,
    paused: u64,
    failed: u64,
}

/// A submission with the fields asked for by `fields` (`*` for all; by default token,
/// time, memory, stdout, stderr, compile_output, message and status). Texts are base64
/// with `base64_encoded=true`. A submission created without `wait` answers with its token
/// alone.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Submission {
    #[schema(pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")]
    token: Option<String>,
    source_code: Option<String>,
    language_id: Option<u32>,
    stdin: Option<String>,
    expected_output: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    compile_output: Option<String>,
    message: Option<String>,
    status: Option<StatusBody>,
    status_id: Option<u32>,
    created_at: Option<String>,
    finished_at: Option<String>,
    /// Seconds, three decimals.
    time: Option<String>,
    wall_time: Option<String>,
    /// KB.
    memory: Option<u64>,
    exit_code: Option<i32>,
    exit_signal: Option<i32>,
    cpu_time_limit: Option<f64>,
    cpu_extra_time: Option<f64>,
    wall_time_limit: Option<f64>,
    memory_limit: Option<f64>,
    stack_limit: Option<f64>,
    max_processes_and_or_threads: Option<f64>,
    enable_per_process_and_thread_time_limit: Option<bool>,
    enable_per_process_and_thread_memory_limit: Option<bool>,
    max_file_size: Option<f64>,
    number_of_runs: Option<u32>,
    command_line_arguments: Option<String>,
    redirect_stderr_to_stdout: Option<bool>,
    compiler_options: Option<String>,
    callback_url: Option<String>,
    additional_files: Option<String>,
    enable_network: Option<bool>,
    language: Option<Language>,
}

/// One answer of `POST /submissions/batch`: a token, an error, or the field problems.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(super) enum BatchEntry {
    Token(Token),
    Error(Judge0Error),
    Problems(Judge0Problems),
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Token {
    #[schema(pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")]
    token: String,
}

/// `GET /submissions/batch`: each token's submission, null for one not kept.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Submissions {
    submissions: Vec<Option<Submission>>,
}

/// Query options of the Judge0 submission routes.
#[derive(Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SubmissionQuery {
    /// `true` (or `1`, `yes`): texts in the body and the answer are base64.
    base64_encoded: Option<bool>,
    /// `true`: answer when the run has finished, with the submission.
    wait: Option<bool>,
    /// Comma-separated fields to show, or `*` for all.
    fields: Option<String>,
}

/// Query options of the submission routes that read.
#[derive(Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ReadQuery {
    /// `true` (or `1`, `yes`): texts in the answer are base64.
    base64_encoded: Option<bool>,
    /// Comma-separated fields to show, or `*` for all.
    fields: Option<String>,
}

/// Query options of `GET /submissions/batch`.
#[derive(Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct BatchQuery {
    /// Comma-separated tokens (or a `tokens` header).
    tokens: Option<String>,
    base64_encoded: Option<bool>,
    fields: Option<String>,
}

/// `?stream=true` on executions.
#[derive(Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct StreamParam {
    /// Answer with Server-Sent Events (`start`, `stdout`, `stderr`, then `result` or
    /// `error`), as `stream: true` in the body or `Accept: text/event-stream` do.
    stream: Option<bool>,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // Creating a sandbox or session takes an empty body too.
        for path in ["/sandboxes", "/sessions"] {
            if let Some(body) = openapi
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.post.as_mut())
                .and_then(|operation| operation.request_body.as_mut())
            {
                body.required = Some(utoipa::openapi::Required::False);
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "With `dvm serve --token`: `Authorization: Bearer TOKEN` (or Judge0's \
                         `X-Auth-Token: TOKEN`) on every route but /health.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The operations, one function each (paths and their parameters, bodies and answers).
mod ops {
    #![allow(clippy::unused_async, unused)]

    use super::*;

    /// Liveness and counts of sessions, sandboxes and runs.
    #[utoipa::path(get, path = "/health", tag = "native", security(()),
        responses((status = 200, description = "Health", body = Health),
                  (status = "4XX", description = "Refused (Host or Origin)", body = ErrorBody)))]
    fn health() {}

    /// Prometheus metrics.
    #[utoipa::path(get, path = "/metrics", tag = "native",
        responses((status = 200, description = "Prometheus's text format 0.0.4, or OpenMetrics when `Accept` asks for `application/openmetrics-text`",
                   content((String = "text/plain; version=0.0.4; charset=utf-8"), (String = "application/openmetrics-text; version=1.0.0; charset=utf-8"))),
                  (status = "4XX", description = "Refused", body = ErrorBody)))]
    fn metrics() {}

    /// This document.
    #[utoipa::path(get, path = "/openapi.json", tag = "native",
        responses((status = 200, description = "OpenAPI 3.1", body = Object),
                  (status = "4XX", description = "Refused", body = ErrorBody)))]
    fn openapi() {}

    /// The runtimes.
    #[utoipa::path(get, path = "/runtimes", tag = "native",
        responses((status = 200, description = "Each runtime", body = Vec<RuntimeInfo>),
                  (status = "4XX", description = "Refused", body = ErrorBody),
                  (status = "5XX", description = "Failed", body = ErrorBody)))]
    fn runtimes() {}

    /// Run code once in a fresh sandbox.
    #[utoipa::path(post, path = "/execute", tag = "native", params(StreamParam),
        request_body = ExecuteRequest,
        responses((status = 200, description = "The outcome, or an event stream", headers(("x-dvm-run-id" = String, description = "The run's id")),
                   content((RunResult = "application/json"), (String = "text/event-stream"))),
                  (status = "4XX", description = "Refused", body = ErrorBody),
                  (status = "5XX", description = "Failed", body = ErrorBody)))]
    fn execute() {}

    /// Cancel a run in flight.
    #[utoipa::path(post, path = "/runs/{run_id}/cancel", tag = "native",
        params(("run_id" = String, Path, description = "The run's id")),
        responses((status = 202, description = "Cancelled", body = Cancelled),
                  (status = "4XX", description = "No such run in flight (404), or refused", body = ErrorBody)))]
    fn cancel_run() {}

    /// Answer a host tool call of a streamed run: the `id` of its `tool_call` event.
    #[utoipa::path(post, path = "/runs/{run_id}/tool_results/{call_id}", tag = "native",
        params(("run_id" = String, Path, description = "The run's id"),
               ("call_id" = String, Path, description = "The `id` of the `tool_call` event")),
        request_body(content = ToolAnswer, content_type = "application/json"),
        responses((status = 204, description = "Handed to the waiting call"),
                  (status = "4XX", description = "No such call waiting (404), or not one of the two answers (400)", body = ErrorBody)))]
    fn tool_result() {}

    /// Snapshot a session between executions: its memory, clock and files, signed under the
    /// server's home. It survives a restart; `POST /sessions` with `from_snapshot` resumes
    /// it.
    #[utoipa::path(post, path = "/sessions/{id}/snapshot", tag = "native",
        params(("id" = String, Path, description = "The session's id")),
        responses((status = 201, description = "Taken", body = SnapshotInfo),
                  (status = "4XX", description = "No such session (404), a sandbox (422), or refused", body = ErrorBody),
                  (status = "5XX", description = "Failed", body = ErrorBody)))]
    fn sessions_snapshot() {}

    /// Fork a session into `count` new sessions that go on from where it stands, each with
    /// a copy of its files.
    #[utoipa::path(post, path = "/sessions/{id}/fork", tag = "native",
        params(("id" = String, Path, description = "The session's id")),
        request_body(content = ForkRequest, content_type = "application/json",
            description = "Optional: an empty body makes one fork"),
        responses((status = 201, description = "Forked", body = Forked),
                  (status = "4XX", description = "No such session (404), a sandbox, over the session cap, or refused", body = ErrorBody),
                  (status = "5XX", description = "Failed", body = ErrorBody)))]
    fn sessions_fork() {}

    /// Describe a session snapshot (checked as a resume checks it).
    #[utoipa::path(get, path = "/snapshots/{id}", tag = "native",
        params(("id" = String, Path, description = "The snapshot's id")),
        responses((status = 200, description = "The snapshot", body = SnapshotInfo),
                  (status = "4XX", description = "No such snapshot (404), a malformed id, or refused", body = ErrorBody)))]
    fn snapshots_show() {}

    /// Remove a session snapshot.
    #[utoipa::path(delete, path = "/snapshots/{id}", tag = "native",
        params(("id" = String, Path, description = "The snapshot's id")),
        responses((status = 204, description = "Removed"),
                  (status = "4XX", description = "No such snapshot (404), or a malformed id", body = ErrorBody)))]
    fn snapshots_delete() {}

    macro_rules! sandbox_ops {
        ($base:literal, $one:literal, $execute_path:literal, $cancel_path:literal,
         $install_path:literal, $files_path:literal, $file_path:literal, $list:ident, $create:ident, $show:ident, $close:ident,
         $execute:ident, $cancel:ident, $install:ident, $files:ident, $read:ident,
         $write:ident, $remove:ident) => {
            /// List sandboxes and sessions (both kinds, on either path).
            #[utoipa::path(get, path = $base, tag = "native",
                responses((status = 200, description = "Each one", body = Vec<SandboxInfo>),
                          (status = "4XX", description = "Refused", body = ErrorBody)))]
            fn $list() {}

            /// Create a sandbox or session (`POST /sandboxes` with `session: true` makes a
            /// session; `POST /sessions` always does). The body may be empty (all defaults).
            #[utoipa::path(post, path = $base, tag = "native",
                request_body(content = CreateRequest, content_type = "application/json",
                    description = "Optional: an empty body takes every default"),
                responses((status = 201, description = "Created", body = SandboxInfo),
                          (status = "4XX", description = "Refused", body = ErrorBody),
                          (status = "5XX", description = "Failed", body = ErrorBody)))]
            fn $create() {}

            /// Describe a sandbox or session.
            #[utoipa::path(get, path = $one, tag = "native",
                params(("id" = String, Path)),
                responses((status = 200, description = "It", body = SandboxInfo),
                          (status = "4XX", description = "Not found (404), or refused", body = ErrorBody)))]
            fn $show() {}

            /// Close it, cancelling its run.
            #[utoipa::path(delete, path = $one, tag = "native",
                params(("id" = String, Path)),
                responses((status = 204, description = "Closed"),
                          (status = "4XX", description = "Not found (404), or refused", body = ErrorBody)))]
            fn $close() {}

            /// Execute code in it (a session keeps its interpreter's state).
            #[utoipa::path(post, path = $execute_path, tag = "native",
                params(("id" = String, Path), StreamParam),
                request_body = ExecuteRequest,
                responses((status = 200, description = "The outcome, or an event stream", headers(("x-dvm-run-id" = String)),
                           content((RunResult = "application/json"), (String = "text/event-stream"))),
                          (status = "4XX", description = "Refused", body = ErrorBody),
                          (status = "5XX", description = "Failed", body = ErrorBody)))]
            fn $execute() {}

            /// Cancel its running execution.
            #[utoipa::path(post, path = $cancel_path, tag = "native",
                params(("id" = String, Path)),
                responses((status = 202, description = "Cancelled"),
                          (status = "4XX", description = "Nothing running (409), not found (404), or refused", body = ErrorBody)))]
            fn $cancel() {}

            /// Install packages for its later executions (sandboxes; a session's are fixed at creation: 409).
            #[utoipa::path(post, path = $install_path, tag = "native",
                params(("id" = String, Path)),
                request_body = InstallRequest,
                responses((status = 200, description = "What was installed", body = Installed),
                          (status = "4XX", description = "Refused", body = ErrorBody),
                          (status = "5XX", description = "Failed", body = ErrorBody)))]
            fn $install() {}

            /// List its files.
            #[utoipa::path(get, path = $files_path, tag = "native",
                params(("id" = String, Path)),
                responses((status = 200, description = "Every entry", body = Vec<FileEntry>),
                          (status = "4XX", description = "Refused", body = ErrorBody),
                          (status = "5XX", description = "Failed", body = ErrorBody)))]
            fn $files() {}

            /// Download a file.
            #[utoipa::path(get, path = $file_path, tag = "native",
                params(("id" = String, Path), ("path" = String, Path, description = "Relative to the workspace; may contain `/`")),
                responses((status = 200, description = "Its bytes", body = Vec<u8>, content_type = "application/octet-stream"),
                          (status = "4XX", description = "No such file (404), or refused", body = ErrorBody),
                          (status = "5XX", description = "Failed", body = ErrorBody)))]
            fn $read() {}

            /// Upload a file (the body is its bytes), within the workspace's quota.
            #[utoipa::path(put, path = $file_path, tag = "native",
                params(("id" = String, Path), ("path" = String, Path, description = "Relative to the workspace; may contain `/`")),
                request_body(content = Vec<u8>, content_type = "application/octet-stream"),
                responses((status = 201, description = "Written", body = Written),
                          (status = "4XX", description = "Refused", body = ErrorBody),
                          (status = "5XX", description = "Failed", body = ErrorBody)))]
            fn $write() {}

            /// Remove a file.
            #[utoipa::path(delete, path = $file_path, tag = "native",
                params(("id" = String, Path), ("path" = String, Path, description = "Relative to the workspace; may contain `/`")),
                responses((status = 204, description = "Removed"),
                          (status = "4XX", description = "No such file (404), or refused", body = ErrorBody),
                          (status = "5XX", description = "Failed", body = ErrorBody)))]
            fn $remove() {}
        };
    }

    sandbox_ops!(
        "/sandboxes",
        "/sandboxes/{id}",
        "/sandboxes/{id}/execute",
        "/sandboxes/{id}/cancel",
        "/sandboxes/{id}/packages",
        "/sandboxes/{id}/files",
        "/sandboxes/{id}/files/{path}",
        sandboxes_list,
        sandboxes_create,
        sandboxes_show,
        sandboxes_close,
        sandboxes_execute,
        sandboxes_cancel,
        sandboxes_install,
        sandboxes_files,
        sandboxes_read,
        sandboxes_write,
        sandboxes_remove
    );
    sandbox_ops!(
        "/sessions",
        "/sessions/{id}",
        "/sessions/{id}/execute",
        "/sessions/{id}/cancel",
        "/sessions/{id}/packages",
        "/sessions/{id}/files",
        "/sessions/{id}/files/{path}",
        sessions_list,
        sessions_create,
        sessions_show,
        sessions_close,
        sessions_execute,
        sessions_cancel,
        sessions_install,
        sessions_files,
        sessions_read,
        sessions_write,
        sessions_remove
    );

    /// Judge0: the languages.
    #[utoipa::path(get, path = "/languages", tag = "judge0",
        responses((status = 200, description = "Each language", body = Vec<Language>),
                  (status = "4XX", description = "Refused", body = ErrorBody)))]
    fn languages() {}

    /// Judge0: one language.
    #[utoipa::path(get, path = "/languages/{id}", tag = "judge0",
        params(("id" = u32, Path)),
        responses((status = 200, description = "It", body = LanguageDetail),
                  (status = 400, description = "The id is not a number", body = String, content_type = "text/plain; charset=utf-8"),
                  (status = 404, description = "No such language", body = Judge0Error),
                  (status = "4XX", description = "Refused", body = ErrorBody)))]
    fn language() {}

    /// Judge0: the status table.
    #[utoipa::path(get, path = "/statuses", tag = "judge0",
        responses((status = 200, description = "Each status", body = Vec<StatusBody>),
                  (status = "4XX", description = "Refused", body = ErrorBody)))]
    fn statuses() {}

    /// Judge0: about.
    #[utoipa::path(get, path = "/about", tag = "judge0",
        responses((status = 200, description = "Versions", body = About),
                  (status = "4XX", description = "Refused", body = ErrorBody)))]
    fn about() {}

    /// Judge0: configuration (limits and switches).
    #[utoipa::path(get, path = "/config_info", tag = "judge0",
        responses((status = 200, description = "The configuration", body = ConfigInfo),
                  (status = "4XX", description = "Refused", body = ErrorBody)))]
    fn config_info() {}

    /// Judge0: the worker queue.
    #[utoipa::path(get, path = "/workers", tag = "judge0",
        responses((status = 200, description = "The one queue", body = Vec<Worker>),
                  (status = "4XX", description = "Refused", body = ErrorBody)))]
    fn workers() {}

    /// Judge0: create a submission.
    #[utoipa::path(post, path = "/submissions", tag = "judge0", params(SubmissionQuery),
        request_body = SubmissionRequest,
        responses((status = 201, description = "Its token, or with `wait=true` the finished submission", body = Submission),
                  (status = 422, description = "Field problems", body = Judge0Problems),
                  (status = "4XX", description = "Refused (400 for a bad body or fields, 415 for a body not declared JSON)", body = Judge0Failure),
                  (status = "5XX", description = "Queue or memory for submissions full (503)", body = Judge0Error)))]
    fn submissions_create() {}

    /// Judge0: a submission.
    #[utoipa::path(get, path = "/submissions/{token}", tag = "judge0",
        params(("token" = String, Path), ReadQuery),
        responses((status = 200, description = "It", body = Submission),
                  (status = "4XX", description = "Not kept (404), bad fields (400), or refused", body = Judge0Failure)))]
    fn submissions_show() {}

    /// Judge0: delete a finished submission.
    #[utoipa::path(delete, path = "/submissions/{token}", tag = "judge0",
        params(("token" = String, Path), ReadQuery),
        responses((status = 200, description = "What it was", body = Submission),
                  (status = "4XX", description = "Still running (400), not kept (404), or refused", body = Judge0Failure)))]
    fn submissions_delete() {}

    /// Judge0: create up to 20 submissions.
    #[utoipa::path(post, path = "/submissions/batch", tag = "judge0", params(ReadQuery),
        request_body = Batch,
        responses((status = 201, description = "One answer per submission", body = Vec<BatchEntry>),
                  (status = 422, description = "None was valid: one answer per submission", body = Vec<BatchEntry>),
                  (status = "4XX", description = "Refused", body = Judge0Failure)))]
    fn batch_create() {}

    /// Judge0: submissions by token.
    #[utoipa::path(get, path = "/submissions/batch", tag = "judge0", params(BatchQuery),
        responses((status = 200, description = "Each token's submission", body = Submissions),
                  (status = "4XX", description = "No tokens (400), bad fields (400), or refused", body = Judge0Failure)))]
    fn batch_show() {}

    /// MCP over streamable HTTP: JSON-RPC requests (see the MCP specification).
    #[utoipa::path(post, path = "/mcp", tag = "mcp",
        request_body(content = Object, content_type = "application/json"),
        responses((status = 200, description = "JSON-RPC answers, as JSON or an event stream",
                   content((Object = "application/json"), (String = "text/event-stream"))),
                  (status = 202, description = "A notification or response taken"),
                  (status = "4XX", description = "Refused (a plain-text reason)", body = String, content_type = "text/plain")))]
    fn mcp_post() {}

    /// MCP over streamable HTTP: the server-to-client event stream of a session.
    #[utoipa::path(get, path = "/mcp", tag = "mcp",
        responses((status = 200, description = "Events", body = String, content_type = "text/event-stream"),
                  (status = "4XX", description = "No session, or refused (a plain-text reason)", body = String, content_type = "text/plain")))]
    fn mcp_get() {}

    /// MCP over streamable HTTP: end a session.
    #[utoipa::path(delete, path = "/mcp", tag = "mcp",
        responses((status = 200, description = "Ended"),
                  (status = 202, description = "Ended"),
                  (status = 204, description = "Ended"),
                  (status = "4XX", description = "No session, or refused (a plain-text reason)", body = String, content_type = "text/plain")))]
    fn mcp_delete() {}
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "dvm",
        description = "Run untrusted and machine-generated code in WebAssembly sandboxes with hard limits. Native JSON API, a Judge0-compatible subset and MCP. Every route but /health checks Host and Origin first (403 with the native error body); with `--token` every route but /health needs the bearer token (401 with the native error body); bodies over --max-body are refused with 413.",
    ),
    paths(
        ops::health, ops::metrics, ops::openapi, ops::runtimes, ops::execute, ops::cancel_run,
        ops::tool_result,
        ops::sessions_snapshot, ops::sessions_fork, ops::snapshots_show, ops::snapshots_delete,
        ops::sandboxes_list, ops::sandboxes_create, ops::sandboxes_show, ops::sandboxes_close,
        ops::sandboxes_execute, ops::sandboxes_cancel, ops::sandboxes_install,
        ops::sandboxes_files, ops::sandboxes_read, ops::sandboxes_write, ops::sandboxes_remove,
        ops::sessions_list, ops::sessions_create, ops::sessions_show, ops::sessions_close,
        ops::sessions_execute, ops::sessions_cancel, ops::sessions_install,
        ops::sessions_files, ops::sessions_read, ops::sessions_write, ops::sessions_remove,
        ops::languages, ops::language, ops::statuses, ops::about, ops::config_info,
        ops::workers, ops::submissions_create, ops::submissions_show, ops::submissions_delete,
        ops::batch_create, ops::batch_show, ops::mcp_post, ops::mcp_get, ops::mcp_delete,
    ),
    components(schemas(LimitsRequest, StatusBody)),
    modifiers(&Security),
    security(("bearer" = []), ()),
)]
struct Doc;
