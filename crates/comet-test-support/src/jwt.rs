//! Tokens (JWT, RFC 7519) for tests: claims with Comet's grants (docs/protocol.md "Tokens"),
//! signed with a test secret or key.

use jsonwebtoken::{Algorithm, EncodingKey, Header, get_current_timestamp};
use serde_json::{Value, json};

/// An HS256 secret of the length RFC 7518 §3.2 asks for (at least 32 bytes).
pub const SECRET: &str = "test-secret-of-at-least-32-bytes!!";

/// Claims valid for `secs` seconds from now (negative: expired) for subject `sub`, granting
/// the channel patterns `subscribe` and `publish`.
pub fn claims(sub: &str, secs: i64, subscribe: &[&str], publish: &[&str]) -> Value {
    let exp = get_current_timestamp().saturating_add_signed(secs);
    json!({"sub": sub, "exp": exp, "comet": {"subscribe": subscribe, "publish": publish}})
}

/// `claims` signed under `header` with `key`.
pub fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).expect("encode token")
}

/// An HS256 token signed with `secret`.
pub fn hs256(secret: &str, claims: &Value) -> String {
    sign(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// An HS256 token signed with [`SECRET`], from [`claims`].
pub fn token(sub: &str, secs: i64, subscribe: &[&str], publish: &[&str]) -> String {
    hs256(SECRET, &claims(sub, secs, subscribe, publish))
}

/// A key of `keys/` in this crate: `rs256-private.pem`, `rs256-public.pem`,
/// `es256-private.pem`, `es256-public.pem` (made for tests; never use them elsewhere).
pub fn key_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("keys").join(name)
}

/// Namespace rules opening `public:` to anonymous subscribers (`[namespace."public"]
/// anonymous_subscribe = true`), for servers that otherwise require tokens.
pub fn public_namespace() -> std::collections::BTreeMap<String, comet_server::auth::NamespaceRules> {
    let rules = comet_server::auth::NamespaceRules {
        anonymous_subscribe: Some(true),
        ..comet_server::auth::NamespaceRules::default()
    };
    std::collections::BTreeMap::from([("public".to_owned(), rules)])
}
