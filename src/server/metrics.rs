//! Prometheus metrics in the text exposition format: runs by runtime, status and limit, run
//! durations, result-cache hits, runs in flight, queue depth, live sessions and sandboxes,
//! HTTP responses by status code.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::outcome::Outcome;
use crate::results::CacheStatus;

/// Upper bounds of the run-duration histogram, in seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Recorded {
    /// (runtime, status, limit) → runs.
    runs: BTreeMap<(String, String, String), u64>,
    /// runtime → durations.
    durations: BTreeMap<String, Histogram>,
    /// status code → responses.
    http: BTreeMap<u16, u64>,
    cache_hits: u64,
    cache_misses: u64,
}

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
    recorded: Mutex<Recorded>,
    in_flight: Arc<AtomicU64>,
}

/// Counts one run in flight while it lives.
pub struct InFlight(Arc<AtomicU64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Metrics {
    pub fn start(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.in_flight.clone())
    }

    /// Records a finished run.
    pub fn record(&self, runtime: &str, outcome: &Outcome) {
        let mut recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
        let status = serde_json::to_value(outcome.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let limit = outcome.limit.map(|l| l.as_str()).unwrap_or("").to_string();
        *recorded
            .runs
            .entry((runtime.to_string(), status, limit))
            .or_default() += 1;
        let seconds = outcome.duration.as_secs_f64();
        let histogram = recorded.durations.entry(runtime.to_string()).or_default();
        if histogram.counts.is_empty() {
            histogram.counts = vec![0; BUCKETS.len()];
        }
        for (bound, count) in BUCKETS.iter().zip(histogram.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        histogram.sum += seconds;
        histogram.count += 1;
        match outcome.cache {
            CacheStatus::Hit => recorded.cache_hits += 1,
            CacheStatus::Miss => recorded.cache_misses += 1,
            CacheStatus::Off => {}
        }
    }

    pub fn http(&self, status: u16) {
        *self
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .http
            .entry(status)
            .or_default() += 1;
    }

    /// The exposition text.
    pub fn render(&self, sessions: usize, sandboxes: usize, queued: usize) -> String {
        let recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP dvm_runs_total Runs finished, by runtime, status and limit."
        );
        let _ = writeln!(out, "# TYPE dvm_runs_total counter");
        for ((runtime, status, limit), count) in &recorded.runs {
            let _ = writeln!(
                out,
                "dvm_runs_total{{runtime=\"{runtime}\",status=\"{status}\",limit=\"{limit}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP dvm_run_duration_seconds Wall-clock time of runs."
        );
        let _ = writeln!(out, "# TYPE dvm_run_duration_seconds histogram");
        for (runtime, histogram) in &recorded.durations {
            for (bound, count) in BUCKETS.iter().zip(&histogram.counts) {
                let _ = writeln!(
                    out,
                    "dvm_run_duration_seconds_bucket{{runtime=\"{runtime}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "dvm_run_duration_seconds_bucket{{runtime=\"{runtime}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "dvm_run_duration_seconds_sum{{runtime=\"{runtime}\"}} {}",
                histogram.sum
            );
            let _ = writeln!(
                out,
                "dvm_run_duration_seconds_count{{runtime=\"{runtime}\"}} {}",
                histogram.count
            );
        }
        for (name, help, value) in [
            (
                "dvm_cache_hits_total",
                "Result-cache hits.",
                recorded.cache_hits,
            ),
            (
                "dvm_cache_misses_total",
                "Result-cache misses (eligible runs computed).",
                recorded.cache_misses,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP dvm_http_responses_total HTTP responses by status code."
        );
        let _ = writeln!(out, "# TYPE dvm_http_responses_total counter");
        for (code, count) in &recorded.http {
            let _ = writeln!(out, "dvm_http_responses_total{{code=\"{code}\"}} {count}");
        }
        for (name, help, value) in [
            (
                "dvm_runs_in_flight",
                "Runs executing now.",
                self.in_flight.load(Ordering::Acquire),
            ),
            (
                "dvm_runs_queued",
                "Runs waiting for a worker.",
                queued as u64,
            ),
            ("dvm_sessions_live", "Open sessions.", sessions as u64),
            (
                "dvm_sandboxes_live",
                "Open sandboxes (not sessions).",
                sandboxes as u64,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}
