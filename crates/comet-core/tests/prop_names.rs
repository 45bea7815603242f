//! Property tests of name validation (docs/protocol.md "Names"): accepted exactly when the
//! documented alphabet and length say so.

use comet_core::{ChannelName, EventName, MAX_CHANNEL_LEN, MAX_EVENT_LEN};
use proptest::prelude::*;

fn documented(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:@-".contains(&b))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Names of the alphabet, ASCII (all of it, space and controls too), and any other text.
    #[test]
    fn channel_names(name in "([A-Za-z0-9_.:@-]{0,100}|[\\x00-\\x7f]{0,3}|\\PC{0,4}){1,4}") {
        let accepted = ChannelName::new(&name);
        prop_assert_eq!(accepted.is_ok(), documented(&name, MAX_CHANNEL_LEN), "{:?}", name);
        if let Ok(channel) = accepted {
            prop_assert_eq!(channel.as_str(), name.as_str());
            prop_assert_eq!(channel.namespace(), name.split_once(':').map(|(ns, _)| ns));
        }
    }

    #[test]
    fn event_names(name in "(comet\\.)?([A-Za-z0-9_.:@-]{0,40}|[\\x00-\\x7f]{0,3}|\\PC{0,4}){1,3}") {
        let accepted = EventName::new(&name);
        let expected = documented(&name, MAX_EVENT_LEN) && !name.starts_with("comet.");
        prop_assert_eq!(accepted.is_ok(), expected, "{:?}", name);
        if let Ok(event) = accepted {
            prop_assert_eq!(event.as_str(), name.as_str());
        }
    }
}
