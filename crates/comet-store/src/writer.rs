//! The writer thread: the one owner of the file. It takes publishes in order, batches them
//! (group commit), and makes each visible and acknowledged only after its commit; every few
//! seconds it trims history on disk and saves what else must survive a restart.

use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use comet_core::{
    Append, BrokerError, ChannelName, Cursor, EventName, Hub, Idempotency, MemoryBroker, Message, Reservation,
    TOMBSTONE_TTL, now_millis,
};
use redb::{Database, Durability, ReadableTable};
use tokio::sync::oneshot;

use crate::format::{CHANNELS, EMPTY_EPOCHS, KEYS, MESSAGES, META, RUNNING, encode, published_at};
use crate::load::empty_epochs_value;
use crate::{Fsync, StoreConfig};

/// Most publishes in one commit.
const MAX_BATCH: usize = 1024;
/// Most message bytes in one commit (a batch stops growing past it).
const MAX_BATCH_BYTES: usize = 8 << 20;
/// How often, under [`Fsync::Never`], what was committed is made durable.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(1);
/// How often a sweep of the file starts: history on disk trimmed by size and age, channels
/// forgotten long ago dropped, then expired idempotency keys dropped.
const TRIM_EVERY: Duration = Duration::from_secs(5);
/// Rows (channels, then keys) one step of a sweep looks at. The writer holds publishes while it
/// sweeps, so a sweep goes in steps of about a millisecond: one pass over 10,000 channels at once
/// held them 27 ms every 5 s, and was most of the publish latency's p99 (bench/RESULTS.md,
/// "Durable history").
const SWEEP_STEP: usize = 256;
/// The pause between two steps of a sweep, in which publishes are written.
const SWEEP_STEP_EVERY: Duration = Duration::from_millis(10);

/// Where a sweep stands: the last channel or key it looked at (`None`: it starts).
#[derive(Debug)]
enum Sweep {
    Channels(Option<String>),
    Keys(Option<(String, String)>),
}

/// A publish handed to the writer.
pub(crate) struct Job {
    pub channel: ChannelName,
    pub event: Option<EventName>,
    /// UTF-8 text (checked by the caller).
    pub data: Bytes,
    pub key: Option<Idempotency>,
    pub reply: oneshot::Sender<Result<Outcome, BrokerError>>,
}

/// What became of a publish.
pub(crate) enum Outcome {
    /// Published, on disk (but under [`Fsync::Never`]) and in history.
    New(Arc<Message>),
    /// The key was used within its window: the first publish's cursor; nothing published.
    Repeat(Cursor),
}

/// The writer's state.
pub(crate) struct Writer {
    db: Option<Database>,
    path: PathBuf,
    config: StoreConfig,
    broker: Arc<MemoryBroker>,
    jobs: Receiver<Job>,
    last_sync: Instant,
    /// How long the last durable commit of publishes took.
    last_commit: Duration,
    last_maintenance: Instant,
    /// When the last sweep started.
    last_trim: Instant,
    /// The sweep in progress, if any.
    sweep: Option<Sweep>,
    /// The empty epochs last saved.
    saved_epochs: Vec<u64>,
    /// Commits not yet durable (under [`Fsync::Never`]).
    unsynced: bool,
    /// Such commits were lost (the file reopened after an I/O error): the close leaves the file
    /// marked open, so the next start treats it as a crash.
    lost: bool,
    /// After a failed commit: until when the file is not reopened, and the answer meanwhile.
    failing: Option<(Instant, BrokerError)>,
    /// Idempotency keys written by a commit that failed: it may have reached the disk all the
    /// same, so the next commit removes them (their cursors are handed out again).
    failed_keys: Vec<(ChannelName, String)>,
    /// Commits of publishes, and the publishes they held (for the log at close).
    commits: u64,
    committed: u64,
}

