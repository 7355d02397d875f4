//! `dvm serve`: the HTTP API (native JSON, Judge0-compatible, MCP over streamable HTTP),
//! Prometheus metrics and an OpenAPI document.
//!
//! Every run goes through one [`Limiter`]: a bounded number run at once (sandboxes run on
//! blocking threads), a bounded number wait, and a request past both is refused with 429.
//! Each request has a timeout that contains its sandbox's deadline; shutting down stops
//! accepting, lets in-flight runs finish for a grace period, then cancels them.

pub mod access;
mod api;
mod judge0;
pub mod mcp;
mod metrics;
mod openapi;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::dvm::{Dvm, Runtime};
use crate::error::Error;
use crate::limits::Limits;
use crate::outcome::Outcome;
use crate::sandbox::{CancelHandle, RunInput};
use crate::session::{Session, SessionOptions};
use crate::workspace::Workspace;

pub use crate::id::new_id;

pub use self::metrics::Metrics;

/// Pool slots `dvm serve` sizes its pool with per session or run it must fit: the pool has
/// as many tables as instances, and a guest that defines two tables takes two.
pub const SLOTS_PER_INSTANCE: usize = 2;

/// How the server is run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Required as `Authorization: Bearer TOKEN` (or Judge0's `X-Auth-Token`) on every route
    /// but `/health`.
    pub token: Option<String>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Runs at once.
    pub workers: usize,
    /// Runs waiting for a worker; past it requests get 429.
    pub queue: usize,
    /// Largest deadline a request may ask for; also the default's ceiling.
    pub max_timeout: Duration,
    /// Added to a run's deadline for its request's timeout (queueing, installs, uploads).
    pub request_slack: Duration,
    /// A session or sandbox unused this long is closed.
    pub idle_timeout: Duration,
    /// A session or sandbox is closed this long after it was made.
    pub max_lifetime: Duration,
    /// Live sessions and sandboxes at most.
    pub max_sandboxes: usize,
    /// How long in-flight runs may finish after a shutdown signal before they are cancelled.
    pub shutdown_grace: Duration,
    /// Browser origins the MCP endpoint accepts (none: only requests without an Origin).
    pub allowed_origins: Vec<String>,
    /// Host names (optionally with a port) every route answers besides the loopback ones
    /// on the bound port (the DNS-rebinding check), for a server reached by name.
    pub allowed_hosts: Vec<String>,
    /// The hosts executions may let their guests reach over HTTP (each request names
    /// which, within these); none by default: no request gets the network.
    pub allow_net: Vec<crate::AllowedHost>,
    /// The largest limits a request may ask for; requests above one are refused. The
    /// server's default limits are within them.
    pub max_limits: MaxLimits,
    /// Live sessions' memory caps add up to at most this: each session reserves its cap
    /// (its linear memory can grow to it and stays while it is idle).
    pub session_memory_bytes: u64,
    /// Sandbox slots in the engine's instance pool (`PoolConfig::slots`).
    pub pool_slots: usize,
    /// Instances of the pool sessions may not take: one-shot runs and prestarted
    /// sandboxes always find a slot.
    pub reserved_runs: usize,
    /// Finished Judge0 submissions (source, input and output) kept in memory at most; the
    /// oldest go first past it.
    pub judge0_max_bytes: u64,
    /// A finished Judge0 submission is forgotten this long after it finished.
    pub judge0_ttl: Duration,
}

/// Server-side maxima of every limit a client can set (the deadline's is
/// [`ServerConfig::max_timeout`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaxLimits {
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    /// Each of stdout and stderr.
    pub output_bytes: u64,
    /// `None`: a request may ask for any fuel budget (runs have none by default).
    pub fuel: Option<u64>,
    pub files: u64,
    pub open_files: u64,
}

impl Default for MaxLimits {
    /// dvm's default limits: a client can lower them, not raise them.
    fn default() -> Self {
        let limits = Limits::default();
        MaxLimits {
            memory_bytes: limits.memory_bytes,
            disk_bytes: limits.disk_bytes,
            output_bytes: limits.stdout_bytes.max(limits.stderr_bytes),
            fuel: limits.fuel,
            files: limits.files,
            open_files: limits.open_files,
        }
    }
}

