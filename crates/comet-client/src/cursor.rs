//! Cursors, positions, and the per-channel bookkeeping that gives `position()` and
//! de-duplication (`docs/protocol.md` §Cursors).

use crate::Envelope;

/// A parsed cursor `<epoch>-<offset>`: epoch 1–16 hex digits, offset decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor<'a> {
    epoch: &'a str,
    offset: u64,
}

impl<'a> Cursor<'a> {
    /// Parses `s`, or `None` when it is not a cursor (then it is treated as opaque).
    pub(crate) fn parse(s: &'a str) -> Option<Self> {
        let (epoch, offset) = s.split_once('-')?;
        let epoch_ok = (1..=16).contains(&epoch.len()) && epoch.bytes().all(|b| b.is_ascii_hexdigit());
        let offset_ok = !offset.is_empty() && offset.bytes().all(|b| b.is_ascii_digit());
        if !epoch_ok || !offset_ok {
            return None;
        }
        Some(Cursor {
            epoch,
            offset: offset.parse().ok()?,
        })
    }

    /// Whether `self` is at or before `other` in the same history. Cursors of different epochs
    /// are unordered: `false`.
    fn at_or_before(self, other: Cursor<'_>) -> bool {
        self.epoch.eq_ignore_ascii_case(other.epoch) && self.offset <= other.offset
    }
}

/// Splits a position `chan=cursor,chan=cursor` into its pairs. Empty or malformed pairs are
/// skipped. A string without `=` is not a position and yields nothing.
pub(crate) fn parse_position(s: &str) -> impl Iterator<Item = (&str, &str)> {
    s.split(',').filter_map(|pair| {
        let (channel, cursor) = pair.split_once('=')?;
        (!channel.is_empty() && !cursor.is_empty()).then_some((channel, cursor))
    })
}

/// Per-channel last cursors of one subscription.
///
/// Channel names cannot contain `=` or `,` (protocol §Names), which is what makes building and
/// splitting positions unambiguous.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    /// The subscription's channels in order, each with the last cursor delivered (or known to
    /// be passed). A `Vec` because a subscription has at most 64 channels by default.
    channels: Vec<(String, Option<String>)>,
    /// The `since` the subscription started from, returned by `position()` until anything
    /// more precise is known (it may be `earliest` or a cursor of unknown channel).
    initial: Option<String>,
}

impl Tracker {
    /// A tracker for `channels` resuming from `since` (`None`: the live edge).
    pub(crate) fn new(channels: &[String], since: Option<&str>) -> Self {
        let mut t = Tracker {
            channels: channels.iter().map(|c| (c.clone(), None)).collect(),
            initial: since.map(str::to_owned),
        };
        if let Some(since) = since.filter(|s| *s != "earliest") {
            t.merge(since);
        }
        t
    }

    fn slot(&mut self, channel: &str) -> &mut Option<String> {
        let i = match self.channels.iter().position(|(c, _)| c == channel) {
            Some(i) => i,
            None => {
                // A channel the server added (e.g. a comma inside a name split into two).
                self.channels.push((channel.to_owned(), None));
                self.channels.len() - 1
            }
        };
        &mut self.channels[i].1
    }

    /// Records `env` as delivered and returns `true`, or returns `false` when it is a duplicate:
    /// its id is at or before the last one seen on its channel (same epoch). Ids that are not
    /// cursors, or of another epoch, are always accepted.
    pub(crate) fn accept(&mut self, env: &Envelope) -> bool {
        let slot = self.slot(&env.channel);
        let last = slot.as_deref().and_then(Cursor::parse);
        if Cursor::parse(&env.id)
            .zip(last)
            .is_some_and(|(new, last)| new.at_or_before(last))
        {
            return false;
        }
        *slot = Some(env.id.clone());
        true
    }

    /// Merges a cursor or position the server announced (poll `cursor`, SSE `id`, `reconnect`
    /// cursor): each named channel of the subscription takes the announced cursor unless the one
    /// it has is of the same epoch and later. A bare cursor applies to a single-channel
    /// subscription only.
    pub(crate) fn merge(&mut self, announced: &str) {
        if !announced.contains('=') {
            if self.channels.len() == 1 && !announced.is_empty() && announced != "earliest" {
                let name = self.channels[0].0.clone();
                self.merge_one(&name, announced);
            }
            return;
        }
        for (channel, cursor) in parse_position(announced) {
            self.merge_channel(channel, cursor);
        }
    }

    /// Merges one channel's announced cursor, as [`Tracker::merge`] does; ignored for a channel
    /// not in the subscription.
    pub(crate) fn merge_channel(&mut self, channel: &str, cursor: &str) {
        if self.channels.iter().any(|(c, _)| c == channel) {
            self.merge_one(channel, cursor);
        }
    }

    fn merge_one(&mut self, channel: &str, cursor: &str) {
        let slot = self.slot(channel);
        let keep = match (slot.as_deref().and_then(Cursor::parse), Cursor::parse(cursor)) {
            (Some(have), Some(new)) => new.at_or_before(have),
            _ => false,
        };
        if !keep {
            *slot = Some(cursor.to_owned());
        }
    }

