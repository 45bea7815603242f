//! [`Config`]: every setting of the server, with its default, unit and range (DESIGN §5).
//!
//! Sources, later ones winning: the defaults here, a TOML file (`--config comet.toml`), environment
//! variables `COMET_<SETTING>` (e.g. `COMET_HISTORY_SIZE=1000`), then command-line flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use comet_core::{HistoryLimits, HubConfig};
use serde::Deserialize;

use crate::auth::{NamespaceRules, Secret};

/// The server's settings. Field names are the TOML keys; the environment variable is
/// `COMET_` + the name in capitals.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Defaults to `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Where messages live: `memory` (this node only; the default), a Redis URL
    /// `redis://host:port[/db]` shared by several nodes, or Redis with Sentinel
    /// `redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER_NAME` (the nodes follow the master the
    /// sentinels name).
    pub broker: String,
    /// Largest message a publisher may send, in bytes (HTTP body, batch item or WebSocket
    /// `publish` data). Larger is `413 too_large`. Defaults to 65,536 (64 KiB).
    pub max_message_size: usize,
    /// Largest `POST /pub` batch body, in bytes. Defaults to 1,048,576 (1 MiB).
    pub max_batch_body: usize,
    /// Most channels one subscription (URL or WebSocket) may name. Defaults to 64.
    pub max_channels_per_connection: usize,
    /// Most open client connections; past it new ones get `503` and are closed. Defaults to
    /// 50,000. The open-file limit (raised to its hard limit at start) is the other bound.
    pub max_connections: usize,
    /// Most open connections from one client address (IPv6: one `/64`); past it new ones get
    /// `429` and are closed. `0`: no limit. Defaults to 1,000. Behind a reverse proxy every client
    /// has the proxy's address: set 0 and limit in the proxy.
    pub max_connections_per_ip: usize,
    /// Most long polls one client address may have held at once; past it `429`. `0`: no limit.
    /// Defaults to 1,000.
    pub max_longpolls_per_ip: usize,
    /// Most subscriber connections (streams, iframes, SSE, WebSockets, held long polls) one
    /// token subject (`sub`) may hold open at once, wherever they come from, when the token
    /// comes with the request (or, for a WebSocket, in an `auth` command); 0 = no limit. Over
    /// it: `429 too_many_connections` (after `auth`: an `error` frame and close 1008). Defaults
    /// to 1,000.
    pub max_connections_per_user: usize,
    /// Most tickets (`POST /tickets`) one token subject may be issued within `ticket_ttl_secs`,
    /// on one node; 0 = no limit. Over it: `429 rate_limited`. Defaults to 100.
    pub max_tickets_per_user: usize,
    /// New subscriptions per second one client address may open (streams, SSE, iframes,
    /// WebSockets and their `subscribe` commands, polls without a cursor), with bursts of five
    /// seconds' worth; past it `429` + `Retry-After`. `0`: no limit. Defaults to 200.
    pub subscribes_per_sec_per_ip: u32,
    /// Publishes per second per token subject (anonymous callers: per address), with bursts of
    /// five seconds' worth; past it `429` + `Retry-After`. Back-ends with `publish_api_key` are
    /// not limited. `0`: no limit. Defaults to 100.
    pub publishes_per_sec: u32,
    /// Messages of history kept per channel. Defaults to 256; at least 1.
    pub history_size: usize,
    /// Age after which history drops a message, in seconds. Defaults to 600.
    pub history_ttl_secs: u64,
    /// How many messages a subscriber may trail the live edge before it counts as lagged (it
    /// then keeps reading history; past history it gets a gap notice). Defaults to 64.
    pub queue_len: usize,
    /// Most messages in one poll/long-poll answer or one write to a streaming client.
    /// Defaults to 256.
    pub max_batch: usize,
    /// Most message data in one poll/long-poll answer or one write to a streaming client, in
    /// bytes; a batch stops at the message that reaches it, and one message always goes however
    /// large (its envelope can be up to six times its data: JSON escapes control characters as
    /// `\u00XX`). The rest follows in the next write, or the answer says `"more": true`.
    /// Defaults to 262,144 (256 KiB).
    pub max_batch_bytes: usize,
    /// Most quiet channels (no subscriber, history expired) the memory broker remembers the
    /// epoch and newest offset of, for a day, so that their cursors resume without a false gap
    /// notice; past it the oldest are forgotten first. Channels that never had a message take
    /// no place. About 100 bytes each. Defaults to 1,000,000.
    pub max_idle_channels: usize,
    /// Long-poll hold when the client gives no `?timeout=`, in seconds. Defaults to 30.
    pub longpoll_timeout_secs: u64,
    /// Largest `?timeout=` a long-poll may ask for, in seconds. Defaults to 120.
    pub longpoll_max_timeout_secs: u64,
    /// Interval of heartbeats on stream, iframe and SSE responses, in seconds. Defaults to 15.
    pub heartbeat_secs: u64,
    /// SSE reconnection time sent as `retry:`, in milliseconds. Defaults to 3,000.
    pub sse_retry_ms: u64,
    /// Bytes an iframe (htmlfile) document may grow to before the server ends it and the page
    /// reopens it. Defaults to 131,072 (128 KiB).
    pub iframe_budget: usize,
    /// Interval between server pings on WebSocket connections, in seconds. Defaults to 25.
    pub ws_ping_interval_secs: u64,
    /// How long a WebSocket peer may take to answer a ping, in seconds, before it is closed.
    /// Defaults to 10.
    pub ws_pong_timeout_secs: u64,
    /// On a server with JWT verification, how long an anonymous WebSocket subscribed to nothing
    /// (a bare `/ws`) may go without an `auth` command (or a `subscribe` to a channel open to
    /// anonymous clients) before it is closed with 1008, in seconds from the upgrade.
    /// Defaults to 10.
    pub ws_auth_timeout_secs: u64,
    /// Largest WebSocket message (after reassembly and inflation) a client may send, in bytes;
    /// larger closes with 1009. Defaults to 131,072 (128 KiB); at least `max_message_size` + 1,024,
    /// because a `publish` command wraps the data in JSON (escaping can grow it further).
    pub ws_max_message_size: usize,
    /// Whether to accept permessage-deflate (RFC 7692) when a client offers it. Defaults to true.
    pub ws_compression: bool,
    /// How long a client may take to send its request headers, in seconds (slowloris).
    /// Defaults to 10.
    pub header_read_timeout_secs: u64,
    /// How long a write to a client may stay blocked (the client takes no bytes while the
    /// server has some to send), in seconds, before the connection is closed: SSE, HTTP
    /// streaming, iframe, poll and long-poll answers, and every other HTTP response. The client
    /// resumes from the cursor of the last message it read. (WebSockets on plain TCP close with
    /// 4000 after `ws_ping_interval_secs` + `ws_pong_timeout_secs` instead; over TLS or HTTP/2
    /// this limit applies to them too, whichever ends first.) Defaults to 30.
    pub write_stall_timeout_secs: u64,
    /// How long a client may take to send a request body once its headers are in, in seconds
    /// (a body sent a byte at a time). Past it the request is answered `408 body_timeout` and
    /// the connection closed. Defaults to 30.
    pub body_read_timeout_secs: u64,
    /// On SIGTERM/SIGINT, how long to wait for connections to finish, in seconds. Defaults to 10.
    pub shutdown_grace_secs: u64,
    /// Start the built-in demo publishers (stock ticker, progress job). Defaults to false.
    pub demo: bool,
    /// Serve `POST /admin/disconnect`, which ends every subscriber connection (they resume by
    /// cursor). For tests and for draining a node; unauthenticated, so off by default.
    pub admin_api: bool,
    /// A path (such as `/echo`) at which to serve a WebSocket that echoes every message, for
    /// conformance suites (the Autobahn fuzzing client); `comet serve --ws-echo /echo`. It uses
    /// the subscriber sockets' code and limits. Defaults to empty: no such route.
    pub ws_echo: String,
    /// HS256 secret for client tokens (JWT, RFC 7519; docs/protocol.md "Authentication").
    /// Empty (the default) with no `jwt_public_key_file` means JWT is off: tokens are ignored.
    /// At least 32 bytes (RFC 7518 §3.2; a shorter one is refused at start): use 32 random
    /// bytes, e.g. `openssl rand -base64 32`. Never logged.
    pub jwt_secret: Secret,
    /// Path of a PEM public key verifying client tokens instead of `jwt_secret`: an RSA key
    /// means RS256, a P-256 EC key ES256. Read at start. Defaults to empty (none).
    pub jwt_public_key_file: String,
    /// When set, tokens must carry this `aud` (RFC 7519 §4.1.3). Defaults to empty (`aud` not
    /// checked).
    pub jwt_audience: String,
    /// When set, tokens must carry this `iss` (RFC 7519 §4.1.1). Defaults to empty (not checked).
    pub jwt_issuer: String,
    /// Clock skew allowed past a token's `exp` (and before its `nbf`), in seconds. Defaults to 0.
    pub jwt_leeway_secs: u64,
    /// Name of the cookie a token may come in (after `Authorization: Bearer`, `?token=` and
    /// `?ticket=`). Defaults to `comet_token`.
    pub token_cookie: String,
    /// A key for back-ends: `Authorization: Bearer <key>` may publish (and subscribe) anywhere.
    /// Setting it closes anonymous publishing unless a namespace opens it. Defaults to empty
    /// (none). Never logged.
    pub publish_api_key: Secret,
    /// Origins (`https://example.com`, `scheme://host[:port]`) whose pages may use the server:
    /// checked on WebSocket upgrades and publish/subscribe requests (`403 forbidden_origin`), and
    /// the CORS allow-list of every route. Defaults to empty: any origin, CORS `*` without
    /// credentials.
    pub allowed_origins: Vec<String>,
    /// How long a ticket from `POST /tickets` stays valid, in seconds. Defaults to 60.
    pub ticket_ttl_secs: u64,
    /// How long a publish's idempotency key (`Idempotency-Key`, `"idempotency_key"`) is
    /// remembered, in seconds: a repeat within it publishes nothing and answers the first
    /// cursor (docs/protocol.md "Idempotent publishing"). Defaults to 300.
    pub idempotency_window_secs: u64,
    /// Path of the PEM certificate chain (leaf first) to serve TLS with; set together with
    /// `tls_key_file`. Both empty (the default): plain TCP. Read at start and on SIGHUP
    /// (`comet serve` then serves the new certificate to new connections). ALPN offers `h2`
    /// and `http/1.1`.
    pub tls_cert_file: String,
    /// Path of the PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) of `tls_cert_file`; it must
    /// match the certificate. Defaults to empty (no TLS).
    pub tls_key_file: String,
    /// Rules per namespace, as `[namespace."chat"]` tables (see [`NamespaceRules`]); the table
    /// `[namespace.""]` is for channels without `:` and for namespaces without a table.
    /// Defaults to none: anonymous clients may do what the auth settings above leave open.
    pub namespace: BTreeMap<String, NamespaceRules>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            broker: "memory".to_owned(),
            max_message_size: 64 * 1024,
            max_batch_body: 1024 * 1024,
            max_channels_per_connection: 64,
            max_connections: 50_000,
            max_connections_per_ip: 1000,
            max_longpolls_per_ip: 1000,
            max_connections_per_user: 1000,
            max_tickets_per_user: 100,
            subscribes_per_sec_per_ip: 200,
            publishes_per_sec: 100,
            history_size: 256,
            history_ttl_secs: 600,
            queue_len: 64,
            max_batch: 256,
            max_batch_bytes: 256 * 1024,
            max_idle_channels: 1_000_000,
            longpoll_timeout_secs: 30,
            longpoll_max_timeout_secs: 120,
            heartbeat_secs: 15,
            sse_retry_ms: 3000,
            iframe_budget: 128 * 1024,
            ws_ping_interval_secs: 25,
            ws_pong_timeout_secs: 10,
            ws_auth_timeout_secs: 10,
            ws_max_message_size: 128 * 1024,
            ws_compression: true,
            header_read_timeout_secs: 10,
            write_stall_timeout_secs: 30,
            body_read_timeout_secs: 30,
            shutdown_grace_secs: 10,
            demo: false,
            admin_api: false,
            ws_echo: String::new(),
            jwt_secret: Secret::default(),
            jwt_public_key_file: String::new(),
            jwt_audience: String::new(),
            jwt_issuer: String::new(),
            jwt_leeway_secs: 0,
            token_cookie: "comet_token".to_owned(),
            publish_api_key: Secret::default(),
            allowed_origins: Vec::new(),
            ticket_ttl_secs: 60,
            idempotency_window_secs: 300,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            namespace: BTreeMap::new(),
        }
    }
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML (file plus environment) does not describe a valid configuration.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

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
    ];

    /// The setting names, as in TOML.
    pub const KEYS: &'static [&'static str] = &[
        "listen",
        "broker",
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
        "namespace",
    ];

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
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
        }
        if self.broker.starts_with("rediss://") {
            return Err(ConfigError::Invalid(
                "broker: rediss:// (TLS to Redis) is not built into this server; use redis:// on a trusted \
                 network, or a TLS tunnel to Redis (stunnel, spiped) on 127.0.0.1"
                    .to_owned(),
            ));
        }
        if self.broker != "memory"
            && !["redis://", "redis+sentinel://"]
                .iter()
                .any(|scheme| self.broker.starts_with(scheme))
        {
            // Only the scheme is quoted: the rest of a URL may hold a password.
            let shown = match self.broker.split_once("://") {
                Some((scheme, _)) => format!("a {scheme}:// URL"),
                None => format!("{:?}", self.broker),
            };
            return Err(ConfigError::Invalid(format!(
                "broker must be \"memory\", a redis:// URL or a redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER_NAME URL, got {shown}"
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
        crate::auth::validate(self).map_err(ConfigError::Invalid)?;
        crate::conn::tls::validate(self).map_err(ConfigError::Invalid)?;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_defaults() {
        let dir = std::env::temp_dir().join(format!("comet-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("comet.toml");
        std::fs::write(
            &file,
            "history_size = 10\nheartbeat_secs = 5\nlisten = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let env = [
            ("COMET_HISTORY_SIZE".to_owned(), "20".to_owned()),
            ("COMET_DEMO".to_owned(), "true".to_owned()),
            ("COMET_SERVER".to_owned(), "http://x".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let c = Config::load(Some(&file), env).unwrap();
        assert_eq!(c.history_size, 20);
        assert_eq!(c.heartbeat_secs, 5);
        assert!(c.demo);
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.max_batch, Config::default().max_batch);
    }

    #[test]
    fn the_websocket_limit_must_carry_a_largest_publish() {
        let env = [("COMET_MAX_MESSAGE_SIZE".to_owned(), "200000".to_owned())];
        let err = Config::load(None, env).unwrap_err();
        assert!(
            err.to_string()
                .contains("ws_max_message_size (131072) must be at least"),
            "{err}"
        );
    }

    #[test]
    fn broker_urls_without_tls_support_or_with_passwords_are_refused_clearly() {
        let load = |url: &str| Config::load(None, [("COMET_BROKER".to_owned(), url.to_owned())]);
        let err = load("rediss://:pw@redis.example:6380").unwrap_err().to_string();
        assert!(
            err.contains("rediss:// (TLS to Redis) is not built into this server"),
            "{err}"
        );
        assert!(!err.contains("pw"), "{err}");
        let err = load("redis-cluster://:hunter2@h:1").unwrap_err().to_string();
        assert!(err.contains("got a redis-cluster:// URL"), "{err}");
        assert!(!err.contains("hunter2"), "the password is not repeated: {err}");
        assert!(load("redis://:pw@127.0.0.1:6379").is_ok());
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::load(None, [("COMET_HISTORY_SIZE".to_owned(), "0".to_owned())]).unwrap_err();
        assert!(err.to_string().contains("history_size must be at least 1"), "{err}");
        let err = Config::load(None, [("COMET_HEARTBEAT_SECS".to_owned(), "soon".to_owned())]).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        let dir = std::env::temp_dir().join(format!("comet-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "histroy_size = 1\n").unwrap();
        let err = Config::load(Some(&file), []).unwrap_err();
        assert!(err.to_string().contains("unknown field `histroy_size`"), "{err}");
        assert!(Config::load(Some(Path::new("/nonexistent/comet.toml")), []).is_err());
    }

    #[test]
    fn secrets_from_the_environment_stay_text() {
        let env = [
            ("COMET_PUBLISH_API_KEY".to_owned(), "12345".to_owned()),
            ("COMET_ALLOWED_ORIGINS".to_owned(), "[\"https://a.example\"]".to_owned()),
        ];
        let c = Config::load(None, env).unwrap();
        assert_eq!(c.publish_api_key.expose(), "12345");
        assert_eq!(c.allowed_origins, ["https://a.example"]);
        let bad = [("COMET_ALLOWED_ORIGINS".to_owned(), "[\"*\"]".to_owned())];
        assert!(
            Config::load(None, bad)
                .unwrap_err()
                .to_string()
                .contains("allowed_origins")
        );
    }

    #[test]
    fn the_example_file_shows_the_defaults() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/comet.toml");
        assert_eq!(Config::load(Some(&file), []).unwrap(), Config::default());
        let text = std::fs::read_to_string(&file).unwrap();
        for key in Config::KEYS {
            // Tables cannot be shown with a default value: the example shows one, commented out.
            let shown = if *key == "namespace" {
                "\n# [namespace.".to_owned()
            } else {
                format!("\n{key} = ")
            };
            assert!(text.contains(&shown), "deploy/comet.toml does not show {key}");
        }
    }

    #[test]
    fn every_key_is_listed() {
        for key in Config::KEYS {
            let value = if *key == "listen" || *key == "broker" {
                "\"127.0.0.1:1\"".to_owned()
            } else if ["demo", "ws_compression", "admin_api"].contains(key) {
                "true".to_owned()
            } else if key.starts_with("jwt_") && !key.ends_with("_secs")
                || [
                    "token_cookie",
                    "publish_api_key",
                    "tls_cert_file",
                    "tls_key_file",
                    "ws_echo",
                ]
                .contains(key)
            {
                "\"x\"".to_owned()
            } else if *key == "allowed_origins" {
                "[\"https://example.com\"]".to_owned()
            } else if *key == "namespace" {
                "{ chat = { anonymous_subscribe = false } }".to_owned()
            } else {
                "300".to_owned()
            };
            let text = format!("{key} = {value}");
            let parsed: Result<Config, _> = toml::from_str(&text);
            assert!(parsed.is_ok(), "{key}: {parsed:?}");
        }
    }
}
