//! This client's wire decoders, callable on byte chunks without a connection. Exists for the fuzz
//! targets (`fuzz/`) and the property tests of `comet-server`, which check the server's encoders
//! against these independent parsers; not a stable API.

use std::collections::VecDeque;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::Stream;
use sse_stream::SseByteStream;

use crate::Envelope;
use crate::transport::Frame;
use crate::transport::iframe::ScriptParser;
use crate::transport::ndjson::LineParser;
use crate::transport::sse::SseMapper;

/// One item a decoder made of the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A message.
    Message(Envelope),
    /// A gap notice for this channel.
    Gap(String),
    /// A cursor or position the stream announced as passed (an SSE `id:`).
    Cursor(String),
    /// The server's reconnect hint, with the cursor to resume from.
    Reconnect(Option<String>),
    /// A non-fatal error (a line or script that is not a protocol object), as text.
    Error(String),
    /// Anything else (SSE `retry:`, WebSocket frames), as its `Debug` text.
    Other(String),
}

impl From<Frame> for Decoded {
    fn from(frame: Frame) -> Self {
        match frame {
            Frame::Message(envelope) => Decoded::Message(envelope),
            Frame::Gap(channel) => Decoded::Gap(channel),
            Frame::Cursor(cursor) => Decoded::Cursor(cursor),
            Frame::Reconnect(cursor) => Decoded::Reconnect(cursor),
            Frame::Error(e) => Decoded::Error(e.to_string()),
            other => Decoded::Other(format!("{other:?}")),
        }
    }
}

/// `wire` cut into chunks at `cuts` (byte offsets, each taken modulo `wire.len() + 1`, in any
/// order): what a decoder sees when the network splits a body at arbitrary points.
pub fn cut(wire: &[u8], cuts: impl IntoIterator<Item = usize>) -> Vec<&[u8]> {
    let mut at: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for end in at {
        out.push(&wire[start..end]);
        start = end;
    }
    out.push(&wire[start..]);
    out
}

/// Decodes an `application/x-ndjson` stream body (`?transport=stream`) arriving as `chunks`.
///
/// # Errors
/// The text of the fatal error that would drop the connection (a line over 16 MiB).
pub fn decode_ndjson(chunks: &[&[u8]]) -> Result<Vec<Decoded>, String> {
    let mut parser = LineParser::default();
    let mut out = VecDeque::new();
    for chunk in chunks {
        parser.feed(chunk, &mut out).map_err(|e| e.to_string())?;
    }
    Ok(out.into_iter().map(Decoded::from).collect())
}

/// Decodes an htmlfile document (`?transport=iframe`) arriving as `chunks`.
///
/// # Errors
/// The text of the fatal error that would drop the connection (a script over 16 MiB).
pub fn decode_iframe(chunks: &[&[u8]]) -> Result<Vec<Decoded>, String> {
    let mut parser = ScriptParser::default();
    let mut out = VecDeque::new();
    for chunk in chunks {
        parser.feed(chunk, &mut out).map_err(|e| e.to_string())?;
    }
    Ok(out.into_iter().map(Decoded::from).collect())
}

/// Decodes a `text/event-stream` body arriving as `chunks`, as the `sse` transport does:
/// `raw_channel` is the subscription's one channel in raw mode (`data:` is the published text),
/// `None` in envelope mode (`data:` is the JSON envelope).
///
/// # Errors
/// The text of the fatal decoding error that would drop the connection (e.g. bad UTF-8).
pub fn decode_sse(chunks: &[&[u8]], raw_channel: Option<&str>) -> Result<Vec<Decoded>, String> {
    let body = futures_util::stream::iter(
        chunks
            .iter()
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let mut events = pin!(SseByteStream::new(body));
    let mut mapper = SseMapper::new(raw_channel.map(str::to_owned));
    let mut out = VecDeque::new();
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        match events.as_mut().poll_next(&mut cx) {
            Poll::Ready(Some(Ok(sse))) => mapper.map(sse, &mut out),
            Poll::Ready(Some(Err(e))) => return Err(e.to_string()),
            Poll::Ready(None) => break,
            // The body is in memory: it is always ready.
            Poll::Pending => return Err("the event-stream decoder waited on an in-memory body".to_owned()),
        }
    }
    Ok(out.into_iter().map(Decoded::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_decoder_finds_a_message() {
        let envelope = Envelope {
            channel: "c".into(),
            id: "a-1".into(),
            event: "message".into(),
            data: "x\ny".into(),
            time: 5,
        };
        let json = br#"{"channel":"c","id":"a-1","event":"message","data":"x\ny","time":5}"#;
        let line = [&json[..], b"\n"].concat();
        let (head, tail) = line.split_at(10);
        assert_eq!(
            decode_ndjson(&[head, tail]),
            Ok(vec![Decoded::Message(envelope.clone())])
        );
        let script = [&b"<script>p("[..], json, b")</script>"].concat();
        assert_eq!(decode_iframe(&[&script]), Ok(vec![Decoded::Message(envelope.clone())]));
        let wire = b"retry: 3000\nid: a-1\ndata: x\r\ndata: y\n\n";
        let decoded = decode_sse(&[&wire[..20], &wire[20..]], Some("c")).unwrap();
        let raw = Envelope { time: 0, ..envelope };
        assert_eq!(decoded[1..], [Decoded::Message(raw), Decoded::Cursor("a-1".into())]);
        assert!(decode_sse(&[b"data: \xff\n\n"], None).is_err());
    }
}
