//! Occupancy webhooks (docs/protocol.md "Webhooks"): Comet POSTs
//! `{"id","time","events":[{"name","channel","user"?}]}` to `webhook_url` when a presence
//! channel gets its first client (`channel_occupied`) or loses its last (`channel_vacated`), and
//! when a user makes their first connection to one (`member_added`) or closes their last
//! (`member_removed`). The body is signed: `X-Comet-Signature: sha256=<hex HMAC-SHA256 of the
//! body with webhook_secret>` (RFC 2104).
//!
//! Events go through a bounded queue ([`QUEUE`]) to one task, which sends them in batches of at
//! most [`BATCH`] and retries a failed POST with backoff, at most [`ATTEMPTS`] times, keeping its
//! `id` so the receiver can de-duplicate: at least once. Everything is counted in `/metrics`
//! (`comet_webhook_*`). Only `http://` URLs: TLS to the back-end is not built into this client.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use comet_core::{ChannelName, Transition, now_millis};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::auth::Secret;
use crate::metrics::Metrics;

/// Events waiting to be sent, at most; past it they are dropped (and counted).
pub const QUEUE: usize = 10_000;
/// Events in one POST, at most.
pub const BATCH: usize = 100;
/// Tries of one POST before its events are dropped (and counted).
pub const ATTEMPTS: u32 = 8;
/// How long one POST may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The webhook section of the configuration (made by `Config::webhooks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `webhook_url`: where events are POSTed; `None`: no webhooks.
    pub url: Option<String>,
    /// `webhook_secret`: the HMAC key of `X-Comet-Signature`.
    pub secret: Secret,
}

/// Checks the webhook settings (called by `Config::validate`).
///
/// # Errors
/// A message naming the bad setting.
pub(crate) fn validate(config: &WebhookConfig) -> Result<(), String> {
    let Some(url) = &config.url else {
        return Ok(());
    };
    let parsed = url
        .parse::<http::Uri>()
        .map_err(|e| format!("webhook_url {url:?} is not a URL: {e}"))?;
    if parsed.scheme_str() != Some("http") || parsed.host().is_none() {
        return Err(format!(
            "webhook_url must be an http:// URL (TLS to the back-end is not built in: use a local proxy), got {url:?}"
        ));
    }
    if config.secret.is_empty() {
        return Err("webhook_secret must be set with webhook_url: it signs every POST".into());
    }
    Ok(())
}

/// `X-Comet-Signature`'s value for `body`: `sha256=` and the hex HMAC-SHA256 with `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    name: &'static str,
    channel: ChannelName,
    user: Option<Arc<str>>,
}

/// The webhooks of one server: a queue to the sending task, started with the first event.
#[derive(Debug)]
pub struct Webhooks {
    config: WebhookConfig,
    metrics: Arc<Metrics>,
    queue: OnceLock<Option<mpsc::Sender<Event>>>,
}

impl Webhooks {
    /// Webhooks for `config` (off when it has no URL); counted in `metrics`.
    pub fn new(config: WebhookConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            metrics,
            queue: OnceLock::new(),
        }
    }

    /// Whether events are sent at all.
    pub fn enabled(&self) -> bool {
        self.config.url.is_some()
    }

    /// The events of one presence transition of `user` in `channel`: a join (`joined`) or a
    /// leave.
    pub(crate) fn presence(&self, channel: &ChannelName, user: &Arc<str>, joined: bool, transition: Transition) {
        if !self.enabled() {
            return;
        }
        // Occupied before the member comes, vacated after the member goes.
        let (occupancy, member) = if joined {
            ("channel_occupied", "member_added")
        } else {
            ("channel_vacated", "member_removed")
        };
        let channel_event = transition.channel.then(|| Event {
            name: occupancy,
            channel: channel.clone(),
            user: None,
        });
        let member_event = transition.user.then(|| Event {
            name: member,
            channel: channel.clone(),
            user: Some(Arc::clone(user)),
        });
        let ordered: [Option<Event>; 2] = if joined {
            [channel_event, member_event]
        } else {
            [member_event, channel_event]
        };
        for event in ordered.into_iter().flatten() {
            self.send(event);
        }
    }

    fn send(&self, event: Event) {
        let queue = self.queue.get_or_init(|| {
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            let (tx, rx) = mpsc::channel(QUEUE);
            let url = self.config.url.clone()?;
            runtime.spawn(deliver(url, self.config.secret.clone(), rx, Arc::clone(&self.metrics)));
            Some(tx)
        });
        let Some(queue) = queue else {
            return;
        };
        self.metrics.webhook_events.inc();
        if queue.try_send(event).is_err() {
            self.metrics.webhook_dropped.inc();
            tracing::warn!("webhook queue full; an occupancy event was dropped");
        }
    }
}

/// The sending task: batches what is queued, POSTs it, retries with backoff.
async fn deliver(url: String, secret: Secret, mut rx: mpsc::Receiver<Event>, metrics: Arc<Metrics>) {
    let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "webhook client unusable; no webhook will be sent");
            return;
        }
    };
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let events: Vec<Value> = batch
            .drain(..)
            .map(|e| match e.user {
                Some(user) => json!({"name": e.name, "channel": e.channel.as_str(), "user": user.as_ref()}),
                None => json!({"name": e.name, "channel": e.channel.as_str()}),
            })
            .collect();
        let count = events.len() as u64;
        let id = crate::client_id::next();
        let body = json!({"id": id.as_ref(), "time": now_millis(), "events": events}).to_string();
        let signed = signature(secret.expose().as_bytes(), body.as_bytes());
        let mut delay = Duration::from_millis(200);
        let mut sent = false;
        for attempt in 1..=ATTEMPTS {
            let answer = client
                .post(&url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("x-comet-signature", &signed)
                .body(body.clone())
                .send()
                .await;
            match answer {
                Ok(res) if res.status().is_success() => {
                    metrics.webhook_deliveries.inc();
                    sent = true;
                    break;
                }
                Ok(res) => tracing::warn!(status = %res.status(), attempt, "webhook refused"),
                Err(e) => tracing::warn!(error = %e, attempt, "webhook failed"),
            }
            metrics.webhook_failures.inc();
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
        if !sent {
            metrics.webhook_dropped.inc_by(count);
            tracing::error!(events = count, "webhook given up after {ATTEMPTS} attempts");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2.
    #[test]
    fn signatures_are_hex_hmac_sha256() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn only_signed_http_urls_are_taken() {
        let config = |url: &str, secret: &str| WebhookConfig {
            url: Some(url.to_owned()),
            secret: secret.into(),
        };
        assert!(validate(&config("http://127.0.0.1:9/hook", "s")).is_ok());
        assert!(
            validate(&config("https://example.com/hook", "s"))
                .unwrap_err()
                .contains("http://")
        );
        assert!(validate(&config("not a url", "s")).unwrap_err().contains("not a URL"));
        assert!(
            validate(&config("http://127.0.0.1:9/hook", ""))
                .unwrap_err()
                .contains("webhook_secret")
        );
        let off = WebhookConfig {
            url: None,
            secret: Secret::default(),
        };
        assert!(validate(&off).is_ok());
    }
}
