//! The admin console (docs/protocol.md "Admin console") on one node: its page served from the
//! binary without the key and `404` while `admin_api_key` is unset; its data routes behind the
//! key (this node's numbers, a publish as the back-end, a channel's live tail and presence);
//! the channel listing's `info=true`; and `internal_listen` serving the console there only.
//! (Every node of a Redis cluster in one list: comet-redis tests/server_api.rs.)

use std::collections::BTreeMap;
use std::time::Duration;

use comet_server::Config;
use comet_server::auth::NamespaceRules;
use comet_test_support::jwt::{SECRET, token};
use comet_test_support::{
    BodyReader, SOON, TestServer, expect_error, recv_timeout, start_server_with, unlimited, wait_subscribers,
};
use serde_json::Value;

const KEY: &str = "admin-key-for-the-console-tests";
const PUBLISHER: &str = "publisher-key-of-the-console-tests";

/// Tokens verified, so nothing is open to anonymous callers but `room:` (presence on) and
/// `plain:` (presence off), which anonymous clients may subscribe to.
fn config() -> Config {
    let open = |presence: bool| NamespaceRules {
        anonymous_subscribe: Some(true),
        presence: Some(presence),
        ..NamespaceRules::default()
    };
    Config {
        jwt_secret: SECRET.into(),
        admin_api_key: KEY.into(),
        publish_api_key: PUBLISHER.into(),
        namespace: BTreeMap::from([("room".to_owned(), open(true)), ("plain".to_owned(), open(false))]),
        ..unlimited()
    }
}

fn get(server: &TestServer, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new().get(server.url(path)).bearer_auth(KEY)
}

fn post(server: &TestServer, path: &str, body: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(server.url(path))
        .bearer_auth(KEY)
        .body(body.to_owned())
}

/// Publishes as the back-end (the publish API key) and returns the cursor.
async fn publish(server: &TestServer, channel: &str, data: &str) -> String {
    let req = reqwest::Client::new()
        .post(server.url(&format!("/pub/{channel}")))
        .bearer_auth(PUBLISHER)
        .body(data.to_owned());
    json(req, 201).await["id"].as_str().unwrap().to_owned()
}

async fn send(req: reqwest::RequestBuilder) -> reqwest::Response {
    recv_timeout(SOON, req.send()).await.expect("console request")
}

async fn json(req: reqwest::RequestBuilder, status: u16) -> Value {
    let res = send(req).await;
    assert_eq!(res.status(), status);
    res.json().await.expect("JSON")
}

#[tokio::test]
async fn the_page_is_served_without_the_key_and_its_data_only_with_it() {
    let server = start_server_with(config()).await;
    for (path, kind) in [
        ("/admin", "text/html"),
        ("/admin/", "text/html"),
        ("/admin/admin.js", "text/javascript"),
        ("/admin/admin.css", "text/css"),
    ] {
        let res = send(reqwest::Client::new().get(server.url(path))).await;
        assert_eq!(res.status(), 200, "{path}");
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        if kind == "text/html" {
            let csp = res.headers()["content-security-policy"].to_str().unwrap().to_owned();
            assert!(
                csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
                "{csp}"
            );
            let page = res.text().await.unwrap();
            assert!(
                page.contains("/admin/admin.js") && !page.contains(KEY),
                "no secret in the page"
            );
            assert!(
                !page.contains("http://") && !page.contains("https://"),
                "nothing from another origin"
            );
        }
    }
    for (method, path) in [
        (reqwest::Method::GET, "/admin/nodes"),
        (reqwest::Method::POST, "/admin/channels/room:a/publish"),
        (reqwest::Method::GET, "/admin/channels/room:a/tail"),
        (reqwest::Method::GET, "/admin/channels/room:a/presence"),
    ] {
        for auth in [None, Some("Bearer wrong-key-of-the-same-size!!"), Some("Basic eA==")] {
            let mut req = reqwest::Client::new().request(method.clone(), server.url(path));
            if let Some(auth) = auth {
                req = req.header("authorization", auth);
            }
            let res = send(req).await;
            assert_eq!(res.headers()["www-authenticate"], "Bearer", "{path}");
            expect_error(res, 401, "unauthorized", path).await;
        }
    }
}

#[tokio::test]
async fn without_an_admin_key_the_console_is_not_found() {
    let server = start_server_with(Config {
        admin_api_key: "".into(),
        ..config()
    })
    .await;
    for path in ["/admin", "/admin/", "/admin/admin.js", "/admin/admin.css"] {
        let res = send(reqwest::Client::new().get(server.url(path))).await;
        let message = expect_error(res, 404, "not_found", path).await;
        assert!(message.contains("admin_api_key"), "{path}: {message}");
    }
    for path in ["/admin/nodes", "/admin/channels/room:a/presence"] {
        expect_error(send(get(&server, path)).await, 404, "not_found", path).await;
    }
    let res = send(post(&server, "/admin/channels/room:a/publish", "x")).await;
    expect_error(res, 404, "not_found", "publish").await;
}

