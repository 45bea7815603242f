//! MemoryBroker behaviour: replay-then-live with no gap or duplicate, gaps, lag, sweep.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use comet_core::{
    Broker, ChannelName, Cursor, Event, HistoryLimits, HubConfig, MemoryBroker, Publish, Since, SubscriptionSet,
};

fn ch(s: &str) -> ChannelName {
    ChannelName::new(s).unwrap()
}

fn publish(b: &MemoryBroker, c: &ChannelName, data: &str) -> Cursor {
    b.hub().publish(c, None, data.as_bytes()).unwrap().cursor
}

fn data_of(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::Message(m) => m.data().to_owned(),
            Event::Gap(g) => format!("GAP:{}", g.channel),
            Event::Presence(n) => format!("{}:{}", if n.joined { "JOIN" } else { "LEAVE" }, n.entry.client),
        })
        .collect()
}

fn small(n: usize) -> MemoryBroker {
    MemoryBroker::new(HubConfig {
        history: HistoryLimits {
            max_messages: n,
            ..Default::default()
        },
        queue_len: 4,
        ..HubConfig::default()
    })
}

#[tokio::test]
async fn resume_from_a_cursor_replays_exactly_what_followed() {
    let b = MemoryBroker::default();
    let c = ch("chat");
    let first = publish(&b, &c, "1");
    publish(&b, &c, "2");
    publish(&b, &c, "3");
    let mut sub = b.subscribe(c.clone(), Since::Cursor(first)).await.unwrap();
    let mut out = Vec::new();
    sub.try_read(&mut out, 100);
    assert_eq!(data_of(&out), ["2", "3"]);
    publish(&b, &c, "4");
    out.clear();
    sub.recv(&mut out, 100).await;
    assert_eq!(data_of(&out), ["4"]);
    assert_eq!(sub.cursor().offset, 4);
}

#[tokio::test]
async fn live_starts_at_the_edge_and_earliest_replays_all() {
    let b = MemoryBroker::default();
    let c = ch("c");
    publish(&b, &c, "old");
    let mut live = b.subscribe(c.clone(), Since::Live).await.unwrap();
    let mut all = b.subscribe(c.clone(), Since::Earliest).await.unwrap();
    let mut out = Vec::new();
    assert_eq!(live.try_read(&mut out, 10), 0);
    all.try_read(&mut out, 10);
    assert_eq!(data_of(&out), ["old"]);
}

#[tokio::test]
async fn cursor_older_than_history_starts_with_a_gap_then_what_is_left() {
    let b = small(3);
    let c = ch("c");
    let first = publish(&b, &c, "1");
    for i in 2..=6 {
        publish(&b, &c, &i.to_string());
    }
    let mut sub = b.subscribe(c.clone(), Since::Cursor(first)).await.unwrap();
    let mut out = Vec::new();
    sub.try_read(&mut out, 10);
    assert_eq!(data_of(&out), ["GAP:c", "4", "5", "6"]);
    let Event::Gap(gap) = &out[0] else { unreachable!() };
    assert_eq!(gap.after, Some(first));
    assert_eq!(gap.resumed_at.offset, 3);
    assert_eq!(b.stats().snapshot().gaps, 1);
}

#[tokio::test]
async fn cursor_of_another_epoch_or_from_the_future_is_a_gap() {
    let b = MemoryBroker::default();
    let c = ch("c");
    let cur = publish(&b, &c, "1");
    for bad in [Cursor::new(cur.epoch ^ 1, 1), Cursor::new(cur.epoch, 99)] {
        let mut sub = b.subscribe(c.clone(), Since::Cursor(bad)).await.unwrap();
        let mut out = Vec::new();
        sub.try_read(&mut out, 10);
        assert_eq!(data_of(&out), ["GAP:c", "1"], "{bad:?}");
    }
}

#[tokio::test]
async fn a_restarted_broker_has_a_new_epoch() {
    let c = ch("c");
    let old = publish(&MemoryBroker::default(), &c, "x");
    let b = MemoryBroker::default();
    publish(&b, &c, "y");
    let mut sub = b.subscribe(c.clone(), Since::Cursor(old)).await.unwrap();
    let mut out = Vec::new();
    sub.try_read(&mut out, 10);
    assert_eq!(data_of(&out), ["GAP:c", "y"]);
}

