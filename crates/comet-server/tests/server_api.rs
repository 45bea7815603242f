//! The server API (docs/protocol.md "Server API") on one node: its key, a user disconnected on
//! every transport, a user unsubscribed from one channel, the active channels listed and a
//! channel's history paged both ways, and `internal_listen` keeping the operators' routes off
//! the public listener. (Across nodes on Redis: comet-redis tests/server_api.rs.)

use std::time::Duration;

use comet_server::Config;
use comet_test_support::jwt::{SECRET, token};
use comet_test_support::presence::stream;
use comet_test_support::ws;
use comet_test_support::{SOON, TestServer, expect_error, recv_timeout, start_server_with, unlimited};
use serde_json::{Value, json};

const KEY: &str = "admin-key-for-the-server-api-tests";

fn config() -> Config {
    Config {
        jwt_secret: SECRET.into(),
        admin_api_key: KEY.into(),
        publish_api_key: "publisher-key-of-the-server-api-tests".into(),
        ..unlimited()
    }
}

fn alice() -> String {
    token("alice", 600, &["*"], &[])
}

async fn admin(server: &TestServer, method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .request(method, server.url(path))
        .bearer_auth(KEY);
    if let Some(body) = body {
        req = req.json(&body);
    }
    recv_timeout(SOON, req.send()).await.expect("server API request")
}

async fn publish(server: &TestServer, channel: &str, data: &str) -> String {
    let res = reqwest::Client::new()
        .post(server.url(&format!("/pub/{channel}")))
        .bearer_auth("publisher-key-of-the-server-api-tests")
        .body(data.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_server_api_needs_its_key_and_the_old_admin_mode_needs_it_once_set() {
    let server = start_server_with(Config {
        admin_api: true,
        ..config()
    })
    .await;
    for (path, method) in [
        ("/admin/users/alice/disconnect", reqwest::Method::POST),
        ("/admin/disconnect", reqwest::Method::POST),
        ("/channels", reqwest::Method::GET),
        ("/channels/a/history", reqwest::Method::GET),
    ] {
        for auth in [None, Some("Bearer wrong"), Some("Basic eA==")] {
            let mut req = reqwest::Client::new().request(method.clone(), server.url(path));
            if let Some(auth) = auth {
                req = req.header("authorization", auth);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.headers()["www-authenticate"], "Bearer", "{path}");
            expect_error(res, 401, "unauthorized", path).await;
        }
    }
    let res = admin(&server, reqwest::Method::POST, "/admin/disconnect", None).await;
    assert_eq!(res.status(), 202);
    let res = admin(
        &server,
        reqwest::Method::POST,
        "/admin/users/alice/disconnect",
        Some(json!({"x": 1})),
    )
    .await;
    expect_error(res, 400, "bad_body", "an unknown field").await;

    // Without a key, the older unauthenticated mode; no server API.
    let old = start_server_with(Config {
        admin_api: true,
        ..unlimited()
    })
    .await;
    let res = reqwest::Client::new()
        .post(old.url("/admin/disconnect"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let res = reqwest::get(old.url("/channels")).await.unwrap();
    assert_eq!(res.status(), 404, "no server API without a key");
}

#[tokio::test]
async fn a_user_is_disconnected_on_every_transport_and_told_whether_to_reconnect() {
    let server = start_server_with(config()).await;
    let bearer = alice();
    let mut sse = stream(server.addr, "/sub/room:1?transport=sse", Some(&bearer)).await;
    let mut ndjson = stream(server.addr, "/sub/room:1?transport=stream&prelude=1", Some(&bearer)).await;
    let mut iframe = stream(server.addr, "/sub/room:1?transport=iframe", Some(&bearer)).await;
    let mut socket = ws::connect(&server.ws_url(&format!("/sub/room:1?token={bearer}"))).await;
    let long_poll = {
        let url = server.url(&format!("/sub/room:1?transport=longpoll&timeout=20&token={bearer}"));
        tokio::spawn(async move { reqwest::get(url).await.unwrap().json::<Value>().await.unwrap() })
    };
    let bob = token("bob", 600, &["*"], &[]);
    let mut bystander = stream(server.addr, "/sub/room:1?transport=sse", Some(&bob)).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // the long poll is held

    let res = admin(
        &server,
        reqwest::Method::POST,
        "/admin/users/alice/disconnect",
        Some(json!({"reconnect": false})),
    )
    .await;
    assert_eq!(res.status(), 202);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"user": "alice", "connections": 5})
    );

    sse.read_to_end().await;
    assert!(
        sse.buf
            .ends_with("event: comet.disconnect\ndata: {\"reconnect\":false}\n\n"),
        "{:?}",
        sse.buf
    );
    ndjson.read_to_end().await;
    assert_eq!(
        ndjson.json_lines().last().unwrap(),
        &json!({"type": "disconnect", "reconnect": false})
    );
    iframe.read_to_end().await;
    assert_eq!(
        iframe.iframe_calls().last().unwrap(),
        &json!({"type": "disconnect", "reconnect": false})
    );
    let frame = ws::until(&mut socket, "the disconnect", |f| f["type"] == "disconnect").await;
    assert_eq!(frame["reconnect"], false);
    let close = ws::next_json(&mut socket).await;
    assert_eq!(close["close"], 4010, "{close}");
    let held = recv_timeout(SOON, long_poll).await.unwrap();
    assert_eq!(held["disconnect"], json!({"reconnect": false}), "{held}");

    // Bob's stream goes on.
    publish(&server, "room:1", "after").await;
    bystander.until("the message", |b| b.contains("data: after")).await;
    let res = admin(&server, reqwest::Method::POST, "/admin/users/alice/disconnect", None).await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["connections"],
        0,
        "nothing of alice's is left"
    );
}

