//! Long polling: like [`poll`](super::poll), but when nothing is newer than the cursor the
//! request is held until a message arrives, the timeout passes (then an empty answer), or the
//! server shuts down (an empty answer at once). What arrived between two polls comes back
//! together, in order, because the subscription resumes from the client's cursor.

use axum::response::Response;
use comet_core::Event;

use super::poll::json_answer;
use super::request::{SubRequest, longpoll_timeout, open};
use crate::error::ApiError;
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
    let mut events: Vec<Event> = Vec::new();
    if set.try_read(&mut events, max) == 0 && !timeout.is_zero() {
        tokio::select! {
            _ = set.recv(&mut events, max) => {}
            () = tokio::time::sleep(timeout) => {}
            () = token.cancelled() => {}
        }
    }
    Ok(json_answer(&events, &set, max, req.poller.as_deref()))
}
