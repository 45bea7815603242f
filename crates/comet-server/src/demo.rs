//! The embedded demo: pages served at `/` and `/demo/*`, and the built-in publishers that
//! `comet serve --demo` starts so the page is alive with no setup.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use comet_core::{ChannelName, Publish};

use crate::state::AppState;

const INDEX: &str = include_str!("../../../web/index.html");
const SCRIPT: &str = include_str!("../../../web/demo.js");
const STYLE: &str = include_str!("../../../web/demo.css");

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
