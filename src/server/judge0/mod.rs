//! A Judge0-compatible subset, so Judge0 clients work unchanged: languages, statuses, about,
//! config_info, single and batch submissions with `wait`, `base64_encoded` and `fields`.
//!
//! Language ids follow Judge0 CE's numbering for the languages dvm has: Python 3 ids (71,
//! 92, 100, 109, 113) run on dvm's `python` runtime and JavaScript ids (63, 93, 97, 102) on
//! `javascript`; `/languages` names say what actually runs. `cpu_time_limit` (or a smaller
//! `wall_time_limit`) becomes the run's wall-clock deadline, since a sandbox measures wall
//! time and fuel, not CPU time; `memory_limit` (KB) caps linear memory.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde::Deserialize;

mod languages;
mod submission;
mod verdict;
mod wire;

pub use submission::Submissions;
pub(super) use verdict::{StatusBody, Verdict};
pub(super) use wire::SubmissionRequest;

use languages::{LANGUAGES, language, source_file};
use submission::Submission;
use wire::{Options, check_fields, render, timestamp};

use super::{AppState, Execution};
use crate::limits::Limits;
use crate::outcome::Outcome;
use crate::sandbox::{RunInput, Stream};

type Shared = State<Arc<AppState>>;

/// Submissions in one batch at most (Judge0's default).
const MAX_BATCH: usize = 20;
/// Judge0's default limits: 5 s of CPU, 128,000 KB.
const DEFAULT_CPU_SECONDS: f64 = 5.0;
const DEFAULT_MEMORY_KB: f64 = 128_000.0;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/languages", get(languages))
        .route("/languages/{id}", get(one_language))
        .route("/statuses", get(statuses))
        .route("/about", get(about))
        .route("/config_info", get(config_info))
        .route("/workers", get(workers))
        .route("/submissions", axum::routing::post(create))
        .route("/submissions/batch", get(get_batch).post(create_batch))
        .route("/submissions/{token}", get(show).delete(delete))
}

/// A Judge0-style error: `{"error": "…"}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

async fn languages() -> Response {
    let list: Vec<serde_json::Value> = LANGUAGES
        .iter()
        .map(|(id, _, name)| serde_json::json!({ "id": id, "name": name }))
        .collect();
    axum::Json(list).into_response()
}

async fn one_language(Path(id): Path<u32>) -> Response {
    match language(id) {
        Some((id, runtime, name)) => {
            let file = source_file(runtime);
            axum::Json(serde_json::json!({
                "id": id, "name": name, "is_archived": false, "source_file": file,
                "compile_cmd": null, "run_cmd": format!("dvm run --runtime {runtime} {file}"),
            }))
            .into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            format!("language with id {id} not found"),
        ),
    }
}

async fn statuses() -> Response {
    let list: Vec<StatusBody> = Verdict::ALL.iter().map(|v| v.body()).collect();
    axum::Json(list).into_response()
}

async fn about() -> Response {
    axum::Json(serde_json::json!({
        "version": "1.13.1",
        "dvm_version": env!("CARGO_PKG_VERSION"),
        "homepage": "",
        "source_code": "",
        "maintainer": "dvm: WebAssembly sandboxes behind a Judge0-compatible API",
    }))
    .into_response()
}

async fn config_info(State(state): Shared) -> Response {
    let max_seconds = state.config.max_timeout.as_secs_f64();
    axum::Json(serde_json::json!({
        "maintenance_mode": false,
        "enable_wait_result": true,
        "enable_compiler_options": false,
        "allowed_languages_for_compile_options": [],
        "enable_command_line_arguments": true,
        "enable_submission_delete": true,
        "enable_callbacks": false,
        "callbacks_max_tries": 0,
        "callbacks_timeout": 0.0,
        "enable_additional_files": false,
        "max_queue_size": state.config.queue,
        "cpu_time_limit": DEFAULT_CPU_SECONDS,
        "max_cpu_time_limit": max_seconds,
        "cpu_extra_time": 0.0,
        "max_cpu_extra_time": 0.0,
        "wall_time_limit": DEFAULT_CPU_SECONDS,
        "max_wall_time_limit": max_seconds,
        "memory_limit": DEFAULT_MEMORY_KB.min(max_memory_kb(&state)),
        "max_memory_limit": max_memory_kb(&state),
        "stack_limit": 8192,
        "max_stack_limit": 8192,
        "max_processes_and_or_threads": 1,
        "max_max_processes_and_or_threads": 1,
        "enable_per_process_and_thread_time_limit": false,
        "allow_enable_per_process_and_thread_time_limit": false,
        "enable_per_process_and_thread_memory_limit": false,
        "allow_enable_per_process_and_thread_memory_limit": false,
        "max_file_size": 1_048_576,
        "max_max_file_size": 4_194_304,
        "number_of_runs": 1,
        "max_number_of_runs": 1,
        "redirect_stderr_to_stdout": false,
        "max_extract_size": 0,
        "enable_batched_submissions": true,
        "max_submission_batch_size": MAX_BATCH,
        "submission_cache_duration": 0.0,
        "use_docs_as_homepage": false,
        "allow_enable_network": false,
        "enable_network": false,
    }))
    .into_response()
}

