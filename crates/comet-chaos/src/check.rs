//! The invariant checker: reads every subscriber's log against what publishers had
//! acknowledged, per channel (docs/protocol.md "Delivery"):
//! - the delivered messages are the acknowledged ones, in order, with no duplicate;
//! - every acknowledged message a subscriber missed is covered by a gap notice between the
//!   deliveries around it;
//! - there is no gap notice where nothing was missed, unless Redis lost data since the
//!   subscriber's previous delivery (then Comet moved the channel to a new epoch and cannot tell
//!   what a holder of an old cursor has: an honest, precautionary notice, counted apart).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// A message a publisher got a cursor for.
#[derive(Debug, Clone)]
pub struct Ack {
    /// Its data, unique in the run.
    pub data: String,
    /// The cursor it was acknowledged with.
    pub cursor: String,
    /// When the acknowledgement came.
    pub at: Instant,
}

/// One entry of a subscriber's log.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A message: its channel, data and cursor.
    Message {
        /// The channel.
        channel: String,
        /// The data.
        data: String,
        /// The cursor it came with.
        cursor: String,
    },
    /// A gap notice on a channel.
    Gap {
        /// The channel.
        channel: String,
    },
    /// The subscriber (re)connected: to which node, resuming from where (for the dump only).
    Connect {
        /// The node's URL.
        url: String,
        /// The position or `earliest` it resumed from.
        since: String,
    },
}

/// A subscriber's whole log: the channels it follows (from the start of the run, `earliest`),
/// and what it got, with when.
#[derive(Debug, Clone, Default)]
pub struct Log {
    /// The channels it subscribed to.
    pub channels: Vec<String>,
    /// What it received, in order.
    pub entries: Vec<(Instant, Entry)>,
    /// Messages its client dropped as already delivered (the server sent them twice).
    pub duplicates_dropped: u64,
    /// What it is, for the examples of violations (e.g. its transport).
    pub label: String,
}

/// What the checker found, summed over subscribers and channels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Message deliveries (one message to one subscriber counts once).
    pub delivered: u64,
    /// Acknowledged messages a subscriber missed with no gap notice.
    pub lost_silently: u64,
    /// Messages a subscriber got twice (or its client dropped as sent twice).
    pub duplicated: u64,
    /// Messages that arrived before one acknowledged earlier.
    pub reordered: u64,
    /// Gap notices where nothing acknowledged was missed and Redis had lost nothing.
    pub false_gaps: u64,
    /// Gap notices covering acknowledged messages the subscriber missed.
    pub true_gaps: u64,
    /// Gap notices after Redis lost data, where the subscriber had missed nothing.
    pub precautionary_gaps: u64,
    /// Deliveries of messages whose publish was never acknowledged (allowed).
    pub unacknowledged_delivered: u64,
}

impl Verdict {
    /// Whether the promise held: nothing lost silently, doubled, reordered, no false gap.
    pub fn holds(&self) -> bool {
        self.lost_silently == 0 && self.duplicated == 0 && self.reordered == 0 && self.false_gaps == 0
    }

    fn add(&mut self, other: &Self) {
        self.delivered += other.delivered;
        self.lost_silently += other.lost_silently;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.false_gaps += other.false_gaps;
        self.true_gaps += other.true_gaps;
        self.precautionary_gaps += other.precautionary_gaps;
        self.unacknowledged_delivered += other.unacknowledged_delivered;
    }
}

/// The acknowledged messages of a channel in the order subscribers must see them: by epoch, in
/// the order the epochs first appeared, then by offset.
pub fn acked_order(acks: &[Ack]) -> Vec<Ack> {
    let mut epochs: Vec<&str> = Vec::new();
    let mut sorted: Vec<Ack> = acks.to_vec();
    let mut by_time: Vec<&Ack> = acks.iter().collect();
    by_time.sort_by_key(|a| a.at);
    for a in by_time {
        let epoch = epoch_of(&a.cursor);
        if !epochs.contains(&epoch) {
            epochs.push(epoch);
        }
    }
    sorted.sort_by_key(|a| {
        let rank = epochs
            .iter()
            .position(|e| *e == epoch_of(&a.cursor))
            .unwrap_or(usize::MAX);
        (rank, offset_of(&a.cursor))
    });
    sorted.dedup_by(|a, b| a.data == b.data);
    sorted
}

