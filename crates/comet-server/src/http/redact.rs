//! Secrets stay out of logs: the request-trace layer records the method, the path and a query
//! whose `token`, `ticket` and `access_token` values are replaced by `[redacted]`, plus the kind
//! of credential (never its value); headers are not recorded at all. Auth failures are logged
//! with their reason only.

use axum::body::Body;
use http::{Request, Uri};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::TraceLayer;

/// Query parameters whose values are credentials.
const SECRET_PARAMS: [&str; 3] = ["token", "ticket", "access_token"];

/// `uri` as logged: path and query, with credential values replaced by `[redacted]`.
pub(crate) fn redact_uri(uri: &Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            // Matched as the query parser reads it (`tok%65n` is `token`), so what
            // authenticates is what is redacted.
            if is_secret(name) {
                format!("{name}=[redacted]")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// Whether a raw query key names a credential once decoded as `application/x-www-form-urlencoded`
/// (how [`credential`](super::credential) reads the query).
fn is_secret(raw: &str) -> bool {
    if SECRET_PARAMS.contains(&raw) {
        return true;
    }
    if !raw.contains(['%', '+']) {
        return false;
    }
    form_urlencoded::parse(raw.as_bytes()).any(|(name, _)| SECRET_PARAMS.contains(&name.as_ref()))
}

/// Which credential a request carries, for the log: `bearer`, `basic`, `cookie` or `none`
/// (query credentials show in the redacted URI).
fn credential_kind(req: &Request<Body>) -> &'static str {
    match req
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(http::HeaderValue::as_bytes)
    {
        Some(v) if v.len() >= 7 && v[..7].eq_ignore_ascii_case(b"bearer ") => "bearer",
        Some(_) => "other",
        None if req.headers().contains_key(http::header::COOKIE) => "cookie",
        None => "none",
    }
}

/// Type of the request span maker.
type MakeSpan = fn(&Request<Body>) -> tracing::Span;

/// The request-trace layer: a `request` span (DEBUG) per request, with its events at DEBUG.
pub(crate) fn trace_layer() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, MakeSpan> {
    TraceLayer::new_for_http().make_span_with(make_span as MakeSpan)
}

pub(crate) fn make_span(req: &Request<Body>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %req.method(),
        uri = %redact_uri(req.uri()),
        credential = credential_kind(req),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_credentials_are_redacted() {
        let uri: Uri = "/sub/a?since=x&token=secret.jwt.here&ticket=abc&x=token"
            .parse()
            .unwrap();
        assert_eq!(
            redact_uri(&uri),
            "/sub/a?since=x&token=[redacted]&ticket=[redacted]&x=token"
        );
        assert_eq!(redact_uri(&"/pub/a".parse().unwrap()), "/pub/a");
        // Percent-encoded keys decode to the same parameter the auth reads.
        let uri: Uri = "/sub/a?tok%65n=secret&%74icket=abc&access%5Ftoken=x&tokenx=1"
            .parse()
            .unwrap();
        assert_eq!(
            redact_uri(&uri),
            "/sub/a?tok%65n=[redacted]&%74icket=[redacted]&access%5Ftoken=[redacted]&tokenx=1"
        );
    }
}
