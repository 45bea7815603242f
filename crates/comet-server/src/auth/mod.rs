//! Authentication and authorization (docs/protocol.md "Authentication"):
//!
//! - `token`: JWT verification (HS256 secret, or RS256/ES256 public key);
//! - [`policy`]: per-namespace rules for anonymous clients and WebSocket publishing;
//! - `tickets`: single-use connection tickets (`?ticket=`; issued by `POST /tickets`);
//! - `origin`: the `allowed_origins` check on requests that publish or subscribe (WebSocket
//!   upgrades included) and on the cookie credential.
//!
//! What a credential's expiry ends is the transports' business: a stream's body ends
//! (transport/streaming.rs), a WebSocket closes with 1008.
//!
//! Every route that publishes or subscribes takes an [`Identity`] (an axum extractor): who the
//! caller is, from (first match wins) `Authorization: Bearer`, `?token=`, `?ticket=`, or the
//! `token_cookie` cookie. A bad credential is `401` before anything else happens; no credential
//! is the anonymous identity. Then [`Identity::authorize`] decides per channel.

mod config;
pub mod error;
mod glob;
mod identity;
pub(crate) mod origin;
pub mod policy;
pub(crate) mod tickets;
pub(crate) mod token;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Query;
use http::request::Parts;
use serde::Deserialize;

pub use self::config::AuthConfig;
pub use self::error::{Action, AuthError};
pub use self::identity::Identity;
use self::identity::Principal;
pub use self::policy::NamespaceRules;
use self::tickets::Tickets;
use self::token::Verifier;

/// Credentials that expire further away than this are treated as never expiring: every
/// deadline computed from one (`Instant::now() + remaining`) stays representable. 100 years.
pub const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A secret setting (`jwt_secret`, `publish_api_key`): its `Debug` never shows the value, so a
/// logged `Config` leaks nothing. Empty means unset.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the setting is unset.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "[redacted]" })
    }
}

/// What a verified token grants: its subject and the channel patterns of its `comet` claim.
#[derive(Debug, PartialEq, Eq)]
pub struct Grants {
    /// The token's `sub`.
    pub sub: String,
    /// Patterns of channels the holder may subscribe to.
    pub subscribe: Vec<String>,
    /// Patterns of channels the holder may publish to.
    pub publish: Vec<String>,
    /// The `comet.info` object, as JSON text (at most [`MAX_INFO`] bytes): what presence
    /// shows of the holder (docs/protocol.md "Presence").
    pub info: Option<Arc<str>>,
}

/// The largest `comet.info` object a token may carry, in bytes of JSON.
pub const MAX_INFO: usize = 1024;

/// Where the credential of a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `Authorization: Bearer`.
    Bearer,
    /// `?token=`.
    Query,
    /// `?ticket=`.
    Ticket,
    /// The `token_cookie` cookie.
    Cookie,
}

/// The credential of a request and where it came from, first match winning: the
/// `Authorization: Bearer` header, `?token=`, `?ticket=`, the cookie named `cookie` (when
/// given: `None` where [`origin::cookie_allowed`] says the cookie does not count).
pub(crate) fn credential(parts: &Parts, cookie: Option<&str>) -> Option<(Source, String)> {
    // Header values are read lossily: one with bytes that are not visible ASCII is still a
    // credential given (a bad one: `401`), not the absence of one.
    let text = |v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    let bearer = parts
        .headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .map(text)
        .find_map(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim().to_owned())
        });
    if let Some(token) = bearer {
        return Some((Source::Bearer, token));
    }
    // As pairs, so a parameter given twice is still given (the first one counts) rather than a
    // query that fails to parse and so carries no credential.
    let query = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let param = |name: &str| {
        query
            .iter()
            .find(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.clone())
    };
    if let Some(token) = param("token") {
        return Some((Source::Query, token));
    }
    if let Some(ticket) = param("ticket") {
        return Some((Source::Ticket, ticket));
    }
    let cookie = cookie?;
    parts
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .map(text)
        .find_map(|v| {
            v.split(';').find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                (name == cookie && !value.is_empty()).then(|| value.trim_matches('"').to_owned())
            })
        })
        .map(|token| (Source::Cookie, token))
}

/// Constant-time comparison, so the API key cannot be guessed byte by byte from timings.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The verifier state.
#[derive(Debug)]
enum Jwt {
    /// No JWT key configured: tokens are ignored (the server is as open as its namespaces).
    Off,
    /// Verifies tokens (boxed: the key and validation are large, the other variants tiny).
    Ready(Box<Verifier>),
    /// A key is configured but unusable: every token is refused (fail closed).
    Broken(String),
}

/// What the auth layer shares across requests: its settings, the verifier, the outstanding
/// tickets. Built once with the [`AppState`](crate::AppState) (its `auth`).
#[derive(Debug)]
pub struct Auth {
    config: AuthConfig,
    jwt: Jwt,
    pub(crate) tickets: Tickets,
}

impl Auth {
    /// The auth state for `config`. A key file that cannot be used (it was checked by
    /// `Config::validate`, so it changed since) is logged and makes every token fail.
    pub fn new(config: AuthConfig) -> Arc<Self> {
        let jwt = match Verifier::from_config(&config) {
            Ok(None) => Jwt::Off,
            Ok(Some(v)) => Jwt::Ready(Box::new(v)),
            Err(e) => {
                tracing::error!(error = %e, "JWT key unusable; every token will be refused");
                Jwt::Broken(e)
            }
        };
        Arc::new(Self {
            tickets: Tickets::new(config.ticket_ttl),
            jwt,
            config,
        })
    }

