//! The HTTP layer: [`app`], every route of docs/protocol.md as an axum `Router`, with CORS
//! (cors.rs), the credential-redacting request trace (redact.rs) and the body-read deadline
//! around them; the publish API (publish.rs), `POST /tickets` (tickets.rs), the demo
//! (demo.rs) and the small routes (channel info, health, metrics) here. `GET /sub/…` and `/ws`
//! go to the transports' dispatcher (transport/mod.rs).
//!
//! `takeover` tells the connection layer which requests the router takes on a connection of
//! their own, written without hyper (conn/h1.rs).

mod admin;
mod console;
mod cors;
pub(crate) use cors::SimpleCors;
pub mod demo;
mod identity;
mod publish;
mod redact;
mod tickets;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use comet_core::ChannelName;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;
use crate::transport;

/// The router. Auth: the publish and subscribe handlers take an [`Identity`](crate::auth::Identity)
/// (the token check, by the state's [`Auth`](crate::auth::Auth)); CORS and the
/// (credential-redacting) request trace wrap every route.
pub fn app(state: AppState) -> Router {
    // A body limit above the message limit, so oversize messages get our own 413 with a clear
    // message rather than axum's plain-text one; the batch route has its own bound.
    let message_limit = crate::auth::policy::largest_message_size(state.auth.config()).saturating_add(1);
    let batch_limit = state.config.max_batch_body;
    let internal_apart = !state.config.internal_listen.is_empty();
    let router = Router::new()
        .route(
            "/pub/{channel}",
            post(publish::publish).layer(DefaultBodyLimit::max(message_limit)),
        )
        .route(
            "/pub",
            post(publish::publish_batch).layer(DefaultBodyLimit::max(batch_limit)),
        )
        // CONNECT: WebSockets over HTTP/2 (RFC 8441 §4, extended CONNECT with `:protocol`).
        .route(
            "/sub/{channels}",
            get(transport::subscribe).connect(transport::subscribe),
        )
        .route("/ws", get(transport::ws_bare).connect(transport::ws_bare))
        .route("/tickets", post(tickets::issue))
        .route("/channels/{channel}/presence", get(presence))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/", get(demo::index))
        .route("/demo/demo.js", get(demo::script))
        .route("/demo/demo.css", get(demo::style))
        .route("/demo/client-demo.js", get(demo::client_demo))
        .route("/comet.js", get(demo::client_iife))
        .route("/comet.mjs", get(demo::client_esm))
        .fallback(|| async { ApiError::not_found("no such route; see docs/protocol.md") });
    // With `internal_listen`, the operators' routes are served there only.
    let router = if internal_apart {
        router
    } else {
        router.merge(operator_routes(&state))
    };
    let router = match state.config.ws_echo.as_str() {
        "" => router,
        path => router.route(path, get(transport::websocket::echo)),
    };
    let body_limit = std::time::Duration::from_secs(state.config.body_read_timeout_secs);
    let cors = cors::cors_layer(&state.config);
    router
        .with_state(state)
        .layer(cors)
        .layer(redact::trace_layer())
        // Every body must be in within `body_read_timeout_secs` (io/body.rs).
        .layer(tower::util::MapRequestLayer::new(move |req: axum::extract::Request| {
            req.map(|body| crate::io::body::with_deadline(body, body_limit))
        }))
}

/// The router of the streaming subscriptions (stream, iframe, SSE) that the connection layer
/// serves on a connection of their own (conn/h1.rs, [`takeover`]): `GET /sub/{channels}` alone.
/// The request's `request` span (as [`app`]'s trace layer makes it) is put around the handler
/// only, and the CORS fields are written by conn/h1.rs from [`SimpleCors`] (the same as
/// [`app`]'s CORS layer adds). [`app`]'s trace layer would wrap the response body too, so every
/// chunk of a long-lived stream went through it, and its per-request work was a fifth of a
/// connect storm's user-space CPU; the CORS layer's, nine allocations per request of about
/// seventy (bench/RESULTS.md, S5). The handler, its extractors and its answers are [`app`]'s: a
/// request is answered the same by either. conn/h1.rs calls the route's handler directly
/// (`transport::subscribe_direct`, which answers as this router does) and this router for
/// anything else that reaches it.
pub(crate) fn stream_app(state: AppState) -> Router {
    Router::new()
        .route("/sub/{channels}", get(transport::subscribe))
        .fallback(|| async { ApiError::not_found("no such route; see docs/protocol.md") })
        .with_state(state)
}

