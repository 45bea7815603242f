//! [`DiskBroker`]: the embedded broker with durable history.

use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use comet_core::{
    BoxFuture, Broker, BrokerError, BrokerStats, ChannelInfo, ChannelName, ChannelSubscription, HubConfig, Idempotency,
    MemoryBroker, Message, NotUtf8, PresenceEntry, Publish, Published, Since, Transition,
};

use crate::writer::{Job, Outcome, Writer};
use crate::{StoreConfig, StoreError, load};

/// Most publishes waiting for the writer; past it a publish is refused with
/// [`BrokerError::Unavailable`] (`503`, retry) rather than queued without bound.
const MAX_WAITING: usize = 4_096;

/// The embedded broker with its history on disk (see the crate's documentation). Everything
/// but publishing is the [`MemoryBroker`]'s: subscribers read the same in-memory history, which
/// the store fills at open and the writer extends after each commit.
#[derive(Debug)]
pub struct DiskBroker {
    memory: Arc<MemoryBroker>,
    jobs: Mutex<Option<SyncSender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl DiskBroker {
    /// Opens (or creates) the store in `store.dir` and puts back everything it holds: epochs,
    /// offsets, history within `hub`'s bounds, idempotency keys. Blocks while it reads the file
    /// (call it before serving, or from `spawn_blocking`).
    ///
    /// # Errors
    /// [`StoreError::Dir`] when the directory cannot be created; [`StoreError::Open`], naming
    /// the file, when it is damaged, held by another process, or cannot be read.
    pub fn open(store: StoreConfig, hub: HubConfig) -> Result<Self, StoreError> {
        let memory = Arc::new(MemoryBroker::new(hub));
        let (db, loaded) = load::open(&store, memory.hub())?;
        if loaded.crashed {
            tracing::warn!(file = %store.file().display(), "the last process did not close the durable history (a crash); what it committed is back");
        }
        if loaded.lossy {
            tracing::warn!(
                channels = loaded.new_epochs,
                "the crashed process ran with fsync = \"never\": its last second may be lost, so every channel starts a new epoch (subscribers get a gap notice)"
            );
        }
        if loaded.dropped > 0 {
            tracing::error!(dropped = loaded.dropped, file = %store.file().display(), "entries that did not decode were left out");
        }
        tracing::info!(
            file = %store.file().display(),
            fsync = store.fsync.name(),
            channels = loaded.channels,
            messages = loaded.messages,
            keys = loaded.keys,
            "durable history opened"
        );
        let (tx, rx) = std::sync::mpsc::sync_channel(MAX_WAITING);
        let writer = Writer::new(db, store, Arc::clone(&memory), rx);
        let handle = std::thread::Builder::new()
            .name("comet-store".into())
            .spawn(move || writer.run())
            .map_err(|source| StoreError::Dir {
                path: std::path::PathBuf::from("(writer thread)"),
                source,
            })?;
        Ok(Self {
            memory,
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
        })
    }

    /// The in-memory broker it fans out through.
    pub fn memory(&self) -> &MemoryBroker {
        &self.memory
    }

    /// Trims history in memory by age and forgets idle channels (as
    /// [`MemoryBroker::sweep`]); the writer trims the file on its own.
    pub fn sweep(&self) -> usize {
        self.memory.sweep()
    }

    /// Stops taking publishes, lets the writer commit what it holds, make it durable and mark
    /// the file closed cleanly, and waits for it. Called by drop too; blocks briefly.
    pub fn close(&self) {
        drop(
            self.jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    async fn submit(&self, msg: Publish, key: Option<Idempotency>) -> Result<Outcome, BrokerError> {
        NotUtf8::check(&msg.data)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            channel: msg.channel,
            event: msg.event,
            data: msg.data,
            key,
            reply,
        };
        let sent = match self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            Some(tx) => tx.try_send(job),
            None => return Err(BrokerError::Unavailable("the server is stopping".into())),
        };
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(BrokerError::Unavailable("the disk writer is behind; retry".into()));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(BrokerError::Unavailable("the disk writer stopped".into()));
            }
        }
        answer
            .await
            .map_err(|_| BrokerError::Internal("the disk writer stopped".into()))?
    }
}

impl Drop for DiskBroker {
    fn drop(&mut self) {
        self.close();
    }
}

impl Broker for DiskBroker {
    fn publish(&self, msg: Publish) -> BoxFuture<'_, Result<Arc<Message>, BrokerError>> {
        Box::pin(async move {
            match self.submit(msg, None).await? {
                Outcome::New(msg) => Ok(msg),
                Outcome::Repeat(_) => Err(BrokerError::Internal("a publish without a key was a repeat".into())),
            }
        })
    }

    fn publish_idempotent(&self, msg: Publish, key: Idempotency) -> BoxFuture<'_, Result<Published, BrokerError>> {
        Box::pin(async move {
            Ok(match self.submit(msg, Some(key)).await? {
                Outcome::New(msg) => Published {
                    cursor: msg.cursor,
                    duplicate: false,
                },
                Outcome::Repeat(cursor) => Published {
                    cursor,
                    duplicate: true,
                },
            })
        })
    }

    fn subscribe(&self, channel: ChannelName, since: Since) -> BoxFuture<'_, Result<ChannelSubscription, BrokerError>> {
        self.memory.subscribe(channel, since)
    }

    fn channel_info(&self, channel: ChannelName) -> BoxFuture<'_, Result<ChannelInfo, BrokerError>> {
        self.memory.channel_info(channel)
    }

    fn holds(&self, channel: &ChannelName) -> bool {
        self.memory.holds(channel)
    }

    fn forget_if_unused(&self, channel: &ChannelName) {
        self.memory.forget_if_unused(channel);
    }

    fn presence_join(
        &self,
        channel: &ChannelName,
        entry: PresenceEntry,
        announce: bool,
    ) -> BoxFuture<'_, Result<Transition, BrokerError>> {
        self.memory.presence_join(channel, entry, announce)
    }

    fn presence_leave(
        &self,
        channel: &ChannelName,
        client: &str,
        announce: bool,
    ) -> BoxFuture<'_, Result<Option<(PresenceEntry, Transition)>, BrokerError>> {
        self.memory.presence_leave(channel, client, announce)
    }

    fn presence(&self, channel: &ChannelName) -> BoxFuture<'_, Result<Vec<PresenceEntry>, BrokerError>> {
        self.memory.presence(channel)
    }

    fn channels<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(ChannelName, usize)>, BrokerError>> {
        self.memory.channels(prefix, after, limit)
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        let alive = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|h| !h.is_finished());
        Box::pin(std::future::ready(alive))
    }

    fn stats(&self) -> &BrokerStats {
        self.memory.stats()
    }
}
