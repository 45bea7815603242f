//! Validated names: [`ChannelName`] and [`EventName`].

use std::fmt;
use std::sync::Arc;

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;
/// Longest event name, in bytes.
pub const MAX_EVENT_LEN: usize = 64;
/// Event names with this prefix are Comet's own notices (e.g. `comet.gap`) and cannot be published.
pub const RESERVED_EVENT_PREFIX: &str = "comet.";

/// Why a channel or event name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} name is empty")]
    Empty {
        /// `"channel"` or `"event"`.
        kind: &'static str,
    },
    /// The name is longer than allowed.
    #[error("{kind} name is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// `"channel"` or `"event"`.
        kind: &'static str,
        /// The name's length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The name holds a byte outside `[A-Za-z0-9_.:@-]`.
    #[error("{kind} name has invalid byte {byte:#04x} ({shown}) at index {index}; allowed are A-Z a-z 0-9 _ . : @ -", shown = show_byte(*byte))]
    InvalidByte {
        /// `"channel"` or `"event"`.
        kind: &'static str,
        /// The offending byte.
        byte: u8,
        /// Its index in the name.
        index: usize,
    },
    /// An event name in Comet's reserved `comet.` namespace.
    #[error("event name {name:?} is reserved: names starting with \"comet.\" are Comet's own")]
    Reserved {
        /// The rejected name.
        name: String,
    },
}

fn show_byte(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' {
        format!("{:?}", b as char)
    } else {
        "non-printable".to_owned()
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-')
}

fn validate(kind: &'static str, s: &str, max: usize) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if s.len() > max {
        return Err(NameError::TooLong {
            kind,
            len: s.len(),
            max,
        });
    }
    if let Some(index) = s.bytes().position(|b| !is_name_byte(b)) {
        return Err(NameError::InvalidByte {
            kind,
            byte: s.as_bytes()[index],
            index,
        });
    }
    Ok(())
}

/// A channel's name: 1–255 bytes of `[A-Za-z0-9_.:@-]` (docs/protocol.md "Names"). `:` separates a namespace, as in
/// `chat:lobby`. Cheap to clone (a shared `Arc<str>`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

impl ChannelName {
    /// Validates `name`.
    ///
    /// # Errors
    /// [`NameError`] naming the first bad byte, or the length problem.
    pub fn new(name: &str) -> Result<Self, NameError> {
        validate("channel", name, MAX_CHANNEL_LEN)?;
        Ok(Self(Arc::from(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace: the part before the first `:`, if there is one (`chat` for `chat:lobby`).
    pub fn namespace(&self) -> Option<&str> {
        self.0.split_once(':').map(|(ns, _)| ns)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ChannelName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A message's event name: 1–64 bytes of `[A-Za-z0-9_.:@-]`. Absent means the default `message`
/// (HTML Standard, "event stream interpretation"). Names starting with `comet.` are reserved.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventName(Arc<str>);

impl EventName {
    /// Validates a publisher's event name.
    ///
    /// # Errors
    /// [`NameError`]: empty, too long, a bad byte, or [`NameError::Reserved`] for `comet.*`.
    pub fn new(name: &str) -> Result<Self, NameError> {
        validate("event", name, MAX_EVENT_LEN)?;
        if name.starts_with(RESERVED_EVENT_PREFIX) {
            return Err(NameError::Reserved { name: name.to_owned() });
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        let name = ChannelName::new("chat:lobby_1.a@b-c").unwrap();
        assert_eq!(name.namespace(), Some("chat"));
        assert_eq!(ChannelName::new("x").unwrap().namespace(), None);
        assert!(ChannelName::new(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn rejects_with_a_message_naming_the_bad_byte() {
        let err = ChannelName::new("chat lobby").unwrap_err();
        assert_eq!(
            err,
            NameError::InvalidByte {
                kind: "channel",
                byte: b' ',
                index: 4
            }
        );
        assert!(err.to_string().contains("invalid byte 0x20 (' ') at index 4"), "{err}");
        assert!(matches!(ChannelName::new(""), Err(NameError::Empty { .. })));
        assert!(matches!(
            ChannelName::new(&"a".repeat(256)),
            Err(NameError::TooLong { len: 256, .. })
        ));
        assert!(ChannelName::new("é").is_err());
        assert!(ChannelName::new("a,b").is_err());
        assert!(ChannelName::new("a=b").is_err());
    }

    #[test]
    fn event_names_reserve_the_comet_prefix() {
        assert!(EventName::new("say").is_ok());
        assert!(matches!(EventName::new("comet.gap"), Err(NameError::Reserved { .. })));
        assert!(EventName::new("a\nb").is_err());
        assert!(EventName::new(&"e".repeat(65)).is_err());
    }
}
