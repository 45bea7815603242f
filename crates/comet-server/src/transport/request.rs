//! What every subscribe handler starts from: the channels of `GET /sub/{channels}`, the
//! client's resume point (`Last-Event-ID`, `?last_event_id=`, `?since=`; docs/protocol.md
//! "Cursors"), and opening the subscriptions.

use std::time::Duration;

use comet_core::{ChannelName, Since, SubscriptionSet};
use http::HeaderMap;
use serde::Deserialize;

use crate::error::ApiError;
use crate::state::AppState;

/// The query string of `GET /sub/{channels}`. Unknown parameters (cache busters) are ignored.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SubQuery {
    pub(crate) transport: Option<String>,
    pub(crate) since: Option<String>,
    pub(crate) last_event_id: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) callback: Option<String>,
    pub(crate) envelope: Option<String>,
    pub(crate) prelude: Option<String>,
    /// A poller's client id, from an earlier answer (presence).
    pub(crate) client: Option<String>,
}

impl SubQuery {
    pub(crate) fn flag(value: Option<&String>) -> bool {
        matches!(value.map(String::as_str), Some("1" | "true" | "yes"))
    }
}

/// What every subscribe handler starts from.
#[derive(Debug)]
pub(crate) struct SubRequest {
    pub(crate) channels: Vec<ChannelName>,
    pub(crate) since: Vec<Since>,
    pub(crate) query: SubQuery,
    /// The client's address, for the per-IP limits (`None` if the accept loop gave none).
    pub(crate) client: Option<std::net::IpAddr>,
    /// When the caller's credential stops being valid (`None`: it does not expire), taken
    /// when the request was checked: a stream ends then, a long poll is held no longer.
    pub(crate) expires: Option<tokio::time::Instant>,
    /// A poller's client id in presence channels, told in the answer (`"client"`).
    pub(crate) poller: Option<std::sync::Arc<str>>,
    /// The client id the back-end's hooks were told, if they were asked: the connection keeps
    /// it (presence lists it, the WebSocket's later hook calls name it).
    pub(crate) hooked: Option<std::sync::Arc<str>>,
    /// The client id this request is in presence under (a stream's, or a poller's): its
    /// subscriptions do not deliver its own joins and leaves.
    pub(crate) member: Option<std::sync::Arc<str>>,
    /// The caller's user (a token's `sub`, or the connect hook's), to whom the server API's
    /// orders go.
    pub(crate) user: Option<std::sync::Arc<str>>,
}

/// Splits and validates `a,b,c`: at least one, at most `max`, no repeats.
pub(crate) fn parse_channels(list: &str, max: usize) -> Result<Vec<ChannelName>, ApiError> {
    let count = list.split(',').count();
    if count > max {
        return Err(ApiError::bad_request(
            "too_many_channels",
            format!("{count} channels in one subscription; at most {max} are allowed"),
        ));
    }
    let mut channels: Vec<ChannelName> = Vec::with_capacity(count);
    let mut seen = std::collections::HashSet::with_capacity(count);
    for name in list.split(',') {
        let name = ChannelName::new(name)?;
        if !seen.insert(name.clone()) {
            return Err(ApiError::bad_request(
                "bad_channel",
                format!("channel {name} is listed twice"),
            ));
        }
        channels.push(name);
    }
    Ok(channels)
}

/// The client's resume point: `Last-Event-ID` (what a reconnecting EventSource sends, so it wins),
/// then `?last_event_id=`, then `?since=`.
pub(crate) fn cursor_text<'a>(headers: &'a HeaderMap, query: &'a SubQuery) -> Result<Option<&'a str>, ApiError> {
    if let Some(value) = headers.get("last-event-id") {
        let text = value
            .to_str()
            .map_err(|_| ApiError::bad_request("bad_cursor", "Last-Event-ID is not visible ASCII"))?;
        if !text.is_empty() {
            return Ok(Some(text));
        }
    }
    Ok(query.last_event_id.as_deref().or(query.since.as_deref()))
}

/// Opens one subscription per channel of `req`.
///
/// # Errors
/// The broker's error (e.g. `503` when its store is down).
pub(crate) async fn open(state: &AppState, req: &SubRequest) -> Result<SubscriptionSet, ApiError> {
    let mut set = SubscriptionSet::with_capacity(req.channels.len());
    for (channel, since) in req.channels.iter().zip(&req.since) {
        let mut sub = state.broker.subscribe(channel.clone(), *since).await?;
        if let Some(member) = &req.member {
            sub.ignore_notices_of(std::sync::Arc::clone(member));
        }
        set.insert(sub);
    }
    Ok(set)
}

/// The resume text of a set: the plain cursor for one channel, the position for several.
pub(crate) fn position_text(set: &SubscriptionSet) -> String {
    match set.members() {
        [one] => one.cursor().to_string(),
        _ => set.position().to_string(),
    }
}

/// When dropped (after the poll's subscriptions), tells the broker to forget those of
/// `channels` that hold nothing ([`comet_core::Broker::forget_if_unused`]): polls of channel
/// names nobody publishes to leave no state (issue 16, point 2).
pub(crate) struct ForgetUnused<'a>(pub(crate) &'a AppState, pub(crate) &'a [ChannelName]);

impl Drop for ForgetUnused<'_> {
    fn drop(&mut self) {
        for channel in self.1 {
            self.0.broker.forget_if_unused(channel);
        }
    }
}

/// Upper bound of a long-poll's `?timeout=`, as a duration.
pub(crate) fn longpoll_timeout(state: &AppState, text: Option<&str>) -> Result<Duration, ApiError> {
    let max = state.config.longpoll_max_timeout_secs;
    let secs = match text {
        None => state.config.longpoll_timeout_secs,
        Some(t) => t.parse::<u64>().map_err(|_| {
            ApiError::bad_request(
                "bad_timeout",
                format!("timeout must be whole seconds from 0 to {max}, got {t:?}"),
            )
        })?,
    };
    Ok(Duration::from_secs(secs.min(max)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_lists() {
        assert_eq!(parse_channels("a,b:c", 4).unwrap().len(), 2);
        assert_eq!(parse_channels("a,b,c", 2).unwrap_err().code, "too_many_channels");
        assert_eq!(parse_channels("a,,b", 4).unwrap_err().code, "bad_channel");
        assert!(parse_channels("a,a", 4).unwrap_err().message.contains("listed twice"));
        assert!(
            parse_channels("a b", 4)
                .unwrap_err()
                .message
                .contains("invalid byte 0x20")
        );
    }
}
