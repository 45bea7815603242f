//! `iframe` transport: an htmlfile document whose `<script>p({…})</script>` chunks each carry
//! one JSON object; the server ends the document after a byte budget with a `reconnect` object
//! (`docs/protocol.md` §iframe).
//!
//! The JSON inside a script has `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u003c`-style
//! escapes (so `</script>` cannot occur inside it), which makes it plain JSON for a JSON parser
//! and makes the first `</script>` after a script's start its true end.

use std::collections::VecDeque;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::StreamExt;
use url::Url;

use super::{Body, Conn, Frame, parse_object, send_head};
use crate::Error;

/// The longest script (or run of bytes without one) kept while waiting for its end, in bytes.
const MAX_SCRIPT: usize = 16 << 20;

const OPEN: &[u8] = b"<script";
const CLOSE: &[u8] = b"</script>";

/// Extracts the JSON argument of each `<script>NAME(JSON)</script>` of an HTML document fed in
/// arbitrary chunks. Scripts whose body is not a call with an object argument (the prelude's
/// function definitions) are skipped.
#[derive(Debug, Default)]
pub(crate) struct ScriptParser {
    /// Bytes not yet consumed: the start of an unfinished script, or a few bytes that might
    /// begin a `<script` tag.
    buf: Vec<u8>,
}

