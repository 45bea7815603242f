//! The WebSocket command parser never panics and stays bounded: whatever a peer sends, the answer
//! (a command's fields, or an `error` frame's message) is no bigger than what was sent, plus a
//! fixed-size explanation. And every well-formed command, whatever its strings, parses back to
//! exactly its fields.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use comet_server::transport::websocket::parse_command_for_fuzzing as parse;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// The longest `error` message: what the parser quotes of the input is cut (to 160 bytes), the
/// rest is a fixed explanation.
const MAX_ERROR_MESSAGE: usize = 256;

/// The command types, in the order of the parser's enum.
const KINDS: [&str; 5] = ["subscribe", "unsubscribe", "publish", "ping", "auth"];

/// A well-formed command, built from arbitrary strings.
#[derive(Debug, Arbitrary)]
enum Command {
    Subscribe {
        channel: String,
        since: Option<String>,
    },
    Unsubscribe {
        channel: String,
    },
    Publish {
        channel: String,
        event: Option<String>,
        data: String,
    },
    Ping,
    Auth {
        token: String,
    },
}

/// The command as JSON text, plus the fields the parser must report (`type` first).
fn encode(
    command: Command,
    reference: Option<&str>,
    extra: Option<(String, u32)>,
) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let mut fields: Vec<(&'static str, Option<String>)> = Vec::new();
    match command {
        Command::Subscribe { channel, since } => {
            fields.extend([
                ("type", Some("subscribe".into())),
                ("channel", Some(channel)),
                ("since", since),
            ]);
        }
        Command::Unsubscribe { channel } => {
            fields.extend([("type", Some("unsubscribe".into())), ("channel", Some(channel))])
        }
        Command::Publish { channel, event, data } => fields.extend([
            ("type", Some("publish".into())),
            ("channel", Some(channel)),
            ("event", event),
            ("data", Some(data)),
        ]),
        Command::Ping => fields.push(("type", Some("ping".into()))),
        Command::Auth { token } => fields.extend([("type", Some("auth".into())), ("token", Some(token))]),
    }
    let mut object = Map::new();
    for (name, value) in &fields {
        object.insert((*name).to_owned(), value.clone().map_or(Value::Null, Value::String));
    }
    if let Some(reference) = reference {
        object.insert("ref".to_owned(), Value::String(reference.to_owned()));
    }
    // Unknown fields are ignored, so that clients may send newer ones.
    if let Some((name, value)) = extra {
        let known = ["type", "channel", "since", "event", "data", "token", "ref", "idempotency_key"];
        if !known.contains(&name.as_str()) {
            object.insert(name, Value::from(value));
        }
    }
    let text = serde_json::to_vec(&Value::Object(object)).unwrap();
    let expected = fields.into_iter().filter_map(|(n, v)| v.map(|v| (n, v))).collect();
    (text, expected)
}

fuzz_target!(|data: &[u8]| {
    // 1. Arbitrary bytes, as a peer's text frame.
    match parse(data) {
        Ok((reference, fields)) => {
            let json: Value = serde_json::from_slice(data).expect("a command is JSON");
            let object = json.as_object().expect("a command is an object");
            let kind = &fields.first().expect("the type comes first").1;
            match object.get("type") {
                Some(Value::String(name)) => assert_eq!(name, kind),
                // serde also takes a variant's index for its name: `{"type":3}` is a `ping`.
                // Not in the protocol, but harmless (the same command, checked the same way).
                Some(Value::Number(n)) => {
                    let by_index = n.as_u64().and_then(|i| KINDS.get(usize::try_from(i).ok()?));
                    assert_eq!(by_index, Some(&kind.as_str()), "{n}");
                }
                other => panic!("a command with type {other:?}"),
            }
            for (_, value) in &fields {
                assert!(value.len() <= data.len());
            }
            assert!(reference.is_none_or(|r| r.len() <= data.len()));
        }
        Err((reference, message)) => {
            assert!(message.len() <= MAX_ERROR_MESSAGE, "{} bytes: {message}", message.len());
            assert!(reference.is_none_or(|r| r.len() <= data.len()));
        }
    }

    // 2. A well-formed command made of arbitrary strings parses back to exactly them.
    let mut u = Unstructured::new(data);
    let Ok((command, reference, extra)) = <(Command, Option<String>, Option<(String, u32)>)>::arbitrary(&mut u) else {
        return;
    };
    let (text, expected) = encode(command, reference.as_deref(), extra);
    assert_eq!(
        parse(&text),
        Ok((reference, expected)),
        "{}",
        String::from_utf8_lossy(&text)
    );
});
