//! [`Kind`]: the six push transports by name, the vocabulary every layer shares (the
//! dispatcher chooses one, metrics label by it, limits count by it).

use crate::error::ApiError;

/// A push transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Short polling: answers at once.
    Poll,
    /// Long polling: holds the request until a message or a timeout.
    LongPoll,
    /// HTTP streaming: chunked NDJSON.
    Stream,
    /// Hidden-iframe (htmlfile) streaming.
    Iframe,
    /// Server-Sent Events.
    Sse,
    /// WebSocket (RFC 6455).
    WebSocket,
}

impl Kind {
    /// Every transport.
    pub const ALL: [Kind; 6] = [
        Kind::Poll,
        Kind::LongPoll,
        Kind::Stream,
        Kind::Iframe,
        Kind::Sse,
        Kind::WebSocket,
    ];

    /// Whether the transport answers with one long response body that streams messages
    /// (stream, iframe, SSE): held open, written without hyper on HTTP/1.1 (conn/h1.rs), ended
    /// at the credential's expiry (transport/streaming.rs).
    ///
    /// ```
    /// use comet_server::transport::Kind;
    /// let streaming: Vec<_> = Kind::ALL.into_iter().filter(|k| k.is_streaming()).map(Kind::name).collect();
    /// assert_eq!(streaming, ["stream", "iframe", "sse"]);
    /// ```
    pub fn is_streaming(self) -> bool {
        matches!(self, Kind::Stream | Kind::Iframe | Kind::Sse)
    }

    /// The name used in `?transport=` and in metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Poll => "poll",
            Kind::LongPoll => "longpoll",
            Kind::Stream => "stream",
            Kind::Iframe => "iframe",
            Kind::Sse => "sse",
            Kind::WebSocket => "ws",
        }
    }

    /// The transport named `name` (`websocket` also names [`Kind::WebSocket`]).
    ///
    /// # Errors
    /// `400 bad_transport` for any other name.
    pub(crate) fn parse(name: &str) -> Result<Self, ApiError> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name || (name == "websocket" && *k == Kind::WebSocket))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "bad_transport",
                    format!("unknown transport {name:?}; use one of poll, longpoll, stream, iframe, sse, ws"),
                )
            })
    }
}
