//! Bad tokens: expired, forged, for another audience, `alg: none`, tickets reused.

use crate::prelude::*;

// ---------------------------------------------------------------------------------------------
// Bad tokens

pub(crate) const SECRET: &str = "hostile-test-secret-of-32-bytes-at-least";
pub(crate) const API_KEY: &str = "hostile-backend-key";

/// Tokens required (HS256 with [`SECRET`], audience `comet`), except in `public:`, which anyone
/// may read; the back-end publishes with [`API_KEY`].
pub(crate) fn jwt_config() -> Config {
    let namespace = comet_test_support::jwt::public_namespace();
    Config {
        jwt_secret: SECRET.into(),
        jwt_audience: "comet".into(),
        publish_api_key: API_KEY.into(),
        namespace,
        ..unlimited()
    }
}

pub(crate) fn hs256(claims: &Value, secret: &[u8]) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("token")
}

/// base64url without padding (RFC 7515 §2), by hand: for the forged `alg: none` token.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Five bad tokens (garbage last), each with the reason the `401` must give and the WebSocket close reason.
pub(crate) fn bad_tokens() -> Vec<(&'static str, String, &'static str, &'static str)> {
    let now = jsonwebtoken::get_current_timestamp();
    let grant = json!({"subscribe": ["*"], "publish": ["*"]});
    let claims = json!({"sub": "mallory", "exp": now + 60, "aud": "comet", "comet": grant});
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    );
    vec![
        ("alg none", none, "\"none\"", "invalid token"),
        (
            "another audience",
            hs256(
                &json!({"sub": "alice", "exp": now + 60, "aud": "billing", "comet": grant}),
                SECRET.as_bytes(),
            ),
            "another audience",
            "invalid token",
        ),
        (
            "expired",
            hs256(
                &json!({"sub": "alice", "exp": now - 30, "aud": "comet", "comet": grant}),
                SECRET.as_bytes(),
            ),
            "token expired",
            "token expired",
        ),
        (
            "not valid yet",
            hs256(
                &json!({"sub": "alice", "exp": now + 600, "nbf": now + 300, "aud": "comet", "comet": grant}),
                SECRET.as_bytes(),
            ),
            "not valid yet (nbf)",
            "invalid token",
        ),
        (
            "garbage",
            "eyJnYXJiYWdl.%%%.\u{1F4A3}".to_owned(),
            "malformed token",
            "invalid token",
        ),
    ]
}

/// A server with a JWT secret and an audience. `alg: none`, a token for another audience, an
/// expired token, garbage, and a token whose `nbf` is five minutes ahead (RFC 7519 §4.1.5): `401 unauthorized` saying why (and never repeating the token) on
/// every transport and on publish, whether the token comes by `?token=` or `Authorization`; a
/// WebSocket upgrade carrying one is refused before the `101`; one sent in an `auth` command gets
/// an `error` frame and then close 1008 with a reason.
#[tokio::test]
async fn bad_tokens_get_401_on_http_and_close_1008_on_websocket() {
    let server = start_server_with(jwt_config()).await;
    let crowd = Bystanders::start(&server, "public:calm", STEADY, Some(API_KEY)).await;
    let client = reqwest::Client::new();
    for (what, token, reason, close) in bad_tokens() {
        let check = |message: &str, how: &str| {
            assert!(
                message.contains(reason),
                "{what} {how}: {message:?} should say {reason:?}"
            );
            assert!(!message.contains(&token), "{what} {how}: the message repeats the token");
        };
        for transport in HTTP_TRANSPORTS {
            for channel in ["secret:x", "public:calm"] {
                let res = client
                    .get(server.url(&format!("/sub/{channel}")))
                    .query(&[("transport", transport), ("token", &token)])
                    .send();
                let res = recv_timeout(SOON, res).await.expect("request");
                check(&expect_error(res, 401, "unauthorized", what).await, transport);
            }
            let res = client
                .get(server.url(&format!("/sub/secret:x?transport={transport}")))
                .bearer_auth(&token)
                .send();
            let res = recv_timeout(SOON, res).await.expect("request");
            check(&expect_error(res, 401, "unauthorized", what).await, transport);
        }
        let res = client
            .post(server.url("/pub/secret:x"))
            .bearer_auth(&token)
            .body("forged")
            .send();
        let res = recv_timeout(SOON, res).await.expect("request");
        check(&expect_error(res, 401, "unauthorized", what).await, "publish");

        let query = token_param(&token);
        let (status, body) = ws_refused(&server, &format!("/sub/secret:x?{query}")).await;
        assert_eq!(status, 401, "{what}: ws upgrade");
        check(&error_body(&body, "unauthorized", what), "ws upgrade");

        let (mut ws, _) = recv_timeout(SOON, tokio_tungstenite::connect_async(server.ws_url("/ws")))
            .await
            .expect("an anonymous WebSocket");
        let command = json!({"type": "auth", "token": token, "ref": "a"}).to_string();
        recv_timeout(SOON, ws.send(WsMessage::text(command)))
            .await
            .expect("send");
        let error = next_ws_json(&mut ws).await;
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str(), error["ref"].as_str()),
            (Some("error"), Some("unauthorized"), Some("a")),
            "{what}: {error}"
        );
        check(error["message"].as_str().expect("message"), "ws auth");
        let (code, why) = ws_close(&mut ws).await;
        assert_eq!((code, why.as_str()), (1008, close), "{what}: ws auth");
    }
    // A credential is given, though odd, so it is checked (not taken for no credential, which
    // `public:` would let through): bytes that are not ASCII in `Authorization` or the cookie,
    // and `?token=` given twice.
    let (_, garbage, reason, _) = bad_tokens().pop().expect("the garbage token");
    let odd = http::HeaderValue::from_bytes(b"Bearer \xff\xfe").expect("obs-text header");
    let odd_cookie = http::HeaderValue::from_bytes(b"theme=\xff; comet_token=x.y.z").expect("obs-text header");
    let twice = format!(
        "/sub/public:calm?transport=poll&{}&{}",
        token_param(&garbage),
        token_param(&garbage)
    );
    for (what, req) in [
        (
            "Authorization not ASCII",
            client
                .get(server.url("/sub/public:calm?transport=poll"))
                .header("authorization", odd),
        ),
        (
            "cookie not ASCII",
            client
                .get(server.url("/sub/public:calm?transport=sse"))
                .header("cookie", odd_cookie),
        ),
        ("token twice", client.get(server.url(&twice))),
    ] {
        let res = recv_timeout(SOON, req.send()).await.expect("request");
        let message = expect_error(res, 401, "unauthorized", what).await;
        assert!(message.contains(reason), "{what}: {message}");
    }
    let published = get_json(&server, "/channels/secret:x").await;
    assert_eq!(published["last_id"], Value::Null, "nothing was published");
    crowd.finish().await;
}

