//! [`History`]: a channel's bounded log of recent messages, oldest first.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::message::Message;

/// How much history each channel keeps. Both bounds apply; whichever is hit first trims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most messages kept per channel. Defaults to 256; at least 1, because the live edge of
    /// every subscriber is read from history (a subscriber more than this many messages behind
    /// gets a gap notice).
    pub max_messages: usize,
    /// Oldest message kept, measured from when this node appended it. Defaults to 10 minutes.
    pub max_age: Duration,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self {
            max_messages: 256,
            max_age: Duration::from_secs(600),
        }
    }
}

/// A ring buffer of messages with strictly increasing offsets, bounded by [`HistoryLimits`].
#[derive(Debug)]
pub struct History {
    ring: VecDeque<Arc<Message>>,
    limits: HistoryLimits,
}

impl History {
    /// An empty history. A `max_messages` of 0 is taken as 1.
    pub fn new(mut limits: HistoryLimits) -> Self {
        limits.max_messages = limits.max_messages.max(1);
        Self {
            ring: VecDeque::new(),
            limits,
        }
    }

    /// Appends `msg`, dropping the oldest message when full. The caller guarantees that offsets
    /// increase.
    pub fn push(&mut self, msg: Arc<Message>) {
        if self.ring.len() >= self.limits.max_messages {
            self.ring.pop_front();
        }
        self.ring.push_back(msg);
    }

    /// Drops messages older than `max_age` at `now`; returns how many were dropped.
    pub fn trim_age(&mut self, now: Instant) -> usize {
        let before = self.ring.len();
        while self
            .ring
            .front()
            .is_some_and(|m| now.saturating_duration_since(m.appended_at) > self.limits.max_age)
        {
            self.ring.pop_front();
        }
        if self.ring.is_empty() && self.ring.capacity() > 16 {
            self.ring.shrink_to(16);
        }
        before - self.ring.len()
    }

    /// Drops everything (a new epoch begins).
    pub fn clear(&mut self) {
        self.ring.clear();
    }

    /// How many messages are held.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The offset of the oldest message held.
    pub fn first_offset(&self) -> Option<u64> {
        self.ring.front().map(|m| m.cursor.offset)
    }

    /// The messages with an offset greater than `offset`, oldest first.
    pub fn after(&self, offset: u64) -> impl Iterator<Item = &Arc<Message>> {
        // Offsets are usually contiguous (the hub appends no holes), so where `offset + 1`
        // should be is known; a binary search only when it is not there.
        let start = match self.ring.front() {
            Some(first) if offset >= first.cursor.offset => {
                let guess = usize::try_from(offset - first.cursor.offset + 1).unwrap_or(usize::MAX);
                match self.ring.get(guess) {
                    Some(m) if m.cursor.offset == offset + 1 => guess,
                    _ => self.ring.partition_point(|m| m.cursor.offset <= offset),
                }
            }
            _ => 0,
        };
        self.ring.range(start..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelName, Cursor};

    fn msg(offset: u64) -> Arc<Message> {
        Arc::new(Message::new(ChannelName::new("c").unwrap(), Cursor::new(1, offset), None, b"", 0).unwrap())
    }

    #[test]
    fn bounded_by_count() {
        let mut h = History::new(HistoryLimits {
            max_messages: 3,
            ..Default::default()
        });
        for i in 1..=5 {
            h.push(msg(i));
        }
        assert_eq!(h.len(), 3);
        assert_eq!(h.first_offset(), Some(3));
        let after: Vec<u64> = h.after(3).map(|m| m.cursor.offset).collect();
        assert_eq!(after, [4, 5]);
        assert_eq!(h.after(0).count(), 3);
        assert_eq!(h.after(5).count(), 0);
    }

    #[test]
    fn after_finds_its_place_with_holes_in_the_offsets_too() {
        let mut h = History::new(HistoryLimits::default());
        for i in [3, 4, 7, 9, 10] {
            h.push(msg(i));
        }
        let after = |o| h.after(o).map(|m| m.cursor.offset).collect::<Vec<_>>();
        assert_eq!(after(0), [3, 4, 7, 9, 10]);
        assert_eq!(after(3), [4, 7, 9, 10]);
        assert_eq!(after(4), [7, 9, 10]);
        assert_eq!(after(5), [7, 9, 10]);
        assert_eq!(after(8), [9, 10]);
        assert_eq!(after(9), [10]);
        assert_eq!(after(10), Vec::<u64>::new());
        assert_eq!(after(u64::MAX), Vec::<u64>::new());
    }

    #[test]
    fn bounded_by_age() {
        let mut h = History::new(HistoryLimits {
            max_messages: 10,
            max_age: Duration::from_secs(5),
        });
        h.push(msg(1));
        h.push(msg(2));
        assert_eq!(h.trim_age(Instant::now()), 0);
        assert_eq!(h.trim_age(Instant::now() + Duration::from_secs(6)), 2);
        assert!(h.is_empty());
    }
}
