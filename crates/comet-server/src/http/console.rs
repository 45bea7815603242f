//! The admin console (docs/protocol.md "Admin console"): a page at `/admin`, embedded in the
//! binary from web/admin/, and the routes behind `admin_api_key` that only it needs: the nodes'
//! numbers, a publish as the back-end, a channel's live tail and its presence. The page holds no
//! secret and is served without the key; every call it makes carries
//! `Authorization: Bearer <admin_api_key>`.

use axum::Router;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use comet_core::{ChannelName, Position};
use http::{StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Identity;
use crate::error::ApiError;
use crate::publish::{Publisher, publish_one};
use crate::state::AppState;
use crate::transport::request::{SubQuery, SubRequest};

const INDEX: &str = include_str!("../../../../web/admin/index.html");
const SCRIPT: &str = include_str!("../../../../web/admin/admin.js");
const STYLE: &str = include_str!("../../../../web/admin/admin.css");

/// The page's own files and nothing else: no inline script or style, no other origin, no
/// framing (the console acts with the admin key).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's files, served without the key (they hold no secret).
pub(super) fn pages() -> Router<AppState> {
    Router::new()
        .route("/admin", get(index))
        .route("/admin/", get(index))
        .route(
            "/admin/admin.js",
            get(|| async { file("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/admin/admin.css",
            get(|| async { file("text/css; charset=utf-8", STYLE) }),
        )
}

/// With `admin_api_key` unset: the console's paths answer `404` saying how to turn it on.
pub(super) fn off() -> Router<AppState> {
    let off = || async {
        ApiError::not_found("the admin console is off: set admin_api_key (docs/protocol.md \"Admin console\")")
    };
    Router::new()
        .route("/admin", get(off))
        .route("/admin/", get(off))
        .route("/admin/admin.js", get(off))
        .route("/admin/admin.css", get(off))
}

/// The console's data routes; the caller puts them behind the key.
pub(super) fn routes(state: &AppState) -> Router<AppState> {
    let message_limit = crate::auth::policy::largest_message_size(state.auth.config()).saturating_add(1);
    Router::new()
        .route("/admin/nodes", get(nodes))
        .route(
            "/admin/channels/{channel}/publish",
            post(publish).layer(DefaultBodyLimit::max(message_limit)),
        )
        .route("/admin/channels/{channel}/tail", get(tail))
        .route("/admin/channels/{channel}/presence", get(presence))
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /admin`: the page, with a policy that lets it load only its own files.
async fn index() -> Response {
    let mut res = file("text/html; charset=utf-8", INDEX);
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, http::HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, http::HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, http::HeaderValue::from_static("no-referrer"));
    res
}

#[derive(Debug, Deserialize)]
struct NodesQuery {
    since: Option<u64>,
}

/// `GET /admin/nodes?since=` → `{"node","nodes":[{"node","version","started_at","uptime_secs",
/// "live","samples":[…]}]}`: this node first, then the others that told their numbers within
/// 30 seconds; samples of the last 15 minutes, or only those after `since` (ms since the epoch).
async fn nodes(
    State(state): State<AppState>,
    query: Result<Query<NodesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(
            "bad_request",
            format!("since must be milliseconds since the Unix epoch: {}", e.body_text()),
        )
    })?;
    Ok(axum::Json(state.nodes.to_json(query.since)).into_response())
}

fn channel_of(path: Result<Path<String>, PathRejection>) -> Result<ChannelName, ApiError> {
    let Path(channel) = path.map_err(|e| ApiError::bad_request("bad_channel", e.body_text()))?;
    Ok(ChannelName::new(&channel)?)
}

#[derive(Debug, Deserialize)]
struct PublishQuery {
    event: Option<String>,
}

/// `POST /admin/channels/{channel}/publish[?event=]`: the body is the message, published as
/// the back-end (the publish API key's rights: no grant, hook or rate limit applies) →
/// `201 {"channel","id"}`.
async fn publish(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<PublishQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let channel = channel_of(path)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_request", e.body_text()))?;
    let largest = crate::auth::policy::largest_message_size(state.auth.config());
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large("message", largest + 1, largest)
        } else {
            ApiError::bad_request("bad_body", e.body_text())
        }
    })?;
    let by = Publisher {
        identity: &Identity::BACKEND,
        client: None,
        websocket: false,
        client_id: None,
    };
    let outcome = publish_one(&state, by, channel.as_str(), query.event.as_deref(), body, None).await?;
    let body = json!({"channel": channel.as_str(), "id": outcome.cursor.to_string()});
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
struct TailQuery {
    since: Option<String>,
}

/// `GET /admin/channels/{channel}/tail[?since=]`: the channel's messages as an HTTP stream
/// (`application/x-ndjson`, one envelope per line, as `?transport=stream` sends them), from
/// the live edge or after `since` (a cursor or `earliest`), whatever the namespace's rules.
/// The console reads it with `fetch`, which can send the key in a header (an `EventSource`
/// cannot). It counts as a stream subscriber in the metrics and the channel's subscribers.
async fn tail(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<TailQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let channel = channel_of(path)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_request", e.body_text()))?;
    let since = Position::resolve(query.since.as_deref(), std::slice::from_ref(&channel))?;
    let sub = SubRequest {
        channels: vec![channel],
        since,
        query: SubQuery::default(),
        client: None,
        expires: None,
        poller: None,
        member: None,
        user: None,
        hooked: None,
    };
    crate::transport::stream::handle(state, sub).await
}

/// `GET /admin/channels/{channel}/presence` → `{"channel","clients":[…]}` as the public
/// `GET /channels/{channel}/presence` answers, without asking the hooks; `400 presence_off`
/// where the namespace does not track presence.
async fn presence(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let channel = channel_of(path)?;
    let clients = crate::transport::presence::list(&state, &channel).await?;
    Ok(axum::Json(json!({"channel": channel.as_str(), "clients": clients})).into_response())
}
