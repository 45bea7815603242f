//! Property tests of the per-message encoders: the stream (NDJSON), iframe and SSE encodings of
//! any message, cut into arbitrary chunks and decoded by `comet-client`'s own parsers (an
//! independent implementation: its NDJSON line splitter, its `<script>` extractor, and the
//! `sse-stream` event-stream decoder), give back exactly the message. The one documented
//! exception: raw single-channel SSE reads CR and CRLF in the data as LF (HTML Standard, event
//! streams) and carries no time. `fuzz/fuzz_targets/encoders.rs` checks the same for longer.

use comet_client::Envelope;
use comet_client::fuzzing::{Decoded, cut, decode_iframe, decode_ndjson, decode_sse};
use comet_core::{ChannelName, Cursor, EventName, Message};
use comet_server::transport::encoders;
use proptest::prelude::*;

/// Text with what is hard to carry: line breaks of every kind, `</script>`, HTML comments, JSON
/// and SSE syntax, U+2028/U+2029, NUL, a BOM, and any other printable character.
const DATA: &str =
    "(\\PC|\r|\n|\r\n|</script>|</SCRIPT >|<!--|-->|\u{2028}|\u{2029}|&|\"|\\\\|:| |\u{0}|\t|\u{feff}|data: )*";

#[derive(Debug, Clone)]
struct Case {
    channel: String,
    event: Option<String>,
    cursor: Cursor,
    time: u64,
    data: String,
    /// Where the wire is cut into chunks (each taken modulo its length plus one).
    cuts: Vec<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        "[A-Za-z0-9_.:@-]{1,40}",
        proptest::option::of("[A-Za-z0-9_.:@-]{1,64}").prop_map(|e| e.filter(|e| !e.starts_with("comet."))),
        any::<(u64, u64, u64)>(),
        DATA,
        prop::collection::vec(any::<usize>(), 0..4),
    )
        .prop_map(|(channel, event, (epoch, offset, time), data, cuts)| Case {
            channel,
            event,
            cursor: Cursor::new(epoch, offset),
            time,
            data,
            cuts,
        })
}

impl Case {
    fn message(&self) -> Message {
        Message::new(
            ChannelName::new(&self.channel).unwrap(),
            self.cursor,
            self.event.as_deref().map(|e| EventName::new(e).unwrap()),
            self.data.as_bytes(),
            self.time,
        )
        .unwrap()
    }

    fn envelope(&self) -> Envelope {
        Envelope {
            channel: self.channel.clone(),
            id: self.cursor.to_string(),
            event: self.event.clone().unwrap_or_else(|| "message".into()),
            data: self.data.clone(),
            time: self.time,
        }
    }

    /// `wire` cut at the case's cut points.
    fn chunks<'a>(&self, wire: &'a [u8]) -> Vec<&'a [u8]> {
        cut(wire, self.cuts.iter().copied())
    }
}

/// The messages decoded; anything but messages and SSE bookkeeping (ids, `retry:`) is an error.
fn messages(decoded: Result<Vec<Decoded>, String>) -> Result<Vec<Envelope>, String> {
    let mut out = Vec::new();
    for d in decoded? {
        match d {
            Decoded::Message(envelope) => out.push(envelope),
            Decoded::Cursor(_) | Decoded::Other(_) => {}
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    Ok(out)
}

/// The stream an SSE event follows: `retry:` and the start position.
const SSE_START: &[u8] = b"retry: 3000\nid: 0-0\n\n";

fn check_stream(case: &Case) -> Result<(), TestCaseError> {
    let line = encoders::stream_line(&case.message());
    prop_assert_eq!(line.iter().position(|b| *b == b'\n'), Some(line.len() - 1), "one line");
    prop_assert_eq!(messages(decode_ndjson(&case.chunks(&line))), Ok(vec![case.envelope()]));
    Ok(())
}

fn check_iframe(case: &Case) -> Result<(), TestCaseError> {
    let chunk = encoders::iframe_chunk(&case.message());
    let text = std::str::from_utf8(&chunk).unwrap();
    let inner = text
        .strip_prefix("<script>p(")
        .and_then(|t| t.strip_suffix(")</script>\n"));
    prop_assert!(inner.is_some(), "{:?}", text);
    // Nothing that could end the script or the JavaScript string early.
    prop_assert!(
        !inner.unwrap().contains(['<', '>', '&', '\u{2028}', '\u{2029}']),
        "{:?}",
        text
    );
    prop_assert_eq!(messages(decode_iframe(&case.chunks(&chunk))), Ok(vec![case.envelope()]));
    Ok(())
}

fn check_sse_envelope(case: &Case) -> Result<(), TestCaseError> {
    let wire = [SSE_START, &encoders::sse_envelope(&case.message())].concat();
    prop_assert_eq!(
        messages(decode_sse(&case.chunks(&wire), None)),
        Ok(vec![case.envelope()])
    );
    Ok(())
}

fn check_sse_raw(case: &Case) -> Result<(), TestCaseError> {
    let wire = [SSE_START, &encoders::sse_raw(&case.message())].concat();
    let expected = Envelope {
        data: case.data.replace("\r\n", "\n").replace('\r', "\n"),
        time: 0,
        ..case.envelope()
    };
    prop_assert_eq!(
        messages(decode_sse(&case.chunks(&wire), Some(&case.channel))),
        Ok(vec![expected])
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn stream_lines_decode_to_the_message(case in case()) {
        check_stream(&case)?;
    }

    #[test]
    fn iframe_chunks_decode_to_the_message(case in case()) {
        check_iframe(&case)?;
    }

    #[test]
    fn sse_envelopes_decode_to_the_message(case in case()) {
        check_sse_envelope(&case)?;
    }

    #[test]
    fn raw_sse_decodes_to_the_message_with_lf_line_ends(case in case()) {
        check_sse_raw(&case)?;
    }
}

/// The hard cases by name, so they are always run whatever proptest generates.
#[test]
fn named_cases() {
    let data = [
        "",
        "\n",
        "\r",
        "\r\n",
        "a\rb\nc\r\nd",
        "\n\n\r\r\n",
        "ends with CR\r",
        " leading space",
        "data: x\n\nid: 1-1\n\n",
        "</script><script>alert(1)</script>",
        "<!--<script>",
        "\u{2028}\u{2029}",
        "h\u{e9}llo \u{4e2d}\u{6587} \u{1F600}",
        "\u{0}\t\u{7f}\u{feff}",
    ];
    for data in data {
        for event in [None, Some("update")] {
            let case = Case {
                channel: "chat:lobby".into(),
                event: event.map(str::to_owned),
                cursor: Cursor::new(0x9f2c_61d0_4ab3_e177, 42),
                time: 1_795_435_237_123,
                data: data.into(),
                cuts: vec![0, 7, 30],
            };
            for check in [check_stream, check_iframe, check_sse_envelope, check_sse_raw] {
                check(&case).unwrap_or_else(|e| panic!("{data:?}, event {event:?}: {e}"));
            }
        }
    }
}
