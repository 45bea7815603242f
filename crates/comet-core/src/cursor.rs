//! Cursors: where a message sits in its channel's history, and where a subscriber resumes.
//!
//! Wire format (docs/protocol.md "Cursors"): a [`Cursor`] is `<epoch hex>-<offset decimal>`; a
//! [`Position`] over several channels is `<channel>=<cursor>` joined by `,`.

use std::fmt;

use crate::name::{ChannelName, NameError};

/// A message's place in its channel's history.
///
/// `offset` goes up by one per message (the first message is offset 1; offset 0 means "before
/// anything"). `epoch` names one incarnation of the channel's history: a memory broker's channel
/// created anew, or a flushed Redis. Cursors of different epochs are not comparable.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// Which incarnation of the channel's history this cursor belongs to.
    pub epoch: u64,
    /// Messages published in this epoch up to and including the one this cursor names.
    pub offset: u64,
}

impl Cursor {
    /// A cursor of `epoch` at `offset`.
    pub const fn new(epoch: u64, offset: u64) -> Self {
        Self { epoch, offset }
    }

    /// Parses the `<epoch hex>-<offset decimal>` text form, strictly: 1–16 lowercase hex digits,
    /// `-`, 1–20 decimal digits, nothing else.
    ///
    /// # Errors
    /// [`CursorError`] saying what is wrong with the text.
    pub fn parse(text: &str) -> Result<Self, CursorError> {
        let bad = |reason: &'static str| CursorError::new(text, reason);
        let (epoch, offset) = text
            .split_once('-')
            .ok_or_else(|| bad("expected <epoch>-<offset>, found no '-'"))?;
        if epoch.is_empty() || epoch.len() > 16 {
            return Err(bad("the epoch must be 1 to 16 hex digits"));
        }
        if !epoch.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad("the epoch must be lowercase hex digits"));
        }
        if offset.is_empty() || offset.len() > 20 || !offset.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the offset must be 1 to 20 decimal digits"));
        }
        let epoch = u64::from_str_radix(epoch, 16).map_err(|_| bad("the epoch does not fit 64 bits"))?;
        let offset = offset.parse().map_err(|_| bad("the offset does not fit 64 bits"))?;
        Ok(Self { epoch, offset })
    }
}

impl fmt::Display for Cursor {
    /// `<epoch hex>-<offset decimal>`, written by hand into one buffer rather than through
    /// `write!`: a cursor is written for every subscribe and every event's id, and the formatting
    /// machinery took about 900 instructions a cursor (callgrind, S5 in bench/RESULTS.md).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        // 16 hex digits, '-', 20 decimal digits at most.
        let mut buf = [0u8; 37];
        let mut at = buf.len();
        let mut offset = self.offset;
        loop {
            at -= 1;
            buf[at] = b'0' + (offset % 10) as u8;
            offset /= 10;
            if offset == 0 {
                break;
            }
        }
        at -= 1;
        buf[at] = b'-';
        let mut epoch = self.epoch;
        loop {
            at -= 1;
            buf[at] = HEX[(epoch & 0xf) as usize];
            epoch >>= 4;
            if epoch == 0 {
                break;
            }
        }
        // Only ASCII digits and '-' were written.
        f.write_str(std::str::from_utf8(&buf[at..]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cursor({self})")
    }
}

impl std::str::FromStr for Cursor {
    type Err = CursorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A cursor or position that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cursor {shown:?}: {reason}")]
pub struct CursorError {
    /// The rejected text, cut to 80 bytes for the message.
    pub shown: String,
    /// What is wrong with it.
    pub reason: String,
}

impl CursorError {
    fn new(text: &str, reason: impl Into<String>) -> Self {
        let mut end = text.len().min(80);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            shown: text[..end].to_owned(),
            reason: reason.into(),
        }
    }
}

/// Where a subscription to one channel starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// At the live edge: only messages published from now on.
    Live,
    /// From the oldest message history still holds.
    Earliest,
    /// Right after this cursor.
    Cursor(Cursor),
}

/// The position of a subscription to one or several channels: one cursor per channel, in the
/// order given. Text form `chan=cursor,chan=cursor` (docs/protocol.md).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Position {
    entries: Vec<(ChannelName, Cursor)>,
}

