//! The worker: pulls requests, caps their limits, runs them through the job pipeline and
//! stores the signed outcome before acknowledging.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv};
use futures_util::StreamExt as _;

use crate::dvm::Dvm;
use crate::error::{Error, HostError};
use crate::limits::Limits;
use crate::outcome::Outcome;
use crate::sandbox::RunInput;

use super::connect::setup;
use super::wire::{RunRequest, SignedOutcome, WireOutcome, decode, valid_request_id};
use super::{CONSUMER, NatsConfig};

/// What a worker counts, for its metrics.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub runs: AtomicU64,
    pub redeliveries: AtomicU64,
    pub duplicates: AtomicU64,
    pub failures: AtomicU64,
    pub in_flight: AtomicU64,
    /// Requests waiting in the stream, as last seen.
    pub queue_depth: AtomicU64,
}

impl WorkerStats {
    /// Prometheus text for this worker.
    pub fn render(&self, worker: &str) -> String {
        let mut out = String::new();
        for (name, kind, help, value) in [
            (
                "dvm_worker_runs_total",
                "counter",
                "Runs this worker executed.",
                &self.runs,
            ),
            (
                "dvm_worker_redeliveries_total",
                "counter",
                "Requests this worker got again after another delivery.",
                &self.redeliveries,
            ),
            (
                "dvm_worker_duplicates_total",
                "counter",
                "Runs whose outcome another delivery had already stored.",
                &self.duplicates,
            ),
            (
                "dvm_worker_failures_total",
                "counter",
                "Requests that could not run (their error is the outcome).",
                &self.failures,
            ),
            (
                "dvm_worker_in_flight",
                "gauge",
                "Runs executing now.",
                &self.in_flight,
            ),
            (
                "dvm_worker_queue_depth",
                "gauge",
                "Requests waiting in the stream, as last seen.",
                &self.queue_depth,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{worker=\"{worker}\"}} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// A worker's settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub nats: NatsConfig,
    /// Runs at once.
    pub concurrency: usize,
    /// The name in outcomes, logs and metrics.
    pub name: String,
    /// After a drain signal, how long in-flight runs may finish before they are handed back.
    pub drain_grace: Duration,
    /// The most a request may ask for: every limit of a request is capped at these (a
    /// request without a fuel limit gets this fuel limit, if any).
    pub max: Limits,
}

/// `requested`, with every limit capped at `max` ([`Limits::capped_at`]).
pub fn cap_limits(requested: &Limits, max: &Limits) -> Limits {
    requested.capped_at(max)
}

/// Pulls requests and runs them until `shutdown` resolves, then stops pulling, lets in-flight
/// runs finish for the grace period and hands back (naks) what is left.
pub async fn work(
    dvm: Dvm,
    config: WorkerConfig,
    stats: Arc<WorkerStats>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    config.nats.keys()?;
    let (js, stream, outcomes) = setup(&config.nats).await?;
    let consumer: consumer::PullConsumer = nats!(
        "cannot make the worker consumer",
        stream
            .get_or_create_consumer(
                CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(CONSUMER.to_string()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: config.nats.ack_wait,
                    max_deliver: config.nats.max_deliver,
                    ..Default::default()
                },
            )
            .await
    )?;
    let permits = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
    let cancels: Arc<std::sync::Mutex<Vec<crate::CancelHandle>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    // The signal, as a token that can be asked any number of times.
    let stop = tokio_util::sync::CancellationToken::new();
    let stopping = stop.clone();
    let signal = async move {
        shutdown.await;
        stopping.cancel();
    };
    tokio::pin!(signal);
    let fetching = async {
        while !stop.is_cancelled() {
            let free = permits.available_permits();
            if free == 0 {
                tokio::select! {
                    () = stop.cancelled() => break,
                    Some(_) = tasks.join_next() => continue,
                }
            }
            let batch = consumer
                .fetch()
                .max_messages(free)
                .expires(Duration::from_secs(1))
                .messages();
            let mut messages = tokio::select! {
                () = stop.cancelled() => break,
                batch = batch => match batch {
                    Ok(messages) => messages,
                    Err(e) => {
                        tracing::warn!("fetching runs: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                },
            };
            // The batch ends by itself within its second; what it delivers after a drain
            // signal goes straight back to the queue.
            while let Some(message) = messages.next().await {
                let Ok(message) = message else { continue };
                let permit = tokio::select! {
                    permit = permits.clone().acquire_owned() => permit.ok(),
                    () = stop.cancelled() => None,
                };
                let Some(permit) = permit.filter(|_| !stop.is_cancelled()) else {
                    let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
                    continue;
                };
                tasks.spawn(handle(
                    dvm.clone(),
                    config.clone(),
                    stats.clone(),
                    outcomes.clone(),
                    cancels.clone(),
                    message,
                    permit,
                ));
            }
            while tasks.try_join_next().is_some() {}
            if let Ok(info) = consumer.clone().info().await.map(|i| i.num_pending) {
                stats.queue_depth.store(info, Ordering::Relaxed);
            }
        }
    };
    tokio::join!(fetching, &mut signal);
    // Drain: finish what runs, within the grace; then cancel (the handlers hand their
    // requests back).
    let drained = tokio::time::timeout(config.drain_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        for cancel in cancels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            cancel.cancel();
        }
        while tasks.join_next().await.is_some() {}
    }
    // The last acks and naks go out before the process ends.
    let _ = js.client().flush().await;
    Ok(())
}

/// Runs one request and stores its outcome, then acknowledges.
async fn handle(
    dvm: Dvm,
    config: WorkerConfig,
    stats: Arc<WorkerStats>,
    outcomes: kv::Store,
    cancels: Arc<std::sync::Mutex<Vec<crate::CancelHandle>>>,
    message: jetstream::Message,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let delivery = message.info().map(|i| i.delivered).unwrap_or(1).max(1) as u64;
    if delivery > 1 {
        stats.redeliveries.fetch_add(1, Ordering::Relaxed);
    }
    let Some(keys) = config.nats.keys.clone() else {
        return;
    };
    let request: RunRequest = match serde_json::from_slice::<RunRequest>(&message.payload) {
        Ok(request) if valid_request_id(&request.id) => request,
        Ok(_) => {
            tracing::warn!("dropping a run request whose id is not a request id");
            let _ = message.ack_with(jetstream::AckKind::Term).await;
            return;
        }
        Err(e) => {
            tracing::warn!("dropping a request that is not a run request: {e}");
            let _ = message.ack_with(jetstream::AckKind::Term).await;
            return;
        }
    };
    // An earlier delivery may have stored the outcome and died before acknowledging; an
    // outcome there that does not verify is not an answer, and is replaced below.
    if let Ok(Some(stored)) = outcomes.get(&request.id).await
        && SignedOutcome::open(&request.id, stored.as_ref(), &keys.trust).is_ok()
    {
        stats.duplicates.fetch_add(1, Ordering::Relaxed);
        let _ = message.double_ack().await;
        return;
    }
    eprintln!(
        "dvm worker {}: running {} (delivery {delivery})",
        config.name, request.id
    );
    stats.in_flight.fetch_add(1, Ordering::Relaxed);
    let cancel = crate::CancelHandle::new();
    cancels
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(cancel.clone());
    // Progress acks keep the request ours while it runs.
    let progress = {
        let every = (config.nats.ack_wait / 3).max(Duration::from_millis(100));
        let message = message.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let _ = message.ack_with(jetstream::AckKind::Progress).await;
            }
        })
    };
    let ran = {
        let request = request.clone();
        let cancel = cancel.clone();
        let max = config.max.clone();
        tokio::task::spawn_blocking(move || execute(&dvm, &request, &max, cancel))
            .await
            .unwrap_or_else(|e| {
                Err(HostError::Task {
                    what: "the run",
                    source: Box::new(e),
                }
                .into())
            })
    };
    progress.abort();
    stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    cancels
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .retain(|c| !c.same(&cancel));
    if cancel.is_cancelled() {
        // Drained: hand the request back for another worker.
        let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
        return;
    }
    if let Err(error) = &ran {
        stats.failures.fetch_add(1, Ordering::Relaxed);
        // A failure of this worker (not of the request) may pass: another delivery tries
        // again, until the last one, whose error becomes the answer.
        if !error.is_user_error() && (delivery as i64) < config.nats.max_deliver {
            tracing::warn!("{} failed here, handing it back: {error}", request.id);
            let _ = message
                .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            return;
        }
    }
    stats.runs.fetch_add(1, Ordering::Relaxed);
    let wire = WireOutcome::of(&request.id, &config.name, delivery, ran);
    let bytes: bytes::Bytes = match SignedOutcome::sign(&wire, &keys) {
        Ok(bytes) => bytes.into(),
        Err(e) => {
            tracing::warn!("{e}");
            return;
        }
    };
    // First writer wins: a duplicate execution keeps the stored answer, unless what is
    // stored does not verify (a forgery), which this answer replaces.
    match outcomes.create(&request.id, bytes.clone()).await {
        Ok(_) => {}
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            let genuine = matches!(
                outcomes.get(&request.id).await,
                Ok(Some(stored))
                    if SignedOutcome::open(&request.id, stored.as_ref(), &keys.trust).is_ok()
            );
            if genuine {
                stats.duplicates.fetch_add(1, Ordering::Relaxed);
            } else {
                tracing::warn!(
                    "the outcome stored for {} does not verify; replacing it",
                    request.id
                );
                if let Err(e) = outcomes.put(&request.id, bytes).await {
                    tracing::warn!("cannot store the outcome of {}: {e}", request.id);
                    let _ = message
                        .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                    return;
                }
            }
        }
        Err(e) => {
            // Not stored: leave the request unacknowledged so it is delivered again.
            tracing::warn!("cannot store the outcome of {}: {e}", request.id);
            let _ = message
                .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            return;
        }
    }
    if let Err(e) = message.double_ack().await {
        tracing::warn!("cannot acknowledge {}: {e}", request.id);
    }
}

/// Runs a request in a local sandbox (on the calling, blocking thread), its limits capped at
/// `max`.
fn execute(
    dvm: &Dvm,
    request: &RunRequest,
    max: &Limits,
    cancel: crate::CancelHandle,
) -> Result<Outcome, Error> {
    let limits = cap_limits(&request.limits, max);
    limits.validate()?;
    let mut input = RunInput {
        args: request.args.clone(),
        env: request.env.clone(),
        stdin: request.stdin.clone().into_bytes(),
        limits,
        cancel: Some(cancel),
        deterministic: request.seed.map(|seed| crate::Determinism { seed }),
        ..RunInput::default()
    };
    if !request.files.is_empty() {
        let workspace = crate::Workspace::new()?;
        for (path, encoded) in &request.files {
            workspace.write(path, &decode(encoded))?;
        }
        input.workspace = Some(workspace);
    }
    let job = crate::Job {
        source: crate::JobSource::Code {
            code: request.code.clone().into_bytes(),
            name: (!request.name.is_empty()).then(|| request.name.clone()),
        },
        requirements: request.requirements.clone(),
        discovery: crate::Discovery {
            auto_deps: request.auto_deps,
            ..crate::Discovery::default()
        },
        input,
        ..crate::Job::code(&request.runtime, "")
    };
    let quiet: crate::Progress = std::sync::Arc::new(|_: &crate::InstallStep| {});
    Ok(dvm.run(&job, &quiet)?.outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_caps_every_limit_at_its_maxima() {
        let max = Limits {
            deadline: Duration::from_secs(2),
            fuel: Some(1000),
            memory_bytes: 1 << 20,
            disk_bytes: 1 << 20,
            stdout_bytes: 10,
            stderr_bytes: 10,
            ..Limits::default()
        };
        let asked = Limits {
            deadline: Duration::from_secs(3600),
            fuel: None,
            memory_bytes: 1 << 32,
            disk_bytes: u64::MAX,
            stdout_bytes: 1 << 30,
            stderr_bytes: 1 << 30,
            files: u64::MAX,
            open_files: u64::MAX,
            table_elements: u64::MAX,
            ..Limits::default()
        };
        let capped = cap_limits(&asked, &max);
        assert_eq!(capped.deadline, max.deadline);
        assert_eq!(capped.fuel, Some(1000));
        assert_eq!(capped.memory_bytes, max.memory_bytes);
        assert_eq!(capped.disk_bytes, max.disk_bytes);
        assert_eq!((capped.stdout_bytes, capped.stderr_bytes), (10, 10));
        assert_eq!(capped.files, max.files);
        assert_eq!(capped.open_files, max.open_files);
        assert_eq!(capped.table_elements, max.table_elements);
        let small = Limits {
            deadline: Duration::from_millis(5),
            fuel: Some(3),
            ..Limits::default()
        };
        let kept = cap_limits(&small, &max);
        assert_eq!((kept.deadline, kept.fuel), (small.deadline, Some(3)));
    }
}
