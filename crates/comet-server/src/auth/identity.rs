//! [`Identity`]: who the caller of a request or WebSocket session is, and what it may do
//! (docs/protocol.md "Authentication", "Hooks").

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comet_core::ChannelName;

use super::{Action, AuthConfig, AuthError, FOREVER, Grants, glob, policy};

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Principal {
    /// No credential: the namespace rules decide.
    Anonymous,
    /// The publish API key: a back-end, allowed everything.
    Backend,
    /// A verified token (or a ticket issued for one).
    User(Arc<Grants>),
}

/// The caller of a request or WebSocket session: anonymous, the back-end (publish API key), or
/// a token holder with its grants and expiry. Extracted from the request by axum; a bad
/// credential rejects the request with `401`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub(super) principal: Principal,
    /// When the credential stops being valid, in seconds since the Unix epoch (`exp` plus
    /// `jwt_leeway_secs`); `None` for anonymous and back-end callers.
    pub(super) expires_at: Option<u64>,
}

impl Identity {
    /// No credential.
    pub const ANONYMOUS: Identity = Identity {
        principal: Principal::Anonymous,
        expires_at: None,
    };

    /// The back-end: what the publish API key proves, and what the admin console acts as
    /// once the admin API key let it in.
    pub(crate) const BACKEND: Identity = Identity {
        principal: Principal::Backend,
        expires_at: None,
    };

    pub(super) fn user(grants: Arc<Grants>, expires_at: u64) -> Self {
        Self {
            principal: Principal::User(grants),
            expires_at: Some(expires_at),
        }
    }

    /// Whether no credential was given.
    pub fn is_anonymous(&self) -> bool {
        self.principal == Principal::Anonymous
    }

    /// Whether this is the back-end (the publish API key): it skips the hooks.
    pub fn is_backend(&self) -> bool {
        self.principal == Principal::Backend
    }

    /// This identity as a connect hook's result says (docs/protocol.md "Hooks"): `user` makes
    /// the caller that user (keeping a token's grants when it names the same subject; with no
    /// grants otherwise, so the subscribe and publish hooks or the namespace rules decide),
    /// with `info`; `expire_at` (seconds since the Unix epoch) ends it sooner.
    pub(crate) fn with_hook(self, user: Option<&str>, info: Option<Arc<str>>, expire_at: Option<u64>) -> Identity {
        // An empty user names nobody: the caller stays as it was (anonymous clients are `""`).
        let user = user.filter(|u| !u.is_empty());
        let expires_at = match (self.expires_at, expire_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let principal = match (user, self.principal) {
            (Some(user), Principal::User(grants)) if grants.sub == user => Principal::User(match info {
                Some(info) => Arc::new(Grants {
                    sub: grants.sub.clone(),
                    subscribe: grants.subscribe.clone(),
                    publish: grants.publish.clone(),
                    info: Some(info),
                }),
                None => grants,
            }),
            (Some(user), _) => Principal::User(Arc::new(Grants {
                sub: user.to_owned(),
                subscribe: Vec::new(),
                publish: Vec::new(),
                info,
            })),
            (None, principal) => principal,
        };
        Identity { principal, expires_at }
    }

    /// The token's subject (`sub`), if this is a token holder.
    pub fn subject(&self) -> Option<&str> {
        match &self.principal {
            Principal::User(grants) => Some(&grants.sub),
            _ => None,
        }
    }

    /// The token's `comet.info` object as JSON text, if it has one.
    pub fn info(&self) -> Option<&Arc<str>> {
        match &self.principal {
            Principal::User(grants) => grants.info.as_ref(),
            _ => None,
        }
    }

    /// When the credential expires, in seconds since the Unix epoch.
    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }

    /// How long until the credential expires (zero if it has); `None` if it never does, or not
    /// within [`FOREVER`] (a signed `exp` of `u64::MAX` is valid, and no clock reaches it).
    pub fn remaining(&self) -> Option<Duration> {
        let at = UNIX_EPOCH.checked_add(Duration::from_secs(self.expires_at?))?;
        let left = at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
        (left < FOREVER).then_some(left)
    }

    /// Whether the caller may do `action` on `channel`, through WebSocket if `websocket`.
    ///
    /// # Errors
    /// [`AuthError::NeedsToken`] (401) for an anonymous caller the namespace turns away,
    /// [`AuthError::Forbidden`] (403) for a token outside its grant or a namespace that
    /// forbids WebSocket publishing.
    pub fn authorize(
        &self,
        config: &AuthConfig,
        action: Action,
        channel: &ChannelName,
        websocket: bool,
    ) -> Result<(), AuthError> {
        let forbidden = |why| AuthError::Forbidden {
            action,
            channel: channel.to_string(),
            why,
        };
        if self.principal == Principal::Backend {
            return Ok(());
        }
        if action == Action::Publish && websocket && !policy::client_publish(config, channel) {
            return Err(forbidden("this namespace does not allow publishing over WebSocket"));
        }
        let open = match action {
            Action::Subscribe => policy::anonymous_subscribe(config, channel),
            Action::Publish => policy::anonymous_publish(config, channel),
        };
        match &self.principal {
            _ if open => Ok(()),
            Principal::User(grants) => {
                let patterns = match action {
                    Action::Subscribe => &grants.subscribe,
                    Action::Publish => &grants.publish,
                };
                if glob::any_matches(patterns, channel.as_str()) {
                    Ok(())
                } else {
                    Err(forbidden("outside the token's grant"))
                }
            }
            _ => Err(AuthError::NeedsToken {
                action,
                channel: channel.to_string(),
            }),
        }
    }

    /// [`authorize`](Self::authorize) for every channel of a subscription.
    ///
    /// # Errors
    /// The first refusal.
    pub fn authorize_all(
        &self,
        config: &AuthConfig,
        channels: &[ChannelName],
        websocket: bool,
    ) -> Result<(), AuthError> {
        channels
            .iter()
            .try_for_each(|c| self.authorize(config, Action::Subscribe, c, websocket))
    }
}
