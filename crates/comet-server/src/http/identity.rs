//! The [`Identity`] extractor: every route that publishes or subscribes takes one (docs/protocol.md
//! "Authentication"). A request from a page whose `Origin` is not allowed is `403`, a credential
//! that is given but not valid `401`, before the handler runs; no credential is the anonymous
//! identity.

use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::auth::Identity;
use crate::error::ApiError;
use crate::state::AppState;

impl FromRequestParts<AppState> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        crate::auth::origin::check(state.auth.config(), &parts.headers, &parts.uri)?;
        Ok(state.auth.identify(parts, state.broker.shared_store()).await?)
    }
}
