//! [`Config`]: every setting of the server, with its default, unit and range (deploy/comet.toml
//! shows them all).
//!
//! Sources, later ones winning: the defaults here, a TOML file (`--config comet.toml`), environment
//! variables `COMET_<SETTING>` (e.g. `COMET_HISTORY_SIZE=1000`), then command-line flags
//! (load.rs); then [`Config::validate`] (validate.rs).
//!
//! `Config` is the edge: flat, with the file's keys, `_secs` integers and empty strings for
//! "none". Each subsystem takes its own section instead, typed (`Duration`, `Option<PathBuf>`)
//! and defined where it is used: [`AuthConfig`] (auth), [`LimitsConfig`] (limits), [`TlsConfig`]
//! (the listener's TLS), [`WsConfig`] (WebSocket) and [`SseConfig`] (Server-Sent Events). So
//! those subsystems do not depend on this file; it depends on them.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;

pub use crate::auth::AuthConfig;
use crate::auth::{NamespaceRules, Secret};
pub use crate::conn::tls::TlsConfig;
pub use crate::hooks::HookConfig;
pub use crate::limits::LimitsConfig;
pub use crate::transport::sse::SseConfig;
pub use crate::transport::websocket::WsConfig;
pub use crate::webhooks::WebhookConfig;

mod check;
mod load;
mod sections;
mod validate;

pub use check::{Problem, check_text};

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
    /// sentinels name), or Redis Cluster `redis+cluster://HOST:PORT[,HOST:PORT…]` (seed nodes;
    /// notifications by sharded pub/sub, Redis 7).
    pub broker: String,
    /// A directory where the embedded broker (`broker = "memory"`) keeps every channel's
    /// history, epoch and offset on disk (`comet.redb`), so that a restart loses no
    /// acknowledged message and clients resume without a gap notice (docs/protocol.md
    /// "Durability"). Defaults to empty: history in memory only.
    pub data_dir: String,
    /// When a publish's data is made durable with `data_dir`: `"batch"` (the default; group
    /// commit: one fsync for the publishes that arrive together), `"always"` (one fsync per publish) or
    /// `"never"` (acknowledged before it is on disk; a crash may lose the last second, and
    /// every channel then starts a new epoch). Under `batch` and `always` a publish is
    /// acknowledged only once it is on disk.
    pub fsync: String,
    /// Under `fsync = "batch"`, the most time, in milliseconds, a commit waits to gather more
    /// publishes: it waits as long as the last commit took, but never more than this. Defaults
    /// to 5.
    pub fsync_window_ms: u64,
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
    /// cursor). For tests and for draining a node; unauthenticated, so off by default. Ignored
    /// once `admin_api_key` is set: then every `/admin/*` route needs the key.
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
    /// How long a poller (poll or long-poll client) stays in a presence channel after its last
    /// request, in seconds: it is a member while its requests keep coming at least this often,
    /// sending back the `client` id of the answers (docs/protocol.md "Presence"). With a Redis
    /// broker it is also how long an entry outlives its node (each node renews its own every
    /// third of it), so the members of a node that died leave within it; and how long a node's
    /// subscriber count is believed by the others. Defaults to 30.
    pub presence_ttl_secs: u64,
    /// Where occupancy webhooks are POSTed (docs/protocol.md "Webhooks"): an `http://` URL.
    /// Defaults to empty: no webhooks.
    pub webhook_url: String,
    /// The key of the webhooks' `X-Comet-Signature` (HMAC-SHA256); needed with `webhook_url`.
    /// Never logged.
    pub webhook_secret: Secret,
    /// Where Comet asks the application whether a client may connect (docs/protocol.md
    /// "Hooks"): an `http://` URL, POSTed once per WebSocket, per request of the other
    /// transports and per HTTP publish. Defaults to empty: no connect hook.
    pub connect_hook_url: String,
    /// Where Comet asks whether a client may subscribe to a channel: an `http://` URL, POSTed
    /// per channel subscribed (skipped in namespaces with `subscribe_hook = false`). Defaults to
    /// empty: no subscribe hook.
    pub subscribe_hook_url: String,
    /// Where Comet asks whether a client may publish a message (and the back-end may rewrite
    /// it): an `http://` URL, POSTed per message (skipped in namespaces with `publish_hook =
    /// false`). Defaults to empty: no publish hook.
    pub publish_hook_url: String,
    /// How long a hook may take to answer, in milliseconds; past it the client is refused with
    /// `503 hook_unavailable`. Defaults to 1,000.
    pub hook_timeout_ms: u64,
    /// The request headers the connect hook is shown (a cookie only from same-site pages and
    /// `allowed_origins`). Defaults to `["Cookie", "Authorization"]`.
    pub hook_forward_headers: Vec<String>,
    /// How long the hooks' answers to polling transports (poll, long poll) are kept, by the
    /// forwarded headers, user and channel, in seconds. Defaults to 0: every request asks.
    pub hook_cache_secs: u64,
    /// The key of the server API (docs/protocol.md "Server API"): callers send
    /// `Authorization: Bearer <key>`. Empty (the default): the server API is off, and
    /// `POST /admin/disconnect` is served unauthenticated only with `admin_api = true`; once
    /// a key is set, every `/admin/*` route needs it. Never logged.
    pub admin_api_key: Secret,
    /// A second address (such as `127.0.0.1:9090`) that alone serves `/metrics`, `/admin/*`,
    /// the server API and `GET /channels…` (but `GET /channels/{channel}/presence`, which
    /// clients use), so the public listener exposes only the client surface. Plain HTTP, for a
    /// private network. Defaults to empty: everything on `listen`.
    pub internal_listen: String,
    /// Most messages or channels in one page of the server API (`limit` is capped to it).
    /// Defaults to 1,000.
    pub max_history_page: usize,
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
            data_dir: String::new(),
            fsync: "batch".to_owned(),
            fsync_window_ms: 5,
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
            presence_ttl_secs: 30,
            webhook_url: String::new(),
            webhook_secret: Secret::default(),
            connect_hook_url: String::new(),
            subscribe_hook_url: String::new(),
            publish_hook_url: String::new(),
            hook_timeout_ms: 1000,
            hook_forward_headers: vec!["Cookie".to_owned(), "Authorization".to_owned()],
            hook_cache_secs: 0,
            admin_api_key: Secret::default(),
            internal_listen: String::new(),
            max_history_page: 1000,
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

impl From<&Config> for TlsConfig {
    fn from(config: &Config) -> Self {
        config.tls()
    }
}

/// `text` as an optional value: `None` when empty (the file's way of saying "none").
fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

#[cfg(test)]
mod tests;
