//! Incremental, allocation-light parsers for what subscribers read: HTTP/1.1 response heads,
//! chunked transfer coding, Server-Sent Events, newline-delimited lines, and the benchmark's own
//! payload marker. Each is fed bytes as they arrive, in pieces of any size.

use crate::error::ParseError;

/// Where the load generator's payload sits in any message: `#<seq>/<ns>#`, where `seq` is the
/// message's 1-based sequence number in its channel and `ns` the publisher's send time in
/// nanoseconds since the Unix epoch. Neither `#` nor `/` needs escaping in JSON, SSE or HTML, so
/// the marker survives every server's framing untouched (envelope, raw data, WebSocket frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Sequence number in the channel, from 1.
    pub seq: u64,
    /// Publisher's send time, nanoseconds since the Unix epoch.
    pub sent_ns: u64,
}

impl Marker {
    /// Writes the marker followed by `pad` bytes of `x` (to reach a payload size).
    pub fn write(&self, out: &mut String, pad: usize) {
        use std::fmt::Write as _;
        let _ = write!(out, "#{}/{}#", self.seq, self.sent_ns);
        out.extend(std::iter::repeat_n('x', pad));
    }
}

/// Calls `f` for every complete marker in `bytes`.
pub fn find_markers(bytes: &[u8], mut f: impl FnMut(Marker)) {
    let mut i = 0;
    while let Some(off) = memchr(b'#', &bytes[i..]) {
        let start = i + off;
        match parse_marker_at(&bytes[start..]) {
            Some((marker, len)) => {
                f(marker);
                i = start + len;
            }
            None => i = start + 1,
        }
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// Parses `#digits/digits#` at the start of `b`; returns the marker and its length.
fn parse_marker_at(b: &[u8]) -> Option<(Marker, usize)> {
    let (seq, n1) = digits(b.get(1..)?)?;
    if b.get(1 + n1) != Some(&b'/') {
        return None;
    }
    let (sent_ns, n2) = digits(b.get(2 + n1..)?)?;
    let end = 2 + n1 + n2;
    (b.get(end) == Some(&b'#')).then_some((Marker { seq, sent_ns }, end + 1))
}

fn digits(b: &[u8]) -> Option<(u64, usize)> {
    let n = b.iter().take(20).take_while(|c| c.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in &b[..n] {
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some((v, n))
}

/// Finds markers in a byte stream cut at arbitrary places: a marker split between two reads is
/// still found once (the undecided tail is carried over).
#[derive(Debug, Default)]
pub struct MarkerScanner {
    carry: Vec<u8>,
}

impl MarkerScanner {
    /// The longest possible marker: `#` + 20 digits + `/` + 20 digits + `#`.
    const MAX_MARKER: usize = 43;

    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, bytes: &[u8], mut f: impl FnMut(Marker)) {
        self.carry.extend_from_slice(bytes);
        let buf = &self.carry;
        let mut i = 0;
        let mut keep_from = buf.len();
        while let Some(off) = memchr(b'#', &buf[i..]) {
            let start = i + off;
            match parse_marker_at(&buf[start..]) {
                Some((marker, len)) => {
                    f(marker);
                    i = start + len;
                }
                None if buf.len() - start < Self::MAX_MARKER => {
                    // Might be a marker whose end has not arrived yet.
                    keep_from = start;
                    break;
                }
                None => i = start + 1,
            }
        }
        self.carry.drain(..keep_from);
    }
}

/// A parsed HTTP/1.1 response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Header fields, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Length of the head in bytes, including the blank line.
    pub len: usize,
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// `Content-Length: n`.
    Length(usize),
    /// Until the connection closes.
    Close,
}

impl ResponseHead {
    /// Parses a head at the start of `buf`; `Ok(None)` when it is not complete yet.
    ///
    /// # Errors
    /// [`ParseError::Http`] for a malformed head.
    pub fn parse(buf: &[u8]) -> Result<Option<Self>, ParseError> {
        let mut headers = [httparse::EMPTY_HEADER; 48];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => Ok(Some(Self {
                status: resp.code.unwrap_or(0),
                headers: resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect(),
                len,
            })),
            Ok(httparse::Status::Partial) => Ok(None),
            Err(e) => Err(ParseError::Http(e.to_string())),
        }
    }

    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// How the body is delimited.
    pub fn body_kind(&self) -> BodyKind {
        if self
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            BodyKind::Chunked
        } else if let Some(n) = self.header("content-length").and_then(|v| v.trim().parse().ok()) {
            BodyKind::Length(n)
        } else if self.status == 204 || self.status == 304 || self.status == 101 {
            BodyKind::Length(0)
        } else {
            BodyKind::Close
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Trailer,
    Done,
}

/// Decodes `Transfer-Encoding: chunked` (RFC 9112 §7.1) incrementally.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self {
            state: ChunkState::Size,
        }
    }
}

