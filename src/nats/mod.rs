//! Many machines over NATS JetStream: a work-queue stream of run requests, workers that pull
//! and execute them, outcomes in a key-value bucket, and a result-cache backend shared by
//! every node (key-value for entries, an object store for blobs).
//!
//! - Requests go to the stream `DVM_RUNS` (subject `dvm.runs`, work-queue retention, bounded:
//!   a publish past the bound is refused and reported as [`Error::QueueFull`]).
//! - Workers share one durable pull consumer, `dvm-workers`. A worker sends in-progress acks
//!   while a run goes on, stores the outcome under the request's id in the bucket
//!   `DVM_OUTCOMES` with a create (first writer wins), and only then acknowledges. A worker
//!   that dies has its request redelivered after the ack wait; a second execution finds the
//!   outcome already stored and keeps it, so one request has one stored answer.
//! - Callers publish with the request id as `Nats-Msg-Id` (a retried publish is not queued
//!   twice) and watch the outcome key.
//!
//! # Trust
//! Everything read from the bus is hostile until checked. Outcomes are stored signed
//! ([`SignedOutcome`]: Ed25519 over the request id and the outcome) with the worker's key,
//! and a caller returns only an outcome signed by a key it trusts ([`NatsConfig::keys`]); an
//! outcome that does not verify is reported and ignored, and a worker that finds one in the
//! place of its answer overwrites it. Result-cache entries on the bus are signed the same way
//! by [`crate::results::ResultCache`]. Workers cap every limit of a request at their own
//! maxima ([`WorkerConfig::max`]). Connections authenticate as [`NatsAuth`] says.

use std::time::Duration;

use crate::error::Error;
use crate::results::Keys;

/// The error for a failed NATS operation, the client's error kept as its source.
fn nats_error(what: &str, source: impl Into<crate::error::BoxedSource>) -> Error {
    crate::error::NatsError::Client {
        what: what.to_string(),
        source: source.into(),
    }
    .into()
}

macro_rules! nats {
    ($what:expr, $e:expr) => {
        $e.map_err(|e| crate::nats::nats_error($what, e))
    };
}

mod connect;
mod queue;
mod results_backend;
mod wire;
mod worker;

pub use connect::{NatsAuth, NatsCreds, NkeySeed};
pub use queue::Queue;
pub use results_backend::JetStreamBackend;
pub use wire::{RunRequest, SignedOutcome, WireLimits, WireOutcome};
pub use worker::{WorkerConfig, WorkerStats, cap_limits, work};

pub const STREAM: &str = "DVM_RUNS";
pub const SUBJECT: &str = "dvm.runs";
pub const CONSUMER: &str = "dvm-workers";
pub const OUTCOMES: &str = "DVM_OUTCOMES";
pub const RESULTS: &str = "DVM_RESULTS";
pub const BLOBS: &str = "DVM_BLOBS";

/// How dvm uses a NATS deployment.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// e.g. `nats://127.0.0.1:4222` (several, comma-separated, for a cluster).
    pub url: String,
    /// Requests the stream holds at most; a publish past it is refused.
    pub max_queued: i64,
    /// How long a worker may hold a request without acknowledging (it sends progress acks
    /// while running) before it is redelivered.
    pub ack_wait: Duration,
    /// Deliveries of one request at most (a request that kills every worker is dropped).
    pub max_deliver: i64,
    /// How long outcomes are kept for callers to read.
    pub outcome_ttl: Duration,
    /// How to authenticate to the NATS server.
    pub auth: NatsAuth,
    /// The key this node signs outcomes with and the keys whose outcomes it accepts. A
    /// queue or worker without keys cannot start.
    pub keys: Option<Keys>,
}

impl NatsConfig {
    pub fn new(url: &str) -> NatsConfig {
        NatsConfig {
            url: url.to_string(),
            max_queued: 100_000,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            outcome_ttl: Duration::from_secs(3600),
            auth: NatsAuth::default(),
            keys: None,
        }
    }

    pub fn with_keys(mut self, keys: Keys) -> NatsConfig {
        self.keys = Some(keys);
        self
    }

    pub fn with_auth(mut self, auth: NatsAuth) -> NatsConfig {
        self.auth = auth;
        self
    }

    fn keys(&self) -> Result<&Keys, Error> {
        self.keys.as_ref().ok_or_else(|| {
            Error::InvalidInput(
                "no signing keys for NATS: set NatsConfig::keys (the CLI uses the home's key or \
                 --cache-key-file)"
                    .into(),
            )
        })
    }
}