impl Position {
    /// An empty position.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `channel`'s cursor, adding the channel if it is not there yet.
    pub fn set(&mut self, channel: &ChannelName, cursor: Cursor) {
        match self.entries.iter_mut().find(|(c, _)| c == channel) {
            Some(entry) => entry.1 = cursor,
            None => self.entries.push((channel.clone(), cursor)),
        }
    }

    /// `channel`'s cursor, if the position has one.
    pub fn get(&self, channel: &ChannelName) -> Option<Cursor> {
        self.entries.iter().find(|(c, _)| c == channel).map(|(_, cur)| *cur)
    }

    /// The (channel, cursor) pairs in order.
    pub fn entries(&self) -> &[(ChannelName, Cursor)] {
        &self.entries
    }

    /// Parses `chan=cursor,chan=cursor`, in time linear in the text's length.
    ///
    /// # Errors
    /// [`CursorError`] when an entry lacks `=`, names an invalid channel, repeats a channel, or
    /// holds an invalid cursor.
    pub fn parse(text: &str) -> Result<Self, CursorError> {
        Self::parse_at_most(text, usize::MAX)
    }

    /// [`Position::parse`], refusing a position of more than `max` entries before reading any.
    ///
    /// # Errors
    /// As [`Position::parse`], and [`CursorError`] for more than `max` entries.
    pub fn parse_at_most(text: &str, max: usize) -> Result<Self, CursorError> {
        if text.is_empty() {
            return Err(CursorError::new(text, "empty position"));
        }
        let count = text.bytes().filter(|&b| b == b',').count() + 1;
        if count > max {
            return Err(CursorError::new(
                text,
                format!("the position names {count} channels; at most {max} are allowed"),
            ));
        }
        let mut entries = Vec::with_capacity(count);
        let mut seen = std::collections::HashSet::with_capacity(count);
        for entry in text.split(',') {
            let (channel, cursor) = entry
                .split_once('=')
                .ok_or_else(|| CursorError::new(text, "a position entry must be <channel>=<cursor>"))?;
            let channel = ChannelName::new(channel).map_err(|e: NameError| CursorError::new(text, e.to_string()))?;
            let cursor = Cursor::parse(cursor).map_err(|e| CursorError::new(text, e.reason))?;
            if !seen.insert(channel.clone()) {
                return Err(CursorError::new(text, format!("channel {channel} appears twice")));
            }
            entries.push((channel, cursor));
        }
        Ok(Self { entries })
    }

    /// Resolves client text (`earliest`, a cursor, or a position) into a start point for each of
    /// `channels`. A plain cursor is only meaningful for a single channel; a channel a position
    /// does not name starts at the live edge.
    ///
    /// # Errors
    /// [`CursorError`] for malformed text, or a plain cursor given for several channels.
    pub fn resolve(text: Option<&str>, channels: &[ChannelName]) -> Result<Vec<Since>, CursorError> {
        Self::resolve_at_most(text, channels, usize::MAX)
    }

    /// [`Position::resolve`] with a position of at most `max` entries ([`Position::parse_at_most`]),
    /// in time linear in the text's length and the number of channels.
    ///
    /// # Errors
    /// As [`Position::resolve`], and [`CursorError`] for a position of more than `max` entries.
    pub fn resolve_at_most(
        text: Option<&str>,
        channels: &[ChannelName],
        max: usize,
    ) -> Result<Vec<Since>, CursorError> {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return Ok(vec![Since::Live; channels.len()]);
        };
        if text == "earliest" {
            return Ok(vec![Since::Earliest; channels.len()]);
        }
        if text.contains('=') {
            let position = Self::parse_at_most(text, max)?;
            let by_channel: std::collections::HashMap<&ChannelName, Cursor> = position
                .entries
                .iter()
                .map(|(channel, cursor)| (channel, *cursor))
                .collect();
            return Ok(channels
                .iter()
                .map(|c| by_channel.get(c).map_or(Since::Live, |cursor| Since::Cursor(*cursor)))
                .collect());
        }
        let cursor = Cursor::parse(text)?;
        if channels.len() != 1 {
            return Err(CursorError::new(
                text,
                "a single cursor cannot resume several channels; send the position (chan=cursor,…)",
            ));
        }
        Ok(vec![Since::Cursor(cursor)])
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (channel, cursor)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{channel}={cursor}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Position({self})")
    }
}

