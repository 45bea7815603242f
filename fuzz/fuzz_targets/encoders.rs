//! For any message (data, event name, cursor, channel, time), the stream (NDJSON), iframe and
//! SSE encodings, cut into arbitrary chunks and decoded by `comet-client`'s own parsers (its
//! NDJSON line splitter, its `<script>` extractor, and `sse-stream`'s event-stream decoder),
//! give back exactly that message: data, event, id, channel and time. The one documented
//! exception: raw single-channel SSE turns CR and CRLF in the data into LF (HTML Standard, event
//! streams) and carries no time. Iframe chunks also never contain `<` or a raw U+2028/U+2029
//! between their `<script>` tags, so nothing can end the script early. And the client's decoders
//! never panic on the fuzzer's raw bytes either.

#![no_main]

use comet_client::Envelope;
use comet_client::fuzzing::{Decoded, cut, decode_iframe, decode_ndjson, decode_sse};
use comet_core::{ChannelName, Cursor, EventName, MAX_EVENT_LEN, Message};
use comet_server::transport::encoders;
use libfuzzer_sys::fuzz_target;

/// A message and where to cut its encodings, read from the fuzzer's bytes (a plain format, so
/// that seeds are easy to write): `[event length, channel length, number of cuts, event…,
/// channel…, cuts (2 bytes each)…, epoch (8), offset (8), time (8), data…]`. Names are mapped into
/// the name alphabet (event length 0, or a reserved `comet.` name: none; channel length 0: `c`),
/// missing bytes read as zero, and the data is the rest read as UTF-8 (invalid bytes replaced).
#[derive(Debug)]
struct Input {
    data: String,
    event: Option<String>,
    channel: String,
    epoch: u64,
    offset: u64,
    time: u64,
    cuts: Vec<u16>,
}

impl Input {
    fn read(mut bytes: &[u8]) -> Self {
        let mut take = |n: usize| {
            let (head, rest) = bytes.split_at(n.min(bytes.len()));
            bytes = rest;
            head
        };
        let header = take(3).to_vec();
        let byte = |i: usize| usize::from(header.get(i).copied().unwrap_or(0));
        let event = name(take(byte(0) % (MAX_EVENT_LEN + 1)));
        let channel = name(take(byte(1)));
        let cuts = take(2 * (byte(2) % 8))
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)]))
            .collect();
        let mut int = || {
            let mut b = [0; 8];
            let head = take(8);
            b[..head.len()].copy_from_slice(head);
            u64::from_le_bytes(b)
        };
        let (epoch, offset, time) = (int(), int(), int());
        Input {
            data: String::from_utf8_lossy(bytes).into_owned(),
            event: Some(event).filter(|e| !e.is_empty() && !e.starts_with("comet.")),
            channel: Some(channel).filter(|c| !c.is_empty()).unwrap_or_else(|| "c".into()),
            epoch,
            offset,
            time,
            cuts,
        }
    }
}

fn name(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"abcXYZ019_.:@-";
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// `wire` cut at `cuts`.
fn chunks<'a>(wire: &'a [u8], cuts: &[u16]) -> Vec<&'a [u8]> {
    cut(wire, cuts.iter().map(|c| usize::from(*c)))
}

/// The messages of `decoded`, failing on anything but messages and SSE bookkeeping.
fn messages(what: &str, decoded: Result<Vec<Decoded>, String>) -> Vec<Envelope> {
    let decoded = decoded.unwrap_or_else(|e| panic!("{what}: {e}"));
    decoded
        .into_iter()
        .filter_map(|d| match d {
            Decoded::Message(envelope) => Some(envelope),
            Decoded::Cursor(_) | Decoded::Other(_) => None,
            other => panic!("{what}: unexpected {other:?}"),
        })
        .collect()
}

fuzz_target!(|bytes: &[u8]| {
    let input = Input::read(bytes);

    // The client's decoders never panic on what a server (or anything in between) might send.
    let cut = chunks(bytes, &input.cuts);
    let _ = decode_ndjson(&cut);
    let _ = decode_iframe(&cut);
    let _ = decode_sse(&cut, None);
    let _ = decode_sse(&cut, Some("c"));
    let (channel, event) = (input.channel.clone(), input.event.clone());
    let cursor = Cursor::new(input.epoch, input.offset);
    let msg = Message::new(
        ChannelName::new(&channel).unwrap(),
        cursor,
        event.as_deref().map(|e| EventName::new(e).unwrap()),
        input.data.as_bytes(),
        input.time,
    )
    .unwrap();
    let expected = Envelope {
        channel: channel.clone(),
        id: cursor.to_string(),
        event: event.clone().unwrap_or_else(|| "message".into()),
        data: input.data.clone(),
        time: input.time,
    };

    // Stream: one NDJSON line.
    let line = encoders::stream_line(&msg);
    assert_eq!(line.iter().position(|b| *b == b'\n'), Some(line.len() - 1), "one line");
    let got = messages("stream", decode_ndjson(&chunks(&line, &input.cuts)));
    assert_eq!(got, std::slice::from_ref(&expected));

    // Iframe: one script, nothing in it that could end it or break the JavaScript.
    let chunk = encoders::iframe_chunk(&msg);
    let text = std::str::from_utf8(&chunk).expect("UTF-8");
    let inner = text
        .strip_prefix("<script>p(")
        .and_then(|t| t.strip_suffix(")</script>\n"))
        .expect("<script>p(…)</script>");
    assert!(!inner.contains(['<', '>', '&', '\u{2028}', '\u{2029}']), "{inner:?}");
    let got = messages("iframe", decode_iframe(&chunks(&chunk, &input.cuts)));
    assert_eq!(got, std::slice::from_ref(&expected));

    // SSE with the envelope as data: exact.
    let start = format!("retry: 3000\nid: {}\n\n", Cursor::new(input.epoch, 0));
    let wire = [start.as_bytes(), &encoders::sse_envelope(&msg)].concat();
    let got = messages("sse envelope", decode_sse(&chunks(&wire, &input.cuts), None));
    assert_eq!(got, std::slice::from_ref(&expected));

    // Raw SSE: the data as published, but with CR and CRLF read as LF, and no time.
    let wire = [start.as_bytes(), &encoders::sse_raw(&msg)].concat();
    let got = messages("sse raw", decode_sse(&chunks(&wire, &input.cuts), Some(&channel)));
    let raw = Envelope {
        data: input.data.replace("\r\n", "\n").replace('\r', "\n"),
        time: 0,
        ..expected
    };
    assert_eq!(got, [raw]);
});
