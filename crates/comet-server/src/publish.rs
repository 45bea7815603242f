//! The publish API: `POST /pub/{channel}` and the JSON batch `POST /pub` (docs/protocol.md
//! "Publish").

use std::time::Instant;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use comet_core::{ChannelName, EventName, Publish};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Action, Identity};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub(crate) struct PubQuery {
    event: Option<String>,
}

/// Checks and publishes one message for `identity`; shared by HTTP and WebSocket publishing
/// (`websocket`: the namespace's `client_publish` rule applies).
///
/// # Errors
/// `bad_channel`/`bad_event` for names, `unauthorized`/`forbidden` (auth), `too_large` (the
/// namespace's `max_message_size`), `not_utf8`, or the broker's error.
pub(crate) async fn publish_one(
    state: &AppState,
    identity: &Identity,
    websocket: bool,
    channel: &str,
    event: Option<&str>,
    data: Bytes,
) -> Result<comet_core::Cursor, ApiError> {
    let channel = ChannelName::new(channel)?;
    identity.authorize(&state.config, Action::Publish, &channel, websocket)?;
    let event = event.map(EventName::new).transpose()?;
    let max = crate::auth::policy::max_message_size(&state.config, &channel);
    if data.len() > max {
        return Err(ApiError::too_large("message", data.len(), max));
    }
    let started = Instant::now();
    let msg = state.broker.publish(Publish { channel, event, data }).await?;
    state.metrics.observe_publish(started.elapsed().as_secs_f64());
    Ok(msg.cursor)
}

/// `POST /pub/{channel}[?event=]`: the body is the message → `201 {"channel","id"}`.
pub(crate) async fn publish(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<PubQuery>, QueryRejection>,
    identity: Identity,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Path(channel) = path.map_err(|e| ApiError::bad_request("bad_channel", e.body_text()))?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_request", e.body_text()))?;
    let cursor = publish_one(&state, &identity, false, &channel, query.event.as_deref(), body).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"channel": channel, "id": cursor.to_string()})),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    channel: String,
    event: Option<String>,
    data: String,
}

/// `POST /pub` with `[{"channel","event"?,"data"}]` → `200 {"results":[…]}`, one result per item;
/// each item is published or rejected on its own (authorization too, per channel).
pub(crate) async fn publish_batch(
    State(state): State<AppState>,
    identity: Identity,
    body: Bytes,
) -> Result<Response, ApiError> {
    let items: Vec<serde_json::Value> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_body",
            format!("the batch must be a JSON array of {{channel, event?, data}}: {e}"),
        )
    })?;
    let mut results = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let result = match serde_json::from_value::<BatchItem>(item) {
            Err(e) => Err(ApiError::bad_request("bad_body", format!("item {i}: {e}"))),
            Ok(item) => publish_one(
                &state,
                &identity,
                false,
                &item.channel,
                item.event.as_deref(),
                Bytes::from(item.data),
            )
            .await
            .map(|cursor| json!({"channel": item.channel, "id": cursor.to_string()})),
        };
        results.push(result.unwrap_or_else(|e| e.body()));
    }
    Ok(Json(json!({ "results": results })).into_response())
}