impl Writer {
    pub(crate) fn new(db: Database, config: StoreConfig, broker: Arc<MemoryBroker>, jobs: Receiver<Job>) -> Self {
        let path = config.file();
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(3600))
            .unwrap_or_else(Instant::now);
        Self {
            db: Some(db),
            path,
            config,
            broker,
            jobs,
            last_sync: long_ago,
            last_commit: Duration::ZERO,
            last_maintenance: long_ago,
            last_trim: long_ago,
            sweep: None,
            saved_epochs: Vec::new(),
            unsynced: false,
            lost: false,
            failing: None,
            failed_keys: Vec::new(),
            commits: 0,
            committed: 0,
        }
    }

    fn hub(&self) -> &Hub {
        self.broker.hub()
    }

    /// Runs until every sender is dropped; then makes everything durable and marks the file
    /// closed cleanly.
    pub(crate) fn run(mut self) {
        loop {
            let every = if self.sweep.is_some() {
                SWEEP_STEP_EVERY
            } else {
                MAINTENANCE_EVERY
            };
            let wait = every.saturating_sub(self.last_maintenance.elapsed());
            let first = match self.jobs.recv_timeout(wait) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if self.last_maintenance.elapsed() >= every {
                self.maintain();
            }
            let Some(first) = first else { continue };
            let batch = self.gather(first);
            self.commit(batch);
        }
        self.close();
    }

    /// The publishes to commit with `first`. Under `batch`: what is already waiting (what
    /// arrived during the last commit: group commit), and what arrives while the writer lingers
    /// for more, as long as the last durable commit took and at most `fsync_window_ms`, so a
    /// fast disk adds little latency and a slow one gathers more per fsync. Under `never`: what
    /// is already waiting. Under `always`: none.
    fn gather(&mut self, first: Job) -> Vec<Job> {
        let mut bytes = first.data.len();
        let mut batch = vec![first];
        if self.config.fsync == Fsync::Always {
            return batch;
        }
        let linger = if self.config.fsync == Fsync::Batch {
            self.last_commit.min(self.config.fsync_window)
        } else {
            Duration::ZERO
        };
        let until = Instant::now() + linger;
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            let next = match self.jobs.try_recv() {
                Ok(job) => Some(job),
                Err(_) => {
                    let now = Instant::now();
                    if now >= until {
                        None
                    } else {
                        self.jobs.recv_timeout(until - now).ok()
                    }
                }
            };
            let Some(job) = next else { break };
            bytes += job.data.len();
            batch.push(job);
        }
        batch
    }

    /// Reserves each publish's cursor, writes them in one transaction and commits; then puts
    /// them in history and answers. On failure, hands the cursors back and answers the error.
    fn commit(&mut self, batch: Vec<Job>) {
        // After an I/O error the file is reopened (which rebuilds redb's allocator state, a
        // pass over the file) at most once a second; meanwhile publishes get the same answer.
        if let Some((until, err)) = &self.failing
            && self.db.is_none()
            && Instant::now() < *until
        {
            for job in batch {
                let _ = job.reply.send(Err(err.clone()));
            }
            return;
        }
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(batch.len());
        let result = self.write(&batch, &mut outcomes);
        match result {
            Ok(()) => {
                for outcome in &outcomes {
                    if let Outcome::New(msg) = outcome {
                        self.make_visible(msg);
                    }
                }
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                for job in &batch {
                    self.hub().release(&job.channel);
                    if let Some(key) = &job.key {
                        self.failed_keys.push((job.channel.clone(), key.key().to_owned()));
                    }
                }
                let err = self.broker_error(&e);
                self.failing = Some((Instant::now() + Duration::from_secs(1), err.clone()));
                tracing::error!(error = %e, file = %self.path.display(), "a publish could not be written");
                for job in batch {
                    let _ = job.reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// Appends `msg`, committed, to history (for subscribers).
    fn make_visible(&self, msg: &Arc<Message>) {
        match self.hub().append(Arc::clone(msg)) {
            Append::Appended => {}
            Append::Duplicate => {
                // Cannot happen while this thread is the only one to publish; the hub's head is
                // not lowered.
                tracing::error!(channel = %msg.channel, cursor = %msg.cursor, "a committed message is already in history");
            }
            other => {
                // Cannot happen while this thread is the only one to publish: say so loudly,
                // and keep history honest (the channel restarts its history at this message).
                tracing::error!(channel = %msg.channel, cursor = %msg.cursor, ?other, "a committed message did not follow history");
                self.hub()
                    .replace(&msg.channel, msg.cursor.epoch, msg.cursor.offset, vec![Arc::clone(msg)]);
            }
        }
    }

    fn write(&mut self, batch: &[Job], outcomes: &mut Vec<Outcome>) -> Result<(), redb::Error> {
        let durable = self.config.fsync != Fsync::Never;
        let started = Instant::now();
        let db = self.db()?;
        let mut txn = db.begin_write()?;
        if !durable {
            txn.set_durability(Durability::None)
                .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
        }
        {
            let mut channels = txn.open_table(CHANNELS)?;
            let mut messages = txn.open_table(MESSAGES)?;
            let mut keys = txn.open_table(KEYS)?;
            for (channel, key) in &self.failed_keys {
                keys.remove((channel.as_str(), key.as_str()))?;
            }
            'jobs: for job in batch {
                let hub = self.broker.hub();
                let (msg, held) = loop {
                    let reservation = hub.reserve(&job.channel, job.event.clone(), job.data.clone(), job.key.as_ref());
                    let msg = match reservation {
                        Reservation::Repeat(cursor) => {
                            outcomes.push(Outcome::Repeat(cursor));
                            continue 'jobs;
                        }
                        Reservation::New(msg) => msg,
                    };
                    let held = channels.get(msg.channel.as_str())?.map(|v| v.value());
                    // The hub forgot the channel (its tombstone evicted, past
                    // `max_idle_channels`) and made it again in the current empty epoch, in
                    // which the file already has its messages: the cursor would name two. A new
                    // epoch instead (its subscribers get a gap notice).
                    if held.is_some_and(|(epoch, head, _)| epoch == msg.cursor.epoch && head >= msg.cursor.offset) {
                        tracing::warn!(channel = %msg.channel, cursor = %msg.cursor, "a channel the hub forgot is older on disk; moving it to a new epoch");
                        hub.release(&job.channel);
                        hub.replace(&job.channel, crate::load::new_epoch(), 0, Vec::new());
                        continue;
                    }
                    break (msg, held);
                };
                let name = msg.channel.as_str();
                let cursor = msg.cursor;
                if held.is_some_and(|(epoch, ..)| epoch != cursor.epoch) {
                    // The channel was forgotten and begins a new epoch: its old messages go.
                    messages.retain_in((name, 0)..=(name, u64::MAX), |_, _| false)?;
                }
                let value = encode(
                    msg.published_at,
                    msg.event.as_ref().map_or("", |e| e.as_str()),
                    job.data.as_ref(),
                );
                messages.insert((name, cursor.offset), value.as_slice())?;
                // The channel's row changes only with its epoch: its newest offset is its newest
                // message's key (the trimming pass writes it before removing that message), so a
                // publish dirties the pages of one table, not two.
                if held.is_none_or(|(epoch, ..)| epoch != cursor.epoch) {
                    channels.insert(name, (cursor.epoch, cursor.offset, msg.published_at))?;
                }
                let keep = self.hub().config().history_for(&msg.channel).max_messages.max(1) as u64;
                if cursor.offset > keep {
                    messages.remove((name, cursor.offset - keep))?;
                }
                if let Some(key) = &job.key {
                    let expires = msg.published_at + u64::try_from(key.window.as_millis()).unwrap_or(u64::MAX);
                    keys.insert((name, key.key()), (cursor.epoch, cursor.offset, expires))?;
                }
                outcomes.push(Outcome::New(msg));
            }
        }
        txn.commit()?;
        self.failed_keys.clear();
        self.commits += 1;
        self.committed += batch.len() as u64;
        if durable {
            self.last_sync = Instant::now();
            self.last_commit = started.elapsed();
        } else {
            self.unsynced = true;
        }
        Ok(())
    }

    /// The open database, reopened (which repairs it) after an I/O error left it unusable.
    fn db(&mut self) -> Result<&Database, redb::Error> {
        if self.db.is_none() {
            if self.unsynced {
                // Reopening rolls back the commits not yet durable (`never`): acknowledged
                // messages that subscribers saw. The file stays marked open, so the next start
                // treats it as a crash under `never` (every channel in a new epoch).
                self.lost = true;
                self.unsynced = false;
                tracing::error!(file = %self.path.display(), "publishes acknowledged under fsync = \"never\" were lost with an I/O error; the next start moves every channel to a new epoch");
            }
            self.db = Some(Database::create(&self.path).map_err(redb::Error::from)?);
        }
        Ok(self.db.as_ref().expect("just set"))
    }

    /// What a publisher is told about `e`; after an I/O error, the database is dropped so that
    /// the next write reopens it.
    fn broker_error(&mut self, e: &redb::Error) -> BrokerError {
        let full = matches!(e, redb::Error::Io(io) if matches!(io.raw_os_error(), Some(28 | 27 | 122)));
        if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
            self.db = None;
        }
        if full {
            BrokerError::Full(format!("no room left on the disk of {}", self.path.display()))
        } else {
            BrokerError::Unavailable(format!(
                "the durable history {} cannot be written: {e}",
                self.path.display()
            ))
        }
    }

    /// Every second: makes earlier commits durable (under [`Fsync::Never`]) and saves the empty
    /// epochs when they changed; every [`TRIM_EVERY`] starts a sweep, which then goes on one
    /// step of [`SWEEP_STEP`] rows every [`SWEEP_STEP_EVERY`] until it has seen every row.
    fn maintain(&mut self) {
        self.last_maintenance = Instant::now();
        if self.sweep.is_none() && self.last_trim.elapsed() >= TRIM_EVERY {
            self.sweep = Some(Sweep::Channels(None));
            self.last_trim = Instant::now();
        }
        // A new empty epoch (hourly) is saved within a second: a cursor `<it>-0` handed out
        // before a crash must resume after it.
        let epochs_changed = self.hub().empty_epochs().0 != self.saved_epochs;
        let sync_due = self.unsynced && self.last_sync.elapsed() >= MAINTENANCE_EVERY;
        if self.sweep.is_none() && !sync_due && !epochs_changed {
            return;
        }
        if let Err(e) = self.step(sync_due) {
            tracing::warn!(error = %e, file = %self.path.display(), "the durable history could not be trimmed");
            self.sweep = None;
            if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
                self.db = None;
            }
        }
    }

    /// One step of the sweep in progress (if any), the empty epochs saved if they changed, in
    /// one commit: durable when `sync` asks it (earlier commits under [`Fsync::Never`]), when
    /// the epochs are saved, or at the sweep's end; else left for the next durable commit.
    fn step(&mut self, sync: bool) -> Result<(), redb::Error> {
        let now = now_millis();
        let epochs = self.hub().empty_epochs().0;
        let save_epochs = epochs != self.saved_epochs;
        let epochs_value = empty_epochs_value(self.hub());
        let broker = Arc::clone(&self.broker);
        let hub = broker.hub();
        let sweep = self.sweep.take();
        let db = self.db()?;
        let mut txn = db.begin_write()?;
        let mut changed = save_epochs;
        if save_epochs {
            txn.open_table(META)?.insert(EMPTY_EPOCHS, epochs_value.as_slice())?;
        }
        let keys_step = matches!(sweep, Some(Sweep::Keys(_)));
        let next = match sweep {
            None => None,
            Some(Sweep::Channels(after)) => {
                let (last, more) = sweep_channels(&txn, hub, after.as_deref(), now, &mut changed)?;
                Some(if more { Sweep::Channels(last) } else { Sweep::Keys(None) })
            }
            Some(Sweep::Keys(after)) => {
                let (last, more) = sweep_keys(&txn, after.as_ref(), now, &mut changed)?;
                more.then_some(Sweep::Keys(last))
            }
        };
        // The end of a sweep is made durable: what it freed can be reused from then on.
        let ended = keys_step && next.is_none();
        let durable = sync || save_epochs || ended;
        if !changed && !sync {
            txn.abort()?;
            self.sweep = next;
            return Ok(());
        }
        if !durable {
            txn.set_durability(Durability::None)
                .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
        }
        txn.commit()?;
        self.sweep = next;
        // A step that is not durable holds no publish: losing it (a crash, a reopen) loses
        // nothing the next sweep does not do again.
        if durable {
            self.last_sync = Instant::now();
            self.unsynced = false;
        }
        if save_epochs {
            self.saved_epochs = epochs;
        }
        Ok(())
    }

    /// Saves what is left and marks the file closed cleanly.
    fn close(mut self) {
        // A whole sweep, step by step; then the close mark, in a durable commit that makes
        // every earlier commit durable too.
        if self.sweep.is_none() {
            self.sweep = Some(Sweep::Channels(None));
        }
        while self.sweep.is_some() {
            if let Err(e) = self.step(false) {
                tracing::warn!(error = %e, file = %self.path.display(), "the durable history could not be trimmed");
                self.sweep = None;
            }
        }
        let lost = self.lost;
        let result = (|| -> Result<(), redb::Error> {
            let txn = self.db()?.begin_write()?;
            if !lost {
                txn.open_table(META)?.remove(RUNNING)?;
            }
            txn.commit()?;
            Ok(())
        })();
        match result {
            Ok(()) => tracing::info!(
                file = %self.path.display(),
                commits = self.commits,
                publishes = self.committed,
                "durable history closed"
            ),
            Err(e) => tracing::error!(error = %e, file = %self.path.display(), "durable history not closed cleanly"),
        }
    }
}

