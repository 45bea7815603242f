//! The embedded demo: pages served at `/` and `/demo/*`, the browser client `comet.js` at
//! `/comet.js` and `/comet.mjs`, and the built-in publishers that `comet serve --demo` starts so
//! the page is alive with no setup.

use std::sync::LazyLock;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use comet_core::{ChannelName, Publish};
use http::{HeaderMap, StatusCode, header};

use crate::state::AppState;

const INDEX: &str = include_str!("../../../../web/index.html");
const SCRIPT: &str = include_str!("../../../../web/demo.js");
const STYLE: &str = include_str!("../../../../web/demo.css");
const CLIENT_DEMO: &str = include_str!("../../../../web/client-demo.js");

/// The browser client, built from `clients/js/src` by `npm run build` and committed, so building
/// the server never needs Node. `npm run check-dist` (run by `scripts/test`) fails when it is stale.
const BUNDLE_IIFE: &str = include_str!("../../../../clients/js/dist/comet.js");
const BUNDLE_ESM: &str = include_str!("../../../../clients/js/dist/comet.mjs");

/// A strong entity tag for `body`: FNV-1a 64 of the bytes and the length (RFC 9110 §8.8.3).
fn etag_of(body: &str) -> String {
    let hash = body.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{hash:016x}-{:x}\"", body.len())
}

/// The tags, computed once.
static ETAG_IIFE: LazyLock<String> = LazyLock::new(|| etag_of(BUNDLE_IIFE));
static ETAG_ESM: LazyLock<String> = LazyLock::new(|| etag_of(BUNDLE_ESM));

/// Whether `If-None-Match` names `etag` (or is `*`), with the weak comparison RFC 9110 §13.1.2
/// prescribes for this header.
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// The bundle with its ETag; `304 Not Modified` when the client already has it. `no-cache`: the
/// path is not versioned, so clients revalidate (cheaply, by tag) on every load.
fn bundle(headers: &HeaderMap, body: &'static str, etag: &str) -> Response {
    let common = [
        (header::ETAG, etag.to_owned()),
        (header::CACHE_CONTROL, "no-cache".to_owned()),
    ];
    if not_modified(headers, etag) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (common, [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], body).into_response()
}

/// `GET /comet.js`: the client as a classic script defining the global `Comet`.
pub(crate) async fn client_iife(headers: HeaderMap) -> Response {
    bundle(&headers, BUNDLE_IIFE, &ETAG_IIFE)
}

/// `GET /comet.mjs`: the client as an ES module.
pub(crate) async fn client_esm(headers: HeaderMap) -> Response {
    bundle(&headers, BUNDLE_ESM, &ETAG_ESM)
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (http::header::CONTENT_TYPE, content_type),
            (http::header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
pub(crate) async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// `GET /demo/demo.js`.
pub(crate) async fn script() -> Response {
    page("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /demo/client-demo.js`: the panels built on `comet.js`, and the transport inspector.
pub(crate) async fn client_demo() -> Response {
    page("text/javascript; charset=utf-8", CLIENT_DEMO)
}

/// `GET /demo/demo.css`.
pub(crate) async fn style() -> Response {
    page("text/css; charset=utf-8", STYLE)
}

async fn publish(state: &AppState, channel: &ChannelName, data: String) {
    let msg = Publish {
        channel: channel.clone(),
        event: None,
        data: Bytes::from(data),
    };
    if let Err(e) = state.broker.publish(msg).await {
        tracing::warn!(%channel, error = %e, "demo publish failed");
    }
}

/// Starts the demo publishers: `demo:stock` (a random-walk price every second) and
/// `demo:progress` (a job from 0 to 100 % in steps of 2 every 200 ms, then a new job). They stop
/// when the server shuts down.
pub fn start_publishers(state: &AppState) {
    let s = state.clone();
    tokio::spawn(async move {
        let channel = ChannelName::new("demo:stock").expect("valid name");
        let mut price = 100.0_f64;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = s.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let change = (rand::random::<f64>() - 0.5) * 2.0;
            price = (price + change).max(1.0);
            let data = format!(
                "{{\"symbol\":\"CMT\",\"price\":{price:.2},\"change\":{change:.2},\"time\":{}}}",
                comet_core::now_millis()
            );
            publish(&s, &channel, data).await;
        }
    });
    let s = state.clone();
    tokio::spawn(async move {
        let channel = ChannelName::new("demo:progress").expect("valid name");
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let (mut job, mut percent) = (1u64, 0u32);
        loop {
            tokio::select! {
                () = s.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            publish(&s, &channel, format!("{{\"job\":{job},\"percent\":{percent}}}")).await;
            if percent >= 100 {
                job += 1;
                percent = 0;
                tokio::select! {
                    () = s.shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            } else {
                percent += 2;
            }
        }
    });
}
