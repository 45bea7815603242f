//! `stream` transport: `application/x-ndjson`, one JSON object per `\n`-terminated line, empty
//! lines as heartbeats (`docs/protocol.md` §stream).

use std::collections::VecDeque;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::StreamExt;
use url::Url;

use super::{Body, Conn, Frame, parse_object, send_head};
use crate::Error;

/// The longest line accepted, in bytes: far above an escaped 64 KiB message, low enough that a
/// runaway response cannot take all memory.
const MAX_LINE: usize = 16 << 20;

/// Splits a byte stream into lines and decodes them, across chunk boundaries.
#[derive(Debug, Default)]
pub(crate) struct LineParser {
    /// The unterminated end of the chunks fed so far.
    partial: Vec<u8>,
}

impl LineParser {
    /// Decodes every line completed by `chunk` into `out`. Blank lines (heartbeats, the
    /// `?prelude=1` padding) are skipped; a line that is not a protocol object becomes a
    /// non-fatal [`Frame::Error`].
    ///
    /// # Errors
    /// [`Error::Protocol`] when a line grows past 16 MiB; the connection should be dropped.
    pub(crate) fn feed(&mut self, mut chunk: &[u8], out: &mut VecDeque<Frame>) -> Result<(), Error> {
        while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                decode_line(&chunk[..nl], out);
            } else {
                self.partial.extend_from_slice(&chunk[..nl]);
                decode_line(&self.partial, out);
                self.partial.clear();
            }
            chunk = &chunk[nl + 1..];
        }
        self.partial.extend_from_slice(chunk);
        if self.partial.len() > MAX_LINE {
            return Err(Error::protocol("NDJSON line longer than 16 MiB"));
        }
        Ok(())
    }
}

fn decode_line(line: &[u8], out: &mut VecDeque<Frame>) {
    let line = line.trim_ascii();
    if line.is_empty() {
        return;
    }
    match parse_object(line) {
        Ok(Some(frame)) => out.push_back(frame),
        Ok(None) => {}
        Err(e) => out.push_back(Frame::Error(e)),
    }
}

/// An open `?transport=stream` response.
#[derive(Debug)]
pub(crate) struct StreamConn {
    body: Body,
    parser: LineParser,
    pending: VecDeque<Frame>,
}

impl StreamConn {
    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame, Error>>> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            match ready!(self.body.poll_next_unpin(cx)) {
                Some(Ok(chunk)) => {
                    if let Err(e) = self.parser.feed(&chunk, &mut self.pending) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                // The stream never ends by itself: this is a drop. An unterminated last line
                // is incomplete and is dropped with it.
                None => return Poll::Ready(Some(Err(Error::Ended))),
            }
        }
    }
}

/// Opens `url` (already carrying `transport=stream` and `since`) and waits for the response
/// head, at most `head_timeout`.
pub(crate) async fn connect(
    http: reqwest::Client,
    url: Url,
    head_timeout: Duration,
    idle: Option<Duration>,
) -> Result<Conn, Error> {
    let resp = send_head(http.get(url), head_timeout).await?;
    Ok(Conn::Stream(StreamConn {
        body: Body::new(resp, idle),
        parser: LineParser::default(),
        pending: VecDeque::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Envelope;

    fn feed_all(chunks: &[&[u8]]) -> Vec<Frame> {
        let mut p = LineParser::default();
        let mut out = VecDeque::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        out.into()
    }

    #[test]
    fn lines_heartbeats_and_kinds() {
        let frames = feed_all(&[
            b"\n",
            br#"{"channel":"a","id":"1-1","event":"message","data":"x","time":7}"#,
            b"\n\n",
            br#"{"type":"gap","channel":"a"}"#,
            b"\r\n",
            br#"{"type":"reconnect","cursor":"a=1-1,b=2-2"}"#,
            b"\n",
        ]);
        assert_eq!(frames.len(), 3, "{frames:?}");
        match &frames[0] {
            Frame::Message(Envelope {
                channel,
                id,
                data,
                time,
                ..
            }) => {
                assert_eq!((&**channel, &**id, &**data, *time), ("a", "1-1", "x", 7));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&frames[1], Frame::Gap(c) if c == "a"));
        assert!(matches!(&frames[2], Frame::Reconnect(Some(c)) if c == "a=1-1,b=2-2"));
    }

    #[test]
    fn prelude_padding_is_skipped() {
        let mut prelude = vec![b' '; 2048];
        prelude.push(b'\n');
        let frames = feed_all(&[&prelude, br#"{"channel":"a","id":"1-1","data":""}"#, b"\n"]);
        assert_eq!(frames.len(), 1);
    }

    #[test]
    fn line_split_across_chunks_byte_by_byte() {
        let line = "{\"channel\":\"a\",\"id\":\"1-2\",\"data\":\"h\u{e9}llo \u{2028}\"}\n".as_bytes();
        let chunks: Vec<&[u8]> = line.chunks(1).collect();
        let frames = feed_all(&chunks);
        assert!(matches!(&frames[..], [Frame::Message(e)] if e.data == "h\u{e9}llo \u{2028}"));
    }

    #[test]
    fn unterminated_line_is_not_decoded() {
        assert!(feed_all(&[br#"{"channel":"a","id":"1-1","data":""}"#]).is_empty());
    }

    #[test]
    fn bad_line_is_a_nonfatal_error() {
        let frames = feed_all(&[b"not json\n", br#"{"channel":"a","id":"1-1","data":""}"#, b"\n"]);
        assert!(matches!(
            &frames[..],
            [Frame::Error(Error::Protocol { .. }), Frame::Message(_)]
        ));
    }
}
