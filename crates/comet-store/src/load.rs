//! Opening the file and putting every channel back into the hub.

use std::sync::Arc;
use std::time::{Duration, Instant};

use comet_core::{ChannelName, Cursor, EventName, Hub, Message, now_millis};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::format::{
    self, CHANNELS, EMPTY_EPOCHS, FORMAT, FORMAT_VERSION, KEYS, MESSAGES, META, RUNNING, decode, decode_epochs,
};
use crate::{Fsync, StoreConfig, StoreError};

/// What opening found, for the log.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Channels put back.
    pub channels: usize,
    /// Messages put back into history.
    pub messages: usize,
    /// Idempotency keys still within their window.
    pub keys: usize,
    /// Values that did not decode (or channel names no longer valid), left out.
    pub dropped: usize,
    /// The last process did not close the file (it crashed or was killed).
    pub crashed: bool,
    /// The crashed process ran with `fsync = "never"`: what it acknowledged last may be lost.
    pub lossy: bool,
    /// Channels moved to a new epoch for it.
    pub new_epochs: usize,
}

/// Opens (or creates) the store of `config`, marks it open, and restores everything it holds
/// into `hub`.
pub(crate) fn open(config: &StoreConfig, hub: &Hub) -> Result<(Database, Loaded), StoreError> {
    // redb's debug builds panic on some damage its release builds report: either way, an error
    // naming the file.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| open_file(config, hub))).unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("damaged");
        Err(StoreError::Open {
            path: config.file(),
            reason: format!("DB corrupted: {reason}"),
        })
    })
}

fn open_file(config: &StoreConfig, hub: &Hub) -> Result<(Database, Loaded), StoreError> {
    std::fs::create_dir_all(&config.dir).map_err(|source| StoreError::Dir {
        path: config.dir.clone(),
        source,
    })?;
    let path = config.file();
    let failed = |reason: String| StoreError::Open {
        path: path.clone(),
        reason,
    };
    let mut db = Database::builder()
        .set_repair_callback(|session| {
            tracing::warn!(
                progress = format!("{:.0}%", session.progress() * 100.0),
                "repairing the durable history after a crash"
            );
        })
        .create(&path)
        .map_err(|e| failed(e.to_string()))?;
    // Every page's checksum, before anything is read: a damaged file is refused here, with
    // its name, rather than failing (or, in a debug build, panicking) on a page later.
    match db.check_integrity() {
        Ok(true) => {}
        Ok(false) => tracing::warn!(file = %path.display(), "the durable history was repaired"),
        Err(e) => return Err(failed(e.to_string())),
    }
    let mut loaded = mark_open(&db, config.fsync).map_err(|e| failed(e.to_string()))?;
    restore(&db, hub, &mut loaded).map_err(|e| failed(e.to_string()))?;
    Ok((db, loaded))
}

/// Creates the tables, checks the layout's version, notes whether the last process crashed,
/// and marks the file open (durably). After a crash under `fsync = "never"`, moves every
/// channel to a new epoch: its newest messages may be lost although subscribers saw them.
fn mark_open(db: &Database, fsync: Fsync) -> Result<Loaded, redb::Error> {
    let mut loaded = Loaded::default();
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let version = meta.get(FORMAT)?.map(|v| v.value().to_vec());
        match version.as_deref() {
            None => {
                meta.insert(FORMAT, FORMAT_VERSION)?;
            }
            Some(v) if v == FORMAT_VERSION => {}
            Some(v) => {
                return Err(redb::Error::Corrupted(format!(
                    "layout version {:?}, but this comet reads version {:?}",
                    String::from_utf8_lossy(v),
                    String::from_utf8_lossy(FORMAT_VERSION)
                )));
            }
        }
        let running = meta.get(RUNNING)?.map(|v| v.value().to_vec());
        meta.insert(RUNNING, fsync.name().as_bytes())?;
        drop(meta);
        let mut channels = txn.open_table(CHANNELS)?;
        let mut messages = txn.open_table(MESSAGES)?;
        let mut keys = txn.open_table(KEYS)?;
        if let Some(mode) = running {
            loaded.crashed = true;
            if mode == Fsync::Never.name().as_bytes() {
                loaded.lossy = true;
                let all: Vec<(String, u64)> = channels
                    .iter()?
                    .map(|e| e.map(|(k, v)| (k.value().to_owned(), v.value().2)))
                    .collect::<Result<_, _>>()?;
                for (name, last) in all {
                    messages.retain_in((name.as_str(), 0)..=(name.as_str(), u64::MAX), |_, _| false)?;
                    channels.insert(name.as_str(), (new_epoch(), 0, last))?;
                    loaded.new_epochs += 1;
                }
                keys.retain(|_, _| false)?;
            }
        }
    }
    txn.commit()?;
    Ok(loaded)
}

