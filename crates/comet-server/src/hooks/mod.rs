//! Back-end hooks (docs/protocol.md "Hooks"): Comet asks the application's back-end whether a
//! client may connect, subscribe and publish, by POSTing JSON to `connect_hook_url`,
//! `subscribe_hook_url` and `publish_hook_url`, and waits at most `hook_timeout_ms`.
//!
//! The back-end answers `{"result":{…}}` to allow (connect may name the `user`, give its
//! `info` and an `expire_at`; publish may replace the `data`), or
//! `{"error":{"code":4xx,"message":"…"}}` to refuse: the client gets that status. A hook that
//! is down, slow, or answers anything else refuses too (fail closed): `503 hook_unavailable`
//! with `Retry-After`. Every call is counted in `comet_hook_calls_total{hook,outcome}`.
//! `publish_api_key` callers (the back-end itself) never go through the hooks.

mod answer;
mod cache;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use comet_core::ChannelName;
use http::{HeaderMap, StatusCode, Uri};
use serde_json::{Map, Value, json};

use self::answer::{Answer, ConnectResult};
use self::cache::Cache;
use crate::auth::{AuthConfig, Identity};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// How long a client that met a failing hook is told to wait (`Retry-After`), in seconds.
pub const RETRY_AFTER_SECS: u64 = 2;

/// The hooks section of the configuration (made by `Config::hooks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    /// `connect_hook_url`: asked once per WebSocket, per request of the other transports and
    /// per HTTP publish; `None`: off.
    pub connect_url: Option<String>,
    /// `subscribe_hook_url`: asked per channel subscribed; `None`: off.
    pub subscribe_url: Option<String>,
    /// `publish_hook_url`: asked per message published; `None`: off.
    pub publish_url: Option<String>,
    /// `hook_timeout_ms`: how long a hook may take to answer.
    pub timeout: Duration,
    /// `hook_forward_headers`: the request headers the connect hook is shown.
    pub forward_headers: Vec<String>,
    /// `hook_cache_secs`: how long the answers to polling transports (poll, long poll) are
    /// kept, by the forwarded headers; zero: not kept.
    pub cache: Duration,
}

/// Checks the hook settings (called by `Config::validate`).
///
/// # Errors
/// A message naming the bad setting.
pub(crate) fn validate(config: &HookConfig) -> Result<(), String> {
    for (name, url) in [
        ("connect_hook_url", &config.connect_url),
        ("subscribe_hook_url", &config.subscribe_url),
        ("publish_hook_url", &config.publish_url),
    ] {
        let Some(url) = url else { continue };
        let parsed = url
            .parse::<Uri>()
            .map_err(|e| format!("{name} {url:?} is not a URL: {e}"))?;
        if parsed.scheme_str() != Some("http") || parsed.host().is_none() {
            return Err(format!(
                "{name} must be an http:// URL (TLS to the back-end is not built in: use a local proxy), got {url:?}"
            ));
        }
    }
    if config.timeout.is_zero() {
        return Err("hook_timeout_ms must be at least 1".into());
    }
    for name in &config.forward_headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("hook_forward_headers: {name:?} is not a header name"));
        }
    }
    Ok(())
}

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Hook {
    Connect,
    Subscribe,
    Publish,
}

impl Hook {
    /// The name in metrics and logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Hook::Connect => "connect",
            Hook::Subscribe => "subscribe",
            Hook::Publish => "publish",
        }
    }
}

/// What the connect hook is told of a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller<'a> {
    /// The connection's client id (the one presence lists).
    pub(crate) client: &'a str,
    /// The transport's name (`sse`, `ws`, …), or `http` for a publish.
    pub(crate) transport: &'static str,
    pub(crate) remote_addr: Option<SocketAddr>,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) uri: &'a Uri,
    /// A polling transport's request: its answer may come from the cache.
    pub(crate) cacheable: bool,
}

/// The hooks of one server.
#[derive(Debug)]
pub struct Hooks {
    config: HookConfig,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    cache: Cache,
}

impl Hooks {
    /// Hooks for `config`, counted in `metrics`.
    pub fn new(config: HookConfig, metrics: Arc<Metrics>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .unwrap_or_default();
        Self {
            cache: Cache::new(config.cache),
            config,
            client,
            metrics,
        }
    }

    /// Whether any hook is set.
    pub(crate) fn on(&self) -> bool {
        self.config.connect_url.is_some() || self.config.subscribe_url.is_some() || self.config.publish_url.is_some()
    }

