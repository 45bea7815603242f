//! CORS (Fetch Standard §3.2) for every route, from `allowed_origins` (the list auth/origin.rs
//! checks `Origin` against): preflights are answered, `Authorization`, `Content-Type` and
//! `Last-Event-ID` may be sent, and credentials (cookies) are allowed when the origins are
//! listed explicitly. An empty list answers `Access-Control-Allow-Origin: *` without
//! credentials.
//!
//! [`cors_layer`] (tower-http) serves every route hyper serves. The streaming subscriptions that
//! conn/h1.rs writes itself take their fields from [`SimpleCors`] instead: the same fields, made
//! once, where the layer builds a header map and a `Vary` value per request (S5 in
//! bench/RESULTS.md). A test holds the two to the same answers.

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

/// `Vary`, as [`cors_layer`] sends it (tower-http's default: the request fields a preflight
/// answer depends on).
const VARY_LINE: &[u8] = b"vary: origin, access-control-request-method, access-control-request-headers\r\n";

/// The CORS fields of an answer to a request that is not a preflight, as [`cors_layer`] adds
/// them, for HTTP/1.1 heads written without a header map (conn/h1.rs).
#[derive(Debug, Clone)]
pub(crate) struct SimpleCors {
    /// `None`: `Access-Control-Allow-Origin: *` for every request. `Some`: the origins allowed;
    /// a listed `Origin` is echoed, and credentials are allowed.
    origins: Option<Vec<HeaderValue>>,
}

impl SimpleCors {
    /// The fields for `config`'s `allowed_origins`.
    pub(crate) fn new(config: &Config) -> Self {
        let origins = (!config.allowed_origins.is_empty()).then(|| {
            config
                .allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect()
        });
        Self { origins }
    }

    /// Appends the fields for a request with `origin` (its `Origin` field, if any) to `head`,
    /// one `name: value` line (CRLF) each.
    pub(crate) fn write(&self, origin: Option<&HeaderValue>, head: &mut Vec<u8>) {
        head.extend_from_slice(VARY_LINE);
        match &self.origins {
            None => head.extend_from_slice(b"access-control-allow-origin: *\r\n"),
            Some(list) => {
                head.extend_from_slice(b"access-control-allow-credentials: true\r\n");
                if let Some(origin) = origin.filter(|o| list.contains(o)) {
                    head.extend_from_slice(b"access-control-allow-origin: ");
                    head.extend_from_slice(origin.as_bytes());
                    head.extend_from_slice(b"\r\n");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::body::Body;
    use http::{Request, Response};
    use tower::{Layer, ServiceExt};

    use super::*;

    /// The fields `cors_layer` adds to the answer of a `GET` with `origin`, as sorted lines.
    async fn layer_lines(config: &Config, origin: Option<&str>) -> Vec<String> {
        let service = cors_layer(config).layer(tower::service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        }));
        let mut request = Request::get("/sub/a?transport=sse");
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        let response = service.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let mut lines: Vec<String> = response
            .headers()
            .iter()
            .map(|(name, value)| format!("{}: {}", name, value.to_str().unwrap()))
            .collect();
        lines.sort();
        lines
    }

    fn simple_lines(config: &Config, origin: Option<&str>) -> Vec<String> {
        let origin = origin.map(|o| HeaderValue::from_str(o).unwrap());
        let mut head = Vec::new();
        SimpleCors::new(config).write(origin.as_ref(), &mut head);
        let mut lines: Vec<String> = String::from_utf8(head)
            .unwrap()
            .split_terminator("\r\n")
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    /// The streaming subscriptions' CORS fields are the layer's, for any origin and for the
    /// origins listed or not.
    #[tokio::test]
    async fn simple_fields_are_the_layers() {
        let any = Config::default();
        let listed = Config {
            allowed_origins: vec!["https://a.example".into(), "https://b.example:8443".into()],
            ..Config::default()
        };
        for config in [&any, &listed] {
            for origin in [
                None,
                Some("https://a.example"),
                Some("https://b.example:8443"),
                Some("https://c.example"),
            ] {
                let want = layer_lines(config, origin).await;
                assert!(!want.is_empty());
                assert_eq!(
                    simple_lines(config, origin),
                    want,
                    "{:?} {origin:?}",
                    config.allowed_origins
                );
            }
        }
    }
}
