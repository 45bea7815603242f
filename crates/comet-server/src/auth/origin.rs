//! `allowed_origins`: which web pages may use Comet from a browser.
//!
//! - Requests that publish or subscribe (WebSocket upgrades included, before the `101`) and
//!   carry an `Origin` (RFC 6454 §7) that is not allowed get `403 forbidden_origin`. This stops
//!   cross-site WebSocket hijacking: browsers do not apply CORS to WebSocket, but always send
//!   `Origin` (RFC 6455 §10.2). A request without `Origin` (curl, back-ends) is not affected, and
//!   a same-origin one (its `Origin` names the `Host` it was sent to) is always allowed.
//! - CORS for every route follows the same list (http/cors.rs).
//!
//! - A credential from the `token_cookie` cookie is honoured only on requests a browser made for
//!   a page of this server's own origin or of a listed one: `Origin` absent (and `Sec-Fetch-Site`
//!   absent, `same-origin` or `none`), same-origin, or listed. A cookie that another site's page
//!   makes the browser send (a cross-site WebSocket, a form POST) is ignored, so the request is
//!   anonymous: no cross-site WebSocket hijacking or CSRF with the default settings.
//!
//! An empty list (the default) allows every origin, as before this setting existed, but without
//! the cookie; CORS then answers `Access-Control-Allow-Origin: *` without credentials.

use http::{HeaderMap, HeaderValue, Uri, header};

use super::AuthConfig;
use super::error::AuthError;

/// Whether `origin` (an `Origin` header value) may use this server.
fn allowed(config: &AuthConfig, origin: &str, host: Option<&str>) -> bool {
    config.allowed_origins.is_empty() || listed(&config.allowed_origins, origin) || same_origin(origin, host)
}

fn listed(origins: &[String], origin: &str) -> bool {
    origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
}

/// Whether `origin` names the authority the request was sent to (`host`): `Host` in HTTP/1.1,
/// `:authority` in HTTP/2 (RFC 9113 §8.3.1). Default ports count as absent on both sides
/// (RFC 6454 §6.1 serialises an origin without its scheme's default port).
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let (Some((scheme, authority)), Some(host)) = (origin.split_once("://"), host) else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => ":80",
        "https" | "wss" => ":443",
        _ => "",
    };
    let strip = |a: &'_ str| -> String {
        let a = a.to_ascii_lowercase();
        match a.strip_suffix(default_port) {
            Some(short) if !default_port.is_empty() => short.to_owned(),
            _ => a,
        }
    };
    strip(authority) == strip(host)
}

/// The authority a request was sent to: `Host`, else (HTTP/2) the URI's `:authority`.
fn request_authority(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
}

/// Checks the `Origin` of a request that publishes or subscribes.
///
/// # Errors
/// [`AuthError::Origin`] (403) for a disallowed origin, `null` included.
pub(crate) fn check(config: &AuthConfig, headers: &HeaderMap, uri: &Uri) -> Result<(), AuthError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = String::from_utf8_lossy(origin.as_bytes());
    if allowed(config, &origin, request_authority(headers, uri).as_deref()) {
        Ok(())
    } else {
        Err(AuthError::Origin(origin.into_owned()))
    }
}

/// Whether a cookie credential counts on this request (see the module docs): the page that
/// made the browser send it is of this server's origin or of a listed one. Requests without
/// `Origin` are browsers' own navigations and same-origin `GET`s, or not from a browser at all,
/// unless `Sec-Fetch-Site` (Fetch Metadata) says another site asked for them.
pub(crate) fn cookie_allowed(origins: &[String], headers: &HeaderMap, uri: &Uri) -> bool {
    match headers.get(header::ORIGIN) {
        Some(origin) => {
            let origin = String::from_utf8_lossy(origin.as_bytes());
            listed(origins, &origin) || same_origin(&origin, request_authority(headers, uri).as_deref())
        }
        None => !matches!(
            headers.get("sec-fetch-site").map(HeaderValue::as_bytes),
            Some(b"cross-site" | b"same-site")
        ),
    }
}

/// Checks that every entry is an origin: `scheme://host[:port]`, nothing more.
///
/// # Errors
/// A message naming the bad entry.
pub(crate) fn validate(config: &AuthConfig) -> Result<(), String> {
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
        let mut config = crate::config::Config::default().auth();
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
        // Default ports, case, and HTTP/2's :authority (no Host).
        assert!(same_origin("https://Comet.example", Some("comet.example:443")));
        assert!(same_origin("http://comet.example:80", Some("comet.example")));
        assert!(!same_origin("https://comet.example", Some("comet.example:80")));
        assert!(!same_origin("https://comet.example.evil", Some("comet.example")));
        let uri: Uri = "https://comet.example:8443/sub/a".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://comet.example:8443"));
        assert!(
            check(&config, &headers, &uri).is_ok(),
            ":authority counts as the request's host"
        );
        assert!(cookie_allowed(&[], &headers, &uri));
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!cookie_allowed(&[], &headers, &uri));
        assert!(cookie_allowed(&["https://evil.example".into()], &headers, &uri));
        headers.remove(header::ORIGIN);
        assert!(
            cookie_allowed(&[], &headers, &uri),
            "no Origin: not a cross-site browser request"
        );
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!cookie_allowed(&[], &headers, &uri));
        headers.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(cookie_allowed(&[], &headers, &uri));
        for bad in ["*", "https://x/", "example.com", "https://*.x"] {
            config.allowed_origins = vec![bad.into()];
            assert!(validate(&config).is_err(), "{bad}");
        }
    }
}
