//! Every resource limit of a run, with its default, and the one place they are applied to a
//! store.

use std::time::Duration;

use crate::error::Error;

/// Default wall-clock deadline of a run.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// Default cap on the guest's linear memory.
pub const DEFAULT_MEMORY_BYTES: u64 = 512 * MIB;
/// Default cap on each of stdout and stderr.
pub const DEFAULT_OUTPUT_BYTES: u64 = MIB;
/// Default cap on the elements of any one table.
pub const DEFAULT_TABLE_ELEMENTS: u64 = 1 << 16;
/// Default cap on bytes a run may write to files.
pub const DEFAULT_DISK_BYTES: u64 = 1024 * MIB;
/// Default cap on files (and directories and links) a run may create.
pub const DEFAULT_FILES: u64 = 10_000;
/// Default cap on files a run may have open at once.
pub const DEFAULT_OPEN_FILES: u64 = 256;
/// The longest deadline a run may have.
pub const MAX_DEADLINE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The largest output cap per stream (kept output lives in host memory).
pub const MAX_OUTPUT_BYTES: u64 = 1024 * MIB;
/// The largest linear memory a wasm32 module can address.
pub const MAX_MEMORY_BYTES: u64 = 4 * 1024 * MIB;

const MIB: u64 = 1024 * 1024;

/// What happens when a guest writes more than its output cap.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum OutputOverflow {
    /// Keep the first bytes up to the cap, report the rest to the guest as written and let it
    /// run on; the outcome records the truncation.
    #[default]
    Truncate,
    /// Stop the guest at the first write past the cap (`limit: "output"`).
    Stop,
}

/// The resource limits of one run. Plain data: build it, adjust fields, pass it to a run.
///
/// Every limit is enforced while the guest runs, not checked afterwards.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "WireLimits", into = "WireLimits")]
pub struct Limits {
    /// Wall-clock deadline from the start of the run, including time blocked in host calls
    /// such as sleeps. Default: [`DEFAULT_DEADLINE`] (10 s).
    pub deadline: Duration,
    /// Fuel budget (roughly one unit per wasm instruction). Default: `None`, unlimited.
    pub fuel: Option<u64>,
    /// Cap on linear memory in bytes; growth past it is refused. Default: 512 MiB.
    pub memory_bytes: u64,
    /// Bytes of stdout kept. Default: 1 MiB.
    pub stdout_bytes: u64,
    /// Bytes of stderr kept. Default: 1 MiB.
    pub stderr_bytes: u64,
    /// What a write past an output cap does. Default: [`OutputOverflow::Truncate`].
    pub output_overflow: OutputOverflow,
    /// Cap on the elements of each table; growth past it is refused. Default: 65,536.
    pub table_elements: u64,
    /// Cap on how far the run's writes, appends and resizes move the ends of files (the
    /// workspace, `/tmp`, writable grants), holes included and never refunded; the call
    /// that would cross it stops the run before it changes anything (`limit: "disk"`).
    /// Default: 1 GiB.
    pub disk_bytes: u64,
    /// Cap on files, directories and links the run creates; the creation past it stops the
    /// run (`limit: "files"`). Default: 10,000.
    pub files: u64,
    /// Cap on files the guest has open at once (interpreters hold a few of their own);
    /// the open past it stops the run (`limit: "files"`). Default: 256.
    pub open_files: u64,
}

/// [`Limits`] as they travel on the NATS queue and as [`Limits`] serialize: the deadline in
/// whole milliseconds (rounded up), the overflow behaviour as `stop_on_overflow`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WireLimits {
    pub deadline_ms: u64,
    pub fuel: Option<u64>,
    pub memory_bytes: u64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stop_on_overflow: bool,
    pub table_elements: u64,
    pub disk_bytes: u64,
    pub files: u64,
    pub open_files: u64,
}

impl From<&Limits> for WireLimits {
    fn from(l: &Limits) -> Self {
        WireLimits {
            // Rounded up: a deadline under a millisecond must not become zero.
            deadline_ms: u64::try_from(l.deadline.as_nanos().div_ceil(1_000_000))
                .unwrap_or(u64::MAX),
            fuel: l.fuel,
            memory_bytes: l.memory_bytes,
            stdout_bytes: l.stdout_bytes,
            stderr_bytes: l.stderr_bytes,
            stop_on_overflow: l.output_overflow == OutputOverflow::Stop,
            table_elements: l.table_elements,
            disk_bytes: l.disk_bytes,
            files: l.files,
            open_files: l.open_files,
        }
    }
}

