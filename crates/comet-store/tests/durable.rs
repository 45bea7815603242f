//! The durable history (docs/protocol.md "Durability") on a real file: what a reopened store
//! puts back, each fsync mode, the bounds on disk, and damaged or busy files.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use comet_core::{
    Broker, BrokerError, ChannelName, Cursor, Event, HistoryLimits, HubConfig, Idempotency, Publish, Since,
};
use comet_store::{DiskBroker, FILE_NAME, Fsync, StoreConfig, StoreError};

fn hub(max_messages: usize, max_age: Duration) -> HubConfig {
    HubConfig {
        history: HistoryLimits { max_messages, max_age },
        ..HubConfig::default()
    }
}

fn open(dir: &Path, fsync: Fsync) -> DiskBroker {
    let store = StoreConfig {
        fsync,
        ..StoreConfig::new(dir)
    };
    DiskBroker::open(store, hub(256, Duration::from_secs(600))).expect("open the store")
}

fn ch(name: &str) -> ChannelName {
    ChannelName::new(name).unwrap()
}

async fn publish(broker: &DiskBroker, channel: &str, data: &str) -> Cursor {
    broker
        .publish(Publish {
            channel: ch(channel),
            event: None,
            data: data.to_owned().into(),
        })
        .await
        .expect("publish")
        .cursor
}

/// Everything `channel`'s history gives from `since`, without waiting.
async fn read(broker: &DiskBroker, channel: &str, since: Since) -> Vec<Event> {
    broker.history(ch(channel), since, 100_000).await.expect("history")
}