/// One step of a sweep's first part: up to [`SWEEP_STEP`] channel rows after `after`. Each row is
/// brought up to its newest message, its history on disk trimmed by size (left over when
/// `history_size` was lowered: a publish trims) and by age, and the row dropped when its channel
/// was forgotten long ago ([`TOMBSTONE_TTL`]) and holds nothing. Returns the last row looked at,
/// and whether rows may follow.
fn sweep_channels(
    txn: &redb::WriteTransaction,
    hub: &Hub,
    after: Option<&str>,
    now: u64,
    changed: &mut bool,
) -> Result<(Option<String>, bool), redb::Error> {
    let mut channels = txn.open_table(CHANNELS)?;
    let mut messages = txn.open_table(MESSAGES)?;
    let rows: Vec<(String, u64, u64, u64)> = {
        let range = match after {
            Some(after) => channels.range((Bound::Excluded(after), Bound::<&str>::Unbounded))?,
            None => channels.range(..)?,
        };
        range
            .take(SWEEP_STEP)
            .map(|e| e.map(|(k, v)| (k.value().to_owned(), v.value().0, v.value().1, v.value().2)))
            .collect::<Result<_, _>>()?
    };
    let more = rows.len() == SWEEP_STEP;
    let last = rows.last().map(|row| row.0.clone());
    let forget_before = now.saturating_sub(TOMBSTONE_TTL.as_millis() as u64);
    for (name, epoch, head, last_time) in rows {
        let Ok(channel) = ChannelName::new(&name) else {
            continue;
        };
        let n = name.as_str();
        // The row's offset and time as of the newest message, before anything goes.
        let newest = messages
            .range((n, 0)..=(n, u64::MAX))?
            .next_back()
            .transpose()?
            .map(|(k, v)| (k.value().1, published_at(v.value()).unwrap_or(last_time)));
        let (head, last_time) = match newest {
            Some((offset, time)) if offset > head => {
                channels.insert(n, (epoch, offset, time))?;
                *changed = true;
                (offset, time)
            }
            _ => (head, last_time),
        };
        let limits = hub.config().history_for(&channel);
        let oldest_kept = now.saturating_sub(u64::try_from(limits.max_age.as_millis()).unwrap_or(u64::MAX));
        let keep_from = head.saturating_sub(limits.max_messages.max(1) as u64) + 1;
        messages.retain_in((n, 0)..(n, keep_from), |_, _| {
            *changed = true;
            false
        })?;
        // By age: from the oldest, up to the first young one.
        let mut old: Vec<u64> = Vec::new();
        let mut left = false;
        for m in messages.range((n, keep_from)..=(n, u64::MAX))? {
            let (k, v) = m?;
            if published_at(v.value()).is_some_and(|t| t >= oldest_kept) {
                left = true;
                break;
            }
            old.push(k.value().1);
        }
        for offset in old {
            messages.remove((n, offset))?;
            *changed = true;
        }
        if !left && last_time < forget_before && hub.pending(&channel).is_none() && !hub.holds(&channel) {
            channels.remove(n)?;
            *changed = true;
        }
    }
    Ok((last, more))
}

