//! Deterministic runs: the guest's clocks are virtual and its random bytes come from a seed,
//! so the same program with the same inputs gives the same outcome on any run and machine.
//!
//! The virtual clocks start at 2000-01-01T00:00:00Z (wall) and 0 (monotonic), and advance by
//! exactly 1 µs on every reading, so code that waits for time to pass sees it pass. A sleep
//! moves them forward to its wake-up at once, without waiting. Random bytes (`random_get`,
//! hence Python's `os.urandom`, hash seeds and `random`) come from a ChaCha generator
//! seeded with the run's seed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::SeedableRng as _;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// Seconds from the Unix epoch to 2000-01-01T00:00:00Z, where the virtual wall clock starts.
const WALL_START_SECS: u64 = 946_684_800;
/// How far the virtual clocks move on each reading.
pub(crate) const TICK_NS: u64 = 1_000;

/// What makes a run deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Determinism {
    /// Seeds every random byte the guest sees.
    pub seed: u64,
}

/// The seed `--deterministic` uses unless `--seed` says otherwise.
pub const DEFAULT_SEED: u64 = 0;

impl Default for Determinism {
    fn default() -> Self {
        Determinism { seed: DEFAULT_SEED }
    }
}

/// A run's virtual time, shared by its wall and monotonic clocks and its sleeps.
#[derive(Debug, Default)]
pub(crate) struct VirtualTime {
    /// Nanoseconds since the run started.
    elapsed: AtomicU64,
}

impl VirtualTime {
    /// Reads the time, then moves it one tick on.
    fn tick(&self) -> u64 {
        self.elapsed.fetch_add(TICK_NS, Ordering::AcqRel)
    }

    /// The time now, without moving it.
    pub(crate) fn now_ns(&self) -> u64 {
        self.elapsed.load(Ordering::Acquire)
    }

    /// The wall-clock time now, in nanoseconds since the Unix epoch.
    pub(crate) fn wall_ns(&self) -> u64 {
        (WALL_START_SECS * 1_000_000_000).saturating_add(self.now_ns())
    }

    /// Moves the time forward to `ns` (never back).
    pub(crate) fn advance_to(&self, ns: u64) {
        self.elapsed.fetch_max(ns, Ordering::AcqRel);
    }
}

/// The guest's monotonic clock over virtual time.
pub(crate) struct VirtualMonotonic(pub Arc<VirtualTime>);

impl HostMonotonicClock for VirtualMonotonic {
    fn resolution(&self) -> u64 {
        TICK_NS
    }

    fn now(&self) -> u64 {
        self.0.tick()
    }
}

/// The guest's wall clock over virtual time.
pub(crate) struct VirtualWall(pub Arc<VirtualTime>);

impl HostWallClock for VirtualWall {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(TICK_NS)
    }

    fn now(&self) -> Duration {
        Duration::from_secs(WALL_START_SECS) + Duration::from_nanos(self.0.tick())
    }
}

/// The generator behind `random_get` for `seed`, and a second one for the insecure API.
pub(crate) fn generators(seed: u64) -> (rand::rngs::StdRng, rand::rngs::StdRng) {
    (
        rand::rngs::StdRng::seed_from_u64(seed),
        rand::rngs::StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
    )
}