/// Puts back the empty epochs, every channel (its history within its bounds) and the keys
/// still within their window.
fn restore(db: &Database, hub: &Hub, loaded: &mut Loaded) -> Result<(), redb::Error> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let now = now_millis();
    if loaded.lossy {
        // Acknowledged messages may be lost, in channels the file has or not: no old empty
        // epoch is kept, so a cursor `<old empty epoch>-0` (a subscriber that joined a channel
        // before it had messages, which may now be lost) gets a gap notice, and a channel first
        // published after the last durable commit does not come back in the epoch it had.
        hub.restore_empty_epochs(&[new_epoch()], Duration::ZERO);
    } else if let Some((epochs, began)) = meta.get(EMPTY_EPOCHS)?.and_then(|v| decode_epochs(v.value())) {
        hub.restore_empty_epochs(&epochs, Duration::from_millis(now.saturating_sub(began)));
    }
    let channels = txn.open_table(CHANNELS)?;
    let messages = txn.open_table(MESSAGES)?;
    for entry in channels.iter()? {
        let (name, (epoch, head, _)) = {
            let (k, v) = entry?;
            (k.value().to_owned(), v.value())
        };
        // The row's offset is as of its epoch's start or the last trimming pass; the newest
        // message's key is the newest offset (writer.rs).
        let head = match messages
            .range((name.as_str(), 0)..=(name.as_str(), u64::MAX))?
            .next_back()
        {
            Some(last) => last?.0.value().1.max(head),
            None => head,
        };
        let Ok(channel) = ChannelName::new(&name) else {
            loaded.dropped += 1;
            continue;
        };
        let limits = hub.config().history_for(&channel);
        let oldest_kept = now.saturating_sub(u64::try_from(limits.max_age.as_millis()).unwrap_or(u64::MAX));
        let from = head.saturating_sub(limits.max_messages as u64) + 1;
        let mut tail: Vec<Arc<Message>> = Vec::new();
        for m in messages.range((name.as_str(), from)..=(name.as_str(), head))? {
            let (k, v) = m?;
            let offset = k.value().1;
            let msg = decode(v.value()).and_then(|(time, event, data)| {
                let event = match event {
                    [] => None,
                    e => Some(EventName::new(std::str::from_utf8(e).ok()?).ok()?),
                };
                Message::restored(channel.clone(), Cursor::new(epoch, offset), event, data, time).ok()
            });
            let Some(msg) = msg else {
                // History must be contiguous: what precedes a damaged message goes with it.
                loaded.dropped += tail.len() + 1;
                tail.clear();
                continue;
            };
            if msg.published_at < oldest_kept {
                continue;
            }
            if tail.last().is_some_and(|last| last.cursor.offset + 1 != offset) {
                tail.clear();
            }
            tail.push(Arc::new(msg));
        }
        if tail.last().is_some_and(|last| last.cursor.offset != head) {
            // The newest message is missing: keep none rather than a history with a hole.
            loaded.dropped += tail.len();
            tail.clear();
        }
        loaded.channels += 1;
        loaded.messages += tail.len();
        hub.restore(&channel, epoch, head, tail);
    }
    let keys = txn.open_table(KEYS)?;
    let mut live: Vec<(u64, ChannelName, String, Cursor)> = Vec::with_capacity(keys.len()? as usize);
    for entry in keys.iter()? {
        let (k, v) = entry?;
        let ((channel, key), (epoch, offset, expires)) = (k.value(), v.value());
        if expires <= now {
            continue;
        }
        if let Ok(channel) = ChannelName::new(channel) {
            live.push((expires, channel, key.to_owned(), Cursor::new(epoch, offset)));
        }
    }
    live.sort_by_key(|(expires, ..)| *expires);
    let start = Instant::now();
    for (expires, channel, key, cursor) in live {
        hub.restore_key(&channel, &key, cursor, start + Duration::from_millis(expires - now));
        loaded.keys += 1;
    }
    Ok(())
}

/// A fresh epoch: 48 random bits, as the hub makes them.
pub(crate) fn new_epoch() -> u64 {
    rand::random::<u64>() >> 16
}

/// The empty epochs' `meta` value for `hub` now.
pub(crate) fn empty_epochs_value(hub: &Hub) -> Vec<u8> {
    let (epochs, age) = hub.empty_epochs();
    let began = now_millis().saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
    format::encode_epochs(&epochs, began)
}