async fn workers(State(state): Shared) -> Response {
    let queued = state.limiter.waiting();
    let available = state.limiter.permits.available_permits();
    axum::Json(serde_json::json!([{
        "queue": "default",
        "size": queued,
        "available": state.config.workers,
        "idle": available,
        "working": state.config.workers.saturating_sub(available),
        "paused": 0,
        "failed": 0,
    }]))
    .into_response()
}

/// The largest `memory_limit` (KB) this server takes: its `--max-memory`.
fn max_memory_kb(state: &AppState) -> f64 {
    (state.config.max_limits.memory_bytes / 1024) as f64
}

/// 404 for a token that is not kept: unknown, deleted, or dropped past the bounds.
fn not_kept(token: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "submission {token} not found: it never existed, was deleted, or finished long \
             enough ago that this server no longer keeps it (finished submissions are kept \
             for a while and within a memory budget; fetch results soon after they finish)"
        ),
    )
}

/// Validates and decodes a submission; a Judge0-style 422 body on failure.
fn accept(
    request: SubmissionRequest,
    base64: bool,
    max: &Limits,
) -> Result<Submission, serde_json::Value> {
    let mut problems = serde_json::Map::new();
    let mut problem = |field: &str, message: String| {
        problems.insert(field.to_string(), serde_json::json!([message]));
    };
    let decode = |field: &str, value: &Option<String>| -> Result<Option<String>, String> {
        let Some(text) = value else { return Ok(None) };
        if !base64 {
            return Ok(Some(text.clone()));
        }
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|e| format!("{field} is not valid base64: {e}"))?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let source = match decode("source_code", &request.source_code) {
        Ok(Some(source)) if !source.is_empty() => source,
        Ok(_) => {
            problem("source_code", "can't be blank".into());
            String::new()
        }
        Err(e) => {
            problem("source_code", e);
            String::new()
        }
    };
    match request.language_id {
        None => problem("language_id", "can't be blank".into()),
        Some(id) if language(id).is_none() => problem(
            "language_id",
            format!(
                "language with id {id} doesn't exist here; dvm runs {}",
                LANGUAGES
                    .iter()
                    .map(|(id, ..)| id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Some(_) => {}
    }
    let stdin = decode("stdin", &request.stdin).unwrap_or_else(|e| {
        problem("stdin", e);
        None
    });
    let expected = decode("expected_output", &request.expected_output).unwrap_or_else(|e| {
        problem("expected_output", e);
        None
    });
    for (field, value) in [
        ("cpu_time_limit", request.cpu_time_limit),
        ("wall_time_limit", request.wall_time_limit),
        ("memory_limit", request.memory_limit),
    ] {
        if value.is_some_and(|v| !v.is_finite() || v <= 0.0) {
            problem(field, "must be greater than 0".into());
        }
    }
    let max_kb = (max.memory_bytes / 1024) as f64;
    if request.memory_limit.is_some_and(|kb| kb > max_kb) {
        problem(
            "memory_limit",
            format!("must be less than or equal to {max_kb} (this server's --max-memory)"),
        );
    }
    let max_seconds = max.deadline.as_secs_f64();
    for (field, value) in [
        ("cpu_time_limit", request.cpu_time_limit),
        ("wall_time_limit", request.wall_time_limit),
    ] {
        if value.is_some_and(|v| v > max_seconds) {
            problem(
                field,
                format!(
                    "must be less than or equal to {max_seconds} (this server's --max-timeout)"
                ),
            );
        }
    }
    if request
        .compiler_options
        .as_ref()
        .is_some_and(|o| !o.is_empty())
    {
        problem(
            "compiler_options",
            "dvm's languages are not compiled".into(),
        );
    }
    if request.additional_files.is_some() {
        problem("additional_files", "not supported here".into());
    }
    if request.callback_url.is_some() {
        problem(
            "callback_url",
            "callbacks are not supported here; poll the token".into(),
        );
    }
    if request.enable_network == Some(true) {
        problem("enable_network", "sandboxes have no network".into());
    }
    if request.number_of_runs.is_some_and(|n| n > 1) {
        problem("number_of_runs", "must be 1".into());
    }
    if !problems.is_empty() {
        return Err(serde_json::Value::Object(problems));
    }
    // The decoded texts are what is kept and shown; the raw ones would double the memory.
    let mut request = request;
    request.source_code = None;
    request.stdin = None;
    request.expected_output = None;
    Ok(Submission {
        token: super::new_id(),
        request,
        source,
        stdin,
        expected,
        status: Verdict::InQueue,
        stdout: None,
        stderr: None,
        message: None,
        exit_code: None,
        time: None,
        memory_kb: None,
        created_at: timestamp(SystemTime::now()),
        finished_at: None,
        finished: None,
    })
}

/// The job that runs a submission, and a buffer that collects stdout and stderr together
/// when `redirect_stderr_to_stdout` is set.
fn job(submission: &Submission, state: &AppState) -> (Execution, Option<Arc<Mutex<Vec<u8>>>>) {
    let request = &submission.request;
    let (_, runtime, _) = language(request.language_id.unwrap_or_default())
        .copied()
        .unwrap_or((0, "python", ""));
    let file = source_file(runtime);
    let cpu = request.cpu_time_limit.unwrap_or(DEFAULT_CPU_SECONDS);
    let seconds = request.wall_time_limit.map_or(cpu, |wall| wall.min(cpu));
    let max = state.config.max_timeout.as_secs_f64();
    // The rest are the server's defaults, within its maxima; `accept` refused requests over
    // them, and the default memory is lowered to a smaller --max-memory.
    let base = super::default_limits(&state.config);
    let limits = Limits {
        deadline: Duration::from_secs_f64(seconds.min(max)),
        memory_bytes: ((request.memory_limit.unwrap_or(DEFAULT_MEMORY_KB) * 1024.0) as u64)
            .min(state.config.max_limits.memory_bytes),
        ..base
    };
    let combined = request
        .redirect_stderr_to_stdout
        .unwrap_or(false)
        .then(|| Arc::new(Mutex::new(Vec::new())));
    let on_output: Option<crate::OutputCallback> = combined.clone().map(|buffer| {
        Arc::new(move |_: Stream, bytes: &[u8]| {
            buffer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
        }) as crate::OutputCallback
    });
    let args = request
        .command_line_arguments
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let job = Execution {
        runtime: runtime.to_string(),
        code: submission.source.clone(),
        name: file.to_string(),
        input: RunInput {
            args,
            stdin: submission.stdin.clone().unwrap_or_default().into_bytes(),
            limits,
            on_output,
            ..RunInput::default()
        },
        sandbox: None,
        hold: None,
        requirements: Vec::new(),
        auto_deps: false,
        run_id: Some(submission.token.clone()),
        on_start: None,
    };
    (job, combined)
}

/// Fills in a finished submission from how its run went.
fn finish(
    submission: &mut Submission,
    ran: Result<Outcome, super::ApiError>,
    combined: Option<Arc<Mutex<Vec<u8>>>>,
) {
    submission.finished_at = Some(timestamp(SystemTime::now()));
    let outcome = match ran {
        Ok(outcome) => outcome,
        Err(error) => {
            submission.status = Verdict::InternalError;
            submission.message = Some(super::scrub_paths(&error.message));
            return;
        }
    };
    submission.time = Some(outcome.duration.as_secs_f64());
    submission.memory_kb = Some(outcome.memory_peak_bytes / 1024);
    submission.exit_code = outcome.exit_code;
    match combined {
        Some(buffer) => {
            submission.stdout = Some(std::mem::take(
                &mut *buffer.lock().unwrap_or_else(PoisonError::into_inner),
            ));
            submission.stderr = None;
        }
        None => {
            submission.stdout = Some(outcome.stdout.clone());
            submission.stderr = Some(outcome.stderr.clone());
        }
    }
    let stdout = String::from_utf8_lossy(submission.stdout.as_deref().unwrap_or_default());
    let (verdict, message) = Verdict::of(&outcome, submission.expected.as_deref(), &stdout);
    submission.status = verdict;
    submission.message = message;
}

/// Runs a queued submission to its end and records the result.
async fn run(state: Arc<AppState>, token: String) {
    let Some(submission) = state.submissions.get(&token) else {
        return;
    };
    let (mut job, combined) = job(&submission, &state);
    // In Queue until a worker takes it, then Processing.
    let processing = {
        let state = state.clone();
        let token = token.clone();
        move || {
            state
                .submissions
                .update(&token, |s| s.status = Verdict::Processing)
        }
    };
    job.on_start = Some(Box::new(processing));
    let ran = state.execute(job).await.map(|(_, outcome)| outcome);
    state
        .submissions
        .update(&token, |s| finish(s, ran, combined));
}

/// The largest deadline and memory a submission may ask for.
fn maxima(state: &AppState) -> Limits {
    Limits {
        deadline: state.config.max_timeout,
        memory_bytes: state.config.max_limits.memory_bytes,
        ..Limits::default()
    }
}

/// A 415 answer unless the body is declared JSON (as Judge0 clients send it).
fn refuse_non_json(headers: &axum::http::HeaderMap) -> Option<Response> {
    if super::access::is_json(headers) {
        return None;
    }
    Some(error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "send the submission as JSON with `Content-Type: application/json`",
    ))
}

async fn create(
    State(state): Shared,
    Query(options): Query<Options>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = refuse_non_json(&headers) {
        return refused;
    }
    if let Err(message) = check_fields(options.fields.as_deref()) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    let request: SubmissionRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a submission: {e}"),
            );
        }
    };
    let submission = match accept(request, options.base64_encoded, &maxima(&state)) {
        Ok(submission) => submission,
        Err(problems) => {
            return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(problems)).into_response();
        }
    };
    if !options.wait && state.limiter.waiting() >= state.config.queue {
        return error(StatusCode::SERVICE_UNAVAILABLE, "queue is full");
    }
    let token = submission.token.clone();
    if let Err(message) = state.submissions.insert(submission) {
        return error(StatusCode::SERVICE_UNAVAILABLE, message);
    }
    if options.wait {
        // In a task of its own, so a client that hangs up does not leave it half-done.
        let _ = tokio::spawn(run(state.clone(), token.clone())).await;
        let Some(done) = state.submissions.get(&token) else {
            return not_kept(&token);
        };
        return (
            StatusCode::CREATED,
            axum::Json(render(
                &done,
                options.fields.as_deref(),
                options.base64_encoded,
            )),
        )
            .into_response();
    }
    tokio::spawn(run(state, token.clone()));
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({ "token": token })),
    )
        .into_response()
}

