//! [`AuthConfig`]: the auth section of the configuration (docs/protocol.md "Authentication"),
//! made by `Config::auth` from the file's keys named on each field.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{NamespaceRules, Secret};

/// The auth settings, typed. No `Default`: take `Config::default().auth()`, whose values are
/// the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `jwt_secret`: the HS256 secret (at least 32 bytes; RFC 7518 §3.2); empty: none.
    pub jwt_secret: Secret,
    /// `jwt_public_key_file`: a PEM public key (RSA: RS256, P-256: ES256) instead of the secret.
    pub jwt_public_key_file: Option<PathBuf>,
    /// `jwt_audience`: the `aud` tokens must carry (RFC 7519 §4.1.3), if any.
    pub jwt_audience: Option<String>,
    /// `jwt_issuer`: the `iss` tokens must carry (RFC 7519 §4.1.1), if any.
    pub jwt_issuer: Option<String>,
    /// `jwt_leeway_secs`: clock skew allowed past `exp` and before `nbf`.
    pub jwt_leeway: Duration,
    /// `token_cookie`: the cookie a token may come in.
    pub token_cookie: String,
    /// `publish_api_key`: the back-ends' key; empty: none.
    pub publish_api_key: Secret,
    /// `allowed_origins`: the pages that may use the server (empty: any, without the cookie).
    pub allowed_origins: Vec<String>,
    /// `ticket_ttl_secs`: how long a ticket stays valid.
    pub ticket_ttl: Duration,
    /// `max_message_size`: the largest message, in bytes, where a namespace sets none.
    pub max_message_size: usize,
    /// `[namespace."…"]`: the rules per namespace (auth/policy.rs).
    pub namespaces: BTreeMap<String, NamespaceRules>,
}
