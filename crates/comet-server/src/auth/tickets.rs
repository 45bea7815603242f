//! Single-use connection tickets: `POST /tickets` with a valid token answers
//! `{"ticket":"…","expires_in":60}`; the ticket stands in for the token in one request
//! (`?ticket=`), within `ticket_ttl_secs`. For `EventSource` and iframe URLs, which cannot carry
//! an `Authorization` header, so the long-lived token need not appear in URLs (and access logs).
//! A ticket carries the token's grants and expiry; a reused or expired one is `401`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::AuthError;
use super::{Auth, Identity};
use crate::error::ApiError;
use crate::state::AppState;

/// Most tickets outstanding at once; past it `POST /tickets` answers `503` until some are used
/// or expire. Bounds the memory a flood of requests can take (about 200 bytes each).
const MAX_OUTSTANDING: usize = 100_000;

/// The tickets issued and not used yet.
#[derive(Debug)]
pub(crate) struct Tickets {
    ttl: Duration,
    /// Ticket → the identity it stands for and when it stops being valid. A `std` mutex: held
    /// only for a map operation, never across an `.await`.
    issued: Mutex<HashMap<String, (Identity, Instant)>>,
}

impl Tickets {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            issued: Mutex::new(HashMap::new()),
        }
    }

    /// A new ticket for `identity`: 32 random bytes (a CSPRNG, `rand::rng`) in hex.
    ///
    /// # Errors
    /// [`AuthError::TicketsFull`].
    pub(crate) fn issue(&self, identity: Identity) -> Result<String, AuthError> {
        let bytes: [u8; 32] = rand::random();
        let ticket = bytes.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        let now = Instant::now();
        let mut issued = self.issued.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if issued.len() >= MAX_OUTSTANDING {
            issued.retain(|_, (_, until)| *until > now);
            if issued.len() >= MAX_OUTSTANDING {
                return Err(AuthError::TicketsFull);
            }
        }
        issued.insert(ticket.clone(), (identity, now + self.ttl));
        Ok(ticket)
    }

    /// Uses up `ticket`.
    ///
    /// # Errors
    /// [`AuthError::Ticket`] for an unknown, used or expired ticket; [`AuthError::Expired`] if
    /// the token it was issued for has expired since.
    pub(crate) fn redeem(&self, ticket: &str) -> Result<Identity, AuthError> {
        let entry = self
            .issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(ticket);
        match entry {
            Some((identity, until)) if until > Instant::now() => {
                if identity.remaining() == Some(Duration::ZERO) {
                    return Err(AuthError::Expired);
                }
                Ok(identity)
            }
            _ => Err(AuthError::Ticket),
        }
    }

    /// Validity of a new ticket, in seconds.
    pub(crate) fn ttl_secs(&self) -> u64 {
        self.ttl.as_secs()
    }
}

/// `POST /tickets`: a ticket for the caller's token (or the publish API key).
pub(crate) async fn issue(
    State(state): State<AppState>,
    auth: Option<axum::Extension<Arc<Auth>>>,
    identity: Identity,
) -> Result<Response, ApiError> {
    if identity.is_anonymous() {
        return Err(AuthError::TicketNeedsToken.into());
    }
    let auth = auth.map_or_else(|| Auth::new(&state.config), |a| a.0);
    let ticket = auth.tickets.issue(identity)?;
    Ok(Json(json!({"ticket": ticket, "expires_in": auth.tickets.ttl_secs()})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_single_use_and_expire() {
        let tickets = Tickets::new(Duration::from_millis(50));
        let a = tickets.issue(Identity::ANONYMOUS).unwrap();
        let b = tickets.issue(Identity::ANONYMOUS).unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(tickets.redeem(&a), Ok(Identity::ANONYMOUS));
        assert_eq!(tickets.redeem(&a), Err(AuthError::Ticket));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(tickets.redeem(&b), Err(AuthError::Ticket));
        assert_eq!(tickets.redeem("nonsense"), Err(AuthError::Ticket));
    }
}
