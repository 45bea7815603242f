//! The server API (docs/protocol.md "Server API") across nodes on a real `redis-server`: a user
//! disconnected and unsubscribed on every node, the active channels of every node listed, and
//! history paged both ways from the stream.

mod support;

use std::time::Duration;

use comet_server::Config;
use comet_test_support::jwt::{SECRET, token};
use comet_test_support::presence::stream;
use comet_test_support::{SOON, ws};
use serde_json::{Value, json};
use support::{Node, Redis, node_config};

const KEY: &str = "admin-key-for-the-redis-server-api-tests";

/// Tokens verified, the server API on; `x:` open to anonymous publishers.
fn config() -> Config {
    Config {
        jwt_secret: SECRET.into(),
        admin_api_key: KEY.into(),
        namespace: std::collections::BTreeMap::from([(
            "x".to_owned(),
            comet_server::auth::NamespaceRules {
                anonymous_publish: Some(true),
                ..Default::default()
            },
        )]),
        ..node_config()
    }
}

async fn admin(node: &Node, method: reqwest::Method, path: &str) -> Value {
    let res = reqwest::Client::new()
        .request(method, format!("{}{path}", node.url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{path}: {}", res.status());
    res.json().await.unwrap()
}

#[tokio::test]
async fn a_user_is_disconnected_and_unsubscribed_on_every_node() {
    let redis = Redis::start(false);
    let (a, b) = (
        Node::start_at(&redis.url(), config()).await,
        Node::start_at(&redis.url(), config()).await,
    );
    let alice = token("alice", 600, &["*"], &[]);
    let mut on_b = ws::connect(&format!("ws://{}/sub/room:1,room:2?token={alice}", b.addr)).await;
    let mut sse_on_a = stream(a.addr, "/sub/room:1?transport=sse", Some(&alice)).await;

    let answer = admin(&a, reqwest::Method::POST, "/admin/users/alice/unsubscribe/room:2").await;
    assert_eq!(answer["connections"], 1, "node A's one connection of alice's was told");
    let frame = ws::until(&mut on_b, "unsubscribed on node B", |f| f["type"] == "unsubscribed").await;
    assert_eq!(frame["channel"], "room:2");

    let answer = admin(&a, reqwest::Method::POST, "/admin/users/alice/disconnect").await;
    assert_eq!(answer, json!({"user": "alice", "connections": 1}));
    let frame = ws::until(&mut on_b, "the disconnect on node B", |f| f["type"] == "disconnect").await;
    assert_eq!(frame["reconnect"], true, "reconnect defaults to true");
    assert_eq!(ws::next_json(&mut on_b).await["close"], 4010);
    sse_on_a.read_to_end().await;
    assert!(sse_on_a.buf.contains("event: comet.disconnect"), "{}", sse_on_a.buf);
}

#[tokio::test]
async fn channels_of_every_node_are_listed_and_history_is_paged_from_the_stream() {
    let redis = Redis::start(false);
    let (a, b) = (
        Node::start_at(&redis.url(), config()).await,
        Node::start_at(&redis.url(), config()).await,
    );
    let alice = token("alice", 600, &["*"], &[]);
    let _on_a = stream(a.addr, "/sub/x:a?transport=sse", Some(&alice)).await;
    let _on_b = stream(b.addr, "/sub/x:b?transport=sse", Some(&alice)).await;
    let _both = stream(b.addr, "/sub/x:a?transport=sse", Some(&alice)).await;
    // Node B's counts reach Redis within a second or so.
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let listed = admin(&a, reqwest::Method::GET, "/channels?prefix=x:").await;
        let want = json!([{"channel": "x:a", "subscribers": 2}, {"channel": "x:b", "subscribers": 1}]);
        if listed["channels"] == want {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never listed both: {listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for i in 0..15 {
        a.publish("x:log", &format!("m{i}")).await;
    }
    let data = |page: &Value| -> Vec<String> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["data"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = admin(&b, reqwest::Method::GET, "/channels/x:log/history?limit=10").await;
    assert_eq!(data(&first)[..2], ["m0", "m1"]);
    let next = first["next"].as_str().unwrap().to_owned();
    let rest = admin(
        &b,
        reqwest::Method::GET,
        &format!("/channels/x:log/history?limit=10&since={next}"),
    )
    .await;
    assert_eq!(data(&rest), (10..15).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert_eq!(rest["next"], Value::Null);
    let newest = admin(&b, reqwest::Method::GET, "/channels/x:log/history?limit=4&reverse=true").await;
    assert_eq!(data(&newest), ["m14", "m13", "m12", "m11"]);
}

/// The admin console's node list (docs/protocol.md "Admin console"): each node asked lists
/// itself first and the other with its samples (sent through Redis every 2 seconds); a node
/// that stops is dropped from the list once it has not been heard from for 30 seconds, and
/// shows as not live well before that.
#[tokio::test]
async fn the_console_lists_every_node_with_its_numbers() {
    let redis = Redis::start(false);
    let (a, b) = (
        Node::start_at(&redis.url(), config()).await,
        Node::start_at(&redis.url(), config()).await,
    );
    let alice = token("alice", 600, &["*"], &[]);
    let _on_b = stream(b.addr, "/sub/x:n?transport=sse", Some(&alice)).await;
    let ids = |body: &Value| -> Vec<String> {
        body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["node"].as_str().unwrap().to_owned())
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (on_a, on_b) = loop {
        let (on_a, on_b) = (
            admin(&a, reqwest::Method::GET, "/admin/nodes").await,
            admin(&b, reqwest::Method::GET, "/admin/nodes").await,
        );
        let seen_b = on_a["nodes"]
            .get(1)
            .and_then(|n| n["samples"].as_array())
            .and_then(|s| s.last())
            .is_some_and(|s| s["connections"]["sse"] == 1);
        if ids(&on_a).len() == 2 && ids(&on_b).len() == 2 && seen_b {
            break (on_a, on_b);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the nodes never saw each other:\n{on_a}\n{on_b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ids(&on_a)[0], on_a["node"], "the node asked comes first");
    assert_eq!(ids(&on_b)[0], on_b["node"]);
    assert_eq!(ids(&on_a)[1], on_b["node"]);
    assert_eq!(ids(&on_b)[1], on_a["node"]);
    assert_eq!(on_a["nodes"][1]["live"], true);
    assert_eq!(on_a["nodes"][1]["version"], env!("CARGO_PKG_VERSION"));
    drop(b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    loop {
        let body = admin(&a, reqwest::Method::GET, "/admin/nodes").await;
        if body["nodes"][1]["live"] == false {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "node B stayed live: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