#[tokio::test]
async fn the_node_reports_its_numbers_every_two_seconds_for_fifteen_minutes() {
    let server = start_server_with(config()).await;
    let body = json(get(&server, "/admin/nodes"), 200).await;
    let me = body["node"].as_str().expect("this node's id").to_owned();
    let nodes = body["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "the memory broker has no other node: {body}");
    let node = &nodes[0];
    assert_eq!(node["node"], me);
    assert_eq!(node["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(node["live"], true);
    assert!(node["uptime_secs"].as_u64().unwrap() < 60);
    // The first sample is taken as the server starts.
    let deadline = tokio::time::Instant::now() + SOON;
    let first = loop {
        let body = json(get(&server, "/admin/nodes"), 200).await;
        if let Some(sample) = body["nodes"][0]["samples"].as_array().unwrap().last() {
            break sample.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no first sample: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for field in [
        "subscribers",
        "published",
        "delivered",
        "gaps",
        "lagged",
        "limit_refusals",
    ] {
        assert!(first[field].is_number(), "{field}: {first}");
    }
    assert!(first["connections"]["sse"].is_number() && first["connections"].get("poll").is_none());

    // An SSE subscriber and three messages show in the next sample.
    let sse = send(reqwest::Client::new().get(server.url("/sub/room:a?transport=sse"))).await;
    assert_eq!(sse.status(), 200);
    let mut sse = BodyReader::new(sse);
    for i in 0..3 {
        publish(&server, "room:a", &format!("m{i}")).await;
    }
    sse.until("the third message", |b| b.contains("m2")).await;
    let since = first["time"].as_u64().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let newer = loop {
        let body = json(get(&server, &format!("/admin/nodes?since={since}")), 200).await;
        let samples = body["nodes"][0]["samples"].as_array().unwrap().clone();
        assert!(
            samples.iter().all(|s| s["time"].as_u64().unwrap() > since),
            "only newer samples"
        );
        if let Some(s) = samples.last().filter(|s| s["published"].as_u64() >= Some(3)) {
            break s.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no sample saw the publishes: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(newer["connections"]["sse"], 1, "{newer}");
    assert!(newer["subscribers"].as_i64() >= Some(1));
    assert!(newer["delivered"].as_u64() >= Some(3), "{newer}");

    let res = send(get(&server, "/admin/nodes?since=yesterday")).await;
    let message = expect_error(res, 400, "bad_request", "since").await;
    assert!(message.contains("milliseconds"), "{message}");
}

#[tokio::test]
async fn the_console_publishes_as_the_back_end_and_says_what_is_wrong() {
    let server = start_server_with(config()).await;
    // Anonymous callers may not publish here, nor subscribe to `vault:`.
    let res = send(reqwest::Client::new().post(server.url("/pub/vault:a")).body("x")).await;
    assert_eq!(res.status(), 401);
    let body = json(
        post(&server, "/admin/channels/vault:a/publish?event=note", "hello"),
        201,
    )
    .await;
    assert_eq!(body["channel"], "vault:a");
    let id = body["id"].as_str().unwrap().to_owned();
    let history = json(get(&server, "/channels/vault:a/history"), 200).await;
    assert_eq!(history["messages"][0]["data"], "hello");
    assert_eq!(history["messages"][0]["event"], "note");
    assert_eq!(history["messages"][0]["id"], id);

    let res = send(post(&server, "/admin/channels/bad%20name/publish", "x")).await;
    expect_error(res, 400, "bad_channel", "a bad channel").await;
    let res = send(post(&server, "/admin/channels/vault:a/publish?event=comet.x", "x")).await;
    expect_error(res, 400, "bad_event", "a reserved event").await;
    let big = "x".repeat(comet_server::Config::default().max_message_size + 1);
    let res = send(post(&server, "/admin/channels/vault:a/publish", &big)).await;
    expect_error(res, 413, "too_large", "a message over the limit").await;
    let res = send(
        reqwest::Client::new()
            .post(server.url("/admin/channels/vault:a/publish"))
            .bearer_auth(KEY)
            .body(vec![0xff, 0xfe]),
    )
    .await;
    assert_eq!(res.status(), 400, "not UTF-8");
}

#[tokio::test]
async fn the_live_tail_streams_a_channel_that_needs_a_token() {
    let server = start_server_with(config()).await;
    let before = publish(&server, "vault:t", "before").await;
    // Anonymous subscribers are refused here; the tail is not.
    let res = send(reqwest::Client::new().get(server.url("/sub/vault:t?transport=stream"))).await;
    assert_eq!(res.status(), 401);
    let res = send(get(&server, "/admin/channels/vault:t/tail")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let mut live = BodyReader::new(res);
    wait_subscribers(&server, "vault:t", 1, "the tail is a subscriber").await;
    json(
        post(&server, "/admin/channels/vault:t/publish", "from the console"),
        201,
    )
    .await;
    publish(&server, "vault:t", "from the back-end").await;
    live.until("both messages", |b| b.contains("from the back-end")).await;
    let lines: Vec<Value> = live
        .buf
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let data: Vec<&str> = lines.iter().filter_map(|l| l["data"].as_str()).collect();
    assert_eq!(
        data,
        ["from the console", "from the back-end"],
        "live: nothing from before"
    );

    // From a cursor: what followed it.
    let res = send(get(&server, &format!("/admin/channels/vault:t/tail?since={before}"))).await;
    let mut resumed = BodyReader::new(res);
    resumed.until("the replay", |b| b.contains("from the back-end")).await;
    assert!(!resumed.buf.contains("\"before\"") && resumed.buf.contains("from the console"));

    let res = send(get(&server, "/admin/channels/vault:t/tail?since=not-a-cursor")).await;
    expect_error(res, 400, "bad_cursor", "a bad cursor").await;
    let res = send(get(&server, "/admin/channels/a,b/tail")).await;
    expect_error(res, 400, "bad_channel", "a list is not a channel").await;
}

#[tokio::test]
async fn the_channel_list_has_history_and_last_message_time_on_request() {
    let server = start_server_with(config()).await;
    let sub = send(reqwest::Client::new().get(server.url("/sub/plain:b?transport=sse"))).await;
    let _sub = BodyReader::new(sub);
    let _tail = BodyReader::new(send(get(&server, "/admin/channels/room:a/tail")).await);
    wait_subscribers(&server, "plain:b", 1, "the SSE subscriber").await;
    wait_subscribers(&server, "room:a", 1, "the tail").await;
    let published_at = comet_core::now_millis();
    publish(&server, "plain:b", "one").await;
    let last = publish(&server, "plain:b", "two").await;

    let plain = json(get(&server, "/channels"), 200).await;
    assert_eq!(
        plain["channels"][0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["channel", "subscribers"]
    );
    let body = json(get(&server, "/channels?info=true"), 200).await;
    let rows = body["channels"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{body}");
    assert_eq!(rows[0]["channel"], "plain:b");
    assert_eq!(rows[0]["history_len"], 2);
    assert_eq!(rows[0]["last_id"], last.as_str());
    let time = rows[0]["last_time"].as_u64().expect("a time");
    assert!(time >= published_at && time <= comet_core::now_millis(), "{time}");
    assert_eq!(rows[1]["channel"], "room:a");
    assert_eq!(rows[1]["history_len"], 0);
    assert!(rows[1]["last_id"].is_null() && rows[1]["last_time"].is_null(), "{body}");
    let page = json(get(&server, "/channels?info=1&prefix=room"), 200).await;
    assert_eq!(page["channels"].as_array().unwrap().len(), 1);

    let res = send(get(&server, "/channels?info=perhaps")).await;
    let message = expect_error(res, 400, "bad_request", "info").await;
    assert!(message.contains("true or false"), "{message}");
}

#[tokio::test]
async fn presence_is_listed_with_the_key_where_it_is_on() {
    let server = start_server_with(config()).await;
    let bearer = token("alice", 600, &["*"], &[]);
    let res = send(
        reqwest::Client::new()
            .get(server.url("/sub/room:p?transport=sse"))
            .bearer_auth(&bearer),
    )
    .await;
    let _alice = BodyReader::new(res);
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let body = json(get(&server, "/admin/channels/room:p/presence"), 200).await;
        let clients = body["clients"].as_array().unwrap();
        if clients.len() == 1 {
            assert_eq!(clients[0]["user"], "alice");
            assert_eq!(clients[0]["transport"], "sse");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "alice never showed: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let res = send(get(&server, "/admin/channels/plain:p/presence")).await;
    expect_error(res, 400, "presence_off", "a namespace without presence").await;
    let res = send(get(&server, "/admin/channels/bad%20name/presence")).await;
    expect_error(res, 400, "bad_channel", "a bad channel").await;
}

#[tokio::test]
async fn with_internal_listen_the_console_is_served_there_only() {
    let server = start_server_with(Config {
        internal_listen: "127.0.0.1:0".to_owned(),
        ..config()
    })
    .await;
    let internal = server.internal_addr().await; // the server task binds it as it starts
    for path in ["/admin", "/admin/admin.js", "/admin/nodes"] {
        let res = send(get(&server, path)).await;
        expect_error(res, 404, "not_found", path).await;
        let res = send(
            reqwest::Client::new()
                .get(format!("http://{internal}{path}"))
                .bearer_auth(KEY),
        )
        .await;
        assert_eq!(res.status(), 200, "{path} on the internal listener");
    }
    let res = send(
        reqwest::Client::new()
            .post(format!("http://{internal}/admin/channels/room:i/publish"))
            .bearer_auth(KEY)
            .body("inside"),
    )
    .await;
    assert_eq!(res.status(), 201);
}
