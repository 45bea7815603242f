//! Back-end hooks (docs/protocol.md "Hooks") against a real HTTP back-end on 127.0.0.1 (an axum
//! app in this file): a cookie session accepted on every transport and the user it names seen
//! by the subscribe and publish hooks; refusals with the back-end's status and message; a
//! publish rewritten; a hook down, slow or garbled failing closed; the publish API key skipping
//! the hooks; polling answers kept for `hook_cache_secs`; cookies of other sites not forwarded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use comet_server::Config;
use comet_server::auth::NamespaceRules;
use comet_test_support::jwt::SECRET;
use comet_test_support::ws::{self, Ws};
use comet_test_support::{BodyReader, SOON, TestServer, expect_error, recv_timeout, start_server_with, unlimited};
use serde_json::{Value, json};

const API_KEY: &str = "publish-api-key-for-hook-tests";

/// The application's back-end: every call it got, `(hook, body)`, and a delay before answers.
#[derive(Clone, Default)]
struct Backend {
    calls: Arc<Mutex<Vec<(String, Value)>>>,
    delay: Arc<Mutex<Duration>>,
}

impl Backend {
    fn calls(&self, hook: &str) -> Vec<Value> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(h, _)| h == hook)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

/// The back-end's rules: the cookie `session=alice` (or `bob`) is a session; `session=brief`
/// one that ends in 2 s; `session=garbage` makes it answer something that is not JSON. Rooms
/// `secret:` are refused, `ro:` is read-only, and the data `rewrite me` is rewritten.
async fn hook(State(backend): State<Backend>, Path(which): Path<String>, Json(body): Json<Value>) -> Response {
    backend.calls.lock().unwrap().push((which.clone(), body.clone()));
    let delay = *backend.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let answer = match which.as_str() {
        "connect" => {
            let cookie = body["headers"]["Cookie"].as_str().unwrap_or("");
            let session = cookie.split("; ").find_map(|c| c.strip_prefix("session="));
            match session {
                Some("alice") => json!({"result": {"user": "alice", "info": {"name": "Alice"}}}),
                Some("bob") => json!({"result": {"user": "bob"}}),
                Some("brief") => {
                    let exp = jsonwebtoken::get_current_timestamp() + 2;
                    json!({"result": {"user": "carol", "expire_at": exp}})
                }
                Some("garbage") => return "<html>oops</html>".into_response(),
                _ => json!({"error": {"code": 401, "message": "no session"}}),
            }
        }
        "subscribe" if body["channel"].as_str().is_some_and(|c| c.starts_with("secret:")) => {
            json!({"error": {"code": 403, "message": "not your room"}})
        }
        "publish" if body["channel"].as_str().is_some_and(|c| c.starts_with("ro:")) => {
            json!({"error": {"code": 403, "message": "read-only"}})
        }
        "publish" if body["data"] == "rewrite me" => json!({"result": {"data": "rewritten"}}),
        _ => json!({"result": {}}),
    };
    Json(answer).into_response()
}

/// The back-end on a free port: its base URL (`http://…/hooks`).
async fn backend() -> (String, Backend) {
    let backend = Backend::default();
    let app = axum::Router::new()
        .route("/hooks/{which}", axum::routing::post(hook))
        .with_state(backend.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, backend)
}

/// Tokens verified (so namespaces are closed to anonymous clients: only the hooks let them
/// in), every hook on; `open:` skips the subscribe hook and is open to anonymous subscribers.
fn config(base: &str) -> Config {
    Config {
        jwt_secret: SECRET.into(),
        publish_api_key: API_KEY.into(),
        connect_hook_url: format!("{base}/connect"),
        subscribe_hook_url: format!("{base}/subscribe"),
        publish_hook_url: format!("{base}/publish"),
        namespace: BTreeMap::from([(
            "open".to_owned(),
            NamespaceRules {
                anonymous_subscribe: Some(true),
                subscribe_hook: Some(false),
                ..NamespaceRules::default()
            },
        )]),
        ..unlimited()
    }
}

async fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(server.url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    recv_timeout(SOON, req.send()).await.expect("request")
}

