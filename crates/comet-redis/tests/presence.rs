//! Presence shared by several nodes through a real `redis-server` (docs/protocol.md
//! "Presence"): entries listed from any node, subscriber counts of the whole cluster, join and
//! leave notices crossing nodes on every transport exactly once, and exactly one webhook per
//! transition with nodes racing. (A node killed with `kill -9`: crates/comet/tests/presence_nodes.rs.)

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use comet_server::Config;
use comet_server::auth::NamespaceRules;
use comet_test_support::jwt::{SECRET, claims, hs256};
use comet_test_support::presence::{notices, stream, wait_entries, who, ws_subscribed};
use comet_test_support::ws;
use comet_test_support::{BodyReader, SOON, WebhookReceiver, recv_timeout};
use serde_json::{Value, json};
use support::{Node, Redis, node_config};

const HOOK_SECRET: &str = "presence-webhook-secret";

/// `room:` tracks presence and pushes joins and leaves; anyone may subscribe. A short TTL.
fn config(webhook: Option<&str>) -> Config {
    let mut config = Config {
        jwt_secret: SECRET.into(),
        presence_ttl_secs: 3,
        namespace: BTreeMap::from([(
            "room".to_owned(),
            NamespaceRules {
                anonymous_subscribe: Some(true),
                anonymous_publish: Some(true),
                presence: Some(true),
                join_leave: Some(true),
                ..NamespaceRules::default()
            },
        )]),
        ..node_config()
    };
    if let Some(url) = webhook {
        config.webhook_url = url.to_owned();
        config.webhook_secret = HOOK_SECRET.into();
    }
    config
}

async fn node(redis: &Redis, webhook: Option<&str>) -> Node {
    Node::start_at(&redis.url(), config(webhook)).await
}

/// A token for `sub` with `comet.info` `{"name": sub}`.
fn token(sub: &str) -> String {
    let mut claims = claims(sub, 600, &["*"], &[]);
    claims["comet"]["info"] = json!({"name": sub});
    hs256(SECRET, &claims)
}