#[tokio::test]
async fn a_slow_subscriber_is_counted_lagged_and_then_gets_a_gap_not_unbounded_memory() {
    let b = small(8);
    let c = ch("c");
    let mut slow = b.subscribe(c.clone(), Since::Live).await.unwrap();
    let mut fast = b.subscribe(c.clone(), Since::Live).await.unwrap();
    let mut out = Vec::new();
    for i in 1..=6 {
        publish(&b, &c, &i.to_string());
        out.clear();
        fast.try_read(&mut out, 10);
        assert_eq!(out.len(), 1, "the fast subscriber is not slowed");
    }
    out.clear();
    slow.try_read(&mut out, 2);
    assert_eq!(data_of(&out), ["1", "2"]);
    assert_eq!(b.stats().snapshot().lagged, 1, "6 behind with queue_len 4 is lagged");
    for i in 7..=20 {
        publish(&b, &c, &i.to_string());
    }
    out.clear();
    slow.try_read(&mut out, 100);
    assert_eq!(data_of(&out), ["GAP:c", "13", "14", "15", "16", "17", "18", "19", "20"]);
    assert_eq!(b.hub().info(&c).unwrap().history_len, 8, "history stays bounded");
}

#[tokio::test]
async fn non_utf8_is_rejected_and_publishes_nothing() {
    let b = MemoryBroker::default();
    let c = ch("c");
    let err = b
        .publish(Publish {
            channel: c.clone(),
            event: None,
            data: Bytes::from_static(b"\xc3\x28"),
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not valid UTF-8"), "{err}");
    assert_eq!(b.channel_info(c).await.unwrap().last, None);
}

#[tokio::test]
async fn sweep_forgets_idle_channels_whose_history_expired() {
    let b = MemoryBroker::new(HubConfig {
        history: HistoryLimits {
            max_messages: 10,
            max_age: Duration::from_millis(1),
        },
        queue_len: 4,
        ..HubConfig::default()
    });
    let kept = ch("kept");
    let _sub = b.subscribe(kept.clone(), Since::Live).await.unwrap();
    publish(&b, &ch("gone"), "x");
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(b.sweep(), 1);
    assert!(b.hub().info(&ch("gone")).is_none());
    assert!(b.hub().info(&kept).is_some());
}

#[tokio::test]
async fn subscription_set_reads_every_channel_and_reports_its_position() {
    let b = MemoryBroker::default();
    let (x, y) = (ch("x"), ch("y"));
    let mut set = SubscriptionSet::new();
    set.insert(b.subscribe(x.clone(), Since::Live).await.unwrap());
    set.insert(b.subscribe(y.clone(), Since::Live).await.unwrap());
    let bb = Arc::new(b);
    let publisher = {
        let bb = Arc::clone(&bb);
        let y = y.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            publish(&bb, &y, "on y");
        })
    };
    let mut out = Vec::new();
    set.recv(&mut out, 10).await;
    assert_eq!(data_of(&out), ["on y"]);
    publisher.await.unwrap();
    let pos = set.position();
    assert_eq!(pos.get(&y).unwrap().offset, 1);
    assert_eq!(pos.get(&x).unwrap().offset, 0);
    assert!(set.remove(&x));
    assert!(!set.contains(&x));
}

/// A wait given up (its future dropped) leaves its waker behind in the channels' slots; the
/// next wait on the same set must still be woken by a publish on any of its channels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_waiting_again_after_a_given_up_wait_is_woken_by_every_channel() {
    let b = Arc::new(MemoryBroker::default());
    let names = [ch("w1"), ch("w2"), ch("w3")];
    let mut set = SubscriptionSet::new();
    for c in &names {
        set.insert(b.subscribe(c.clone(), Since::Live).await.unwrap());
    }
    let mut out = Vec::new();
    let given_up = tokio::time::timeout(Duration::from_millis(20), set.recv(&mut out, 8)).await;
    assert!(given_up.is_err() && out.is_empty(), "nothing was published yet");
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 3 {
            // Not `timeout`: it polls the wait once more when its time is up, which would
            // find the messages that failed to wake it.
            tokio::select! {
                biased;
                () = tokio::time::sleep(Duration::from_secs(5)) => panic!("a publish did not wake the set"),
                _ = set.recv(&mut got, 8) => {}
            }
        }
        data_of(&got)
    });
    for c in &names {
        tokio::time::sleep(Duration::from_millis(20)).await;
        publish(&b, c, c.as_str());
    }
    assert_eq!(reader.await.unwrap(), ["w1", "w2", "w3"]);
}

