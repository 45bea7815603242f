//! Presence across `comet serve` processes on one real `redis-server` (docs/protocol.md
//! "Presence"): a node killed with `kill -9` leaves no ghost. Its members disappear from the
//! other node's listing, with their leave notices and exactly one webhook per transition,
//! within `presence_ttl_secs`, also from a channel that only the dead node's clients were in.

use std::time::{Duration, Instant};

use comet_chaos::procs::{CometNode, RedisServer, scratch_dir};
use comet_test_support::jwt::{SECRET, claims, hs256};
use comet_test_support::{BodyReader, SOON, WebhookReceiver, recv_timeout, ws};
use serde_json::{Value, json};

const TTL_SECS: u64 = 3;
const HOOK_SECRET: &str = "presence-nodes-webhook-secret";

fn settings(webhook: &str) -> String {
    format!(
        "jwt_secret = \"{SECRET}\"\npresence_ttl_secs = {TTL_SECS}\nwebhook_url = \"{webhook}\"\n\
         webhook_secret = \"{HOOK_SECRET}\"\n\n[namespace.room]\nanonymous_subscribe = true\n\
         presence = true\njoin_leave = true\n"
    )
}

async fn sse(node: &CometNode, channel: &str, user: &str) -> BodyReader {
    let res = recv_timeout(
        SOON,
        reqwest::Client::new()
            .get(format!("{}/sub/{channel}?transport=sse", node.url()))
            .bearer_auth(hs256(SECRET, &claims(user, 600, &["*"], &[])))
            .send(),
    )
    .await
    .expect("subscribe");
    assert_eq!(res.status(), 200);
    let mut reader = BodyReader::new(res);
    reader.until("the retry field", |b| b.contains("retry:")).await;
    reader
}

async fn presence(node: &CometNode, channel: &str) -> Vec<String> {
    let v: Value = recv_timeout(
        SOON,
        reqwest::get(format!("{}/channels/{channel}/presence", node.url())),
    )
    .await
    .expect("presence")
    .json()
    .await
    .expect("presence JSON");
    let mut users: Vec<String> = v["clients"]
        .as_array()
        .unwrap_or_else(|| panic!("no clients: {v}"))
        .iter()
        .map(|c| c["user"].as_str().unwrap().to_owned())
        .collect();
    users.sort();
    users
}

fn count(events: &[String], event: &str) -> usize {
    events.iter().filter(|e| *e == event).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_members_leave_within_the_ttl_with_one_webhook_each() {
    let hooks = WebhookReceiver::start(0).await;
    let redis = RedisServer::start(false);
    let dir = scratch_dir("presence-nodes");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_comet"));
    let mut a = CometNode::start(bin, &dir, &redis.url(), &settings(&hooks.url));
    let b = CometNode::start(bin, &dir, &redis.url(), &settings(&hooks.url));

    // Alice is in room:shared (with a watcher on node B) and alone in room:solo, both on A.
    let mut watcher = ws::connect(&format!("ws://127.0.0.1:{}/ws", b.port)).await;
    ws::send_json(&mut watcher, &json!({"type": "subscribe", "channel": "room:shared"})).await;
    ws::until(&mut watcher, "subscribed", |f| f["type"] == "subscribed").await;
    let _alice_shared = sse(&a, "room:shared", "alice").await;
    let _alice_solo = sse(&a, "room:solo", "alice").await;
    let join = ws::until(&mut watcher, "alice's join", |f| f["type"] == "join").await;
    assert_eq!(join["user"], "alice");
    assert_eq!(presence(&b, "room:shared").await, ["", "alice"]);
    assert_eq!(presence(&b, "room:solo").await, ["alice"]);
    hooks.wait_events(5).await;

    a.kill();
    let killed = Instant::now();
    // Node B's watcher gets alice's leave once her entry outlived its TTL unrenewed.
    let leave = ws::until(&mut watcher, "alice's leave", |f| f["type"] == "leave").await;
    assert_eq!(
        (leave["user"].as_str(), &leave["client"]),
        (Some("alice"), &join["client"])
    );
    let bound = Duration::from_secs(TTL_SECS) + Duration::from_secs(TTL_SECS) / 3 + Duration::from_secs(2);
    assert!(killed.elapsed() < bound, "the leave took {:?}", killed.elapsed());
    assert_eq!(presence(&b, "room:shared").await, [""]);
    // room:solo had nobody left to renew it: node B's sweep of stale channels removes alice.
    let events = hooks.wait_events(8).await;
    let deadline = Instant::now() + SOON;
    let mut events = events;
    while count(&events, "channel_vacated room:solo -") == 0 {
        assert!(Instant::now() < deadline, "room:solo never vacated: {events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        events = hooks.events();
    }
    assert!(
        killed.elapsed() < bound + Duration::from_secs(1),
        "room:solo took {:?}",
        killed.elapsed()
    );
    assert_eq!(presence(&b, "room:solo").await, Vec::<String>::new());
    tokio::time::sleep(Duration::from_secs(TTL_SECS)).await; // every node's sweeps went by again
    let events = hooks.events();
    for (event, n) in [
        ("channel_occupied room:shared -", 1),
        ("channel_occupied room:solo -", 1),
        ("member_added room:shared alice", 1),
        ("member_added room:solo alice", 1),
        ("member_added room:shared ", 1), // the anonymous watcher: user ""
        ("member_removed room:shared ", 0),
        ("member_removed room:shared alice", 1),
        ("member_removed room:solo alice", 1),
        ("channel_vacated room:solo -", 1),
        ("channel_vacated room:shared -", 0),
    ] {
        assert_eq!(count(&events, event), n, "{event}: {events:?}");
    }
    hooks.assert_signed(HOOK_SECRET);
    drop(watcher);
    drop(b);
}