    /// The settings, for the policy checks ([`Identity::authorize`]).
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Whether a JWT key is configured (even an unusable one): tokens are verified.
    pub fn jwt_enabled(&self) -> bool {
        !matches!(self.jwt, Jwt::Off)
    }

    /// Verifies a token (the WebSocket `auth` command, `?token=`, a cookie).
    ///
    /// # Errors
    /// [`AuthError`] with the reason.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        match &self.jwt {
            Jwt::Ready(v) => v.verify(token),
            Jwt::Broken(e) => Err(AuthError::Misconfigured(e.clone())),
            Jwt::Off => Err(AuthError::JwtOff),
        }
    }

    /// The identity a request proves.
    ///
    /// # Errors
    /// A credential that is given but not valid.
    pub(crate) async fn identify(
        &self,
        parts: &Parts,
        shared: Option<&dyn comet_core::SharedStore>,
    ) -> Result<Identity, AuthError> {
        let config = &self.config;
        let cookie = origin::cookie_allowed(&config.allowed_origins, &parts.headers, &parts.uri)
            .then_some(config.token_cookie.as_str());
        let Some((source, credential)) = credential(parts, cookie) else {
            return Ok(Identity::ANONYMOUS);
        };
        let result = match source {
            Source::Ticket => self.tickets.redeem(&credential, shared).await,
            Source::Bearer
                if !config.publish_api_key.is_empty()
                    && same_secret(credential.as_bytes(), config.publish_api_key.expose().as_bytes()) =>
            {
                Ok(Identity {
                    principal: Principal::Backend,
                    expires_at: None,
                })
            }
            // With JWT off, tokens mean nothing (today's open behaviour), except that a wrong
            // API key must not pass silently as anonymous.
            _ if matches!(self.jwt, Jwt::Off) => match source {
                Source::Bearer if !config.publish_api_key.is_empty() => Err(AuthError::BadApiKey),
                _ => Ok(Identity::ANONYMOUS),
            },
            _ => self.verify(&credential),
        };
        if let Err(e) = &result {
            tracing::debug!(?source, reason = %e, "credential refused");
        }
        result
    }
}

/// Checks the auth settings of `config` (called by `Config::validate`).
///
/// # Errors
/// A message naming the bad setting.
pub(crate) fn validate(config: &AuthConfig) -> Result<(), String> {
    Verifier::from_config(config)?;
    policy::validate(config)?;
    origin::validate(config)?;
    let cookie = &config.token_cookie;
    if cookie.is_empty() || !cookie.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(format!(
            "token_cookie {cookie:?} is not a cookie name ([A-Za-z0-9._-]+)"
        ));
    }
    if config.ticket_ttl.is_zero() {
        return Err("ticket_ttl_secs must be at least 1".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut req = http::Request::builder().uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn credential_sources_in_order() {
        let c = |p: &Parts| credential(p, Some("comet_token"));
        assert_eq!(c(&parts("/sub/a", &[])), None);
        assert_eq!(
            c(&parts(
                "/sub/a?token=q&ticket=t",
                &[("cookie", "comet_token=k"), ("authorization", "Bearer  h ")]
            )),
            Some((Source::Bearer, "h".into()))
        );
        assert_eq!(
            c(&parts("/sub/a?token=q&ticket=t", &[])),
            Some((Source::Query, "q".into()))
        );
        assert_eq!(
            c(&parts("/sub/a?x=1&ticket=t", &[])),
            Some((Source::Ticket, "t".into()))
        );
        assert_eq!(
            c(&parts("/sub/a?token=q&token=r&token=q", &[])),
            Some((Source::Query, "q".into()))
        );
        let not_ascii = http::HeaderValue::from_bytes(b"Bearer \xff").unwrap();
        let mut odd = parts("/sub/a", &[]);
        odd.headers.insert(http::header::AUTHORIZATION, not_ascii);
        assert_eq!(c(&odd), Some((Source::Bearer, "\u{fffd}".into())));
        assert_eq!(
            c(&parts(
                "/sub/a",
                &[("cookie", "a=b; comet_token=k; c=d"), ("authorization", "Basic eA==")]
            )),
            Some((Source::Cookie, "k".into()))
        );
    }

    /// A token that expires beyond any clock (a valid `exp` of `u64::MAX`) does not expire,
    /// rather than overflow the deadline arithmetic.
    #[test]
    fn expiry_beyond_any_clock_is_never() {
        let far = Identity {
            principal: Principal::Backend,
            expires_at: Some(u64::MAX),
        };
        assert_eq!(far.remaining(), None);
        assert_eq!(far.expires_at(), Some(u64::MAX));
        let past = Identity {
            principal: Principal::Backend,
            expires_at: Some(1),
        };
        assert_eq!(past.remaining(), Some(Duration::ZERO));
        let soon = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 60;
        let soon = Identity {
            principal: Principal::Backend,
            expires_at: Some(soon),
        };
        assert!(soon.remaining().is_some_and(|left| left <= Duration::from_secs(60)));
    }

    #[test]
    fn secrets_do_not_debug() {
        let config = AuthConfig {
            jwt_secret: "hunter2".into(),
            ..crate::config::Config::default().auth()
        };
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(same_secret(b"abc", b"abc") && !same_secret(b"abc", b"abd") && !same_secret(b"abc", b"ab"));
    }
}
