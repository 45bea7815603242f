//! The cursor parsers (`Cursor`, `Position`, and `Position::resolve` into `Since`s) never panic,
//! and whatever they accept prints in the documented form and parses back to an equal value.

#![no_main]

use comet_core::{ChannelName, Cursor, Position, Since};
use libfuzzer_sys::fuzz_target;

/// The documented text form of a cursor: 1–16 lowercase hex digits, `-`, 1–20 decimal digits.
fn is_cursor_text(s: &str) -> bool {
    let Some((epoch, offset)) = s.split_once('-') else {
        return false;
    };
    (1..=16).contains(&epoch.len())
        && epoch.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && (1..=20).contains(&offset.len())
        && offset.bytes().all(|b| b.is_ascii_digit())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(cursor) = Cursor::parse(text) {
        let shown = cursor.to_string();
        assert!(is_cursor_text(&shown), "{text:?} printed as {shown:?}");
        assert!(is_cursor_text(text), "accepted {text:?}, which is not a cursor");
        assert_eq!(Cursor::parse(&shown), Ok(cursor), "{text:?}");
    }

    if let Ok(position) = Position::parse(text) {
        let shown = position.to_string();
        assert!(!position.entries().is_empty(), "{text:?}");
        for (i, (channel, cursor)) in position.entries().iter().enumerate() {
            assert!(
                position.entries()[..i].iter().all(|(c, _)| c != channel),
                "{text:?}: {channel} twice"
            );
            assert_eq!(position.get(channel), Some(*cursor));
        }
        assert_eq!(
            Position::parse(&shown).as_ref(),
            Ok(&position),
            "{text:?} printed as {shown:?}"
        );
        assert_eq!(shown.split(',').count(), position.entries().len());
    }

    let one = [ChannelName::new("a").unwrap()];
    let two = [ChannelName::new("a").unwrap(), ChannelName::new("b:c").unwrap()];
    for channels in [&one[..], &two[..]] {
        if let Ok(since) = Position::resolve(Some(text), channels) {
            assert_eq!(since.len(), channels.len(), "{text:?}");
            match text {
                "" => assert!(since.iter().all(|s| *s == Since::Live)),
                "earliest" => assert!(since.iter().all(|s| *s == Since::Earliest)),
                _ => {
                    for (channel, since) in channels.iter().zip(&since) {
                        if let Since::Cursor(cursor) = since {
                            // Whatever cursor it resumes from is in the text, as the text gave it.
                            let from_position = Position::parse(text).ok().and_then(|p| p.get(channel));
                            let from_cursor = Cursor::parse(text).ok();
                            assert!(
                                from_position == Some(*cursor) || from_cursor == Some(*cursor),
                                "{text:?} resolved {channel} to {cursor:?}"
                            );
                        }
                    }
                }
            }
        }
    }
});
