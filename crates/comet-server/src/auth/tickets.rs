//! Single-use connection tickets, kept: `POST /tickets` (http/tickets.rs) with a valid token answers
//! `{"ticket":"…","expires_in":60}`; the ticket stands in for the token in one request
//! (`?ticket=`), within `ticket_ttl_secs`. For `EventSource` and iframe URLs, which cannot carry
//! an `Authorization` header, so the long-lived token need not appear in URLs (and access logs).
//! A ticket carries the token's grants and expiry; a reused or expired one is `401`.
//!
//! With a broker of several nodes (Redis) tickets are kept in the broker's
//! [`SharedStore`](comet_core::SharedStore), so a ticket issued by one node is good on every
//! node (behind a load balancer, the request that uses it rarely reaches the node that issued
//! it), and still once only. Otherwise they are kept in this node's memory.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use comet_core::SharedStore;
use serde_json::Value;

use super::error::AuthError;
use super::{Grants, Identity, Principal};

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

    /// A new ticket for `identity`: 32 random bytes (a CSPRNG, `rand::rng`) in hex, kept in
    /// `shared` when there is one, else here.
    ///
    /// # Errors
    /// [`AuthError::TicketsFull`]; [`AuthError::TicketStore`] when `shared` is down.
    pub(crate) async fn issue(
        &self,
        identity: Identity,
        shared: Option<&dyn SharedStore>,
    ) -> Result<String, AuthError> {
        let bytes: [u8; 32] = rand::random();
        let ticket = bytes.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        if let Some(shared) = shared {
            shared
                .put(&ticket, encode(&identity), self.ttl)
                .await
                .map_err(|e| AuthError::TicketStore(e.to_string()))?;
            return Ok(ticket);
        }
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
    pub(crate) async fn redeem(&self, ticket: &str, shared: Option<&dyn SharedStore>) -> Result<Identity, AuthError> {
        let entry = match shared {
            // A ticket is 64 hex digits; anything else is not looked up.
            Some(_) if ticket.len() != 64 || !ticket.bytes().all(|b| b.is_ascii_hexdigit()) => None,
            // The store's TTL is the ticket's validity: what it still holds is within it.
            Some(shared) => match shared.take(ticket).await {
                Ok(value) => value.and_then(|v| decode(&v)).map(|id| (id, Instant::now() + self.ttl)),
                Err(e) => return Err(AuthError::TicketStore(e.to_string())),
            },
            None => self
                .issued
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(ticket),
        };
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

/// An identity as the shared store keeps it: JSON `{"backend":true}` or
/// `{"sub","subscribe","publish","exp"}`.
fn encode(identity: &Identity) -> Vec<u8> {
    let value = match &identity.principal {
        Principal::User(grants) => serde_json::json!({
            "sub": grants.sub,
            "subscribe": grants.subscribe,
            "publish": grants.publish,
            "info": grants.info.as_deref(),
            "exp": identity.expires_at,
        }),
        Principal::Backend => serde_json::json!({"backend": true}),
        Principal::Anonymous => serde_json::json!({}),
    };
    value.to_string().into_bytes()
}

/// The identity [`encode`] wrote, or `None` for anything else.
fn decode(bytes: &[u8]) -> Option<Identity> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    if v.get("backend") == Some(&Value::Bool(true)) {
        return Some(Identity {
            principal: Principal::Backend,
            expires_at: None,
        });
    }
    let patterns = |name: &str| -> Option<Vec<String>> {
        v.get(name)?
            .as_array()?
            .iter()
            .map(|p| p.as_str().map(str::to_owned))
            .collect()
    };
    let grants = Grants {
        sub: v.get("sub")?.as_str()?.to_owned(),
        subscribe: patterns("subscribe")?,
        publish: patterns("publish")?,
        info: match v.get("info") {
            None | Some(Value::Null) => None,
            Some(info) => Some(Arc::from(info.as_str()?)),
        },
    };
    Some(Identity::user(Arc::new(grants), v.get("exp")?.as_u64()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tickets_are_single_use_and_expire() {
        let tickets = Tickets::new(Duration::from_millis(50));
        let a = tickets.issue(Identity::ANONYMOUS, None).await.unwrap();
        let b = tickets.issue(Identity::ANONYMOUS, None).await.unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(tickets.redeem(&a, None).await, Ok(Identity::ANONYMOUS));
        assert_eq!(tickets.redeem(&a, None).await, Err(AuthError::Ticket));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(tickets.redeem(&b, None).await, Err(AuthError::Ticket));
        assert_eq!(tickets.redeem("nonsense", None).await, Err(AuthError::Ticket));
    }

    /// What the shared store keeps reads back as the same identity; anything else is no ticket.
    #[test]
    fn identities_round_trip_through_the_shared_form() {
        let user = Identity::user(
            Arc::new(Grants {
                sub: "alice".into(),
                subscribe: vec!["chat:*".into()],
                publish: vec![],
                info: Some(r#"{"name":"Alice"}"#.into()),
            }),
            1_900_000_000,
        );
        let backend = Identity {
            principal: Principal::Backend,
            expires_at: None,
        };
        for id in [user, backend] {
            assert_eq!(decode(&encode(&id)), Some(id));
        }
        for junk in [
            &b"{}"[..],
            b"[]",
            b"not json",
            br#"{"sub":"a","subscribe":[1],"publish":[],"exp":1}"#,
        ] {
            assert_eq!(decode(junk), None, "{}", String::from_utf8_lossy(junk));
        }
    }
}
