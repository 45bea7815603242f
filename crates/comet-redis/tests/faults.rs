//! The delivery promise under real faults (docs/protocol.md "Delivery"): a real `redis-server`
//! restarted from older data, a node whose notifications lag, a channel quiet past its history's
//! TTL, a pub/sub link that dies without a FIN or an RST, and a publish whose answer is lost.
//! Each test fails without the fix it is named after (the closing note of issue 15 says which).

mod support;

use std::time::{Duration, Instant};

use comet_client::{Event, Transport};
use serde_json::Value;
use support::proxy::FaultProxy;
use support::{Node, Persistence, Redis, SOON, next_event, next_message, node_config};

fn epoch_of(cursor: &str) -> &str {
    cursor.split('-').next().unwrap()
}

fn offset_of(cursor: &str) -> u64 {
    cursor.rsplit('-').next().unwrap().parse().unwrap()
}

/// A short poll of `channel` on `node` after `since`: the answer, and its messages' data.
async fn poll(node: &Node, channel: &str, since: &str) -> (Value, Vec<String>) {
    let (status, polled) = node
        .status(&format!("/sub/{channel}?transport=poll&since={since}"))
        .await;
    assert_eq!(status, 200, "{polled}");
    let data = polled["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap().to_owned())
        .collect();
    (polled, data)
}

/// `node` resumes `channel` after `since` with exactly `expected`, and no gap notice.
async fn assert_resumes(node: &Node, channel: &str, since: &str, expected: &[&str]) {
    let (polled, data) = poll(node, channel, since).await;
    assert_eq!(polled.get("gap"), None, "a gap notice: {polled}");
    assert_eq!(data, expected, "{polled}");
}

/// Defect 1. Redis restarted from a snapshot older than what was acknowledged: the channel's
/// offset went back in the same epoch. The next publish must not reuse a cursor already handed
/// out: it goes into a new epoch, a subscriber connected throughout gets a gap notice and then
/// the new message, and a poll from the last cursor before the restart gets the gap and it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_from_an_older_snapshot_moves_the_channel_to_a_new_epoch() {
    let mut redis = Redis::with(Persistence::Rdb);
    let (a, b) = (Node::start(&redis).await, Node::start(&redis).await);
    let mut sse = b
        .client()
        .subscribe(&["snap"], Transport::Sse { envelope: true }, None)
        .await
        .unwrap();
    for i in 1..=3 {
        a.publish("snap", &format!("m{i}")).await;
    }
    redis.snapshot(); // Redis will come back holding offset 3
    let mut last = String::new();
    for i in 4..=5 {
        last = a.publish("snap", &format!("m{i}")).await;
    }
    for i in 1..=5 {
        assert_eq!(next_message(&mut sse).await.data, format!("m{i}"));
    }
    redis.kill();
    redis.restart();
    let after = a.publish_retrying("snap", "after").await;
    assert_ne!(
        epoch_of(&after),
        epoch_of(&last),
        "a new epoch, not {after} again after {last}"
    );
    match next_event(&mut sse).await {
        Event::Gap { channel } => assert_eq!(channel, "snap"),
        other => panic!("expected a gap notice, got {other:?}"),
    }
    let env = next_message(&mut sse).await;
    assert_eq!((env.data.as_str(), env.id.as_str()), ("after", after.as_str()));
    for node in [&a, &b] {
        let (polled, data) = poll(node, "snap", &last).await;
        assert_eq!(polled["gap"], true, "{polled}");
        assert_eq!(data, ["after"], "{polled}");
    }
}

/// Defect 1, the other side: Redis restarted with everything it acknowledged
/// (`appendfsync always`) keeps its epochs: no gap notice where nothing was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_with_all_its_data_keeps_the_epoch() {
    let mut redis = Redis::with(Persistence::AofAlways);
    let a = Node::start(&redis).await;
    let before = a.publish("kept", "before").await;
    redis.restart();
    let after = a.publish_retrying("kept", "after").await;
    assert_eq!(epoch_of(&after), epoch_of(&before));
    assert_eq!(offset_of(&after), offset_of(&before) + 1);
    assert_resumes(&a, "kept", &before, &["after"]).await;
}

