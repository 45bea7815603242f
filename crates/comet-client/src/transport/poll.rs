//! `poll` and `longpoll` transports: one JSON answer per request, `{"messages","cursor"}` plus
//! `"gap":true,"gaps":[…]` (`docs/protocol.md` §poll, §longpoll).

use std::collections::VecDeque;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::{Conn, Frame, check_status};
use crate::{Envelope, Error};

/// The server's `max_batch`: an answer this full means more is waiting, so poll again at once.
pub(crate) const MAX_BATCH: usize = 256;

#[derive(Deserialize)]
struct Answer {
    messages: Vec<Envelope>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    gap: bool,
    #[serde(default)]
    gaps: Vec<String>,
}

/// Decodes one answer into frames: gap notices first (protocol: the notice precedes what
/// history still holds), then the messages, then the answer's `cursor`, then a
/// [`Frame::Reopen`] after `interval` (at once after a full batch).
///
/// `"gap":true` without `gaps` is taken as a gap on every channel of the subscription: never
/// a silent gap.
///
/// # Errors
/// [`Error::Protocol`] when `body` is not a poll answer.
pub(crate) fn decode(body: &[u8], channels: &[String], interval: Duration) -> Result<VecDeque<Frame>, Error> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| Error::bad_json("poll answer", body, e))?;
    let mut frames = VecDeque::with_capacity(answer.messages.len() + 3);
    if answer.gap || !answer.gaps.is_empty() {
        let gaps = if answer.gaps.is_empty() {
            channels.to_vec()
        } else {
            answer.gaps
        };
        frames.extend(gaps.into_iter().map(Frame::Gap));
    }
    let full = answer.messages.len() >= MAX_BATCH;
    frames.extend(answer.messages.into_iter().map(Frame::Message));
    if let Some(cursor) = answer.cursor.filter(|c| !c.is_empty()) {
        frames.push_back(Frame::Cursor(cursor));
    }
    frames.push_back(Frame::Reopen(if full { Duration::ZERO } else { interval }));
    Ok(frames)
}

/// Makes one poll or long-poll request to `url` (carrying `transport`, `since`, `timeout`),
/// taking at most `timeout`, and returns the whole answer as a batch connection whose last
/// frame reopens after `interval`.
pub(crate) async fn request(
    http: reqwest::Client,
    url: Url,
    timeout: Duration,
    channels: Vec<String>,
    interval: Duration,
) -> Result<Conn, Error> {
    let resp = http.get(url).timeout(timeout).send().await?;
    let body = check_status(resp).await?.bytes().await?;
    Ok(Conn::Batch(decode(&body, &channels, interval)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chans() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn messages_then_cursor_then_reopen() {
        let body = br#"{"messages":[{"channel":"a","id":"1-1","event":"message","data":"x","time":1},
            {"channel":"b","id":"2-1","event":"e","data":"y","time":2}],"cursor":"a=1-1,b=2-1"}"#;
        let frames = Vec::from(decode(body, &chans(), Duration::from_secs(1)).unwrap());
        assert!(matches!(&frames[..], [
            Frame::Message(x), Frame::Message(y), Frame::Cursor(c), Frame::Reopen(d)
        ] if x.data == "x" && y.event == "e" && c == "a=1-1,b=2-1" && *d == Duration::from_secs(1)));
    }

    #[test]
    fn gaps_come_first() {
        let body = br#"{"messages":[{"channel":"b","id":"2-9","event":"message","data":"","time":1}],
            "cursor":"b=2-9","gap":true,"gaps":["b"]}"#;
        let frames = Vec::from(decode(body, &chans(), Duration::ZERO).unwrap());
        assert!(
            matches!(&frames[..], [Frame::Gap(g), Frame::Message(_), Frame::Cursor(_), Frame::Reopen(_)] if g == "b")
        );
    }

    #[test]
    fn gap_without_list_means_every_channel() {
        let body = br#"{"messages":[],"cursor":"1-0","gap":true}"#;
        let frames = Vec::from(decode(body, &chans(), Duration::ZERO).unwrap());
        assert!(matches!(&frames[..], [Frame::Gap(a), Frame::Gap(b), ..] if a == "a" && b == "b"));
    }

    #[test]
    fn full_batch_polls_again_at_once() {
        let one = r#"{"channel":"a","id":"1-1","event":"message","data":"","time":1}"#;
        let body = format!(
            r#"{{"messages":[{}],"cursor":"1-256"}}"#,
            vec![one; MAX_BATCH].join(",")
        );
        let frames = decode(body.as_bytes(), &chans(), Duration::from_secs(5)).unwrap();
        assert!(matches!(frames.back(), Some(Frame::Reopen(d)) if d.is_zero()));
    }

    #[test]
    fn empty_answer_and_bad_answer() {
        let frames = Vec::from(decode(br#"{"messages":[],"cursor":""}"#, &chans(), Duration::ZERO).unwrap());
        assert!(matches!(&frames[..], [Frame::Reopen(_)]));
        assert!(decode(b"<html>", &chans(), Duration::ZERO).is_err());
    }
}