fn data(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::Message(m) => m.data().to_owned(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_reopened_store_keeps_epochs_offsets_history_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let key = Idempotency::new("order-17", Duration::from_secs(300)).unwrap();
    let (second, first_key) = {
        let broker = open(dir.path(), Fsync::Batch);
        let mut cursors = Vec::new();
        for i in 1..=5 {
            cursors.push(publish(&broker, "chat:a", &format!("m{i}")).await);
        }
        let keyed = broker
            .publish_idempotent(
                Publish {
                    channel: ch("chat:a"),
                    event: None,
                    data: "m6".into(),
                },
                key.clone(),
            )
            .await
            .unwrap();
        assert!(!keyed.duplicate);
        (cursors[1], keyed.cursor)
    };
    let broker = open(dir.path(), Fsync::Batch);
    // Resumes after the second message: no gap notice, the four that followed.
    let events = read(&broker, "chat:a", Since::Cursor(second)).await;
    assert_eq!(data(&events), ["m3", "m4", "m5", "m6"]);
    // The same epoch, offsets going on.
    let next = publish(&broker, "chat:a", "m7").await;
    assert_eq!(next, Cursor::new(second.epoch, 7));
    // The key is remembered across the restart.
    let again = broker
        .publish_idempotent(
            Publish {
                channel: ch("chat:a"),
                event: None,
                data: "m6".into(),
            },
            key,
        )
        .await
        .unwrap();
    assert!(again.duplicate, "the repeat after the restart published again");
    assert_eq!(again.cursor, first_key);
}

#[tokio::test]
async fn an_empty_channels_cursor_resumes_after_a_restart_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let cursor = {
        let broker = open(dir.path(), Fsync::Batch);
        let sub = broker.subscribe(ch("quiet:x"), Since::Live).await.unwrap();
        let cursor = broker
            .memory()
            .hub()
            .head(&ch("quiet:x"))
            .expect("held while subscribed");
        drop(sub);
        assert_eq!(cursor.offset, 0);
        cursor
    };
    let broker = open(dir.path(), Fsync::Batch);
    let mut sub = broker.subscribe(ch("quiet:x"), Since::Cursor(cursor)).await.unwrap();
    let m = publish(&broker, "quiet:x", "first").await;
    let mut events = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), sub.recv(&mut events, 16))
        .await
        .expect("the first message");
    assert_eq!(
        data(&events),
        ["first"],
        "a gap notice for a channel that never had a message"
    );
    assert_eq!(m.epoch, cursor.epoch, "the empty epoch was not kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fsync_mode_acknowledges_each_publish_once_in_order_and_keeps_it() {
    for fsync in [Fsync::Batch, Fsync::Always, Fsync::Never] {
        let dir = tempfile::tempdir().unwrap();
        let channels = ["a:1", "a:2", "a:3"];
        let acked: HashMap<String, Vec<(Cursor, String)>> = {
            let broker = Arc::new(open(dir.path(), fsync));
            let mut tasks = Vec::new();
            for p in 0..4 {
                let broker = Arc::clone(&broker);
                tasks.push(tokio::spawn(async move {
                    let mut mine = Vec::new();
                    for i in 0..60 {
                        let channel = channels[(p + i) % 3];
                        let text = format!("p{p}-{i}");
                        mine.push((channel, publish(&broker, channel, &text).await, text));
                    }
                    mine
                }));
            }
            let mut acked: HashMap<String, Vec<(Cursor, String)>> = HashMap::new();
            for t in tasks {
                for (channel, cursor, text) in t.await.unwrap() {
                    acked.entry(channel.to_owned()).or_default().push((cursor, text));
                }
            }
            for (channel, list) in &mut acked {
                list.sort_by_key(|(c, _)| c.offset);
                let offsets: Vec<u64> = list.iter().map(|(c, _)| c.offset).collect();
                let expected: Vec<u64> = (1..=list.len() as u64).collect();
                assert_eq!(
                    offsets,
                    expected,
                    "{}: {channel}'s cursors are not 1..n once each",
                    fsync.name()
                );
                let live = read(&broker, channel, Since::Earliest).await;
                let texts: Vec<String> = list.iter().map(|(_, t)| t.clone()).collect();
                assert_eq!(data(&live), texts, "{}: {channel}'s history", fsync.name());
            }
            acked
        };
        let broker = open(dir.path(), fsync);
        for (channel, list) in &acked {
            let texts: Vec<String> = list.iter().map(|(_, t)| t.clone()).collect();
            let events = read(&broker, channel, Since::Earliest).await;
            assert_eq!(data(&events), texts, "{}: {channel} after reopening", fsync.name());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_on_disk_stays_within_history_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreConfig::new(dir.path());
    {
        // Eight publishers at once, so that commits carry several publishes each.
        let broker = Arc::new(DiskBroker::open(store.clone(), hub(10, Duration::from_secs(600))).unwrap());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let broker = Arc::clone(&broker);
                tokio::spawn(async move {
                    let payload = "x".repeat(1024);
                    for _ in 0..250 {
                        publish(&broker, "big:one", &payload).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
    let size = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
    assert!(
        size < 1 << 20,
        "2,000 KiB published with history_size 10 left a {size}-byte file"
    );
    assert_eq!(stored_messages(dir.path()), 10);
    let broker = DiskBroker::open(store, hub(10, Duration::from_secs(600))).unwrap();
    let events = read(&broker, "big:one", Since::Earliest).await;
    assert_eq!(events.len(), 10);
    assert!(matches!(&events[0], Event::Message(m) if m.cursor.offset == 1991));
}

/// Rows of the file's `messages` table, read with redb directly.
fn stored_messages(dir: &Path) -> u64 {
    use redb::{ReadableDatabase, ReadableTableMetadata};
    let db = redb::Database::open(dir.join(FILE_NAME)).unwrap();
    let txn = db.begin_read().unwrap();
    let table: redb::TableDefinition<(&str, u64), &[u8]> = redb::TableDefinition::new("messages");
    txn.open_table(table).unwrap().len().unwrap()
}

/// The trimming pass (every 5 s, and at close) removes what history's TTL left behind.
#[tokio::test]
async fn history_on_disk_expires_with_history_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreConfig::new(dir.path());
    {
        let broker = DiskBroker::open(store.clone(), hub(100, Duration::from_secs(1))).unwrap();
        for i in 0..20 {
            publish(&broker, "short:lived", &format!("m{i}")).await;
        }
        // Older than the history TTL; the pass at close (if not the one every 5 s) trims them.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    assert_eq!(stored_messages(dir.path()), 0, "expired messages stayed on disk");
    // The channel's epoch and offset outlive its history: the next publish goes on.
    let broker = DiskBroker::open(store, hub(100, Duration::from_secs(1))).unwrap();
    assert_eq!(publish(&broker, "short:lived", "later").await.offset, 21);
}

/// Rows of the file's `keys` table (idempotency keys), read with redb directly.
fn stored_keys(dir: &Path) -> u64 {
    use redb::{ReadableDatabase, ReadableTableMetadata};
    let db = redb::Database::open(dir.join(FILE_NAME)).unwrap();
    let txn = db.begin_read().unwrap();
    let table: redb::TableDefinition<(&str, &str), (u64, u64, u64)> = redb::TableDefinition::new("keys");
    txn.open_table(table).unwrap().len().unwrap()
}

/// The sweep goes in steps of a few hundred rows (so that it holds publishes up for about a
/// millisecond at a time), each going on after the last row the one before saw: with more
/// channels and more keys than one step takes, every channel's expired history and every expired
/// key still goes (here at close, which sweeps the whole file step by step), and no channel is
/// looked at twice or skipped (its offset goes on after the restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_in_steps_reaches_every_channel_and_every_key() {
    const CHANNELS: usize = 700;
    let dir = tempfile::tempdir().unwrap();
    let store = StoreConfig::new(dir.path());
    {
        let broker = DiskBroker::open(store.clone(), hub(100, Duration::from_secs(1))).unwrap();
        for i in 0..CHANNELS {
            let key = Idempotency::new(&format!("k{i}"), Duration::from_secs(1)).unwrap();
            let msg = Publish {
                channel: ch(&format!("many:{i:04}")),
                event: None,
                data: "x".into(),
            };
            broker.publish_idempotent(msg, key).await.expect("publish");
            publish(&broker, &format!("many:{i:04}"), "y").await;
        }
        // Older than the history TTL and the keys' window.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    assert_eq!(stored_messages(dir.path()), 0, "expired messages stayed on disk");
    assert_eq!(stored_keys(dir.path()), 0, "expired keys stayed on disk");
    let broker = DiskBroker::open(store, hub(100, Duration::from_secs(1))).unwrap();
    for i in [0, 255, 256, 511, 512, CHANNELS - 1] {
        assert_eq!(
            publish(&broker, &format!("many:{i:04}"), "later").await.offset,
            3,
            "many:{i:04}"
        );
    }
}

#[tokio::test]
async fn a_damaged_file_is_refused_with_its_name_and_a_new_one_opens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = open(dir.path(), Fsync::Batch);
        for i in 0..300 {
            publish(
                &broker,
                &format!("d:{}", i % 7),
                &format!("message {i} {}", "y".repeat(100)),
            )
            .await;
        }
    }
    let file = dir.path().join(FILE_NAME);
    let good = std::fs::read(&file).unwrap();
    let damaged: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        ("zeroed header", {
            let mut b = good.clone();
            b[..64].fill(0);
            b
        }),
        ("not a store", b"hello, I am a text file\n".to_vec()),
    ];
    for (what, bytes) in damaged {
        std::fs::write(&file, bytes).unwrap();
        let err =
            DiskBroker::open(StoreConfig::new(dir.path()), HubConfig::default()).expect_err(&format!("{what}: opened"));
        assert!(matches!(err, StoreError::Open { .. }), "{what}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(&file.display().to_string()),
            "{what}: the error does not name the file: {text}"
        );
        assert!(text.contains("move it aside"), "{what}: {text}");
    }
    // Another directory is unaffected.
    let other = tempfile::tempdir().unwrap();
    let broker = open(other.path(), Fsync::Batch);
    assert_eq!(publish(&broker, "d:0", "fresh").await.offset, 1);
}

#[tokio::test]
async fn a_store_open_in_another_broker_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path(), Fsync::Batch);
    let err = DiskBroker::open(StoreConfig::new(dir.path()), HubConfig::default()).expect_err("opened twice");
    assert!(err.to_string().contains("already open"), "{err}");
}

#[tokio::test]
async fn a_data_dir_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let err = DiskBroker::open(StoreConfig::new(&file), HubConfig::default()).expect_err("a file as the directory");
    assert!(matches!(err, StoreError::Dir { .. }), "{err}");
    assert!(err.to_string().contains("plain"), "{err}");
}

