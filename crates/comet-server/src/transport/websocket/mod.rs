//! WebSocket (RFC 6455): `GET /sub/{channels}` or `GET /ws` with an upgrade; JSON commands and
//! messages in text frames (docs/protocol.md "ws").
//!
//! - Handshake (RFC 6455 §4.2): a `Sec-WebSocket-Version` other than 13 gets
//!   `426 Upgrade Required` with `Sec-WebSocket-Version: 13` (§4.4); the subprotocol `comet.v1`
//!   is selected when offered (§4.2.2, §1.9); permessage-deflate (RFC 7692) is accepted when
//!   offered and `ws_compression` is on. The URL's channels are subscribed before the `101`, so
//!   a broker failure is still an HTTP error.
//! - Over HTTP/2 (RFC 8441): an extended CONNECT with `:protocol = websocket` (§4) on the same
//!   paths, answered `200` instead of `101`, without `Sec-WebSocket-Key`/`Accept` (§5); the
//!   server advertises `SETTINGS_ENABLE_CONNECT_PROTOCOL` (§3, conn/mod.rs). The WebSocket then
//!   runs on that one stream with the same frames, limits, close codes and session. A CONNECT
//!   with another `:protocol`, or none, is `400`.
//! - One task per connection runs one `select!` over the subscriptions and, behind one gate
//!   (gate.rs: polled only when one of them woke the task), the peer's frames, one timer (ping or
//!   credential expiry, the sooner) and shutdown (or `AppState::disconnect_all`). Everything
//!   ready is written as one batch, and nothing more is read from the subscriptions until it is
//!   flushed: a slow peer falls behind in history (then gets a gap notice), not in memory.
//! - Keep-alive: a ping (§5.5.2) every `ws_ping_interval_secs`; a peer that has not answered
//!   within `ws_pong_timeout_secs` is closed with 4001.
//! - Close codes (§7.4.1): 1001 on shutdown or `disconnect_all`, 1002 protocol error, 1007 text
//!   that is not UTF-8, 1008 a bad `auth` token or an expired one (policy), 1009 a message over
//!   `ws_max_message_size`, 4000 a peer that takes no bytes for a ping interval plus a pong
//!   timeout (slow consumer; it reconnects with its cursor).
//! - Auth (docs/protocol.md "Authentication"): the upgrade's credential and the URL's channels
//!   are checked before the `101`; each `subscribe`/`publish` is checked against the session's
//!   identity (`error` frame `unauthorized`/`forbidden`, the socket stays open); an `auth`
//!   command replaces the identity (a refresh), and the session closes with 1008 when it expires.
//!
//! `handshake` answers the opening handshake; `session` is one connection's task; `socket`
//! (with `direct`, the plain-TCP writes) wraps the WebSocket library; `protocol` is the JSON;
//! `config` the settings.

mod commands;
mod config;
mod direct;
mod handshake;
mod protocol;
mod session;
mod socket;

