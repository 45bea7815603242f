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
        let sleep = tokio::time::sleep(timeout);
        tokio::pin!(sleep);
        loop {
            let orders = async {
                match &mut ordered {
                    Some(ordered) => ordered.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = set.recv(&mut events, max) => {}
                () = &mut sleep => {}
                () = token.cancelled() => {}
                orders = orders => {
                    let mine: Vec<Order> = orders
                        .into_iter()
                        .filter(|order| match order {
                            Order::Disconnect { .. } => true,
                            Order::Unsubscribe(channel) => set.contains(channel),
                        })
                        .collect();
                    if mine.is_empty() {
                        continue; // an unsubscribe of a channel this poll does not hold
                    }
                    return Ok(ordered_answer(&set, &mine, req.poller.as_deref()));
                }
            }
            break;
        }
    }
    Ok(json_answer(&events, &set, max, req.poller.as_deref()))
}

/// The answer of a held long poll that the server API gave orders (docs/protocol.md "Server
/// API"): nothing, its cursor, and `"disconnect":{"reconnect":…}` or `"unsubscribed":[…]`.
fn ordered_answer(set: &comet_core::SubscriptionSet, orders: &[Order], client: Option<&str>) -> Response {
    let mut body = serde_json::json!({
        "messages": [],
        "cursor": super::request::position_text(set),
    });
    let reconnect = orders.iter().find_map(|order| match order {
        Order::Disconnect { reconnect } => Some(*reconnect),
        Order::Unsubscribe(_) => None,
    });
    if let Some(reconnect) = reconnect {
        body["disconnect"] = serde_json::json!({"reconnect": reconnect});
    } else {
        let channels: Vec<&str> = orders
            .iter()
            .filter_map(|order| match order {
                Order::Unsubscribe(channel) => Some(channel.as_str()),
                Order::Disconnect { .. } => None,
            })
            .collect();
        body["unsubscribed"] = channels.into();
    }
    if let Some(client) = client {
        body["client"] = client.into();
    }
    axum::response::IntoResponse::into_response(axum::Json(body))
}
