//! Comet's core model, with no network I/O (docs/protocol.md): [`ChannelName`], [`Message`],
//! [`Cursor`] and [`Position`], [`History`], the [`Broker`] trait, the local fan-out [`Hub`] and
//! the embedded [`MemoryBroker`].
//!
//! ```
//! # tokio_test();
//! # fn tokio_test() { tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use comet_core::{Broker, ChannelName, Event, MemoryBroker, Publish, Since};
//! let broker = MemoryBroker::default();
//! let chat = ChannelName::new("chat:lobby").unwrap();
//! let mut sub = broker.subscribe(chat.clone(), Since::Live).await.unwrap();
//! broker.publish(Publish { channel: chat, event: None, data: "hi".into() }).await.unwrap();
//! let mut events = Vec::new();
//! sub.recv(&mut events, 16).await;
//! assert!(matches!(&events[0], Event::Message(m) if m.data() == "hi"));
//! # }) }
//! ```

mod broker;
mod cursor;
mod history;
mod hub;
mod memory;
mod message;
mod name;
mod presence;
mod stats;

pub use broker::{
    BoxFuture, BroadcastSink, Broker, BrokerError, ChannelInfo, PresenceChange, PresenceSink, Publish, SharedStore,
};
pub use cursor::{Cursor, CursorError, Position, Since};
pub use history::{History, HistoryLimits};
pub use hub::{
    Append, ChannelSubscription, EMPTY_EPOCH_EVERY, EMPTY_EPOCHS, Event, Gap, Hub, HubConfig, Idempotency,
    MAX_IDEMPOTENCY_KEY_LEN, NOTICES_KEPT, PresenceNotice, Published, Reservation, SubscriptionSet, TOMBSTONE_TTL,
};
pub use memory::MemoryBroker;
pub use message::{ENCODING_SLOTS, EncodingSlot, Message, NotUtf8, now_millis};
pub use name::{ChannelName, EventName, MAX_CHANNEL_LEN, MAX_EVENT_LEN, NameError, RESERVED_EVENT_PREFIX};
pub use presence::{Presence, PresenceEntry, Transition};
pub use stats::{BrokerStats, StatsSnapshot};
