//! Publishing one message for a caller: authorization, the publish rate limit, the namespace's
//! message size, the idempotency key, then the broker. Shared by the HTTP publish API
//! (http/publish.rs) and the WebSocket `publish` command (docs/protocol.md "Publish").

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use comet_core::{ChannelName, EventName, Idempotency, Publish};

use crate::auth::{Action, Identity};
use crate::error::ApiError;
use crate::state::AppState;

/// Who publishes: the credential, the client's address (for the anonymous rate limit),
/// whether over a WebSocket (then the namespace's `client_publish` rule applies), and the
/// client id the publish hook is told (a new one when `None`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Publisher<'a> {
    pub(crate) identity: &'a Identity,
    pub(crate) client: Option<IpAddr>,
    pub(crate) websocket: bool,
    pub(crate) client_id: Option<&'a str>,
}

/// A publish's outcome: its cursor, and whether its idempotency key had been seen (so nothing
/// was published and `cursor` is the first publish's).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    pub(crate) cursor: comet_core::Cursor,
    pub(crate) duplicate: bool,
}

/// Checks and publishes one message for `by`, at most once per `key` (an idempotency key) and
/// channel within `idempotency_window_secs`; shared by HTTP and WebSocket publishing.
///
/// # Errors
/// `bad_channel`/`bad_event` for names, `bad_idempotency_key`, `unauthorized`/`forbidden`
/// (auth), `rate_limited` (`publishes_per_sec`, with `retry_after`), the publish hook's
/// refusal or `hook_unavailable`, `too_large` (the namespace's `max_message_size`), `not_utf8`,
/// or the broker's error.
pub(crate) async fn publish_one(
    state: &AppState,
    by: Publisher<'_>,
    channel: &str,
    event: Option<&str>,
    data: Bytes,
    key: Option<&str>,
) -> Result<Outcome, ApiError> {
    let channel = ChannelName::new(channel)?;
    let identity = by.identity;
    let config = state.auth.config();
    let hooked = state.hooks.publish_on(config, &channel, identity);
    // What the publish hook allows is allowed, whatever the namespace says (docs/protocol.md
    // "Hooks"); it is asked after the rate limit, so a flood does not reach the back-end.
    if hooked {
        // The namespace's `client_publish = false` still holds over WebSocket.
        if by.websocket && !identity.is_backend() && !crate::auth::policy::client_publish(config, &channel) {
            return Err(crate::auth::AuthError::Forbidden {
                action: Action::Publish,
                channel: channel.to_string(),
                why: "this namespace does not allow publishing over WebSocket",
            }
            .into());
        }
    } else {
        identity.authorize(config, Action::Publish, &channel, by.websocket)?;
    }
    state
        .limits
        .publish(crate::limits::Account::of(identity, by.client).as_ref())?;
    let event = event.map(EventName::new).transpose()?;
    let data = if hooked {
        let id = by.client_id.map_or_else(crate::client_id::next, std::sync::Arc::from);
        let event = event.as_ref().map(EventName::as_str);
        let transport = if by.websocket { "ws" } else { "http" };
        let max = crate::auth::policy::max_message_size(config, &channel);
        state
            .hooks
            .publish(&id, identity, &channel, (transport, event), data, max)
            .await?
    } else {
        data
    };
    let max = crate::auth::policy::max_message_size(state.auth.config(), &channel);
    if data.len() > max {
        return Err(ApiError::too_large("message", data.len(), max));
    }
    let key = key
        .map(|k| Idempotency::new(k, Duration::from_secs(state.config.idempotency_window_secs)))
        .transpose()
        .map_err(|why| ApiError::bad_request("bad_idempotency_key", why))?;
    let started = Instant::now();
    let msg = Publish { channel, event, data };
    let outcome = match key {
        None => Outcome {
            cursor: state.broker.publish(msg).await?.cursor,
            duplicate: false,
        },
        Some(key) => {
            let published = state.broker.publish_idempotent(msg, key).await?;
            Outcome {
                cursor: published.cursor,
                duplicate: published.duplicate,
            }
        }
    };
    state.metrics.observe_publish(started.elapsed().as_secs_f64());
    Ok(outcome)
}