#[tokio::test]
async fn a_user_is_unsubscribed_from_one_channel_and_keeps_the_others() {
    let server = start_server_with(config()).await;
    let bearer = alice();
    let mut socket = ws::connect(&server.ws_url(&format!("/sub/room:1,room:2?token={bearer}"))).await;
    let mut sse = stream(server.addr, "/sub/room:1,room:2?transport=sse", Some(&bearer)).await;
    let mut only = stream(server.addr, "/sub/room:1?transport=stream&prelude=1", Some(&bearer)).await;
    let res = admin(
        &server,
        reqwest::Method::POST,
        "/admin/users/alice/unsubscribe/room:1",
        None,
    )
    .await;
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.unwrap()["connections"], 3);
    let frame = ws::until(&mut socket, "unsubscribed", |f| f["type"] == "unsubscribed").await;
    assert_eq!(frame["channel"], "room:1");
    only.read_to_end().await;
    assert_eq!(
        only.json_lines().last().unwrap(),
        &json!({"type": "unsubscribed", "channel": "room:1"}),
        "a stream of that channel alone ends"
    );
    publish(&server, "room:1", "one").await;
    publish(&server, "room:2", "two").await;
    let message = ws::until(&mut socket, "a message", |f| f["type"] == "message").await;
    assert_eq!(
        (&message["channel"], &message["data"]),
        (&json!("room:2"), &json!("two"))
    );
    // A stream says so and ends (with its presence entries): the client comes back without it.
    sse.read_to_end().await;
    assert!(
        sse.buf
            .ends_with("event: comet.unsubscribed\ndata: {\"channel\":\"room:1\"}\n\n"),
        "{}",
        sse.buf
    );
    // A held long poll of the channel is answered with it; one of another channel goes on.
    let held =
        |path: String| tokio::spawn(async move { reqwest::get(path).await.unwrap().json::<Value>().await.unwrap() });
    let of_room_3 = held(server.url(&format!("/sub/room:3?transport=longpoll&timeout=20&token={bearer}")));
    let of_room_4 = held(server.url(&format!("/sub/room:4?transport=longpoll&timeout=2&token={bearer}")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let res = admin(
        &server,
        reqwest::Method::POST,
        "/admin/users/alice/unsubscribe/room:3",
        None,
    )
    .await;
    assert_eq!(res.status(), 202);
    let answer = recv_timeout(SOON, of_room_3).await.unwrap();
    assert_eq!(answer["unsubscribed"], json!(["room:3"]), "{answer}");
    let answer = recv_timeout(SOON, of_room_4).await.unwrap();
    assert!(answer.get("unsubscribed").is_none(), "held to its timeout: {answer}");
    let res = admin(
        &server,
        reqwest::Method::POST,
        "/admin/users/alice/unsubscribe/bad%20name",
        None,
    )
    .await;
    expect_error(res, 400, "bad_channel", "a bad channel").await;
}

async fn page(server: &TestServer, query: &str) -> Value {
    let res = admin(
        server,
        reqwest::Method::GET,
        &format!("/channels/log:1/history?{query}"),
        None,
    )
    .await;
    assert_eq!(res.status(), 200, "{query}");
    res.json().await.unwrap()
}

fn data(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn history_is_paged_both_ways() {
    let server = start_server_with(config()).await;
    for i in 0..25 {
        publish(&server, "log:1", &format!("m{i}")).await;
    }
    let first = page(&server, "limit=10").await;
    assert_eq!(data(&first), (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert_eq!(first["messages"][0]["channel"], "log:1");
    let second = page(&server, &format!("limit=10&since={}", first["next"].as_str().unwrap())).await;
    assert_eq!(data(&second)[0], "m10");
    let third = page(&server, &format!("limit=10&since={}", second["next"].as_str().unwrap())).await;
    assert_eq!(data(&third), (20..25).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert_eq!(third["next"], Value::Null, "the last page");
    assert!(third.get("gap").is_none());

    let newest = page(&server, "limit=10&reverse=true").await;
    assert_eq!(
        data(&newest),
        (15..25).rev().map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    let older = page(
        &server,
        &format!("limit=10&reverse=true&since={}", newest["next"].as_str().unwrap()),
    )
    .await;
    assert_eq!(data(&older), (5..15).rev().map(|i| format!("m{i}")).collect::<Vec<_>>());
    let oldest = page(
        &server,
        &format!("limit=10&reverse=true&since={}", older["next"].as_str().unwrap()),
    )
    .await;
    assert_eq!(data(&oldest), ["m4", "m3", "m2", "m1", "m0"]);
    assert_eq!(oldest["next"], Value::Null);

    assert_eq!(data(&page(&server, "").await).len(), 25, "100 by default");
    let gap = page(&server, "since=ffff-3").await;
    assert_eq!(gap["gap"], true, "a cursor of another epoch: {gap}");
    assert_eq!(data(&gap).len(), 25, "then what history holds");
    let res = admin(&server, reqwest::Method::GET, "/channels/log:1/history?limit=0", None).await;
    expect_error(res, 400, "bad_limit", "limit=0").await;
    let res = admin(
        &server,
        reqwest::Method::GET,
        "/channels/log:1/history?since=nonsense",
        None,
    )
    .await;
    expect_error(res, 400, "bad_cursor", "a bad cursor").await;
    let capped = start_server_with(Config {
        max_history_page: 3,
        ..config()
    })
    .await;
    for i in 0..5 {
        publish(&capped, "log:1", &format!("m{i}")).await;
    }
    assert_eq!(
        data(&page(&capped, "limit=50").await).len(),
        3,
        "capped by max_history_page"
    );
}

#[tokio::test]
async fn active_channels_are_listed_with_their_subscribers_in_pages() {
    let server = start_server_with(config()).await;
    let bearer = alice();
    let _a1 = stream(server.addr, "/sub/a:1?transport=sse", Some(&bearer)).await;
    let _a1b = stream(server.addr, "/sub/a:1?transport=stream&prelude=1", Some(&bearer)).await;
    let _a2 = stream(server.addr, "/sub/a:2?transport=sse", Some(&bearer)).await;
    let _b1 = stream(server.addr, "/sub/b:1?transport=sse", Some(&bearer)).await;
    publish(&server, "quiet:1", "nobody listens").await;
    let list = |query: &'static str| {
        let server = &server;
        async move {
            let res = admin(server, reqwest::Method::GET, &format!("/channels?{query}"), None).await;
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(
        list("").await,
        json!({"channels": [
            {"channel": "a:1", "subscribers": 2},
            {"channel": "a:2", "subscribers": 1},
            {"channel": "b:1", "subscribers": 1},
        ], "next": null})
    );
    assert_eq!(list("prefix=a:").await["channels"].as_array().unwrap().len(), 2);
    let first = list("limit=2").await;
    assert_eq!(first["next"], "a:2");
    assert_eq!(
        list("limit=2&after=a:2").await["channels"],
        json!([{"channel": "b:1", "subscribers": 1}])
    );
}

#[tokio::test]
async fn internal_listen_alone_serves_the_operators_routes() {
    let server = start_server_with(Config {
        internal_listen: "127.0.0.1:0".to_owned(),
        ..config()
    })
    .await;
    let internal = server.internal_addr().await; // the server task binds it as it starts
    for path in ["/metrics", "/channels/a", "/channels", "/admin/disconnect"] {
        let res = reqwest::Client::new()
            .get(server.url(path))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{path} is not public");
    }
    let res = reqwest::get(format!("http://{internal}/metrics")).await.unwrap();
    assert_eq!(res.status(), 200);
    let res = reqwest::get(format!("http://{internal}/channels/a")).await.unwrap();
    assert_eq!(res.status(), 200);
    let res = reqwest::Client::new()
        .get(format!("http://{internal}/channels"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the server API, with its key");
    // The client surface stays public, presence included (comet.js asks it).
    let res = reqwest::get(server.url("/channels/a/presence")).await.unwrap();
    assert_ne!(res.status(), 404);
    let bad = Config {
        internal_listen: "not an address".to_owned(),
        ..config()
    };
    assert!(bad.validate().unwrap_err().to_string().contains("internal_listen"));
}
