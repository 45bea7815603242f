//! The JSON envelope `{"channel","id","event","data","time"}` (docs/protocol.md "Envelope"),
//! encoded once per message and shared by every transport that carries structure.

use bytes::Bytes;
use comet_core::{EncodingSlot, Gap, Message, PresenceNotice};

/// Encoding slots of [`Message::encoded`], one per distinct byte form.
pub(crate) mod slot {
    use super::EncodingSlot;
    /// The envelope alone (poll, long-poll).
    pub(crate) const ENVELOPE: EncodingSlot = EncodingSlot::new(0);
    /// Envelope + `\n` (stream).
    pub(crate) const STREAM_LINE: EncodingSlot = EncodingSlot::new(1);
    /// `<script>p(envelope)</script>` (iframe).
    pub(crate) const IFRAME: EncodingSlot = EncodingSlot::new(2);
    /// One-channel SSE event with the raw data.
    pub(crate) const SSE_RAW: EncodingSlot = EncodingSlot::new(3);
    /// One-channel SSE event with the envelope as data.
    pub(crate) const SSE_ENVELOPE: EncodingSlot = EncodingSlot::new(4);
    /// Several-channel SSE event without its `id:` line (that one is per subscriber).
    pub(crate) const SSE_MULTI: EncodingSlot = EncodingSlot::new(5);
    /// WebSocket `{"type":"message",…}` text.
    pub(crate) const WS_MESSAGE: EncodingSlot = EncodingSlot::new(6);
    /// That text as a whole WebSocket frame, header included (for sockets written directly).
    pub(crate) const WS_FRAME: EncodingSlot = EncodingSlot::new(7);
}

/// Appends `s` as a JSON string literal.
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends the envelope's fields after `open` (`{` or `{"type":"message",`), closing the object.
/// Channel, id and event names come from a restricted alphabet and need no escaping.
pub(crate) fn write_envelope(out: &mut Vec<u8>, open: &[u8], msg: &Message) {
    out.extend_from_slice(open);
    out.extend_from_slice(b"\"channel\":\"");
    out.extend_from_slice(msg.channel.as_str().as_bytes());
    out.extend_from_slice(b"\",\"id\":\"");
    out.extend_from_slice(msg.cursor.to_string().as_bytes());
    out.extend_from_slice(b"\",\"event\":\"");
    out.extend_from_slice(msg.event_name().as_bytes());
    out.extend_from_slice(b"\",\"data\":");
    write_json_str(out, msg.data());
    out.extend_from_slice(b",\"time\":");
    out.extend_from_slice(msg.published_at.to_string().as_bytes());
    out.push(b'}');
}

/// The shared envelope bytes of `msg`.
pub(crate) fn envelope(msg: &Message) -> Bytes {
    msg.encoded(slot::ENVELOPE, |m| {
        let mut out = Vec::with_capacity(96 + m.data_bytes().len());
        write_envelope(&mut out, b"{", m);
        Bytes::from(out)
    })
}

/// `{"type":"gap","channel":"…","cursor":"…"}`: `cursor` is where delivery resumes on that
/// channel (what follows is everything history still holds).
pub(crate) fn gap_object(gap: &Gap) -> String {
    format!(
        "{{\"type\":\"gap\",\"channel\":\"{}\",\"cursor\":\"{}\"}}",
        gap.channel, gap.resumed_at
    )
}

/// A presence notice as JSON (docs/protocol.md "Presence"): `{"type":"join"|"leave","channel",
/// "client","user","info"?}`, or without `type` (`typed` false: an SSE event's data, whose
/// event name says it).
pub(crate) fn presence_object(notice: &PresenceNotice, typed: bool) -> Vec<u8> {
    let entry = &notice.entry;
    let mut out = Vec::with_capacity(96 + entry.info.as_ref().map_or(0, |i| i.len()));
    out.push(b'{');
    if typed {
        out.extend_from_slice(if notice.joined {
            b"\"type\":\"join\","
        } else {
            b"\"type\":\"leave\","
        });
    }
    out.extend_from_slice(b"\"channel\":");
    write_json_str(&mut out, notice.channel.as_str());
    out.extend_from_slice(b",\"client\":");
    write_json_str(&mut out, &entry.client);
    out.extend_from_slice(b",\"user\":");
    write_json_str(&mut out, &entry.user);
    if let Some(info) = &entry.info {
        // A JSON object already (checked when the token was verified).
        out.extend_from_slice(b",\"info\":");
        out.extend_from_slice(info.as_bytes());
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use comet_core::{ChannelName, Cursor, EventName};

    #[test]
    fn envelope_is_valid_json_with_every_field() {
        let msg = Message::new(
            ChannelName::new("chat:a").unwrap(),
            Cursor::new(0xab, 3),
            Some(EventName::new("say").unwrap()),
            "he said \"hi\"\n\u{2028}</script>".as_bytes(),
            1234,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&envelope(&msg)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"channel":"chat:a","id":"ab-3","event":"say","data":"he said \"hi\"\n\u{2028}</script>","time":1234})
        );
    }
}
