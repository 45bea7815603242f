//! The back-end hooks on the subscribing side (docs/protocol.md "Hooks"): the connect hook for
//! a request that opens a subscription (or a WebSocket), and each channel's subscribe hook, or
//! the usual authorization where a channel has none.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use comet_core::ChannelName;
use http::{HeaderMap, Uri};

use crate::auth::{Action, Identity};
use crate::error::ApiError;
use crate::hooks::Caller;
use crate::kind::Kind;
use crate::state::AppState;

/// The client id the hooks are told for a request: a poller's own id when it sends one of our
/// form back (`?client=`), else a new one (presence lists the same).
pub(crate) fn client_for(kind: Kind, asked: Option<&str>) -> Arc<str> {
    match asked {
        Some(id) if matches!(kind, Kind::Poll | Kind::LongPoll) && crate::client_id::is_ours(id) => Arc::from(id),
        _ => crate::client_id::next(),
    }
}

/// Runs the connect hook for a request of `kind` (if it is on for `identity`): the identity
/// to go on with.
///
/// # Errors
/// The back-end's refusal, or `503 hook_unavailable`.
pub(crate) async fn connect(
    state: &AppState,
    (headers, uri, extensions): (&HeaderMap, &Uri, &http::Extensions),
    identity: Identity,
    client: &str,
    kind: Kind,
) -> Result<Identity, ApiError> {
    if !state.hooks.connect_on(&identity) {
        return Ok(identity);
    }
    let caller = Caller {
        client,
        transport: kind.name(),
        remote_addr: extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0),
        headers,
        uri,
        cacheable: matches!(kind, Kind::Poll | Kind::LongPoll),
    };
    state.hooks.connect(state.auth.config(), &caller, identity).await
}

/// Whether `identity` may subscribe to `channel` over `kind`: the subscribe hook's answer
/// where it is on for the channel (what it allows is allowed, whatever the namespace says),
/// else the token and namespace rules.
///
/// # Errors
/// The back-end's refusal or `503 hook_unavailable`; `401`/`403` from the rules.
pub(crate) async fn may_subscribe(
    state: &AppState,
    identity: &Identity,
    client: &str,
    channel: &ChannelName,
    kind: Kind,
) -> Result<(), ApiError> {
    let cacheable = matches!(kind, Kind::Poll | Kind::LongPoll);
    may_read(
        state,
        identity,
        client,
        channel,
        (kind.name(), kind == Kind::WebSocket, cacheable),
    )
    .await
}

/// [`may_subscribe`] for any reader of a channel (`transport`: `http` for `GET …/presence`),
/// over a WebSocket or not, its answer kept (`hook_cache_secs`) or not.
///
/// # Errors
/// As [`may_subscribe`].
pub(crate) async fn may_read(
    state: &AppState,
    identity: &Identity,
    client: &str,
    channel: &ChannelName,
    (transport, websocket, cacheable): (&'static str, bool, bool),
) -> Result<(), ApiError> {
    let config = state.auth.config();
    if state.hooks.subscribe_on(config, channel, identity) {
        state
            .hooks
            .subscribe(client, identity, channel, transport, cacheable)
            .await
    } else {
        Ok(identity.authorize(config, Action::Subscribe, channel, websocket)?)
    }
}
