//! The local fan-out: every channel's history log, and the subscriptions that read it by cursor.
//!
//! Each channel has one log (its [`History`]) behind a short `std::sync::RwLock`, and a wake slot
//! per subscriber. Publishing appends under the lock and wakes the channel's waiting subscribers;
//! each subscriber then copies what follows its own cursor out of the shared log. So:
//! - the seam between replay and live delivery cannot lose or double a message: there is one
//!   log, and a subscriber is nothing but a cursor into it;
//! - a subscriber's queue is its window on the shared log: fan-out allocates nothing per
//!   subscriber and a slow subscriber slows nobody. One more than `queue_len` messages behind is
//!   *lagged* (counted) and keeps reading history; one that history no longer reaches gets a gap
//!   notice.
//!
//! Every broker (memory, Redis) fans out through this code.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::poll_fn;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use slab::Slab;

use crate::broker::ChannelInfo;
use crate::cursor::{Cursor, Position, Since};
use crate::history::{History, HistoryLimits};
use crate::message::{Message, NotUtf8, now_millis};
use crate::name::{ChannelName, EventName};
use crate::presence::PresenceEntry;
use crate::stats::BrokerStats;

mod reserve;

pub use reserve::Reservation;

/// Channels are spread over this many maps, each behind its own lock: a sweep holds one at a
/// time, for a 128th of the channels (bench `sweep/320000_channels`: 54 ms in all, about
/// 0.4 ms each).
const SHARDS: usize = 128;

/// How long the epoch and newest offset of a forgotten channel that had messages are
/// remembered. Re-created within this time, the channel goes on in the same epoch, so cursors
/// handed out for it stay valid (no false gap notice for a quiet channel). About 100 bytes per
/// forgotten channel, at most [`HubConfig::max_idle_channels`] of them.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How often the *empty epoch* changes: the epoch every channel created on this node without a
/// tombstone starts in. A channel that never had a message is forgotten by the sweep without a
/// trace (polls of random channel names leave nothing behind); its cursors (`<empty epoch>-0`)
/// stay valid as long as their epoch is one of the last [`EMPTY_EPOCHS`], at least 23 hours.
/// A channel re-created after its tombstone expired cannot get its old epoch back: that epoch
/// was the empty one at least [`TOMBSTONE_TTL`] ago, and is no longer among them.
pub const EMPTY_EPOCH_EVERY: Duration = Duration::from_secs(60 * 60);

/// How many empty epochs (the current one and those before it) an offset-0 cursor may name and
/// still resume without a gap notice: `EMPTY_EPOCHS` × [`EMPTY_EPOCH_EVERY`] must not pass
/// [`TOMBSTONE_TTL`].
pub const EMPTY_EPOCHS: usize = 24;

#[derive(Debug, Default)]
struct Shard {
    logs: HashMap<ChannelName, Arc<ChannelLog>>,
    /// Forgotten channels that had messages: (epoch, head, when forgotten).
    tombstones: HashMap<ChannelName, (u64, u64, Instant)>,
}

/// The empty epochs, newest (current) first, and when the current one began.
#[derive(Debug)]
struct EmptyEpochs {
    epochs: VecDeque<u64>,
    since: Instant,
}

impl EmptyEpochs {
    fn new() -> Self {
        Self {
            epochs: VecDeque::from([new_epoch()]),
            since: Instant::now(),
        }
    }

    /// Starts a new current empty epoch now (the older ones stay for offset-0 cursors).
    fn renew(&mut self, now: Instant) {
        self.epochs.push_front(new_epoch());
        self.epochs.truncate(EMPTY_EPOCHS);
        self.since = now;
    }

    /// Moves on by as many periods as have passed (at most [`EMPTY_EPOCHS`]: older ones are
    /// dropped anyway).
    fn rotate(&mut self, now: Instant) {
        let mut steps = 0;
        while now.saturating_duration_since(self.since) >= EMPTY_EPOCH_EVERY {
            self.since += EMPTY_EPOCH_EVERY;
            if steps < EMPTY_EPOCHS {
                self.epochs.push_front(new_epoch());
                self.epochs.truncate(EMPTY_EPOCHS);
            }
            steps += 1;
        }
    }
}

/// Settings of the local fan-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Per-channel history bounds, unless `namespace_history` says otherwise.
    pub history: HistoryLimits,
    /// History bounds by namespace (the part of a channel name before `:`; `""` for channels
    /// without one, and for namespaces without an entry). Defaults to none: `history` for all.
    pub namespace_history: BTreeMap<String, HistoryLimits>,
    /// How far (in messages) a subscriber may trail the live edge before it counts as lagged.
    /// Defaults to 64.
    pub queue_len: usize,
    /// Most message data, in bytes, one read moves (a poll answer, one write to a streaming
    /// subscriber): a read stops once the data it moved reaches this, so a replay of large
    /// messages goes out a few at a time. A read always moves at least one message, however
    /// large. Defaults to 262,144 (256 KiB).
    pub max_batch_bytes: usize,
    /// Most forgotten channels whose epoch and newest offset are remembered (for
    /// [`TOMBSTONE_TTL`]), so that their cursors resume without a false gap notice: channels
    /// that had messages, whose history expired and that have no subscriber. Past it, the sweep
    /// forgets the oldest first (a cursor of one then gets a gap notice). Channels that never
    /// had a message take no such place. About 100 bytes each. Defaults to 1,000,000.
    pub max_idle_channels: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            history: HistoryLimits::default(),
            namespace_history: BTreeMap::new(),
            queue_len: 64,
            max_batch_bytes: 256 * 1024,
            max_idle_channels: 1_000_000,
        }
    }
}

impl HubConfig {
    /// The history bounds of `channel`: its namespace's entry, else the `""` entry, else
    /// `history`.
    pub fn history_for(&self, channel: &ChannelName) -> HistoryLimits {
        if self.namespace_history.is_empty() {
            return self.history;
        }
        let ns = channel.namespace().unwrap_or("");
        self.namespace_history
            .get(ns)
            .or_else(|| self.namespace_history.get(""))
            .copied()
            .unwrap_or(self.history)
    }
}