    /// The cursor (one channel) or position (several) to resume from, or the initial `since`
    /// when no channel has a cursor yet; `None` when there is nothing (live edge).
    pub(crate) fn position(&self) -> Option<String> {
        if let [(_, last)] = self.channels.as_slice() {
            return last.clone().or_else(|| self.initial.clone());
        }
        let mut out = String::new();
        for (channel, last) in &self.channels {
            if let Some(cursor) = last {
                if !out.is_empty() {
                    out.push(',');
                }
                out.push_str(channel);
                out.push('=');
                out.push_str(cursor);
            }
        }
        if out.is_empty() {
            self.initial.clone()
        } else {
            Some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(channel: &str, id: &str) -> Envelope {
        Envelope {
            channel: channel.into(),
            id: id.into(),
            event: "message".into(),
            data: String::new(),
            time: 0,
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cursor_parse() {
        assert_eq!(
            Cursor::parse("9f2c61d04ab3e177-42"),
            Some(Cursor {
                epoch: "9f2c61d04ab3e177",
                offset: 42
            })
        );
        assert_eq!(Cursor::parse("earliest"), None);
        assert_eq!(Cursor::parse("-1"), None);
        assert_eq!(Cursor::parse("ab-"), None);
        assert_eq!(Cursor::parse("xy-1"), None);
        assert_eq!(Cursor::parse("12345678901234567-1"), None);
        assert_eq!(Cursor::parse("a-1-2"), None);
    }

    #[test]
    fn dedup_same_epoch_compares_offsets() {
        let mut t = Tracker::new(&names(&["a"]), None);
        assert!(t.accept(&env("a", "1d0c-7")));
        assert!(!t.accept(&env("a", "1d0c-7")), "same id again");
        assert!(!t.accept(&env("a", "1d0c-6")), "earlier id");
        assert!(t.accept(&env("a", "1d0c-10")), "10 > 7 numerically");
        assert!(t.accept(&env("a", "beef-1")), "another epoch is accepted");
        assert!(!t.accept(&env("a", "beef-1")));
    }

    #[test]
    fn dedup_is_per_channel() {
        let mut t = Tracker::new(&names(&["a", "b"]), None);
        assert!(t.accept(&env("a", "1-5")));
        assert!(t.accept(&env("b", "1-5")));
        assert!(!t.accept(&env("b", "1-4")));
    }

    #[test]
    fn dedup_against_since() {
        let mut t = Tracker::new(&names(&["a"]), Some("1-5"));
        assert!(!t.accept(&env("a", "1-5")));
        assert!(t.accept(&env("a", "1-6")));
        let mut t = Tracker::new(&names(&["a", "b"]), Some("a=1-5,b=2-3"));
        assert!(!t.accept(&env("b", "2-3")));
        assert!(t.accept(&env("a", "1-6")));
    }

    #[test]
    fn opaque_ids_are_accepted() {
        let mut t = Tracker::new(&names(&["a"]), None);
        assert!(t.accept(&env("a", "opaque")));
        assert!(t.accept(&env("a", "opaque")));
    }

    #[test]
    fn position_single_channel_is_last_cursor() {
        let mut t = Tracker::new(&names(&["a"]), None);
        assert_eq!(t.position(), None);
        t.accept(&env("a", "1d0c-7"));
        assert_eq!(t.position().as_deref(), Some("1d0c-7"));
    }

    #[test]
    fn position_single_channel_from_initial() {
        let t = Tracker::new(&names(&["a"]), Some("earliest"));
        assert_eq!(t.position().as_deref(), Some("earliest"));
        let t = Tracker::new(&names(&["a"]), Some("a=1-2"));
        assert_eq!(t.position().as_deref(), Some("1-2"));
    }

    #[test]
    fn position_several_channels_in_subscription_order() {
        let mut t = Tracker::new(&names(&["chat:a", "chat:b", "chat:c"]), None);
        assert_eq!(t.position(), None);
        t.accept(&env("chat:b", "1d0c-7"));
        t.accept(&env("chat:a", "9f2c61d04ab3e177-42"));
        assert_eq!(
            t.position().as_deref(),
            Some("chat:a=9f2c61d04ab3e177-42,chat:b=1d0c-7")
        );
    }

    #[test]
    fn position_several_channels_keeps_initial_until_known() {
        let t = Tracker::new(&names(&["a", "b"]), Some("earliest"));
        assert_eq!(t.position().as_deref(), Some("earliest"));
        let mut t = Tracker::new(&names(&["a", "b"]), Some("b=1-1,zz=3-3"));
        assert_eq!(t.position().as_deref(), Some("b=1-1"));
        t.accept(&env("a", "1-9"));
        assert_eq!(t.position().as_deref(), Some("a=1-9,b=1-1"));
    }

    #[test]
    fn merge_takes_newer_or_other_epoch() {
        let mut t = Tracker::new(&names(&["a", "b"]), None);
        t.accept(&env("a", "1-9"));
        t.merge("a=1-3,b=2-2,other=5-5");
        assert_eq!(t.position().as_deref(), Some("a=1-9,b=2-2"));
        t.merge("a=7-0");
        assert_eq!(t.position().as_deref(), Some("a=7-0,b=2-2"));
        t.merge("garbage,=,b=");
        assert_eq!(t.position().as_deref(), Some("a=7-0,b=2-2"));
    }

    #[test]
    fn merge_bare_cursor_single_channel_only() {
        let mut t = Tracker::new(&names(&["a"]), None);
        t.merge("1-4");
        assert_eq!(t.position().as_deref(), Some("1-4"));
        assert!(!t.accept(&env("a", "1-4")));
        let mut t = Tracker::new(&names(&["a", "b"]), None);
        t.merge("1-4");
        assert_eq!(t.position(), None);
    }
}
