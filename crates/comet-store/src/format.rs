//! The file's tables and how a message is laid out in one.
//!
//! - `channels`: channel name → (epoch, newest offset, last publish in ms since the Unix epoch).
//! - `messages`: (channel name, offset) → [`encode`]d message, within the channel's epoch.
//! - `keys`: (channel name, idempotency key) → (epoch, offset, expiry in ms since the Unix
//!   epoch).
//! - `meta`: name → bytes: [`EMPTY_EPOCHS`], [`RUNNING`], [`FORMAT`].

use redb::TableDefinition;

/// Channel name → (epoch, head, last publish ms).
pub(crate) const CHANNELS: TableDefinition<&str, (u64, u64, u64)> = TableDefinition::new("channels");
/// (channel, offset) → message.
pub(crate) const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
/// (channel, key) → (epoch, offset, expiry ms).
pub(crate) const KEYS: TableDefinition<(&str, &str), (u64, u64, u64)> = TableDefinition::new("keys");
/// Name → value.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// `meta` key: the empty epochs, newest first, as little-endian u64s after the start of the
/// newest (ms since the Unix epoch, also a u64).
pub(crate) const EMPTY_EPOCHS: &str = "empty_epochs";
/// `meta` key: set (to the fsync mode's name) while a process has the file open, cleared by a
/// clean close; found set at open, the last process crashed.
pub(crate) const RUNNING: &str = "running";
/// `meta` key: the layout's version, [`FORMAT_VERSION`].
pub(crate) const FORMAT: &str = "format";
/// The layout described here.
pub(crate) const FORMAT_VERSION: &[u8] = b"1";

/// A message's value: its publish time (u64 ms, little-endian), its event name's length (one
/// byte, 0 for the default) and bytes, then its data.
pub(crate) fn encode(published_at: u64, event: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + event.len() + data.len());
    out.extend_from_slice(&published_at.to_le_bytes());
    out.push(u8::try_from(event.len()).expect("event names are at most 64 bytes"));
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(data);
    out
}

/// The parts of an [`encode`]d value: (publish time, event name, data); `None` if the value is
/// too short for what it claims.
pub(crate) fn decode(value: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let time = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    let len = usize::from(*value.get(8)?);
    let event = value.get(9..9 + len)?;
    let data = value.get(9 + len..)?;
    Some((time, event, data))
}

/// The publish time of an [`encode`]d value, without the rest.
pub(crate) fn published_at(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.get(..8)?.try_into().ok()?))
}

/// The empty epochs' `meta` value.
pub(crate) fn encode_epochs(epochs: &[u64], began_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 * (epochs.len() + 1));
    out.extend_from_slice(&began_ms.to_le_bytes());
    for e in epochs {
        out.extend_from_slice(&e.to_le_bytes());
    }
    out
}

/// The empty epochs and the newest's start (ms since the Unix epoch) from their `meta` value.
pub(crate) fn decode_epochs(value: &[u8]) -> Option<(Vec<u64>, u64)> {
    if !value.len().is_multiple_of(8) || value.is_empty() {
        return None;
    }
    let mut words = value
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8")));
    let age = words.next()?;
    Some((words.collect(), age))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_decodes_to_what_was_encoded() {
        let v = encode(1_700_000_000_123, "tick", b"{\"p\":1}");
        assert_eq!(decode(&v), Some((1_700_000_000_123, &b"tick"[..], &b"{\"p\":1}"[..])));
        assert_eq!(published_at(&v), Some(1_700_000_000_123));
        let v = encode(5, "", b"");
        assert_eq!(decode(&v), Some((5, &b""[..], &b""[..])));
    }

    #[test]
    fn a_truncated_value_decodes_to_none() {
        let v = encode(5, "tick", b"x");
        assert_eq!(decode(&v[..7]), None);
        assert_eq!(decode(&v[..10]), None, "the event name is cut");
    }

    #[test]
    fn the_empty_epochs_round_trip() {
        let v = encode_epochs(&[3, 2, 1], 42);
        assert_eq!(decode_epochs(&v), Some((vec![3, 2, 1], 42)));
        assert_eq!(decode_epochs(&v[..5]), None);
    }
}
