//! Per-namespace rules (`[namespace."chat"]` in comet.toml): what anonymous clients may do,
//! whether WebSocket clients may publish, and overrides of the message size and of history.
//!
//! The namespace of `chat:lobby` is `chat`; a channel without `:` is in the namespace `""`. A
//! namespace without its own table follows `[namespace.""]`, and without that the built-in
//! defaults, which keep a server with no auth settings fully open.

use comet_core::ChannelName;
use serde::Deserialize;

use super::AuthConfig;

/// The rules of one namespace. Every field is optional; an unset one takes the default given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceRules {
    /// Whether clients without a token may subscribe. Defaults to true unless a JWT key
    /// (`jwt_secret` or `jwt_public_key_file`) is configured: once tokens exist, channels are
    /// closed to anonymous clients unless opened here.
    pub anonymous_subscribe: Option<bool>,
    /// Whether clients without a token may publish. Defaults to true unless a JWT key or a
    /// `publish_api_key` is configured.
    pub anonymous_publish: Option<bool>,
    /// Whether WebSocket clients may publish with the `publish` command at all (tokens
    /// included; the publish API key is exempt). Defaults to true.
    pub client_publish: Option<bool>,
    /// Largest message in this namespace, in bytes; overrides `max_message_size` for HTTP and
    /// WebSocket publishing (a WebSocket message stays bounded by `ws_max_message_size` too).
    /// Defaults to `max_message_size`. At least 1.
    pub max_message_size: Option<usize>,
    /// Messages of history kept per channel in this namespace; overrides `history_size`.
    /// Defaults to `history_size`. At least 1.
    pub history_size: Option<usize>,
    /// Age after which this namespace's history drops a message, in seconds; overrides
    /// `history_ttl_secs`. Defaults to `history_ttl_secs`. At least 1.
    pub history_ttl_secs: Option<u64>,
    /// Whether Comet tracks who is subscribed (`GET /channels/{channel}/presence`, the
    /// WebSocket `presence` command; docs/protocol.md "Presence"). Defaults to false.
    pub presence: Option<bool>,
    /// Whether joins and leaves are also pushed to the channel's subscribers (`comet.join` /
    /// `comet.leave`); needs `presence = true`. Defaults to false.
    pub join_leave: Option<bool>,
    /// Whether subscribing goes through `subscribe_hook_url` (when it is set; docs/protocol.md
    /// "Hooks"). Defaults to true.
    pub subscribe_hook: Option<bool>,
    /// Whether publishing goes through `publish_hook_url` (when it is set). Defaults to true.
    pub publish_hook: Option<bool>,
}

impl NamespaceRules {
    /// The rule names, as in a `[namespace."…"]` table.
    pub const KEYS: &'static [&'static str] = &[
        "anonymous_subscribe",
        "anonymous_publish",
        "client_publish",
        "max_message_size",
        "history_size",
        "history_ttl_secs",
        "presence",
        "join_leave",
        "subscribe_hook",
        "publish_hook",
    ];
}

/// The rules that apply to `channel`.
pub(crate) fn rules<'a>(config: &'a AuthConfig, channel: &ChannelName) -> Option<&'a NamespaceRules> {
    let ns = channel.namespace().unwrap_or("");
    config.namespaces.get(ns).or_else(|| config.namespaces.get(""))
}

/// Whether subscribing to `channel` goes through the subscribe hook, when one is set.
pub(crate) fn subscribe_hook(config: &AuthConfig, channel: &ChannelName) -> bool {
    rules(config, channel).and_then(|r| r.subscribe_hook).unwrap_or(true)
}

/// Whether publishing to `channel` goes through the publish hook, when one is set.
pub(crate) fn publish_hook(config: &AuthConfig, channel: &ChannelName) -> bool {
    rules(config, channel).and_then(|r| r.publish_hook).unwrap_or(true)
}

/// Whether a JWT verification key is configured.
pub(crate) fn jwt_configured(config: &AuthConfig) -> bool {
    !config.jwt_secret.is_empty() || config.jwt_public_key_file.is_some()
}

/// Whether anonymous clients may subscribe to `channel`.
pub(crate) fn anonymous_subscribe(config: &AuthConfig, channel: &ChannelName) -> bool {
    rules(config, channel)
        .and_then(|r| r.anonymous_subscribe)
        .unwrap_or_else(|| !jwt_configured(config))
}