impl ScriptParser {
    /// Decodes every script completed by `chunk` into `out`; an object that is not a protocol
    /// object becomes a non-fatal [`Frame::Error`].
    ///
    /// # Errors
    /// [`Error::Protocol`] when an unfinished script grows past 16 MiB.
    pub(crate) fn feed(&mut self, chunk: &[u8], out: &mut VecDeque<Frame>) -> Result<(), Error> {
        self.buf.extend_from_slice(chunk);
        let mut pos = 0;
        let keep_from = loop {
            let Some(start) = find(&self.buf[pos..], OPEN).map(|i| pos + i) else {
                // Keep a tail that might be the beginning of `<script`.
                break self.buf.len().saturating_sub(OPEN.len() - 1).max(pos);
            };
            let Some(gt) = self.buf[start..].iter().position(|&b| b == b'>') else {
                break start;
            };
            let body_start = start + gt + 1;
            let Some(end) = find(&self.buf[body_start..], CLOSE).map(|i| body_start + i) else {
                break start;
            };
            decode_script(&self.buf[body_start..end], out);
            pos = end + CLOSE.len();
        };
        self.buf.drain(..keep_from);
        if self.buf.len() > MAX_SCRIPT {
            return Err(Error::protocol("iframe script longer than 16 MiB"));
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `p({…})` (optionally with `;` and whitespace) → the object; anything else is ignored.
fn decode_script(body: &[u8], out: &mut VecDeque<Frame>) {
    let body = body.trim_ascii();
    let body = body.strip_suffix(b";").unwrap_or(body).trim_ascii_end();
    let Some(body) = body.strip_suffix(b")") else {
        return;
    };
    let Some(open) = body.iter().position(|&b| b == b'(') else {
        return;
    };
    let arg = body[open + 1..].trim_ascii();
    if !arg.starts_with(b"{") {
        return;
    }
    match parse_object(arg) {
        Ok(Some(frame)) => out.push_back(frame),
        Ok(None) => {}
        Err(e) => out.push_back(Frame::Error(e)),
    }
}

/// An open `?transport=iframe` document.
#[derive(Debug)]
pub(crate) struct IframeConn {
    body: Body,
    parser: ScriptParser,
    pending: VecDeque<Frame>,
    /// Set by the `reconnect` object: the document's end is then the byte budget, not a drop.
    budget_reached: bool,
    ended: bool,
}

impl IframeConn {
    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame, Error>>> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                if matches!(frame, Frame::Reconnect(_)) {
                    self.budget_reached = true;
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match ready!(self.body.poll_next_unpin(cx)) {
                Some(Ok(chunk)) => {
                    if let Err(e) = self.parser.feed(&chunk, &mut self.pending) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    self.ended = true;
                    // Ended after the `reconnect` object: the byte budget, reopen at once.
                    // Ended without it: a drop.
                    return Poll::Ready(Some(if self.budget_reached {
                        Ok(Frame::Reopen(Duration::ZERO))
                    } else {
                        Err(Error::Ended)
                    }));
                }
            }
        }
    }
}

/// Opens `url` (already carrying `transport=iframe`, `callback` and `since`) and waits for the
/// response head, at most `head_timeout`. No idle timeout: the document has no heartbeat.
pub(crate) async fn connect(http: reqwest::Client, url: Url, head_timeout: Duration) -> Result<Conn, Error> {
    let resp = send_head(http.get(url), head_timeout).await?;
    Ok(Conn::Iframe(IframeConn {
        body: Body::new(resp, None),
        parser: ScriptParser::default(),
        pending: VecDeque::new(),
        budget_reached: false,
        ended: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRELUDE: &str = "<!DOCTYPE html><html><head><meta charset=\"utf-8\">\
        <script>function p(o){var f=parent;var n=\"cb\".split(\".\");\
        for(var i=0;i<n.length;i++){f=f[n[i]]}f(o)}</script></head><body>\
        <!-- padding -->";

    fn document() -> String {
        let mut doc = PRELUDE.to_owned();
        doc.push_str(&" ".repeat(1024));
        doc.push_str(
            r#"<script>p({"channel":"a","id":"1-1","event":"message","data":"\u003c/script\u003e \u0026 \u2028","time":1})</script>"#,
        );
        doc.push_str(r#"<script>p({"type":"gap","channel":"b"});</script>"#);
        doc.push_str(r#"<script>p({"type":"reconnect","cursor":"a=1-1,b=2-0"})</script></body></html>"#);
        doc
    }

    fn check(frames: &[Frame]) {
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert!(matches!(&frames[0], Frame::Message(e) if e.data == "</script> & \u{2028}" && e.id == "1-1"));
        assert!(matches!(&frames[1], Frame::Gap(c) if c == "b"));
        assert!(matches!(&frames[2], Frame::Reconnect(Some(c)) if c == "a=1-1,b=2-0"));
    }

    #[test]
    fn whole_document() {
        let mut p = ScriptParser::default();
        let mut out = VecDeque::new();
        p.feed(document().as_bytes(), &mut out).unwrap();
        check(&Vec::from(out));
    }

    #[test]
    fn every_split_point() {
        let doc = document();
        let doc = doc.as_bytes();
        for split in 0..doc.len() {
            let mut p = ScriptParser::default();
            let mut out = VecDeque::new();
            p.feed(&doc[..split], &mut out).unwrap();
            p.feed(&doc[split..], &mut out).unwrap();
            check(&Vec::from(out));
        }
    }

    #[test]
    fn split_inside_script_tag_and_json() {
        let mut p = ScriptParser::default();
        let mut out = VecDeque::new();
        p.feed(b"<html><scr", &mut out).unwrap();
        p.feed(b"ipt>p({\"channel\":\"a\",\"id\":\"1", &mut out).unwrap();
        assert!(out.is_empty());
        p.feed(b"-1\",\"data\":\"x\"})</scr", &mut out).unwrap();
        assert!(out.is_empty());
        p.feed(b"ipt>", &mut out).unwrap();
        assert!(matches!(&Vec::from(out)[..], [Frame::Message(e)] if e.id == "1-1"));
    }

    #[test]
    fn buffer_does_not_grow_outside_scripts() {
        let mut p = ScriptParser::default();
        let mut out = VecDeque::new();
        for _ in 0..1000 {
            p.feed(&[b' '; 1000], &mut out).unwrap();
        }
        assert!(p.buf.len() < OPEN.len());
    }
}