async fn publish(server: &TestServer, channel: &str, data: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(server.url(&format!("/pub/{channel}")))
        .body(data.to_owned());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    recv_timeout(SOON, req.send()).await.expect("publish")
}

const ALICE: [(&str, &str); 1] = [("cookie", "theme=dark; session=alice")];

async fn ws_subscribed(server: &TestServer, headers: &[(&str, &str)], channel: &str) -> Ws {
    let mut socket = ws::connect_with(&server.ws_url("/ws"), headers).await;
    ws::send_json(&mut socket, &json!({"type": "subscribe", "channel": channel})).await;
    ws::until(&mut socket, "subscribed", |f| f["type"] == "subscribed").await;
    socket
}

#[tokio::test]
async fn a_cookie_session_is_accepted_on_every_transport_and_named_to_the_other_hooks() {
    let (base, backend) = backend().await;
    let server = start_server_with(config(&base)).await;
    for transport in ["sse", "stream", "iframe", "poll", "longpoll"] {
        let res = get(&server, &format!("/sub/room:1?transport={transport}&timeout=1"), &ALICE).await;
        assert_eq!(res.status(), 200, "{transport}: {:?}", res.text().await);
        let connect = backend.calls("connect").pop().unwrap();
        assert_eq!(connect["transport"], transport);
        assert_eq!(connect["headers"]["Cookie"], "theme=dark; session=alice");
        assert!(
            connect["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{connect}"
        );
        assert!(connect.get("user").is_none(), "no token named a user: {connect}");
        let subscribe = backend.calls("subscribe").pop().unwrap();
        assert_eq!(
            (&subscribe["user"], &subscribe["channel"], &subscribe["transport"]),
            (&json!("alice"), &json!("room:1"), &json!(transport))
        );
        assert_eq!(subscribe["client"], connect["client"], "one client id for both hooks");
    }

    // WebSocket: one connect per connection, a subscribe per channel, a publish per message.
    let connects = backend.calls("connect").len();
    let mut watcher = get(&server, "/sub/room:1?transport=sse", &ALICE).await;
    assert_eq!(watcher.status(), 200);
    let mut socket = ws_subscribed(&server, &ALICE, "room:1").await;
    ws::send_json(&mut socket, &json!({"type": "subscribe", "channel": "room:2"})).await;
    ws::until(&mut socket, "subscribed", |f| f["type"] == "subscribed").await;
    ws::send_json(
        &mut socket,
        &json!({"type": "publish", "channel": "room:1", "data": "rewrite me", "ref": 1}),
    )
    .await;
    let ack = ws::until(&mut socket, "the ack", |f| f["type"] == "ack").await;
    assert_eq!(ack["ref"], 1);
    assert_eq!(
        backend.calls("connect").len(),
        connects + 2,
        "the SSE request and the WebSocket"
    );
    let published = backend.calls("publish").pop().unwrap();
    assert_eq!(
        (&published["user"], &published["channel"], &published["data"]),
        (&json!("alice"), &json!("room:1"), &json!("rewrite me"))
    );
    let ws_subscribes: Vec<Value> = backend
        .calls("subscribe")
        .into_iter()
        .filter(|s| s["transport"] == "ws")
        .collect();
    assert_eq!(ws_subscribes.len(), 2);
    assert_eq!(
        ws_subscribes[0]["client"], published["client"],
        "the session's one client id"
    );

    // An HTTP publish goes through connect and publish too, and is rewritten as well.
    let res = publish(&server, "room:1", "rewrite me", &ALICE).await;
    assert_eq!(res.status(), 201);
    assert_eq!(backend.calls("connect").last().unwrap()["transport"], "http");
    let mut reader = BodyReader::new(watcher);
    reader
        .until("both messages", |b| b.matches("data: rewritten").count() == 2)
        .await;
    assert!(
        !reader.buf.contains("rewrite me"),
        "only the back-end's data: {}",
        reader.buf
    );
    watcher = get(&server, "/channels/room:1", &[]).await;
    assert_eq!(watcher.status(), 200);
}

#[tokio::test]
async fn refusals_carry_the_back_ends_status_and_message() {
    let (base, _backend) = backend().await;
    let server = start_server_with(config(&base)).await;
    let mut bystander = ws_subscribed(&server, &ALICE, "room:b").await;

    let res = get(&server, "/sub/room:1?transport=sse", &[]).await;
    let message = expect_error(res, 401, "unauthorized", "no session cookie").await;
    assert_eq!(message, "no session");
    let res = get(&server, "/sub/secret:1?transport=poll", &ALICE).await;
    assert_eq!(
        expect_error(res, 403, "forbidden", "a refused room").await,
        "not your room"
    );
    let res = publish(&server, "ro:1", "hello", &ALICE).await;
    assert_eq!(
        expect_error(res, 403, "forbidden", "a read-only room").await,
        "read-only"
    );
    let res = publish(&server, "room:1", "hello", &[]).await;
    expect_error(res, 401, "unauthorized", "a publish without a session").await;

    // Presence is read as a subscribe: the hooks decide who may see who is there.
    let res = get(&server, "/channels/secret:1/presence", &ALICE).await;
    assert_eq!(
        expect_error(res, 403, "forbidden", "presence of a refused room").await,
        "not your room"
    );
    let res = get(&server, "/channels/room:1/presence", &[]).await;
    expect_error(res, 401, "unauthorized", "presence without a session").await;

    // A WebSocket the connect hook refuses is closed with 4403 and the back-end's message.
    let mut refused = ws::connect_with(&server.ws_url("/ws"), &[]).await;
    assert_eq!(
        ws::next_json(&mut refused).await,
        json!({"close": 4403, "reason": "no session"})
    );
    let mut refused = ws::connect_with(&server.ws_url("/sub/room:1"), &[]).await;
    assert_eq!(ws::next_json(&mut refused).await["close"], 4403);
    // A subscribe or publish it refuses is an error frame; the socket stays.
    let mut socket = ws_subscribed(&server, &ALICE, "room:1").await;
    ws::send_json(
        &mut socket,
        &json!({"type": "subscribe", "channel": "secret:2", "ref": "s"}),
    )
    .await;
    let error = ws::until(&mut socket, "the error", |f| f["type"] == "error").await;
    assert_eq!(
        (&error["code"], &error["message"], &error["ref"]),
        (&json!("forbidden"), &json!("not your room"), &json!("s"))
    );
    ws::send_json(
        &mut socket,
        &json!({"type": "publish", "channel": "ro:2", "data": "x", "ref": "p"}),
    )
    .await;
    let error = ws::until(&mut socket, "the error", |f| f["type"] == "error").await;
    assert_eq!((&error["code"], &error["ref"]), (&json!("forbidden"), &json!("p")));

    // Nothing else broke: the bystander still gets what is published.
    let res = publish(&server, "room:b", "still here", &ALICE).await;
    assert_eq!(res.status(), 201);
    let frame = ws::until(&mut bystander, "the message", |f| f["type"] == "message").await;
    assert_eq!(frame["data"], "still here");
}

#[tokio::test]
async fn a_hook_that_is_down_slow_or_garbled_fails_closed() {
    // Down: nothing listens at the URL.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let server = start_server_with(config(&format!("http://{closed}/hooks"))).await;
    let res = get(&server, "/sub/room:1?transport=sse", &ALICE).await;
    assert_eq!(res.headers()["retry-after"], "2");
    let message = expect_error(res, 503, "hook_unavailable", "a hook that is down").await;
    assert!(message.contains("connect hook failed"), "{message}");
    let mut socket = ws::connect_with(&server.ws_url("/ws"), &ALICE).await;
    assert_eq!(ws::next_json(&mut socket).await["close"], 1013, "try again later");
    let res = publish(&server, "room:1", "x", &ALICE).await;
    expect_error(res, 503, "hook_unavailable", "a publish with the hook down").await;

    // Slow: longer than hook_timeout_ms. Garbled: not JSON.
    let (base, backend) = backend().await;
    let server = start_server_with(Config {
        hook_timeout_ms: 100,
        ..config(&base)
    })
    .await;
    *backend.delay.lock().unwrap() = Duration::from_millis(400);
    let res = get(&server, "/sub/room:1?transport=poll", &ALICE).await;
    let message = expect_error(res, 503, "hook_unavailable", "a slow hook").await;
    assert!(message.contains("within hook_timeout_ms (100 ms)"), "{message}");
    *backend.delay.lock().unwrap() = Duration::ZERO;
    let res = get(&server, "/sub/room:1?transport=poll", &[("cookie", "session=garbage")]).await;
    let message = expect_error(res, 503, "hook_unavailable", "a garbled answer").await;
    assert!(message.contains("not JSON"), "{message}");
    let res = get(&server, "/sub/room:1?transport=poll", &ALICE).await;
    assert_eq!(res.status(), 200, "the back-end answers again: so does Comet");
    let metrics = get(&server, "/metrics", &[]).await.text().await.unwrap();
    assert!(
        metrics.contains("comet_hook_calls_total{hook=\"connect\",outcome=\"failed\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("comet_hook_calls_total{hook=\"connect\",outcome=\"allowed\"} 1"));
    assert!(metrics.contains("comet_hook_duration_seconds_count{hook=\"connect\"} 3"));
}

#[tokio::test]
async fn the_publish_api_key_skips_the_hooks_and_namespaces_can_skip_one() {
    let (base, backend) = backend().await;
    let server = start_server_with(config(&base)).await;
    let key = format!("Bearer {API_KEY}");
    let res = publish(&server, "ro:1", "from the back-end", &[("authorization", key.as_str())]).await;
    assert_eq!(res.status(), 201, "the back-end publishes anywhere");
    assert!(backend.calls("connect").is_empty() && backend.calls("publish").is_empty());
    // `open:` skips the subscribe hook (the namespace rules decide), not the connect hook.
    let res = get(&server, "/sub/open:1?transport=poll", &ALICE).await;
    assert_eq!(res.status(), 200);
    assert!(backend.calls("subscribe").is_empty());
    assert_eq!(backend.calls("connect").len(), 1);
}

#[tokio::test]
async fn polling_answers_are_kept_for_hook_cache_secs_and_a_session_expires() {
    let (base, backend) = backend().await;
    let server = start_server_with(Config {
        hook_cache_secs: 30,
        ..config(&base)
    })
    .await;
    for _ in 0..3 {
        let res = get(&server, "/sub/room:1?transport=poll", &ALICE).await;
        assert_eq!(res.status(), 200);
    }
    assert_eq!(
        (backend.calls("connect").len(), backend.calls("subscribe").len()),
        (1, 1)
    );
    let res = get(&server, "/sub/room:1?transport=poll", &[("cookie", "session=bob")]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(backend.calls("connect").len(), 2, "another session is asked about");
    // Streams are never answered from the cache.
    let res = get(&server, "/sub/room:1?transport=sse", &ALICE).await;
    assert_eq!(res.status(), 200);
    assert_eq!(backend.calls("connect").len(), 3);

    // A session the back-end gives 2 s (`expire_at`): its stream ends then, as at a token's
    // expiry (read_to_end panics if it does not end within SOON).
    let res = get(&server, "/sub/room:1?transport=stream", &[("cookie", "session=brief")]).await;
    assert_eq!(res.status(), 200);
    let started = std::time::Instant::now();
    BodyReader::new(res).read_to_end().await;
    assert!(started.elapsed() <= Duration::from_secs(4), "{:?}", started.elapsed());
}

#[tokio::test]
async fn cookies_from_pages_of_other_sites_are_not_forwarded() {
    let (base, backend) = backend().await;
    let server = start_server_with(config(&base)).await;
    let evil = [("cookie", "session=alice"), ("origin", "http://evil.example")];
    let res = get(&server, "/sub/room:1?transport=poll", &evil).await;
    expect_error(res, 401, "unauthorized", "a cross-site cookie").await;
    assert!(backend.calls("connect")[0]["headers"].get("Cookie").is_none());
    // Listed in allowed_origins, the same page's cookie counts.
    let server = start_server_with(Config {
        allowed_origins: vec!["http://evil.example".to_owned()],
        ..config(&base)
    })
    .await;
    let res = get(&server, "/sub/room:1?transport=poll", &evil).await;
    assert_eq!(res.status(), 200);
}
