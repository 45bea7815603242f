//! Long-lived responses end when the caller's credential expires: an SSE, stream or iframe body
//! simply ends at `exp` (plus `jwt_leeway_secs`), between two chunks. The client reconnects as it
//! always does, and a client whose token has expired gets `401` then (for `EventSource`, a
//! non-200 answer ends reconnection: HTML Standard §9.2.3). WebSocket sessions watch the same
//! deadline themselves and close with 1008.

use std::future::Future;

use axum::body::Body;
use axum::response::Response;
use futures_util::StreamExt;

use super::Identity;

/// Resolves when `identity` expires; never for credentials that do not expire.
///
/// # Cancel safety
/// Cancel-safe: it only sleeps.
pub(crate) fn expired(identity: &Identity) -> impl Future<Output = ()> + Send + 'static {
    let remaining = identity.remaining();
    async move {
        match remaining {
            Some(left) => tokio::time::sleep(left).await,
            None => std::future::pending().await,
        }
    }
}

/// `response` with a body that ends when `identity` expires (unchanged if it never does).
/// Dropping the inner body unsubscribes, as when the client goes away.
pub(crate) fn end_at_expiry(response: Response, identity: &Identity) -> Response {
    if identity.expires_at().is_none() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().take_until(expired(identity));
    Response::from_parts(parts, Body::from_stream(stream))
}
