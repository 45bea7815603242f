//! Presence on one node (docs/protocol.md "Presence"): who is subscribed to a channel of a
//! namespace with `presence = true`, over every streaming transport and WebSocket, listed by
//! `GET /channels/{channel}/presence` and the WebSocket `presence` command, and gone when the
//! connection is.

use std::collections::BTreeMap;
use std::time::Duration;

use comet_server::Config;
use comet_server::auth::NamespaceRules;
use comet_test_support::jwt::{SECRET, hs256};
use comet_test_support::presence::{notices, presence, stream, wait_entries, who, ws_subscribed};
use comet_test_support::ws;
use comet_test_support::{SOON, TestServer, expect_error, recv_timeout, start_server_with, unlimited};
use serde_json::{Value, json};

/// Tokens verified; `room:` tracks presence and is open to anonymous subscribers; `vault:`
/// tracks presence for token holders only; `plain:` does not track it.
fn config() -> Config {
    let rules = |anonymous: bool, presence: bool| NamespaceRules {
        anonymous_subscribe: Some(anonymous),
        presence: Some(presence),
        ..NamespaceRules::default()
    };
    Config {
        jwt_secret: SECRET.into(),
        namespace: BTreeMap::from([
            ("room".to_owned(), rules(true, true)),
            ("vault".to_owned(), rules(false, true)),
            ("plain".to_owned(), rules(true, false)),
        ]),
        ..unlimited()
    }
}

/// A token for `sub` granting every channel, with `info` as its `comet.info`.
fn token(sub: &str, info: Option<Value>) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let mut comet = json!({"subscribe": ["*"], "publish": ["*"]});
    if let Some(info) = info {
        comet["info"] = info;
    }
    hs256(SECRET, &json!({"sub": sub, "exp": exp, "comet": comet}))
}