fn epoch_of(cursor: &str) -> &str {
    cursor.split('-').next().unwrap_or("")
}

fn offset_of(cursor: &str) -> u64 {
    cursor.rsplit('-').next().and_then(|o| o.parse().ok()).unwrap_or(0)
}

/// Checks `logs` against the acknowledged messages of each channel (`acks`, in any order).
/// `data_losses` are the times Redis may have lost acknowledged data (a restart without
/// `appendfsync always`, a restart empty, a replica promoted).
pub fn check(acks: &HashMap<String, Vec<Ack>>, logs: &[Log], data_losses: &[Instant]) -> Verdict {
    check_explained(acks, logs, data_losses, Instant::now(), &mut Vec::new())
}

/// [`check`], also writing into `examples` (at most 20) what each violation looked like, with
/// times in seconds since `origin`.
pub fn check_explained(
    acks: &HashMap<String, Vec<Ack>>,
    logs: &[Log],
    data_losses: &[Instant],
    origin: Instant,
    examples: &mut Vec<String>,
) -> Verdict {
    let order: HashMap<&str, Vec<Ack>> = acks.iter().map(|(c, a)| (c.as_str(), acked_order(a))).collect();
    let mut total = Verdict {
        duplicated: logs.iter().map(|l| l.duplicates_dropped).sum(),
        ..Verdict::default()
    };
    for (i, log) in logs.iter().enumerate() {
        for channel in &log.channels {
            let empty = Vec::new();
            let acked = order.get(channel.as_str()).unwrap_or(&empty);
            let mut seen = Vec::new();
            total.add(&check_channel(channel, acked, log, data_losses, origin, &mut seen));
            for e in seen {
                if examples.len() < 20 {
                    examples.push(format!("subscriber {i} {:?}, {channel}: {e}", log.label));
                }
            }
        }
    }
    total
}

