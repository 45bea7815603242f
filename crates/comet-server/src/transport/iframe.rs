//! Hidden-iframe ("htmlfile") streaming: an HTML document that grows by
//! `<script>p(envelope)</script>` chunks, each calling the parent page's callback. After a byte
//! budget the document ends with a reconnect hint and the page reopens it with its cursor.

use axum::response::Response;
use bytes::Bytes;
use comet_core::{Event, Message, SubscriptionSet};

use super::envelope::{envelope, gap_object, presence_object, slot};
use super::request::{SubRequest, open, position_text};
use super::streaming::{Framer, streaming_body, streaming_response};
use crate::error::ApiError;
use crate::kind::Kind;
use crate::state::AppState;

/// Browsers start rendering (and running scripts) progressively only after about 1 KiB.
const PADDING: usize = 1024;

/// Checks `callback` against `^[A-Za-z_$][A-Za-z0-9_$.]{0,63}$` (docs/protocol.md "iframe").
///
/// # Errors
/// `400 bad_callback` saying what is wrong.
pub(crate) fn validate_callback(name: &str) -> Result<(), ApiError> {
    // The message does not repeat the name: the answer may be shown in the page's iframe, and
    // the name is whatever the URL's author put there.
    let bad = |why: &str| ApiError::bad_request("bad_callback", format!("invalid callback: {why}"));
    let bytes = name.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err(bad("it is empty"));
    };
    if bytes.len() > 64 {
        return Err(bad("at most 64 characters"));
    }
    if !(first.is_ascii_alphabetic() || first == b'_' || first == b'$') {
        return Err(bad("it must start with a letter, _ or $"));
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.'))
    {
        return Err(bad("only letters, digits, _, $ and . are allowed"));
    }
    if name.split('.').any(str::is_empty) {
        return Err(bad("a dotted name cannot have empty parts"));
    }
    Ok(())
}

/// Escapes JSON for a `<script>` block: `<`, `>`, `&`, U+2028 and U+2029 become `\uXXXX`. Safe on
/// any serde_json output because those characters can only occur inside JSON strings, where the
/// escapes mean the same thing.
pub(crate) fn escape_for_script(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 16);
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'<' => out.extend_from_slice(b"\\u003c"),
            b'>' => out.extend_from_slice(b"\\u003e"),
            b'&' => out.extend_from_slice(b"\\u0026"),
            0xE2 if json.get(i + 1) == Some(&0x80) && matches!(json.get(i + 2), Some(0xA8 | 0xA9)) => {
                out.extend_from_slice(if json[i + 2] == 0xA8 { b"\\u2028" } else { b"\\u2029" });
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn script(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 32);
    out.extend_from_slice(b"<script>p(");
    out.extend_from_slice(&escape_for_script(json));
    out.extend_from_slice(b")</script>\n");
    Bytes::from(out)
}

/// The shared `<script>p(envelope)</script>` chunk of `msg`.
pub(crate) fn chunk(msg: &Message) -> Bytes {
    msg.encoded(slot::IFRAME, |m| script(&envelope(m)))
}

/// The document's start: defines `p` to call `parent.<callback>`, padded past 1 KiB.
pub(crate) fn prelude(callback: &str) -> Bytes {
    let mut out = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>comet</title><script>\
         var cb={callback:?}.split('.');\
         function p(m){{var o=parent;for(var i=0;i<cb.length-1;i++)o=o[cb[i]];o[cb[cb.length-1]](m)}}\
         </script></head><body>\n<!--"
    )
    .into_bytes();
    out.resize(out.len() + PADDING, b' ');
    out.extend_from_slice(b"-->\n");
    Bytes::from(out)
}

struct IframeFramer {
    sent: usize,
    budget: usize,
}

impl Framer for IframeFramer {
    fn frame(&mut self, events: &[Event], _set: &SubscriptionSet, out: &mut Vec<Bytes>) {
        for event in events {
            let bytes = match event {
                Event::Message(msg) => chunk(msg),
                Event::Gap(gap) => script(gap_object(gap).as_bytes()),
                Event::Presence(notice) => script(&presence_object(notice, true)),
            };
            self.sent += bytes.len();
            out.push(bytes);
        }
    }

    fn heartbeat(&self) -> Bytes {
        Bytes::from_static(b"<!-- -->\n")
    }

    fn closing(&mut self, set: &SubscriptionSet) -> Option<Bytes> {
        let mut json = b"{\"type\":\"reconnect\",\"cursor\":".to_vec();
        super::envelope::write_json_str(&mut json, &position_text(set));
        json.push(b'}');
        let mut out = script(&json).to_vec();
        out.extend_from_slice(b"</body></html>\n");
        Some(Bytes::from(out))
    }

    fn notice(&mut self, name: &'static str, fields: &serde_json::Value) -> Bytes {
        script(&super::ordered::notice_object(name, fields))
    }

    fn exhausted(&self) -> bool {
        self.sent >= self.budget
    }
}

/// Handles an iframe stream.
pub(crate) async fn handle(state: AppState, req: SubRequest) -> Result<Response, ApiError> {
    let callback = req.query.callback.as_deref().unwrap_or("comet");
    validate_callback(callback)?;
    let set = open(&state, &req).await?;
    let framer = IframeFramer {
        sent: 0,
        budget: state.config.iframe_budget,
    };
    let body = streaming_body(
        &state,
        Kind::Iframe,
        set,
        framer,
        Some(prelude(callback)),
        req.expires,
        req.user.as_deref(),
    );
    Ok(streaming_response("text/html; charset=utf-8", body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn callbacks() {
        for ok in ["comet", "_x", "$", "app.onMessage", "a1.b2.c3"] {
            assert!(validate_callback(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "a-b",
            "alert(1)",
            "a..b",
            "a.",
            "x;alert(1)",
            "</script>",
            &"a".repeat(65),
        ] {
            assert_eq!(validate_callback(bad).unwrap_err().code, "bad_callback", "{bad}");
        }
    }

    #[test]
    fn prelude_is_padded_and_names_the_callback() {
        let p = prelude("app.onMsg");
        assert!(p.len() > 1024);
        assert!(std::str::from_utf8(&p).unwrap().contains("\"app.onMsg\".split('.')"));
    }

    proptest! {
        /// Whatever the data, the chunk has exactly one `</script>` (its own), no raw U+2028/9,
        /// and the JSON inside parses back to the same data.
        #[test]
        fn nothing_breaks_out_of_the_script(data in "(\\PC|</script>|<!--|\u{2028}|\u{2029}|&)*") {
            let mut json = Vec::new();
            super::super::envelope::write_json_str(&mut json, &data);
            let chunk = script(&json);
            let text = std::str::from_utf8(&chunk).unwrap();
            prop_assert_eq!(text.matches("</script").count(), 1);
            let raw_separator = text.contains('\u{2028}') || text.contains('\u{2029}');
            prop_assert!(!raw_separator, "raw U+2028/9 in the chunk");
            prop_assert!(!text[8..text.len() - 11].contains('<'));
            let inner = &text["<script>p(".len()..text.len() - ")</script>\n".len()];
            let back: String = serde_json::from_str(inner).unwrap();
            prop_assert_eq!(back, data);
        }
    }
}
