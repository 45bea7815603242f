//! The load generator's errors.

/// A malformed response from the server under test.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The HTTP response head could not be parsed.
    #[error("bad HTTP response head: {0}")]
    Http(String),
    /// The chunked transfer coding was broken.
    #[error("bad chunked body: {0}")]
    Chunked(&'static str),
}

/// Why a benchmark (or one of its connections) failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A socket error.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A malformed response.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The server answered with an unexpected status.
    #[error("unexpected HTTP status {status} for {what}")]
    Status {
        /// The status code.
        status: u16,
        /// Which request.
        what: &'static str,
    },
    /// The server closed a connection that should have stayed open.
    #[error("connection closed by the server")]
    Closed,
    /// A WebSocket error.
    #[error("WebSocket: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    /// The adapter cannot do what was asked (e.g. a transport it has no template for).
    #[error("adapter {adapter:?} has no {transport} transport")]
    NoTransport {
        /// The adapter.
        adapter: String,
        /// The transport asked for.
        transport: String,
    },
    /// A setting is out of range.
    #[error("bad setting: {0}")]
    Config(String),
    /// An adapter file could not be read.
    #[error("adapter file: {0}")]
    AdapterFile(#[from] serde_json::Error),
}

impl From<tokio_tungstenite::tungstenite::Error> for BenchError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        Self::WebSocket(Box::new(e))
    }
}

impl BenchError {
    /// A short stable label for error counts in reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused",
            Self::Io(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => "addr_not_available",
            Self::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => "timeout",
            Self::Io(e) if e.raw_os_error() == Some(24) => "too_many_open_files",
            Self::Io(_) => "io",
            Self::Parse(_) => "parse",
            Self::Status { status: 404, .. } => "status_404",
            Self::Status { status: 429, .. } => "status_429",
            Self::Status { status: 500, .. } => "status_500",
            Self::Status { status: 502, .. } => "status_502",
            Self::Status { status: 503, .. } => "status_503",
            Self::Status { status: 504, .. } => "status_504",
            Self::Status { .. } => "status_other",
            Self::Closed => "closed",
            Self::WebSocket(e) => match **e {
                tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status().as_u16() == 502 => "ws_status_502",
                tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status().as_u16() == 503 => "ws_status_503",
                tokio_tungstenite::tungstenite::Error::Http(_) => "ws_status_other",
                tokio_tungstenite::tungstenite::Error::Io(_) => "ws_io",
                tokio_tungstenite::tungstenite::Error::Protocol(_) => "ws_protocol",
                _ => "websocket",
            },
            Self::NoTransport { .. } => "no_transport",
            Self::Config(_) => "config",
            Self::AdapterFile(_) => "adapter_file",
        }
    }
}