/// One step of a sweep's second part: up to [`SWEEP_STEP`] idempotency keys after `after`, the
/// expired ones dropped. Returns the last key looked at, and whether keys may follow.
fn sweep_keys(
    txn: &redb::WriteTransaction,
    after: Option<&(String, String)>,
    now: u64,
    changed: &mut bool,
) -> Result<(Option<(String, String)>, bool), redb::Error> {
    let mut keys = txn.open_table(KEYS)?;
    let rows: Vec<((String, String), u64)> = {
        let range = match after {
            Some((channel, key)) => keys.range((
                Bound::Excluded((channel.as_str(), key.as_str())),
                Bound::<(&str, &str)>::Unbounded,
            ))?,
            None => keys.range(..)?,
        };
        range
            .take(SWEEP_STEP)
            .map(|e| {
                e.map(|(k, v)| {
                    let (channel, key) = k.value();
                    ((channel.to_owned(), key.to_owned()), v.value().2)
                })
            })
            .collect::<Result<_, _>>()?
    };
    let more = rows.len() == SWEEP_STEP;
    for ((channel, key), expires) in &rows {
        if *expires <= now {
            keys.remove((channel.as_str(), key.as_str()))?;
            *changed = true;
        }
    }
    Ok((rows.into_iter().last().map(|row| row.0), more))
}
