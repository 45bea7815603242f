//! The HTTP publish API: `POST /pub/{channel}` and the JSON batch `POST /pub` (docs/protocol.md
//! "Publish"). Each message goes through [`publish_one`], as a WebSocket `publish` does.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::ConnectInfo;
use axum::extract::FromRequestParts;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Identity;
use crate::error::ApiError;
use crate::hooks::Caller;
use crate::publish::{Outcome, Publisher, publish_one};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub(crate) struct PubQuery {
    event: Option<String>,
}

/// The `Idempotency-Key` request header (draft-ietf-httpapi-idempotency-key-header), as text.
fn idempotency_header(headers: &http::HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request("bad_idempotency_key", "the Idempotency-Key header is not ASCII"))
        })
        .transpose()
}

/// The JSON result of one publish: `{"channel","id"}`, with `"duplicate":true` for a repeated
/// idempotency key.
fn result_json(channel: &str, outcome: Outcome) -> serde_json::Value {
    if outcome.duplicate {
        json!({"channel": channel, "id": outcome.cursor.to_string(), "duplicate": true})
    } else {
        json!({"channel": channel, "id": outcome.cursor.to_string()})
    }
}

/// The request body, or the JSON error for one axum could not read: `413 too_large` past the
/// route's limit (`max` bytes; axum's own answer would be plain text), `408 body_timeout` when it
/// was not in within `body_read_timeout_secs` (body.rs), else `400 bad_body`.
fn read_body(body: Result<Bytes, BytesRejection>, what: &str, max: usize) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError {
                message: format!("{what} is over the limit; at most {max} bytes are allowed"),
                ..ApiError::too_large(what, max, max)
            }
        } else if let Some(timed) = crate::io::body::timed_out(&e) {
            ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                code: "body_timeout",
                message: format!("the {what} was {timed}"),
                retry_after: None,
            }
        } else {
            ApiError::bad_request("bad_body", e.body_text())
        }
    })
}

/// What a publish request shows of itself: its headers (the `Idempotency-Key`, those the
/// connect hook is shown), its URI and the client's address.
pub(crate) struct Head {
    headers: http::HeaderMap,
    uri: http::Uri,
    remote: Option<SocketAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Head {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            headers: parts.headers.clone(),
            uri: parts.uri.clone(),
            remote: parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0),
        })
    }
}

/// The connect hook for an HTTP request that publishes or reads presence (docs/protocol.md
/// "Hooks"; transport `http`): the identity to go on with, and the client id the hooks are
/// told (where any hook is set).
pub(crate) async fn connected(
    state: &AppState,
    identity: Identity,
    head: &Head,
) -> Result<(Identity, Option<Arc<str>>), ApiError> {
    if !state.hooks.on() {
        return Ok((identity, None));
    }
    let id = crate::client_id::next();
    let caller = Caller {
        client: &id,
        transport: "http",
        remote_addr: head.remote,
        headers: &head.headers,
        uri: &head.uri,
        cacheable: false,
    };
    let identity = state.hooks.connect(state.auth.config(), &caller, identity).await?;
    Ok((identity, Some(id)))
}

/// `POST /pub/{channel}[?event=]`: the body is the message → `201 {"channel","id"}`. With an
/// `Idempotency-Key` header, a repeat within `idempotency_window_secs` answers the same `201`
/// with the first cursor, `"duplicate":true` and `Idempotent-Replayed: true`.
pub(crate) async fn publish(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<PubQuery>, QueryRejection>,
    head: Head,
    identity: Identity,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let largest = crate::auth::policy::largest_message_size(state.auth.config());
    let body = read_body(body, "message", largest)?;
    let Path(channel) = path.map_err(|e| ApiError::bad_request("bad_channel", e.body_text()))?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_request", e.body_text()))?;
    let (identity, client_id) = connected(&state, identity, &head).await?;
    let by = Publisher {
        identity: &identity,
        client: head.remote.map(|addr| addr.ip()),
        websocket: false,
        client_id: client_id.as_deref(),
    };
    let key = idempotency_header(&head.headers)?;
    let outcome = publish_one(&state, by, &channel, query.event.as_deref(), body, key).await?;
    let mut res = (StatusCode::CREATED, Json(result_json(&channel, outcome))).into_response();
    if outcome.duplicate {
        res.headers_mut()
            .insert("idempotent-replayed", http::HeaderValue::from_static("true"));
    }
    Ok(res)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    channel: String,
    event: Option<String>,
    data: String,
    idempotency_key: Option<String>,
}

/// `POST /pub` with `[{"channel","event"?,"data","idempotency_key"?}]` → `200 {"results":[…]}`,
/// one result per item; each item is published or rejected on its own (authorization too, per
/// channel).
pub(crate) async fn publish_batch(
    State(state): State<AppState>,
    head: Head,
    identity: Identity,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(body, "batch", state.config.max_batch_body)?;
    let (identity, client_id) = connected(&state, identity, &head).await?;
    let by = Publisher {
        identity: &identity,
        client: head.remote.map(|addr| addr.ip()),
        websocket: false,
        client_id: client_id.as_deref(),
    };
    let items: Vec<serde_json::Value> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_body",
            format!("the batch must be a JSON array of {{channel, event?, data}}: {e}"),
        )
    })?;
    // Each item gets a result of its own, an error object of some 100 bytes for an item as short
    // as `0,`: without a bound a 1 MiB batch of those took 56 MB to answer (and far more memory).
    // No valid item is shorter than `{"channel":"a","data":""},` (26 bytes), so a batch with more
    // items than the body limit holds valid ones cannot be meant, and is refused whole.
    let most = state.config.max_batch_body / 26 + 1;
    if items.len() > most {
        return Err(ApiError {
            message: format!(
                "the batch has {} items; a body of at most {} bytes holds at most {most} valid ones",
                items.len(),
                state.config.max_batch_body
            ),
            ..ApiError::too_large("batch", items.len(), most)
        });
    }
    // Written as they come rather than kept as `Value`s: those took ten times the answer's size.
    let mut out = Vec::with_capacity(16 + items.len() * 64);
    out.extend_from_slice(b"{\"results\":[");
    for (i, item) in items.into_iter().enumerate() {
        let result = match serde_json::from_value::<BatchItem>(item) {
            Err(e) => Err(ApiError::bad_request("bad_body", format!("item {i}: {e}"))),
            Ok(item) => publish_one(
                &state,
                by,
                &item.channel,
                item.event.as_deref(),
                Bytes::from(item.data),
                item.idempotency_key.as_deref(),
            )
            .await
            .map(|outcome| result_json(&item.channel, outcome)),
        };
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(result.unwrap_or_else(|e| e.body()).to_string().as_bytes());
    }
    out.extend_from_slice(b"]}");
    Ok(([(http::header::CONTENT_TYPE, "application/json")], out).into_response())
}
