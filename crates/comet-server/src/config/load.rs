//! Reading the configuration: the defaults, then a TOML file, then `COMET_*` variables; the
//! first key that does not parse is named in the error.

use std::path::Path;

use super::{Config, ConfigError};

impl Config {
    /// Loads defaults, then `file` (if any), then `COMET_*` variables from `env`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the unreadable file, or the bad key and value.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        for (key, value) in env {
            let Some(name) = key.strip_prefix("COMET_") else {
                continue;
            };
            let name = name.to_ascii_lowercase();
            if !Self::KEYS.contains(&name.as_str()) {
                continue; // COMET_SERVER and friends belong to the client commands.
            }
            // A value is taken as TOML when it parses as such (numbers, booleans), else as text;
            // secrets and names are always text (a numeric secret is still a secret).
            let parsed = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .filter(|_| !Self::TEXT_KEYS.contains(&name.as_str()))
                .unwrap_or(toml::Value::String(value));
            table.insert(name, parsed);
        }
        let config: Self = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| {
                // The error does not say where; the first key that fails on its own does.
                let key = table.iter().find(|(key, value)| {
                    let alone = toml::Table::from_iter([((*key).clone(), (*value).clone())]);
                    toml::Value::Table(alone).try_into::<Self>().is_err()
                });
                ConfigError::Invalid(match key {
                    Some((key, _)) => format!("{key}: {}", e.message()),
                    None => e.message().to_owned(),
                })
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Settings whose `COMET_*` value is always text, never parsed as TOML.
    const TEXT_KEYS: &'static [&'static str] = &[
        "jwt_secret",
        "jwt_public_key_file",
        "jwt_audience",
        "jwt_issuer",
        "token_cookie",
        "publish_api_key",
        "tls_cert_file",
        "tls_key_file",
        "ws_echo",
        "webhook_url",
        "webhook_secret",
        "connect_hook_url",
        "subscribe_hook_url",
        "publish_hook_url",
        "admin_api_key",
        "internal_listen",
        "data_dir",
        "fsync",
    ];

    /// The setting names, as in TOML.
    pub const KEYS: &'static [&'static str] = &[
        "listen",
        "broker",
        "data_dir",
        "fsync",
        "fsync_window_ms",
        "max_message_size",
        "max_batch_body",
        "max_channels_per_connection",
        "max_connections",
        "max_connections_per_ip",
        "max_longpolls_per_ip",
        "max_connections_per_user",
        "max_tickets_per_user",
        "subscribes_per_sec_per_ip",
        "publishes_per_sec",
        "history_size",
        "history_ttl_secs",
        "queue_len",
        "max_batch",
        "max_batch_bytes",
        "max_idle_channels",
        "longpoll_timeout_secs",
        "longpoll_max_timeout_secs",
        "heartbeat_secs",
        "sse_retry_ms",
        "iframe_budget",
        "ws_ping_interval_secs",
        "ws_pong_timeout_secs",
        "ws_auth_timeout_secs",
        "ws_max_message_size",
        "ws_compression",
        "header_read_timeout_secs",
        "write_stall_timeout_secs",
        "body_read_timeout_secs",
        "shutdown_grace_secs",
        "demo",
        "admin_api",
        "ws_echo",
        "jwt_secret",
        "jwt_public_key_file",
        "jwt_audience",
        "jwt_issuer",
        "jwt_leeway_secs",
        "token_cookie",
        "publish_api_key",
        "allowed_origins",
        "ticket_ttl_secs",
        "idempotency_window_secs",
        "tls_cert_file",
        "tls_key_file",
        "presence_ttl_secs",
        "webhook_url",
        "webhook_secret",
        "connect_hook_url",
        "subscribe_hook_url",
        "publish_hook_url",
        "hook_timeout_ms",
        "hook_forward_headers",
        "hook_cache_secs",
        "admin_api_key",
        "internal_listen",
        "max_history_page",
        "namespace",
    ];
}
