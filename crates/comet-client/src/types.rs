//! The data types of the protocol as the client sees them.

use serde::{Deserialize, Serialize};

/// One published message, as every transport delivers it (`docs/protocol.md` §Envelope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The channel the message was published to.
    pub channel: String,
    /// The message's cursor, `<epochhex>-<offset>`: pass it (or a
    /// [`Subscription::position`](crate::Subscription::position)) as `since` to resume after it.
    pub id: String,
    /// The event name; `"message"` when the publisher gave none.
    #[serde(default = "default_event")]
    pub event: String,
    /// The published text, exactly as sent (except over raw single-channel SSE, where the
    /// event-stream format turns CR and CRLF into LF).
    pub data: String,
    /// When it was published, in milliseconds since the Unix epoch; `0` when the transport does
    /// not carry it (raw single-channel SSE).
    #[serde(default)]
    pub time: u64,
}

pub(crate) fn default_event() -> String {
    "message".to_owned()
}

/// What a [`Subscription`](crate::Subscription) yields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message, never one already delivered by this subscription.
    Message(Envelope),
    /// Gap notice: the channel's history no longer reached the cursor this subscription resumed
    /// from (too old, or another epoch), so messages may have been missed. What history still
    /// holds follows, then live messages.
    Gap {
        /// The channel with the gap.
        channel: String,
    },
}

/// The answer to a publish: where the message landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The channel published to.
    pub channel: String,
    /// The new message's cursor (for a repeated idempotency key, the first publish's).
    pub id: String,
    /// Whether the idempotency key had been used already, so nothing was published.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// One message of a [`Client::publish_batch`](crate::Client::publish_batch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchMessage<'a> {
    /// The channel to publish to.
    pub channel: &'a str,
    /// The event name; `None` for the default `message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'a str>,
    /// The message text.
    pub data: &'a str,
    /// Publish at most once per key and channel (docs/protocol.md "Idempotent publishing").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<&'a str>,
}

/// `GET /channels/{channel}`: a channel's state on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    /// The channel's name.
    pub channel: String,
    /// How many subscribers the channel has right now (on the answering node).
    pub subscribers: u64,
    /// The cursor of the last message published, `None` when nothing was.
    pub last_id: Option<String>,
    /// How many messages the channel's history holds.
    pub history_len: u64,
}