/// The seam: subscribers join at random moments while several tasks publish; each must see, per
/// channel, exactly the offsets after its start cursor, in order, no gap, no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gap_and_no_duplicate_at_the_seam_under_concurrent_publishing() {
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 500;
    const TOTAL: u64 = (PUBLISHERS * PER_PUBLISHER) as u64;
    let b = Arc::new(MemoryBroker::new(HubConfig {
        history: HistoryLimits {
            max_messages: 4096,
            ..Default::default()
        },
        queue_len: 64,
        ..HubConfig::default()
    }));
    let c = ch("seam");
    publish(&b, &c, "seed");
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let (b, c) = (Arc::clone(&b), c.clone());
        publishers.push(tokio::spawn(async move {
            for i in 0..PER_PUBLISHER {
                publish(&b, &c, &format!("{p}:{i}"));
                if i % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    let mut subscribers = Vec::new();
    for k in 0..40u64 {
        let (b, c) = (Arc::clone(&b), c.clone());
        subscribers.push(tokio::spawn(async move {
            for _ in 0..k {
                tokio::task::yield_now().await;
            }
            // Half resume from a recent cursor, half join live.
            let since = match b.channel_info(c.clone()).await.unwrap().last {
                Some(last) if k % 2 == 0 => Since::Cursor(Cursor::new(last.epoch, last.offset.saturating_sub(k % 7))),
                _ => Since::Live,
            };
            let mut sub = b.subscribe(c, since).await.unwrap();
            let mut expected = sub.cursor().offset + 1;
            let mut out = Vec::new();
            while expected <= TOTAL + 1 {
                out.clear();
                tokio::time::timeout(Duration::from_secs(10), sub.recv(&mut out, 32))
                    .await
                    .expect("a subscriber stalled");
                for e in &out {
                    let Event::Message(m) = e else { panic!("unexpected gap") };
                    assert_eq!(m.cursor.offset, expected, "gap or duplicate at the seam");
                    expected += 1;
                }
            }
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    for s in subscribers {
        s.await.unwrap();
    }
    assert_eq!(b.stats().snapshot().published, TOTAL + 1);
}

/// Regression: sweeping a quiet channel and re-creating it gave it a new epoch, so a poller's
/// perfectly good cursor came back as a false gap notice. The channel's epoch and head now
/// outlive it (a tombstone), so a cursor handed out for it stays valid. A channel that never had
/// a message needs no tombstone: it starts in the node's empty epoch (hub.rs `EMPTY_EPOCHS`).
#[tokio::test]
async fn a_swept_channel_keeps_its_epoch_so_cursors_stay_valid() {
    let b = MemoryBroker::new(HubConfig {
        history: HistoryLimits {
            max_messages: 10,
            max_age: Duration::from_millis(1),
        },
        queue_len: 4,
        ..HubConfig::default()
    });
    let quiet = ch("quiet");
    let cursor = b.subscribe(quiet.clone(), Since::Live).await.unwrap().cursor();
    let busy = ch("busy");
    let last = publish(&b, &busy, "x");
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(b.sweep(), 0, "both channels are forgotten");
    let mut out = Vec::new();
    let mut again = b.subscribe(quiet.clone(), Since::Cursor(cursor)).await.unwrap();
    assert_eq!(
        again.try_read(&mut out, 10),
        0,
        "no false gap for a channel that never had a message"
    );
    let mut again = b.subscribe(busy.clone(), Since::Cursor(last)).await.unwrap();
    assert_eq!(again.try_read(&mut out, 10), 0, "no false gap for a cursor at the head");
    assert_eq!(
        publish(&b, &busy, "y"),
        Cursor::new(last.epoch, last.offset + 1),
        "offsets go on"
    );
    again.try_read(&mut out, 10);
    assert_eq!(data_of(&out), ["y"]);
    assert_eq!(b.stats().snapshot().gaps, 0);
}

/// A subscription that has read everything skips the channel's lock until the log changes
/// (hub.rs `idle_at`): every kind of change must still reach it, a publish, an append, and a
/// replace into a new epoch (a gap), with nothing twice.
#[tokio::test]
async fn a_caught_up_subscription_sees_every_later_change() {
    let b = small(8);
    let c = ch("idle");
    let hub = b.hub();
    let mut sub = hub.subscribe(&c, Since::Live);
    let mut out = Vec::new();
    assert_eq!(sub.try_read(&mut out, 16), 0);
    assert_eq!(sub.try_read(&mut out, 16), 0, "still nothing");
    let first = publish(&b, &c, "one");
    assert_eq!(sub.try_read(&mut out, 16), 1);
    assert_eq!(sub.try_read(&mut out, 16), 0, "read once only");
    // A message whose cursor was assigned elsewhere (as the Redis broker does).
    let next = Cursor::new(first.epoch, first.offset + 1);
    let msg = Arc::new(comet_core::Message::new(c.clone(), next, None, b"two", comet_core::now_millis()).unwrap());
    assert!(matches!(hub.append(msg), comet_core::Append::Appended));
    assert_eq!(sub.try_read(&mut out, 16), 1);
    assert_eq!(sub.try_read(&mut out, 16), 0);
    // History replaced in another epoch: the caught-up subscription is told of the gap.
    hub.replace(&c, first.epoch + 1, 0, Vec::new());
    assert_eq!(sub.try_read(&mut out, 16), 1);
    assert_eq!(data_of(&out), ["one", "two", "GAP:idle"]);
    // And `recv` wakes for the next publish after having found nothing.
    let waiting = tokio::spawn(async move {
        let mut got = Vec::new();
        sub.recv(&mut got, 16).await;
        data_of(&got)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    publish(&b, &c, "three");
    let got = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ["three"]);
}

/// Issue 15, defect 5: a publish that took a channel's log just before the sweep forgot the
/// channel (idle: no subscriber, history expired) was acknowledged into the dropped log, and
/// the channel re-created from its tombstone handed out the same cursor to the next publish.
/// Publishers and a sweeper race here on threads, on channels whose history expires at once;
/// every acknowledged cursor of a channel must be new.
#[test]
fn a_publish_racing_the_sweep_never_reuses_a_cursor() {
    const PUBLISHES: usize = 100_000;
    let b = Arc::new(MemoryBroker::new(HubConfig {
        history: HistoryLimits {
            max_messages: 1,
            max_age: Duration::from_nanos(1),
        },
        ..HubConfig::default()
    }));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sweeper = std::thread::spawn({
        let (b, done) = (Arc::clone(&b), Arc::clone(&done));
        move || {
            let mut sweeps = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                b.sweep();
                sweeps += 1;
            }
            sweeps
        }
    });
    let publishers: Vec<_> = (0..2)
        .map(|t| {
            let b = Arc::clone(&b);
            std::thread::spawn(move || {
                let c = ch(&format!("race{t}"));
                (0..PUBLISHES).map(|_| publish(&b, &c, "x")).collect::<Vec<_>>()
            })
        })
        .collect();
    for (t, p) in publishers.into_iter().enumerate() {
        let cursors = p.join().unwrap();
        let mut seen = std::collections::HashSet::with_capacity(cursors.len());
        for c in &cursors {
            assert!(seen.insert(*c), "race{t}: cursor {c} acknowledged twice");
        }
        let epochs: std::collections::HashSet<u64> = cursors.iter().map(|c| c.epoch).collect();
        assert_eq!(epochs.len(), 1, "race{t}: the tombstone keeps the epoch");
        assert_eq!(
            cursors.last().unwrap().offset,
            PUBLISHES as u64,
            "race{t}: offsets go on by one"
        );
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(sweeper.join().unwrap() > 0);
}

/// Idempotent publishing on the memory broker: a repeated key publishes nothing and answers
/// the first cursor; another key, or the same key on another channel, publishes; the key is
/// forgotten after its window; and a channel is not swept while it remembers a key.
#[tokio::test]
async fn an_idempotency_key_publishes_once_within_its_window() {
    use comet_core::Idempotency;
    let b = MemoryBroker::new(HubConfig {
        history: HistoryLimits {
            max_messages: 10,
            max_age: Duration::from_millis(1),
        },
        ..HubConfig::default()
    });
    let (a, other) = (ch("a"), ch("other"));
    let msg = |c: &ChannelName, data: &'static str| Publish {
        channel: c.clone(),
        event: None,
        data: Bytes::from_static(data.as_bytes()),
    };
    let key = |k: &str, ms: u64| Idempotency::new(k, Duration::from_millis(ms)).unwrap();
    let first = b.publish_idempotent(msg(&a, "1"), key("k", 200)).await.unwrap();
    assert!(!first.duplicate);
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(b.sweep(), 1, "a channel that remembers a key is kept");
    let again = b.publish_idempotent(msg(&a, "1"), key("k", 200)).await.unwrap();
    assert_eq!((again.cursor, again.duplicate), (first.cursor, true));
    let second = b.publish_idempotent(msg(&a, "2"), key("k2", 200)).await.unwrap();
    assert_eq!(second.cursor.offset, first.cursor.offset + 1);
    let elsewhere = b.publish_idempotent(msg(&other, "1"), key("k", 200)).await.unwrap();
    assert!(!elsewhere.duplicate, "keys are per channel");
    std::thread::sleep(Duration::from_millis(250));
    let late = b.publish_idempotent(msg(&a, "1"), key("k", 200)).await.unwrap();
    assert!(!late.duplicate, "the window is over");
    assert_eq!(late.cursor.offset, second.cursor.offset + 1);
    assert_eq!(b.stats().snapshot().published, 4);
}

/// An idempotency key must be 1–128 printable ASCII bytes; the error says so.
#[test]
fn a_bad_idempotency_key_is_refused_with_why() {
    use comet_core::Idempotency;
    let w = Duration::from_secs(1);
    assert!(Idempotency::new("", w).unwrap_err().contains("1 to 128 bytes"));
    assert!(Idempotency::new(&"k".repeat(129), w).unwrap_err().contains("not 129"));
    assert!(Idempotency::new("a b", w).unwrap_err().contains("printable ASCII"));
    assert!(Idempotency::new("é", w).unwrap_err().contains("printable ASCII"));
    assert_eq!(Idempotency::new(&"k".repeat(128), w).unwrap().key().len(), 128);
}

/// A cursor of another epoch gets one gap notice, then history, then live messages: no second
/// notice when the next message comes.
#[tokio::test]
async fn a_cursor_of_another_epoch_gets_exactly_one_gap_notice() {
    let b = MemoryBroker::default();
    let c = ch("epochs");
    let held = publish(&b, &c, "held");
    let stale = Cursor::new(held.epoch ^ 1, 9);
    let mut sub = b.subscribe(c.clone(), Since::Cursor(stale)).await.unwrap();
    let mut out = Vec::new();
    sub.try_read(&mut out, 100);
    assert_eq!(data_of(&out), ["GAP:epochs", "held"]);
    publish(&b, &c, "live");
    out.clear();
    sub.recv(&mut out, 100).await;
    assert_eq!(data_of(&out), ["live"]);
    assert_eq!(b.stats().snapshot().gaps, 1);
}

/// Issue 16, point 2: polls of 5,000 random channel names (each with a cursor, as a hostile
/// client sends them) leave no state once swept: no log, no tombstone. A channel that had a
/// message keeps its tombstone, and past `max_idle_channels` the oldest tombstones go first.
#[tokio::test]
async fn never_published_channels_leave_nothing_and_tombstones_are_capped() {
    let b = MemoryBroker::new(HubConfig {
        history: HistoryLimits {
            max_messages: 10,
            max_age: Duration::from_millis(1),
        },
        max_idle_channels: 256,
        ..HubConfig::default()
    });
    let bogus = Cursor::new(0xdead, 0);
    for i in 0..5_000 {
        let sub = b
            .subscribe(ch(&format!("random-{i}")), Since::Cursor(bogus))
            .await
            .unwrap();
        drop(sub);
    }
    assert_eq!(b.hub().channel_count(), 5_000);
    assert_eq!(b.sweep(), 0);
    assert_eq!(
        b.hub().tombstone_count(),
        0,
        "never-published channels are not remembered"
    );
    assert!(!b.hub().holds(&ch("random-7")));
    // The cursor a poll was answered for such a channel is still good without any state.
    let quiet = ch("quiet");
    let cursor = b.subscribe(quiet.clone(), Since::Live).await.unwrap().cursor();
    assert_eq!(b.sweep(), 0);
    assert!(!b.hub().holds(&quiet));
    let mut again = b.subscribe(quiet.clone(), Since::Cursor(cursor)).await.unwrap();
    publish(&b, &quiet, "first");
    let mut out = Vec::new();
    again.try_read(&mut out, 10);
    assert_eq!(data_of(&out), ["first"], "no gap notice, and the message");
    drop(again);
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(b.sweep(), 0);
    assert!(b.hub().holds(&quiet), "it had a message: remembered");

    for i in 0..1_000 {
        publish(&b, &ch(&format!("had-{i}")), "x");
    }
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(b.sweep(), 0);
    let kept = b.hub().tombstone_count();
    // 256 over 128 shards: two each.
    assert!((128..=256).contains(&kept), "{kept} tombstones kept");
}

fn member(client: &str) -> comet_core::PresenceEntry {
    comet_core::PresenceEntry {
        client: client.into(),
        user: "u".into(),
        info: None,
        transport: "ws",
        since: 1,
    }
}

/// Presence notices reach the subscribers there are when they are made, before the messages
/// that follow them, are no history, and a reader more than NOTICES_KEPT behind misses the
/// oldest rather than waiting for them.
#[tokio::test]
async fn presence_notices_reach_current_subscribers_only_and_are_not_history() {
    let b = small(8);
    let room = ChannelName::new("room:1").unwrap();
    let mut early = b.subscribe(room.clone(), Since::Live).await.unwrap();
    assert!(b.presence_join(&room, member("c1"), true).await.unwrap().client);
    let mut late = b.subscribe(room.clone(), Since::Live).await.unwrap();
    assert!(
        !b.presence_join(&room, member("c1"), true).await.unwrap().client,
        "a renewal"
    );
    publish(&b, &room, "m1");
    assert!(b.presence_leave(&room, "c1", true).await.unwrap().is_some());
    assert!(b.presence_leave(&room, "c1", true).await.unwrap().is_none());
    b.presence_join(&room, member("quiet"), false).await.unwrap();
    let mut events = Vec::new();
    early.try_read(&mut events, 64);
    assert_eq!(data_of(&events), ["JOIN:c1", "LEAVE:c1", "m1"]);
    events.clear();
    late.try_read(&mut events, 64);
    assert_eq!(
        data_of(&events),
        ["LEAVE:c1", "m1"],
        "nothing from before it subscribed"
    );
    assert_eq!(b.hub().info(&room).unwrap().history_len, 1);

    for i in 0..comet_core::NOTICES_KEPT + 5 {
        b.presence_join(&room, member(&format!("x{i}")), true).await.unwrap();
    }
    events.clear();
    early.try_read(&mut events, 1000);
    assert_eq!(events.len(), comet_core::NOTICES_KEPT, "the oldest five are missed");
    assert_eq!(data_of(&events[..1]), ["JOIN:x5"]);
    events.clear();
    assert_eq!(early.try_read(&mut events, 1000), 0, "and nothing is read twice");
}

/// A subscription told its own client id does not get that client's joins and leaves, even
/// when they are made after it subscribed (as when its join reaches its node late, through
/// another node); the others' still reach it.
#[tokio::test]
async fn a_subscriber_never_gets_its_own_join_or_leave() {
    let b = small(8);
    let room = ChannelName::new("room:own").unwrap();
    let mut own = b.subscribe(room.clone(), Since::Live).await.unwrap();
    own.ignore_notices_of("me".into());
    b.presence_join(&room, member("me"), true).await.unwrap();
    b.presence_join(&room, member("other"), true).await.unwrap();
    b.presence_leave(&room, "me", true).await.unwrap();
    publish(&b, &room, "m1");
    let mut events = Vec::new();
    own.try_read(&mut events, 64);
    assert_eq!(data_of(&events), ["JOIN:other", "m1"]);
}
