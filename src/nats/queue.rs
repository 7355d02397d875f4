//! The producer: submits run requests and routes their outcomes to the callers waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt as _;

use crate::error::{Error, HostError};
use crate::results::Trust;

use super::connect::setup;
use super::wire::{RunRequest, SignedOutcome, WireOutcome};
use super::{NatsConfig, STREAM, SUBJECT};

/// Whether JetStream refused a publish because the stream's store would not take the
/// message: the stream is at its bound and discards new messages (JetStream's error code
/// 10077, which names the bound it hit).
fn refused_by_store(error: &jetstream::context::PublishError) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(api) = cause.downcast_ref::<jetstream::Error>() {
            return api.error_code() == jetstream::ErrorCode::STREAM_STORE_FAILED;
        }
        source = cause.source();
    }
    false
}

type Waiters = Arc<
    std::sync::Mutex<std::collections::HashMap<String, tokio::sync::oneshot::Sender<WireOutcome>>>,
>;

/// A producer: submits run requests and reads their outcomes.
#[derive(Clone)]
pub struct Queue {
    js: jetstream::Context,
    outcomes: kv::Store,
    /// Whose outcomes are accepted.
    trust: Arc<Trust>,
    /// Outcomes refused because they did not verify.
    refused: Arc<AtomicU64>,
    /// Callers waiting for an outcome, by request id.
    waiters: Waiters,
    /// Stops the bucket watch when the last clone is dropped.
    _watch: Arc<WatchTask>,
}

struct WatchTask(tokio::task::JoinHandle<()>);

impl Drop for WatchTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Queue {
    /// Connects, making the stream and bucket if this is the first node.
    pub async fn connect(config: &NatsConfig) -> Result<Queue, Error> {
        let trust = Arc::new(config.keys()?.trust.clone());
        let (js, _, outcomes) = setup(config).await?;
        let waiters: Waiters = Arc::default();
        let refused: Arc<AtomicU64> = Arc::default();
        let watch = tokio::spawn(route_outcomes(
            outcomes.clone(),
            waiters.clone(),
            trust.clone(),
            refused.clone(),
        ));
        Ok(Queue {
            js,
            outcomes,
            trust,
            refused,
            waiters,
            _watch: Arc::new(WatchTask(watch)),
        })
    }

    /// Puts a request on the queue once the server has stored it; a full queue is
    /// [`Error::QueueFull`].
    pub async fn submit(&self, request: &RunRequest) -> Result<(), Error> {
        let payload = serde_json::to_vec(request).map_err(|source| HostError::Encode {
            what: "the request",
            source,
        })?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", request.id.as_str());
        let acked = async {
            self.js
                .publish_with_headers(SUBJECT, headers, payload.into())
                .await?
                .await
        }
        .await;
        match acked {
            Ok(_) => Ok(()),
            Err(e) if refused_by_store(&e) => Err(Error::QueueFull(
                "the run queue is full (the stream's max_queued bound); retry later or add \
                 workers"
                    .into(),
            )),
            Err(e) => Err(Error::Nats(format!("cannot queue the run: {e}"))),
        }
    }

