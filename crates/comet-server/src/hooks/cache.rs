//! `hook_cache_secs`: the hooks' answers to polling transports, kept for a while by what the
//! request showed the hook (its forwarded headers, its user, the channel), so a client polling
//! every second does not cost a back-end call each time. Allows and refusals are kept, failures
//! never (a back-end that comes back is asked again at once).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::answer::ConnectResult;
use crate::error::ApiError;

/// Entries kept at most; past it the expired go, and if none had, everything.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone)]
enum Kept {
    Connect(Result<ConnectResult, ApiError>),
    Subscribe(Result<(), ApiError>),
}

/// The kept answers; nothing is kept with a zero time to live.
#[derive(Debug)]
pub(super) struct Cache {
    ttl: Duration,
    /// A `std` mutex: held to look up or insert, never across an `.await`.
    entries: Mutex<HashMap<String, (Instant, Kept)>>,
}

impl Cache {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    fn get(&self, key: &str) -> Option<Kept> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (until, kept) = entries.get(key)?;
        (*until > Instant::now()).then(|| kept.clone())
    }

    fn keep(&self, key: String, kept: Kept) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (now + self.ttl, kept));
    }

    pub(super) fn connect(&self, key: &str) -> Option<Result<ConnectResult, ApiError>> {
        match self.get(key)? {
            Kept::Connect(result) => Some(result),
            Kept::Subscribe(_) => None,
        }
    }

    pub(super) fn subscribe(&self, key: &str) -> Option<Result<(), ApiError>> {
        match self.get(key)? {
            Kept::Subscribe(result) => Some(result),
            Kept::Connect(_) => None,
        }
    }

    /// Keeps an allow or a refusal (not a failure: `503`).
    pub(super) fn keep_connect(&self, key: String, result: &Result<ConnectResult, ApiError>) {
        if !is_failure(result) {
            self.keep(key, Kept::Connect(result.clone()));
        }
    }

    pub(super) fn keep_subscribe(&self, key: String, result: &Result<(), ApiError>) {
        if !is_failure(result) {
            self.keep(key, Kept::Subscribe(result.clone()));
        }
    }
}

fn is_failure<T>(result: &Result<T, ApiError>) -> bool {
    result
        .as_ref()
        .is_err_and(|e| e.status == http::StatusCode::SERVICE_UNAVAILABLE)
}