/// Defect 2. A client publishes through node A and at once polls node B with the fresh
/// cursor, before B's notification arrived (B's link to Redis is slow here): B looks the cursor
/// up in the stream instead of answering a false gap with a replay of everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_cursor_on_a_lagging_node_is_no_gap_and_no_replay() {
    let redis = Redis::start(false);
    let proxy = FaultProxy::start(redis.addr()).await;
    let a = Node::start(&redis).await;
    let b = Node::start_at(&proxy.redis_url(), node_config()).await;
    // B holds the channel (a subscriber), so it answers from its own hub.
    let _held = b.client().subscribe(&["lag"], Transport::Stream, None).await.unwrap();
    let first = a.publish("lag", "1").await;
    let deadline = Instant::now() + SOON;
    loop {
        let (polled, _) = poll(&b, "lag", &first).await;
        if polled.get("gap").is_none() {
            break; // B has seen "1"
        }
        assert!(Instant::now() < deadline, "node B never caught up: {polled}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.set_delay(Duration::from_millis(300));
    let second = a.publish("lag", "2").await;
    let third = a.publish("lag", "3").await;
    let (polled, data) = poll(&b, "lag", &second).await;
    assert_eq!(polled.get("gap"), None, "a false gap on the lagging node: {polled}");
    assert_eq!(data, ["3"], "exactly what follows the cursor: {polled}");
    assert_eq!(polled["messages"][0]["id"], third);
}

/// Defect 3. A channel with no publish for longer than its history's TTL keeps its epoch on
/// Redis (its metadata outlives its messages), so a subscriber's cursor resumes with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_channel_keeps_its_epoch_past_the_history_ttl() {
    let redis = Redis::start(false);
    let config = comet_server::Config {
        history_ttl_secs: 1,
        ..node_config()
    };
    let a = Node::start_at(&redis.url(), config).await;
    let before = a.publish("quiet", "before").await;
    // Redis expires the stream (TTL 1 s); the sleep is Redis's clock, not ours to pause.
    let deadline = Instant::now() + SOON;
    while redis.cli(&["EXISTS", "comet:{quiet}:s"]).as_deref().map(str::trim) != Some("0") {
        assert!(Instant::now() < deadline, "the stream never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = a.publish("quiet", "after").await;
    assert_eq!(
        epoch_of(&after),
        epoch_of(&before),
        "a quiet channel started a new epoch"
    );
    assert_resumes(&a, "quiet", &before, &["after"]).await;
}

/// Defect 4. The node's links to Redis die silently (no FIN, no RST: a NAT forgot them), while
/// new connections work. The node notices within seconds (`/readyz` fails meanwhile), connects
/// again, and its subscriber gets what was published in between, with no new publish to
/// reveal a hole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_pubsub_link_is_noticed_and_healed() {
    let redis = Redis::start(false);
    let proxy = FaultProxy::start(redis.addr()).await;
    let a = Node::start(&redis).await;
    let b = Node::start_at(&proxy.redis_url(), node_config()).await;
    let mut sub = b
        .client()
        .subscribe(&["dead"], Transport::Sse { envelope: true }, None)
        .await
        .unwrap();
    a.publish("dead", "1").await;
    assert_eq!(next_message(&mut sub).await.data, "1");
    b.wait_ready(200, SOON).await;
    proxy.blackhole_existing();
    a.publish("dead", "2").await;
    // Heartbeats go on, but "2" must come: through a new link, read from the stream.
    let env = tokio::time::timeout(Duration::from_secs(15), next_message(&mut sub))
        .await
        .expect("the subscriber never got the message published while its node's link was dead");
    assert_eq!(env.data, "2");
    a.publish("dead", "3").await;
    assert_eq!(next_message(&mut sub).await.data, "3");
    b.wait_ready(200, SOON).await;
}

/// Defect 4, readiness: while the pub/sub link alone is dead and cannot be replaced (the
/// command link answers), `/readyz` fails; once a new link is up, it passes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_the_pubsub_link_is_dead() {
    let redis = Redis::start(false);
    let proxy = FaultProxy::start(redis.addr()).await;
    let b = Node::start_at(&proxy.redis_url(), node_config()).await;
    b.wait_ready(200, SOON).await;
    // The node connects its command link first (connection 0), then its pub/sub link.
    proxy.blackhole_new(true);
    proxy.blackhole_nth(1);
    b.wait_ready(503, Duration::from_secs(8)).await;
    proxy.blackhole_new(false);
    b.wait_ready(200, Duration::from_secs(15)).await;
}

/// Readiness with every link to Redis dead: `/readyz` fails within seconds, and passes again
/// once Redis can be reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_every_link_is_dead() {
    let redis = Redis::start(false);
    let proxy = FaultProxy::start(redis.addr()).await;
    let b = Node::start_at(&proxy.redis_url(), node_config()).await;
    b.wait_ready(200, SOON).await;
    proxy.blackhole_all(true);
    b.wait_ready(503, Duration::from_secs(8)).await;
    proxy.blackhole_all(false);
    b.wait_ready(200, Duration::from_secs(15)).await;
}