/// What [`Hub::append`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Append {
    /// It was the next message: appended, subscribers woken.
    Appended,
    /// It was already held.
    Duplicate,
    /// Messages between `head` and it are missing; nothing was appended.
    Hole {
        /// The newest cursor held.
        head: Cursor,
    },
    /// It belongs to another epoch than the one held; nothing was appended.
    OtherEpoch {
        /// The newest cursor held.
        head: Cursor,
    },
    /// This node does not hold the channel (no local subscriber); nothing was appended.
    UnknownChannel,
}

/// What a subscription yields.
#[derive(Debug, Clone)]
pub enum Event {
    /// The next message.
    Message(Arc<Message>),
    /// History no longer reaches the subscriber's cursor on `channel` (too old, or another
    /// epoch). What follows is everything history still holds, then live messages.
    Gap(Gap),
    /// A client joined or left the channel's presence (`join_leave = true`): not history, no
    /// cursor; a subscriber gets the notices made while it reads, at most [`NOTICES_KEPT`]
    /// behind (docs/protocol.md "Presence").
    Presence(Arc<PresenceNotice>),
}

/// A join or a leave in a channel's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceNotice {
    /// Joined (`true`) or left.
    pub joined: bool,
    /// The channel.
    pub channel: ChannelName,
    /// Who joined or left.
    pub entry: PresenceEntry,
}

/// Presence notices a channel keeps for subscribers that have not read them yet; one that falls
/// further behind misses the oldest (they are not history, and `GET …/presence` tells the
/// current state).
pub const NOTICES_KEPT: usize = 64;

/// A gap notice: messages between `after` and `resumed_at` cannot be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The channel with the gap.
    pub channel: ChannelName,
    /// The cursor the subscriber asked to resume after.
    pub after: Option<Cursor>,
    /// Where delivery resumes: the next message delivered follows this cursor.
    pub resumed_at: Cursor,
}

/// One channel's log.
#[derive(Debug)]
struct ChannelLog {
    name: ChannelName,
    /// Short critical sections only, never held across `.await`. Written by publish, read by
    /// every subscriber's `try_read`.
    state: RwLock<LogState>,
    /// Every subscription's wake slot, keyed by [`ChannelSubscription::slot_key`]. Locked by
    /// [`wake`](Self::wake), and by subscribe and unsubscribe; a subscriber that waits
    /// registers in its own slot, without this lock. (A `tokio::sync::Notify`, used before,
    /// takes its one waiter lock for every wait of every subscriber, from every worker thread:
    /// 445 instructions more per WebSocket delivery, bench/RESULTS.md "Instructions".)
    slots: Mutex<Slab<Arc<AtomicWaker>>>,
    subscribers: AtomicUsize,
    /// Bumped by every [`write`](Self::write), so a subscriber that found nothing new at one
    /// version knows, without the lock, that nothing changed since: a waiting subscriber
    /// checks before and after registering for a wake, and 10,000 of them taking the read lock
    /// for that made its counter bounce between the cores.
    version: AtomicU64,
}

#[derive(Debug)]
struct LogState {
    epoch: u64,
    /// Offset of the newest message of this epoch (0: none yet).
    head: u64,
    /// Offset of the newest cursor handed out by [`Hub::reserve`] and not yet appended; at most
    /// `head` when none is pending.
    reserved: u64,
    history: History,
    /// Set by [`Hub::sweep`] when it drops this log from its shard (under both the shard's lock
    /// and this one). A writer that finds it set took the log from the shard before the sweep
    /// and must look the channel up again: appending here would acknowledge a message into a
    /// log nobody reads, and the channel re-created from its tombstone would hand out the same
    /// cursor again.
    retired: bool,
    /// Idempotency keys of recent publishes (docs/protocol.md "Idempotent publishing").
    keys: IdempotencyKeys,
    /// Presence notices, each with its number (the last is `notice_seq`), at most
    /// [`NOTICES_KEPT`].
    notices: VecDeque<(u64, Arc<PresenceNotice>)>,
    notice_seq: u64,
}

impl LogState {
    /// The first cursor of `key`, if it was used within its window (expired keys are dropped
    /// first).
    fn repeat_of(&mut self, key: Option<&Idempotency>, now: Instant) -> Option<Cursor> {
        let key = key?;
        self.keys.purge(now);
        self.keys.get(key.key())
    }
}

/// The idempotency keys a channel remembers: each key's cursor, until it expires.
#[derive(Debug, Default)]
struct IdempotencyKeys {
    cursors: HashMap<Box<str>, Cursor>,
    /// Keys by expiry, oldest first (one window for the whole server, so in order).
    expiry: VecDeque<(Instant, Box<str>)>,
}

impl IdempotencyKeys {
    fn purge(&mut self, now: Instant) {
        while let Some((at, _)) = self.expiry.front() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.expiry.pop_front() {
                self.cursors.remove(&key);
            }
        }
    }

    fn get(&self, key: &str) -> Option<Cursor> {
        self.cursors.get(key).copied()
    }

    fn insert(&mut self, key: &str, cursor: Cursor, expires: Instant) {
        let key: Box<str> = key.into();
        self.cursors.insert(key.clone(), cursor);
        self.expiry.push_back((expires, key));
    }

    fn is_empty(&self) -> bool {
        self.cursors.is_empty()
    }

    /// Forgets the keys of cursors after `head` in `epoch` (reservations handed back).
    fn forget_after(&mut self, epoch: u64, head: u64) {
        self.cursors.retain(|_, c| c.epoch != epoch || c.offset <= head);
        let cursors = &self.cursors;
        self.expiry.retain(|(_, key)| cursors.contains_key(key));
    }
}

/// An idempotency key and how long a publish with it is remembered (`idempotency_window_secs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The key, as the publisher sent it (1–128 printable ASCII bytes, checked by
    /// [`Idempotency::new`]).
    key: String,
    /// How long the first publish's cursor is answered to a repeat.
    pub window: Duration,
}

/// The longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

impl Idempotency {
    /// A key remembered for `window`.
    ///
    /// # Errors
    /// A message saying why, for a key that is empty, longer than
    /// [`MAX_IDEMPOTENCY_KEY_LEN`] bytes, or holds a byte outside printable ASCII (`!`–`~`).
    pub fn new(key: &str, window: Duration) -> Result<Self, String> {
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(format!(
                "an idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes, not {}",
                key.len()
            ));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("an idempotency key must be printable ASCII without spaces (! to ~)".to_owned());
        }
        Ok(Self {
            key: key.to_owned(),
            window,
        })
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// What an idempotent publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The message's cursor: the new one, or the first publish's for a repeated key.
    pub cursor: Cursor,
    /// Whether the key had been seen within its window, so nothing was published.
    pub duplicate: bool,
}