/// `token=<token>` for a query string.
pub(crate) fn token_param(token: &str) -> String {
    let mut out = String::from("token=");
    for b in token.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// The next text frame as JSON (pings and pongs skipped).
pub(crate) async fn next_ws_json(ws: &mut Ws) -> Value {
    loop {
        match recv_timeout(SOON, ws.next()).await {
            Some(Ok(WsMessage::Text(text))) => return serde_json::from_str(&text).expect("JSON"),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Reads until the close frame: its code and reason.
pub(crate) async fn ws_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match recv_timeout(SOON, ws.next()).await {
            Some(Ok(WsMessage::Close(Some(frame)))) => return (u16::from(frame.code), frame.reason.to_string()),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// A validly signed token whose `exp` is `u64::MAX` (no clock reaches it) opens an SSE stream
/// and a WebSocket like any other: it never expires. Before, the deadline arithmetic overflowed
/// and the request's task panicked (the client saw its connection dropped).
#[tokio::test]
async fn a_token_that_expires_beyond_any_clock_never_expires() {
    let server = start_server_with(jwt_config()).await;
    let grant = json!({"subscribe": ["*"], "publish": ["*"]});
    let token = hs256(
        &json!({"sub": "methuselah", "exp": u64::MAX, "aud": "comet", "comet": grant}),
        SECRET.as_bytes(),
    );
    let res = recv_timeout(
        SOON,
        bystander_client()
            .get(server.url("/sub/secret:far?transport=sse"))
            .bearer_auth(&token)
            .send(),
    )
    .await
    .expect("SSE request");
    assert_eq!(res.status(), 200);
    let mut sse = comet_test_support::BodyReader::new(res);
    sse.until("the retry field", |buf| buf.contains("retry:")).await;
    let (mut ws, _) = recv_timeout(
        SOON,
        tokio_tungstenite::connect_async(server.ws_url(&format!("/ws?token={token}"))),
    )
    .await
    .expect("WebSocket handshake");
    ws.send(WsMessage::text(
        r#"{"type":"auth","token":"TOKEN"}"#.replace("TOKEN", &token),
    ))
    .await
    .unwrap();
    let answer = next_ws_json(&mut ws).await;
    assert_eq!(answer["type"], "authenticated", "{answer}");
    assert_eq!(answer["expires_at"], json!(u64::MAX));
    let crowd = Bystanders::start(&server, "public:far", STEADY, Some(API_KEY)).await;
    crowd.finish().await;
}
