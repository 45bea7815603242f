//! A real HTTP receiver of occupancy webhooks (docs/protocol.md "Webhooks") on 127.0.0.1: it
//! keeps every POST's `X-Comet-Signature` and body, checks signatures, and can fail its first
//! POSTs with 503 to exercise retries.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::SOON;

/// What the receiver got, shared with its server task.
#[derive(Debug, Clone, Default)]
struct Got {
    posts: Arc<Mutex<Vec<(String, String)>>>,
    /// Requests still to answer with 503.
    failures: Arc<Mutex<u32>>,
}

/// A webhook receiver on a free loopback port; stops with the test's runtime.
#[derive(Debug, Clone)]
pub struct WebhookReceiver {
    /// Where to point `webhook_url`.
    pub url: String,
    got: Got,
}

async fn receive(State(got): State<Got>, headers: HeaderMap, body: String) -> StatusCode {
    let signature = headers
        .get("x-comet-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    got.posts.lock().unwrap().push((signature, body));
    let mut failures = got.failures.lock().unwrap();
    if *failures > 0 {
        *failures -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    StatusCode::NO_CONTENT
}

impl WebhookReceiver {
    /// A receiver that answers its first `failures` POSTs with 503, then 204.
    pub async fn start(failures: u32) -> Self {
        let got = Got::default();
        *got.failures.lock().unwrap() = failures;
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(got.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, got }
    }

    /// Every POST so far: `(X-Comet-Signature, body)`.
    pub fn posts(&self) -> Vec<(String, String)> {
        self.got.posts.lock().unwrap().clone()
    }

    /// The events of every POST so far, in order, as `name channel user` (`-` without one).
    pub fn events(&self) -> Vec<String> {
        self.posts()
            .iter()
            .flat_map(|(_, body)| {
                let v: Value = serde_json::from_str(body).unwrap();
                v["events"].as_array().unwrap().clone()
            })
            .map(|e| {
                format!(
                    "{} {} {}",
                    e["name"].as_str().unwrap(),
                    e["channel"].as_str().unwrap(),
                    e["user"].as_str().unwrap_or("-")
                )
            })
            .collect()
    }

    /// Waits (bounded by [`SOON`]) until at least `n` events arrived; returns them all.
    pub async fn wait_events(&self, n: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + SOON;
        loop {
            let now = self.events();
            if now.len() >= n {
                return now;
            }
            assert!(tokio::time::Instant::now() < deadline, "only {now:?} arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts that every POST is signed `sha256=<hex HMAC-SHA256 of the body>` with `secret`
    /// and that no two distinct POSTs share an `id` (a retry repeats its POST whole).
    pub fn assert_signed(&self, secret: &str) {
        let mut ids = std::collections::HashMap::new();
        for (signature, body) in self.posts() {
            assert_eq!(
                signature,
                comet_server::webhooks::signature(secret.as_bytes(), body.as_bytes()),
                "a valid signature of {body}"
            );
            let v: Value = serde_json::from_str(&body).unwrap();
            let id = v["id"].as_str().expect("an id").to_owned();
            if let Some(before) = ids.insert(id, body.clone()) {
                assert_eq!(before, body, "two POSTs with one id");
            }
            assert!(v["time"].as_u64().unwrap() > 1_700_000_000_000);
        }
    }
}