impl ChannelLog {
    // A panic while holding this lock leaves consistent data (every update is a single push or
    // pop), so poisoning is ignored.
    fn write(&self) -> RwLockWriteGuard<'_, LogState> {
        let guard = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Under the lock: a reader holding the read lock sees a version that matches the state.
        self.version.fetch_add(1, Ordering::AcqRel);
        guard
    }

    /// Shared: the subscribers of a busy channel read it from every worker thread at once.
    fn read(&self) -> RwLockReadGuard<'_, LogState> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn slots(&self) -> MutexGuard<'_, Slab<Arc<AtomicWaker>>> {
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes every subscriber that registered since its last wake. Call it after a
    /// [`write`](Self::write) has been released: a woken subscriber reads the log at once.
    fn wake(&self) {
        for (_, slot) in self.slots().iter() {
            slot.wake();
        }
    }
}

/// The channels of one node and their subscribers.
#[derive(Debug)]
pub struct Hub {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    config: HubConfig,
    stats: Arc<BrokerStats>,
    empty: Mutex<EmptyEpochs>,
}

/// A fresh epoch: 48 random bits, so cursor text stays short.
fn new_epoch() -> u64 {
    rand::random::<u64>() >> 16
}

impl Hub {
    /// An empty hub.
    pub fn new(config: HubConfig) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            config,
            stats: Arc::new(BrokerStats::default()),
            empty: Mutex::new(EmptyEpochs::new()),
        }
    }

    fn empty_now(&self) -> MutexGuard<'_, EmptyEpochs> {
        let mut empty = self.empty.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        empty.rotate(Instant::now());
        empty
    }

    /// The epoch a channel created now without a tombstone starts in.
    fn current_empty_epoch(&self) -> u64 {
        self.empty_now().epochs[0]
    }

    /// Whether `epoch` is one of the last [`EMPTY_EPOCHS`] empty epochs.
    fn is_empty_epoch(&self, epoch: u64) -> bool {
        self.empty_now().epochs.contains(&epoch)
    }

    /// The hub's counters.
    pub fn stats(&self) -> &BrokerStats {
        &self.stats
    }

    /// The hub's settings.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    fn shard(&self, name: &ChannelName) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(name) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn log(&self, name: &ChannelName, subscribe: bool) -> Arc<ChannelLog> {
        let mut shard = self.shard(name);
        let Shard { logs, tombstones } = &mut *shard;
        let log = logs.entry(name.clone()).or_insert_with(|| {
            // A channel forgotten by `sweep` goes on in its epoch, so its cursors stay valid.
            let (epoch, head) = tombstones
                .remove(name)
                .map_or_else(|| (self.current_empty_epoch(), 0), |(e, h, _)| (e, h));
            Arc::new(ChannelLog {
                name: name.clone(),
                state: RwLock::new(LogState {
                    epoch,
                    head,
                    reserved: 0,
                    history: History::new(self.config.history_for(name)),
                    retired: false,
                    keys: IdempotencyKeys::default(),
                    notices: VecDeque::new(),
                    notice_seq: 0,
                }),
                slots: Mutex::new(Slab::new()),
                subscribers: AtomicUsize::new(0),
                version: AtomicU64::new(0),
            })
        });
        if subscribe {
            // Counted under the shard lock so that `sweep` never drops a channel being joined.
            log.subscribers.fetch_add(1, Ordering::Relaxed);
        }
        Arc::clone(log)
    }

    fn existing(&self, name: &ChannelName) -> Option<Arc<ChannelLog>> {
        self.shard(name).logs.get(name).cloned()
    }

    /// Publishes on this node: assigns the next cursor, appends to history (a copy of `data`,
    /// see [`Message::new`]), wakes subscribers.
    ///
    /// # Errors
    /// [`NotUtf8`] when `data` is not UTF-8 text.
    pub fn publish(
        &self,
        channel: &ChannelName,
        event: Option<EventName>,
        data: &[u8],
    ) -> Result<Arc<Message>, NotUtf8> {
        NotUtf8::check(data)?;
        // Copied here, not under the lock (see `Message::new` for why it is copied at all).
        let data = Bytes::copy_from_slice(data);
        let (msg, _) = self.append_new(channel, event, data, None);
        Ok(msg.expect("a publish without a key always publishes"))
    }

    /// [`publish`](Self::publish) with an idempotency key: a key this channel saw within its
    /// window publishes nothing and answers the first publish's cursor.
    ///
    /// # Errors
    /// [`NotUtf8`] when `data` is not UTF-8 text.
    pub fn publish_idempotent(
        &self,
        channel: &ChannelName,
        event: Option<EventName>,
        data: &[u8],
        key: &Idempotency,
    ) -> Result<Published, NotUtf8> {
        NotUtf8::check(data)?;
        let data = Bytes::copy_from_slice(data);
        let (msg, cursor) = self.append_new(channel, event, data, Some(key));
        Ok(Published {
            cursor,
            duplicate: msg.is_none(),
        })
    }

    /// Assigns the next cursor and appends, under the channel's write lock; `None` (with the
    /// first cursor) when `key` was already used.
    fn append_new(
        &self,
        channel: &ChannelName,
        event: Option<EventName>,
        data: Bytes,
        key: Option<&Idempotency>,
    ) -> (Option<Arc<Message>>, Cursor) {
        // Lock order, here as in `sweep`: a shard, then a log. The shard's lock is let go
        // before the log's is taken, so a sweep may retire the log in between; then it is
        // looked up again (and comes back from its tombstone with the same epoch and head).
        let (log, msg) = loop {
            let log = self.log(channel, false);
            let mut state = log.write();
            if state.retired {
                continue;
            }
            let now = Instant::now();
            if let Some(first) = state.repeat_of(key, now) {
                return (None, first);
            }
            let cursor = Cursor::new(state.epoch, state.head + 1);
            let msg = Arc::new(Message::from_text(channel.clone(), cursor, event, data, now_millis()));
            state.head = cursor.offset;
            state.history.trim_age(msg.appended_at);
            state.history.push(Arc::clone(&msg));
            if let Some(key) = key {
                state.keys.insert(key.key(), cursor, now + key.window);
            }
            drop(state);
            break (log, msg);
        };
        log.wake();
        BrokerStats::add(&self.stats.published, 1);
        let cursor = msg.cursor;
        (Some(msg), cursor)
    }

    /// Appends a message whose cursor was assigned elsewhere (e.g. by Redis) and wakes the
    /// channel's subscribers, if the message is the next one. Anything else is reported and not
    /// applied, so that history never holds a hole: the caller fetches what is missing from its
    /// store and calls [`replace`](Self::replace).
    pub fn append(&self, msg: Arc<Message>) -> Append {
        let Some(log) = self.existing(&msg.channel) else {
            return Append::UnknownChannel;
        };
        {
            let mut state = log.write();
            if state.retired {
                return Append::UnknownChannel;
            }
            if msg.cursor.epoch != state.epoch {
                return Append::OtherEpoch {
                    head: Cursor::new(state.epoch, state.head),
                };
            }
            if msg.cursor.offset <= state.head {
                return Append::Duplicate;
            }
            if msg.cursor.offset != state.head + 1 {
                return Append::Hole {
                    head: Cursor::new(state.epoch, state.head),
                };
            }
            state.head = msg.cursor.offset;
            state.history.trim_age(msg.appended_at);
            state.history.push(msg);
        }
        log.wake();
        Append::Appended
    }

    /// Sets `channel`'s history from its store: `epoch`, the newest offset `head`, and the newest
    /// messages `tail` (oldest first, contiguous, ending at `head` unless empty). Creates the
    /// channel when this node does not hold it yet. Messages already held that are newer than
    /// `head` in the same epoch are kept (they arrived while the store was being read). A new
    /// epoch drops the old history, so subscribers still in the old one get a gap notice.
    pub fn replace(&self, channel: &ChannelName, epoch: u64, head: u64, tail: Vec<Arc<Message>>) {
        let log = loop {
            let log = self.log(channel, false);
            let mut state = log.write();
            if state.retired {
                continue;
            }
            let newer: Vec<Arc<Message>> = if state.epoch == epoch {
                state.history.after(head).cloned().collect()
            } else {
                Vec::new()
            };
            state.history.clear();
            state.epoch = epoch;
            state.reserved = 0;
            state.head = head;
            for msg in tail {
                state.history.push(msg);
            }
            for msg in newer {
                state.head = msg.cursor.offset;
                state.history.push(msg);
            }
            drop(state);
            break log;
        };
        log.wake();
    }

    /// The newest cursor of `channel` on this node, if it holds the channel.
    pub fn head(&self, channel: &ChannelName) -> Option<Cursor> {
        let log = self.existing(channel)?;
        let state = log.read();
        Some(Cursor::new(state.epoch, state.head))
    }

    /// The message `channel`'s history holds at `cursor`, if it still holds it.
    pub fn message_at(&self, channel: &ChannelName, cursor: Cursor) -> Option<Arc<Message>> {
        let log = self.existing(channel)?;
        let state = log.read();
        if state.epoch != cursor.epoch {
            return None;
        }
        let offset = cursor.offset.checked_sub(1)?;
        state
            .history
            .after(offset)
            .next()
            .filter(|m| m.cursor == cursor)
            .cloned()
    }

    /// Forgets `channel` if it has no subscribers; returns whether it did (or it was unknown).
    pub fn remove_if_unsubscribed(&self, channel: &ChannelName) -> bool {
        let mut shard = self.shard(channel);
        match shard.logs.get(channel) {
            Some(log) if log.subscribers.load(Ordering::Relaxed) > 0 => false,
            _ => {
                if let Some(log) = shard.logs.remove(channel) {
                    log.write().retired = true;
                }
                true
            }
        }
    }

    /// Forgets `channel` at once if nobody subscribes to it and it never had a message in its
    /// epoch, an empty one (as [`sweep`](Self::sweep) would a few seconds later, leaving no
    /// tombstone): what a poll of a channel nobody publishes to leaves behind.
    pub fn forget_if_unused(&self, channel: &ChannelName) {
        let mut shard = self.shard(channel);
        let Some(log) = shard.logs.get(channel) else {
            return;
        };
        // Subscribers are counted under the shard's lock (held here): none joins meanwhile.
        if log.subscribers.load(Ordering::Relaxed) > 0 {
            return;
        }
        let log = Arc::clone(log);
        let mut state = log.write();
        if state.head > 0
            || state.reserved > 0
            || !state.history.is_empty()
            || !state.keys.is_empty()
            || !self.is_empty_epoch(state.epoch)
        {
            return;
        }
        // A publisher that took the log before the shard's lock finds it retired, and looks
        // the channel up again.
        state.retired = true;
        drop(state);
        shard.logs.remove(channel);
    }

    /// Subscribers of `channel` on this node.
    pub fn subscribers(&self, channel: &ChannelName) -> usize {
        self.existing(channel)
            .map_or(0, |log| log.subscribers.load(Ordering::Relaxed))
    }

    /// Subscribes to `channel` from `since`. The first read replays what follows `since`, then
    /// live messages follow with nothing lost or doubled at the seam.
    pub fn subscribe(&self, channel: &ChannelName, since: Since) -> ChannelSubscription {
        let log = self.log(channel, true);
        let (epoch, position, gap, notice_at) = {
            let mut state = log.write();
            let notice_at = state.notice_seq;
            state.history.trim_age(Instant::now());
            let oldest = state.history.first_offset().map_or(state.head, |o| o - 1);
            let (epoch, position, gap) = match since {
                Since::Live => (state.epoch, state.head, None),
                Since::Earliest => (state.epoch, oldest, None),
                Since::Cursor(c) if c.epoch == state.epoch && c.offset <= state.head => (state.epoch, c.offset, None),
                // Handed out while this node held nothing of the channel, within the last
                // EMPTY_EPOCHS: whatever the channel holds now came after it.
                Since::Cursor(c) if c.offset == 0 && self.is_empty_epoch(c.epoch) => (state.epoch, 0, None),
                // Another epoch, or a cursor from this epoch's future: not ours to resume.
                Since::Cursor(c) => (state.epoch, oldest, Some(c)),
            };
            (epoch, position, gap, notice_at)
        };
        let slot = Arc::new(AtomicWaker::new());
        let slot_key = log.slots().insert(Arc::clone(&slot));
        let mut sub = ChannelSubscription {
            slot,
            slot_key,
            log,
            epoch,
            position,
            notice_at,
            own_client: None,
            pending_gap: None,
            lagging: false,
            stats: Arc::clone(&self.stats),
            queue_len: self.config.queue_len,
            max_batch_bytes: self.config.max_batch_bytes,
            idle_at: NOT_IDLE,
        };
        if let Some(after) = gap {
            sub.note_gap(Some(after));
        }
        sub
    }

    /// Pushes `notice` to the subscribers of its channel on this node (nothing if it has
    /// none): they read it before their next messages.
    pub fn announce(&self, notice: PresenceNotice) {
        let Some(log) = self.existing(&notice.channel) else {
            return;
        };
        {
            let mut state = log.write();
            state.notice_seq += 1;
            let seq = state.notice_seq;
            if state.notices.len() == NOTICES_KEPT {
                state.notices.pop_front();
            }
            state.notices.push_back((seq, Arc::new(notice)));
        }
        log.wake();
    }

    /// The channel's facts on this node (subscribers, newest cursor, history length); `None`
    /// for a channel this node does not hold.
    pub fn info(&self, channel: &ChannelName) -> Option<ChannelInfo> {
        let log = self.existing(channel)?;
        let subscribers = log.subscribers.load(Ordering::Relaxed);
        let state = log.read();
        let last = (state.head > 0).then(|| Cursor::new(state.epoch, state.head));
        Some(ChannelInfo {
            channel: channel.clone(),
            subscribers,
            last,
            history_len: state.history.len(),
        })
    }

    /// Trims history by age and forgets channels with no subscribers, no history and no
    /// idempotency key left. Of those that had messages (or whose epoch is not one of the empty
    /// epochs), the epoch and head are remembered for [`TOMBSTONE_TTL`], at most
    /// [`HubConfig::max_idle_channels`]; those that never had one leave nothing. Returns how many
    /// channels remain. Call it every few seconds.
    ///
    /// Each shard's lock is held while that shard (a 128th of the channels) is swept, and no
    /// other; a shard's maps are shrunk when most of their room is empty.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let empty: Vec<u64> = self.empty_now().epochs.iter().copied().collect();
        // At least one per shard: a cap below SHARDS keeps up to SHARDS.
        let max_tombstones = (self.config.max_idle_channels / SHARDS).max(1);
        let mut remaining = 0;
        // A channel forgotten in the current empty epoch would be made again in it, and hand out
        // its cursors a second time: then the empty epoch changes now.
        let mut renew = false;
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let Shard { logs, tombstones } = &mut *shard;
            logs.retain(|name, log| {
                let mut state = log.write();
                state.history.trim_age(now);
                state.keys.purge(now);
                // Subscribers are counted under the shard's lock (held here), so none joins
                // meanwhile; a publisher that took the log before this lock finds it retired.
                // A log with a reserved cursor is not idle: its store is committing a message.
                let idle = state.history.is_empty()
                    && state.keys.is_empty()
                    && state.reserved <= state.head
                    && log.subscribers.load(Ordering::Relaxed) == 0;
                if idle {
                    state.retired = true;
                    if state.head > 0 || !empty.contains(&state.epoch) {
                        tombstones.insert(name.clone(), (state.epoch, state.head, now));
                    }
                }
                !idle
            });
            tombstones.retain(|_, (_, _, at)| now.saturating_duration_since(*at) < TOMBSTONE_TTL);
            if tombstones.len() > max_tombstones {
                renew |= forget_oldest(tombstones, max_tombstones, empty[0]);
            }
            shrink(logs);
            shrink(tombstones);
            remaining += logs.len();
        }
        if renew {
            self.empty_now().renew(Instant::now());
        }
        remaining
    }

    /// Whether this node holds `channel`: its log, or its tombstone.
    pub fn holds(&self, channel: &ChannelName) -> bool {
        let shard = self.shard(channel);
        shard.logs.contains_key(channel) || shard.tombstones.contains_key(channel)
    }

    /// Forgotten channels whose epoch and head are remembered (see [`sweep`](Self::sweep)).
    pub fn tombstone_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .tombstones
                    .len()
            })
            .sum()
    }

    /// The channels with subscribers on this node whose names start with `prefix` and sort
    /// after `after`, in name order, at most `limit`, each with its subscriber count.
    pub fn active_channels(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<(ChannelName, usize)> {
        let mut out: Vec<(ChannelName, usize)> = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            out.extend(shard.logs.iter().filter_map(|(name, log)| {
                let subscribers = log.subscribers.load(Ordering::Relaxed);
                let wanted = subscribers > 0
                    && name.as_str().starts_with(prefix)
                    && after.is_none_or(|after| name.as_str() > after);
                wanted.then(|| (name.clone(), subscribers))
            }));
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out.truncate(limit);
        out
    }

    /// How many channels this node holds.
    pub fn channel_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(std::sync::PoisonError::into_inner).logs.len())
            .sum()
    }
}

