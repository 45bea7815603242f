//! [`BrokerStats`]: counters every broker keeps, exported by the server as metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters of a broker's work. Read them with [`BrokerStats::snapshot`].
#[derive(Debug, Default)]
pub struct BrokerStats {
    pub(crate) published: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) lagged: AtomicU64,
    pub(crate) gaps: AtomicU64,
}

/// A copy of [`BrokerStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Messages accepted by `publish`.
    pub published: u64,
    /// Messages handed to subscribers (one per subscriber per message).
    pub delivered: u64,
    /// Times a subscriber fell more than its queue length behind the live edge and went on
    /// catching up from history.
    pub lagged: u64,
    /// Gap notices: a subscriber's cursor was older than history or of another epoch.
    pub gaps: u64,
}

impl BrokerStats {
    /// The current values.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            published: self.published.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            lagged: self.lagged.load(Ordering::Relaxed),
            gaps: self.gaps.load(Ordering::Relaxed),
        }
    }

    /// Counts `n` messages published; for brokers that assign cursors outside the [`Hub`](crate::Hub).
    pub fn record_published(&self, n: u64) {
        Self::add(&self.published, n);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}