impl ChunkedDecoder {
    /// Consumes what it can of `input` (the rest stays there for the next call), appending the
    /// decoded body bytes to `out`. Returns `true` once the last chunk and trailer were read.
    ///
    /// # Errors
    /// [`ParseError::Chunked`] on a malformed size line or missing CRLF.
    pub fn decode(&mut self, input: &mut bytes::BytesMut, out: &mut Vec<u8>) -> Result<bool, ParseError> {
        use bytes::Buf as _;
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(eol) = input.windows(2).position(|w| w == b"\r\n") else {
                        if input.len() > 1024 {
                            return Err(ParseError::Chunked("chunk size line too long"));
                        }
                        return Ok(false);
                    };
                    let line = &input[..eol];
                    let hex = line.split(|&b| b == b';').next().unwrap_or_default();
                    let hex = std::str::from_utf8(hex)
                        .map_err(|_| ParseError::Chunked("chunk size is not ASCII"))?
                        .trim();
                    let size =
                        usize::from_str_radix(hex, 16).map_err(|_| ParseError::Chunked("chunk size is not hex"))?;
                    input.advance(eol + 2);
                    self.state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if input.is_empty() {
                        return Ok(false);
                    }
                    let n = left.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input.advance(n);
                    self.state = if n == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n)
                    };
                }
                ChunkState::DataEnd => {
                    if input.len() < 2 {
                        return Ok(false);
                    }
                    if &input[..2] != b"\r\n" {
                        return Err(ParseError::Chunked("chunk data not followed by CRLF"));
                    }
                    input.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let Some(eol) = input.windows(2).position(|w| w == b"\r\n") else {
                        return Ok(false);
                    };
                    input.advance(eol + 2);
                    if eol == 0 {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => return Ok(true),
            }
        }
    }
}

/// One dispatched Server-Sent Event, borrowed from the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The last event ID (the stream's, as the HTML Standard keeps it across events).
    pub id: &'a [u8],
    /// The event type; empty for the default `message`.
    pub event: &'a [u8],
    /// The data lines joined by `\n`.
    pub data: &'a [u8],
}

/// An incremental `text/event-stream` parser after HTML Standard §9.2.6 ("Interpreting an event
/// stream"): CR, LF and CRLF end lines; `data` lines accumulate; a blank line dispatches when the
/// data buffer is not empty; comments (`:`) are ignored.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous byte was a CR, so a following LF belongs to the same line end.
    after_cr: bool,
    data: Vec<u8>,
    has_data: bool,
    event: Vec<u8>,
    id: Vec<u8>,
}

impl SseParser {
    /// Feeds the next bytes of the body; calls `f` for each dispatched event.
    pub fn feed(&mut self, bytes: &[u8], mut f: impl FnMut(SseEvent<'_>)) {
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    self.line_done(&mut f);
                }
                _ => self.line.push(b),
            }
        }
    }

    fn line_done(&mut self, f: &mut impl FnMut(SseEvent<'_>)) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if self.has_data {
                f(SseEvent {
                    id: &self.id,
                    event: &self.event,
                    data: &self.data,
                });
            }
            self.data.clear();
            self.has_data = false;
            self.event.clear();
        } else if line[0] != b':' {
            let (field, value) = match line.iter().position(|&c| c == b':') {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (&line[..], &b""[..]),
            };
            match field {
                b"data" => {
                    if self.has_data {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                    self.has_data = true;
                }
                b"event" => {
                    self.event.clear();
                    self.event.extend_from_slice(value);
                }
                b"id" if !value.contains(&0) => {
                    self.id.clear();
                    self.id.extend_from_slice(value);
                }
                _ => {}
            }
        }
        // Give the buffer back (keeps its capacity).
        self.line = line;
        self.line.clear();
    }
}

/// Splits a byte stream into `\n`-terminated lines (a trailing `\r` is dropped), as NDJSON
/// streams are read.
#[derive(Debug, Default)]
pub struct LineSplitter {
    line: Vec<u8>,
}