/// Drops the oldest entries of `tombstones` until `keep` are left; returns whether one it
/// dropped was in epoch `current`.
fn forget_oldest(tombstones: &mut HashMap<ChannelName, (u64, u64, Instant)>, keep: usize, current: u64) -> bool {
    let mut times: Vec<Instant> = tombstones.values().map(|(_, _, at)| *at).collect();
    let excess = times.len() - keep;
    let (_, cut, _) = times.select_nth_unstable(excess - 1);
    let cut = *cut;
    let mut dropped = 0;
    let mut in_current = false;
    // Everything older than the cut goes; of those forgotten at the cut itself, as many as needed.
    tombstones.retain(|_, (epoch, _, at)| {
        if *at < cut || (*at == cut && dropped < excess) {
            dropped += 1;
            in_current |= *epoch == current;
            false
        } else {
            true
        }
    });
    in_current
}

/// Gives memory back once a map uses less than a quarter of its room (a burst of channels
/// grew it).
fn shrink<V>(map: &mut HashMap<ChannelName, V>) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

/// A subscription to one channel: a cursor into the channel's log.
///
/// # Cancel safety
/// [`recv`](Self::recv) is cancel-safe: a cancelled call has delivered nothing and moved no
/// cursor. Dropping the subscription unsubscribes.
#[derive(Debug)]
pub struct ChannelSubscription {
    log: Arc<ChannelLog>,
    /// Where a waiting [`recv`](Self::recv) leaves its waker for the channel's next publish.
    slot: Arc<AtomicWaker>,
    /// The slot's key in the channel's `slots`.
    slot_key: usize,
    epoch: u64,
    /// Offset of the last message delivered (or skipped by a gap).
    position: u64,
    /// The number of the last presence notice delivered (or made before it subscribed).
    notice_at: u64,
    /// The subscriber's own client id in the channel's presence: its own joins and leaves are
    /// not delivered to it (docs/protocol.md "Presence").
    own_client: Option<Arc<str>>,
    pending_gap: Option<Gap>,
    lagging: bool,
    stats: Arc<BrokerStats>,
    queue_len: usize,
    /// [`HubConfig::max_batch_bytes`].
    max_batch_bytes: usize,
    /// The log's version when this subscription last read everything there was
    /// ([`NOT_IDLE`] if it has not): while the version stays the same, there is nothing to read.
    idle_at: u64,
}

