//! The server API (docs/protocol.md "Server API"), for the application's back-end and operators,
//! behind `admin_api_key` (`Authorization: Bearer <key>`): act on a user's connections on every
//! node, list the active channels, page through a channel's history; and the older
//! `POST /admin/disconnect`.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use comet_core::{ChannelName, Cursor, Event, Position, Since};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::io::orders::Order;
use crate::state::AppState;

/// `limit`'s default on `GET /channels` and `GET /channels/{channel}/history`.
const DEFAULT_LIMIT: usize = 100;

/// The server API's routes, each behind the key, and the admin console (console.rs: its page
/// without the key, its data behind it), when `admin_api_key` is set; else only
/// `POST /admin/disconnect`, unauthenticated, where `admin_api = true` (the older mode), and
/// the console's paths answer `404`.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    if state.config.admin_api_key.is_empty() {
        let router = super::console::off();
        return if state.config.admin_api {
            router.route("/admin/disconnect", post(disconnect_all))
        } else {
            router
        };
    }
    Router::new()
        .route("/admin/disconnect", post(disconnect_all))
        .route("/admin/users/{user}/disconnect", post(disconnect_user))
        .route("/admin/users/{user}/unsubscribe/{channel}", post(unsubscribe_user))
        .route("/channels", get(list_channels))
        .route("/channels/{channel}/history", get(history))
        .merge(super::console::routes(state))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_key))
        .merge(super::console::pages())
}

/// Lets through only requests with `Authorization: Bearer <admin_api_key>` (compared in
/// constant time); else `401 unauthorized` with `WWW-Authenticate: Bearer` (RFC 6750 §3).
async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let key = state.config.admin_api_key.expose().as_bytes();
    let given = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().as_bytes());
    let good = given.is_some_and(|given| {
        given.len() == key.len() && given.iter().zip(key).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if good {
        return next.run(req).await;
    }
    let mut res = ApiError {
        status: StatusCode::UNAUTHORIZED,
        code: "unauthorized",
        message: "the server API needs Authorization: Bearer <admin_api_key>".into(),
        retry_after: None,
    }
    .into_response();
    res.headers_mut()
        .insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
    res
}

/// `POST /admin/disconnect`: ends every subscriber connection of this node (they resume by
/// cursor).
async fn disconnect_all(State(state): State<AppState>) -> Response {
    state.disconnect_all();
    (StatusCode::ACCEPTED, Json(json!({"disconnected": true}))).into_response()
}

/// The body of `POST /admin/users/{user}/disconnect`, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    /// `false` asks the clients not to reconnect (comet.js stops). Defaults to true.
    reconnect: Option<bool>,
}

fn user_of(path: &str) -> Result<&str, ApiError> {
    if path.is_empty() {
        return Err(ApiError::bad_request("bad_user", "the user is empty"));
    }
    Ok(path)
}

/// `POST /admin/users/{user}/disconnect` `{"reconnect"?}` → `202 {"user","connections"}`:
/// every connection of the user on every node ends (`connections`: how many of them this
/// node had).
async fn disconnect_user(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Path(user) = path.map_err(|e| ApiError::bad_request("bad_user", e.body_text()))?;
    let user = user_of(&user)?;
    let body: DisconnectBody = if body.iter().all(u8::is_ascii_whitespace) {
        DisconnectBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "bad_body",
                format!("the body must be {{\"reconnect\": bool}} or empty: {e}"),
            )
        })?
    };
    let reconnect = body.reconnect.unwrap_or(true);
    let here = state.order_user(user, Order::Disconnect { reconnect }).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"user": user, "connections": here}))).into_response())
}

/// `POST /admin/users/{user}/unsubscribe/{channel}` → `202 {"user","channel","connections"}`:
/// every connection of the user on every node stops delivering the channel (`connections`:
/// how many of the user's connections this node told).
async fn unsubscribe_user(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((user, channel)) = path.map_err(|e| ApiError::bad_request("bad_request", e.body_text()))?;
    let user = user_of(&user)?;
    let channel = ChannelName::new(&channel)?;
    let here = state.order_user(user, Order::Unsubscribe(channel.clone())).await?;
    let body = json!({"user": user, "channel": channel.as_str(), "connections": here});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    prefix: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
    info: Option<String>,
}

/// `limit` as asked, `DEFAULT_LIMIT` if not, at most `max_history_page`.
fn page_limit(state: &AppState, asked: Option<usize>) -> Result<usize, ApiError> {
    match asked {
        Some(0) => Err(ApiError::bad_request("bad_limit", "limit must be at least 1")),
        asked => Ok(asked.unwrap_or(DEFAULT_LIMIT).min(state.config.max_history_page)),
    }
}