impl MaxLimits {
    /// 400 naming the first limit above its maximum (and the flag that raises it).
    pub fn check(&self, limits: &Limits, max_timeout: Duration) -> Result<(), ApiError> {
        let over = |what: &str, asked: u64, max: u64, flag: &str| {
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "over_maximum",
                format!(
                    "{what} of {asked} is over this server's maximum of {max} (its operator \
                     can raise it with {flag}); ask for {max} or less"
                ),
            ))
        };
        if limits.deadline > max_timeout {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "over_maximum",
                format!(
                    "a timeout of {} ms is over this server's maximum of {} ms (its operator \
                     can raise it with --max-timeout)",
                    limits.deadline.as_millis(),
                    max_timeout.as_millis()
                ),
            ));
        }
        if limits.memory_bytes > self.memory_bytes {
            return over(
                "memory_bytes",
                limits.memory_bytes,
                self.memory_bytes,
                "--max-memory",
            );
        }
        if limits.disk_bytes > self.disk_bytes {
            return over(
                "disk_bytes",
                limits.disk_bytes,
                self.disk_bytes,
                "--max-disk",
            );
        }
        let output = limits.stdout_bytes.max(limits.stderr_bytes);
        if output > self.output_bytes {
            return over(
                "max_output_bytes",
                output,
                self.output_bytes,
                "--max-output",
            );
        }
        if let Some(max) = self.fuel {
            match limits.fuel {
                Some(fuel) if fuel > max => return over("fuel", fuel, max, "--max-fuel"),
                None => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "over_maximum",
                        format!(
                            "unlimited fuel is over this server's maximum of {max}; ask for \
                             {max} or less"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        if limits.files > self.files {
            return over("files", limits.files, self.files, "--max-files");
        }
        if limits.open_files > self.open_files {
            return over(
                "open_files",
                limits.open_files,
                self.open_files,
                "--max-open-files",
            );
        }
        Ok(())
    }

    /// `limits` lowered to these maxima (and the deadline to `max_timeout`).
    /// The server never caps table elements, takes one maximum for stdout and stderr, and
    /// leaves a run at least one open file.
    fn clamp(&self, limits: Limits, max_timeout: Duration) -> Limits {
        let max = Limits {
            deadline: max_timeout,
            fuel: self.fuel,
            memory_bytes: self.memory_bytes,
            stdout_bytes: self.output_bytes,
            stderr_bytes: self.output_bytes,
            output_overflow: limits.output_overflow,
            table_elements: u64::MAX,
            disk_bytes: self.disk_bytes,
            files: self.files,
            open_files: self.open_files,
        };
        let mut capped = limits.capped_at(&max);
        capped.open_files = capped.open_files.max(1);
        capped
    }
}

/// Half the machine's memory (at least 1 GiB; 4 GiB where it cannot be read): the default
/// budget of live sessions' memory caps.
pub fn default_session_memory() -> u64 {
    const GIB: u64 = 1 << 30;
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb.saturating_mul(1024));
    total.map_or(4 * GIB, |bytes| (bytes / 2).max(GIB))
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            max_body_bytes: 16 << 20,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get() * 4),
            queue: 1024,
            max_timeout: Duration::from_secs(300),
            request_slack: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            max_sandboxes: 1000,
            shutdown_grace: Duration::from_secs(10),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            allow_net: Vec::new(),
            max_limits: MaxLimits::default(),
            session_memory_bytes: default_session_memory(),
            pool_slots: crate::PoolConfig::default().slots as usize,
            reserved_runs: std::thread::available_parallelism().map_or(2, |n| n.get() * 4) + 16,
            judge0_max_bytes: 256 << 20,
            judge0_ttl: Duration::from_secs(3600),
        }
    }
}

impl ServerConfig {
    /// Checks what the operator configured: the allow-lists parse, the maxima can run.
    pub fn validate(&self) -> Result<(), Error> {
        access::AccessPolicy::new(self.addr, &self.allowed_hosts, &self.allowed_origins)?;
        if self.max_limits.open_files == 0 {
            return Err(Error::InvalidInput(
                "--max-open-files 0 cannot run anything; interpreters open a few files".into(),
            ));
        }
        if self.max_limits.fuel == Some(0) {
            return Err(Error::InvalidInput(
                "--max-fuel 0 cannot run anything; leave it out for no maximum".into(),
            ));
        }
        Limits::default()
            .validate()
            .and_then(|()| default_limits(self).validate())
            .map_err(|e| Error::InvalidInput(format!("the server's maxima: {e}")))
    }
}

/// An error as the API returns it: a status and `{"error": {"kind", "message"}}`, with host
/// paths taken out of the message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} `{id}` (it may have been closed or timed out)"),
        )
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let status =
            StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::new(status, error.kind(), error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "kind": self.kind, "message": scrub_paths(&self.message) }
        });
        (self.status, axum::Json(body)).into_response()
    }
}

/// Replaces host directories dvm uses (its home, the temp and scratch directories) in a
/// message with placeholders: a client learns what went wrong, not the host's layout.
fn scrub_paths(message: &str) -> String {
    let mut places: Vec<(String, &str)> = vec![
        (
            crate::engine::default_home().display().to_string(),
            "<dvm-home>",
        ),
        (std::env::temp_dir().display().to_string(), "<tmp>"),
    ];
    let scratch = crate::fs::scratch_base();
    if scratch != std::env::temp_dir() {
        places.push((scratch.display().to_string(), "<scratch>"));
    }
    if let Some(home) = dirs::home_dir() {
        places.push((home.display().to_string(), "<home>"));
    }
    places.retain(|(path, _)| path.len() > 1);
    places.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    let mut text = message.to_string();
    for (path, placeholder) in places {
        let path = path.trim_end_matches('/');
        text = text.replace(path, placeholder);
    }
    text
}

/// A JSON body whose rejections (syntax, size, content type) are API errors.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => {
                let status = rejection.status();
                let kind = match status {
                    StatusCode::PAYLOAD_TOO_LARGE => "too_large",
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                    _ => "bad_request",
                };
                Err(ApiError::new(status, kind, rejection.body_text()))
            }
        }
    }
}

/// Limits as requests write them; each one left out takes the server's default.
#[derive(
    Debug, Clone, Default, Deserialize, serde::Serialize, schemars::JsonSchema, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"timeout_ms": 10000, "memory_bytes": 268435456, "fuel": 100000000000_u64,
    "max_output_bytes": 65536, "disk_bytes": 16777216, "files": 100, "open_files": 64})))]
pub struct LimitsRequest {
    /// Wall-clock deadline in milliseconds.
    #[schema(minimum = 1)]
    pub timeout_ms: Option<u64>,
    /// Linear memory cap in bytes.
    pub memory_bytes: Option<u64>,
    /// Fuel budget (about one unit per wasm instruction).
    pub fuel: Option<u64>,
    /// Cap on each of stdout and stderr, in bytes.
    pub max_output_bytes: Option<u64>,
    /// Cap on bytes written to files.
    pub disk_bytes: Option<u64>,
    /// Cap on files created.
    pub files: Option<u64>,
    /// Cap on files open at once.
    #[schema(minimum = 1)]
    pub open_files: Option<u64>,
}

