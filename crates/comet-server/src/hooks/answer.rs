//! The back-end's answers (docs/protocol.md "Hooks"): `{"result":{…}}` or
//! `{"error":{"code":4xx,"message":"…"}}`; anything else is a failed hook.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Map, Value};

use crate::auth::{Identity, MAX_INFO};
use crate::error::ApiError;

/// A hook's answer.
#[derive(Debug, PartialEq)]
pub(super) enum Answer {
    /// Allowed, with the result's fields.
    Allow(Map<String, Value>),
    /// Refused with this status (4xx) and message.
    Refuse { status: StatusCode, message: String },
}

impl Answer {
    /// Reads an answer's body.
    ///
    /// # Errors
    /// Why it is neither a result nor a refusal (the hook failed).
    pub(super) fn parse(body: &[u8]) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(body).map_err(|e| format!("its answer is not JSON: {e}"))?;
        if let Some(result) = value.get("result") {
            return match result {
                Value::Object(fields) => Ok(Answer::Allow(fields.clone())),
                other => Err(format!("its result must be an object, got {other}")),
            };
        }
        if let Some(error) = value.get("error") {
            let status = error
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(StatusCode::is_client_error)
                .ok_or_else(|| format!("its error code must be a 4xx status, got {}", error["code"]))?;
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("refused by the application")
                .to_owned();
            return Ok(Answer::Refuse { status, message });
        }
        Err("its answer has neither \"result\" nor \"error\"".into())
    }
}

/// What a connect hook's result may set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ConnectResult {
    /// `user`: who the client is (the subject presence and the other hooks see).
    user: Option<String>,
    /// `info`: the presence info object, as JSON text (at most [`MAX_INFO`] bytes).
    info: Option<Arc<str>>,
    /// `expire_at`: when the connection's right ends, in seconds since the Unix epoch.
    expire_at: Option<u64>,
}

impl ConnectResult {
    /// Reads the result's fields.
    ///
    /// # Errors
    /// `503 hook_unavailable` (through `failed`) for fields of the wrong type.
    pub(super) fn parse(fields: &Map<String, Value>) -> Result<Self, String> {
        let user = match fields.get("user") {
            None | Some(Value::Null) => None,
            Some(Value::String(user)) => Some(user.clone()),
            Some(other) => return Err(format!("its result's user must be a string, got {other}")),
        };
        let info = match fields.get("info") {
            None | Some(Value::Null) => None,
            Some(info @ Value::Object(_)) => {
                let text = info.to_string();
                if text.len() > MAX_INFO {
                    return Err(format!("its result's info is {} bytes; at most {MAX_INFO}", text.len()));
                }
                Some(Arc::from(text))
            }
            Some(other) => return Err(format!("its result's info must be an object, got {other}")),
        };
        let expire_at = match fields.get("expire_at") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| format!("its result's expire_at must be seconds since the epoch, got {v}"))?,
            ),
        };
        Ok(Self { user, info, expire_at })
    }

    /// The identity to go on with: `base` with this result's user, info and expiry.
    ///
    /// # Errors
    /// `401 expired` for an `expire_at` already past.
    pub(super) fn identity(&self, base: Identity) -> Result<Identity, ApiError> {
        let identity = base.with_hook(self.user.as_deref(), self.info.clone(), self.expire_at);
        if identity.remaining().is_some_and(|left| left.is_zero()) {
            return Err(crate::auth::AuthError::Expired.into());
        }
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_results_refusals_or_failures() {
        let allow = Answer::parse(br#"{"result":{"user":"u"}}"#).unwrap();
        assert_eq!(allow, Answer::Allow(json!({"user": "u"}).as_object().unwrap().clone()));
        assert_eq!(
            Answer::parse(br#"{"error":{"code":403,"message":"no"}}"#).unwrap(),
            Answer::Refuse {
                status: StatusCode::FORBIDDEN,
                message: "no".into()
            }
        );
        for bad in [
            &b"not json"[..],
            br#"{"result":[]}"#,
            br#"{"error":{"code":500}}"#,
            br#"{"error":{"code":"403"}}"#,
            br#"{}"#,
        ] {
            assert!(Answer::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn connect_results_are_checked() {
        let parse = |v: Value| ConnectResult::parse(v.as_object().unwrap());
        let ok = parse(json!({"user": "alice", "info": {"name": "A"}, "expire_at": 4_000_000_000u64})).unwrap();
        assert_eq!(ok.user.as_deref(), Some("alice"));
        assert_eq!(ok.info.as_deref(), Some(r#"{"name":"A"}"#));
        assert!(parse(json!({"user": 7})).is_err());
        assert!(parse(json!({"info": "x"})).is_err());
        assert!(parse(json!({"info": {"pad": "x".repeat(MAX_INFO)}})).is_err());
        assert!(parse(json!({"expire_at": -1})).is_err());
        let past = parse(json!({"user": "bob", "expire_at": 1})).unwrap();
        assert_eq!(past.identity(Identity::ANONYMOUS).unwrap_err().code, "unauthorized");
        let alice = ok.identity(Identity::ANONYMOUS).unwrap();
        assert_eq!(alice.subject(), Some("alice"));
    }
}