#[tokio::test]
async fn a_publish_after_close_is_refused_as_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path(), Fsync::Batch);
    publish(&broker, "c:1", "before").await;
    broker.close();
    let err = broker
        .publish(Publish {
            channel: ch("c:1"),
            event: None,
            data: "after".into(),
        })
        .await
        .expect_err("published after close");
    assert!(matches!(err, BrokerError::Unavailable(_)), "{err}");
    // What was published before is still read.
    assert_eq!(data(&read(&broker, "c:1", Since::Earliest).await), ["before"]);
}

#[tokio::test]
async fn a_channel_the_hub_forgot_never_gets_a_cursor_the_file_has() {
    // Channels whose history expired come back as tombstones; past `max_idle_channels` the
    // sweep forgets some of them, and the hub makes them again in the current empty epoch: the
    // epoch their messages on disk are in.
    let dir = tempfile::tempdir().unwrap();
    let config = || HubConfig {
        max_idle_channels: 1,
        ..hub(100, Duration::from_secs(1))
    };
    let names: Vec<String> = (0..200).map(|i| format!("idle:{i}")).collect();
    let mut first = HashMap::new();
    {
        let broker = DiskBroker::open(StoreConfig::new(dir.path()), config()).unwrap();
        for name in &names {
            first.insert(name.clone(), publish(&broker, name, "old").await);
        }
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await; // their history expires
    let broker = DiskBroker::open(StoreConfig::new(dir.path()), config()).unwrap();
    broker.sweep();
    let mut moved = 0;
    for name in &names {
        let next = publish(&broker, name, "new").await;
        let old = first[name];
        assert_ne!(
            next, old,
            "{name}: the cursor of its message on disk was handed out again"
        );
        if next.epoch != old.epoch {
            moved += 1;
        } else {
            assert_eq!(next.offset, old.offset + 1, "{name}");
        }
    }
    assert!(moved > 0, "no channel was forgotten: the test did not test anything");
}