impl From<&WireLimits> for Limits {
    fn from(w: &WireLimits) -> Self {
        Limits {
            deadline: Duration::from_millis(w.deadline_ms),
            fuel: w.fuel,
            memory_bytes: w.memory_bytes,
            stdout_bytes: w.stdout_bytes,
            stderr_bytes: w.stderr_bytes,
            output_overflow: if w.stop_on_overflow {
                OutputOverflow::Stop
            } else {
                OutputOverflow::Truncate
            },
            table_elements: w.table_elements,
            disk_bytes: w.disk_bytes,
            files: w.files,
            open_files: w.open_files,
        }
    }
}

impl From<Limits> for WireLimits {
    fn from(l: Limits) -> Self {
        WireLimits::from(&l)
    }
}

impl From<WireLimits> for Limits {
    fn from(w: WireLimits) -> Self {
        Limits::from(&w)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: DEFAULT_DEADLINE,
            fuel: None,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            stdout_bytes: DEFAULT_OUTPUT_BYTES,
            stderr_bytes: DEFAULT_OUTPUT_BYTES,
            output_overflow: OutputOverflow::Truncate,
            table_elements: DEFAULT_TABLE_ELEMENTS,
            disk_bytes: DEFAULT_DISK_BYTES,
            files: DEFAULT_FILES,
            open_files: DEFAULT_OPEN_FILES,
        }
    }
}

impl Limits {
    /// These limits with every one capped at `max`'s (no fuel budget becomes `max`'s, if
    /// any; the overflow behaviour is kept): what a worker does to a request's limits.
    pub fn capped_at(&self, max: &Limits) -> Limits {
        Limits {
            deadline: self.deadline.min(max.deadline),
            fuel: match (self.fuel, max.fuel) {
                (Some(fuel), Some(cap)) => Some(fuel.min(cap)),
                (None, cap) => cap,
                (fuel, None) => fuel,
            },
            memory_bytes: self.memory_bytes.min(max.memory_bytes),
            stdout_bytes: self.stdout_bytes.min(max.stdout_bytes),
            stderr_bytes: self.stderr_bytes.min(max.stderr_bytes),
            output_overflow: self.output_overflow,
            table_elements: self.table_elements.min(max.table_elements),
            disk_bytes: self.disk_bytes.min(max.disk_bytes),
            files: self.files.min(max.files),
            open_files: self.open_files.min(max.open_files),
        }
    }

    /// Checks that the limits can be enforced: a deadline above zero, a memory cap a wasm32
    /// module can use.
    pub fn validate(&self) -> Result<(), Error> {
        if self.deadline.is_zero() {
            return Err(Error::InvalidLimits(
                "the deadline must be greater than zero".into(),
            ));
        }
        if self.deadline > MAX_DEADLINE {
            return Err(Error::InvalidLimits(format!(
                "a deadline of {:?} is longer than the 7-day maximum",
                self.deadline
            )));
        }
        for (stream, cap) in [("stdout", self.stdout_bytes), ("stderr", self.stderr_bytes)] {
            if cap > MAX_OUTPUT_BYTES {
                return Err(Error::InvalidLimits(format!(
                    "the {stream} cap of {cap} bytes is above the 1 GiB maximum (kept output \
                     is held in memory)"
                )));
            }
        }
        if self.memory_bytes > MAX_MEMORY_BYTES {
            return Err(Error::InvalidLimits(format!(
                "the memory cap of {} bytes is above the 4 GiB a wasm32 guest can address",
                self.memory_bytes
            )));
        }
        if self.open_files == 0 {
            return Err(Error::InvalidLimits(
                "an open-files cap of 0 cannot run anything; interpreters open a few files \
                 of their own"
                    .into(),
            ));
        }
        if self.fuel == Some(0) {
            return Err(Error::InvalidLimits(
                "a fuel budget of 0 cannot run anything; omit it for unlimited fuel".into(),
            ));
        }
        Ok(())
    }
}

/// Limits to change over a base, each one left out keeping the base's: how command-line
/// flags, profiles and API requests state limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    pub deadline: Option<Duration>,
    pub fuel: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// The cap on each of stdout and stderr.
    pub output_bytes: Option<u64>,
    pub disk_bytes: Option<u64>,
    pub files: Option<u64>,
    pub open_files: Option<u64>,
    pub output_overflow: Option<OutputOverflow>,
}