/// Defect 6. The answer to a publish is lost (Redis ran it; the reply never came back). The
/// node sends it again with the publish's idempotency key over a new connection, so the
/// publisher gets its `201` and history holds the message once, not a `503` that a retrying
/// publisher turns into two copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_whose_answer_is_lost_is_answered_and_stored_once() {
    let redis = Redis::start(false);
    let proxy = FaultProxy::start(redis.addr()).await;
    let node = Node::start_at(&proxy.redis_url(), node_config()).await;
    node.publish("lost", "first").await;
    proxy.drop_replies_existing();
    let res = reqwest::Client::new()
        .post(format!("{}/pub/lost", node.url()))
        .body("once")
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    if status != 201 {
        // What a publisher does with a 503: send it again.
        let again = node.client().publish("lost", "once", None).await;
        panic!("the publish answered {status} {body}; a retry answered {again:?}");
    }
    let (polled, data) = poll(&node, "lost", "earliest").await;
    assert_eq!(data, ["first", "once"], "{polled}");
    assert_eq!(polled["messages"][1]["id"], body["id"]);
}

/// An idempotency key is kept in Redis: a repeat through another node publishes nothing and
/// answers the first cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_holds_across_nodes() {
    let redis = Redis::start(false);
    let (a, b) = (Node::start(&redis).await, Node::start(&redis).await);
    let first = a.client().publish_once("idem", "x", None, Some("k-1")).await.unwrap();
    assert!(!first.duplicate);
    let again = b.client().publish_once("idem", "x", None, Some("k-1")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.id, first.id);
    let other = b.client().publish_once("idem", "y", None, Some("k-2")).await.unwrap();
    assert_eq!(offset_of(&other.id), offset_of(&first.id) + 1);
    let (_, info) = a.status("/channels/idem").await;
    assert_eq!(info["last_id"], other.id);
}

/// A channel whose meta key is gone while its stream is not (evicted under an `allkeys-*`
/// policy, or deleted by hand) starts a clean epoch: the old entries are dropped with it, so
/// the new epoch's offsets are not taken already, publishes succeed, and an old cursor gets a
/// gap notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_whose_meta_is_gone_starts_a_clean_epoch() {
    let redis = Redis::start(false);
    let a = Node::start(&redis).await;
    let mut old = String::new();
    for i in 1..=3 {
        old = a.publish("evicted", &format!("old{i}")).await;
    }
    assert_eq!(
        redis.cli(&["DEL", "comet:{evicted}:m"]).as_deref().map(str::trim),
        Some("1")
    );
    let b = Node::start(&redis).await; // a node that never saw the old epoch
    let new = b.publish("evicted", "new").await;
    assert_ne!(epoch_of(&new), epoch_of(&old));
    assert_eq!(offset_of(&new), 1);
    let (polled, data) = poll(&b, "evicted", &old).await;
    assert_eq!(polled["gap"], true, "{polled}");
    assert_eq!(data, ["new"], "no old entry under the new epoch: {polled}");
}

/// Redis goes back under the same `run_id` (an older snapshot loaded in place, as a master
/// demoted and re-promoted without a restart would be): the life check cannot see it, but a
/// node that holds the channel gets a notification for a cursor it already holds with another
/// message, reads the stream, and moves the channel to a new epoch with the messages published
/// since: its subscriber gets a gap notice and then those messages, never the silent drop of a
/// "duplicate".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_in_place_with_older_data_is_caught_by_the_node() {
    let redis = Redis::with_args(Persistence::Rdb, &["--enable-debug-command", "yes"]);
    let (a, b) = (Node::start(&redis).await, Node::start(&redis).await);
    let mut sse = b
        .client()
        .subscribe(&["inplace"], Transport::Sse { envelope: true }, None)
        .await
        .unwrap();
    for i in 1..=3 {
        a.publish("inplace", &format!("m{i}")).await;
    }
    redis.snapshot();
    for i in 4..=5 {
        a.publish("inplace", &format!("m{i}")).await;
    }
    for i in 1..=5 {
        assert_eq!(next_message(&mut sse).await.data, format!("m{i}"));
    }
    let reload = redis.cli(&["DEBUG", "RELOAD", "NOSAVE"]).unwrap_or_default();
    assert_eq!(reload.trim(), "OK", "DEBUG RELOAD NOSAVE: {reload:?}");
    for i in 6..=8 {
        a.publish("inplace", &format!("m{i}")).await;
    }
    // A gap notice first (it covers what Redis lost), then the new messages in order: never a
    // silent skip.
    match next_event(&mut sse).await {
        Event::Gap { channel } => assert_eq!(channel, "inplace"),
        other => panic!("expected a gap notice, got {other:?}"),
    }
    // The messages published into the reused cursors were delivered by no node that held the
    // channel (each dropped them as duplicates): the new epoch carries them, so they come after
    // the notice, in order, once each; and the channel goes on in the new epoch.
    a.publish("inplace", "m9").await;
    let mut data = Vec::new();
    while data.len() < 4 {
        match next_event(&mut sse).await {
            Event::Message(env) => data.push(env.data),
            other => panic!("unexpected {other:?} after {data:?}"),
        }
    }
    assert_eq!(data, ["m6", "m7", "m8", "m9"]);
}