impl LimitsRequest {
    /// The limits of a run: `base` with these applied, each within the server's maximum
    /// (400 naming the maximum otherwise).
    pub fn apply(&self, base: &Limits, config: &ServerConfig) -> Result<Limits, ApiError> {
        let limits = crate::limits::LimitOverrides {
            deadline: self.timeout_ms.map(Duration::from_millis),
            fuel: self.fuel,
            memory_bytes: self.memory_bytes,
            output_bytes: self.max_output_bytes,
            disk_bytes: self.disk_bytes,
            files: self.files,
            open_files: self.open_files,
            ..Default::default()
        }
        .apply(base.clone())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        config.max_limits.check(&limits, config.max_timeout)?;
        Ok(limits)
    }
}

/// The default limits of a run: dvm's, each within the server's maximum.
pub(crate) fn default_limits(config: &ServerConfig) -> Limits {
    config
        .max_limits
        .clamp(Limits::default(), config.max_timeout)
}

/// What a workspace holds now: bytes (each file's size, holes included) and entries.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub bytes: u64,
    pub entries: u64,
}

impl Usage {
    /// Walks the workspace (blocking).
    pub(crate) fn of(workspace: &Workspace) -> Result<Usage, Error> {
        let entries = workspace.list()?;
        Ok(Usage {
            bytes: entries.iter().map(|e| e.size).sum(),
            entries: entries.len() as u64,
        })
    }
}

/// A workspace's quota across executions: `quota`'s disk and files caps bound what the
/// workspace holds in total, so each run may write only what is left (blocking).
pub(crate) fn fit_to_workspace(
    workspace: &Workspace,
    quota: &Limits,
    limits: &mut Limits,
) -> Result<(), Error> {
    let usage = Usage::of(workspace)?;
    limits.disk_bytes = limits
        .disk_bytes
        .min(quota.disk_bytes.saturating_sub(usage.bytes));
    limits.files = limits.files.min(quota.files.saturating_sub(usage.entries));
    Ok(())
}

/// Writes uploaded files into a workspace within its quota (blocking): refused, with
/// nothing written, when the workspace would then hold more than `quota` allows.
pub(crate) fn write_within(
    workspace: &Workspace,
    quota: &Limits,
    files: &[(String, Vec<u8>)],
) -> Result<(), ApiError> {
    if files.is_empty() {
        return Ok(());
    }
    let listed = workspace.list()?;
    let sizes: HashMap<&str, u64> = listed.iter().map(|e| (e.path.as_str(), e.size)).collect();
    let mut bytes: u64 = listed.iter().map(|e| e.size).sum();
    let mut entries = listed.len() as u64;
    for (path, content) in files {
        // Names as the listing writes them; one that does not match counts as new (more).
        let key = path
            .trim_start_matches("/workspace/")
            .trim_start_matches("./")
            .trim_start_matches('/');
        match sizes.get(key) {
            Some(size) => bytes = bytes.saturating_sub(*size),
            None => entries += 1,
        }
        bytes = bytes.saturating_add(content.len() as u64);
    }
    if bytes > quota.disk_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "disk_quota",
            format!(
                "the workspace would hold {bytes} bytes, over its quota of {} bytes; remove \
                 files first",
                quota.disk_bytes
            ),
        ));
    }
    if entries > quota.files {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "disk_quota",
            format!(
                "the workspace would hold {entries} entries, over its quota of {}; remove \
                 files first",
                quota.files
            ),
        ));
    }
    for (path, content) in files {
        workspace.write(path, content)?;
    }
    Ok(())
}

/// Runs blocking work (the filesystem, a session's start) on the blocking threads.
pub(crate) async fn blocking<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Into::into),
        Err(e) => Err(ApiError::from(Error::from(crate::error::HostError::Task {
            what: "blocking work",
            source: Box::new(e),
        }))),
    }
}

/// Bounds runs at once and runs waiting.
pub struct Limiter {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
}

impl Limiter {
    fn new(workers: usize, queue: usize) -> Self {
        Limiter {
            permits: Arc::new(Semaphore::new(workers.max(1))),
            waiting: AtomicUsize::new(0),
            queue,
        }
    }

    /// A worker, waiting in the queue if every worker is busy; 429 when the queue is full.
    async fn acquire(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        /// Counts one waiter for as long as it waits (also when its request goes away).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let waiting = Waiting(&self.waiting);
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                "every worker is busy and the queue is full; retry later",
            ));
        }
        let permit = self.permits.clone().acquire_owned().await;
        drop(waiting);
        permit.map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            )
        })
    }

    fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.permits.close();
    }
}

/// A sandbox (a workspace where each execution is a fresh interpreter) or a session (a
/// workspace with one interpreter that lives across executions).
/// Where [`AppState::copy_session`] copies from.
pub enum SessionCopy {
    /// A snapshot on disk, of `runtime`.
    Snapshot { id: String, runtime: String },
    /// A live session.
    Fork(Arc<Sandbox>),
}

pub struct Sandbox {
    pub id: String,
    pub runtime: String,
    pub workspace: Workspace,
    /// `Some` for a session.
    pub session: Option<Session>,
    pub packages: Mutex<Option<crate::deps::PackageSet>>,
    pub env: Vec<(String, String)>,
    /// The default limits of its executions.
    pub limits: Limits,
    created: Instant,
    last_used: Mutex<Instant>,
    /// One execution at a time (they share a workspace).
    pub busy: Arc<tokio::sync::Mutex<()>>,
    /// The running execution's cancel handle.
    pub running: Mutex<Option<CancelHandle>>,
    /// Host tools and network declared at creation, for each of its executions.
    doors: Mutex<SandboxDoors>,
    /// Its place among the live sessions and sandboxes, given back when it is dropped.
    _reservation: Reservation,
    /// Declared last: holds the workspace's last handle, so its directory is removed off
    /// the async threads.
    _removal: DropOffThread<Workspace>,
}

