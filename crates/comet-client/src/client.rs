//! [`Client`]: publishing, channel info, and opening subscriptions.

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::transport::check_status;
use crate::{ApiError, BatchMessage, ChannelInfo, Error, Published, Subscription, Transport};

/// How long a plain request (publish, channel info, short poll) may take in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long establishing a TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// When and how often a [`Subscription`] reconnects after its connection drops or a request
/// fails.
///
/// The `n`th consecutive failure waits `base × 2ⁿ⁻¹`, capped at `max_delay` (or at `base` if
/// that is larger), where `base` is the SSE `retry:` time when the server sent one, else
/// `initial_delay`. After `max_attempts` failed reconnections in a row the subscription yields
/// the last error and ends. A successful connection resets the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// Reconnection attempts after a drop before giving up. Defaults to 5; 0 never reconnects.
    pub max_attempts: u32,
    /// Delay before the first attempt. Defaults to 250 ms.
    pub initial_delay: Duration,
    /// Longest delay between attempts. Defaults to 10 seconds.
    pub max_delay: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            max_attempts: 5,
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl Reconnect {
    /// The delay before reconnecting after the `failure`th failure in a row (1-based).
    pub(crate) fn delay(&self, failure: u32, sse_retry: Option<Duration>) -> Duration {
        let base = sse_retry.unwrap_or(self.initial_delay);
        let factor = 1u32 << failure.saturating_sub(1).min(16);
        base.saturating_mul(factor).min(self.max_delay.max(base))
    }
}

/// A handle to one Comet server. Cheap to clone (the connection pool is shared).
///
/// HTTP goes through `reqwest` without TLS and without proxies (environment proxy variables
/// are ignored, so a load test measures the server, not a proxy).
#[derive(Debug, Clone)]
pub struct Client {
    base: Url,
    pub(crate) http: reqwest::Client,
    pub(crate) reconnect: Reconnect,
    /// See [`Client::with_idle_timeout`].
    pub(crate) idle_timeout: Option<Duration>,
}

