//! What a run displays (figures, rich values): items the guest sends through the host door,
//! kept within the run's stdout cap.

use std::sync::Arc;

use crate::limits::Limits;
use crate::outcome::Display;

/// Receives each display item a run keeps, as the guest sends it (before the run ends).
pub type DisplayCallback = Arc<dyn Fn(&Display) + Send + Sync>;

/// The display items of the current run or turn.
#[derive(Default)]
pub(crate) struct DisplaySink {
    items: Vec<Display>,
    callback: Option<DisplayCallback>,
    /// Bytes of the requests the kept items came in.
    bytes: u64,
    /// Bytes of display a run may keep: the stdout cap.
    cap: u64,
    truncated: bool,
}

impl std::fmt::Debug for DisplaySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DisplaySink")
            .field("items", &self.items.len())
            .field("bytes", &self.bytes)
            .field("cap", &self.cap)
            .field("truncated", &self.truncated)
            .field("callback", &self.callback.is_some())
            .finish()
    }
}

impl DisplaySink {
    /// An empty sink for a run with these limits; `callback` hears of each item kept.
    pub(crate) fn new(limits: &Limits, callback: Option<DisplayCallback>) -> Self {
        DisplaySink {
            cap: limits.stdout_bytes,
            callback,
            ..DisplaySink::default()
        }
    }

    /// The most bytes one display request may have: a request past what is left of the cap
    /// could not be kept anyway, so it is not read.
    pub(crate) fn room(&self) -> u64 {
        self.cap.saturating_sub(self.bytes)
    }

    /// Keeps `item` (sent in `request_bytes`) if it fits; otherwise marks the run's display
    /// truncated. Returns whether it was kept.
    pub(crate) fn push(&mut self, item: Display, request_bytes: u64) -> bool {
        if request_bytes > self.room() {
            self.truncated = true;
            return false;
        }
        self.bytes += request_bytes;
        if let Some(callback) = &self.callback {
            callback(&item);
        }
        self.items.push(item);
        true
    }

    /// Marks the run's display truncated (a request too large to read).
    pub(crate) fn refuse(&mut self) {
        self.truncated = true;
    }

    /// The items so far and whether any were dropped, at the end of a run or turn: the sink
    /// is empty afterwards and lets its callback go (a session's sink outlives the turn, and
    /// a callback kept would keep, say, the turn's event stream open).
    pub(crate) fn take(&mut self) -> (Vec<Display>, bool) {
        self.callback = None;
        let truncated = std::mem::take(&mut self.truncated);
        self.bytes = 0;
        (std::mem::take(&mut self.items), truncated)
    }
}