async fn show(
    State(state): Shared,
    Path(token): Path<String>,
    Query(options): Query<Options>,
) -> Response {
    if let Err(message) = check_fields(options.fields.as_deref()) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    match state.submissions.get(&token) {
        Some(submission) => axum::Json(render(
            &submission,
            options.fields.as_deref(),
            options.base64_encoded,
        ))
        .into_response(),
        None => not_kept(&token),
    }
}

async fn delete(
    State(state): Shared,
    Path(token): Path<String>,
    Query(options): Query<Options>,
) -> Response {
    match state.submissions.get(&token) {
        Some(submission) if !submission.is_finished() => error(
            StatusCode::BAD_REQUEST,
            format!("submission {token} is still running and cannot be deleted"),
        ),
        Some(_) => match state.submissions.remove(&token) {
            Some(submission) => axum::Json(render(
                &submission,
                options.fields.as_deref(),
                options.base64_encoded,
            ))
            .into_response(),
            None => not_kept(&token),
        },
        None => not_kept(&token),
    }
}

/// Up to 20 submissions.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(examples(json!({"submissions": [{"source_code": "print(1)", "language_id": 71},
    {"source_code": "console.log(2)", "language_id": 63}]})))]
pub(super) struct Batch {
    #[schema(value_type = Vec<SubmissionRequest>, min_items = 1, max_items = 20)]
    submissions: Vec<serde_json::Value>,
}

