//! Channel and event name validation never panics, accepts exactly the documented names
//! (docs/protocol.md "Names": 1–255 bytes, resp. 1–64 bytes, of `[A-Za-z0-9_.:@-]`, event names
//! not starting with `comet.`), and says truthfully why it rejects the others.

#![no_main]

use comet_core::{ChannelName, EventName, MAX_CHANNEL_LEN, MAX_EVENT_LEN, NameError};
use libfuzzer_sys::fuzz_target;

fn in_alphabet(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_.:@-".contains(&b)
}

/// Checks a rejection's reason against the text; `max` is the kind's length limit.
fn check_reason(text: &str, err: &NameError, max: usize) {
    let message = err.to_string();
    assert!(!message.is_empty());
    match *err {
        NameError::Empty { .. } => assert!(text.is_empty()),
        NameError::TooLong { len, max: limit, .. } => {
            assert_eq!((len, limit), (text.len(), max));
            assert!(len > max);
        }
        NameError::InvalidByte { byte, index, .. } => {
            assert!(text.len() <= max, "{text:?}: the length is checked first");
            assert_eq!(text.as_bytes()[index], byte);
            assert!(!in_alphabet(byte));
            assert!(
                text.as_bytes()[..index].iter().copied().all(in_alphabet),
                "not the first bad byte"
            );
        }
        NameError::Reserved { ref name } => assert_eq!(name, text),
    }
}

fuzz_target!(|data: &[u8]| {
    // Turn some inputs into names of the alphabet, so the accepting paths are reached often.
    let mapped: String;
    let text = match std::str::from_utf8(data) {
        Ok(text) => text,
        Err(_) => {
            const ALPHABET: &[u8] = b"abcXYZ019_.:@-";
            mapped = data
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
                .collect();
            &mapped
        }
    };
    let valid = !text.is_empty() && text.bytes().all(in_alphabet);

    match ChannelName::new(text) {
        Ok(name) => {
            assert!(valid && text.len() <= MAX_CHANNEL_LEN, "accepted channel {text:?}");
            assert_eq!(name.as_str(), text);
            assert_eq!(name.to_string(), text);
            assert_eq!(name.namespace(), text.split_once(':').map(|(ns, _)| ns));
            assert_eq!(text.parse::<ChannelName>().as_ref(), Ok(&name));
        }
        Err(e) => {
            assert!(!valid || text.len() > MAX_CHANNEL_LEN, "rejected channel {text:?}: {e}");
            assert!(!matches!(e, NameError::Reserved { .. }));
            check_reason(text, &e, MAX_CHANNEL_LEN);
        }
    }

    match EventName::new(text) {
        Ok(name) => {
            assert!(valid && text.len() <= MAX_EVENT_LEN, "accepted event {text:?}");
            assert!(!text.starts_with("comet."), "accepted reserved event {text:?}");
            assert_eq!(name.as_str(), text);
            assert_eq!(name.to_string(), text);
        }
        Err(e) => {
            assert!(
                !valid || text.len() > MAX_EVENT_LEN || text.starts_with("comet."),
                "rejected event {text:?}: {e}"
            );
            check_reason(text, &e, MAX_EVENT_LEN);
        }
    }
});