/// What a client declared when it created a sandbox or session: tools its executions
/// call back (over their event streams) and hosts they may reach.
#[derive(Clone, Default)]
struct SandboxDoors {
    tools: Vec<api::ToolDeclaration>,
    net: Option<Arc<crate::NetPolicy>>,
}

/// What live sessions and sandboxes hold, counted where they are admitted.
#[derive(Debug, Default)]
struct Admission {
    /// Sessions and sandboxes.
    entries: usize,
    /// Sessions' memory caps, summed.
    session_memory: u64,
    /// Pool slots sessions' instances take.
    session_units: usize,
}

/// One session's or sandbox's share of the [`Admission`] counts.
struct Reservation {
    admission: Arc<Mutex<Admission>>,
    memory: u64,
    units: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut admission = self
            .admission
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        admission.entries = admission.entries.saturating_sub(1);
        admission.session_memory = admission.session_memory.saturating_sub(self.memory);
        admission.session_units = admission.session_units.saturating_sub(self.units);
    }
}

impl Sandbox {
    fn doors(&self) -> SandboxDoors {
        self.doors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_doors(&self, doors: SandboxDoors) {
        *self.doors.lock().unwrap_or_else(PoisonError::into_inner) = doors;
    }

    fn touch(&self) {
        *self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn idle(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }

    pub fn describe(&self) -> serde_json::Value {
        let packages = self
            .packages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(crate::deps::PackageSet::installed_names)
            .unwrap_or_default();
        serde_json::json!({
            "id": self.id,
            "kind": if self.session.is_some() { "session" } else { "sandbox" },
            "runtime": self.runtime,
            "open": self.session.as_ref().is_none_or(Session::is_open),
            "calls": self.session.as_ref().map(Session::calls),
            "packages": packages,
            "age_ms": self.created.elapsed().as_millis() as u64,
            "idle_ms": self.idle().as_millis() as u64,
        })
    }
}

/// What every handler shares.
pub struct AppState {
    pub config: ServerConfig,
    pub dvm: Dvm,
    pub sandboxes: Mutex<HashMap<String, Arc<Sandbox>>>,
    /// In-flight runs by id, for cancellation and shutdown.
    pub runs: Mutex<HashMap<String, CancelHandle>>,
    pub submissions: judge0::Submissions,
    pub metrics: Metrics,
    pub limiter: Limiter,
    pub shutting_down: AtomicBool,
    /// Ends the MCP endpoint's open streams on shutdown.
    pub mcp_cancel: tokio_util::sync::CancellationToken,
    /// Where one-shot runs go when the server fronts NATS workers.
    queue: std::sync::OnceLock<Arc<dyn crate::remote::RemoteRunner>>,
    /// The Host and Origin checks (set again with the bound address when serving).
    access: RwLock<access::AccessPolicy>,
    /// Live sessions and sandboxes, their memory caps and pool slots.
    admission: Arc<Mutex<Admission>>,
    /// The most pool slots one instance of a runtime loaded so far takes.
    unit_ceiling: AtomicUsize,
    /// Tool calls waiting for their client's answer, by call id: the run they belong to
    /// and where the answer goes.
    tool_answers: Mutex<HashMap<String, PendingToolCall>>,
    /// The MCP servers code mode calls, and their tools (`--mcp-upstream`).
    upstreams: std::sync::OnceLock<Arc<upstream::Upstreams>>,
}

/// A tool call of a run, waiting for the client that declared the tool.
struct PendingToolCall {
    run_id: String,
    answer: std::sync::mpsc::SyncSender<Result<serde_json::Value, String>>,
}

/// One run the server queues: a script in a runtime, or a call in a session (the facade's
/// [`crate::Job`] is what a one-shot run becomes; see `run_job`).
pub(crate) struct Execution {
    pub runtime: String,
    pub code: String,
    /// The script's file name; `main.py`/`main.mjs` when empty.
    pub name: String,
    pub input: RunInput,
    /// The sandox or session it runs in: a session's interpreter runs the code; a sandbox's
    /// workspace is in `input`. Its running handle is set for the run.
    pub sandbox: Option<Arc<Sandbox>>,
    /// Held until the run ends: one execution at a time per sandbox.
    pub hold: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// Requirements to install first (one-shot runs).
    pub requirements: Vec<String>,
    /// Also install what the script imports that the runtime lacks (one-shot runs; PEP 723
    /// blocks, `requirements.txt` and `package.json` are always read).
    pub auto_deps: bool,
    /// A client-chosen id for cancelling; one is made when `None`.
    pub run_id: Option<String>,
    /// Called once the run has a worker (it stops waiting in the queue).
    pub on_start: Option<Box<dyn FnOnce() + Send>>,
}

impl AppState {
    fn tool_answers_insert(
        &self,
        call_id: &str,
        run_id: &str,
        answer: std::sync::mpsc::SyncSender<Result<serde_json::Value, String>>,
    ) {
        self.tool_answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                call_id.to_string(),
                PendingToolCall {
                    run_id: run_id.to_string(),
                    answer,
                },
            );
    }

    fn tool_answers_remove(&self, call_id: &str) {
        self.tool_answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(call_id);
    }

    /// Forgets the tool calls of run `run_id` still waiting for an answer, once the run has
    /// ended: their handler threads wake at once (with no answer) instead of waiting out
    /// the tools' timeouts, and a late answer finds nothing.
    fn forget_tool_calls(&self, run_id: &str) {
        self.tool_answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, pending| pending.run_id != run_id);
    }

    /// Hands `answer` to the tool call `call_id` of run `run_id`; false when no such call
    /// is waiting.
    fn answer_tool_call(
        &self,
        run_id: &str,
        call_id: &str,
        answer: Result<serde_json::Value, String>,
    ) -> bool {
        let mut waiting = self
            .tool_answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match waiting.get(call_id) {
            Some(pending) if pending.run_id == run_id => waiting
                .remove(call_id)
                .is_some_and(|pending| pending.answer.try_send(answer).is_ok()),
            _ => false,
        }
    }

