//! The one error type of the client.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An error reported by the Comet server, as carried by an HTTP error body
/// (`{"error":{"code","message"}}`), a `POST /pub` batch result, or a WebSocket `error` frame.
///
/// `code` is one of the stable snake_case codes of `docs/protocol.md` §Errors (`bad_channel`,
/// `bad_cursor`, `too_large`, …); `message` is for humans and may change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable, machine-readable code such as `bad_channel`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Everything that can go wrong in `comet-client`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The base URL (or a URL built from it) is not a valid absolute `http`/`https` URL.
    #[error("invalid URL: {0}")]
    Url(#[from] url::ParseError),
    /// An argument was rejected before anything was sent (e.g. an empty channel list).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The server answered with an unexpected HTTP status. When the body was the protocol's
    /// error object its code and message are in `error`; otherwise `error.code` is
    /// `"unknown"` and `error.message` holds the start of the body.
    #[error("HTTP {status}: {error}")]
    Http {
        /// The HTTP status code, e.g. 400.
        status: u16,
        /// The server's error object.
        error: ApiError,
    },
    /// A WebSocket `error` frame. The socket stays open: this error is an item of a
    /// [`Subscription`](crate::Subscription), not the end of it.
    #[error("server error {0}")]
    Server(ApiError),
    /// Connecting, sending or receiving over HTTP failed (refused, reset, timed out, …).
    #[error("HTTP transport error: {0}")]
    Transport(#[from] reqwest::Error),
    /// The WebSocket handshake or connection failed.
    #[error("WebSocket error: {0}")]
    WebSocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    /// The server closed the WebSocket with a close frame.
    #[error("WebSocket closed by the server with code {code}: {reason:?}")]
    Closed {
        /// The close code (RFC 6455 §7.4): 1001 going away, 1008 policy, 4000 slow consumer, ….
        code: u16,
        /// The close reason the server gave (may be empty).
        reason: String,
    },
    /// A long-lived response or socket ended without the server asking for it.
    #[error("the server ended the connection")]
    Ended,
    /// Nothing (not even a heartbeat) arrived for this long on a stream, SSE or WebSocket
    /// connection, so it was considered dead.
    #[error("no data from the server for {0:?}")]
    Idle(Duration),
    /// The server sent something this client cannot understand (bad JSON, a frame missing a
    /// field, a line or document too long).
    #[error("protocol error: {context}")]
    Protocol {
        /// What was wrong, with a short excerpt of the offending input.
        context: String,
        /// The JSON error, when the input was bad JSON.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// The SSE decoder failed (invalid UTF-8 in a field).
    #[error("SSE decoding error: {0}")]
    Sse(#[source] sse_stream::Error),
}

impl Error {
    /// The server's error code (`bad_cursor`, …) for [`Error::Http`] and [`Error::Server`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Http { error, .. } | Error::Server(error) => Some(&error.code),
            _ => None,
        }
    }

    /// Whether a subscription should reconnect after this error rather than give up.
    ///
    /// Network failures, 5xx, 408, 429, drops, idle timeouts, and WebSocket closes other than
    /// protocol/policy violations (RFC 6455 §7.4.1 codes 1002, 1003, 1007, 1008, 1009, 1010) are
    /// transient; client errors (4xx), bad URLs and decoding failures are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Http { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            Error::Transport(_) | Error::Ended | Error::Idle(_) => true,
            Error::WebSocket(e) => {
                use tokio_tungstenite::tungstenite::Error as W;
                match &**e {
                    W::Http(resp) => {
                        let s = resp.status().as_u16();
                        s >= 500 || s == 408 || s == 429
                    }
                    W::Url(_) | W::Utf8(_) | W::HttpFormat(_) => false,
                    _ => true,
                }
            }
            Error::Closed { code, .. } => !matches!(code, 1002 | 1003 | 1007 | 1008 | 1009 | 1010),
            Error::Protocol { .. } => true,
            Error::Url(_) | Error::InvalidArgument(_) | Error::Server(_) | Error::Sse(_) => false,
        }
    }

    pub(crate) fn protocol(context: impl Into<String>) -> Self {
        Error::Protocol {
            context: context.into(),
            source: None,
        }
    }

    pub(crate) fn bad_json(what: &str, input: &[u8], source: serde_json::Error) -> Self {
        Error::Protocol {
            context: format!("bad {what}: {}", excerpt(input)),
            source: Some(source),
        }
    }

    /// Builds [`Error::Http`] from a status and a response body.
    pub(crate) fn from_status(status: u16, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Body {
            error: ApiError,
        }
        let error = match serde_json::from_slice::<Body>(body) {
            Ok(b) => b.error,
            Err(_) => ApiError {
                code: "unknown".to_owned(),
                message: excerpt(body),
            },
        };
        Error::Http { status, error }
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for Error {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        use tokio_tungstenite::tungstenite::Error as W;
        match e {
            // A refused upgrade carries the server's JSON error body, like any HTTP error.
            W::Http(resp) => {
                let status = resp.status().as_u16();
                Error::from_status(status, resp.body().as_deref().unwrap_or_default())
            }
            other => Error::WebSocket(Box::new(other)),
        }
    }
}

impl From<sse_stream::Error> for Error {
    fn from(e: sse_stream::Error) -> Self {
        match e {
            // Our own body stream's errors (transport, idle) come back boxed: unwrap them.
            sse_stream::Error::Body(inner) => match inner.downcast::<Error>() {
                Ok(ours) => *ours,
                Err(other) => Error::protocol(format!("SSE body: {other}")),
            },
            other => Error::Sse(other),
        }
    }
}

/// At most 200 bytes of `input`, lossily decoded, for error messages.
fn excerpt(input: &[u8]) -> String {
    const MAX: usize = 200;
    let s = String::from_utf8_lossy(&input[..input.len().min(MAX)]).into_owned();
    if input.len() > MAX { s + "…" } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_with_protocol_body() {
        let e = Error::from_status(400, br#"{"error":{"code":"bad_cursor","message":"malformed"}}"#);
        assert_eq!(e.code(), Some("bad_cursor"));
        assert!(!e.is_transient());
        assert_eq!(e.to_string(), "HTTP 400: bad_cursor: malformed");
    }

    #[test]
    fn status_with_other_body() {
        let e = Error::from_status(502, b"Bad Gateway");
        assert_eq!(e.code(), Some("unknown"));
        assert!(e.is_transient());
    }
}
