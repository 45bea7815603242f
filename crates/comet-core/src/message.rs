//! [`Message`]: one published message, with its transport encodings cached.

use std::fmt;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::cursor::Cursor;
use crate::name::{ChannelName, EventName};

/// How many encodings a message can cache; see [`Message::encoded`].
pub const ENCODING_SLOTS: usize = 8;

/// Which cached encoding of a message is meant. Each transport owns one or more slot numbers
/// (`0..ENCODING_SLOTS`); comet-core does not know what is in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodingSlot(usize);

impl EncodingSlot {
    /// Slot number `n`.
    ///
    /// # Panics
    /// At compile time (in const context) or at run time when `n >= ENCODING_SLOTS`.
    pub const fn new(n: usize) -> Self {
        assert!(n < ENCODING_SLOTS, "encoding slot out of range");
        Self(n)
    }
}

/// One published message. Immutable once made, shared as `Arc<Message>` by history and every
/// subscriber.
pub struct Message {
    /// The channel it was published to.
    pub channel: ChannelName,
    /// Its place in the channel's history.
    pub cursor: Cursor,
    /// Its event name; `None` is the default, `message`.
    pub event: Option<EventName>,
    /// The published text. Valid UTF-8, checked by [`Message::new`].
    data: Bytes,
    /// Milliseconds since the Unix epoch when it was published (the envelope's `time`).
    pub published_at: u64,
    /// When this node appended it to history, for age-based trimming (monotonic, unlike
    /// `published_at`).
    pub(crate) appended_at: Instant,
    /// Encodings made once and shared by all subscribers of the same transport (docs/protocol.md "Envelope").
    encodings: [OnceLock<Bytes>; ENCODING_SLOTS],
}

/// The body of a message is not UTF-8 text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message data is not valid UTF-8 (invalid byte sequence at byte {valid_up_to})")]
pub struct NotUtf8 {
    /// The length of the valid prefix.
    pub valid_up_to: usize,
}

impl NotUtf8 {
    /// `data` as text.
    ///
    /// # Errors
    /// [`NotUtf8`] with the offset of the first invalid byte.
    pub fn check(data: &[u8]) -> Result<&str, NotUtf8> {
        std::str::from_utf8(data).map_err(|e| NotUtf8 {
            valid_up_to: e.valid_up_to(),
        })
    }
}

impl Message {
    /// Makes a message, checking that `data` is UTF-8. The data is copied into an allocation of
    /// its own: history keeps a message for minutes, and a `Bytes` kept instead may be a slice of
    /// a much larger buffer (a request body is a slice of hyper's read buffer), which it would
    /// keep alive whole.
    ///
    /// # Errors
    /// [`NotUtf8`] with the offset of the first invalid byte.
    pub fn new(
        channel: ChannelName,
        cursor: Cursor,
        event: Option<EventName>,
        data: &[u8],
        published_at: u64,
    ) -> Result<Self, NotUtf8> {
        NotUtf8::check(data)?;
        Ok(Self::from_text(
            channel,
            cursor,
            event,
            Bytes::copy_from_slice(data),
            published_at,
        ))
    }

    /// [`new`](Self::new) without the check and the copy: `data` must be UTF-8 in an allocation
    /// of its own. For [`Hub::publish`](crate::Hub::publish), which does both before taking the
    /// channel's lock.
    pub(crate) fn from_text(
        channel: ChannelName,
        cursor: Cursor,
        event: Option<EventName>,
        data: Bytes,
        published_at: u64,
    ) -> Self {
        Self {
            channel,
            cursor,
            event,
            data,
            published_at,
            appended_at: Instant::now(),
            encodings: Default::default(),
        }
    }

    /// A message a store kept (durable history), published at `published_at` (ms since the Unix
    /// epoch): as [`new`](Self::new), but its age for history's `max_age` counts from
    /// `published_at` by the wall clock, not from now, so a restart does not make old messages
    /// young again.
    ///
    /// # Errors
    /// [`NotUtf8`] with the offset of the first invalid byte.
    pub fn restored(
        channel: ChannelName,
        cursor: Cursor,
        event: Option<EventName>,
        data: &[u8],
        published_at: u64,
    ) -> Result<Self, NotUtf8> {
        let mut msg = Self::new(channel, cursor, event, data, published_at)?;
        let age = std::time::Duration::from_millis(now_millis().saturating_sub(published_at));
        msg.appended_at = msg.appended_at.checked_sub(age).unwrap_or(msg.appended_at);
        Ok(msg)
    }

    /// The published text.
    pub fn data(&self) -> &str {
        // Checked in `new`; re-checking costs one pass over the data and happens once per
        // encoding, not per subscriber.
        std::str::from_utf8(&self.data).unwrap_or_default()
    }

    /// The published bytes (UTF-8).
    pub fn data_bytes(&self) -> &Bytes {
        &self.data
    }

    /// The event name, `message` when the publisher gave none.
    pub fn event_name(&self) -> &str {
        self.event.as_ref().map_or("message", EventName::as_str)
    }

    /// The encoding in `slot`, made by `encode` the first time it is asked for and shared after
    /// that. `Bytes` clones are reference counts, so fan-out never re-serialises per subscriber.
    pub fn encoded(&self, slot: EncodingSlot, encode: impl FnOnce(&Message) -> Bytes) -> Bytes {
        self.encodings[slot.0].get_or_init(|| encode(self)).clone()
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("channel", &self.channel)
            .field("cursor", &self.cursor)
            .field("event", &self.event)
            .field("data", &self.data())
            .field("published_at", &self.published_at)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_invalid_utf8_with_its_offset() {
        let err = Message::new(ChannelName::new("a").unwrap(), Cursor::new(1, 1), None, b"ok\xffno", 0).unwrap_err();
        assert_eq!(err.valid_up_to, 2);
    }

    #[test]
    fn keeps_its_data_apart_from_the_buffer_it_came_in() {
        // A request body is a slice of the connection's read buffer; history must not keep the
        // whole buffer alive (it did: 5 KB of RSS per message kept, bench S3).
        let buffer = Bytes::from(vec![b'x'; 64 * 1024]);
        let body = buffer.slice(100..110);
        let msg = Message::new(ChannelName::new("a").unwrap(), Cursor::new(1, 1), None, &body, 0).unwrap();
        assert_eq!(msg.data(), "xxxxxxxxxx");
        let within = buffer.as_ptr_range();
        assert!(
            !within.contains(&msg.data_bytes().as_ptr()),
            "the message's data points into the buffer"
        );
        drop(buffer);
        assert_eq!(msg.data_bytes().len(), 10);
    }

    #[test]
    fn encodes_once_per_slot() {
        let msg = Message::new(ChannelName::new("a").unwrap(), Cursor::new(1, 1), None, b"hi", 0).unwrap();
        let mut calls = 0;
        let slot = EncodingSlot::new(3);
        for _ in 0..3 {
            let bytes = msg.encoded(slot, |m| {
                calls += 1;
                Bytes::from(format!("<{}>", m.data()))
            });
            assert_eq!(&bytes[..], b"<hi>");
        }
        assert_eq!(calls, 1);
        assert_eq!(msg.event_name(), "message");
    }
}
