//! `allowed_origins`: which web pages may use Comet from a browser.
//!
//! - Requests that publish or subscribe (WebSocket upgrades included, before the `101`) and
//!   carry an `Origin` (RFC 6454 §7) that is not allowed get `403 forbidden_origin`. This stops
//!   cross-site WebSocket hijacking: browsers do not apply CORS to WebSocket, but always send
//!   `Origin` (RFC 6455 §10.2). A request without `Origin` (curl, back-ends) is not affected, and
//!   a same-origin one (its `Origin` names the `Host` it was sent to) is always allowed.
//! - CORS (Fetch Standard §3.2) for every route from the same list: preflights are answered,
//!   `Authorization`, `Content-Type` and `Last-Event-ID` may be sent, and credentials (cookies)
//!   are allowed when the origins are listed explicitly.
//!
//! An empty list (the default) allows every origin, as before this setting existed; CORS then
//! answers `Access-Control-Allow-Origin: *` without credentials.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::AuthError;
use crate::config::Config;

/// How long browsers may cache a preflight answer. Ten minutes.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Whether `origin` (an `Origin` header value) may use this server.
fn allowed(config: &Config, origin: &str, host: Option<&str>) -> bool {
    if config.allowed_origins.is_empty() || config.allowed_origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
        return true;
    }
    // Same origin: the authority of `Origin` is the `Host` the request was sent to.
    let authority = origin.split_once("://").map(|(_, rest)| rest);
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

/// Checks the `Origin` of a request that publishes or subscribes.
///
/// # Errors
/// [`AuthError::Origin`] (403) for a disallowed origin, `null` included.
pub(crate) fn check(config: &Config, headers: &HeaderMap) -> Result<(), AuthError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = String::from_utf8_lossy(origin.as_bytes());
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if allowed(config, &origin, host) {
        Ok(())
    } else {
        Err(AuthError::Origin(origin.into_owned()))
    }
}

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

/// Checks that every entry is an origin: `scheme://host[:port]`, nothing more.
///
/// # Errors
/// A message naming the bad entry.
pub(crate) fn validate(config: &Config) -> Result<(), String> {
    for origin in &config.allowed_origins {
        let ok = origin.split_once("://").is_some_and(|(scheme, rest)| {
            !scheme.is_empty()
                && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                && !rest.is_empty()
                && !rest.contains(['/', '?', '#', '*', ' '])
        }) && HeaderValue::from_str(origin).is_ok();
        if !ok {
            return Err(format!(
                "allowed_origins: {origin:?} is not an origin like \"https://example.com\" (scheme://host[:port], \
                 no path, no wildcard; an empty list allows every origin)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let mut config = Config::default();
        assert!(allowed(&config, "https://evil.example", None));
        config.allowed_origins = vec!["https://good.example".into()];
        assert!(allowed(&config, "https://good.example", None));
        assert!(!allowed(&config, "https://evil.example", Some("comet.example")));
        assert!(!allowed(&config, "null", Some("comet.example")));
        assert!(allowed(
            &config,
            "https://comet.example:8443",
            Some("comet.example:8443")
        ));
        assert!(validate(&config).is_ok());
        for bad in ["*", "https://x/", "example.com", "https://*.x"] {
            config.allowed_origins = vec![bad.into()];
            assert!(validate(&config).is_err(), "{bad}");
        }
    }
}
