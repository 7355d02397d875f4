//! Submissions kept for polling, bounded in count, bytes and age.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::verdict::Verdict;
use super::wire::SubmissionRequest;

/// Submissions kept for polling; the oldest finished ones go first past it (and past the
/// byte budget and the age in [`crate::server::ServerConfig`]).
const RETAINED: usize = 10_000;

/// A submission's state and result.
#[derive(Debug, Clone)]
pub(super) struct Submission {
    pub(super) token: String,
    pub(super) request: SubmissionRequest,
    /// Decoded source, stdin and expected output.
    pub(super) source: String,
    pub(super) stdin: Option<String>,
    pub(super) expected: Option<String>,
    pub(super) status: Verdict,
    pub(super) stdout: Option<Vec<u8>>,
    pub(super) stderr: Option<Vec<u8>>,
    pub(super) message: Option<String>,
    pub(super) exit_code: Option<i32>,
    pub(super) time: Option<f64>,
    pub(super) memory_kb: Option<u64>,
    pub(super) created_at: String,
    pub(super) finished_at: Option<String>,
    /// When it finished, for the age bound.
    pub(super) finished: Option<Instant>,
}

impl Submission {
    /// Bytes it keeps in memory (its texts; the fixed part is small).
    pub(super) fn size(&self) -> u64 {
        let texts = [
            Some(self.source.len()),
            self.stdin.as_ref().map(String::len),
            self.expected.as_ref().map(String::len),
            self.stdout.as_ref().map(Vec::len),
            self.stderr.as_ref().map(Vec::len),
            self.message.as_ref().map(String::len),
            self.request.source_code.as_ref().map(String::len),
            self.request.stdin.as_ref().map(String::len),
            self.request.expected_output.as_ref().map(String::len),
            self.request
                .command_line_arguments
                .as_ref()
                .map(String::len),
        ];
        256 + texts.iter().flatten().map(|n| *n as u64).sum::<u64>()
    }

    pub(super) fn is_finished(&self) -> bool {
        self.status.is_final()
    }
}

/// Every submission still kept, bounded in count, bytes and age: finished ones go oldest
/// first past a bound; one in queue or running is never dropped (the queue bounds those).
pub struct Submissions {
    kept: Mutex<Kept>,
    max_bytes: u64,
    ttl: Duration,
}

#[derive(Default)]
struct Kept {
    by_token: HashMap<String, Submission>,
    /// Tokens in the order they came (some may be gone from `by_token`).
    order: VecDeque<String>,
    bytes: u64,
}

impl Kept {
    fn remove(&mut self, token: &str) -> Option<Submission> {
        let removed = self.by_token.remove(token)?;
        self.bytes = self.bytes.saturating_sub(removed.size());
        Some(removed)
    }

    /// Drops finished submissions past their age, then the oldest finished ones while over
    /// `max_bytes` (counting `incoming` more) or the count.
    fn evict(&mut self, max_bytes: u64, ttl: Duration, incoming: u64) {
        let expired: Vec<String> = self
            .by_token
            .values()
            .filter(|s| s.finished.is_some_and(|at| at.elapsed() >= ttl))
            .map(|s| s.token.clone())
            .collect();
        for token in expired {
            self.remove(&token);
        }
        let mut kept = VecDeque::with_capacity(self.order.len());
        while let Some(oldest) = self.order.pop_front() {
            let over =
                self.bytes.saturating_add(incoming) > max_bytes || self.by_token.len() >= RETAINED;
            match self.by_token.get(&oldest) {
                Some(s) if over && s.is_finished() => {
                    self.remove(&oldest);
                }
                Some(_) => kept.push_back(oldest),
                None => {}
            }
        }
        self.order = kept;
    }
}

impl Submissions {
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        Submissions {
            kept: Mutex::default(),
            max_bytes,
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps a new submission, making room by dropping finished ones; refused when
    /// submissions still in queue or running fill the budget.
    pub(super) fn insert(&self, submission: Submission) -> Result<(), String> {
        let size = submission.size();
        let mut kept = self.lock();
        kept.evict(self.max_bytes, self.ttl, size);
        if kept.bytes.saturating_add(size) > self.max_bytes || kept.by_token.len() >= RETAINED {
            return Err(format!(
                "submissions in queue fill this server's {} bytes for them; retry when they \
                 have finished",
                self.max_bytes
            ));
        }
        kept.bytes += size;
        kept.order.push_back(submission.token.clone());
        kept.by_token.insert(submission.token.clone(), submission);
        Ok(())
    }

    pub(super) fn update(&self, token: &str, change: impl FnOnce(&mut Submission)) {
        let mut kept = self.lock();
        let Some(submission) = kept.by_token.get_mut(token) else {
            return;
        };
        let before = submission.size();
        change(submission);
        if submission.is_finished() && submission.finished.is_none() {
            submission.finished = Some(Instant::now());
        }
        let after = submission.size();
        kept.bytes = kept.bytes.saturating_sub(before).saturating_add(after);
        // Its output may take the kept bytes over the budget: older finished ones go.
        kept.evict(self.max_bytes, self.ttl, 0);
    }

    pub(super) fn get(&self, token: &str) -> Option<Submission> {
        let mut kept = self.lock();
        let expired = kept
            .by_token
            .get(token)?
            .finished
            .is_some_and(|at| at.elapsed() >= self.ttl);
        if expired {
            kept.remove(token);
            return None;
        }
        kept.by_token.get(token).cloned()
    }

    pub(super) fn remove(&self, token: &str) -> Option<Submission> {
        self.lock().remove(token)
    }

    /// Drops what is past its age or the budgets (the server calls it every second).
    pub fn sweep(&self) {
        self.lock().evict(self.max_bytes, self.ttl, 0);
    }

    /// Submissions kept and their bytes.
    pub fn retained(&self) -> (usize, u64) {
        let kept = self.lock();
        (kept.by_token.len(), kept.bytes)
    }
}