    pub fn new(config: ServerConfig, dvm: Dvm) -> Arc<AppState> {
        let limiter = Limiter::new(config.workers, config.queue);
        // Entries that do not parse were refused by `ServerConfig::validate`; here they
        // allow nothing.
        let access =
            access::AccessPolicy::new(config.addr, &config.allowed_hosts, &config.allowed_origins)
                .unwrap_or_else(|_| access::AccessPolicy::loopback_only(config.addr));
        let submissions = judge0::Submissions::new(config.judge0_max_bytes, config.judge0_ttl);
        Arc::new(AppState {
            config,
            dvm,
            sandboxes: Mutex::default(),
            runs: Mutex::default(),
            submissions,
            metrics: Metrics::default(),
            limiter,
            shutting_down: AtomicBool::new(false),
            mcp_cancel: tokio_util::sync::CancellationToken::new(),
            queue: std::sync::OnceLock::new(),
            upstreams: std::sync::OnceLock::new(),
            access: RwLock::new(access),
            admission: Arc::default(),
            unit_ceiling: AtomicUsize::new(1),
            tool_answers: Mutex::default(),
        })
    }

    /// Checks a request's Host and Origin.
    pub fn check_access(
        &self,
        uri: &axum::http::Uri,
        headers: &axum::http::HeaderMap,
    ) -> Result<(), ApiError> {
        self.access
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .check(uri, headers)
    }

    /// Binds the Host check to the address actually listened on (port 0 picks one).
    fn bound_to(&self, addr: SocketAddr) {
        if let Ok(policy) = access::AccessPolicy::new(
            addr,
            &self.config.allowed_hosts,
            &self.config.allowed_origins,
        ) {
            *self.access.write().unwrap_or_else(PoisonError::into_inner) = policy;
        }
    }

    /// Live sessions and sandboxes, sessions' memory caps and pool slots (for metrics).
    pub fn admitted(&self) -> (usize, u64, usize) {
        let admission = self
            .admission
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (
            admission.entries,
            admission.session_memory,
            admission.session_units,
        )
    }