impl LineSplitter {
    /// Feeds the next bytes; calls `f` for each complete line (without its terminator).
    pub fn feed(&mut self, bytes: &[u8], mut f: impl FnMut(&[u8])) {
        let mut rest = bytes;
        while let Some(i) = memchr(b'\n', rest) {
            let piece = &rest[..i];
            if self.line.is_empty() {
                f(piece.strip_suffix(b"\r").unwrap_or(piece));
            } else {
                self.line.extend_from_slice(piece);
                let line = std::mem::take(&mut self.line);
                f(line.strip_suffix(b"\r").unwrap_or(&line));
                self.line = line;
                self.line.clear();
            }
            rest = &rest[i + 1..];
        }
        self.line.extend_from_slice(rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn sse_all(pieces: &[&[u8]]) -> Vec<(String, String, String)> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for piece in pieces {
            p.feed(piece, |e| {
                out.push((
                    String::from_utf8_lossy(e.id).into_owned(),
                    String::from_utf8_lossy(e.event).into_owned(),
                    String::from_utf8_lossy(e.data).into_owned(),
                ))
            });
        }
        out
    }

    #[test]
    fn sse_events_and_line_endings() {
        let stream =
            b"retry: 3000\n\n: heartbeat\n\nid: a-1\ndata: one\n\nid: a-2\r\nevent: x\r\ndata: two\r\ndata:three\r\r";
        let whole = sse_all(&[stream]);
        assert_eq!(
            whole,
            vec![
                ("a-1".into(), "".into(), "one".into()),
                ("a-2".into(), "x".into(), "two\nthree".into()),
            ]
        );
        // Byte by byte gives the same events.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(sse_all(&bytes), whole);
        // CR at the end of one piece, LF at the start of the next: one line end, not two.
        assert_eq!(
            sse_all(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]),
            vec![("".into(), "".into(), "a\nb".into())]
        );
    }

    #[test]
    fn chunked_in_pieces() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-t: 1\r\n\r\n";
        for split in 1..wire.len() {
            let mut dec = ChunkedDecoder::default();
            let mut out = Vec::new();
            let mut buf = BytesMut::new();
            buf.extend_from_slice(&wire[..split]);
            let done = dec.decode(&mut buf, &mut out).unwrap();
            assert!(!done || split == wire.len());
            buf.extend_from_slice(&wire[split..]);
            assert!(dec.decode(&mut buf, &mut out).unwrap(), "split at {split}");
            assert_eq!(out, b"hello, world");
        }
        let mut buf = BytesMut::from(&b"zz\r\n"[..]);
        assert!(ChunkedDecoder::default().decode(&mut buf, &mut Vec::new()).is_err());
    }

    #[test]
    fn lines_across_pieces() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for piece in [&b"{\"a\":1}\n{\"b"[..], b"\":2}\r\n\n", b"tail"] {
            s.feed(piece, |l| out.push(String::from_utf8_lossy(l).into_owned()));
        }
        assert_eq!(out, vec!["{\"a\":1}", "{\"b\":2}", ""]);
    }

    #[test]
    fn markers_in_any_framing() {
        let mut s = String::new();
        Marker { seq: 7, sent_ns: 123 }.write(&mut s, 3);
        assert_eq!(s, "#7/123#xxx");
        let env = format!("{{\"channel\":\"c#1\",\"id\":\"ab-7\",\"data\":\"{s}\"}}#9/1#");
        let mut found = Vec::new();
        find_markers(env.as_bytes(), |m| found.push(m.seq));
        assert_eq!(found, vec![7, 9]);
        // Split anywhere, the scanner finds each marker exactly once.
        let wire = b"..#1/10#..#2/20##3/30#";
        for split in 0..wire.len() {
            let mut sc = MarkerScanner::default();
            let mut seqs = Vec::new();
            sc.feed(&wire[..split], |m| seqs.push(m.seq));
            sc.feed(&wire[split..], |m| seqs.push(m.seq));
            assert_eq!(seqs, vec![1, 2, 3], "split at {split}");
        }
    }

    #[test]
    fn response_heads() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\nrest";
        assert_eq!(ResponseHead::parse(&raw[..20]).unwrap(), None);
        let head = ResponseHead::parse(raw).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.header("x-a"), Some("b"));
        assert_eq!(head.body_kind(), BodyKind::Chunked);
        assert_eq!(&raw[head.len..], b"rest");
        let head = ResponseHead::parse(b"HTTP/1.1 201 Created\r\ncontent-length: 12\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.body_kind(), BodyKind::Length(12));
    }
}