/// [`ChannelSubscription::idle_at`] when unknown (versions never reach it).
const NOT_IDLE: u64 = u64::MAX;

impl Drop for ChannelSubscription {
    fn drop(&mut self) {
        self.log.slots().try_remove(self.slot_key);
        self.log.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ChannelSubscription {
    /// The channel.
    pub fn channel(&self) -> &ChannelName {
        &self.log.name
    }

    /// The cursor to resume from: the last message delivered (or the live edge it started at).
    pub fn cursor(&self) -> Cursor {
        Cursor::new(self.epoch, self.position)
    }

    /// Makes `client` the subscriber's own id in presence: the joins and leaves of that
    /// client are not delivered to this subscription (a client never hears of itself, even
    /// when its join reaches this node after its subscription, as through another node).
    pub fn ignore_notices_of(&mut self, client: Arc<str>) {
        self.own_client = Some(client);
    }

    /// Whether the subscription starts with a gap notice not yet read.
    pub fn has_pending_gap(&self) -> bool {
        self.pending_gap.is_some()
    }

    /// Whether a read now would move something: a gap notice, or a message past the cursor
    /// (e.g. after a read that `max` or `max_batch_bytes` cut short).
    pub fn has_unread(&self) -> bool {
        if self.pending_gap.is_some() {
            return true;
        }
        if self.idle_at == self.log.version.load(Ordering::Acquire) {
            return false;
        }
        let state = self.log.read();
        state.epoch != self.epoch || self.position < state.head || self.notice_at < state.notice_seq
    }

    fn note_gap(&mut self, after: Option<Cursor>) {
        BrokerStats::add(&self.stats.gaps, 1);
        self.pending_gap = Some(Gap {
            channel: self.log.name.clone(),
            after,
            resumed_at: self.cursor(),
        });
    }

    /// Moves what is ready (at most `max` events, and messages up to
    /// [`HubConfig::max_batch_bytes`] of data) into `out` without waiting; returns how many.
    pub fn try_read(&mut self, out: &mut Vec<Event>, max: usize) -> usize {
        let mut budget = self.max_batch_bytes;
        self.read_within(out, max, &mut budget)
    }

    /// [`try_read`](Self::try_read) within `budget` bytes of message data, taken from it: stops
    /// once it is used up (a message that crosses it is still moved), and moves no message when
    /// it is 0 on entry.
    fn read_within(&mut self, out: &mut Vec<Event>, max: usize, budget: &mut usize) -> usize {
        if self.pending_gap.is_none() && self.idle_at == self.log.version.load(Ordering::Acquire) {
            return 0;
        }
        let start = out.len();
        let limit = start + max;
        if let Some(gap) = self.pending_gap.take() {
            out.push(Event::Gap(gap));
        }
        let mut delivered = 0u64;
        let mut gap_after = None;
        {
            let state = self.log.read();
            let version = self.log.version.load(Ordering::Acquire);
            if state.epoch != self.epoch {
                gap_after = Some(Some(self.cursor()));
                self.epoch = state.epoch;
                self.position = state.history.first_offset().map_or(state.head, |o| o - 1);
            } else if self.position < state.head {
                let oldest = state.history.first_offset().map_or(state.head, |o| o - 1);
                if self.position < oldest {
                    gap_after = Some(Some(self.cursor()));
                    self.position = oldest;
                }
            }
            let behind = state.head.saturating_sub(self.position);
            if behind > self.queue_len as u64 {
                if !self.lagging {
                    self.lagging = true;
                    BrokerStats::add(&self.stats.lagged, 1);
                }
            } else {
                self.lagging = false;
            }
            if let Some(after) = gap_after {
                // The notice goes before the messages that follow it.
                BrokerStats::add(&self.stats.gaps, 1);
                out.push(Event::Gap(Gap {
                    channel: self.log.name.clone(),
                    after,
                    resumed_at: Cursor::new(self.epoch, self.position),
                }));
            }
            if state.notice_seq > self.notice_at {
                for (seq, notice) in &state.notices {
                    if *seq > self.notice_at && out.len() < limit {
                        if self.own_client.as_deref() != Some(&*notice.entry.client) {
                            out.push(Event::Presence(Arc::clone(notice)));
                        }
                        self.notice_at = *seq;
                    }
                }
                // Those the ring no longer holds are missed, not waited for.
                if out.len() < limit {
                    self.notice_at = state.notice_seq;
                }
            }
            for msg in state.history.after(self.position) {
                if out.len() >= limit || *budget == 0 {
                    break;
                }
                self.position = msg.cursor.offset;
                out.push(Event::Message(Arc::clone(msg)));
                delivered += 1;
                // An empty message costs a byte, so a budget always ends a read.
                *budget = budget.saturating_sub(msg.data_bytes().len().max(1));
            }
            self.idle_at = if self.position >= state.head && self.notice_at >= state.notice_seq {
                version
            } else {
                NOT_IDLE
            };
        }
        BrokerStats::add(&self.stats.delivered, delivered);
        out.len() - start
    }

    /// Waits until at least one event is ready, then moves up to `max` into `out`; returns how
    /// many. Never returns 0 for `max > 0`.
    pub async fn recv(&mut self, out: &mut Vec<Event>, max: usize) -> usize {
        poll_fn(|cx| self.poll_recv(cx, out, max)).await
    }

    /// [`recv`](Self::recv) as a poll: `Pending` leaves `cx`'s waker for the channel's next
    /// publish (a later poll replaces it; only the last one is woken).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>, out: &mut Vec<Event>, max: usize) -> Poll<usize> {
        // First without registering: right after a wake there is something to read.
        let n = self.try_read(out, max);
        if n > 0 {
            return Poll::Ready(n);
        }
        self.register(cx);
        // Again once registered: a publish between the first read and the registration woke
        // no one. Cheap when nothing changed: one load of the log's version.
        let n = self.try_read(out, max);
        if n > 0 { Poll::Ready(n) } else { Poll::Pending }
    }

    /// Leaves `cx`'s waker in this subscription's slot: the channel's next publish wakes it.
    fn register(&self, cx: &Context<'_>) {
        self.slot.register(cx.waker());
    }
}

/// Several [`ChannelSubscription`]s read as one, fairly (round-robin), e.g. `GET /sub/a,b` or a
/// WebSocket's subscriptions.
///
/// # Cancel safety
/// [`recv`](Self::recv) is cancel-safe, like [`ChannelSubscription::recv`].
#[derive(Debug, Default)]
pub struct SubscriptionSet {
    members: Vec<ChannelSubscription>,
    next: usize,
}

impl SubscriptionSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set with room for `channels` subscriptions. A connection keeps its set for as
    /// long as it is open: one subscription in room for four (what a `Vec` grows to first) is
    /// 480 bytes of every single-channel subscriber spent on nothing (S1 in bench/RESULTS.md).
    pub fn with_capacity(channels: usize) -> Self {
        Self {
            members: Vec::with_capacity(channels),
            next: 0,
        }
    }