/// The `request` span of `req` (DEBUG: method, redacted URI, kind of credential), as [`app`]'s
/// trace layer makes it; conn/h1.rs puts [`stream_app`]'s handler in it.
pub(crate) fn request_span(req: &http::Request<axum::body::Body>) -> tracing::Span {
    redact::make_span(req)
}

/// The operators' routes: `/metrics`, `GET /channels/{channel}`, and the server API
/// (admin.rs, behind `admin_api_key`).
fn operator_routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/channels/{channel}", get(channel_info))
        .merge(admin::routes(state))
}

/// The router of `internal_listen` (docs/protocol.md "Server API"): the operators' routes, the
/// health checks, and presence.
pub fn internal_app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/channels/{channel}/presence", get(presence))
        .merge(operator_routes(&state))
        .fallback(|| async { ApiError::not_found("no such route on the internal listener; see docs/protocol.md") })
        .with_state(state)
        .layer(redact::trace_layer())
}

/// A request the router takes on a connection of its own (conn/h1.rs), when it is the first
/// on an HTTP/1.1 connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Takeover {
    /// A streaming subscription (stream, iframe, SSE): its response is written without hyper's
    /// per-connection buffers.
    Stream,
    /// A WebSocket upgrade, on any route (the handler answers non-WebSocket routes with an
    /// error): the session then owns the TCP connection.
    Upgrade,
}

/// Whether `req` (a `GET` without a body) is one the router takes on a connection of its own:
/// the dispatcher's own choice of transport ([`transport::choose`]) on `/sub/…`.
pub(crate) fn takeover<B>(req: &http::Request<B>) -> Option<Takeover> {
    if transport::is_websocket_upgrade(req.headers()) {
        return Some(Takeover::Upgrade);
    }
    if !req.uri().path().starts_with("/sub/") {
        return None;
    }
    let query = req.uri().query().unwrap_or("");
    let named = query.split('&').find_map(|kv| kv.strip_prefix("transport="));
    let kind = transport::choose(req.method(), req.headers(), named).ok()?;
    kind.is_streaming().then_some(Takeover::Stream)
}

async fn channel_info(
    State(state): State<AppState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    // A path that is not UTF-8 once percent-decoded gets our JSON error, not axum's plain text.
    let Path(channel) = path.map_err(|e| ApiError::bad_request("bad_channel", e.body_text()))?;
    let channel = ChannelName::new(&channel)?;
    let users = if crate::auth::policy::presence(state.auth.config(), &channel) {
        Some(transport::presence::distinct_users(
            &transport::presence::list(&state, &channel).await?,
        ))
    } else {
        None
    };
    let info = state.broker.channel_info(channel).await?;
    let mut body = json!({
        "channel": info.channel.as_str(),
        "subscribers": info.subscribers,
        "last_id": info.last.map(|c| c.to_string()),
        "history_len": info.history_len,
    });
    if let Some(users) = users {
        body["users"] = users.into();
    }
    Ok(axum::Json(body).into_response())
}

/// `GET /channels/{channel}/presence`: `{"channel","clients":[{"client","user","info"?,
/// "transport","since"}]}` for a caller who may subscribe to the channel; `400 presence_off`
/// when its namespace does not track presence (docs/protocol.md "Presence").
async fn presence(
    State(state): State<AppState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    head: publish::Head,
    identity: crate::auth::Identity,
) -> Result<Response, ApiError> {
    let Path(channel) = path.map_err(|e| ApiError::bad_request("bad_channel", e.body_text()))?;
    let channel = ChannelName::new(&channel)?;
    // As a subscribe would be: through the connect and subscribe hooks where they are on.
    let (identity, client) = publish::connected(&state, identity, &head).await?;
    let client = client.unwrap_or_else(|| std::sync::Arc::from(""));
    transport::hooked::may_read(&state, &identity, &client, &channel, ("http", false, false)).await?;
    let clients = transport::presence::list(&state, &channel).await?;
    Ok(axum::Json(json!({"channel": channel.as_str(), "clients": clients})).into_response())
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_cancelled() {
        return ApiError::unavailable("shutting down").into_response();
    }
    if state.broker.ready().await {
        "ready\n".into_response()
    } else {
        ApiError::unavailable("broker not reachable").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.encode(),
    )
        .into_response()
}
