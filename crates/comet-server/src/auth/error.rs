//! [`AuthError`]: why a caller may not do what it asked, and how that becomes an [`ApiError`].

use http::StatusCode;

use crate::error::ApiError;

/// What a caller may try to do with a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Receive the channel's messages (any transport).
    Subscribe,
    /// Publish to the channel (HTTP or a WebSocket `publish` command).
    Publish,
}

impl Action {
    /// `subscribe` or `publish`, as in the token's `comet` claim.
    pub fn name(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Publish => "publish",
        }
    }

    /// The verb with its preposition, for messages: `subscribe to`, `publish to`.
    fn phrase(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe to",
            Action::Publish => "publish to",
        }
    }
}

/// An authentication or authorization failure. HTTP: `401 unauthorized`, `403 forbidden`,
/// `403 forbidden_origin` or `503 unavailable` (see the `From` impl below, the only mapping);
/// WebSocket: an `error` frame with the same code, or close 1008 for a bad `auth` token.
/// Messages never contain the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token's `exp` has passed (RFC 7519 §4.1.4).
    #[error("token expired")]
    Expired,
    /// The token cannot be trusted: malformed, bad signature, an algorithm other than the
    /// configured one (`alg: none` included), wrong `aud`/`iss`, or a required claim missing.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A token was given but the server's verification key is unusable (logged at start).
    #[error("invalid token: the server cannot verify tokens ({0})")]
    Misconfigured(String),
    /// A `Bearer` credential that is neither the publish API key nor (JWT off) a token.
    #[error("invalid token: the bearer credential is not the publish API key")]
    BadApiKey,
    /// `?ticket=` that was never issued, was used already, or is older than `ticket_ttl_secs`.
    #[error("unknown, used or expired ticket; get a new one from POST /tickets")]
    Ticket,
    /// An anonymous caller asked for something its namespace keeps for token holders.
    #[error("a token is needed to {} {channel}", action.phrase())]
    NeedsToken {
        /// What was asked.
        action: Action,
        /// On which channel.
        channel: String,
    },
    /// `POST /tickets` without a token.
    #[error("a ticket is issued only for a valid token (Authorization: Bearer, ?token= or the cookie)")]
    TicketNeedsToken,
    /// A token holder asked for something outside its grant, or the namespace forbids it.
    #[error("not allowed to {} {channel}: {why}", action.phrase())]
    Forbidden {
        /// What was asked.
        action: Action,
        /// On which channel.
        channel: String,
        /// Which rule said no.
        why: &'static str,
    },
    /// A browser page from an origin not in `allowed_origins`.
    #[error("origin {0} is not allowed (allowed_origins)")]
    Origin(String),
    /// A token was sent where only one could count (the WebSocket `auth` command), but no JWT
    /// key is configured: tokens are not needed, nor checked.
    #[error("this server has no JWT key configured: tokens are neither needed nor checked")]
    JwtOff,
    /// Too many tickets outstanding at once.
    #[error("too many outstanding tickets; retry later")]
    TicketsFull,
    /// The store that tickets are shared in (Redis) cannot be reached.
    #[error("tickets cannot be issued or checked now ({0}); retry later")]
    TicketStore(String),
}

impl AuthError {
    /// The stable code, as in docs/protocol.md "Errors" (also the WebSocket `error` frame's).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Forbidden { .. } => "forbidden",
            AuthError::Origin(_) => "forbidden_origin",
            AuthError::TicketsFull | AuthError::TicketStore(_) => "unavailable",
            _ => "unauthorized",
        }
    }

    /// The WebSocket close reason (RFC 6455 §5.5.1: at most 123 bytes, so a fixed text).
    pub fn close_reason(&self) -> &'static str {
        match self {
            AuthError::Expired => "token expired",
            _ => "invalid token",
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = match e {
            AuthError::Forbidden { .. } | AuthError::Origin(_) => StatusCode::FORBIDDEN,
            AuthError::TicketsFull | AuthError::TicketStore(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        };
        ApiError {
            status,
            code: e.code(),
            message: e.to_string(),
            retry_after: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1),
        }
    }
}
