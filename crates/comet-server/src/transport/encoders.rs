//! The per-message encoders, public only so that the criterion benchmarks
//! (`benches/encoders.rs`) can time them; not a stable API. Each call returns the message's shared
//! encoding, made on the first call for that message and cloned (a reference count) after.
use bytes::Bytes;
use comet_core::{Event, Message};

/// The JSON envelope (poll, long-poll, and the base of the others).
pub fn envelope(msg: &Message) -> Bytes {
    crate::transport::envelope::envelope(msg)
}

/// One NDJSON line (stream).
pub fn stream_line(msg: &Message) -> Bytes {
    crate::transport::stream::line(msg)
}

/// One `<script>p(…)</script>` chunk (iframe).
pub fn iframe_chunk(msg: &Message) -> Bytes {
    crate::transport::iframe::chunk(msg)
}

/// One single-channel SSE event with the raw data.
pub fn sse_raw(msg: &Message) -> Bytes {
    crate::transport::sse::event_raw(msg)
}

/// One single-channel SSE event with the envelope as data.
pub fn sse_envelope(msg: &Message) -> Bytes {
    crate::transport::sse::event_envelope(msg)
}

/// A whole poll / long-poll answer body for `events`.
pub fn poll_answer(events: &[Event], cursor: &str) -> Bytes {
    crate::transport::poll::encode_answer(events, cursor, false)
}