    /// Adds `sub`, replacing an earlier subscription to the same channel.
    pub fn insert(&mut self, sub: ChannelSubscription) {
        match self.members.iter_mut().find(|m| m.channel() == sub.channel()) {
            Some(slot) => *slot = sub,
            None => {
                // Room for one at first, not the four a `Vec` would make: most connections
                // subscribe to one channel, and keep the set for as long as they are open.
                if self.members.capacity() == 0 {
                    self.members.reserve_exact(1);
                }
                self.members.push(sub);
            }
        }
    }

    /// Removes the subscription to `channel`; returns whether there was one.
    pub fn remove(&mut self, channel: &ChannelName) -> bool {
        let before = self.members.len();
        self.members.retain(|m| m.channel() != channel);
        before != self.members.len()
    }

    /// Whether `channel` is in the set.
    pub fn contains(&self, channel: &ChannelName) -> bool {
        self.members.iter().any(|m| m.channel() == channel)
    }

    /// How many channels.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members.
    pub fn members(&self) -> &[ChannelSubscription] {
        &self.members
    }

    /// The position of the whole set, one cursor per channel.
    pub fn position(&self) -> Position {
        let mut p = Position::new();
        for m in &self.members {
            p.set(m.channel(), m.cursor());
        }
        p
    }

