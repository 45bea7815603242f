//! Publishing through a store that must keep a message before anyone sees it (durable history,
//! comet-store): [`Hub::reserve`] assigns the cursor without making the message visible, the
//! store writes it, then [`Hub::append`] makes it visible, or [`Hub::release`] hands the cursor
//! back when the write failed. And the setters a store calls when it loads a channel back.
//!
//! Why two steps: a message a subscriber saw must never be lost by a crash, or its cursor would
//! be handed out again for another message (silent loss for whoever saw the first). So nothing
//! is visible before it is on disk; and the cursor is assigned under the channel's lock before
//! the write, so the write and the cursor agree.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Hub, Idempotency};
use crate::cursor::Cursor;
use crate::message::{Message, now_millis};
use crate::name::{ChannelName, EventName};

/// What [`Hub::reserve`] did.
#[derive(Debug, Clone)]
pub enum Reservation {
    /// A new message with the next cursor, not yet in history: write it, then
    /// [`Hub::append`] it (or [`Hub::release`] the channel if the write failed).
    New(Arc<Message>),
    /// The idempotency key was used within its window: nothing to write; the first publish's
    /// cursor (which may itself still be reserved, in the same batch).
    Repeat(Cursor),
}

impl Hub {
    /// Assigns `channel`'s next cursor to a message of `data` (UTF-8, checked by the caller) and
    /// returns it, without putting it in history: no subscriber sees it until
    /// [`append`](Self::append). Reservations of one channel must be appended in the order they
    /// were made, by one writer; the channel is not forgotten by [`sweep`](Self::sweep) while
    /// one is pending. With `key`, a key the channel saw within its window reserves nothing.
    pub fn reserve(
        &self,
        channel: &ChannelName,
        event: Option<EventName>,
        data: Bytes,
        key: Option<&Idempotency>,
    ) -> Reservation {
        loop {
            let log = self.log(channel, false);
            let mut state = log.write();
            if state.retired {
                continue;
            }
            let now = Instant::now();
            if let Some(first) = state.repeat_of(key, now) {
                return Reservation::Repeat(first);
            }
            let cursor = Cursor::new(state.epoch, state.head.max(state.reserved) + 1);
            state.reserved = cursor.offset;
            if let Some(key) = key {
                state.keys.insert(key.key(), cursor, now + key.window);
            }
            let msg = Message::from_text(channel.clone(), cursor, event, data, now_millis());
            return Reservation::New(Arc::new(msg));
        }
    }

    /// Hands back every cursor of `channel` reserved and not yet appended (their write failed),
    /// with their idempotency keys: the next reservation reuses the first of them.
    pub fn release(&self, channel: &ChannelName) {
        let Some(log) = self.existing(channel) else {
            return;
        };
        let mut state = log.write();
        let (epoch, head) = (state.epoch, state.head);
        state.reserved = head;
        state.keys.forget_after(epoch, head);
    }

    /// The offset of `channel`'s newest reserved cursor not yet appended, if any.
    pub fn pending(&self, channel: &ChannelName) -> Option<Cursor> {
        let log = self.existing(channel)?;
        let state = log.read();
        (state.reserved > state.head).then(|| Cursor::new(state.epoch, state.reserved))
    }

    /// Sets `channel` as its store kept it: `epoch`, newest offset `head`, and the newest
    /// messages `tail` (oldest first, contiguous, ending at `head`). With no message left, the
    /// channel is only remembered (a tombstone, as [`sweep`](Self::sweep) leaves), so a channel
    /// whose history expired takes no memory until it is used again.
    pub fn restore(&self, channel: &ChannelName, epoch: u64, head: u64, tail: Vec<Arc<Message>>) {
        if tail.is_empty() {
            let mut shard = self.shard(channel);
            if !shard.logs.contains_key(channel) {
                shard.tombstones.insert(channel.clone(), (epoch, head, Instant::now()));
                return;
            }
        }
        self.replace(channel, epoch, head, tail);
    }

    /// Remembers that `key` published `cursor` on `channel` until `expires` (a store's copy of
    /// the idempotency keys). Keys must be given oldest expiry first.
    pub fn restore_key(&self, channel: &ChannelName, key: &str, cursor: Cursor, expires: Instant) {
        loop {
            let log = self.log(channel, false);
            let mut state = log.write();
            if state.retired {
                continue;
            }
            state.keys.insert(key, cursor, expires);
            return;
        }
    }

    /// The empty epochs (see [`EMPTY_EPOCH_EVERY`](super::EMPTY_EPOCH_EVERY)), newest first, and
    /// how long ago the newest began; a store keeps them so that a restart does not turn the
    /// cursors of empty channels into false gaps.
    pub fn empty_epochs(&self) -> (Vec<u64>, Duration) {
        let empty = self.empty_now();
        (empty.epochs.iter().copied().collect(), empty.since.elapsed())
    }