/// `GET /channels?prefix=&limit=&after=` → `{"channels":[{"channel","subscribers"}],"next"}`:
/// the channels with subscribers on any node, in name order; `next` is the `after` of the
/// next page (`null` on the last). With `info=true` each channel also has `history_len`,
/// `last_id` and `last_time` (ms since the epoch, `null` when history holds no message).
async fn list_channels(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_request", e.body_text()))?;
    let limit = page_limit(&state, query.limit)?;
    let prefix = query.prefix.unwrap_or_default();
    let mut channels = state
        .broker
        .channels(&prefix, query.after.as_deref(), limit + 1)
        .await?;
    let more = channels.len() > limit;
    channels.truncate(limit);
    let next = more.then(|| channels.last().map(|(c, _)| c.to_string())).flatten();
    let info = match query.info.as_deref() {
        None | Some("false" | "0" | "no") => false,
        Some("true" | "1" | "yes") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "bad_request",
                format!("info must be true or false, got {other:?}"),
            ));
        }
    };
    let mut list: Vec<Value> = channels
        .iter()
        .map(|(channel, subscribers)| json!({"channel": channel.as_str(), "subscribers": subscribers}))
        .collect();
    if info {
        let facts = channels.iter().map(|(channel, _)| last_message(&state, channel));
        for (row, (history_len, last_id, last_time)) in list.iter_mut().zip(futures_util::future::join_all(facts).await)
        {
            row["history_len"] = history_len.into();
            row["last_id"] = last_id.into();
            row["last_time"] = last_time.into();
        }
    }
    Ok(Json(json!({"channels": list, "next": next})).into_response())
}

/// `channel`'s history length, last cursor, and the time of its last message while history
/// holds it (all `None`-ish when the broker cannot say: the listing still answers).
async fn last_message(state: &AppState, channel: &ChannelName) -> (usize, Option<String>, Option<u64>) {
    let Ok(info) = state.broker.channel_info(channel.clone()).await else {
        return (0, None, None);
    };
    let Some(last) = info.last else {
        return (info.history_len, None, None);
    };
    let before = Cursor::new(last.epoch, last.offset.saturating_sub(1));
    let time = match state.broker.history(channel.clone(), Since::Cursor(before), 1).await {
        Ok(events) => messages(&events).next().map(|m| m.published_at),
        Err(_) => None,
    };
    (info.history_len, Some(last.to_string()), time)
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    since: Option<String>,
    limit: Option<usize>,
    reverse: Option<String>,
}

/// `GET /channels/{channel}/history?since=&limit=&reverse=` →
/// `{"messages":[envelope,…],"next":"<cursor>"|null}` (and `"gap":true` when `since` is older
/// than history or of another epoch). Forwards: the messages after `since` (default: from the
/// earliest), oldest first. With `reverse=true`: the messages before `since` (default: from the
/// newest), newest first. `next` is the `since` of the next page.
async fn history(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(channel) = path.map_err(|e| ApiError::bad_request("bad_channel", e.body_text()))?;
    let channel = ChannelName::new(&channel)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_request", e.body_text()))?;
    let limit = page_limit(&state, query.limit)?;
    let reverse = matches!(query.reverse.as_deref(), Some("true" | "1" | "yes"));
    let (gap, page, more) = if reverse {
        // History is bounded (history_size): read it whole, then take the page before `since`.
        let before = query.since.as_deref().map(Cursor::parse).transpose()?;
        let _forget = crate::transport::request::ForgetUnused(&state, std::slice::from_ref(&channel));
        let events = state
            .broker
            .history(channel.clone(), Since::Earliest, usize::MAX)
            .await?;
        let all: Vec<_> = messages(&events).collect();
        let newest_epoch = all.last().map(|m| m.cursor.epoch);
        let other_epoch = before.is_some_and(|b| Some(b.epoch) != newest_epoch && !all.is_empty());
        let end = match before {
            Some(b) if !other_epoch => all.partition_point(|m| m.cursor.offset < b.offset),
            _ => all.len(),
        };
        // Messages before `since` that history no longer holds: the page cannot reach them.
        let trimmed = before.is_some_and(|b| {
            !other_epoch && end == 0 && b.offset > 1 && all.first().is_none_or(|m| m.cursor.offset > 1)
        });
        let gap = other_epoch || trimmed;
        let start = end.saturating_sub(limit);
        let page: Vec<_> = all[start..end].iter().rev().cloned().collect();
        (gap, page, start > 0)
    } else {
        let text = query.since.as_deref().unwrap_or("earliest");
        let since = Position::resolve(Some(text), std::slice::from_ref(&channel))?[0];
        let _forget = crate::transport::request::ForgetUnused(&state, std::slice::from_ref(&channel));
        // One more than the page, to know whether there is a next one; and one more for a gap
        // notice, which is no message.
        let events = state.broker.history(channel.clone(), since, limit + 2).await?;
        let gap = events.iter().any(|e| matches!(e, Event::Gap(_)));
        let mut page: Vec<_> = messages(&events).collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (gap, page, more)
    };
    let next = more.then(|| page.last().map(|m| m.cursor.to_string())).flatten();
    let mut out = Vec::with_capacity(64 + page.len() * 128);
    out.extend_from_slice(b"{\"messages\":[");
    for (i, msg) in page.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&crate::transport::envelope::envelope(msg));
    }
    out.extend_from_slice(b"],\"next\":");
    out.extend_from_slice(json!(next).to_string().as_bytes());
    if gap {
        out.extend_from_slice(b",\"gap\":true");
    }
    out.push(b'}');
    Ok(([(http::header::CONTENT_TYPE, "application/json")], out).into_response())
}

/// The messages among `events`.
fn messages(events: &[Event]) -> impl Iterator<Item = std::sync::Arc<comet_core::Message>> + '_ {
    events.iter().filter_map(|e| match e {
        Event::Message(msg) => Some(std::sync::Arc::clone(msg)),
        _ => None,
    })
}
