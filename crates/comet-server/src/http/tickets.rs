//! `POST /tickets` (docs/protocol.md "Tickets"): a single-use ticket standing in for the
//! caller's token in one request; auth/tickets.rs keeps them.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::{AuthError, Identity};
use crate::error::ApiError;
use crate::state::AppState;

/// `POST /tickets`: a ticket for the caller's token (or the publish API key).
pub(crate) async fn issue(State(state): State<AppState>, identity: Identity) -> Result<Response, ApiError> {
    if identity.is_anonymous() {
        return Err(AuthError::TicketNeedsToken.into());
    }
    let auth = &state.auth;
    state.limits.ticket(&identity)?;
    let ticket = auth.tickets.issue(identity, state.broker.shared_store()).await?;
    Ok(Json(json!({"ticket": ticket, "expires_in": auth.tickets.ttl_secs()})).into_response())
}
