//! Long polling: like [`poll`](super::poll), but when nothing is newer than the cursor the
//! request is held until a message arrives, the timeout passes (then an empty answer), or the
//! server shuts down (an empty answer at once). What arrived between two polls comes back
//! together, in order, because the subscription resumes from the client's cursor.

use axum::response::Response;
use comet_core::Event;

use super::ordered::Ordered;
use super::poll::json_answer;
use super::request::{SubRequest, longpoll_timeout, open};
use crate::error::ApiError;
use crate::io::orders::Order;
use crate::kind::Kind;
use crate::state::AppState;

/// Handles a long poll.
pub(crate) async fn handle(state: AppState, req: SubRequest) -> Result<Response, ApiError> {
    // Held no longer than the token is valid: its next poll needs a valid one.
    let timeout = longpoll_timeout(&state, req.query.timeout.as_deref())?;
    let left = req
        .expires
        .map(|at| at.saturating_duration_since(tokio::time::Instant::now()));
    let timeout = left.map_or(timeout, |left| timeout.min(left));
    let _held = state.limits.longpoll(req.client)?;
    // Dropped after the set, also when the client goes away: channels nobody publishes to are
    // forgotten at once.
    let _forget = super::request::ForgetUnused(&state, &req.channels);
    let mut set = open(&state, &req).await?;
    let _guard = state.metrics.subscriber(Kind::LongPoll);
    let max = state.config.max_batch;
    let token = state.connection_token();
    let mut ordered = Ordered::register(&state, req.user.as_deref());
    let mut events: Vec<Event> = Vec::new();
    if set.try_read(&mut events, max) == 0 && !timeout.is_zero() {
        let orders = async {
            match &mut ordered {
                Some(ordered) => ordered.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = set.recv(&mut events, max) => {}
            () = tokio::time::sleep(timeout) => {}
            () = token.cancelled() => {}
            // An unsubscribe answers at once too: the next poll is checked again.
            orders = orders => {
                let disconnect = orders.iter().find_map(|order| match order {
                    Order::Disconnect { reconnect } => Some(*reconnect),
                    Order::Unsubscribe(_) => None,
                });
                if let Some(reconnect) = disconnect {
                    return Ok(disconnected(&set, reconnect, req.poller.as_deref()));
                }
            }
        }
    }
    Ok(json_answer(&events, &set, max, req.poller.as_deref()))
}

/// The answer of a held long poll whose user the server API disconnected: nothing, its
/// cursor, and `"disconnect":{"reconnect":…}` (docs/protocol.md "Server API").
fn disconnected(set: &comet_core::SubscriptionSet, reconnect: bool, client: Option<&str>) -> Response {
    let mut body = serde_json::json!({
        "messages": [],
        "cursor": super::request::position_text(set),
        "disconnect": {"reconnect": reconnect},
    });
    if let Some(client) = client {
        body["client"] = client.into();
    }
    axum::response::IntoResponse::into_response(axum::Json(body))
}
