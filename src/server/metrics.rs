//! Prometheus metrics (`prometheus-client`, which encodes names, labels and escaping): runs
//! by runtime, status and limit, run durations, result-cache hits, runs in flight, queue
//! depth, live sessions and sandboxes, HTTP responses by status code, and what sessions and
//! Judge0 submissions hold.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::outcome::Outcome;
use crate::results::CacheStatus;

/// The media type of [`Metrics::render`]'s text (OpenMetrics), served to scrapers that ask
/// for it in `Accept` (Prometheus does).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The media type of [`classic_text`]: Prometheus's text format 0.0.4, served by default.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let refused = parts.any(|p| p.replace(' ', "") == "q=0");
        media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
    })
}

/// Rewrites OpenMetrics text as the classic text format 0.0.4: a counter family's `HELP`
/// and `TYPE` lines name it with its `_total` suffix (as its samples are named), and the
/// `UNIT` and `# EOF` lines, which 0.0.4 lacks, are left out. Samples are unchanged.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let described = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| line.strip_prefix(prefix).map(|rest| (prefix, rest)));
        match described {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) && !name.ends_with("_total") {
                    out.push_str(&format!("{prefix}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Upper bounds of the run-duration histogram, in seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    runtime: String,
    status: String,
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuntimeLabel {
    runtime: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(BUCKETS.iter().copied())
}

/// What the server holds now, read when metrics are rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live {
    pub sessions: usize,
    pub sandboxes: usize,
    pub queued: usize,
    /// Memory caps of live sessions, summed.
    pub session_memory: u64,
    /// Instance-pool slots live sessions hold.
    pub session_slots: usize,
    /// Judge0 submissions kept, and their bytes.
    pub retained: usize,
    pub retained_bytes: u64,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    durations: Family<RuntimeLabel, Histogram, fn() -> Histogram>,
    http: Family<CodeLabel, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
    in_flight: Gauge,
    queued: Gauge,
    sessions: Gauge,
    sandboxes: Gauge,
    session_memory: Gauge,
    session_slots: Gauge,
    retained: Gauge,
    retained_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "dvm_runs",
            "Runs finished, by runtime, status and limit",
            runs.clone(),
        );
        let durations = Family::<RuntimeLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        registry.register(
            "dvm_run_duration_seconds",
            "Wall-clock time of runs",
            durations.clone(),
        );
        let cache_hits = Counter::default();
        registry.register("dvm_cache_hits", "Result-cache hits", cache_hits.clone());
        let cache_misses = Counter::default();
        registry.register(
            "dvm_cache_misses",
            "Result-cache misses (eligible runs computed)",
            cache_misses.clone(),
        );
        let http = Family::<CodeLabel, Counter>::default();
        registry.register(
            "dvm_http_responses",
            "HTTP responses by status code",
            http.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let in_flight = gauge(&mut registry, "dvm_runs_in_flight", "Runs executing now");
        let queued = gauge(
            &mut registry,
            "dvm_runs_queued",
            "Runs waiting for a worker",
        );
        let sessions = gauge(&mut registry, "dvm_sessions_live", "Open sessions");
        let sandboxes = gauge(
            &mut registry,
            "dvm_sandboxes_live",
            "Open sandboxes (not sessions)",
        );
        let session_memory = gauge(
            &mut registry,
            "dvm_session_memory_reserved_bytes",
            "Memory caps of live sessions, summed (bounded by --session-memory)",
        );
        let session_slots = gauge(
            &mut registry,
            "dvm_session_pool_slots",
            "Instance-pool slots live sessions hold",
        );
        let retained = gauge(
            &mut registry,
            "dvm_judge0_submissions_retained",
            "Judge0 submissions kept in memory",
        );
        let retained_bytes = gauge(
            &mut registry,
            "dvm_judge0_retained_bytes",
            "Bytes of source, input and output Judge0 submissions keep in memory",
        );
        Metrics {
            registry,
            runs,
            durations,
            http,
            cache_hits,
            cache_misses,
            in_flight,
            queued,
            sessions,
            sandboxes,
            session_memory,
            session_slots,
            retained,
            retained_bytes,
        }
    }
}

/// Counts one run in flight while it lives.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A count as a gauge's value (saturating).
fn level(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    pub fn start(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Records a finished run.
    pub fn record(&self, runtime: &str, outcome: &Outcome) {
        let limit = outcome.limit.map(|l| l.as_str()).unwrap_or("");
        self.runs
            .get_or_create(&RunLabels {
                runtime: runtime.to_string(),
                status: outcome.status.as_str().to_string(),
                limit: limit.to_string(),
            })
            .inc();
        self.durations
            .get_or_create(&RuntimeLabel {
                runtime: runtime.to_string(),
            })
            .observe(outcome.duration.as_secs_f64());
        match outcome.cache {
            CacheStatus::Hit => {
                self.cache_hits.inc();
            }
            CacheStatus::Miss => {
                self.cache_misses.inc();
            }
            CacheStatus::Off => {}
        }
    }

    pub fn http(&self, status: u16) {
        self.http
            .get_or_create(&CodeLabel {
                code: status.to_string(),
            })
            .inc();
    }

    /// The exposition text ([`CONTENT_TYPE`]), with `live` as the gauges of what the server
    /// holds now.
    pub fn render(&self, live: Live) -> String {
        self.queued.set(level(live.queued as u64));
        self.sessions.set(level(live.sessions as u64));
        self.sandboxes.set(level(live.sandboxes as u64));
        self.session_memory.set(level(live.session_memory));
        self.session_slots.set(level(live.session_slots as u64));
        self.retained.set(level(live.retained as u64));
        self.retained_bytes.set(level(live.retained_bytes));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("metrics could not be encoded: {e}");
        }
        out
    }
}

#[cfg(test)]
mod classic_tests {
    use super::*;

    #[test]
    fn openmetrics_becomes_the_classic_text_format() {
        let open = "# HELP dvm_runs Runs.\n# TYPE dvm_runs counter\n\
                    dvm_runs_total{runtime=\"python\"} 2\n# HELP dvm_live Live.\n\
                    # TYPE dvm_live gauge\n# UNIT dvm_live bytes\ndvm_live 0\n# EOF\n";
        assert_eq!(
            classic_text(open),
            "# HELP dvm_runs_total Runs.\n# TYPE dvm_runs_total counter\n\
             dvm_runs_total{runtime=\"python\"} 2\n# HELP dvm_live Live.\n\
             # TYPE dvm_live gauge\ndvm_live 0\n"
        );
    }

    #[test]
    fn only_an_accept_asking_for_openmetrics_gets_it() {
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5"
        ));
        assert!(!wants_openmetrics("text/plain"));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("application/openmetrics-text; q=0"));
        assert!(!wants_openmetrics(""));
    }
}
