//! Authentication and authorization over real sockets (docs/protocol.md "Authentication"):
//! JWT from every source, grants, namespaces, the publish API key, WebSocket `auth` and expiry,
//! the Origin allow-list and CORS, tickets, and credentials kept out of the logs. Each test
//! shows the bad client's clear error while an authorized client keeps being served.

use comet_test_support as support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use comet_server::Config;
use comet_server::auth::NamespaceRules;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header, get_current_timestamp};
use serde_json::{Value, json};
use support::jwt::{SECRET, claims, key_file, sign, token};
use support::{BodyReader, SOON, TestServer, recv_timeout, start_server, start_server_with};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const API_KEY: &str = "backend-key-123";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

// ---------------------------------------------------------------------------------------------
// Tokens and servers

/// Tokens required: `public:*` (and channels without `:`) open to anonymous subscribers,
/// everything else by grant.
fn jwt_config() -> Config {
    let namespace = comet_test_support::jwt::public_namespace();
    Config {
        jwt_secret: SECRET.into(),
        publish_api_key: API_KEY.into(),
        namespace,
        ..Config::default()
    }
}

/// Publishes as the back-end (the publish API key) and returns the cursor.
async fn publish(server: &TestServer, channel: &str, data: &str) -> String {
    let res = http()
        .post(server.url(&format!("/pub/{channel}")))
        .bearer_auth(API_KEY)
        .body(data.to_owned())
        .send()
        .await
        .expect("publish");
    assert_eq!(res.status(), 201, "publish as the back-end");
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// The error body of a failed answer, checked for its status and code; returns the message.
async fn expect_error(res: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(res.status(), status, "status");
    let body: Value = res.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    body["error"]["message"].as_str().expect("message").to_owned()
}

async fn poll(server: &TestServer, path: &str) -> reqwest::Response {
    http()
        .get(server.url(path))
        .query(&[("transport", "poll")])
        .send()
        .await
        .expect("poll")
}

/// An authorized SSE subscriber to `public:news`: it keeps receiving while others fail.
async fn bystander(server: &TestServer) -> BodyReader {
    let res = http()
        .get(server.url("/sub/public:news"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("bystander");
    assert_eq!(res.status(), 200);
    let mut reader = BodyReader::new(res);
    reader.until("retry", |b| b.contains("retry:")).await;
    reader
}

async fn assert_still_served(server: &TestServer, reader: &mut BodyReader, data: &str) {
    publish(server, "public:news", data).await;
    reader.until(data, |b| b.contains(&format!("data: {data}\n"))).await;
}

// ---------------------------------------------------------------------------------------------
// WebSocket helpers

async fn ws_connect(server: &TestServer, path: &str) -> Ws {
    recv_timeout(SOON, tokio_tungstenite::connect_async(server.ws_url(path)))
        .await
        .expect("websocket connect")
        .0
}

/// A handshake that must be refused: the HTTP status and JSON body.
async fn ws_refused(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = server.ws_url(path).into_client_request().unwrap();
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    match recv_timeout(SOON, tokio_tungstenite::connect_async(req)).await {
        Err(WsError::Http(res)) => {
            let body = res.body().clone().unwrap_or_default();
            (
                res.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            )
        }
        Ok(_) => panic!("handshake to {path} was accepted"),
        Err(e) => panic!("handshake to {path}: {e}"),
    }
}

/// The next text frame as JSON (pings and pongs skipped), or the close frame as
/// `{"close": code, "reason": …}`.
async fn next_frame(ws: &mut Ws) -> Value {
    loop {
        match recv_timeout(Duration::from_secs(8), ws.next()).await {
            Some(Ok(WsMessage::Text(text))) => return serde_json::from_str(&text).expect("JSON frame"),
            Some(Ok(WsMessage::Close(Some(frame)))) => {
                return json!({"close": u16::from(frame.code), "reason": frame.reason.as_str()});
            }
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, value: Value) {
    recv_timeout(SOON, ws.send(WsMessage::text(value.to_string())))
        .await
        .expect("send");
}

/// The socket is open and answers commands.
async fn assert_open(ws: &mut Ws) {
    send(ws, json!({"type":"ping","ref":"alive?"})).await;
    assert_eq!(next_frame(ws).await, json!({"type":"pong","ref":"alive?"}));
}

fn subscribed(channel: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v| v["type"] == "subscribed" && v["channel"] == channel
}

// ---------------------------------------------------------------------------------------------
// 1. JWT

#[tokio::test]
async fn a_token_from_the_header_the_query_or_the_cookie_opens_granted_channels() {
    let server = start_server_with(jwt_config()).await;
    let mut others = bystander(&server).await;
    let t = token("alice", 60, &["chat:*"], &[]);
    let by_header = http()
        .get(server.url("/sub/chat:a?transport=poll"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.status(), 200);
    let by_query = poll(&server, &format!("/sub/chat:a?token={t}")).await;
    assert_eq!(by_query.status(), 200);
    let by_cookie = http()
        .get(server.url("/sub/chat:a?transport=poll"))
        .header("cookie", format!("theme=dark; comet_token={t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), 200);

    let anonymous = poll(&server, "/sub/chat:a").await;
    let message = expect_error(anonymous, 401, "unauthorized").await;
    assert!(
        message.contains("a token is needed to subscribe to chat:a"),
        "{message}"
    );
    let anonymous_open = poll(&server, "/sub/public:x").await;
    assert_eq!(anonymous_open.status(), 200, "a namespace open to anonymous clients");
    assert_still_served(&server, &mut others, "after tokens").await;
}

#[tokio::test]
async fn expired_and_invalid_tokens_are_401_with_a_reason() {
    let server = start_server_with(jwt_config()).await;
    let mut others = bystander(&server).await;
    let hs = Header::new(Algorithm::HS256);
    let good_key = EncodingKey::from_secret(SECRET.as_bytes());
    let no_sub = json!({"exp": get_current_timestamp() + 60, "comet": {"subscribe": ["*"]}});
    let no_exp = json!({"sub": "x", "comet": {"subscribe": ["*"]}});
    let cases = [
        (token("alice", -30, &["*"], &[]), "token expired"),
        (
            sign(
                &hs,
                &claims("mallory", 60, &["*"], &[]),
                &EncodingKey::from_secret(b"another secret"),
            ),
            "bad signature",
        ),
        ("not.a.token".to_owned(), "malformed token"),
        ("garbage".to_owned(), "malformed token"),
        (sign(&hs, &no_sub, &good_key), "claim \"sub\" is missing"),
        (sign(&hs, &no_exp, &good_key), "claim \"exp\" is missing"),
    ];
    for (bad, reason) in cases {
        let res = poll(&server, &format!("/sub/public:news?token={bad}")).await;
        let message = expect_error(res, 401, "unauthorized").await;
        assert!(message.contains(reason), "{reason:?} not in {message:?}");
        assert!(!message.contains(&bad), "the message must not echo the token");
        // Publishing with it too.
        let res = http()
            .post(server.url("/pub/public:news"))
            .bearer_auth(&bad)
            .body("x")
            .send()
            .await
            .unwrap();
        expect_error(res, 401, "unauthorized").await;
    }
    assert_still_served(&server, &mut others, "after bad tokens").await;
}

/// `alg: none` (RFC 7519 §6, "unsecured JWT"): a token anyone can forge. It must never pass.
#[tokio::test]
async fn alg_none_is_rejected() {
    let server = start_server_with(jwt_config()).await;
    let mut others = bystander(&server).await;
    let b64 = |v: &Value| {
        use std::fmt::Write as _;
        // base64url without padding, by hand (no base64 crate in the tests).
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = v.to_string().into_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                let _ = write!(out, "{}", ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    };
    let payload = b64(&claims("mallory", 60, &["*"], &["*"]));
    for header in [
        json!({"alg": "none", "typ": "JWT"}),
        json!({"alg": "None"}),
        json!({"alg": "none"}),
    ] {
        for forged in [
            format!("{}.{payload}.", b64(&header)),
            format!("{}.{payload}", b64(&header)),
        ] {
            let res = poll(&server, &format!("/sub/secret:x?token={forged}")).await;
            let message = expect_error(res, 401, "unauthorized").await;
            assert!(message.contains("\"none\""), "{message}");
            let res = http()
                .post(server.url("/pub/secret:x"))
                .bearer_auth(&forged)
                .body("forged")
                .send()
                .await
                .unwrap();
            expect_error(res, 401, "unauthorized").await;
        }
    }
    assert_still_served(&server, &mut others, "after forged tokens").await;
}

#[tokio::test]
async fn tokens_for_another_audience_or_issuer_are_rejected() {
    let server = start_server_with(Config {
        jwt_audience: "comet".into(),
        jwt_issuer: "https://auth.example".into(),
        ..jwt_config()
    })
    .await;
    let mut others = bystander(&server).await;
    let with = |aud: Option<&str>, iss: Option<&str>| {
        let mut c = claims("alice", 60, &["chat:*"], &[]);
        if let Some(aud) = aud {
            c["aud"] = json!(aud);
        }
        if let Some(iss) = iss {
            c["iss"] = json!(iss);
        }
        sign(
            &Header::new(Algorithm::HS256),
            &c,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
    };
    let good = with(Some("comet"), Some("https://auth.example"));
    assert_eq!(poll(&server, &format!("/sub/chat:a?token={good}")).await.status(), 200);
    for (bad, reason) in [
        (with(Some("billing"), Some("https://auth.example")), "another audience"),
        (with(None, Some("https://auth.example")), "claim \"aud\" is missing"),
        (with(Some("comet"), Some("https://evil.example")), "another issuer"),
        (with(Some("comet"), None), "claim \"iss\" is missing"),
    ] {
        let res = poll(&server, &format!("/sub/chat:a?token={bad}")).await;
        let message = expect_error(res, 401, "unauthorized").await;
        assert!(message.contains(reason), "{reason:?} not in {message:?}");
    }
    assert_still_served(&server, &mut others, "after foreign tokens").await;
}

#[tokio::test]
async fn rs256_and_es256_public_keys_verify_tokens_and_refuse_algorithm_confusion() {
    for (public, private, alg) in [
        ("rs256-public.pem", "rs256-private.pem", Algorithm::RS256),
        ("es256-public.pem", "es256-private.pem", Algorithm::ES256),
    ] {
        let server = start_server_with(Config {
            jwt_secret: "".into(),
            jwt_public_key_file: key_file(public).display().to_string(),
            ..jwt_config()
        })
        .await;
        let pem = std::fs::read(key_file(private)).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let good = sign(&Header::new(alg), &claims("alice", 60, &["chat:*"], &[]), &key);
        assert_eq!(
            poll(&server, &format!("/sub/chat:a?token={good}")).await.status(),
            200,
            "{alg:?}"
        );
        // Algorithm confusion (RFC 8725 §2.1): HS256 "signed" with the public key's bytes.
        let public_pem = std::fs::read(key_file(public)).unwrap();
        let confused = sign(
            &Header::new(Algorithm::HS256),
            &claims("mallory", 60, &["*"], &[]),
            &EncodingKey::from_secret(&public_pem),
        );
        let res = poll(&server, &format!("/sub/chat:a?token={confused}")).await;
        let message = expect_error(res, 401, "unauthorized").await;
        assert!(message.contains("algorithm not accepted"), "{message}");
        // And a token of the shared-secret kind is no good either.
        let hs = token("alice", 60, &["chat:*"], &[]);
        expect_error(
            poll(&server, &format!("/sub/chat:a?token={hs}")).await,
            401,
            "unauthorized",
        )
        .await;
    }
}

#[test]
fn a_bad_key_file_is_a_clear_config_error() {
    let err = Config::load(
        None,
        [("COMET_JWT_PUBLIC_KEY_FILE".into(), "/nonexistent/key.pem".into())],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("jwt_public_key_file /nonexistent/key.pem"),
        "{err}"
    );
    let not_a_key = key_file("../Cargo.toml").display().to_string();
    let err = Config::load(None, [("COMET_JWT_PUBLIC_KEY_FILE".into(), not_a_key)]).unwrap_err();
    assert!(err.to_string().contains("not a PEM RSA or EC"), "{err}");
    // RFC 7518 §3.2: an HS256 key at least as long as the hash (32 bytes).
    let short = [("COMET_JWT_SECRET".to_owned(), "a".repeat(31))];
    let err = Config::load(None, short).unwrap_err().to_string();
    assert!(
        err.contains("jwt_secret is 31 bytes") && err.contains("at least 32"),
        "{err}"
    );
    assert!(Config::load(None, [("COMET_JWT_SECRET".to_owned(), "a".repeat(32))]).is_ok());
    let both = [
        ("COMET_JWT_SECRET".to_owned(), "s".to_owned()),
        (
            "COMET_JWT_PUBLIC_KEY_FILE".to_owned(),
            key_file("es256-public.pem").display().to_string(),
        ),
    ];
    assert!(Config::load(None, both).unwrap_err().to_string().contains("not both"));
    let ok = Config::load(
        None,
        [(
            "COMET_JWT_PUBLIC_KEY_FILE".into(),
            key_file("es256-public.pem").display().to_string(),
        )],
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[tokio::test]
async fn grants_bound_subscribing_and_publishing_over_http() {
    let server = start_server_with(jwt_config()).await;
    let mut others = bystander(&server).await;
    let alice = token("alice", 60, &["chat:*", "user:alice"], &["chat:*"]);
    // Subscribing: in the grant, outside it, and one bad channel spoils a list.
    assert_eq!(
        poll(&server, &format!("/sub/chat:a,user:alice?token={alice}"))
            .await
            .status(),
        200
    );
    let res = poll(&server, &format!("/sub/user:bob?token={alice}")).await;
    let message = expect_error(res, 403, "forbidden").await;
    assert!(message.contains("not allowed to subscribe to user:bob"), "{message}");
    let res = poll(&server, &format!("/sub/chat:a,user:bob?token={alice}")).await;
    expect_error(res, 403, "forbidden").await;
    // Publishing.
    let publish = |channel: &str, bearer: Option<&str>| {
        let mut req = http().post(server.url(&format!("/pub/{channel}"))).body("hi");
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        req.send()
    };
    assert_eq!(publish("chat:a", Some(&alice)).await.unwrap().status(), 201);
    let message = expect_error(publish("user:alice", Some(&alice)).await.unwrap(), 403, "forbidden").await;
    assert!(message.contains("not allowed to publish to user:alice"), "{message}");
    let message = expect_error(publish("chat:a", None).await.unwrap(), 401, "unauthorized").await;
    assert!(message.contains("a token is needed to publish to chat:a"), "{message}");
    // The batch: each item on its own.
    let res = http()
        .post(server.url("/pub"))
        .bearer_auth(&alice)
        .json(&json!([{"channel":"chat:b","data":"ok"},{"channel":"secret:x","data":"no"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["results"][0]["channel"], "chat:b");
    assert_eq!(body["results"][1]["error"]["code"], "forbidden");
    assert_still_served(&server, &mut others, "after refusals").await;
}

// ---------------------------------------------------------------------------------------------
// 2. The publish API key and namespaces

#[tokio::test]
async fn the_publish_api_key_publishes_anywhere_and_closes_anonymous_publishing() {
    let server = start_server_with(Config {
        publish_api_key: API_KEY.into(),
        ..Config::default()
    })
    .await;
    let sub = poll(&server, "/sub/anything:at-all").await;
    assert_eq!(sub.status(), 200, "subscribing stays open: no JWT key is set");
    let res = http()
        .post(server.url("/pub/anything:at-all"))
        .bearer_auth(API_KEY)
        .body("from the back-end")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = http()
        .post(server.url("/pub/anything:at-all"))
        .bearer_auth("guessed-key")
        .body("x")
        .send()
        .await
        .unwrap();
    let message = expect_error(res, 401, "unauthorized").await;
    assert!(message.contains("not the publish API key"), "{message}");
    let res = http()
        .post(server.url("/pub/anything:at-all"))
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(res, 401, "unauthorized").await;
    // With JWT on as well, the key still works (and is not taken for a token).
    let server = start_server_with(jwt_config()).await;
    let res = http()
        .post(server.url("/pub/secret:x"))
        .bearer_auth(API_KEY)
        .body("y")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn without_auth_settings_everything_stays_open() {
    let server = start_server().await;
    // Tokens mean nothing without a key: not even a garbage one is refused.
    assert_eq!(poll(&server, "/sub/chat:a?token=garbage").await.status(), 200);
    let res = http()
        .post(server.url("/pub/chat:a"))
        .bearer_auth("whatever")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let mut ws = ws_connect(&server, "/sub/chat:a").await;
    assert!(subscribed("chat:a")(&next_frame(&mut ws).await));
    send(
        &mut ws,
        json!({"type":"publish","channel":"chat:b","data":"x","ref":"p"}),
    )
    .await;
    assert_eq!(next_frame(&mut ws).await["type"], "ack");
    // An `auth` command is answered, not punished: the socket stays open.
    send(&mut ws, json!({"type":"auth","token":"anything","ref":"a"})).await;
    let error = next_frame(&mut ws).await;
    assert_eq!(
        (error["code"].as_str(), error["ref"].as_str()),
        (Some("unauthorized"), Some("a")),
        "{error}"
    );
    assert!(error["message"].as_str().unwrap().contains("no JWT key"), "{error}");
    assert_open(&mut ws).await;
    let res = http()
        .get(server.url("/sub/chat:a?transport=poll"))
        .header("origin", "https://anywhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn namespace_rules_decide_for_anonymous_clients_ws_publishing_and_message_size() {
    let mut namespace = BTreeMap::new();
    namespace.insert(
        String::new(),
        NamespaceRules {
            anonymous_subscribe: Some(false),
            ..NamespaceRules::default()
        },
    );
    namespace.insert(
        "lobby".to_owned(),
        NamespaceRules {
            anonymous_subscribe: Some(true),
            anonymous_publish: Some(true),
            client_publish: Some(false),
            max_message_size: Some(8),
            ..NamespaceRules::default()
        },
    );
    // No JWT: the namespace rules alone close or open channels.
    let server = start_server_with(Config {
        namespace,
        ..Config::default()
    })
    .await;
    let res = poll(&server, "/sub/plain").await;
    expect_error(res, 401, "unauthorized").await;
    let res = poll(&server, "/sub/other:x").await;
    expect_error(res, 401, "unauthorized").await;
    assert_eq!(poll(&server, "/sub/lobby:x").await.status(), 200);
    // Publish: HTTP anonymous publish allowed in lobby, within its own size limit.
    let publish = |body: &str| http().post(server.url("/pub/lobby:x")).body(body.to_owned()).send();
    assert_eq!(publish("12345678").await.unwrap().status(), 201);
    let message = expect_error(publish("123456789").await.unwrap(), 413, "too_large").await;
    assert!(message.contains("at most 8"), "{message}");
    // Other namespaces keep the global limit.
    let res = http()
        .post(server.url("/pub/free:x"))
        .body("x".repeat(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // WebSocket publishing is off in lobby, and the socket stays open.
    let mut ws = ws_connect(&server, "/sub/lobby:x").await;
    assert!(subscribed("lobby:x")(&next_frame(&mut ws).await));
    send(
        &mut ws,
        json!({"type":"publish","channel":"lobby:x","data":"hi","ref":"p1"}),
    )
    .await;
    let error = next_frame(&mut ws).await;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str(), error["ref"].as_str()),
        (Some("error"), Some("forbidden"), Some("p1"))
    );
    assert!(error["message"].as_str().unwrap().contains("WebSocket"), "{error}");
    assert_open(&mut ws).await;
    // The bystander on the same socket still gets HTTP-published lobby messages.
    publish("live").await.unwrap();
    let msg = next_frame(&mut ws).await;
    assert_eq!(
        (msg["type"].as_str(), msg["data"].as_str()),
        (Some("message"), Some("live"))
    );
}

// ---------------------------------------------------------------------------------------------
// WebSocket auth

#[tokio::test]
async fn websocket_auth_command_then_grants_per_command() {
    let server = start_server_with(jwt_config()).await;
    let mut others = ws_connect(&server, "/sub/public:news").await;
    assert!(subscribed("public:news")(&next_frame(&mut others).await));

    let mut ws = ws_connect(&server, "/ws").await;
    send(&mut ws, json!({"type":"subscribe","channel":"chat:a","ref":"s0"})).await;
    let error = next_frame(&mut ws).await;
    assert_eq!(
        (error["code"].as_str(), error["ref"].as_str()),
        (Some("unauthorized"), Some("s0")),
        "{error}"
    );
    assert_open(&mut ws).await;

    let t = token("alice", 60, &["chat:*"], &["chat:*"]);
    send(&mut ws, json!({"type":"auth","token":t,"ref":"a1"})).await;
    let ok = next_frame(&mut ws).await;
    assert_eq!(
        (ok["type"].as_str(), ok["sub"].as_str(), ok["ref"].as_str()),
        (Some("authenticated"), Some("alice"), Some("a1"))
    );
    assert!(ok["expires_at"].as_u64().unwrap() > get_current_timestamp());

    send(&mut ws, json!({"type":"subscribe","channel":"chat:a"})).await;
    assert!(subscribed("chat:a")(&next_frame(&mut ws).await));
    send(&mut ws, json!({"type":"subscribe","channel":"secret:x","ref":"s2"})).await;
    let error = next_frame(&mut ws).await;
    assert_eq!(
        (error["code"].as_str(), error["ref"].as_str()),
        (Some("forbidden"), Some("s2")),
        "{error}"
    );
    send(
        &mut ws,
        json!({"type":"publish","channel":"secret:x","data":"no","ref":"p1"}),
    )
    .await;
    let error = next_frame(&mut ws).await;
    assert_eq!(
        (error["code"].as_str(), error["ref"].as_str()),
        (Some("forbidden"), Some("p1")),
        "{error}"
    );
    send(
        &mut ws,
        json!({"type":"publish","channel":"chat:a","data":"yes","ref":"p2"}),
    )
    .await;
    let frames = [next_frame(&mut ws).await, next_frame(&mut ws).await];
    assert!(
        frames.iter().any(|f| f["type"] == "ack" && f["ref"] == "p2"),
        "{frames:?}"
    );
    assert!(
        frames.iter().any(|f| f["type"] == "message" && f["data"] == "yes"),
        "{frames:?}"
    );

    // A refresh with a narrower grant drops what it no longer covers.
    let narrower = token("alice", 60, &["user:alice"], &[]);
    send(&mut ws, json!({"type":"auth","token":narrower})).await;
    let frames = [
        next_frame(&mut ws).await,
        next_frame(&mut ws).await,
        next_frame(&mut ws).await,
    ];
    assert_eq!(frames[0]["code"], "forbidden", "{frames:?}");
    assert_eq!(frames[1], json!({"type":"unsubscribed","channel":"chat:a"}));
    assert_eq!(frames[2]["type"], "authenticated");

    // The bystander saw none of this.
    let id = publish(&server, "public:news", "still here").await;
    let msg = next_frame(&mut others).await;
    assert_eq!(
        (msg["id"].as_str(), msg["data"].as_str()),
        (Some(&*id), Some("still here"))
    );
}

#[tokio::test]
async fn websocket_bad_auth_token_closes_1008_after_saying_why() {
    let server = start_server_with(jwt_config()).await;
    let mut others = ws_connect(&server, "/sub/public:news").await;
    assert!(subscribed("public:news")(&next_frame(&mut others).await));
    for (bad, reason, close) in [
        (token("alice", 60, &["*"], &[]) + "x", "bad signature", "invalid token"),
        (token("alice", -30, &["*"], &[]), "token expired", "token expired"),
    ] {
        let mut ws = ws_connect(&server, "/ws").await;
        send(&mut ws, json!({"type":"auth","token":bad,"ref":"a"})).await;
        let error = next_frame(&mut ws).await;
        assert_eq!(error["code"], "unauthorized", "{error}");
        assert!(error["message"].as_str().unwrap().contains(reason), "{error}");
        assert_eq!(next_frame(&mut ws).await, json!({"close": 1008, "reason": close}));
    }
    let id = publish(&server, "public:news", "unaffected").await;
    assert_eq!(next_frame(&mut others).await["id"], id);
}

/// Issue 16, point 6: on a server with tokens, an anonymous `/ws` that neither authenticates nor
/// subscribes to a channel open to anonymous clients is closed with 1008 at
/// `ws_auth_timeout_secs` (1 s here), however many other commands it sends; one that sends a
/// good `auth`, or subscribes to a public channel, in time stays open past it.
#[tokio::test]
async fn an_anonymous_websocket_must_authenticate_within_ws_auth_timeout() {
    let server = start_server_with(Config {
        ws_auth_timeout_secs: 1,
        ..jwt_config()
    })
    .await;
    let started = std::time::Instant::now();
    let mut idle = ws_connect(&server, "/ws").await;
    let mut chatty = ws_connect(&server, "/ws").await;
    for _ in 0..3 {
        assert_open(&mut chatty).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut authed = ws_connect(&server, "/ws").await;
    send(
        &mut authed,
        json!({"type":"auth","token":token("alice", 60, &["chat:*"], &[]),"ref":"a"}),
    )
    .await;
    assert_eq!(next_frame(&mut authed).await["type"], "authenticated");
    let mut public = ws_connect(&server, "/ws").await;
    send(&mut public, json!({"type":"subscribe","channel":"public:news"})).await;
    assert!(subscribed("public:news")(&next_frame(&mut public).await));
    let closed = json!({"close": 1008, "reason": "no auth within ws_auth_timeout_secs"});
    assert_eq!(next_frame(&mut idle).await, closed);
    assert_eq!(next_frame(&mut chatty).await, closed);
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_open(&mut authed).await;
    assert_open(&mut public).await;
}

#[tokio::test]
async fn websocket_upgrades_are_refused_before_the_101() {
    let server = start_server_with(jwt_config()).await;
    let alice = token("alice", 60, &["chat:*"], &[]);
    let (status, body) = ws_refused(&server, "/sub/chat:a?token=not-a-jwt", &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let (status, body) = ws_refused(&server, "/sub/chat:a", &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let (status, body) = ws_refused(&server, &format!("/sub/secret:x?token={alice}"), &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    // The same token in the Authorization header opens its channels.
    let mut req = server.ws_url("/sub/chat:a").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {alice}").parse().unwrap());
    let (mut ws, _) = recv_timeout(SOON, tokio_tungstenite::connect_async(req)).await.unwrap();
    assert!(subscribed("chat:a")(&next_frame(&mut ws).await));
}

#[tokio::test]
async fn websocket_closes_1008_when_its_token_expires_unless_refreshed() {
    let server = start_server_with(jwt_config()).await;
    let short = token("alice", 2, &["chat:*"], &[]);
    let mut expiring = ws_connect(&server, &format!("/sub/chat:a?token={short}")).await;
    assert!(subscribed("chat:a")(&next_frame(&mut expiring).await));
    let mut refreshed = ws_connect(&server, &format!("/sub/chat:a?token={short}")).await;
    assert!(subscribed("chat:a")(&next_frame(&mut refreshed).await));
    send(
        &mut refreshed,
        json!({"type":"auth","token": token("alice", 60, &["chat:*"], &[])}),
    )
    .await;
    assert_eq!(next_frame(&mut refreshed).await["type"], "authenticated");

    let started = std::time::Instant::now();
    assert_eq!(
        next_frame(&mut expiring).await,
        json!({"close": 1008, "reason": "token expired"})
    );
    assert!(started.elapsed() < Duration::from_secs(4), "closed at exp, not later");
    // Past the first token's exp the refreshed socket still gets messages.
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(&server, "chat:a", "after exp").await;
    let msg = next_frame(&mut refreshed).await;
    assert_eq!(
        (msg["type"].as_str(), msg["data"].as_str()),
        (Some("message"), Some("after exp"))
    );
}

// ---------------------------------------------------------------------------------------------
// Streaming responses end at exp

#[tokio::test]
async fn sse_stream_and_iframe_end_when_the_token_expires() {
    let server = start_server_with(jwt_config()).await;
    let mut others = bystander(&server).await;
    let short = token("alice", 2, &["chat:*"], &[]);
    let mut readers = Vec::new();
    for transport in ["sse", "stream", "iframe"] {
        let res = http()
            .get(server.url(&format!("/sub/chat:a?transport={transport}&token={short}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{transport}");
        readers.push((transport, BodyReader::new(res)));
    }
    publish(&server, "chat:a", "before exp").await;
    for (transport, reader) in &mut readers {
        reader.until(transport, |b| b.contains("before exp")).await;
    }
    let started = std::time::Instant::now();
    for (_, reader) in &mut readers {
        reader.read_to_end().await;
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    // Coming back with the same token: 401, so EventSource stops reconnecting.
    let res = http()
        .get(server.url(&format!("/sub/chat:a?token={short}")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let message = expect_error(res, 401, "unauthorized").await;
    assert!(message.contains("token expired"), "{message}");
    assert_still_served(&server, &mut others, "after expiry").await;
}

/// A long poll held past its token's `exp` (issue 16, point 6): answered, empty and with its
/// cursor, at `exp` rather than at the 30 s timeout; the next poll with that token is `401`.
#[tokio::test]
async fn a_held_long_poll_is_answered_when_its_token_expires() {
    let server = start_server_with(jwt_config()).await;
    let short = token("alice", 2, &["chat:*"], &[]);
    let started = std::time::Instant::now();
    let res = tokio::time::timeout(
        Duration::from_secs(10),
        http()
            .get(server.url(&format!("/sub/chat:lp?transport=longpoll&timeout=30&token={short}")))
            .send(),
    )
    .await
    .expect("answered well before the 30 s timeout")
    .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["messages"], json!([]), "{v}");
    let cursor = v["cursor"].as_str().expect("cursor").to_owned();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let res = poll(
        &server,
        &format!("/sub/chat:lp?transport=longpoll&since={cursor}&token={short}"),
    )
    .await;
    let message = expect_error(res, 401, "unauthorized").await;
    assert!(message.contains("token expired"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// 3. Origins and CORS

fn origin_config() -> Config {
    Config {
        allowed_origins: vec!["https://good.example".into()],
        ..Config::default()
    }
}

#[tokio::test]
async fn websocket_upgrades_from_other_origins_get_403_before_the_upgrade() {
    let server = start_server_with(origin_config()).await;
    let mut others = ws_connect(&server, "/sub/news").await;
    assert!(subscribed("news")(&next_frame(&mut others).await));
    for evil in [
        "https://evil.example",
        "null",
        "http://good.example",
        "https://good.example.evil.example",
    ] {
        let (status, body) = ws_refused(&server, "/sub/news", &[("origin", evil)]).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("forbidden_origin")),
            "{evil}: {body}"
        );
        assert!(body["error"]["message"].as_str().unwrap().contains(evil), "{body}");
        let (status, _) = ws_refused(&server, "/ws", &[("origin", evil)]).await;
        assert_eq!(status, 403);
    }
    // Allowed, same-origin and origin-less (non-browser) clients connect.
    let host = format!("http://{}", server.addr);
    for origin in [Some("https://good.example"), Some(host.as_str()), None] {
        let mut req = server.ws_url("/sub/news").into_client_request().unwrap();
        if let Some(origin) = origin {
            req.headers_mut().insert("origin", origin.parse().unwrap());
        }
        let (mut ws, _) = recv_timeout(SOON, tokio_tungstenite::connect_async(req))
            .await
            .unwrap_or_else(|e| panic!("{origin:?}: {e}"));
        assert!(subscribed("news")(&next_frame(&mut ws).await));
    }
    let id = publish(&server, "news", "unaffected").await;
    assert_eq!(next_frame(&mut others).await["id"], id);
}

#[tokio::test]
async fn cors_answers_preflights_and_requests_from_the_allow_list() {
    let server = start_server_with(origin_config()).await;
    let preflight = |path: &str, origin: &str, method: &str| {
        http()
            .request(reqwest::Method::OPTIONS, server.url(path))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "authorization, last-event-id, content-type",
            )
            .send()
    };
    for (path, method) in [("/pub/news", "POST"), ("/sub/news", "GET"), ("/tickets", "POST")] {
        let res = preflight(path, "https://good.example", method).await.unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        let h = res.headers();
        assert_eq!(h["access-control-allow-origin"], "https://good.example", "{path}");
        assert_eq!(h["access-control-allow-credentials"], "true");
        let allowed = h["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
        for header in ["authorization", "last-event-id", "content-type"] {
            assert!(allowed.contains(header), "{header} not in {allowed}");
        }
        assert!(h["access-control-allow-methods"].to_str().unwrap().contains(method));
        let res = preflight(path, "https://evil.example", method).await.unwrap();
        assert!(res.headers().get("access-control-allow-origin").is_none(), "{path}");
    }
    // Actual requests: the allowed origin gets the CORS headers; another gets 403.
    let res = http()
        .post(server.url("/pub/news"))
        .header("origin", "https://good.example")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["access-control-allow-origin"], "https://good.example");
    let res = http()
        .post(server.url("/pub/news"))
        .header("origin", "https://evil.example")
        .body("cross-site")
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "forbidden_origin").await;
    let res = http()
        .get(server.url("/sub/news?transport=poll"))
        .header("origin", "https://good.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["access-control-allow-origin"], "https://good.example");
    // The streaming transports' heads are written by the connection layer (conn/h1.rs), not by
    // hyper's CORS layer: the same fields as the long poll's.
    let poll = res.headers().clone();
    for transport in ["sse", "stream", "iframe"] {
        let res = http()
            .get(server.url(&format!("/sub/news?transport={transport}")))
            .header("origin", "https://good.example")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{transport}");
        for name in [
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "vary",
        ] {
            assert!(poll.contains_key(name), "{name}");
            assert_eq!(res.headers().get(name), poll.get(name), "{transport}: {name}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Tickets

async fn ticket(server: &TestServer, bearer: &str) -> (String, u64) {
    let res = http()
        .post(server.url("/tickets"))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    (
        body["ticket"].as_str().unwrap().to_owned(),
        body["expires_in"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn tickets_stand_in_for_the_token_once() {
    let server = start_server_with(jwt_config()).await;
    let mut others = bystander(&server).await;
    let alice = token("alice", 60, &["chat:*"], &[]);
    let (t, expires_in) = ticket(&server, &alice).await;
    assert_eq!(expires_in, 60);
    assert!(t.len() >= 32 && !t.contains(&alice));
    // An EventSource URL with the ticket.
    let res = http()
        .get(server.url(&format!("/sub/chat:a?ticket={t}")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut sse = BodyReader::new(res);
    publish(&server, "chat:a", "via ticket").await;
    sse.until("message", |b| b.contains("data: via ticket\n")).await;
    // Single use.
    let res = poll(&server, &format!("/sub/chat:a?ticket={t}")).await;
    let message = expect_error(res, 401, "unauthorized").await;
    assert!(message.contains("ticket"), "{message}");
    // It carries the token's grants, no more.
    let (t2, _) = ticket(&server, &alice).await;
    expect_error(
        poll(&server, &format!("/sub/secret:x?ticket={t2}")).await,
        403,
        "forbidden",
    )
    .await;
    // No ticket without a token, nor for a bad one.
    let res = http().post(server.url("/tickets")).send().await.unwrap();
    expect_error(res, 401, "unauthorized").await;
    let res = http()
        .post(server.url("/tickets"))
        .bearer_auth("bad")
        .send()
        .await
        .unwrap();
    expect_error(res, 401, "unauthorized").await;
    expect_error(poll(&server, "/sub/chat:a?ticket=made-up").await, 401, "unauthorized").await;
    assert_still_served(&server, &mut others, "after tickets").await;
}

#[tokio::test]
async fn expired_tickets_are_refused() {
    let server = start_server_with(Config {
        ticket_ttl_secs: 1,
        ..jwt_config()
    })
    .await;
    let alice = token("alice", 60, &["chat:*"], &[]);
    let (t, expires_in) = ticket(&server, &alice).await;
    assert_eq!(expires_in, 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let res = poll(&server, &format!("/sub/chat:a?ticket={t}")).await;
    expect_error(res, 401, "unauthorized").await;
    let (fresh, _) = ticket(&server, &alice).await;
    let (status, _) = {
        let mut ws = ws_connect(&server, &format!("/sub/chat:a?ticket={fresh}")).await;
        (subscribed("chat:a")(&next_frame(&mut ws).await), ())
    };
    assert!(status, "a fresh ticket opens a WebSocket");
}

// ---------------------------------------------------------------------------------------------
// Secrets stay out of the logs

/// A `std::io::Write` into a shared buffer, for a test-scoped tracing subscriber.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The process-wide log of this test binary: every test's server logs here, at TRACE.
/// (A subscriber scoped to one test's thread misses events when other threads register
/// callsites at the same moment, so the global one is used.)
fn logs() -> &'static LogBuffer {
    static LOGS: std::sync::OnceLock<LogBuffer> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = LogBuffer::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        logs
    })
}

/// Every request below carries a credential in a URL, a header, a cookie or a WebSocket frame;
/// the logs (everything, at TRACE) show the requests but none of the credentials.
#[tokio::test]
async fn credentials_never_reach_the_logs() {
    let logs = logs();
    let server = start_server_with(jwt_config()).await;
    let query_token = token("query-user", 60, &["chat:*"], &[]);
    let header_token = token("header-user", 60, &["chat:*"], &["chat:*"]);
    let cookie_token = token("cookie-user", 60, &["chat:*"], &[]);
    let ws_token = token("ws-user", 60, &["chat:*"], &[]);
    let expired = token("late-user", -30, &["chat:*"], &[]);
    assert_eq!(
        poll(&server, &format!("/sub/chat:a?token={query_token}"))
            .await
            .status(),
        200
    );
    expect_error(
        poll(&server, &format!("/sub/chat:a?since=earliest&token={expired}")).await,
        401,
        "unauthorized",
    )
    .await;
    // A streaming subscription (served on a connection of its own, conn/h1.rs) is logged in
    // the same redacted `request` span.
    expect_error(
        http()
            .get(server.url(&format!("/sub/chat:a?transport=sse&token={expired}")))
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    let res = http()
        .post(server.url("/pub/chat:a"))
        .bearer_auth(&header_token)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = http()
        .post(server.url("/pub/chat:a"))
        .bearer_auth(API_KEY)
        .body("y")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = http()
        .get(server.url("/sub/chat:a?transport=poll"))
        .header("cookie", format!("comet_token={cookie_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (t, _) = ticket(&server, &header_token).await;
    assert_eq!(poll(&server, &format!("/sub/chat:a?ticket={t}")).await.status(), 200);
    let mut ws = ws_connect(&server, "/ws").await;
    send(&mut ws, json!({"type":"auth","token":ws_token})).await;
    assert_eq!(next_frame(&mut ws).await["type"], "authenticated");
    send(&mut ws, json!({"type":"auth","token":expired})).await;
    assert_eq!(next_frame(&mut ws).await["code"], "unauthorized");
    drop(ws);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let text = logs.text();
    assert!(
        text.contains("/sub/chat:a?token=[redacted]"),
        "the request trace logs redacted URIs:\n{text}"
    );
    assert!(text.contains("credential refused"), "auth failures are logged:\n{text}");
    assert!(
        text.contains("/sub/chat:a?transport=sse&token=[redacted]"),
        "a streaming subscription's request span is logged redacted:\n{text}"
    );
    for (what, secret) in [
        ("query token", query_token.as_str()),
        ("header token", &header_token),
        ("cookie token", &cookie_token),
        ("WebSocket auth token", &ws_token),
        ("expired token", &expired),
        ("API key", API_KEY),
        ("ticket", &t),
        ("JWT secret", SECRET),
    ] {
        // The claims or the signature of a JWT would be a leak (the header part is the same in
        // every HS256 token, so it says nothing about which one leaked).
        for part in secret.split('.').skip(usize::from(secret.contains('.'))) {
            assert!(
                !text.contains(part),
                "the {what} ({part}) leaked into the logs:\n{text}"
            );
        }
    }
}
