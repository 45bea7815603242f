//! CORS (Fetch Standard §3.2) for every route, from `allowed_origins` (the list auth/origin.rs
//! checks `Origin` against): preflights are answered, `Authorization`, `Content-Type` and
//! `Last-Event-ID` may be sent, and credentials (cookies) are allowed when the origins are
//! listed explicitly. An empty list answers `Access-Control-Allow-Origin: *` without
//! credentials.

use std::time::Duration;

use http::{HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Config;

/// How long browsers may cache a preflight answer. Ten minutes.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer for `config`.
pub(crate) fn cors_layer(config: &Config) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            "last-event-id".parse().expect("a header name"),
        ])
        .max_age(PREFLIGHT_MAX_AGE);
    if config.allowed_origins.is_empty() {
        return layer.allow_origin(AllowOrigin::any());
    }
    let origins: Vec<HeaderValue> = config
        .allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    layer.allow_origin(AllowOrigin::list(origins)).allow_credentials(true)
}