async fn create_batch(
    State(state): Shared,
    Query(options): Query<Options>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = refuse_non_json(&headers) {
        return refused;
    }
    let batch: Batch = match serde_json::from_slice(&body) {
        Ok(batch) => batch,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not {{\"submissions\": [...]}}: {e}"),
            );
        }
    };
    if batch.submissions.is_empty() || batch.submissions.len() > MAX_BATCH {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "number of submissions in a batch should be between 1 and {MAX_BATCH}, got {}",
                batch.submissions.len()
            ),
        );
    }
    let mut answers = Vec::with_capacity(batch.submissions.len());
    let mut any_valid = false;
    for value in batch.submissions {
        let accepted = serde_json::from_value::<SubmissionRequest>(value)
            .map_err(|e| serde_json::json!({ "error": e.to_string() }))
            .and_then(|request| accept(request, options.base64_encoded, &maxima(&state)));
        match accepted {
            Ok(submission) => {
                let token = submission.token.clone();
                match state.submissions.insert(submission) {
                    Ok(()) => {
                        any_valid = true;
                        tokio::spawn(run(state.clone(), token.clone()));
                        answers.push(serde_json::json!({ "token": token }));
                    }
                    Err(message) => answers.push(serde_json::json!({ "error": message })),
                }
            }
            Err(problems) => answers.push(problems),
        }
    }
    let status = if any_valid {
        StatusCode::CREATED
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (status, axum::Json(answers)).into_response()
}

