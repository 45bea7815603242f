//! The JSON of the `ws` transport (docs/protocol.md "ws"): the commands a client sends and the
//! text the server answers with. Pure encoding and decoding; the session decides what to send.

use bytes::Bytes;
use comet_core::{Gap, Message};
use serde::{Deserialize, Serialize};

use crate::auth::Secret;
use crate::transport::envelope::{gap_object, slot, write_envelope};

/// One client text message: a command plus the optional `ref` that answers to it echo.
#[derive(Debug, Deserialize)]
pub(super) struct Request {
    /// The client's correlation tag, echoed by `ack`, `pong` and `error`.
    #[serde(rename = "ref")]
    pub(super) reference: Option<Ref>,
    /// What to do.
    #[serde(flatten)]
    pub(super) command: Command,
}

/// A request's `ref`: a JSON string or number, echoed as it came (clients of other push servers
/// number their requests). `null` is no `ref`; anything else makes the command a bad one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ref {
    /// `"ref":"a1"`.
    Text(String),
    /// `"ref":7`: echoed as serde_json writes the number (an integer as sent).
    Number(serde_json::Number),
}

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(text) => f.write_str(text),
            Self::Number(number) => write!(f, "{number}"),
        }
    }
}

impl Serialize for Ref {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => serializer.serialize_str(text),
            Self::Number(number) => number.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Ref {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Ref;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Ref, E> {
                Ok(Ref::Text(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Ref, E> {
                Ok(Ref::Text(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Ref, E> {
                Ok(Ref::Number(v.into()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Ref, E> {
                Ok(Ref::Number(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Ref, E> {
                serde_json::Number::from_f64(v)
                    .map(Ref::Number)
                    .ok_or_else(|| E::custom("ref is not a finite number"))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A client command. Unknown fields are ignored, so clients may send newer fields.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(super) enum Command {
    /// Subscribe to `channel` (or replace the subscription to it) from `since`: a cursor, a
    /// position, `earliest`, or absent for the live edge.
    Subscribe { channel: String, since: Option<String> },
    /// Stop receiving `channel`.
    Unsubscribe { channel: String },
    /// Publish `data` on `channel`, as `POST /pub/{channel}?event=` would.
    Publish {
        channel: String,
        event: Option<String>,
        data: String,
        /// At most once per key and channel (docs/protocol.md "Idempotent publishing").
        #[serde(default)]
        idempotency_key: Option<String>,
    },
    /// An application-level ping, answered by `pong`.
    Ping,
    /// Who is in `channel` (docs/protocol.md "Presence"), answered by `presence`.
    Presence { channel: String },
    /// Authenticate (or refresh before `exp`) with a token: for browsers, whose `WebSocket`
    /// cannot send an `Authorization` header. Answered by `authenticated`; a bad token closes
    /// the socket with 1008. Its `Debug` does not show the token.
    Auth { token: Secret },
}

/// A text message that is not a command; the socket stays open.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(super) struct BadCommand {
    /// The `ref` of the message, when one could be read.
    pub(super) reference: Option<Ref>,
    /// Why it is not a command.
    pub(super) message: String,
}

/// The longest parser error quoted in a [`BadCommand`] message, in bytes.
const MAX_REASON: usize = 160;

impl Request {
    /// Parses one text message.
    ///
    /// # Errors
    /// [`BadCommand`] for anything but a JSON object with a known `type` and its fields.
    pub(super) fn parse(text: &[u8]) -> Result<Self, BadCommand> {
        serde_json::from_slice(text).map_err(|e| {
            /// Only the `ref`, so even a malformed command's error can carry it.
            #[derive(Deserialize)]
            struct RefOnly {
                #[serde(rename = "ref")]
                reference: Option<Ref>,
            }
            // serde quotes what it rejects (an unknown `type` in full): cut, so the answer stays
            // small whatever was sent.
            let mut why = e.to_string();
            if why.len() > MAX_REASON {
                let mut end = MAX_REASON;
                while !why.is_char_boundary(end) {
                    end -= 1;
                }
                why.truncate(end);
                why.push('…');
            }
            BadCommand {
                reference: serde_json::from_slice::<RefOnly>(text).ok().and_then(|r| r.reference),
                message: format!(
                    "not a command ({why}); send {{\"type\":\"subscribe|unsubscribe|publish|presence|ping|auth\",…}}"
                ),
            }
        })
    }
}

/// The command parser, flattened into plain text for the `ws_command` fuzz target (`fuzz/`):
/// `Ok((ref, fields))` with the command's `type` first and then its string fields by name
/// (absent optional ones left out), or `Err((ref, message))` with what the `error` frame would
/// say. Exists for fuzzing only; not a stable API.
///
/// # Errors
/// The `ref` and the message of [`BadCommand`] when `text` is not a command.
#[doc(hidden)]
#[allow(clippy::type_complexity)]
pub fn parse_for_fuzzing(
    text: &[u8],
) -> Result<(Option<String>, Vec<(&'static str, String)>), (Option<String>, String)> {
    let Request { reference, command } =
        Request::parse(text).map_err(|e| (e.reference.map(|r| r.to_string()), e.message))?;
    let reference = reference.map(|r| r.to_string());
    let mut fields = Vec::new();
    let mut field = |name: &'static str, value: Option<String>| fields.extend(value.map(|v| (name, v)));
    match command {
        Command::Subscribe { channel, since } => {
            field("type", Some("subscribe".into()));
            field("channel", Some(channel));
            field("since", since);
        }
        Command::Unsubscribe { channel } => {
            field("type", Some("unsubscribe".into()));
            field("channel", Some(channel));
        }
        Command::Publish {
            channel,
            event,
            data,
            idempotency_key,
        } => {
            field("type", Some("publish".into()));
            field("channel", Some(channel));
            field("event", event);
            field("data", Some(data));
            field("idempotency_key", idempotency_key);
        }
        Command::Ping => field("type", Some("ping".into())),
        Command::Presence { channel } => {
            field("type", Some("presence".into()));
            field("channel", Some(channel));
        }
        Command::Auth { token } => {
            field("type", Some("auth".into()));
            field("token", Some(token.expose().to_owned()));
        }
    }
    Ok((reference, fields))
}

/// What the server answers, apart from messages and gap notices.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(super) enum Reply<'a> {
    /// Subscribed; `recovered: false` is the gap notice (history no longer reached `since`);
    /// `cursor` is where delivery starts, to resume from if nothing arrives first.
    Subscribed {
        channel: &'a str,
        recovered: bool,
        cursor: &'a str,
    },
    /// Unsubscribed.
    Unsubscribed { channel: &'a str },
    /// Published, at cursor `id`.
    Ack {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Ref>,
        id: String,
        /// Set for a repeated idempotency key: nothing was published, `id` is the first cursor.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
    },
    /// The answer to a `ping` command.
    Pong {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Ref>,
    },
    /// The answer to a `presence` command: the channel's entries.
    Presence {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Ref>,
        channel: &'a str,
        clients: &'a [serde_json::Value],
    },
    /// The `auth` command succeeded: the token's subject and expiry (seconds since the epoch).
    Authenticated {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Ref>,
        sub: &'a str,
        expires_at: Option<u64>,
    },
    /// A command failed; `code` is one of docs/protocol.md "Errors".
    Error {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Ref>,
        code: &'a str,
        message: &'a str,
    },
}

impl Reply<'_> {
    /// The JSON text.
    pub(super) fn encode(&self) -> Bytes {
        // Serialising strings, booleans and unit variants into a Vec cannot fail.
        serde_json::to_vec(self).map_or_else(|_| Bytes::new(), Bytes::from)
    }
}

/// `{"type":"message",…envelope}`, encoded once per message and shared by every socket.
pub(super) fn message_text(msg: &Message) -> Bytes {
    msg.encoded(slot::WS_MESSAGE, |m| {
        let mut out = Vec::with_capacity(112 + m.data_bytes().len());
        write_envelope(&mut out, b"{\"type\":\"message\",", m);
        Bytes::from(out)
    })
}

/// [`message_text`] as one text frame (RFC 6455 §5.6), header included: encoded once per message
/// and written as is by every socket that writes its own frames.
pub(super) fn message_frame(msg: &Message) -> Bytes {
    msg.encoded(slot::WS_FRAME, |m| super::socket::text_frame(message_text(m)))
}

/// `{"type":"gap","channel":"…"}`: history no longer reaches a live subscriber (it fell too far
/// behind); what follows is everything history still holds.
pub(super) fn gap_text(gap: &Gap) -> Bytes {
    Bytes::from(gap_object(gap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use comet_core::{ChannelName, Cursor};
    use serde_json::{Value, json};

    fn parse(text: &str) -> Result<Request, BadCommand> {
        Request::parse(text.as_bytes())
    }

    #[test]
    fn commands_parse() {
        let r = parse(r#"{"type":"subscribe","channel":"a","since":"earliest"}"#).unwrap();
        assert_eq!(
            r.command,
            Command::Subscribe {
                channel: "a".into(),
                since: Some("earliest".into())
            }
        );
        assert_eq!(r.reference, None);
        let r = parse(r#"{"type":"unsubscribe","channel":"a","ref":"x","future":1}"#).unwrap();
        assert_eq!(r.command, Command::Unsubscribe { channel: "a".into() });
        assert_eq!(r.reference, Some(Ref::Text("x".into())));
        let r = parse(r#"{"ref":"p","type":"publish","channel":"a","data":"hi \"there\""}"#).unwrap();
        assert_eq!(
            r.command,
            Command::Publish {
                channel: "a".into(),
                event: None,
                data: "hi \"there\"".into(),
                idempotency_key: None,
            }
        );
        assert_eq!(parse(r#"{"type":"ping"}"#).unwrap().command, Command::Ping);
        let r = parse(r#"{"type":"auth","token":"a.b.c"}"#).unwrap();
        assert_eq!(r.command, Command::Auth { token: "a.b.c".into() });
        assert!(!format!("{r:?}").contains("a.b.c"), "the token stays out of Debug");
    }

    #[test]
    fn bad_commands_keep_their_ref() {
        for (text, reference, says) in [
            ("garbage", None, "expected value"),
            (r#"{"type":"dance","ref":"r1"}"#, Some("r1"), "unknown variant `dance`"),
            (
                r#"{"type":"subscribe","ref":"r2"}"#,
                Some("r2"),
                "missing field `channel`",
            ),
            (r#"{"channel":"a"}"#, None, "missing field `type`"),
            (r#"[1,2]"#, None, "not a command"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.reference.map(|r| r.to_string()).as_deref(), reference, "{text}");
            assert!(e.message.contains(says), "{text}: {}", e.message);
        }
    }

    #[test]
    fn refs_are_strings_or_numbers_echoed_as_they_came() {
        for (text, echoed) in [
            (r#"{"type":"ping","ref":7}"#, json!(7)),
            (r#"{"type":"ping","ref":-3}"#, json!(-3)),
            (r#"{"type":"ping","ref":18446744073709551615}"#, json!(u64::MAX)),
            (r#"{"type":"ping","ref":2.5}"#, json!(2.5)),
            (r#"{"type":"ping","ref":"7"}"#, json!("7")),
        ] {
            let r = parse(text).unwrap();
            let reply: Value = serde_json::from_slice(
                &Reply::Pong {
                    reference: r.reference.as_ref(),
                }
                .encode(),
            )
            .unwrap();
            assert_eq!(reply["ref"], echoed, "{text}");
        }
        assert_eq!(parse(r#"{"type":"ping","ref":null}"#).unwrap().reference, None);
        for bad in [
            r#"{"type":"ping","ref":true}"#,
            r#"{"type":"ping","ref":{"a":1}}"#,
            r#"{"type":"ping","ref":[1]}"#,
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.message.contains("a string or a number"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn bad_command_messages_stay_short() {
        // Found by fuzz/fuzz_targets/ws_command.rs: the unknown `type` was quoted in full.
        let long = format!(r#"{{"type":"{}","ref":"r"}}"#, "a".repeat(100_000));
        let e = parse(&long).unwrap_err();
        assert!(e.message.len() < 300, "{} bytes", e.message.len());
        assert!(e.message.contains("unknown variant `aaa"), "{}", e.message);
        assert_eq!(e.reference, Some(Ref::Text("r".into())));
        let e = parse(&format!(r#"{{"type":"{}"}}"#, "é".repeat(1000))).unwrap_err();
        assert!(e.message.contains('…'), "cut at a char boundary: {}", e.message);
    }

    #[test]
    fn replies_encode() {
        let v = |r: Reply<'_>| serde_json::from_slice::<Value>(&r.encode()).unwrap();
        assert_eq!(
            v(Reply::Subscribed {
                channel: "a",
                recovered: false,
                cursor: "ab-0"
            }),
            json!({"type":"subscribed","channel":"a","recovered":false,"cursor":"ab-0"})
        );
        assert_eq!(
            v(Reply::Unsubscribed { channel: "a" }),
            json!({"type":"unsubscribed","channel":"a"})
        );
        assert_eq!(
            v(Reply::Ack {
                reference: Some(&Ref::Text("r".into())),
                id: "f-1".into(),
                duplicate: false,
            }),
            json!({"type":"ack","ref":"r","id":"f-1"})
        );
        assert_eq!(v(Reply::Pong { reference: None }), json!({"type":"pong"}));
        assert_eq!(
            v(Reply::Error {
                reference: None,
                code: "bad_request",
                message: "no \"x\""
            }),
            json!({"type":"error","code":"bad_request","message":"no \"x\""})
        );
    }

    #[test]
    fn message_text_is_built_once_and_shared() {
        let msg = Message::new(ChannelName::new("c").unwrap(), Cursor::new(0xa, 2), None, b"x\ny", 5).unwrap();
        let (a, b) = (message_text(&msg), message_text(&msg));
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert_eq!(
            serde_json::from_slice::<Value>(&a).unwrap(),
            json!({"type":"message","channel":"c","id":"a-2","event":"message","data":"x\ny","time":5})
        );
    }
}