    /// Waits up to `timeout` for the outcome of request `id`. One watch on the whole bucket
    /// serves every waiter of this queue; each waiter also looks itself every two seconds,
    /// so an outcome stored while the connection was down (a NATS restart) is still found.
    pub async fn outcome(&self, id: &str, timeout: Duration) -> Result<WireOutcome, Error> {
        let (sender, mut receiver) = tokio::sync::oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_string(), sender);
        // The waiter goes however this ends, also when the caller stops waiting.
        struct Unregister<'a>(&'a Waiters, &'a str);
        impl Drop for Unregister<'_> {
            fn drop(&mut self) {
                self.0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(self.1);
            }
        }
        let _unregister = Unregister(&self.waiters, id);
        let mut last_refusal = None;
        let waited = tokio::time::timeout(timeout, async {
            loop {
                if let Ok(Some(bytes)) = self.outcomes.get(id).await {
                    match SignedOutcome::open(id, &bytes, &self.trust) {
                        Ok(outcome) => return outcome,
                        Err(why) => {
                            if last_refusal.as_ref() != Some(&why) {
                                self.refused.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!("the stored outcome of {id} is ignored: {why}");
                            }
                            last_refusal = Some(why);
                        }
                    }
                }
                // The watch hands over only outcomes that verify.
                tokio::select! {
                    delivered = &mut receiver => if let Ok(outcome) = delivered {
                        return outcome;
                    },
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        })
        .await;
        match waited {
            Ok(outcome) => Ok(outcome),
            Err(_) => Err(Error::Nats(format!(
                "no outcome for {id} within {} ms{}; are workers running (dvm worker --nats …)?",
                timeout.as_millis(),
                match &last_refusal {
                    Some(why) => format!(
                        " (an outcome was stored but not accepted: {why}; are the workers' keys \
                         trusted, e.g. with --trust or a shared --cache-key-file?)"
                    ),
                    None => String::new(),
                }
            ))),
        }
    }

    /// The outcome of request `id` if it is stored yet (polling instead of waiting); one
    /// that does not verify is an error.
    pub async fn try_outcome(&self, id: &str) -> Result<Option<WireOutcome>, Error> {
        match nats!("cannot read the outcome", self.outcomes.get(id).await)? {
            Some(bytes) => SignedOutcome::open(id, &bytes, &self.trust)
                .map(Some)
                .map_err(|why| {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    Error::Nats(format!("the stored outcome of {id} is not accepted: {why}"))
                }),
            None => Ok(None),
        }
    }

    /// Outcomes this queue refused because they did not verify.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Submits and waits.
    pub async fn run(&self, request: &RunRequest, timeout: Duration) -> Result<WireOutcome, Error> {
        self.submit(request).await?;
        self.outcome(&request.id, timeout).await
    }

    /// Requests waiting in the stream.
    pub async fn depth(&self) -> Result<u64, Error> {
        let mut stream = nats!(
            "cannot read the run stream",
            self.js.get_stream(STREAM).await
        )?;
        let info = nats!("cannot read the run stream", stream.info().await)?;
        Ok(info.state.messages)
    }
}

/// The server sends runs to workers through this (only the server holds a remote runner).
#[cfg(feature = "server")]
impl crate::remote::RemoteRunner for Queue {
    fn run_remote<'a>(
        &'a self,
        run: crate::remote::RemoteRun<'_>,
        timeout: Duration,
    ) -> crate::remote::RemoteOutcome<'a> {
        let mut request = RunRequest::new(run.runtime, run.name, run.code, run.input);
        request.requirements = run.requirements.to_vec();
        request.auto_deps = run.auto_deps;
        Box::pin(async move { self.run(&request, timeout).await?.into_outcome() })
    }
}

/// Hands each new outcome that verifies to its waiter (one that does not is reported and the
/// waiter keeps waiting); starts the watch again when it ends (a reconnect).
async fn route_outcomes(
    outcomes: kv::Store,
    waiters: Waiters,
    trust: Arc<Trust>,
    refused: Arc<AtomicU64>,
) {
    loop {
        if let Ok(mut watch) = outcomes.watch_all().await {
            while let Some(entry) = watch.next().await {
                let Ok(entry) = entry else { continue };
                if entry.operation != kv::Operation::Put {
                    continue;
                }
                let waited = waiters
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .contains_key(&entry.key);
                if !waited {
                    continue;
                }
                let outcome = match SignedOutcome::open(&entry.key, &entry.value, &trust) {
                    Ok(outcome) => outcome,
                    Err(why) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("the outcome stored for {} is ignored: {why}", entry.key);
                        continue;
                    }
                };
                let waiter = waiters
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&entry.key);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(outcome);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