#[cfg(test)]
mod tests {

    /// The cursor written by hand reads as `write!` would write it, at the edges too.
    #[test]
    fn display_is_epoch_hex_dash_offset_decimal() {
        for (epoch, offset) in [
            (0, 0),
            (1, 1),
            (0xf, 9),
            (0x10, 10),
            (0x19c_2f4a_11be, 1_234_567),
            (u64::MAX, u64::MAX),
            (u64::MAX, 0),
            (0, u64::MAX),
        ] {
            let cursor = Cursor::new(epoch, offset);
            assert_eq!(cursor.to_string(), format!("{epoch:x}-{offset}"));
            assert_eq!(cursor.to_string().parse::<Cursor>().ok(), Some(cursor));
        }
    }

    use super::*;
    use proptest::prelude::*;

    fn ch(s: &str) -> ChannelName {
        ChannelName::new(s).unwrap()
    }

    #[test]
    fn cursor_text_form() {
        let c = Cursor::new(0x9f2c, 42);
        assert_eq!(c.to_string(), "9f2c-42");
        assert_eq!(Cursor::parse("9f2c-42").unwrap(), c);
        assert_eq!(
            Cursor::parse("ffffffffffffffff-18446744073709551615").unwrap(),
            Cursor::new(u64::MAX, u64::MAX)
        );
    }

    #[test]
    fn cursor_parser_is_strict_and_says_why() {
        for (bad, why) in [
            ("", "no '-'"),
            ("abc", "no '-'"),
            ("-1", "1 to 16 hex"),
            ("9F2C-1", "lowercase hex"),
            ("9f2c-", "decimal digits"),
            ("9f2c-+1", "decimal digits"),
            ("9f2c-1-2", "decimal digits"),
            ("11111111111111111-1", "1 to 16 hex"),
            ("1-99999999999999999999", "fit 64 bits"),
        ] {
            let err = Cursor::parse(bad).unwrap_err();
            assert!(err.to_string().contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn position_round_trip_and_resolve() {
        let mut p = Position::new();
        p.set(&ch("a"), Cursor::new(1, 2));
        p.set(&ch("b:c"), Cursor::new(0xab, 7));
        p.set(&ch("a"), Cursor::new(1, 3));
        assert_eq!(p.to_string(), "a=1-3,b:c=ab-7");
        assert_eq!(Position::parse("a=1-3,b:c=ab-7").unwrap(), p);

        let chans = [ch("a"), ch("b:c"), ch("z")];
        let since = Position::resolve(Some("a=1-3,b:c=ab-7"), &chans).unwrap();
        assert_eq!(
            since,
            vec![
                Since::Cursor(Cursor::new(1, 3)),
                Since::Cursor(Cursor::new(0xab, 7)),
                Since::Live
            ]
        );
        assert_eq!(Position::resolve(None, &chans).unwrap(), vec![Since::Live; 3]);
        assert_eq!(
            Position::resolve(Some("earliest"), &chans).unwrap(),
            vec![Since::Earliest; 3]
        );
        assert!(
            Position::resolve(Some("1-3"), &chans)
                .unwrap_err()
                .to_string()
                .contains("several channels")
        );
        assert_eq!(
            Position::resolve(Some("1-3"), &chans[..1]).unwrap(),
            vec![Since::Cursor(Cursor::new(1, 3))]
        );
        assert!(
            Position::parse("a=1-3,a=1-4")
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(Position::parse("a b=1-3").is_err());
        assert!(Position::parse("a=zz").is_err());
    }

    proptest! {
        #[test]
        fn cursor_round_trips(epoch in any::<u64>(), offset in any::<u64>()) {
            let c = Cursor::new(epoch, offset);
            prop_assert_eq!(Cursor::parse(&c.to_string()).unwrap(), c);
        }

        #[test]
        fn cursor_parser_never_panics(s in "\\PC{0,40}") {
            let _ = Cursor::parse(&s);
            let _ = Position::parse(&s);
        }
    }
}