    /// Moves what is ready (at most `max` events, and messages up to
    /// [`HubConfig::max_batch_bytes`] of data in all) into `out` without waiting; returns how
    /// many.
    pub fn try_read(&mut self, out: &mut Vec<Event>, max: usize) -> usize {
        let n = self.members.len();
        let mut total = 0;
        let mut budget = self.members.first().map_or(0, |m| m.max_batch_bytes);
        for i in 0..n {
            if total >= max {
                break;
            }
            let idx = (self.next + i) % n;
            total += self.members[idx].read_within(out, max - total, &mut budget);
        }
        if n > 0 {
            self.next = (self.next + 1) % n;
        }
        total
    }

    /// Waits until at least one event is ready on any member, then moves up to `max` into
    /// `out`. Pends forever on an empty set (select it against something else).
    pub async fn recv(&mut self, out: &mut Vec<Event>, max: usize) -> usize {
        poll_fn(|cx| self.poll_recv(cx, out, max)).await
    }

    /// [`recv`](Self::recv) as a poll, as [`ChannelSubscription::poll_recv`] is for one channel.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>, out: &mut Vec<Event>, max: usize) -> Poll<usize> {
        if let [only] = self.members.as_mut_slice() {
            return only.poll_recv(cx, out, max);
        }
        let n = self.try_read(out, max);
        if n > 0 {
            return Poll::Ready(n);
        }
        for m in &self.members {
            m.register(cx);
        }
        let n = self.try_read(out, max);
        if n > 0 { Poll::Ready(n) } else { Poll::Pending }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The empty epoch moves on every EMPTY_EPOCH_EVERY; the last EMPTY_EPOCHS stay good for
    /// offset-0 cursors, and after a whole day none of the old ones is (a channel re-created
    /// then must not get an epoch it had before its tombstone expired).
    #[test]
    fn empty_epochs_rotate_and_an_old_one_is_dropped_within_a_day() {
        assert!(EMPTY_EPOCH_EVERY * EMPTY_EPOCHS as u32 <= TOMBSTONE_TTL);
        let mut empty = EmptyEpochs::new();
        let first = empty.epochs[0];
        let start = empty.since;
        empty.rotate(start + EMPTY_EPOCH_EVERY / 2);
        assert_eq!(empty.epochs, [first]);
        empty.rotate(start + EMPTY_EPOCH_EVERY * 3);
        assert_eq!(empty.epochs.len(), 4);
        assert_eq!(empty.epochs[3], first);
        assert_eq!(empty.since, start + EMPTY_EPOCH_EVERY * 3);
        empty.rotate(start + EMPTY_EPOCH_EVERY * (EMPTY_EPOCHS as u32 - 1));
        assert!(empty.epochs.contains(&first), "good for 23 periods");
        empty.rotate(start + EMPTY_EPOCH_EVERY * EMPTY_EPOCHS as u32);
        assert_eq!(empty.epochs.len(), EMPTY_EPOCHS);
        assert!(!empty.epochs.contains(&first), "gone after 24");
        // A node asleep for a week moves on at once, by at most EMPTY_EPOCHS new ones.
        let before: Vec<u64> = empty.epochs.iter().copied().collect();
        empty.rotate(start + EMPTY_EPOCH_EVERY * 200);
        assert!(empty.epochs.iter().all(|e| !before.contains(e)));
        assert_eq!(empty.since, start + EMPTY_EPOCH_EVERY * 200);
    }

