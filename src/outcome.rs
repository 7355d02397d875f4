//! How a run ended, as typed data.

use std::time::Duration;

use crate::limits::LimitKind;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The guest exited with code 0.
    Ok,
    /// The guest exited with a non-zero code.
    Error,
    /// A limit stopped the guest; [`Outcome::limit`] says which.
    Limit,
    /// The guest trapped for any other reason (unreachable, stack overflow, out-of-bounds
    /// access…); [`Outcome::trap`] has the message.
    Crashed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Limit => "limit",
            Status::Crashed => "crashed",
        }
    }
}

/// Whether each output stream was cut at its cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Truncated {
    pub stdout: bool,
    pub stderr: bool,
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    /// The exit code for `ok` and `error`; `None` when a limit or a trap ended the run.
    pub exit_code: Option<i32>,
    /// The kept stdout bytes (at most the cap).
    pub stdout: Vec<u8>,
    /// The kept stderr bytes (at most the cap).
    pub stderr: Vec<u8>,
    /// Every byte the guest wrote to stdout, kept or not.
    pub stdout_bytes: u64,
    /// Every byte the guest wrote to stderr, kept or not.
    pub stderr_bytes: u64,
    pub truncated: Truncated,
    /// Which limit stopped the run; `Some` exactly when `status` is `Limit`.
    pub limit: Option<LimitKind>,
    /// Fuel consumed by the guest (instantiation is not charged).
    pub fuel_used: u64,
    /// Wall-clock time of the run, instantiation included.
    pub duration: Duration,
    /// Largest linear memory the guest was granted, in bytes.
    pub memory_peak_bytes: u64,
    /// The trap message when the guest crashed or was stopped by a trap.
    pub trap: Option<String>,
    /// Regular files in the workspace the run created or changed, in path order.
    pub files: Vec<crate::workspace::OutputFile>,
    /// What the result cache did for this run.
    pub cache: crate::results::CacheStatus,
    /// The run's result-cache key, when it was eligible.
    pub cache_key: Option<String>,
}

impl Outcome {
    /// The JSON shape of an outcome: the fields of the CLI's `--json` contract.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "status": self.status,
            "exit_code": self.exit_code,
            "stdout": String::from_utf8_lossy(&self.stdout),
            "stderr": String::from_utf8_lossy(&self.stderr),
            "stdout_bytes": self.stdout_bytes,
            "stderr_bytes": self.stderr_bytes,
            "truncated": self.truncated,
            "limit": self.limit,
            "fuel_used": self.fuel_used,
            "duration_ms": self.duration.as_secs_f64() * 1000.0,
            "memory_peak_bytes": self.memory_peak_bytes,
            "trap": self.trap,
            "files": self.files,
            "cache": self.cache,
            "cache_key": self.cache_key,
        })
    }
}
