//! [`Leases`]: what a client that comes back request after request (a poller) keeps between its
//! requests, such as its presence entries: each is dropped, and whatever it holds given back,
//! once the client has not come back within its time to live.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use comet_core::ChannelName;
use tokio::time::Instant;

/// How often expired leases are looked for, while there are any.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// One client's leases: its user, until when its id stays good without any lease, and per
/// channel when it expires and what it keeps.
struct Client {
    user: Arc<str>,
    issued_until: Instant,
    channels: HashMap<ChannelName, (Instant, Box<dyn Any + Send + Sync>)>,
}

/// The leases of every poller of this node, keyed by client id.
#[derive(Default)]
pub(crate) struct Leases {
    clients: Mutex<HashMap<Arc<str>, Client>>,
    sweeping: AtomicBool,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases").field("clients", &self.lock().len()).finish()
    }
}

impl Leases {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Client>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `client` holds leases, as `user` (a client id is only taken back from the user
    /// it was given to).
    pub(crate) fn owned_by(&self, client: &str, user: &str) -> bool {
        self.lock().get(client).is_some_and(|c| c.user.as_ref() == user)
    }

    /// Gives out the id `client` to `user`, good for `ttl`: it holds no lease yet (the client
    /// becomes a member when it sends the id back).
    pub(crate) fn issue(self: &Arc<Self>, client: Arc<str>, user: Arc<str>, ttl: Duration) {
        self.lock().insert(
            client,
            Client {
                user,
                issued_until: Instant::now() + ttl,
                channels: HashMap::new(),
            },
        );
        self.start_sweeper();
    }

    /// Extends `client`'s lease on `channel` to `ttl` from now; `false` if it has none.
    pub(crate) fn renew(&self, client: &str, channel: &ChannelName, ttl: Duration) -> bool {
        let mut clients = self.lock();
        match clients.get_mut(client).and_then(|c| c.channels.get_mut(channel)) {
            Some((expires, _)) => {
                *expires = (Instant::now() + ttl).max(*expires);
                true
            }
            None => false,
        }
    }

    /// Keeps `held` for `client` (of `user`) on `channel` for `ttl`, and starts the sweeper.
    pub(crate) fn insert(
        self: &Arc<Self>,
        client: Arc<str>,
        user: Arc<str>,
        channel: ChannelName,
        ttl: Duration,
        held: Box<dyn Any + Send + Sync>,
    ) {
        let until = Instant::now() + ttl;
        let replaced = {
            let mut clients = self.lock();
            let entry = clients.entry(client).or_insert_with(|| Client {
                user,
                issued_until: until,
                channels: HashMap::new(),
            });
            entry.issued_until = entry.issued_until.max(until);
            entry.channels.insert(channel, (until, held))
        };
        drop(replaced); // outside the lock: dropping may give a place back
        self.start_sweeper();
    }

    /// Starts the task that drops expired leases, unless it runs.
    fn start_sweeper(self: &Arc<Self>) {
        if !self.sweeping.swap(true, Ordering::AcqRel)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let leases = Arc::clone(self);
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(SWEEP_EVERY).await;
                    if leases.sweep(Instant::now()) == 0 {
                        leases.sweeping.store(false, Ordering::Release);
                        // An insert between the sweep and the store found the flag set and
                        // started no sweeper: look again.
                        if leases.lock().is_empty() || leases.sweeping.swap(true, Ordering::AcqRel) {
                            return;
                        }
                    }
                }
            });
        }
    }

    /// Drops the leases expired at `now` (what they keep is dropped outside the lock); returns
    /// how many clients still hold some.
    pub(crate) fn sweep(&self, now: Instant) -> usize {
        let mut expired: Vec<Box<dyn Any + Send + Sync>> = Vec::new();
        let left = {
            let mut clients = self.lock();
            for client in clients.values_mut() {
                let gone = client.channels.extract_if(|_, (expires, _)| *expires <= now);
                expired.extend(gone.map(|(_, (_, held))| held));
            }
            clients.retain(|_, client| !client.channels.is_empty() || client.issued_until > now);
            clients.len()
        };
        drop(expired);
        left
    }
}
