//! Each subsystem's section of [`Config`], typed: `Duration`s for `_secs`, `None` for empty
//! strings.

use std::path::PathBuf;
use std::time::Duration;

use comet_core::{HistoryLimits, HubConfig};

use super::{AuthConfig, Config, HookConfig, LimitsConfig, SseConfig, TlsConfig, WebhookConfig, WsConfig, non_empty};

impl Config {
    /// The auth section: JWT verification, the API key, the cookie, origins, tickets and the
    /// namespace rules. Empty paths and names become `None`, seconds `Duration`s.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = comet_server::Config { jwt_leeway_secs: 5, ..Default::default() };
    /// let auth = config.auth();
    /// assert_eq!(auth.jwt_leeway, Duration::from_secs(5));
    /// assert_eq!(auth.jwt_public_key_file, None);
    /// assert_eq!(auth.token_cookie, "comet_token");
    /// ```
    pub fn auth(&self) -> AuthConfig {
        AuthConfig {
            jwt_secret: self.jwt_secret.clone(),
            jwt_public_key_file: non_empty(&self.jwt_public_key_file).map(PathBuf::from),
            jwt_audience: non_empty(&self.jwt_audience),
            jwt_issuer: non_empty(&self.jwt_issuer),
            jwt_leeway: Duration::from_secs(self.jwt_leeway_secs),
            token_cookie: self.token_cookie.clone(),
            publish_api_key: self.publish_api_key.clone(),
            allowed_origins: self.allowed_origins.clone(),
            ticket_ttl: Duration::from_secs(self.ticket_ttl_secs),
            max_message_size: self.max_message_size,
            namespaces: self.namespace.clone(),
        }
    }

    /// The hooks section (docs/protocol.md "Hooks"): empty URLs become `None`.
    pub fn hooks(&self) -> HookConfig {
        HookConfig {
            connect_url: non_empty(&self.connect_hook_url),
            subscribe_url: non_empty(&self.subscribe_hook_url),
            publish_url: non_empty(&self.publish_hook_url),
            timeout: Duration::from_millis(self.hook_timeout_ms),
            forward_headers: self.hook_forward_headers.clone(),
            cache: Duration::from_secs(self.hook_cache_secs),
        }
    }

    /// The per-client limits section.
    pub fn limits(&self) -> LimitsConfig {
        LimitsConfig {
            max_connections_per_ip: self.max_connections_per_ip,
            max_longpolls_per_ip: self.max_longpolls_per_ip,
            max_connections_per_user: self.max_connections_per_user,
            max_tickets_per_user: self.max_tickets_per_user,
            ticket_ttl: Duration::from_secs(self.ticket_ttl_secs),
            subscribes_per_sec_per_ip: self.subscribes_per_sec_per_ip,
            publishes_per_sec: self.publishes_per_sec,
        }
    }

    /// The listener's TLS section: both files, or neither (plain TCP).
    ///
    /// ```
    /// let config = comet_server::Config { tls_cert_file: "/etc/comet/cert.pem".into(), ..Default::default() };
    /// let tls = config.tls();
    /// assert_eq!(tls.cert_file.as_deref(), Some(std::path::Path::new("/etc/comet/cert.pem")));
    /// assert_eq!(tls.key_file, None); // Config::validate refuses this: both or neither
    /// ```
    pub fn tls(&self) -> TlsConfig {
        TlsConfig {
            cert_file: non_empty(&self.tls_cert_file).map(PathBuf::from),
            key_file: non_empty(&self.tls_key_file).map(PathBuf::from),
        }
    }

    /// The WebSocket section.
    ///
    /// ```
    /// use std::time::Duration;
    /// let ws = comet_server::Config::default().ws();
    /// assert_eq!(ws.ping_interval, Duration::from_secs(25));
    /// // A peer that takes nothing for a ping interval plus a pong timeout is a slow consumer.
    /// assert_eq!(ws.stall(), Duration::from_secs(35));
    /// ```
    pub fn ws(&self) -> WsConfig {
        WsConfig {
            ping_interval: Duration::from_secs(self.ws_ping_interval_secs),
            pong_timeout: Duration::from_secs(self.ws_pong_timeout_secs),
            auth_timeout: Duration::from_secs(self.ws_auth_timeout_secs),
            max_message_size: self.ws_max_message_size,
            compression: self.ws_compression,
        }
    }

    /// The occupancy webhooks' section.
    pub fn webhooks(&self) -> WebhookConfig {
        WebhookConfig {
            url: non_empty(&self.webhook_url),
            secret: self.webhook_secret.clone(),
        }
    }

    /// The Server-Sent Events section.
    pub fn sse(&self) -> SseConfig {
        SseConfig {
            retry: Duration::from_millis(self.sse_retry_ms),
        }
    }

    /// The broker's fan-out settings derived from this configuration.
    pub fn hub_config(&self) -> HubConfig {
        let history = HistoryLimits {
            max_messages: self.history_size,
            max_age: Duration::from_secs(self.history_ttl_secs),
        };
        // Every namespace table gets an entry (its own limits or the global ones), so a table
        // without history settings does not fall through to `[namespace.""]`'s: the same
        // lookup as the other namespace rules (auth::policy::rules).
        let namespace_history = self
            .namespace
            .iter()
            .map(|(ns, rules)| {
                let limits = HistoryLimits {
                    max_messages: rules.history_size.unwrap_or(history.max_messages),
                    max_age: rules.history_ttl_secs.map_or(history.max_age, Duration::from_secs),
                };
                (ns.clone(), limits)
            })
            .filter(|(ns, limits)| !ns.is_empty() || *limits != history)
            .collect();
        HubConfig {
            history,
            namespace_history,
            queue_len: self.queue_len,
            max_batch_bytes: self.max_batch_bytes,
            max_idle_channels: self.max_idle_channels,
        }
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }

    /// [`write_stall_timeout_secs`](Self::write_stall_timeout_secs) as a duration.
    pub fn write_stall(&self) -> Duration {
        Duration::from_secs(self.write_stall_timeout_secs)
    }
}