impl LimitOverrides {
    /// `base` with these applied, validated.
    pub fn apply(&self, base: Limits) -> Result<Limits, Error> {
        let mut limits = base;
        if let Some(deadline) = self.deadline {
            limits.deadline = deadline;
        }
        if let Some(fuel) = self.fuel {
            limits.fuel = Some(fuel);
        }
        if let Some(memory) = self.memory_bytes {
            limits.memory_bytes = memory;
        }
        if let Some(output) = self.output_bytes {
            limits.stdout_bytes = output;
            limits.stderr_bytes = output;
        }
        if let Some(disk) = self.disk_bytes {
            limits.disk_bytes = disk;
        }
        if let Some(files) = self.files {
            limits.files = files;
        }
        if let Some(open_files) = self.open_files {
            limits.open_files = open_files;
        }
        if let Some(overflow) = self.output_overflow {
            limits.output_overflow = overflow;
        }
        limits.validate()?;
        Ok(limits)
    }
}

/// Which limit stopped a run.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum LimitKind {
    /// The wall-clock deadline passed.
    Deadline,
    /// The fuel budget ran out.
    Fuel,
    /// The guest failed after being refused memory past its cap.
    Memory,
    /// The guest failed after being refused table growth past its cap.
    Table,
    /// The guest wrote past an output cap under [`OutputOverflow::Stop`].
    Output,
    /// The run was cancelled by the host.
    Cancelled,
    /// The guest's files grew past its disk quota (holes count).
    Disk,
    /// The guest created more files than its quota, or had too many open.
    Files,
    /// The guest called host tools more times than the run's budget.
    #[serde(rename = "tool_calls")]
    #[strum(serialize = "tool_calls")]
    ToolCalls,
}

impl LimitKind {
    /// The kind's name, as in JSON (`"deadline"`, `"fuel"`…).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The per-store half of the limits: wasmtime asks it before every memory or table growth.
#[derive(Debug)]
pub(crate) struct ResourceGuard {
    memory_bytes: u64,
    table_elements: u64,
    /// Largest linear memory the guest has been granted.
    pub(crate) memory_peak: u64,
    pub(crate) memory_refused: bool,
    pub(crate) table_refused: bool,
}

impl ResourceGuard {
    /// Takes a new run's caps, keeping what was measured (a prestarted sandbox).
    pub(crate) fn rebind(&mut self, limits: &Limits) {
        self.memory_bytes = limits.memory_bytes;
        self.table_elements = limits.table_elements;
        self.memory_refused = false;
        self.table_refused = false;
    }

    pub(crate) fn new(limits: &Limits) -> Self {
        ResourceGuard {
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
            memory_peak: 0,
            memory_refused: false,
            table_refused: false,
        }
    }
}

/// Whether growing to `desired` stays within both dvm's cap and the module's own maximum.
fn within(desired: usize, cap: u64, maximum: Option<usize>) -> bool {
    desired as u64 <= cap && maximum.is_none_or(|max| desired <= max)
}

impl wasmtime::ResourceLimiter for ResourceGuard {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = within(desired, self.memory_bytes, maximum);
        if allowed {
            self.memory_peak = self.memory_peak.max(desired as u64);
        } else {
            self.memory_refused = true;
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // The pool or the OS refused memory the limit allowed: the guest sees -1 as for any
        // refusal, and a failure after it counts as hitting the memory limit.
        self.memory_refused = true;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = within(desired, self.table_elements, maximum);
        if !allowed {
            self.table_refused = true;
        }
        Ok(allowed)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.table_refused = true;
        Ok(())
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        8
    }

    fn memories(&self) -> usize {
        1
    }
}

/// Fuel given when no budget is set: wasmtime keeps fuel as a signed 64-bit count, and this
/// lasts centuries at a billion units a second.
pub(crate) const UNLIMITED_FUEL: u64 = i64::MAX as u64;

/// The fuel half of the limits, armed once the guest is instantiated so that instantiation
/// is not charged.
pub(crate) struct FuelMeter {
    budget: u64,
}

impl FuelMeter {
    pub(crate) fn new(limits: &Limits) -> Self {
        FuelMeter {
            budget: limits.fuel.unwrap_or(UNLIMITED_FUEL),
        }
    }

    pub(crate) fn arm(&self, mut store: impl wasmtime::AsContextMut) -> Result<(), Error> {
        store
            .as_context_mut()
            .set_fuel(self.budget)
            .map_err(|e| crate::error::HostError::wasmtime("set fuel", e).into())
    }

    /// Fuel the guest has burned since [`FuelMeter::arm`].
    pub(crate) fn used<T>(&self, store: &wasmtime::Store<T>) -> u64 {
        self.budget
            .saturating_sub(store.get_fuel().unwrap_or(self.budget))
    }
}