    /// Sets the empty epochs (newest first, at most [`EMPTY_EPOCHS`](super::EMPTY_EPOCHS)) and the
    /// age of the newest, as [`empty_epochs`](Self::empty_epochs) gave them before a restart.
    /// An empty list changes nothing.
    pub fn restore_empty_epochs(&self, epochs: &[u64], age: Duration) {
        if epochs.is_empty() {
            return;
        }
        let mut empty = self.empty.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        empty.epochs = epochs.iter().copied().take(super::EMPTY_EPOCHS).collect();
        let now = Instant::now();
        empty.since = now.checked_sub(age).unwrap_or(now);
        empty.rotate(now);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::Reservation;
    use crate::cursor::{Cursor, Since};
    use crate::hub::{Append, Event, Hub, HubConfig, Idempotency};
    use crate::name::ChannelName;

    fn ch() -> ChannelName {
        ChannelName::new("store:a").unwrap()
    }

    fn new(r: Reservation) -> std::sync::Arc<crate::message::Message> {
        match r {
            Reservation::New(m) => m,
            Reservation::Repeat(c) => panic!("a repeat of {c}"),
        }
    }

    fn read_all(hub: &Hub) -> Vec<u64> {
        let mut sub = hub.subscribe(&ch(), Since::Earliest);
        let mut out = Vec::new();
        sub.try_read(&mut out, 100);
        out.iter()
            .map(|e| match e {
                Event::Message(m) => m.cursor.offset,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_reserved_message_is_invisible_until_appended_in_order() {
        let hub = Hub::new(HubConfig::default());
        let a = new(hub.reserve(&ch(), None, Bytes::from_static(b"a"), None));
        let b = new(hub.reserve(&ch(), None, Bytes::from_static(b"b"), None));
        assert_eq!((a.cursor.offset, b.cursor.offset), (1, 2));
        assert!(read_all(&hub).is_empty(), "seen before it was appended");
        assert_eq!(hub.pending(&ch()), Some(b.cursor));
        assert!(matches!(hub.append(a), Append::Appended));
        assert!(matches!(hub.append(b), Append::Appended));
        assert_eq!(read_all(&hub), [1, 2]);
        assert_eq!(hub.pending(&ch()), None);
    }

    #[test]
    fn a_released_reservation_hands_back_its_cursor_and_its_key() {
        let hub = Hub::new(HubConfig::default());
        let key = Idempotency::new("k-1", Duration::from_secs(60)).unwrap();
        let first = new(hub.reserve(&ch(), None, Bytes::from_static(b"a"), Some(&key)));
        match hub.reserve(&ch(), None, Bytes::from_static(b"a"), Some(&key)) {
            Reservation::Repeat(c) => assert_eq!(c, first.cursor),
            Reservation::New(m) => panic!("the key was not remembered: {}", m.cursor),
        }
        hub.release(&ch());
        // The write failed: the same cursor again, and the key is free.
        let again = new(hub.reserve(&ch(), None, Bytes::from_static(b"a"), Some(&key)));
        assert_eq!(again.cursor, first.cursor);
    }

    #[test]
    fn the_sweep_keeps_a_channel_whose_reservation_is_pending() {
        let hub = Hub::new(HubConfig::default());
        let m = new(hub.reserve(&ch(), None, Bytes::from_static(b"a"), None));
        hub.sweep();
        hub.forget_if_unused(&ch());
        assert!(
            matches!(hub.append(m), Append::Appended),
            "the log was dropped under a pending write"
        );
        assert_eq!(read_all(&hub), [1]);
    }

    #[test]
    fn a_restored_channel_and_empty_epochs_resume_their_cursors() {
        let hub = Hub::new(HubConfig::default());
        hub.restore(&ch(), 77, 9, Vec::new());
        assert!(
            hub.holds(&ch()),
            "a channel restored without messages is not remembered"
        );
        let m = new(hub.reserve(&ch(), None, Bytes::from_static(b"a"), None));
        assert_eq!(m.cursor, Cursor::new(77, 10));
        hub.restore_empty_epochs(&[5, 4, 3], Duration::from_secs(60));
        let (epochs, age) = hub.empty_epochs();
        assert_eq!(epochs, [5, 4, 3]);
        assert!(age >= Duration::from_secs(60) && age < Duration::from_secs(3600));
        // Restored more than an hour back: rotated once, the old ones kept behind the new.
        hub.restore_empty_epochs(&[5, 4, 3], Duration::from_secs(3700));
        let (epochs, _) = hub.empty_epochs();
        assert_eq!(&epochs[1..], [5, 4, 3]);
    }

    #[test]
    fn a_channel_forgotten_past_the_tombstone_cap_never_reuses_a_cursor() {
        use crate::history::HistoryLimits;
        let hub = Hub::new(HubConfig {
            history: HistoryLimits {
                max_messages: 10,
                max_age: Duration::from_millis(1),
            },
            max_idle_channels: 1,
            ..HubConfig::default()
        });
        let names: Vec<ChannelName> = (0..200)
            .map(|i| ChannelName::new(&format!("idle:{i}")).unwrap())
            .collect();
        let old: Vec<Cursor> = names
            .iter()
            .map(|n| hub.publish(n, None, b"old").unwrap().cursor)
            .collect();
        std::thread::sleep(Duration::from_millis(5));
        hub.sweep(); // history expired: tombstones, most of them forgotten past the cap
        assert!(
            hub.tombstone_count() < names.len(),
            "nothing was forgotten: the test tests nothing"
        );
        for (name, old) in names.iter().zip(old) {
            let new = hub.publish(name, None, b"new").unwrap().cursor;
            assert_ne!(new, old, "{name}: a cursor handed out twice");
            if new.epoch == old.epoch {
                assert_eq!(new.offset, old.offset + 1, "{name}");
            }
        }
    }
}
