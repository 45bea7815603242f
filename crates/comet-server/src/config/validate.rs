//! [`Config::validate`]: ranges, the broker URL, the paths, and each subsystem's own checks of
//! its section (auth settings and key files, TLS files).

use std::net::SocketAddr;

use super::{Config, ConfigError};

/// Paths (and the prefixes of paths) the router serves, which `ws_echo` may not take.
const RESERVED_PATHS: &[&str] = &[
    "/pub",
    "/sub",
    "/ws",
    "/tickets",
    "/channels",
    "/healthz",
    "/readyz",
    "/metrics",
    "/demo",
    "/comet.js",
    "/comet.mjs",
    "/admin",
];

impl Config {
    /// Checks ranges, and loads the files it names (the JWT public key; the TLS certificate and
    /// key, which must both be set or both be empty, and must match).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the setting (and the file).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_message_size", self.max_message_size as u64),
            ("max_batch_body", self.max_batch_body as u64),
            ("max_channels_per_connection", self.max_channels_per_connection as u64),
            ("max_connections", self.max_connections as u64),
            ("history_size", self.history_size as u64),
            ("history_ttl_secs", self.history_ttl_secs),
            ("queue_len", self.queue_len as u64),
            ("max_batch", self.max_batch as u64),
            ("max_batch_bytes", self.max_batch_bytes as u64),
            ("longpoll_max_timeout_secs", self.longpoll_max_timeout_secs),
            ("heartbeat_secs", self.heartbeat_secs),
            ("iframe_budget", self.iframe_budget as u64),
            ("ws_ping_interval_secs", self.ws_ping_interval_secs),
            ("ws_pong_timeout_secs", self.ws_pong_timeout_secs),
            ("ws_auth_timeout_secs", self.ws_auth_timeout_secs),
            ("ws_max_message_size", self.ws_max_message_size as u64),
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("write_stall_timeout_secs", self.write_stall_timeout_secs),
            ("body_read_timeout_secs", self.body_read_timeout_secs),
            ("idempotency_window_secs", self.idempotency_window_secs),
            ("presence_ttl_secs", self.presence_ttl_secs),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
        }
        if !matches!(self.fsync.as_str(), "batch" | "always" | "never") {
            return Err(ConfigError::Invalid(format!(
                "fsync must be \"batch\", \"always\" or \"never\", got {:?}",
                self.fsync
            )));
        }
        if self.fsync_window_ms > 1000 {
            return Err(ConfigError::Invalid(format!(
                "fsync_window_ms must be at most 1000 (a publish waits up to it), got {}",
                self.fsync_window_ms
            )));
        }
        if !self.data_dir.is_empty() && self.broker != "memory" {
            return Err(ConfigError::Invalid(
                "data_dir keeps the embedded broker's history; with a Redis broker history lives in Redis \
                 (leave data_dir empty)"
                    .into(),
            ));
        }
        if self.broker.starts_with("rediss://") {
            return Err(ConfigError::Invalid(
                "broker: rediss:// (TLS to Redis) is not built into this server; use redis:// on a trusted \
                 network, or a TLS tunnel to Redis (stunnel, spiped) on 127.0.0.1"
                    .to_owned(),
            ));
        }
        if self.broker != "memory"
            && !["redis://", "redis+sentinel://", "redis+cluster://"]
                .iter()
                .any(|scheme| self.broker.starts_with(scheme))
        {
            // Only the scheme is quoted: the rest of a URL may hold a password.
            let shown = match self.broker.split_once("://") {
                Some((scheme, _)) => format!("a {scheme}:// URL"),
                None => format!("{:?}", self.broker),
            };
            return Err(ConfigError::Invalid(format!(
                "broker must be \"memory\", a redis:// URL, a redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER_NAME URL or a \
                 redis+cluster://HOST:PORT[,HOST:PORT…] URL, got {shown}"
            )));
        }
        if self.ws_max_message_size < self.max_message_size.saturating_add(1024) {
            return Err(ConfigError::Invalid(format!(
                "ws_max_message_size ({}) must be at least max_message_size + 1024 ({}): a WebSocket publish \
                 wraps the data in a JSON command",
                self.ws_max_message_size,
                self.max_message_size.saturating_add(1024)
            )));
        }
        if !self.ws_echo.is_empty() {
            let taken = RESERVED_PATHS
                .iter()
                .any(|p| self.ws_echo == *p || self.ws_echo.starts_with(&format!("{p}/")));
            let plain = self.ws_echo.starts_with('/')
                && self.ws_echo.len() > 1
                && self.ws_echo[1..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
            if !plain || taken {
                return Err(ConfigError::Invalid(format!(
                    "ws_echo must be a path of its own such as \"/echo\" (letters, digits, - _ . /), not one of \
                     Comet's routes; got {:?}",
                    self.ws_echo
                )));
            }
        }
        if self.longpoll_timeout_secs > self.longpoll_max_timeout_secs {
            return Err(ConfigError::Invalid(format!(
                "longpoll_timeout_secs ({}) exceeds longpoll_max_timeout_secs ({})",
                self.longpoll_timeout_secs, self.longpoll_max_timeout_secs
            )));
        }
        crate::auth::validate(&self.auth()).map_err(ConfigError::Invalid)?;
        crate::webhooks::validate(&self.webhooks()).map_err(ConfigError::Invalid)?;
        crate::hooks::validate(&self.hooks()).map_err(ConfigError::Invalid)?;
        if !self.internal_listen.is_empty() && self.internal_listen.parse::<SocketAddr>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "internal_listen {:?} is not an address (host:port, such as 127.0.0.1:9090)",
                self.internal_listen
            )));
        }
        let key = self.admin_api_key.expose();
        if !key.is_empty() && key.len() < 16 {
            return Err(ConfigError::Invalid(format!(
                "admin_api_key is {} bytes; use at least 16 (e.g. openssl rand -base64 24)",
                key.len()
            )));
        }
        if self.max_history_page == 0 {
            return Err(ConfigError::Invalid("max_history_page must be at least 1".into()));
        }
        crate::conn::tls::validate(&self.tls()).map_err(ConfigError::Invalid)?;
        Ok(())
    }
}