fn check_channel(
    channel: &str,
    acked: &[Ack],
    log: &Log,
    data_losses: &[Instant],
    t0: Instant,
    examples: &mut Vec<String>,
) -> Verdict {
    let index: HashMap<&str, usize> = acked.iter().enumerate().map(|(i, a)| (a.data.as_str(), i)).collect();
    let mut v = Verdict::default();
    let mut next = 0; // the acknowledged message expected next
    let mut seen: HashSet<&str> = HashSet::new();
    let mut gap: Option<Instant> = None; // a gap notice since the last delivery
    let start = log.entries.first().map(|(t, _)| *t);
    let mut last_delivery = start;
    // When each epoch got its first acknowledgement, and the epoch of the last delivery.
    let mut born: HashMap<&str, Instant> = HashMap::new();
    for a in acked {
        let at = born.entry(epoch_of(&a.cursor)).or_insert(a.at);
        *at = (*at).min(a.at);
    }
    let mut last_epoch: Option<&str> = None;
    let show = |k: usize| {
        acked
            .get(k)
            .map_or("-".to_owned(), |a| format!("{}@{}", a.data, a.cursor))
    };
    // What a delivery after `skipped` missed messages (and maybe a gap notice at `gap`) means.
    // `since`: the start of the window in which a loss of data in Redis explains a notice
    // (the last delivery; or, when the epoch changed across the notice, the old epoch's birth,
    // since a node may still serve the old epoch's history for a moment after Redis lost it).
    let settle = |v: &mut Verdict, skipped: usize, gap: Option<Instant>, since: Option<Instant>| match gap {
        Some(_) if skipped > 0 => v.true_gaps += 1,
        Some(at) => {
            let lost_data = data_losses.iter().any(|t| since.is_none_or(|s| *t >= s) && *t <= at);
            if lost_data {
                v.precautionary_gaps += 1;
            } else {
                v.false_gaps += 1;
            }
        }
        None => v.lost_silently += skipped as u64,
    };
    let window = |last_delivery: Option<Instant>, last_epoch: Option<&str>, next_epoch: Option<&str>| match (
        last_epoch, next_epoch,
    ) {
        (Some(old), new) if Some(old) != new => born.get(old).copied().or(last_delivery),
        _ => last_delivery,
    };
    for (at, entry) in &log.entries {
        match entry {
            Entry::Gap { channel: c } if c == channel => gap = Some(*at),
            Entry::Message {
                channel: c,
                data,
                cursor,
            } if c == channel => {
                v.delivered += 1;
                let when = at.saturating_duration_since(t0).as_secs_f64();
                if !seen.insert(data.as_str()) {
                    v.duplicated += 1;
                    examples.push(format!("{data}@{cursor} again at {when:.2}s"));
                    continue;
                }
                let Some(&k) = index.get(data.as_str()) else {
                    v.unacknowledged_delivered += 1;
                    continue;
                };
                if k < next {
                    v.reordered += 1;
                    examples.push(format!(
                        "{data}@{cursor} (acked as {}) at {when:.2}s after {}",
                        show(k),
                        show(next.wrapping_sub(1))
                    ));
                    continue;
                }
                if k > next || gap.is_some() {
                    let before = (v.lost_silently, v.false_gaps);
                    let since = window(last_delivery, last_epoch, Some(epoch_of(cursor)));
                    settle(&mut v, k - next, gap, since);
                    if (v.lost_silently, v.false_gaps) != before {
                        examples.push(format!(
                            "{} at {when:.2}s after {}: {} skipped, gap notice {}",
                            show(k),
                            show(next.wrapping_sub(1)),
                            k - next,
                            gap.map_or("none".to_owned(), |g| format!(
                                "at {:.2}s",
                                g.saturating_duration_since(t0).as_secs_f64()
                            ))
                        ));
                    }
                }
                next = k + 1;
                gap = None;
                last_delivery = Some(*at);
                last_epoch = Some(epoch_of(cursor));
            }
            _ => {}
        }
    }
    let missing = acked.len().saturating_sub(next);
    if missing > 0 || gap.is_some() {
        let before = (v.lost_silently, v.false_gaps);
        settle(&mut v, missing, gap, window(last_delivery, last_epoch, None));
        if (v.lost_silently, v.false_gaps) != before {
            examples.push(format!(
                "at the end, after {}: {missing} never came, gap notice {}",
                show(next.wrapping_sub(1)),
                gap.map_or("none".to_owned(), |g| format!(
                    "at {:.2}s",
                    g.saturating_duration_since(t0).as_secs_f64()
                ))
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn acks(cursors: &[(&str, &str)], t0: Instant) -> HashMap<String, Vec<Ack>> {
        let list = cursors
            .iter()
            .enumerate()
            .map(|(i, (data, cursor))| Ack {
                data: (*data).to_owned(),
                cursor: (*cursor).to_owned(),
                at: t0 + Duration::from_millis(i as u64),
            })
            .collect();
        HashMap::from([("c".to_owned(), list)])
    }

    fn log(entries: &[&str], t0: Instant) -> Log {
        Log {
            channels: vec!["c".into()],
            entries: entries
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let entry = if *e == "GAP" {
                        Entry::Gap { channel: "c".into() }
                    } else {
                        Entry::Message {
                            channel: "c".into(),
                            data: (*e).to_owned(),
                            cursor: String::new(),
                        }
                    };
                    (t0 + Duration::from_millis(100 + i as u64), entry)
                })
                .collect(),
            duplicates_dropped: 0,
            label: String::new(),
        }
    }

    const ACKED: [(&str, &str); 4] = [("a", "e1-1"), ("b", "e1-2"), ("c", "e1-3"), ("d", "e2-1")];

    #[test]
    fn everything_in_order_holds() {
        let t0 = Instant::now();
        let v = check(&acks(&ACKED, t0), &[log(&["a", "b", "c", "d"], t0)], &[]);
        assert!(v.holds(), "{v:?}");
        assert_eq!(v.delivered, 4);
    }

    #[test]
    fn a_missing_message_without_a_notice_is_silent_loss() {
        let t0 = Instant::now();
        let v = check(&acks(&ACKED, t0), &[log(&["a", "c", "d"], t0)], &[]);
        assert_eq!(v.lost_silently, 1);
        let v = check(&acks(&ACKED, t0), &[log(&["a", "b", "c"], t0)], &[]);
        assert_eq!(v.lost_silently, 1, "the tail counts too");
        assert!(!v.holds());
    }

    #[test]
    fn a_missing_message_after_a_notice_is_a_true_gap() {
        let t0 = Instant::now();
        let v = check(&acks(&ACKED, t0), &[log(&["a", "GAP", "c", "d"], t0)], &[]);
        assert_eq!((v.true_gaps, v.lost_silently), (1, 0));
        assert!(v.holds());
    }

    #[test]
    fn a_notice_where_nothing_was_missed_is_false_unless_redis_lost_data() {
        let t0 = Instant::now();
        let v = check(&acks(&ACKED, t0), &[log(&["a", "b", "GAP", "c", "d"], t0)], &[]);
        assert_eq!(v.false_gaps, 1);
        assert!(!v.holds());
        let loss = t0 + Duration::from_millis(101);
        let v = check(&acks(&ACKED, t0), &[log(&["a", "b", "GAP", "c", "d"], t0)], &[loss]);
        assert_eq!((v.false_gaps, v.precautionary_gaps), (0, 1));
        let earlier = t0 + Duration::from_millis(50);
        let v = check(&acks(&ACKED, t0), &[log(&["a", "b", "GAP", "c", "d"], t0)], &[earlier]);
        assert_eq!(v.false_gaps, 1, "a loss before the previous delivery explains nothing");
    }

    /// After Redis lost data, a node may still serve the old epoch's history for a moment: a
    /// notice where the epoch changes is explained by a loss any time since the old epoch began.
    #[test]
    fn a_notice_at_an_epoch_change_is_explained_by_a_loss_during_the_old_epoch() {
        let t0 = Instant::now();
        let acked = acks(&[("a", "e1-1"), ("b", "e1-2"), ("c", "e2-1")], t0);
        let mut l = log(&["a", "b", "GAP", "c"], t0);
        for (_, e) in &mut l.entries {
            if let Entry::Message { data, cursor, .. } = e {
                *cursor = if data == "c" { "e2-1".into() } else { "e1-1".into() };
            }
        }
        let loss = t0 + Duration::from_millis(50); // before "b" was delivered (at 101 ms)
        let v = check(&acked, std::slice::from_ref(&l), &[loss]);
        assert_eq!((v.false_gaps, v.precautionary_gaps), (0, 1));
        let v = check(&acked, &[l], &[]);
        assert_eq!(v.false_gaps, 1, "no loss: a false gap");
    }

    #[test]
    fn duplicates_and_reordering_are_caught() {
        let t0 = Instant::now();
        let v = check(&acks(&ACKED, t0), &[log(&["a", "b", "b", "c", "d"], t0)], &[]);
        assert_eq!(v.duplicated, 1);
        let v = check(&acks(&ACKED, t0), &[log(&["a", "c", "b", "d"], t0)], &[]);
        assert_eq!((v.reordered, v.lost_silently), (1, 1));
        let mut dropped = log(&["a", "b", "c", "d"], t0);
        dropped.duplicates_dropped = 2;
        assert_eq!(check(&acks(&ACKED, t0), &[dropped], &[]).duplicated, 2);
    }

    #[test]
    fn an_unacknowledged_delivery_is_allowed_and_counted() {
        let t0 = Instant::now();
        let v = check(&acks(&ACKED, t0), &[log(&["a", "b", "x", "c", "d"], t0)], &[]);
        assert!(v.holds());
        assert_eq!(v.unacknowledged_delivered, 1);
    }

    #[test]
    fn epochs_order_by_first_appearance_then_offset() {
        let t0 = Instant::now();
        let list = acks(&[("late", "e2-1"), ("x", "e1-2"), ("y", "e1-1")], t0);
        let order: Vec<String> = acked_order(&list["c"]).into_iter().map(|a| a.data).collect();
        assert_eq!(order, ["late", "y", "x"]);
    }
}