/// Whether anonymous clients may publish to `channel`.
pub(crate) fn anonymous_publish(config: &AuthConfig, channel: &ChannelName) -> bool {
    rules(config, channel)
        .and_then(|r| r.anonymous_publish)
        .unwrap_or_else(|| !jwt_configured(config) && config.publish_api_key.is_empty())
}

/// Whether WebSocket clients may publish to `channel`.
pub(crate) fn client_publish(config: &AuthConfig, channel: &ChannelName) -> bool {
    rules(config, channel).and_then(|r| r.client_publish).unwrap_or(true)
}

/// Whether `channel`'s namespace tracks presence.
pub(crate) fn presence(config: &AuthConfig, channel: &ChannelName) -> bool {
    rules(config, channel).and_then(|r| r.presence).unwrap_or(false)
}

/// Whether `channel`'s namespace pushes joins and leaves to its subscribers.
pub(crate) fn join_leave(config: &AuthConfig, channel: &ChannelName) -> bool {
    rules(config, channel).and_then(|r| r.join_leave).unwrap_or(false) && presence(config, channel)
}

/// The largest message `channel` accepts, in bytes.
pub(crate) fn max_message_size(config: &AuthConfig, channel: &ChannelName) -> usize {
    rules(config, channel)
        .and_then(|r| r.max_message_size)
        .unwrap_or(config.max_message_size)
}

/// The largest message any namespace accepts: the HTTP body limit must let it through.
pub fn largest_message_size(config: &AuthConfig) -> usize {
    config
        .namespaces
        .values()
        .filter_map(|r| r.max_message_size)
        .fold(config.max_message_size, usize::max)
}

/// Checks the namespace tables.
///
/// # Errors
/// A message naming the bad table.
pub(crate) fn validate(config: &AuthConfig) -> Result<(), String> {
    for (name, rules) in &config.namespaces {
        if !name.is_empty() && (name.contains(':') || ChannelName::new(name).is_err()) {
            return Err(format!(
                "namespace {name:?} is not a namespace: use the part of a channel name before its first ':'"
            ));
        }
        if rules.join_leave == Some(true) && rules.presence != Some(true) {
            return Err(format!("namespace {name:?}: join_leave = true needs presence = true"));
        }
        for (setting, zero) in [
            ("max_message_size", rules.max_message_size == Some(0)),
            ("history_size", rules.history_size == Some(0)),
            ("history_ttl_secs", rules.history_ttl_secs == Some(0)),
        ] {
            if zero {
                return Err(format!("namespace {name:?}: {setting} must be at least 1"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    #[test]
    fn defaults_are_open_without_auth_and_closed_with_it() {
        let mut config = crate::config::Config::default().auth();
        assert!(anonymous_subscribe(&config, &ch("a")) && anonymous_publish(&config, &ch("chat:x")));
        config.publish_api_key = "k".into();
        assert!(anonymous_subscribe(&config, &ch("a")) && !anonymous_publish(&config, &ch("a")));
        config.jwt_secret = "s".into();
        assert!(!anonymous_subscribe(&config, &ch("a")));
        assert!(client_publish(&config, &ch("a")));
    }

    #[test]
    fn namespace_tables_and_the_fallback() {
        let config: crate::config::Config = toml::from_str(
            "jwt_secret = \"s\"\n[namespace.\"\"]\nanonymous_subscribe = true\n\
             [namespace.chat]\nclient_publish = false\nmax_message_size = 10\n",
        )
        .unwrap();
        let config = config.auth();
        assert!(anonymous_subscribe(&config, &ch("plain")));
        assert!(
            anonymous_subscribe(&config, &ch("other:x")),
            "falls back to the \"\" table"
        );
        assert!(!anonymous_subscribe(&config, &ch("chat:x")), "chat has its own table");
        assert!(!client_publish(&config, &ch("chat:x")));
        assert_eq!(max_message_size(&config, &ch("chat:x")), 10);
        assert_eq!(max_message_size(&config, &ch("x")), config.max_message_size);
        assert_eq!(largest_message_size(&config), config.max_message_size);
        assert!(validate(&config).is_ok());
        let bad: crate::config::Config = toml::from_str("[namespace.\"a:b\"]\n").unwrap();
        assert!(validate(&bad.auth()).unwrap_err().contains("\"a:b\""));
    }
}