    /// A cursor `<empty epoch>-0` of a channel forgotten without a tombstone resumes from the
    /// channel's start whatever its epoch now is: no gap notice, and every message after it.
    #[test]
    fn an_empty_epoch_cursor_resumes_without_a_gap() {
        let hub = Hub::new(HubConfig::default());
        let c = ChannelName::new("c").unwrap();
        let cursor = hub.subscribe(&c, Since::Live).cursor();
        assert_eq!(cursor.offset, 0);
        assert!(hub.is_empty_epoch(cursor.epoch));
        // An hour passes: the channel, swept and re-created, starts in the next empty epoch.
        {
            let mut empty = hub.empty.lock().unwrap();
            let since = empty.since;
            empty.rotate(since + EMPTY_EPOCH_EVERY);
        }
        assert_eq!(hub.sweep(), 0);
        let m = hub.publish(&c, None, b"after").unwrap();
        assert_ne!(m.cursor.epoch, cursor.epoch);
        let mut sub = hub.subscribe(&c, Since::Cursor(cursor));
        let mut out = Vec::new();
        sub.try_read(&mut out, 10);
        assert!(
            matches!(out.as_slice(), [Event::Message(m)] if m.data_bytes().as_ref() == b"after"),
            "{out:?}"
        );
        // Any other epoch at offset 0 is not one of ours: a gap notice, then what there is.
        let mut sub = hub.subscribe(&c, Since::Cursor(Cursor::new(cursor.epoch ^ 1, 0)));
        out.clear();
        sub.try_read(&mut out, 10);
        assert!(matches!(out.as_slice(), [Event::Gap(_), Event::Message(_)]), "{out:?}");
    }

    /// Every subscription takes a wake slot in its channel; dropping it, or replacing it in a
    /// set, frees the slot, so churn does not grow the list a publish walks.
    #[test]
    fn a_subscription_frees_its_wake_slot_when_dropped_or_replaced() {
        let hub = Hub::new(HubConfig::default());
        let c = ChannelName::new("c").unwrap();
        let mut subs: Vec<_> = (0..3).map(|_| hub.subscribe(&c, Since::Live)).collect();
        let log = hub.existing(&c).unwrap();
        assert_eq!(log.slots().len(), 3);
        let mut set = SubscriptionSet::new();
        set.insert(subs.pop().unwrap());
        set.insert(hub.subscribe(&c, Since::Live));
        assert_eq!(log.slots().len(), 3, "the replaced subscription gave its slot back");
        drop(subs);
        assert_eq!(log.slots().len(), 1);
        assert!(set.remove(&c));
        assert_eq!(log.slots().len(), 0);
        assert_eq!(hub.subscribers(&c), 0);
    }

    /// A set keeps room for what it holds: one subscription in room for one (a connection keeps
    /// its set while it is open), and more as channels are added.
    #[test]
    fn a_set_makes_room_for_its_channels_only() {
        let hub = Hub::new(HubConfig::default());
        let names: Vec<_> = (0..3).map(|i| ChannelName::new(&format!("c{i}")).unwrap()).collect();
        let mut set = SubscriptionSet::new();
        set.insert(hub.subscribe(&names[0], Since::Live));
        assert_eq!(set.members.capacity(), 1);
        set.insert(hub.subscribe(&names[0], Since::Live));
        assert_eq!(set.members.capacity(), 1, "a replaced subscription takes no room");
        set.insert(hub.subscribe(&names[1], Since::Live));
        set.insert(hub.subscribe(&names[2], Since::Live));
        assert_eq!(set.len(), 3);
        let set = SubscriptionSet::with_capacity(2);
        assert_eq!(set.members.capacity(), 2);
    }

    /// A replay of large messages goes out a few at a time: a read stops once its data reaches
    /// `max_batch_bytes` (the message that crosses it included), across the channels of a set
    /// too, and a message larger than the budget still goes, alone.
    #[test]
    fn a_read_stops_at_max_batch_bytes() {
        let hub = Hub::new(HubConfig {
            max_batch_bytes: 250_000,
            history: HistoryLimits {
                max_messages: 100,
                ..HistoryLimits::default()
            },
            ..HubConfig::default()
        });
        let (a, b) = (ChannelName::new("a").unwrap(), ChannelName::new("b").unwrap());
        hub.publish(&a, None, &[b'z'; 600_000]).unwrap();
        for _ in 0..10 {
            hub.publish(&a, None, &[b'x'; 100_000]).unwrap();
            hub.publish(&b, None, &[b'y'; 100_000]).unwrap();
        }
        let mut one = hub.subscribe(&a, Since::Earliest);
        let mut out = Vec::new();
        let mut counts = Vec::new();
        for _ in 0..6 {
            counts.push(one.try_read(&mut out, 256));
            assert_eq!(one.has_unread(), counts.len() < 5, "after read {}", counts.len());
        }
        assert_eq!(
            counts,
            [1, 3, 3, 3, 1, 0],
            "the 600 kB message alone, then three of 100 kB at a time"
        );

        let mut set = SubscriptionSet::new();
        set.insert(hub.subscribe(&a, Since::Earliest));
        set.insert(hub.subscribe(&b, Since::Earliest));
        let mut out = Vec::new();
        assert_eq!(set.try_read(&mut out, 256), 1, "a's 600 kB used the whole set's budget");
        assert_eq!(set.try_read(&mut out, 256), 3, "then b's turn: three of 100 kB");
        assert_eq!(set.try_read(&mut out, 2), 2, "and `max` still bounds a read");
        let mut total = 6;
        for _ in 0..20 {
            total += set.try_read(&mut out, 256);
        }
        assert_eq!(total, 21, "every message is read in the end");
    }
}
