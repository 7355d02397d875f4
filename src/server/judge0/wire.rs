//! Submission requests and query options as Judge0 clients send them, and submissions
//! rendered with the fields asked for, base64-encoded when asked.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde::Deserialize;

use super::languages::{LANGUAGES, language};
use super::submission::Submission;
use super::{DEFAULT_CPU_SECONDS, DEFAULT_MEMORY_KB};

/// A submission as Judge0 clients send it. Fields dvm cannot honour are refused by name.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[schema(examples(json!({"source_code": "print(input())", "language_id": 71, "stdin": "hi",
    "expected_output": "hi", "cpu_time_limit": 5.0, "cpu_extra_time": 0.0, "wall_time_limit": 5.0,
    "memory_limit": 128000.0, "stack_limit": 8192.0, "max_processes_and_or_threads": 1.0,
    "enable_per_process_and_thread_time_limit": false,
    "enable_per_process_and_thread_memory_limit": false, "max_file_size": 1024.0,
    "command_line_arguments": "a b", "redirect_stderr_to_stdout": false, "number_of_runs": 1,
    "compiler_options": "", "callback_url": null, "additional_files": null,
    "enable_network": false})))]
pub(in crate::server) struct SubmissionRequest {
    /// The program (base64 with `base64_encoded=true`).
    #[schema(required = true, value_type = String, min_length = 1)]
    pub(super) source_code: Option<String>,
    #[schema(required = true, schema_with = language_ids)]
    pub(super) language_id: Option<u32>,
    pub(super) stdin: Option<String>,
    pub(super) expected_output: Option<String>,
    /// Seconds: the run's wall-clock deadline (at most the server's --max-timeout).
    #[schema(exclusive_minimum = 0.0)]
    pub(super) cpu_time_limit: Option<f64>,
    pub(super) cpu_extra_time: Option<f64>,
    /// Seconds; the deadline is the smaller of this and `cpu_time_limit`.
    #[schema(exclusive_minimum = 0.0)]
    pub(super) wall_time_limit: Option<f64>,
    /// KB of memory (at most the server's --max-memory).
    #[schema(exclusive_minimum = 0.0)]
    pub(super) memory_limit: Option<f64>,
    pub(super) stack_limit: Option<f64>,
    pub(super) max_processes_and_or_threads: Option<f64>,
    pub(super) enable_per_process_and_thread_time_limit: Option<bool>,
    pub(super) enable_per_process_and_thread_memory_limit: Option<bool>,
    pub(super) max_file_size: Option<f64>,
    pub(super) command_line_arguments: Option<String>,
    pub(super) redirect_stderr_to_stdout: Option<bool>,
    #[schema(maximum = 1)]
    pub(super) number_of_runs: Option<u32>,
    /// dvm's languages are not compiled: empty or left out.
    #[schema(max_length = 0)]
    pub(super) compiler_options: Option<String>,
    /// Not supported (poll the token): left out or null.
    #[schema(schema_with = absent)]
    pub(super) callback_url: Option<String>,
    /// Not supported: left out or null.
    #[schema(schema_with = absent)]
    pub(super) additional_files: Option<String>,
    /// Sandboxes have no network: false, null or left out.
    #[schema(schema_with = no_network)]
    pub(super) enable_network: Option<bool>,
}

/// The schema of `language_id`: the ids of [`LANGUAGES`].
fn language_ids() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::Integer)
        .enum_values(Some(LANGUAGES.iter().map(|(id, ..)| *id)))
        .build()
}

/// The schema of a field that must be left out or null.
fn absent() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::Null)
        .build()
}

/// The schema of `enable_network`: false or null.
fn no_network() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::AnyValue)
        .enum_values(Some([
            serde_json::Value::Bool(false),
            serde_json::Value::Null,
        ]))
        .build()
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Options {
    #[serde(default, deserialize_with = "flag")]
    pub(super) base64_encoded: bool,
    #[serde(default, deserialize_with = "flag")]
    pub(super) wait: bool,
    pub(super) fields: Option<String>,
    pub(super) tokens: Option<String>,
}

/// `true`/`false` as Judge0 takes them in a query.
fn flag<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    let text = String::deserialize(deserializer)?;
    Ok(matches!(text.as_str(), "true" | "1" | "yes"))
}

/// The fields shown when a request names none.
const DEFAULT_FIELDS: &[&str] = &[
    "token",
    "time",
    "memory",
    "stdout",
    "stderr",
    "compile_output",
    "message",
    "status",
];