pub use self::config::WsConfig;
#[doc(hidden)]
pub use self::protocol::parse_for_fuzzing as parse_command_for_fuzzing;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use comet_core::ChannelSubscription;
use http::header::{SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio_util::sync::CancellationToken;

use self::commands::SessionPresence;
use self::handshake::Handshake;
use self::session::Session;
use self::socket::{Ending, GOING_AWAY, HOOK_REFUSED, Incoming, SLOW_CONSUMER, TRY_AGAIN_LATER};
use super::request::SubRequest;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::io::hold::{ConnectionHold, StreamHold, UserHold};
use crate::kind::Kind;
use crate::state::AppState;

/// The subprotocol of docs/protocol.md "ws".
const SUBPROTOCOL: &str = "comet.v1";

/// Handles a WebSocket upgrade: answers the handshake and spawns the connection's task.
pub(crate) async fn handle(state: AppState, req: SubRequest, identity: Identity, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    if let Err(refusal) = preflight(&parts) {
        return refusal;
    }
    let subprotocol = offers_subprotocol(&parts.headers);
    let client = req.client;
    let accepted = async {
        let handshake = Handshake::from_parts(&mut parts, &state.config.ws()).await?;
        // In the presence of the URL's channels that track it before the `101`, as subscribed.
        let mut presence = SessionPresence {
            client: req.hooked.clone(),
            ..SessionPresence::default()
        };
        presence.holds =
            super::presence::join_all(&state, &req.channels, &mut presence.client, &identity, Kind::WebSocket).await?;
        let mut subs = Vec::with_capacity(req.channels.len());
        for (channel, since) in req.channels.into_iter().zip(req.since) {
            let mut sub = state.broker.subscribe(channel, since).await?;
            if let Some(client) = &presence.client {
                sub.ignore_notices_of(std::sync::Arc::clone(client));
            }
            subs.push(sub);
        }
        let (response, accepted) = handshake.accept(&state.config.ws())?;
        Ok::<_, ApiError>((response, accepted, subs, presence))
    };
    let (mut response, accepted, subs, presence) = match accepted.await {
        Ok(ok) => ok,
        Err(e) => return e.into_response(),
    };
    if subprotocol {
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    }
    // Taken now, so a `disconnect_all` after this answer still reaches the connection.
    let token = state.connection_token();
    // The TCP connection stays counted (max_connections, per IP) while the session lives, and
    // so does its HTTP/2 stream (io/hold.rs `StreamHold`).
    let hold = (
        parts.extensions.get::<ConnectionHold>().cloned(),
        parts.extensions.get::<StreamHold>().cloned(),
    );
    // Everything the task needs to start, boxed: kept in the task's future, it would stay there
    // (about 330 bytes) for the life of the connection.
    let start = Box::new(Start {
        state,
        token,
        identity,
        user: parts.extensions.get::<UserHold>().cloned(),
        client,
        accepted,
        subs,
        presence,
    });
    tokio::spawn(async move {
        let _hold = hold;
        // In a block, so that nothing of `start` outlives it in the task's future.
        let (mut session, subs) = {
            let start: Box<Start> = start;
            let start = *start;
            // `let … else`, not `if let`: the latter keeps the `Option<Socket>` temporary alive
            // beside the session for the whole connection.
            let Some(socket) = start.accepted.open().await else {
                return;
            };
            let mut session = Session::new(start.state, start.token, socket, start.identity, start.client);
            session.user = start.user;
            session.presence = start.presence.boxed();
            (session, start.subs)
        };
        // The session lives here and `run` borrows it: a `run(self)` future would hold the
        // session twice (the argument and its local), 800 bytes more per idle socket.
        let ending = session.run(subs).await;
        Box::pin(session.finish(ending)).await;
    });
    response
}

/// Answers a WebSocket upgrade that the connect hook refused (docs/protocol.md "Hooks"): the
/// handshake completes and the socket is closed at once, with 4403 and the back-end's message
/// for a refusal, or 1013 (try again later, RFC 6455 §7.4.1) when the hook failed, so a
/// browser learns why. A request that is no valid upgrade gets the HTTP error instead.
pub(crate) async fn refuse(state: AppState, request: Request, refusal: &ApiError) -> Response {
    let (mut parts, _body) = request.into_parts();
    if preflight(&parts).is_err() {
        return refusal.clone().into_response();
    }
    let subprotocol = offers_subprotocol(&parts.headers);
    let accepted = async {
        let handshake = Handshake::from_parts(&mut parts, &state.config.ws()).await?;
        handshake.accept(&state.config.ws())
    };
    let Ok((mut response, accepted)) = accepted.await else {
        return refusal.clone().into_response();
    };
    if subprotocol {
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    }
    let code = if refusal.status == StatusCode::SERVICE_UNAVAILABLE {
        TRY_AGAIN_LATER
    } else {
        HOOK_REFUSED
    };
    // A close frame's reason is at most 123 bytes (RFC 6455 §5.5.1).
    let mut reason = refusal.message.clone();
    if reason.len() > 123 {
        let mut end = 120;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
        while reason.len() > 123 {
            reason.pop();
        }
    }
    let pong_timeout = state.config.ws().pong_timeout;
    tokio::spawn(async move {
        let _hold = (
            parts.extensions.get::<ConnectionHold>().cloned(),
            parts.extensions.get::<StreamHold>().cloned(),
        );
        if let Some(socket) = accepted.open().await {
            socket.finish(Ending::Close(code, reason.into()), pong_timeout).await;
        }
    });
    response
}

/// What a WebSocket's task starts from (see [`handle`]).
struct Start {
    state: AppState,
    token: CancellationToken,
    identity: Identity,
    user: Option<UserHold>,
    client: Option<std::net::IpAddr>,
    accepted: socket::Accepted,
    subs: Vec<ChannelSubscription>,
    presence: SessionPresence,
}

/// What every WebSocket handshake is checked for before yawc sees it: a CONNECT must be an
/// RFC 8441 one, and the version must be 13 (`426` with `Sec-WebSocket-Version: 13` otherwise,
/// RFC 6455 §4.4).
#[allow(clippy::result_large_err)]
fn preflight(parts: &http::request::Parts) -> Result<(), Response> {
    if parts.method == http::Method::CONNECT && !is_websocket_connect(&parts.extensions) {
        return Err(ApiError::bad_request(
            "bad_transport",
            "CONNECT is only for WebSockets over HTTP/2: an extended CONNECT with :protocol = websocket (RFC 8441 §4)",
        )
        .into_response());
    }
    if parts
        .headers
        .get(SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        let mut res = ApiError {
            status: StatusCode::UPGRADE_REQUIRED,
            code: "bad_transport",
            message: "WebSocket needs Sec-WebSocket-Version: 13 (RFC 6455 §4.4)".into(),
            retry_after: None,
        }
        .into_response();
        res.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Err(res);
    }
    Ok(())
}

/// `GET {ws_echo}` (off unless `ws_echo` names a path): a WebSocket that sends every text and
/// binary message back, through the same wrapper, limits (`ws_max_message_size`, UTF-8, close
/// codes) and shutdown handling as subscriber sockets, so a conformance suite such as the
/// Autobahn fuzzing client can test them. No Comet protocol: no commands, no pings of ours.
pub(crate) async fn echo(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    if let Err(refusal) = preflight(&parts) {
        return refusal;
    }
    let accepted = async {
        let handshake = Handshake::from_parts(&mut parts, &state.config.ws()).await?;
        handshake.accept(&state.config.ws())
    };
    let (response, accepted) = match accepted.await {
        Ok(ok) => ok,
        Err(e) => return e.into_response(),
    };
    let token = state.connection_token();
    let hold = (
        parts.extensions.get::<ConnectionHold>().cloned(),
        parts.extensions.get::<StreamHold>().cloned(),
        parts.extensions.get::<UserHold>().cloned(),
    );
    tokio::spawn(async move {
        let _hold = hold;
        let Some(mut socket) = accepted.open().await else {
            return;
        };
        let config = state.config.ws();
        let stall = config.stall();
        let ending = loop {
            if socket.has_queued() {
                tokio::select! {
                    biased;
                    () = token.cancelled() => break Ending::Close(GOING_AWAY, "server going away".into()),
                    written = socket.flush() => if written.is_err() { break Ending::Answered },
                    () = tokio::time::sleep(stall) => break Ending::Close(SLOW_CONSUMER, "slow consumer".into()),
                }
            }
            tokio::select! {
                biased;
                () = token.cancelled() => break Ending::Close(GOING_AWAY, "server going away".into()),
                incoming = socket.recv() => match incoming {
                    Incoming::Text(text) => socket.queue_text(text),
                    Incoming::Binary(data) => socket.queue_binary(data),
                    Incoming::Pong => {}
                    Incoming::End(ending) => break ending,
                },
            }
        };
        socket.finish(ending, config.pong_timeout).await;
    });
    response
}

/// Whether a CONNECT request carries `:protocol = websocket` (RFC 8441 §4; hyper puts the
/// pseudo-header in the request's extensions).
fn is_websocket_connect(extensions: &http::Extensions) -> bool {
    extensions
        .get::<hyper::ext::Protocol>()
        .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// Whether the client offers `comet.v1`: `Sec-WebSocket-Protocol` is a comma-separated list and
/// may be repeated (RFC 6455 §4.1, §11.3.4).
fn offers_subprotocol(headers: &HeaderMap) -> bool {
    handshake::list_items(headers, SEC_WEBSOCKET_PROTOCOL).any(|p| p == SUBPROTOCOL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subprotocol_offers() {
        let mut h = HeaderMap::new();
        assert!(!offers_subprotocol(&h));
        h.append(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("chat, superchat"));
        assert!(!offers_subprotocol(&h));
        h.append(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("x,comet.v1 "));
        assert!(offers_subprotocol(&h));
    }
}