impl Client {
    /// A client for the server at `base_url`, e.g. `"http://127.0.0.1:8080"`. A path in it
    /// (`http://host/comet`) is kept as a prefix of every endpoint, for servers behind a
    /// reverse proxy.
    ///
    /// # Errors
    /// [`Error::Url`] when `base_url` does not parse, [`Error::InvalidArgument`] when it is not
    /// `http` or `https`, [`Error::Transport`] when the HTTP client cannot be built.
    pub fn new(base_url: &str) -> Result<Self, Error> {
        let mut base = Url::parse(base_url)?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Error::InvalidArgument(format!(
                "base URL must be http:// or https://, got {base_url:?}"
            )));
        }
        base.set_query(None);
        base.set_fragment(None);
        let http = reqwest::Client::builder()
            .user_agent(concat!("comet-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy()
            .build()?;
        Ok(Client {
            base,
            http,
            reconnect: Reconnect::default(),
            idle_timeout: Some(Duration::from_secs(60)),
        })
    }

    /// Sets the reconnection policy of subscriptions opened from now on.
    #[must_use]
    pub fn with_reconnect(mut self, policy: Reconnect) -> Self {
        self.reconnect = policy;
        self
    }

    /// Sets how long a stream, SSE or WebSocket connection may stay silent before it is
    /// considered dead and reopened. The server sends a heartbeat every 15 s (stream, SSE) or a
    /// ping every 25 s (WebSocket) by default, so keep this well above those. Defaults to
    /// 60 seconds; `None` waits forever. Not applied to iframe documents, which have no
    /// heartbeat.
    #[must_use]
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The base URL every endpoint is built on.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// `base` + the given path segments (each percent-encoded as needed).
    pub(crate) fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Publishes `data` to `channel` with `POST /pub/{channel}[?event=NAME]`.
    ///
    /// `event` is the event name (`None` for the default `message`).
    ///
    /// # Errors
    /// [`Error::Http`] with the server's code when it refuses (`bad_channel`, `bad_event`,
    /// `too_large`, …), [`Error::Transport`] when the request fails or takes more than
    /// 30 seconds, [`Error::Protocol`] when the answer is not `{"channel","id"}`.
    pub async fn publish(&self, channel: &str, data: &str, event: Option<&str>) -> Result<Published, Error> {
        self.publish_once(channel, data, event, None).await
    }

    /// [`publish`](Self::publish) with an `Idempotency-Key`: the server publishes the message at
    /// most once per key and channel within its `idempotency_window_secs`, so the call can be
    /// repeated after any failure (a repeat answers the first cursor with
    /// [`Published::duplicate`] set).
    ///
    /// # Errors
    /// As [`publish`](Self::publish); `bad_idempotency_key` for a key that is not 1–128
    /// printable ASCII bytes.
    pub async fn publish_once(
        &self,
        channel: &str,
        data: &str,
        event: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<Published, Error> {
        let mut url = self.endpoint(&["pub", channel]);
        if let Some(event) = event {
            url.query_pairs_mut().append_pair("event", event);
        }
        let mut req = self
            .http
            .post(url)
            .timeout(REQUEST_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(data.to_owned());
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        json(req.send().await?).await
    }

    /// Publishes several messages in one `POST /pub` request. Each is published or rejected on
    /// its own: the answer has one result per message, in order.
    ///
    /// # Errors
    /// As [`Client::publish`], for the request as a whole (e.g. `bad_body`).
    pub async fn publish_batch(
        &self,
        messages: &[BatchMessage<'_>],
    ) -> Result<Vec<Result<Published, ApiError>>, Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Item {
            Published(Published),
            Rejected { error: ApiError },
        }
        #[derive(Deserialize)]
        struct Answer {
            results: Vec<Item>,
        }
        let resp = self
            .http
            .post(self.endpoint(&["pub"]))
            .timeout(REQUEST_TIMEOUT)
            .json(messages)
            .send()
            .await?;
        let answer: Answer = json(resp).await?;
        Ok(answer
            .results
            .into_iter()
            .map(|item| match item {
                Item::Published(p) => Ok(p),
                Item::Rejected { error } => Err(error),
            })
            .collect())
    }

    /// `GET /channels/{channel}`.
    ///
    /// # Errors
    /// [`Error::Http`] (`bad_channel`, `not_found`, …), [`Error::Transport`],
    /// [`Error::Protocol`].
    pub async fn channel_info(&self, channel: &str) -> Result<ChannelInfo, Error> {
        let resp = self
            .http
            .get(self.endpoint(&["channels", channel]))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await?;
        json(resp).await
    }

    /// Subscribes to `channels` over `transport`, resuming after `since` (a cursor, a position
    /// `chan=cursor,…`, or `earliest`; `None` starts at the live edge).
    ///
    /// Returns once the server has taken the subscription, so that anything published after
    /// this returns is delivered: after the response head (stream, iframe, SSE), after a
    /// `subscribed` frame for every channel (WebSocket), or after a first immediate
    /// `?transport=poll` request that fixes the cursor (poll, and long-poll, whose first
    /// request would otherwise be held).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty channel list; [`Error::Http`] when the server
    /// refuses (`bad_channel`, `bad_cursor`, `too_many_channels`, …); [`Error::Transport`] or
    /// [`Error::WebSocket`] when it cannot be reached. The first connection is not retried.
    pub async fn subscribe(
        &self,
        channels: &[&str],
        transport: Transport,
        since: Option<&str>,
    ) -> Result<Subscription, Error> {
        if channels.is_empty() {
            return Err(Error::InvalidArgument("no channel to subscribe to".into()));
        }
        let since = since.filter(|s| !s.is_empty());
        Subscription::open(self.clone(), channels, transport, since).await
    }
}

/// Checks the status and decodes a JSON answer.
async fn json<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, Error> {
    let body = check_status(resp).await?.bytes().await?;
    serde_json::from_slice(&body).map_err(|e| Error::bad_json("answer", &body, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_rules() {
        assert!(matches!(Client::new("nope"), Err(Error::Url(_))));
        assert!(matches!(Client::new("ftp://x"), Err(Error::InvalidArgument(_))));
        let c = Client::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            c.endpoint(&["pub", "chat:lobby"]).as_str(),
            "http://127.0.0.1:8080/pub/chat:lobby"
        );
        let c = Client::new("http://h/comet/?x=1#f").unwrap();
        assert_eq!(c.endpoint(&["sub", "a,b@c"]).as_str(), "http://h/comet/sub/a,b@c");
        let c = Client::new("http://h/comet").unwrap();
        assert_eq!(
            c.endpoint(&["channels", "a/b"]).as_str(),
            "http://h/comet/channels/a%2Fb"
        );
    }

    #[test]
    fn backoff() {
        let r = Reconnect::default();
        assert_eq!(r.delay(1, None), Duration::from_millis(250));
        assert_eq!(r.delay(3, None), Duration::from_secs(1));
        assert_eq!(r.delay(10, None), Duration::from_secs(10));
        let retry = Some(Duration::from_secs(3));
        assert_eq!(r.delay(1, retry), Duration::from_secs(3));
        assert_eq!(r.delay(2, retry), Duration::from_secs(6));
        assert_eq!(r.delay(3, retry), Duration::from_secs(10));
        assert_eq!(r.delay(1, Some(Duration::from_secs(30))), Duration::from_secs(30));
        assert_eq!(r.delay(u32::MAX, None), Duration::from_secs(10));
    }
}