#[tokio::test]
async fn every_connected_client_is_listed_with_its_user_info_and_transport_until_it_goes() {
    let server = start_server_with(config()).await;
    let alice = token("alice", Some(json!({"name": "Alice", "avatar": 7})));
    let sse = stream(server.addr, "/sub/room:1?transport=sse", Some(&alice)).await;
    let ndjson = stream(server.addr, "/sub/room:1?transport=stream&prelude=1", None).await;
    let iframe = stream(server.addr, "/sub/room:1?transport=iframe", None).await;
    let bob = token("bob", None);
    let mut socket = ws_subscribed(server.addr, &format!("/ws?token={bob}"), "room:1").await;
    let listed = presence(server.addr, "room:1").await;
    assert_eq!(listed["channel"], "room:1");
    assert_eq!(
        who(&listed),
        [
            ("".into(), "iframe".into()),
            ("".into(), "stream".into()),
            ("alice".into(), "sse".into()),
            ("bob".into(), "ws".into())
        ]
    );
    let clients = listed["clients"].as_array().unwrap();
    let ids: std::collections::HashSet<&str> = clients.iter().map(|c| c["client"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "one client id per connection: {listed}");
    let now = comet_core::now_millis();
    for c in clients {
        let since = c["since"].as_u64().expect("since");
        assert!(since <= now && since + 60_000 > now, "{c}");
    }
    let entry_of = |user: &str| clients.iter().find(|c| c["user"] == user).unwrap().clone();
    assert_eq!(entry_of("alice")["info"], json!({"name": "Alice", "avatar": 7}));
    assert!(entry_of("bob").get("info").is_none(), "no info without comet.info");

    // The channel's facts count distinct users (anonymous clients are one, "").
    let info: Value = reqwest::get(server.url("/channels/room:1"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (info["subscribers"].as_u64(), info["users"].as_u64()),
        (Some(4), Some(3)),
        "{info}"
    );
    let plain: Value = reqwest::get(server.url("/channels/plain:1"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(plain.get("users").is_none(), "no users where presence is off: {plain}");

    // The WebSocket command answers the same list, with its ref.
    ws::send_json(&mut socket, &json!({"type": "presence", "channel": "room:1", "ref": 9})).await;
    let answer = ws::until(&mut socket, "presence", |f| f["type"] == "presence").await;
    assert_eq!(answer["ref"], 9);
    assert_eq!(who(&answer), who(&listed));

    // Gone with their connections: a stream's body dropped, a WebSocket unsubscribed.
    drop(sse);
    let listed = wait_entries(server.addr, "room:1", 3).await;
    assert!(!who(&listed).contains(&("alice".into(), "sse".into())));
    ws::send_json(&mut socket, &json!({"type": "unsubscribe", "channel": "room:1"})).await;
    ws::until(&mut socket, "unsubscribed", |f| f["type"] == "unsubscribed").await;
    let listed = wait_entries(server.addr, "room:1", 2).await;
    assert_eq!(
        who(&listed),
        [("".into(), "iframe".into()), ("".into(), "stream".into())]
    );
    drop((ndjson, iframe));
    wait_entries(server.addr, "room:1", 0).await;
    drop(socket);
}

#[tokio::test]
async fn a_websocket_that_authenticates_is_listed_as_its_new_user_and_leaves_when_closed() {
    let server = start_server_with(config()).await;
    let mut socket = ws::connect(&server.ws_url("/sub/room:2")).await;
    let listed = wait_entries(server.addr, "room:2", 1).await;
    assert_eq!(
        who(&listed),
        [("".into(), "ws".into())],
        "the URL's channel, before any command"
    );
    let carol = token("carol", Some(json!({"name": "Carol"})));
    ws::send_json(&mut socket, &json!({"type": "auth", "token": carol})).await;
    ws::until(&mut socket, "authenticated", |f| f["type"] == "authenticated").await;
    let listed = presence(server.addr, "room:2").await;
    assert_eq!(who(&listed), [("carol".into(), "ws".into())]);
    assert_eq!(listed["clients"][0]["info"], json!({"name": "Carol"}));
    drop(socket);
    wait_entries(server.addr, "room:2", 0).await;
}

#[tokio::test]
async fn presence_is_refused_where_it_is_off_or_the_caller_may_not_subscribe() {
    let server = start_server_with(config()).await;
    let res = reqwest::get(server.url("/channels/plain:1/presence")).await.unwrap();
    let message = expect_error(res, 400, "presence_off", "presence of plain:1").await;
    assert!(message.contains("presence = true"), "{message}");
    // vault: is for token holders: its members are not shown to anonymous callers.
    let res = reqwest::get(server.url("/channels/vault:1/presence")).await.unwrap();
    expect_error(res, 401, "unauthorized", "anonymous presence of vault:1").await;
    let res = reqwest::Client::new()
        .get(server.url("/channels/vault:1/presence"))
        .bearer_auth(token("dave", None))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = reqwest::get(server.url("/channels/bad%20name/presence")).await.unwrap();
    expect_error(res, 400, "bad_channel", "a bad channel name").await;

    let mut socket = ws::connect(&server.ws_url("/ws")).await;
    for (channel, code) in [
        ("plain:1", "presence_off"),
        ("vault:1", "unauthorized"),
        ("no way", "bad_channel"),
    ] {
        ws::send_json(
            &mut socket,
            &json!({"type": "presence", "channel": channel, "ref": channel}),
        )
        .await;
        let error = ws::until(&mut socket, "error", |f| f["type"] == "error").await;
        assert_eq!(
            (error["code"].as_str(), error["ref"].as_str()),
            (Some(code), Some(channel)),
            "{error}"
        );
    }
    ws::send_json(&mut socket, &json!({"type": "ping", "ref": "still"})).await;
    assert_eq!(
        ws::next_json(&mut socket).await,
        json!({"type": "pong", "ref": "still"})
    );
}

#[tokio::test]
async fn a_token_whose_info_is_over_1_kib_or_not_an_object_is_refused() {
    let server = start_server_with(config()).await;
    let large = token("erin", Some(json!({"bio": "x".repeat(1100)})));
    let odd = token("erin", Some(json!(["not", "an", "object"])));
    for (what, bad, reason) in [
        ("1.1 KiB of info", large, "at most 1024"),
        ("an array", odd, "must be a JSON object"),
    ] {
        let res = reqwest::Client::new()
            .get(server.url("/sub/room:3?transport=poll"))
            .bearer_auth(bad)
            .send()
            .await
            .unwrap();
        let message = expect_error(res, 401, "unauthorized", what).await;
        assert!(message.contains(reason), "{what}: {message}");
    }
    // Nothing else broke: a good token still subscribes, and is listed.
    let good = token("erin", Some(json!({"bio": "x".repeat(900)})));
    let _sse = stream(server.addr, "/sub/room:3?transport=sse", Some(&good)).await;
    let listed = presence(server.addr, "room:3").await;
    assert_eq!(who(&listed), [("erin".into(), "sse".into())]);
}

/// Presence is shared through Redis (comet-redis tests/presence.rs), so a Redis broker takes
/// it as the memory broker does.
#[test]
fn presence_is_configured_the_same_with_either_broker() {
    for broker in ["memory", "redis://127.0.0.1:6379"] {
        let env = [
            ("COMET_BROKER".to_owned(), broker.to_owned()),
            (
                "COMET_NAMESPACE".to_owned(),
                "{ room = { presence = true, join_leave = true } }".to_owned(),
            ),
        ];
        let config = Config::load(None, env).unwrap_or_else(|e| panic!("{broker}: {e}"));
        assert_eq!(config.namespace["room"].presence, Some(true));
    }
}

/// `lobby:` tracks presence and pushes joins and leaves.
fn join_leave_config() -> Config {
    let mut config = config();
    config.namespace.insert(
        "lobby".to_owned(),
        NamespaceRules {
            anonymous_subscribe: Some(true),
            presence: Some(true),
            join_leave: Some(true),
            ..NamespaceRules::default()
        },
    );
    config
}

async fn publish(server: &TestServer, channel: &str, data: &str) {
    let res = reqwest::Client::new()
        .post(server.url(&format!("/pub/{channel}")))
        .bearer_auth(token("publisher", None))
        .body(data.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn joins_and_leaves_reach_every_transport_once_and_are_not_history() {
    let server = start_server_with(join_leave_config()).await;
    let mut sse = stream(server.addr, "/sub/lobby:1?transport=sse", None).await;
    let mut ndjson = stream(server.addr, "/sub/lobby:1?transport=stream&prelude=1", None).await;
    let mut iframe = stream(server.addr, "/sub/lobby:1?transport=iframe", None).await;
    let mut watcher = ws_subscribed(server.addr, "/ws", "lobby:1").await;
    let long_poll = {
        let url = server.url("/sub/lobby:1?transport=longpoll&timeout=20");
        tokio::spawn(async move { reqwest::get(url).await.unwrap().json::<Value>().await.unwrap() })
    };
    // The long poll is no member: it has not sent a client id back.
    wait_entries(server.addr, "lobby:1", 4).await;

    // Alice joins over WebSocket, then leaves; a message follows, so every reader has seen all.
    let alice = token("alice", Some(json!({"name": "Alice"})));
    let socket = ws_subscribed(server.addr, &format!("/ws?token={alice}"), "lobby:1").await;
    let join = ws::until(&mut watcher, "alice's join", |f| {
        f["type"] == "join" && f["user"] == "alice"
    })
    .await;
    assert_eq!(
        (join["channel"].as_str(), join["user"].as_str(), &join["info"]),
        (Some("lobby:1"), Some("alice"), &json!({"name": "Alice"}))
    );
    let alice_client = join["client"].as_str().unwrap().to_owned();
    let held = recv_timeout(SOON, long_poll).await.unwrap();
    assert_eq!(held["messages"], json!([]), "a held long poll answers the join: {held}");
    assert_eq!(
        notices(held["presence"].as_array().unwrap()),
        [("join".into(), "alice".into())]
    );
    drop(socket);
    let leave = ws::until(&mut watcher, "the leave", |f| f["type"] == "leave").await;
    assert_eq!(
        (leave["client"].as_str(), leave["user"].as_str()),
        (Some(alice_client.as_str()), Some("alice"))
    );
    publish(&server, "lobby:1", "after").await;
    ws::until(&mut watcher, "the message", |f| f["type"] == "message").await;

    sse.until("the message", |buf| buf.contains("data: after")).await;
    // The SSE watcher came first: it saw the other watchers join too, then Alice.
    let blocks: Vec<&str> = sse
        .buf
        .split("\n\n")
        .filter(|b| b.contains("event: comet.") && b.contains("alice"))
        .collect();
    assert_eq!(blocks.len(), 2, "one join and one leave of Alice's: {:?}", sse.buf);
    assert_eq!(
        sse.buf.matches("event: comet.join").count(),
        4,
        "3 watchers after it, and Alice"
    );
    for (block, name) in blocks.iter().zip(["comet.join", "comet.leave"]) {
        assert!(block.starts_with(&format!("event: {name}\ndata: ")), "{block}");
        assert!(
            !block.contains("id:"),
            "not history: no id, the last event ID stays: {block}"
        );
        let data: Value = serde_json::from_str(block.split_once("data: ").unwrap().1).unwrap();
        assert_eq!(
            (data["user"].as_str(), data["client"].as_str()),
            (Some("alice"), Some(alice_client.as_str()))
        );
        assert!(data.get("type").is_none(), "the event name says it: {data}");
    }
    assert!(sse.buf.contains("id: "), "the message after them has its id");

    ndjson.until("the message", |buf| buf.contains("\"after\"")).await;
    let lines = ndjson.json_lines();
    let alices = |values: &[Value]| -> Vec<(String, String)> {
        notices(values)
            .into_iter()
            .filter(|(_, user)| user == "alice")
            .collect()
    };
    assert_eq!(
        alices(&lines),
        [("join".into(), "alice".into()), ("leave".into(), "alice".into())]
    );
    assert_eq!(
        notices(&lines).len(),
        4,
        "the iframe and WebSocket watchers joined after it: {lines:?}"
    );
    iframe.until("the message", |buf| buf.contains("after")).await;
    let calls = iframe.iframe_calls();
    assert_eq!(
        notices(&calls),
        [
            ("join".into(), "".into()),
            ("join".into(), "alice".into()),
            ("leave".into(), "alice".into())
        ],
        "the WebSocket watcher joined after it, then Alice (a subscriber gets no join of its own)"
    );
    let info: Value = reqwest::get(server.url("/channels/lobby:1"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["history_len"], 1, "joins and leaves are not history: {info}");
}

#[test]
fn join_leave_needs_presence() {
    let env = [(
        "COMET_NAMESPACE".to_owned(),
        "{ room = { join_leave = true } }".to_owned(),
    )];
    let err = Config::load(None, env).unwrap_err().to_string();
    assert!(
        err.contains("namespace \"room\": join_leave = true needs presence = true"),
        "{err}"
    );
}

/// A poll answer, parsed.
async fn poll(server: &TestServer, path: &str) -> Value {
    let res = recv_timeout(SOON, reqwest::get(server.url(path))).await.expect("poll");
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.expect("poll JSON")
}

#[tokio::test]
async fn pollers_are_members_while_their_requests_keep_coming_with_their_client_id() {
    let mut config = join_leave_config();
    config.presence_ttl_secs = 1;
    let server = start_server_with(config).await;
    let mut watcher = ws_subscribed(server.addr, "/ws", "lobby:p").await;
    // The first answer gives an id; the poller is a member once it sends it back (so a one-off
    // poll, a history fetch, leaves no member behind).
    let first = poll(&server, "/sub/lobby:p?transport=poll").await;
    let client = first["client"]
        .as_str()
        .expect("a client id in presence channels")
        .to_owned();
    assert_eq!(
        presence(server.addr, "lobby:p").await["clients"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let second = poll(&server, &format!("/sub/lobby:p?transport=poll&client={client}")).await;
    assert_eq!(second["client"], client.as_str());
    let join = ws::until(&mut watcher, "the poller's join", |f| f["type"] == "join").await;
    assert_eq!(join["client"], client.as_str());
    let listed = presence(server.addr, "lobby:p").await;
    assert_eq!(who(&listed), [("".into(), "poll".into()), ("".into(), "ws".into())]);

    // Coming back with its id keeps it the same member; without, it is another one.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let again = poll(&server, &format!("/sub/lobby:p?transport=poll&client={client}")).await;
        assert_eq!(again["client"], client.as_str());
    }
    assert_eq!(
        presence(server.addr, "lobby:p").await["clients"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let other = poll(&server, "/sub/lobby:p?transport=poll&client=made-up-7").await;
    assert_ne!(other["client"], client.as_str(), "an id it was not given is not taken");
    assert_ne!(other["client"], "made-up-7");
    assert_eq!(
        presence(server.addr, "lobby:p").await["clients"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // No answer outside presence channels carries one.
    assert!(
        poll(&server, "/sub/plain:p?transport=poll")
            .await
            .get("client")
            .is_none()
    );

    // Silent for longer than presence_ttl_secs: gone, with its leave.
    let leave = ws::until(&mut watcher, "the poller's leave", |f| {
        f["type"] == "leave" && f["client"] == client.as_str()
    })
    .await;
    assert_eq!(leave["user"], "");
    wait_entries(server.addr, "lobby:p", 1).await;
}

/// A subscription refused before it starts (a bad iframe callback) was never a member: no join
/// or leave reaches the others.
#[tokio::test]
async fn a_refused_subscription_is_never_a_member() {
    let server = start_server_with(join_leave_config()).await;
    let mut watcher = ws_subscribed(server.addr, "/ws", "lobby:r").await;
    let res = reqwest::get(server.url("/sub/lobby:r?transport=iframe&callback=1bad"))
        .await
        .unwrap();
    expect_error(res, 400, "bad_callback", "a bad callback").await;
    publish(&server, "lobby:r", "next").await;
    let frame = ws::until(&mut watcher, "a frame", |f| f["type"] != "subscribed").await;
    assert_eq!(
        (frame["type"].as_str(), frame["data"].as_str()),
        (Some("message"), Some("next")),
        "{frame}"
    );
    assert_eq!(
        presence(server.addr, "lobby:r").await["clients"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