async fn get(node: &Node, path: &str) -> Value {
    let (status, body) = node.status(path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

#[tokio::test]
async fn entries_are_listed_from_any_node_and_counts_are_the_clusters() {
    let redis = Redis::start(false);
    let (a, b) = (node(&redis, None).await, node(&redis, None).await);
    let alice = stream(a.addr, "/sub/room:1?transport=sse", Some(&token("alice"))).await;
    let bob = ws_subscribed(b.addr, &format!("/ws?token={}", token("bob")), "room:1").await;
    let _anonymous = stream(b.addr, "/sub/room:1?transport=stream&prelude=1", None).await;
    let want = [
        ("".to_owned(), "stream".to_owned()),
        ("alice".to_owned(), "sse".to_owned()),
        ("bob".to_owned(), "ws".to_owned()),
    ];
    for node in [&a, &b] {
        let listed = wait_entries(node.addr, "room:1", 3).await;
        assert_eq!(who(&listed), want, "the same entries from {}", node.addr);
        let alice_entry = listed["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["user"] == "alice")
            .unwrap();
        assert_eq!(alice_entry["info"], json!({"name": "alice"}));
        assert!(alice_entry["since"].as_u64().unwrap() > 1_700_000_000_000);
    }
    // Subscriber counts reach the other nodes within a second or so.
    for node in [&a, &b] {
        let deadline = tokio::time::Instant::now() + SOON;
        loop {
            let info = get(node, "/channels/room:1").await;
            if info["subscribers"] == 3 {
                assert_eq!(info["users"], 3, "alice, bob and the anonymous one: {info}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never 3 subscribers: {info}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(alice);
    drop(bob);
    let listed = wait_entries(a.addr, "room:1", 1).await;
    assert_eq!(who(&listed), [("".to_owned(), "stream".to_owned())]);
    let deadline = tokio::time::Instant::now() + SOON;
    while get(&a, "/channels/room:1").await["subscribers"] != 1 {
        assert!(tokio::time::Instant::now() < deadline, "the count never came down to 1");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn carols(values: &[Value]) -> Vec<(String, String)> {
    notices(values)
        .into_iter()
        .filter(|(_, user)| user == "carol")
        .collect()
}

#[tokio::test]
async fn joins_and_leaves_cross_nodes_once_on_every_transport() {
    let redis = Redis::start(false);
    let (a, b) = (node(&redis, None).await, node(&redis, None).await);
    // Watchers on node B, one per streaming transport and a WebSocket; one WebSocket on A too.
    let mut sse = stream(b.addr, "/sub/room:2?transport=sse", None).await;
    let mut ndjson = stream(b.addr, "/sub/room:2?transport=stream&prelude=1", None).await;
    let mut iframe = stream(b.addr, "/sub/room:2?transport=iframe", None).await;
    let mut watcher_b = ws_subscribed(b.addr, "/ws", "room:2").await;
    let mut watcher_a = ws_subscribed(a.addr, "/ws", "room:2").await;
    wait_entries(a.addr, "room:2", 5).await;
    let long_poll = {
        let url = format!("{}/sub/room:2?transport=longpoll&timeout=20", b.url());
        tokio::spawn(async move { reqwest::get(url).await.unwrap().json::<Value>().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await; // the long poll is held

    // Carol joins on node A over SSE, then leaves; a message follows, so every reader saw all.
    let carol = stream(a.addr, "/sub/room:2?transport=sse", Some(&token("carol"))).await;
    for watcher in [&mut watcher_a, &mut watcher_b] {
        let join = ws::until(watcher, "carol's join", |f| f["type"] == "join" && f["user"] == "carol").await;
        assert_eq!(join["info"], json!({"name": "carol"}));
        assert_eq!(join["channel"], "room:2");
    }
    let held = recv_timeout(SOON, long_poll).await.unwrap();
    assert_eq!(
        carols(held["presence"].as_array().unwrap()),
        [("join".into(), "carol".into())],
        "a held long poll on the other node is answered by the join: {held}"
    );
    drop(carol);
    for watcher in [&mut watcher_a, &mut watcher_b] {
        ws::until(watcher, "carol's leave", |f| {
            f["type"] == "leave" && f["user"] == "carol"
        })
        .await;
    }
    a.publish("room:2", "after").await;
    let mut frames = Vec::new();
    for _ in 0..50 {
        let frame = ws::next_json(&mut watcher_b).await;
        let done = frame["type"] == "message";
        frames.push(frame);
        if done {
            break;
        }
    }
    assert_eq!(carols(&frames), [], "no second join or leave of carol's: {frames:?}");

    sse.until("the message", |buf| buf.contains("data: after")).await;
    let carol_blocks: Vec<&str> = sse
        .buf
        .split("\n\n")
        .filter(|b| b.contains("event: comet.") && b.contains("\"carol\""))
        .collect();
    assert_eq!(carol_blocks.len(), 2, "one join and one leave: {:?}", sse.buf);
    assert!(
        carol_blocks[0].starts_with("event: comet.join\ndata: "),
        "{}",
        carol_blocks[0]
    );
    assert!(
        carol_blocks[1].starts_with("event: comet.leave\ndata: "),
        "{}",
        carol_blocks[1]
    );
    assert!(carol_blocks.iter().all(|b| !b.contains("id:")), "not history");

    ndjson.until("the message", |buf| buf.contains("\"after\"")).await;
    assert_eq!(
        carols(&ndjson.json_lines()),
        [("join".into(), "carol".into()), ("leave".into(), "carol".into())]
    );
    iframe.until("the message", |buf| buf.contains("after")).await;
    assert_eq!(
        carols(&iframe.iframe_calls()),
        [("join".into(), "carol".into()), ("leave".into(), "carol".into())]
    );
    // The watchers' own joins: each watcher saw those after it, never its own.
    let lines = ndjson.json_lines();
    assert_eq!(
        notices(&lines).iter().filter(|(kind, _)| kind == "join").count(),
        4,
        "the iframe and two WebSocket watchers, then carol: {lines:?}"
    );
}

#[tokio::test]
async fn one_signed_webhook_per_transition_with_nodes_racing() {
    let got = WebhookReceiver::start(0).await;
    let redis = Redis::start(false);
    let (a, b) = (node(&redis, Some(&got.url)).await, node(&redis, Some(&got.url)).await);
    const ROUNDS: usize = 5;
    for _ in 0..ROUNDS {
        // Four users join at once, two through each node, then all leave at once.
        let joins = ["u1", "u2", "u3", "u4"].map(|user| {
            let node_url = if user == "u1" || user == "u3" { a.url() } else { b.url() };
            async move {
                let res = reqwest::Client::new()
                    .get(format!("{node_url}/sub/room:3?transport=sse"))
                    .bearer_auth(token(user))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                let mut reader = BodyReader::new(res);
                reader.until("the retry field", |b| b.contains("retry:")).await;
                reader
            }
        });
        let readers = futures_join(joins).await;
        wait_entries(a.addr, "room:3", 4).await;
        drop(readers);
        wait_entries(b.addr, "room:3", 0).await;
    }
    let events = got.wait_events(ROUNDS * 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = if got.events().len() > events.len() {
        got.events()
    } else {
        events
    };
    let count = |name: &str| events.iter().filter(|e| e.starts_with(&format!("{name} "))).count();
    assert_eq!(count("channel_occupied"), ROUNDS, "{events:?}");
    assert_eq!(count("channel_vacated"), ROUNDS, "{events:?}");
    assert_eq!(count("member_added"), ROUNDS * 4, "{events:?}");
    assert_eq!(count("member_removed"), ROUNDS * 4, "{events:?}");
    assert_eq!(events.len(), ROUNDS * 10, "nothing else: {events:?}");
    got.assert_signed(HOOK_SECRET);
}

/// Runs the four futures at once.
async fn futures_join<F: std::future::Future>(futures: [F; 4]) -> Vec<F::Output> {
    let [f1, f2, f3, f4] = futures;
    let (r1, r2, r3, r4) = tokio::join!(f1, f2, f3, f4);
    vec![r1, r2, r3, r4]
}

#[tokio::test]
async fn entries_lost_by_redis_are_added_back_by_their_node() {
    let mut redis = Redis::start(false);
    let a = node(&redis, None).await;
    let _dave = stream(a.addr, "/sub/room:4?transport=sse", Some(&token("dave"))).await;
    wait_entries(a.addr, "room:4", 1).await;
    redis.restart_empty();
    a.wait_ready(200, SOON).await;
    // Within a third of the TTL (1 s) the node renews, finds dave gone, and adds him back.
    let listed = wait_entries(a.addr, "room:4", 1).await;
    assert_eq!(who(&listed), [("dave".to_owned(), "sse".to_owned())]);
}

/// A poller behind a round-robin load balancer: its requests alternate between the nodes,
/// each sending back the id of the last answer. It becomes one member, stays one (no leave and
/// join again as each node's hold comes and goes), and leaves once, after it stops.
#[tokio::test]
async fn a_poller_alternating_between_nodes_is_one_member_until_it_stops() {
    let redis = Redis::start(false);
    let (a, b) = (node(&redis, None).await, node(&redis, None).await);
    let mut watcher = ws_subscribed(b.addr, "/ws", "room:5").await;
    let mut client: Option<String> = None;
    // 8 polls, 400 ms apart: about the TTL (3 s), so each node's hold expires at least once.
    for round in 0..8 {
        let node = if round % 2 == 0 { &a } else { &b };
        let path = match &client {
            Some(id) => format!("/sub/room:5?transport=poll&client={id}"),
            None => "/sub/room:5?transport=poll".to_owned(),
        };
        let answer = get(node, &path).await;
        let id = answer["client"].as_str().expect("a client id").to_owned();
        if let Some(before) = &client {
            assert_eq!(
                &id, before,
                "round {round}: the id given by the other node is taken back"
            );
        }
        client = Some(id);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let client = client.unwrap();
    let listed = wait_entries(a.addr, "room:5", 2).await;
    assert_eq!(
        who(&listed),
        [("".to_owned(), "poll".to_owned()), ("".to_owned(), "ws".to_owned())]
    );
    // Stopped: both nodes' holds expire, and the member leaves, once.
    let mut frames = Vec::new();
    for _ in 0..50 {
        let frame = ws::next_json(&mut watcher).await;
        let left = frame["type"] == "leave";
        frames.push(frame);
        if left {
            break;
        }
    }
    a.publish("room:5", "after").await;
    loop {
        let frame = ws::next_json(&mut watcher).await;
        if frame["type"] == "message" {
            break;
        }
        frames.push(frame);
    }
    let of_client: Vec<&str> = frames
        .iter()
        .filter(|f| f["client"] == client.as_str())
        .map(|f| f["type"].as_str().unwrap())
        .collect();
    assert_eq!(of_client, ["join", "leave"], "one join, one leave: {frames:?}");
    wait_entries(b.addr, "room:5", 1).await;
}
