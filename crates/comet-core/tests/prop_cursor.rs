//! Property tests of the cursor text forms (docs/protocol.md "Cursors"): whatever is printed
//! parses back equal, and the parser accepts exactly the documented grammar.

use comet_core::{ChannelName, Cursor, Position, Since};
use proptest::prelude::*;

/// A channel name of the documented alphabet.
fn channel() -> impl Strategy<Value = ChannelName> {
    "[A-Za-z0-9_.:@-]{1,40}".prop_map(|s| ChannelName::new(&s).unwrap())
}

fn cursor() -> impl Strategy<Value = Cursor> {
    (any::<u64>(), any::<u64>()).prop_map(|(epoch, offset)| Cursor::new(epoch, offset))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn cursors_print_in_the_documented_form_and_parse_back(c in cursor()) {
        let text = c.to_string();
        let (epoch, offset) = text.split_once('-').unwrap();
        prop_assert!((1..=16).contains(&epoch.len()), "{}", text);
        prop_assert!(epoch.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{}", text);
        prop_assert!(offset.bytes().all(|b| b.is_ascii_digit()), "{}", text);
        prop_assert_eq!(Cursor::parse(&text), Ok(c));
        prop_assert_eq!(text.parse::<Cursor>(), Ok(c));
    }

    /// Accepted exactly when it is 1–16 lowercase hex digits, `-`, 1–20 decimal digits, and both
    /// numbers fit 64 bits; then the value is what the digits say.
    #[test]
    fn the_cursor_parser_accepts_exactly_the_grammar(
        text in prop_oneof![
            "[0-9a-f]{1,17}-[0-9]{1,21}",
            "[0-9a-fA-F]{1,17}-[0-9]{1,21}",
            "[0-9a-fA-F+ ]{0,18}-?[0-9a-f+ -]{0,22}",
        ]
    ) {
        let expected = text.split_once('-').and_then(|(e, o)| {
            let grammar = (1..=16).contains(&e.len())
                && e.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && (1..=20).contains(&o.len())
                && o.bytes().all(|b| b.is_ascii_digit());
            grammar.then_some(())?;
            Some(Cursor::new(u64::from_str_radix(e, 16).ok()?, o.parse().ok()?))
        });
        prop_assert_eq!(Cursor::parse(&text).ok(), expected, "{:?}", text);
    }

    #[test]
    fn positions_print_and_parse_back(entries in prop::collection::vec((channel(), cursor()), 1..8)) {
        let mut position = Position::new();
        for (channel, cursor) in &entries {
            position.set(channel, *cursor);
        }
        let text = position.to_string();
        prop_assert_eq!(Position::parse(&text), Ok(position.clone()), "{}", text);

        // Resuming from the printed position starts every channel after its last cursor, and a
        // channel it does not name at the live edge.
        let mut channels: Vec<ChannelName> = position.entries().iter().map(|(c, _)| c.clone()).collect();
        // Longer than any generated name, so not in the position.
        channels.push(ChannelName::new(&"absent".repeat(10)).unwrap());
        let since = Position::resolve(Some(&text), &channels).unwrap();
        for (channel, since) in channels.iter().zip(&since) {
            let last = entries.iter().rev().find(|(c, _)| c == channel).map(|(_, cur)| *cur);
            prop_assert_eq!(*since, last.map_or(Since::Live, Since::Cursor), "{}", channel);
        }
    }

    #[test]
    fn one_channel_resumes_from_a_plain_cursor(c in cursor(), ch in channel()) {
        prop_assert_eq!(Position::resolve(Some(&c.to_string()), &[ch]), Ok(vec![Since::Cursor(c)]));
    }

    #[test]
    fn parsers_never_panic(text in "(\\PC|[=,-]|[0-9a-f]{1,4}){0,40}") {
        let _ = Cursor::parse(&text);
        if let Ok(position) = Position::parse(&text) {
            prop_assert_eq!(Position::parse(&position.to_string()), Ok(position));
        }
        let channels = [ChannelName::new("a").unwrap(), ChannelName::new("b").unwrap()];
        let _ = Position::resolve(Some(&text), &channels);
        let _ = Position::resolve(Some(&text), &channels[..1]);
    }
}