    /// Takes a place for a session or sandbox, atomically: the count, and for a session its
    /// memory cap within the budget and its pool slots within what one-shot runs leave.
    fn admit(&self, session: Option<(u64, usize)>) -> Result<Reservation, ApiError> {
        let mut admission = self
            .admission
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if admission.entries >= self.config.max_sandboxes {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                format!(
                    "{} sessions and sandboxes are open, this server's maximum; close one",
                    self.config.max_sandboxes
                ),
            ));
        }
        let (memory, units) = session.unwrap_or((0, 0));
        if session.is_some() {
            let budget = self.config.session_memory_bytes;
            if admission.session_memory.saturating_add(memory) > budget {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "busy",
                    format!(
                        "live sessions already reserve {} of this server's {budget} bytes of \
                         session memory, and this one asks for {memory}; close a session, or \
                         ask for a smaller limits.memory_bytes",
                        admission.session_memory
                    ),
                ));
            }
            let reserve = self
                .config
                .reserved_runs
                .saturating_mul(self.unit_ceiling.load(Ordering::Acquire));
            let room = self.config.pool_slots.saturating_sub(reserve);
            if admission.session_units.saturating_add(units) > room {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "capacity",
                    "sessions hold every sandbox slot this server leaves them (the rest is \
                     kept for one-shot runs); close a session or retry later",
                ));
            }
        }
        admission.entries += 1;
        admission.session_memory += memory;
        admission.session_units += units;
        Ok(Reservation {
            admission: self.admission.clone(),
            memory,
            units,
        })
    }

    /// Gives the upstream MCP servers' tools to later runs whose code asks for `dvm_tools`
    /// (set once, before serving: MCP connections list them in `run_code`'s description).
    pub fn set_upstreams(&self, upstreams: upstream::Upstreams) {
        let _ = self.upstreams.set(Arc::new(upstreams));
    }

    pub fn upstreams(&self) -> Option<&Arc<upstream::Upstreams>> {
        self.upstreams
            .get()
            .filter(|upstreams| !upstreams.is_empty())
    }

    /// The upstream tools for a run of `code`, when it asks for them.
    pub(crate) fn upstream_tools(&self, code: &str) -> Option<Arc<crate::HostTools>> {
        self.upstreams()
            .filter(|_| upstream::wants_tools(code))
            .map(|upstreams| upstreams.tools().clone())
    }

    /// Sends later one-shot runs without files to NATS workers.
    pub fn set_queue(&self, queue: impl crate::remote::RemoteRunner) {
        let _ = self.queue.set(Arc::new(queue));
    }

    /// The runtime `id`, installed and compiled if needed (off the async threads).
    pub async fn runtime(&self, id: &str) -> Result<Runtime, ApiError> {
        let dvm = self.dvm.clone();
        let id = id.to_string();
        let runtime = tokio::task::spawn_blocking(move || dvm.runtime(&id))
            .await
            .map_err(|e| {
                ApiError::from(Error::from(crate::error::HostError::Task {
                    what: "loading the runtime",
                    source: Box::new(e),
                }))
            })?
            .map_err(ApiError::from)?;
        self.unit_ceiling
            .fetch_max(runtime.pool_units(), Ordering::AcqRel);
        Ok(runtime)
    }

    /// Runs a job under the limiter and the request timeout; returns the run id and outcome.
    pub(crate) async fn execute(
        self: &Arc<Self>,
        mut job: Execution,
    ) -> Result<(String, Outcome), ApiError> {
        self.refuse_when_shutting_down()?;
        let run_id = job.run_id.take().unwrap_or_else(new_id);
        let cancel = job.input.cancel.clone().unwrap_or_default();
        job.input.cancel = Some(cancel.clone());
        {
            let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
            if runs.contains_key(&run_id) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("a run with id `{run_id}` is in flight"),
                ));
            }
            runs.insert(run_id.clone(), cancel.clone());
        }
        let timeout = job.input.limits.deadline + self.config.request_slack;
        let sandbox = job.sandbox.clone();
        if let Some(sandbox) = &sandbox {
            *sandbox
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(cancel.clone());
        }
        // The run goes on in a task of its own that holds the worker, the sandbox and the
        // run's registration until the sandbox is done, whatever happens to this request.
        let registration = Registration {
            state: self.clone(),
            run_id: run_id.clone(),
            sandbox,
            _hold: job.hold.take(),
        };
        let state = self.clone();
        let task = tokio::spawn(async move {
            let _registration = registration;
            state.work(job, timeout).await
        });
        // A request that goes away (its client hung up) cancels its run.
        let mut abandoned = CancelOnDrop(Some(cancel.clone()));
        let result = match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(ApiError::from(Error::from(crate::error::HostError::Task {
                what: "the run",
                source: Box::new(e),
            }))),
            Err(_) => {
                cancel.cancel();
                Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    format!(
                        "the request took over {} ms (queueing, installing and running); the \
                         run was cancelled (a run queued to NATS workers may still finish there)",
                        timeout.as_millis()
                    ),
                ))
            }
        };
        abandoned.0 = None;
        result.map(|outcome| (run_id, outcome))
    }

    /// A job's run: a worker, then the NATS queue or a local sandbox.
    async fn work(
        self: Arc<Self>,
        mut job: Execution,
        timeout: Duration,
    ) -> Result<Outcome, ApiError> {
        let _permit = self.limiter.acquire().await?;
        if let Some(started) = job.on_start.take() {
            started();
        }
        if let Some(queue) = self.queue.get()
            && job.sandbox.is_none()
            && job.input.workspace.is_none()
            && job.input.on_output.is_none()
            // Host tools and the network are answered by this process.
            && job.input.tools.is_none()
            && job.input.net.is_none()
        {
            return self.remote(queue, job, timeout).await;
        }
        let runtime = self.runtime(&job.runtime).await?;
        let in_flight = self.metrics.start();
        let ran = tokio::task::spawn_blocking(move || run_job(&runtime, job)).await;
        drop(in_flight);
        let (runtime_id, outcome) = ran
            .map_err(|e| {
                ApiError::from(Error::from(crate::error::HostError::Task {
                    what: "the run",
                    source: Box::new(e),
                }))
            })?
            .map_err(ApiError::from)?;
        self.metrics.record(&runtime_id, &outcome);
        Ok(outcome)
    }

    /// Runs a job on a NATS worker and waits for its outcome.
    async fn remote(
        &self,
        queue: &Arc<dyn crate::remote::RemoteRunner>,
        job: Execution,
        timeout: Duration,
    ) -> Result<Outcome, ApiError> {
        let name = match (
            job.name.is_empty(),
            crate::Catalog::embedded().get(&job.runtime),
        ) {
            (false, _) => job.name.clone(),
            (true, Some(spec)) => spec.language.default_script().to_string(),
            // The worker refuses the unknown runtime by name.
            (true, None) => crate::Language::Python.default_script().to_string(),
        };
        let run = crate::remote::RemoteRun {
            runtime: &job.runtime,
            name: &name,
            code: &job.code,
            input: &job.input,
            requirements: &job.requirements,
            auto_deps: job.auto_deps,
        };
        let in_flight = self.metrics.start();
        let outcome = queue.run_remote(run, timeout).await?;
        drop(in_flight);
        self.metrics.record(&job.runtime, &outcome);
        Ok(outcome)
    }

    /// Cancels a run by id; false when there is no such run.
    pub fn cancel_run(&self, run_id: &str) -> bool {
        match self
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(run_id)
        {
            Some(cancel) => {
                cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Makes a sandbox, or a session when `session` is true.
    pub async fn create_sandbox(
        &self,
        runtime_id: &str,
        session: bool,
        requirements: Vec<String>,
        env: Vec<(String, String)>,
        limits: Limits,
    ) -> Result<Arc<Sandbox>, ApiError> {
        self.refuse_when_shutting_down()?;
        let runtime = self.runtime(runtime_id).await?;
        if session && !runtime.supports_sessions() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                format!(
                    "`{runtime_id}` has no sessions: its guest is a WASI command that exits \
                     after each program; use the `python` or `javascript` runtime, or a \
                     sandbox (files carry over, interpreter state does not)"
                ),
            ));
        }
        // The place is taken before anything is made, under one lock: concurrent creations
        // past a bound are refused, not made and counted afterwards.
        let reservation =
            self.admit(session.then(|| (limits.memory_bytes, runtime.pool_units())))?;
        let id = new_id();
        // The reservation goes with the work: a request that goes away mid-creation keeps
        // its place until what was made is dropped.
        let built = tokio::task::spawn_blocking({
            let env = env.clone();
            move || -> Result<_, Error> {
                let reservation = reservation;
                let packages = if requirements.is_empty() {
                    None
                } else {
                    Some(runtime.install_packages(&crate::PackageRequest {
                        requirements,
                        ..crate::PackageRequest::default()
                    })?)
                };
                let workspace = Workspace::new()?;
                let session = if session {
                    Some(runtime.session(SessionOptions {
                        workspace: Some(workspace.clone()),
                        packages: packages.clone(),
                        env,
                    })?)
                } else {
                    None
                };
                Ok((workspace, session, packages, reservation))
            }
        })
        .await
        .map_err(|e| {
            ApiError::from(Error::from(crate::error::HostError::Task {
                what: "creating the sandbox",
                source: Box::new(e),
            }))
        })??;
        let (workspace, session, packages, reservation) = built;
        Ok(self.register(
            id,
            runtime_id,
            (workspace, session, packages),
            env,
            limits,
            reservation,
        ))
    }

    /// Refuses new sandboxes and sessions once the server is shutting down.
    fn refuse_when_shutting_down(&self) -> Result<(), ApiError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            ));
        }
        Ok(())
    }

    /// Adds a made sandbox (or session) to the live ones.
    fn register(
        &self,
        id: String,
        runtime_id: &str,
        (workspace, session, packages): (
            Workspace,
            Option<Session>,
            Option<crate::deps::PackageSet>,
        ),
        env: Vec<(String, String)>,
        limits: Limits,
        reservation: Reservation,
    ) -> Arc<Sandbox> {
        let now = Instant::now();
        let removal = DropOffThread::new(workspace.clone());
        let sandbox = Arc::new(Sandbox {
            id: id.clone(),
            runtime: runtime_id.to_string(),
            workspace,
            session,
            packages: Mutex::new(packages),
            env,
            limits,
            created: now,
            last_used: Mutex::new(now),
            busy: Arc::default(),
            running: Mutex::new(None),
            doors: Mutex::default(),
            _reservation: reservation,
            _removal: removal,
        });
        self.sandboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, sandbox.clone());
        sandbox
    }

    /// Sessions made from a snapshot on disk (one) or as forks of a live session (`count`),
    /// each admitted as a new session is, with `limits` as their default limits.
    pub async fn copy_session(
        &self,
        from: SessionCopy,
        count: usize,
        limits: Limits,
    ) -> Result<Vec<Arc<Sandbox>>, ApiError> {
        self.refuse_when_shutting_down()?;
        let (runtime_id, env) = match &from {
            SessionCopy::Snapshot { runtime, .. } => (runtime.clone(), Vec::new()),
            SessionCopy::Fork(parent) => (parent.runtime.clone(), parent.env.clone()),
        };
        let runtime = self.runtime(&runtime_id).await?;
        let mut reservations = Vec::with_capacity(count);
        for _ in 0..count {
            reservations.push(self.admit(Some((limits.memory_bytes, runtime.pool_units())))?);
        }
        let made = tokio::task::spawn_blocking(move || -> Result<Vec<Session>, Error> {
            match from {
                SessionCopy::Snapshot { id, .. } => Ok(vec![runtime.resume(&id)?]),
                SessionCopy::Fork(parent) => match &parent.session {
                    Some(session) => session.fork(count),
                    None => Err(Error::InvalidInput(format!(
                        "`{}` is a sandbox, not a session: only sessions fork",
                        parent.id
                    ))),
                },
            }
        })
        .await
        .map_err(|e| {
            ApiError::from(Error::from(crate::error::HostError::Task {
                what: "copying the session",
                source: Box::new(e),
            }))
        })??;
        Ok(made
            .into_iter()
            .zip(reservations)
            .map(|(session, reservation)| {
                let workspace = session.workspace().clone();
                self.register(
                    new_id(),
                    &runtime_id,
                    (workspace, Some(session), None),
                    env.clone(),
                    limits.clone(),
                    reservation,
                )
            })
            .collect())
    }

    pub fn sandbox(&self, id: &str) -> Result<Arc<Sandbox>, ApiError> {
        let sandbox = self
            .sandboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("session or sandbox", id))?;
        sandbox.touch();
        Ok(sandbox)
    }

    /// Removes and closes a sandbox; its running execution is cancelled.
    pub async fn close_sandbox(&self, id: &str) -> Result<(), ApiError> {
        let sandbox = self
            .sandboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
            .ok_or_else(|| ApiError::not_found("session or sandbox", id))?;
        close(sandbox).await;
        Ok(())
    }

    /// Closes sessions and sandboxes idle or alive past their bounds, and sessions that
    /// ended themselves (exit(), a limit).
    pub async fn reap(&self) {
        let expired: Vec<Arc<Sandbox>> = {
            let mut sandboxes = self
                .sandboxes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let ids: Vec<String> = sandboxes
                .values()
                .filter(|s| {
                    let running = s
                        .running
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .is_some();
                    (s.idle() >= self.config.idle_timeout && !running)
                        || s.created.elapsed() >= self.config.max_lifetime
                        || s.session.as_ref().is_some_and(|s| !s.is_open())
                })
                .map(|s| s.id.clone())
                .collect();
            ids.iter().filter_map(|id| sandboxes.remove(id)).collect()
        };
        for sandbox in expired {
            close(sandbox).await;
        }
    }

    /// Cancels every in-flight run and closes every session and sandbox.
    pub async fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.limiter.close();
        for cancel in self
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            cancel.cancel();
        }
        let all: Vec<Arc<Sandbox>> = self
            .sandboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, s)| s)
            .collect();
        for sandbox in all {
            close(sandbox).await;
        }
    }
}