/// A submission as JSON with the fields asked for (`*` for all), text base64-encoded when
/// asked.
pub(super) fn render(
    submission: &Submission,
    fields: Option<&str>,
    base64: bool,
) -> serde_json::Value {
    let text = |bytes: Option<&[u8]>| -> serde_json::Value {
        match bytes {
            None => serde_json::Value::Null,
            Some(bytes) if base64 => base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into(),
            Some(bytes) => String::from_utf8_lossy(bytes).into_owned().into(),
        }
    };
    let request = &submission.request;
    let lang = language(request.language_id.unwrap_or_default());
    let all = serde_json::json!({
        "token": submission.token,
        "source_code": text(Some(submission.source.as_bytes())),
        "language_id": request.language_id,
        "stdin": text(submission.stdin.as_deref().map(str::as_bytes)),
        "expected_output": text(submission.expected.as_deref().map(str::as_bytes)),
        "stdout": text(submission.stdout.as_deref()),
        "stderr": text(submission.stderr.as_deref()),
        "compile_output": null,
        "message": text(submission.message.as_deref().map(str::as_bytes)),
        "status": submission.status.body(),
        "status_id": submission.status.id(),
        "created_at": submission.created_at,
        "finished_at": submission.finished_at,
        "time": submission.time.map(|t| format!("{t:.3}")),
        "wall_time": submission.time.map(|t| format!("{t:.3}")),
        "memory": submission.memory_kb,
        "exit_code": submission.exit_code,
        "exit_signal": null,
        "cpu_time_limit": request.cpu_time_limit.unwrap_or(DEFAULT_CPU_SECONDS),
        "cpu_extra_time": request.cpu_extra_time.unwrap_or(0.0),
        "wall_time_limit": request.wall_time_limit.unwrap_or(DEFAULT_CPU_SECONDS),
        "memory_limit": request.memory_limit.unwrap_or(DEFAULT_MEMORY_KB),
        "stack_limit": request.stack_limit.unwrap_or(8192.0),
        "max_processes_and_or_threads": request.max_processes_and_or_threads.unwrap_or(1.0),
        "enable_per_process_and_thread_time_limit": request.enable_per_process_and_thread_time_limit.unwrap_or(false),
        "enable_per_process_and_thread_memory_limit": request.enable_per_process_and_thread_memory_limit.unwrap_or(false),
        "max_file_size": request.max_file_size.unwrap_or(1_048_576.0),
        "number_of_runs": 1,
        "command_line_arguments": request.command_line_arguments,
        "redirect_stderr_to_stdout": request.redirect_stderr_to_stdout.unwrap_or(false),
        "compiler_options": null,
        "callback_url": null,
        "additional_files": null,
        "enable_network": false,
        "language": lang.map(|(id, _, name)| serde_json::json!({ "id": id, "name": name })),
    });
    let wanted: Vec<&str> = match fields.map(str::trim) {
        Some("*") => return all,
        Some(list) if !list.is_empty() => list.split(',').map(str::trim).collect(),
        _ => DEFAULT_FIELDS.to_vec(),
    };
    let mut picked = serde_json::Map::new();
    for field in wanted {
        if let Some(value) = all.get(field) {
            picked.insert(field.to_string(), value.clone());
        }
    }
    serde_json::Value::Object(picked)
}

/// Every field a submission shows with `fields=*`.
pub(super) const ALL_FIELDS: &[&str] = &[
    "token",
    "source_code",
    "language_id",
    "stdin",
    "expected_output",
    "stdout",
    "stderr",
    "compile_output",
    "message",
    "status",
    "status_id",
    "created_at",
    "finished_at",
    "time",
    "wall_time",
    "memory",
    "exit_code",
    "exit_signal",
    "cpu_time_limit",
    "cpu_extra_time",
    "wall_time_limit",
    "memory_limit",
    "stack_limit",
    "max_processes_and_or_threads",
    "enable_per_process_and_thread_time_limit",
    "enable_per_process_and_thread_memory_limit",
    "max_file_size",
    "number_of_runs",
    "command_line_arguments",
    "redirect_stderr_to_stdout",
    "compiler_options",
    "callback_url",
    "additional_files",
    "enable_network",
    "language",
];

/// Refuses field names a submission does not have, as Judge0 does.
pub(super) fn check_fields(fields: Option<&str>) -> Result<(), String> {
    let Some(list) = fields.map(str::trim).filter(|l| !l.is_empty() && *l != "*") else {
        return Ok(());
    };
    let invalid: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|f| !ALL_FIELDS.contains(f))
        .collect();
    if invalid.is_empty() {
        Ok(())
    } else {
        Err(format!("invalid fields: [{}]", invalid.join(", ")))
    }
}

/// `2026-11-30T09:00:00.123Z`, the shape Judge0 and its clients use. humantime writes from
/// the epoch to the end of year 9999; a clock reading outside that is clamped to it.
pub(super) fn timestamp(time: SystemTime) -> String {
    let last = SystemTime::UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
    humantime::format_rfc3339_millis(time.clamp(SystemTime::UNIX_EPOCH, last)).to_string()
}