    /// Whether `connect_hook_url` is set.
    pub(crate) fn connect_set(&self) -> bool {
        self.config.connect_url.is_some()
    }

    /// Whether the connect hook is on (for `identity`: the back-end skips the hooks).
    pub(crate) fn connect_on(&self, identity: &Identity) -> bool {
        self.config.connect_url.is_some() && !identity.is_backend()
    }

    /// Whether subscribing to `channel` goes through the subscribe hook.
    pub(crate) fn subscribe_on(&self, auth: &AuthConfig, channel: &ChannelName, identity: &Identity) -> bool {
        self.config.subscribe_url.is_some()
            && !identity.is_backend()
            && crate::auth::policy::subscribe_hook(auth, channel)
    }

    /// Whether publishing to `channel` goes through the publish hook.
    pub(crate) fn publish_on(&self, auth: &AuthConfig, channel: &ChannelName, identity: &Identity) -> bool {
        self.config.publish_url.is_some() && !identity.is_backend() && crate::auth::policy::publish_hook(auth, channel)
    }

    /// Asks the connect hook about `caller` (if it is on): the identity to go on with, the
    /// hook's `user`, `info` and `expire_at` over `identity`'s.
    ///
    /// # Errors
    /// The back-end's refusal (its status), or `503 hook_unavailable`.
    pub(crate) async fn connect(
        &self,
        auth: &AuthConfig,
        caller: &Caller<'_>,
        identity: Identity,
    ) -> Result<Identity, ApiError> {
        let Some(url) = &self.config.connect_url else {
            return Ok(identity);
        };
        if identity.is_backend() {
            return Ok(identity);
        }
        let headers = self.forwarded(auth, caller.headers, caller.uri);
        // By what the hook is shown that can decide its answer: the forwarded headers, the
        // client's address, a token's user; hashed (SHA-256), so a large cookie costs no more.
        let key = caller.cacheable.then(|| {
            let mut shown = Vec::new();
            for part in [
                identity.subject().unwrap_or("\0"),
                &caller.remote_addr.map(|a| a.ip().to_string()).unwrap_or_default(),
            ] {
                shown.extend_from_slice(part.as_bytes());
                shown.push(0);
            }
            for (name, value) in &headers {
                shown.extend_from_slice(name.as_bytes());
                shown.push(0);
                shown.extend_from_slice(value.as_str().unwrap_or("").as_bytes());
                shown.push(0);
            }
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &shown);
            let mut key = String::with_capacity(2 + 64);
            key.push_str("c\0");
            for b in digest.as_ref() {
                key.push_str(&format!("{b:02x}"));
            }
            key
        });
        let result = match key.as_deref().and_then(|k| self.cache.connect(k)) {
            Some(cached) => cached,
            None => {
                let mut body = json!({
                    "client": caller.client,
                    "transport": caller.transport,
                    "remote_addr": caller.remote_addr.map(|a| a.to_string()),
                    "headers": headers,
                });
                if let Some(user) = identity.subject() {
                    body["user"] = user.into();
                }
                let result = self
                    .call(Hook::Connect, url, &body)
                    .await
                    .and_then(|fields| ConnectResult::parse(&fields).map_err(|why| self.failed(Hook::Connect, &why)));
                if let Some(key) = key {
                    self.cache.keep_connect(key, &result);
                }
                result
            }
        };
        result?.identity(identity)
    }

    /// Asks the subscribe hook whether `identity` (client `client`) may subscribe to
    /// `channel` over `transport`.
    ///
    /// # Errors
    /// The back-end's refusal (its status), or `503 hook_unavailable`.
    pub(crate) async fn subscribe(
        &self,
        client: &str,
        identity: &Identity,
        channel: &ChannelName,
        transport: &'static str,
        cacheable: bool,
    ) -> Result<(), ApiError> {
        let Some(url) = &self.config.subscribe_url else {
            return Ok(());
        };
        let user = identity.subject().unwrap_or("");
        let key = cacheable.then(|| format!("s\0{user}\0{channel}\0{transport}"));
        if let Some(cached) = key.as_deref().and_then(|k| self.cache.subscribe(k)) {
            return cached;
        }
        let body = json!({"client": client, "user": user, "channel": channel.as_str(), "transport": transport});
        let result = self.call(Hook::Subscribe, url, &body).await.map(drop);
        if let Some(key) = key {
            self.cache.keep_subscribe(key, &result);
        }
        result
    }

    /// Asks the publish hook whether `identity` (client `client`) may publish `data` to
    /// `channel`: the data to publish (the back-end may replace it).
    ///
    /// # Errors
    /// The back-end's refusal (its status), or `503 hook_unavailable` (also for a replacement
    /// that is not a string, or longer than `max` bytes, the namespace's message size).
    pub(crate) async fn publish(
        &self,
        client: &str,
        identity: &Identity,
        channel: &ChannelName,
        (transport, event): (&'static str, Option<&str>),
        data: Bytes,
        max: usize,
    ) -> Result<Bytes, ApiError> {
        let Some(url) = &self.config.publish_url else {
            return Ok(data);
        };
        let text = String::from_utf8_lossy(&data);
        let mut body = json!({
            "client": client,
            "user": identity.subject().unwrap_or(""),
            "channel": channel.as_str(),
            "transport": transport,
            "data": text,
        });
        if let Some(event) = event {
            body["event"] = event.into();
        }
        let result = self.call(Hook::Publish, url, &body).await?;
        match result.get("data") {
            None => Ok(data),
            Some(Value::String(replaced)) if replaced.len() > max => Err(self.failed(
                Hook::Publish,
                &format!(
                    "its result's data is {} bytes; at most {max} are allowed here",
                    replaced.len()
                ),
            )),
            Some(Value::String(replaced)) => Ok(Bytes::from(replaced.clone())),
            Some(other) => Err(self.failed(
                Hook::Publish,
                &format!("its result's data must be a string, got {other}"),
            )),
        }
    }

    /// The headers of `hook_forward_headers` that `headers` carries, as the connect hook sees
    /// them; a cookie only where it counts as a credential (same-site pages and
    /// `allowed_origins`, docs/protocol.md "Credentials").
    fn forwarded(&self, auth: &AuthConfig, headers: &HeaderMap, uri: &Uri) -> Map<String, Value> {
        let mut out = Map::new();
        for name in &self.config.forward_headers {
            if name.eq_ignore_ascii_case("cookie")
                && !crate::auth::origin::cookie_allowed(&auth.allowed_origins, headers, uri)
            {
                continue;
            }
            let separator = if name.eq_ignore_ascii_case("cookie") {
                "; "
            } else {
                ", "
            };
            let values: Vec<String> = headers
                .get_all(name.as_str())
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            if !values.is_empty() {
                out.insert(name.clone(), Value::String(values.join(separator)));
            }
        }
        out
    }

    /// POSTs `body` to `url`: the answer's `result` object, or the refusal or failure as the
    /// client's error.
    async fn call(&self, hook: Hook, url: &str, body: &Value) -> Result<Map<String, Value>, ApiError> {
        let started = Instant::now();
        let sent = self
            .client
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await;
        let answer = match sent {
            Ok(res) if res.status().is_success() => res.bytes().await.map_err(|e| e.to_string()),
            Ok(res) => Err(format!("it answered {}", res.status())),
            Err(e) if e.is_timeout() => Err(format!(
                "it did not answer within hook_timeout_ms ({} ms)",
                self.config.timeout.as_millis()
            )),
            Err(e) => Err(format!("it cannot be reached: {e}")),
        };
        self.metrics.observe_hook(hook.name(), started.elapsed().as_secs_f64());
        let parsed = answer.and_then(|bytes| Answer::parse(&bytes));
        match parsed {
            Ok(Answer::Allow(result)) => {
                self.metrics.hook_call(hook.name(), "allowed");
                Ok(result)
            }
            Ok(Answer::Refuse { status, message }) => {
                self.metrics.hook_call(hook.name(), "refused");
                Err(refused(status, message))
            }
            Err(why) => Err(self.failed(hook, &why)),
        }
    }

    /// A hook that failed: counted, logged, and `503 hook_unavailable` for the client.
    fn failed(&self, hook: Hook, why: &str) -> ApiError {
        self.metrics.hook_call(hook.name(), "failed");
        tracing::warn!(hook = hook.name(), reason = why, "hook failed; refusing (fail closed)");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "hook_unavailable",
            message: format!("the {} hook failed: {why}; try again later", hook.name()),
            retry_after: Some(RETRY_AFTER_SECS),
        }
    }
}

/// The client's error for a back-end's refusal with `status` (4xx): the code Comet uses for
/// that status elsewhere (`unauthorized`, `forbidden`, `rate_limited`), else `refused`.
fn refused(status: StatusCode, message: String) -> ApiError {
    let code = match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        _ => "refused",
    };
    ApiError {
        status,
        code,
        message,
        retry_after: None,
    }
}