/// A run's place in the server while its sandbox works: removed from the runs in flight, its
/// sandbox marked idle (and its hold released) when dropped.
struct Registration {
    state: Arc<AppState>,
    run_id: String,
    sandbox: Option<Arc<Sandbox>>,
    _hold: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.state
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.run_id);
        if let Some(sandbox) = self.sandbox.take() {
            *sandbox
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
            sandbox.touch();
            // When it was closed meanwhile, this is the last hold: its session and workspace
            // are freed off the async threads.
            drop_blocking(sandbox);
        }
    }
}

/// Holds a value and drops it on a blocking thread (a workspace's removal walks and deletes
/// a directory tree). Keep one beside other handles to the same workspace, declared after
/// them: it then holds the last one.
pub(crate) struct DropOffThread<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> DropOffThread<T> {
    pub(crate) fn new(value: T) -> Self {
        DropOffThread(Some(value))
    }
}

impl<T: Send + 'static> Drop for DropOffThread<T> {
    fn drop(&mut self) {
        if let Some(value) = self.0.take() {
            drop_blocking(value);
        }
    }
}

/// Drops `value` on a blocking thread when called from async code (freeing a session joins
/// its thread; freeing a workspace removes a directory tree).
fn drop_blocking<T: Send + 'static>(value: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(move || drop(value));
        }
        Err(_) => drop(value),
    }
}

