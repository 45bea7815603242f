//! [`ApiError`]: the one place errors become HTTP answers (`{"error":{"code","message"}}`).

use axum::Json;
use axum::response::{IntoResponse, Response};
use comet_core::{BrokerError, CursorError, NameError, NotUtf8};
use http::StatusCode;
use serde_json::json;

/// An error answered to an HTTP client: a status, a stable snake_case `code`, and a message for
/// people. Codes are listed in docs/protocol.md "Errors".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// For `429` (and `503`): seconds after which a retry may succeed, sent as `Retry-After`
    /// (RFC 9110 §10.2.3) and as `retry_after` in the body.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A `400 Bad Request` with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A `413 Payload Too Large`.
    pub fn too_large(what: &str, size: usize, max: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "too_large",
            message: format!("{what} is {size} bytes; at most {max} are allowed"),
            retry_after: None,
        }
    }

    /// A `404 Not Found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
            retry_after: None,
        }
    }

    /// A `503 Service Unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: message.into(),
            retry_after: Some(1),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        match self.retry_after {
            None => json!({"error": {"code": self.code, "message": self.message}}),
            Some(secs) => json!({"error": {"code": self.code, "message": self.message, "retry_after": secs}}),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        res
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        let code = match e {
            NameError::Reserved { .. } => "bad_event",
            NameError::Empty { kind } | NameError::TooLong { kind, .. } | NameError::InvalidByte { kind, .. } => {
                if kind == "event" { "bad_event" } else { "bad_channel" }
            }
        };
        Self::bad_request(code, e.to_string())
    }
}

impl From<CursorError> for ApiError {
    fn from(e: CursorError) -> Self {
        Self::bad_request("bad_cursor", e.to_string())
    }
}

impl From<NotUtf8> for ApiError {
    fn from(e: NotUtf8) -> Self {
        Self::bad_request("not_utf8", e.to_string())
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::NotUtf8(e) => e.into(),
            BrokerError::Unavailable(m) => Self::unavailable(m),
            BrokerError::Full(m) => Self {
                status: StatusCode::INSUFFICIENT_STORAGE,
                code: "storage_full",
                message: m,
                retry_after: None,
            },
            BrokerError::Internal(m) => Self {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: "internal",
                message: m,
                retry_after: None,
            },
            BrokerError::Unsupported(what) => Self {
                status: StatusCode::NOT_IMPLEMENTED,
                code: "unsupported",
                message: format!("this broker does not provide {what}"),
                retry_after: None,
            },
        }
    }
}
