//! JWT verification (RFC 7519) with `jsonwebtoken` on the aws-lc-rs backend: HS256 with
//! `jwt_secret`, or RS256/ES256 with the public key PEM in `jwt_public_key_file` (the algorithm
//! follows the key: an RSA key means RS256, a P-256 key ES256). Only that one algorithm is
//! accepted, so `alg: none` and algorithm confusion (an HS256 token signed with the public key)
//! fail (RFC 8725 §3.1).
//!
//! Claims: `sub` and `exp` are required; `aud` and `iss` are checked when `jwt_audience` /
//! `jwt_issuer` are set (and then required); `comet: {"subscribe": [...], "publish": [...]}`
//! holds the glob patterns of the `glob` module.

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// The shortest `jwt_secret` accepted, in bytes: the output size of SHA-256 (RFC 7518 §3.2).
pub(crate) const MIN_HS256_SECRET_LEN: usize = 32;
use serde::Deserialize;

use super::AuthConfig;
use super::error::AuthError;
use super::{Grants, Identity, MAX_INFO};

/// The claims Comet reads; others are ignored. `sub` and `exp` are required, but optional
/// here so that their absence is reported as such (by the validation) rather than as malformed.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    #[serde(default)]
    comet: CometClaim,
}

/// The `comet` claim: what the holder may do, as channel patterns.
#[derive(Debug, Default, Deserialize)]
struct CometClaim {
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    /// What presence shows of the holder: a JSON object.
    #[serde(default)]
    info: Option<serde_json::Value>,
}

/// Verifies tokens with one key and one algorithm.
pub(crate) struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// Seconds of clock skew allowed past `exp` (`jwt_leeway_secs`).
    pub(crate) leeway: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// The verifier `config` asks for, `Ok(None)` when JWT is off.
    ///
    /// # Errors
    /// Both a secret and a key file, an unreadable file, or a PEM that is neither an RSA nor an
    /// EC public key; the message names the setting.
    pub(crate) fn from_config(config: &AuthConfig) -> Result<Option<Self>, String> {
        let secret = config.jwt_secret.expose();
        let (key, algorithm) = match (secret.is_empty(), config.jwt_public_key_file.as_deref()) {
            (true, None) => return Ok(None),
            (false, Some(_)) => {
                return Err("set jwt_secret (HS256) or jwt_public_key_file (RS256/ES256), not both".into());
            }
            (false, None) => {
                // RFC 7518 §3.2: a key as long as the hash output (256 bits for HS256) or
                // longer MUST be used; a short one can be found by brute force offline from a
                // single token.
                if secret.len() < MIN_HS256_SECRET_LEN {
                    return Err(format!(
                        "jwt_secret is {} bytes; HS256 needs at least {MIN_HS256_SECRET_LEN} (RFC 7518 §3.2): \
                         generate one with `openssl rand -base64 32`",
                        secret.len()
                    ));
                }
                (DecodingKey::from_secret(secret.as_bytes()), Algorithm::HS256)
            }
            (true, Some(path)) => {
                let file = path.display();
                let pem = std::fs::read(path).map_err(|e| format!("jwt_public_key_file {file}: {e}"))?;
                if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                    (key, Algorithm::ES256)
                } else if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                    (key, Algorithm::RS256)
                } else {
                    return Err(format!(
                        "jwt_public_key_file {file}: not a PEM RSA or EC (P-256) public key"
                    ));
                }
            }
        };
        let mut validation = Validation::new(algorithm);
        let mut required = vec!["exp", "sub"];
        let leeway = config.jwt_leeway.as_secs();
        validation.leeway = leeway;
        // RFC 7519 §4.1.5: not to be accepted before `nbf` (when the token has one).
        validation.validate_nbf = true;
        match &config.jwt_audience {
            None => validation.validate_aud = false,
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
        }
        if let Some(issuer) = &config.jwt_issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Some(Self {
            key,
            validation,
            leeway,
        }))
    }

    /// The identity `token` proves.
    ///
    /// # Errors
    /// [`AuthError::Expired`] or [`AuthError::Invalid`] with the reason (never the token).
    pub(crate) fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
            let expected = &self.validation.algorithms;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm => {
                    AuthError::Invalid(format!("algorithm not accepted; this server accepts only {expected:?}"))
                }
                ErrorKind::InvalidAudience => AuthError::Invalid("token is for another audience (aud)".into()),
                ErrorKind::InvalidIssuer => AuthError::Invalid("token is from another issuer (iss)".into()),
                ErrorKind::MissingRequiredClaim(claim) => AuthError::Invalid(format!("claim {claim:?} is missing")),
                ErrorKind::ImmatureSignature => AuthError::Invalid("token not valid yet (nbf)".into()),
                ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                    AuthError::Invalid(format!(
                        "malformed token, or an unsupported algorithm such as \"none\" \
                         (this server accepts only {expected:?})"
                    ))
                }
                other => AuthError::Invalid(format!("{other:?}")),
            }
        })?;
        let Claims { sub, exp, comet } = data.claims;
        let (Some(sub), Some(exp)) = (sub, exp) else {
            return Err(AuthError::Invalid("claims \"sub\" and \"exp\" are required".into()));
        };
        // RFC 7519 §4.1.4: valid only *before* `exp` (jsonwebtoken also accepts the second of
        // `exp` itself), so a stream ended at `exp` cannot reopen with the same token.
        let expires_at = exp.saturating_add(self.leeway);
        if expires_at <= jsonwebtoken::get_current_timestamp() {
            return Err(AuthError::Expired);
        }
        let info = match comet.info {
            None => None,
            Some(info @ serde_json::Value::Object(_)) => {
                let text = info.to_string();
                if text.len() > MAX_INFO {
                    return Err(AuthError::Invalid(format!(
                        "claim \"comet.info\" is {} bytes of JSON; at most {MAX_INFO} are allowed",
                        text.len()
                    )));
                }
                Some(Arc::from(text))
            }
            Some(_) => return Err(AuthError::Invalid("claim \"comet.info\" must be a JSON object".into())),
        };
        Ok(Identity::user(
            Arc::new(Grants {
                sub,
                subscribe: comet.subscribe,
                publish: comet.publish,
                info,
            }),
            expires_at,
        ))
    }
}