/// Cancels the run when dropped while still armed.
struct CancelOnDrop(Option<CancelHandle>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            cancel.cancel();
        }
    }
}

/// Cancels a sandbox's running execution and closes its session off the async threads.
async fn close(sandbox: Arc<Sandbox>) {
    if let Some(cancel) = sandbox
        .running
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
    {
        cancel.cancel();
    }
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(session) = &sandbox.session {
            session.close();
        }
    })
    .await;
}

/// Installs `more` requirements beside an existing set (off the async threads).
pub(super) async fn install_more(
    runtime: Runtime,
    current: Option<&crate::deps::PackageSet>,
    more: Vec<String>,
) -> Result<crate::deps::PackageSet, Error> {
    let mut requirements = current
        .map(crate::deps::PackageSet::pinned)
        .unwrap_or_default();
    requirements.extend(more);
    tokio::task::spawn_blocking(move || {
        runtime.install_packages(&crate::PackageRequest {
            requirements,
            ..crate::PackageRequest::default()
        })
    })
    .await
    .map_err(|e| crate::error::HostError::Task {
        what: "the install",
        source: Box::new(e),
    })?
}

/// Runs a job on the current (blocking) thread: a session's turn, or a one-shot
/// [`crate::Job`] (in a sandbox's workspace, with its packages, when it has one).
fn run_job(runtime: &Runtime, job: Execution) -> Result<(String, Outcome), Error> {
    let Execution {
        code,
        name,
        input,
        sandbox,
        requirements,
        auto_deps,
        ..
    } = job;
    if let Some(session) = sandbox.as_ref().and_then(|s| s.session.as_ref()) {
        return Ok((runtime.id().to_string(), session.run(&code, &input)?));
    }
    let one_shot = crate::Job {
        source: crate::JobSource::Code {
            code: code.into_bytes(),
            name: (!name.is_empty()).then_some(name),
        },
        requirements,
        discovery: crate::Discovery {
            auto_deps,
            ..crate::Discovery::default()
        },
        input,
        ..crate::Job::code(runtime.id(), "")
    };
    let done = runtime.warmed_for(&one_shot).run_job(&one_shot)?;
    Ok((done.runtime, done.outcome))
}

/// The whole HTTP application: native API, Judge0 endpoints, MCP, metrics, OpenAPI.
pub fn router(state: Arc<AppState>) -> Router {
    let mcp = mcp::http_service(state.clone());
    let max_body = state.config.max_body_bytes;
    api::routes()
        .merge(judge0::routes())
        .with_state(state.clone())
        .nest_service("/mcp", mcp)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(max_body))
        .layer(axum::middleware::from_fn_with_state(state, api::guard))
}

/// Serves until `shutdown` resolves, then stops accepting, gives in-flight runs the grace
/// period and cancels what is left.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    if let Ok(bound) = listener.local_addr() {
        state.bound_to(bound);
    }
    let reaper = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                state.reap().await;
                state.submissions.sweep();
            }
        })
    };
    let grace = state.config.shutdown_grace;
    let on_signal = {
        let state = state.clone();
        async move {
            shutdown.await;
            state.shutting_down.store(true, Ordering::Release);
            // Open MCP streams would hold the graceful shutdown up.
            state.mcp_cancel.cancel();
            // In-flight runs get the grace period; then they are cancelled.
            let state = state.clone();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                state.shut_down().await;
            });
        }
    };
    let app = router(state.clone());
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(on_signal)
        .await
        .map_err(|source| {
            Error::from(crate::error::HostError::Io {
                action: "serve".into(),
                source,
            })
        });
    reaper.abort();
    state.shut_down().await;
    served
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::OutputOverflow;

    #[test]
    fn clamping_lowers_to_the_maxima_and_keeps_what_the_server_does_not_cap() {
        let max = MaxLimits {
            memory_bytes: 100,
            disk_bytes: 200,
            output_bytes: 30,
            fuel: Some(1_000),
            files: 5,
            open_files: 7,
        };
        let asked = Limits {
            deadline: Duration::from_secs(60),
            fuel: None,
            memory_bytes: 1_000,
            stdout_bytes: 40,
            stderr_bytes: 20,
            output_overflow: OutputOverflow::Stop,
            table_elements: u64::MAX - 1,
            disk_bytes: 150,
            files: 9,
            open_files: 0,
        };
        let clamped = max.clamp(asked.clone(), Duration::from_secs(10));
        assert_eq!(clamped.deadline, Duration::from_secs(10));
        assert_eq!(clamped.fuel, Some(1_000));
        assert_eq!(clamped.memory_bytes, 100);
        assert_eq!((clamped.stdout_bytes, clamped.stderr_bytes), (30, 20));
        assert_eq!(clamped.output_overflow, OutputOverflow::Stop);
        assert_eq!(clamped.table_elements, u64::MAX - 1);
        assert_eq!((clamped.disk_bytes, clamped.files), (150, 5));
        assert_eq!(clamped.open_files, 1);

        let unbounded = MaxLimits { fuel: None, ..max };
        let clamped = unbounded.clamp(
            Limits {
                fuel: Some(5),
                open_files: 300,
                ..asked
            },
            Duration::from_secs(10),
        );
        assert_eq!(clamped.fuel, Some(5));
        assert_eq!(clamped.open_files, 7);
    }
}