async fn get_batch(
    State(state): Shared,
    Query(options): Query<Options>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Err(message) = check_fields(options.fields.as_deref()) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    let tokens = options
        .tokens
        .clone()
        .or_else(|| {
            headers
                .get("tokens")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let tokens: Vec<&str> = tokens
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.is_empty() {
        return error(StatusCode::BAD_REQUEST, "give tokens=TOKEN,TOKEN,…");
    }
    let submissions: Vec<serde_json::Value> = tokens
        .iter()
        .map(|token| {
            state
                .submissions
                .get(token)
                .map_or(serde_json::Value::Null, |s| {
                    render(&s, options.fields.as_deref(), options.base64_encoded)
                })
        })
        .collect();
    axum::Json(serde_json::json!({ "submissions": submissions })).into_response()
}

#[cfg(test)]
mod tests {
    use super::verdict::same_output;
    use super::wire::ALL_FIELDS;
    use super::*;
    use crate::limits::LimitKind;
    use crate::outcome::Status;

    #[test]
    fn timestamps_and_comparison_follow_judge0() {
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_796_029_200_123);
        assert_eq!(timestamp(time), "2026-11-30T09:00:00.123Z");
        let leap = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_709_164_800);
        assert_eq!(timestamp(leap), "2024-02-29T00:00:00.000Z");
        assert_eq!(
            timestamp(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            timestamp(SystemTime::UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(400_000_000_000)),
            "9999-12-31T23:59:59.999Z"
        );
        assert!(same_output("3\n", "3"));
        assert!(same_output("a  \nb\n\n", "a\nb"));
        assert!(!same_output(" 3", "3"));
        assert!(!same_output("3", "4"));
    }

    #[test]
    fn one_enum_gives_the_status_table_and_the_verdicts() {
        let ids: Vec<u32> = Verdict::ALL.iter().map(|v| v.id()).collect();
        assert_eq!(ids, (1..=14).collect::<Vec<_>>());
        assert_eq!(
            Verdict::RuntimeErrorNzec.description(),
            "Runtime Error (NZEC)"
        );
        assert!(!Verdict::InQueue.is_final() && !Verdict::Processing.is_final());
        assert!(Verdict::ALL[2..].iter().all(|v| v.is_final()));
        let ran = |status, limit, exit_code| Outcome {
            status,
            limit,
            exit_code,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            truncated: crate::outcome::Truncated::default(),
            fuel_used: 0,
            duration: Duration::ZERO,
            memory_peak_bytes: 0,
            trap: None,
            files: Vec::new(),
            cache: crate::results::CacheStatus::Off,
            cache_key: None,
            display: Vec::new(),
            tool_calls: Vec::new(),
            net: Vec::new(),
        };
        let verdict = |outcome: &Outcome, expected: Option<&str>, stdout: &str| {
            Verdict::of(outcome, expected, stdout).0
        };
        assert_eq!(
            verdict(&ran(Status::Ok, None, Some(0)), Some("1\n"), "1"),
            Verdict::Accepted
        );
        assert_eq!(
            verdict(&ran(Status::Ok, None, Some(0)), Some("2"), "1"),
            Verdict::WrongAnswer
        );
        assert_eq!(
            Verdict::of(&ran(Status::Error, None, Some(3)), None, ""),
            (
                Verdict::RuntimeErrorNzec,
                Some("Exited with error status 3".into())
            )
        );
        for (limit, expected) in [
            (LimitKind::Deadline, Verdict::TimeLimitExceeded),
            (LimitKind::Fuel, Verdict::TimeLimitExceeded),
            (LimitKind::Output, Verdict::RuntimeErrorSigxfsz),
            (LimitKind::Memory, Verdict::RuntimeErrorOther),
            (LimitKind::Cancelled, Verdict::InternalError),
        ] {
            assert_eq!(
                verdict(&ran(Status::Limit, Some(limit), None), None, ""),
                expected
            );
        }
    }

    fn finished(source_bytes: usize) -> Submission {
        let submission = accept(
            SubmissionRequest {
                source_code: Some("x".repeat(source_bytes)),
                language_id: Some(71),
                ..SubmissionRequest::default()
            },
            false,
            &Limits::default(),
        )
        .unwrap();
        assert!(
            submission.request.source_code.is_none(),
            "kept once, decoded"
        );
        submission
    }

    #[test]
    fn retention_is_bounded_in_bytes_and_age() {
        let kept = Submissions::new(10_000, Duration::from_secs(3600));
        let mut tokens = Vec::new();
        for _ in 0..20 {
            let submission = finished(2_000);
            tokens.push(submission.token.clone());
            kept.insert(submission).unwrap();
            kept.update(tokens.last().unwrap(), |s| {
                s.status = Verdict::Accepted;
                s.stdout = Some(vec![b'o'; 1_000]);
            });
            assert!(kept.retained().1 <= 10_000, "{:?}", kept.retained());
        }
        assert!(
            kept.get(&tokens[0]).is_none(),
            "the oldest finished went first"
        );
        assert!(kept.get(tokens.last().unwrap()).is_some());
        // Unfinished submissions are never dropped; past the budget new ones are refused.
        let pending = Submissions::new(5_000, Duration::from_secs(3600));
        let first = finished(2_000);
        let first_token = first.token.clone();
        pending.insert(first).unwrap();
        pending.insert(finished(2_000)).unwrap();
        assert!(pending.insert(finished(2_000)).is_err());
        assert!(pending.get(&first_token).is_some());
        // Past their age, finished ones are gone.
        let young = Submissions::new(1 << 20, Duration::from_millis(1));
        let submission = finished(10);
        let token = submission.token.clone();
        young.insert(submission).unwrap();
        young.update(&token, |s| s.status = Verdict::Accepted);
        std::thread::sleep(Duration::from_millis(5));
        young.sweep();
        assert_eq!(young.retained(), (0, 0));
    }

    #[test]
    fn submissions_are_checked_field_by_field() {
        let bad = accept(
            SubmissionRequest {
                language_id: Some(1),
                stdin: Some("@@".into()),
                memory_limit: Some(-1.0),
                ..SubmissionRequest::default()
            },
            true,
            &Limits::default(),
        )
        .unwrap_err();
        for field in ["source_code", "language_id", "stdin", "memory_limit"] {
            assert!(bad.get(field).is_some(), "{field}: {bad}");
        }
        let good = accept(
            SubmissionRequest {
                source_code: Some("cHJpbnQoMSk=\n".into()),
                language_id: Some(71),
                ..SubmissionRequest::default()
            },
            true,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(good.source, "print(1)");
        assert_eq!(good.token.len(), 36);
        let shown = render(&good, Some("*"), false);
        let keys: Vec<&str> = shown
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for field in ALL_FIELDS {
            assert!(keys.contains(field), "{field}");
        }
        assert_eq!(keys.len(), ALL_FIELDS.len());
    }
}
