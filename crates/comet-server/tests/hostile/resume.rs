//! Resume positions, cookies from other sites, numeric refs (issue 16, points 3, 4 and 8).

use crate::prelude::*;

// ---------------------------------------------------------------------------------------------
// Resume positions, cookies from other sites, numeric refs (issue 16, points 3, 4 and 8)

/// A resume position naming 20,000 channels (a `Last-Event-ID` of 200 KB): `400 bad_cursor`
/// saying how many are allowed, on every transport and for the WebSocket `subscribe` command,
/// parsed in linear time (the cap is checked before any entry is read); a position of the
/// allowed size still resumes.
#[tokio::test]
async fn a_resume_position_of_twenty_thousand_channels_is_a_clear_400() {
    let server = start_server_with(unlimited()).await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    let position: Vec<String> = (0..20_000).map(|i| format!("c{i}=0-0")).collect();
    let position = position.join(",");
    let client = reqwest::Client::new();
    for transport in HTTP_TRANSPORTS {
        let res = client
            .get(server.url(&format!("/sub/c1,c2?transport={transport}")))
            .header("last-event-id", &position)
            .send();
        let res = recv_timeout(SOON, res).await.expect("request");
        let message = expect_error(res, 400, "bad_cursor", transport).await;
        assert!(
            message.contains("20000 channels") && message.contains("at most 64"),
            "{transport}: {message}"
        );
        assert!(
            message.len() < 400,
            "{transport}: the answer quotes the position in full"
        );
    }
    let (mut ws, _) = recv_timeout(SOON, tokio_tungstenite::connect_async(server.ws_url("/ws")))
        .await
        .expect("a WebSocket");
    // Over WebSocket a command is bounded by ws_max_message_size: 100 entries are over the cap.
    let hundred: Vec<String> = (0..100).map(|i| format!("c{i}=0-0")).collect();
    let command = json!({"type": "subscribe", "channel": "c1", "since": hundred.join(","), "ref": "big"});
    recv_timeout(SOON, ws.send(WsMessage::text(command.to_string())))
        .await
        .expect("send");
    let error = next_ws_json(&mut ws).await;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str(), error["ref"].as_str()),
        (Some("error"), Some("bad_cursor"), Some("big")),
        "{error}"
    );
    // The socket stays usable.
    let ping = json!({"type": "ping", "ref": "after"}).to_string();
    recv_timeout(SOON, ws.send(WsMessage::text(ping))).await.expect("send");
    assert_eq!(next_ws_json(&mut ws).await["type"], "pong");
    // 64 entries (the default max_channels_per_connection) are a position, not an attack.
    let cursor = get_json(&server, "/sub/c1?transport=poll").await["cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    let mut allowed: Vec<String> = (2..65).map(|i| format!("c{i}={cursor}")).collect();
    allowed.push(format!("c1={cursor}"));
    let res = client
        .get(server.url("/sub/c1?transport=poll"))
        .header("last-event-id", allowed.join(","))
        .send();
    let res = recv_timeout(SOON, res).await.expect("request");
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    crowd.finish().await;
}

/// A grant for `secret:*` (publish and subscribe), valid for a minute.
pub(crate) fn cookie_token() -> String {
    let now = jsonwebtoken::get_current_timestamp();
    hs256(
        &json!({"sub": "alice", "exp": now + 60, "aud": "comet", "comet": {"subscribe": ["secret:*"], "publish": ["secret:*"]}}),
        SECRET.as_bytes(),
    )
}

/// A WebSocket handshake on `path` with these extra headers: `Ok` when it was accepted, else
/// its status.
pub(crate) async fn ws_with_headers(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> Result<(), u16> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = server.ws_url(path).into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    match recv_timeout(SOON, tokio_tungstenite::connect_async(request)).await {
        Ok(_) => Ok(()),
        Err(WsError::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("the handshake to {path}: {e}"),
    }
}

/// With a JWT key and `allowed_origins` left empty (the defaults), the `comet_token` cookie
/// counts only on same-origin requests: a page of another site that makes the browser open a
/// WebSocket, subscribe or POST a publish with the victim's cookie is anonymous (`401` where
/// tokens are required). Its own origin, requests without `Origin` (no browser, or a browser's
/// own navigation), listed origins, and tokens given explicitly from anywhere work as before.
#[tokio::test]
async fn cookies_sent_by_pages_of_other_sites_are_not_credentials() {
    let server = start_server_with(jwt_config()).await;
    let crowd = Bystanders::start(&server, "public:calm", STEADY, Some(API_KEY)).await;
    let cookie = format!("comet_token={}", cookie_token());
    let own = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let subscribe = |headers: Vec<(&'static str, String)>| {
        let mut req = client.get(server.url("/sub/secret:a?transport=poll"));
        for (name, value) in headers {
            req = req.header(name, value);
        }
        req.send()
    };
    let evil = "https://evil.example".to_owned();
    for (what, headers, status) in [
        (
            "cross-site",
            vec![("cookie", cookie.clone()), ("origin", evil.clone())],
            401,
        ),
        (
            "cross-site, no Origin",
            vec![("cookie", cookie.clone()), ("sec-fetch-site", "cross-site".into())],
            401,
        ),
        (
            "same origin",
            vec![("cookie", cookie.clone()), ("origin", own.clone())],
            200,
        ),
        ("no Origin", vec![("cookie", cookie.clone())], 200),
        (
            "same origin by Fetch Metadata",
            vec![("cookie", cookie.clone()), ("sec-fetch-site", "same-origin".into())],
            200,
        ),
        (
            "a bearer token from another site",
            vec![
                ("authorization", format!("Bearer {}", cookie_token())),
                ("origin", evil.clone()),
            ],
            200,
        ),
    ] {
        let res = recv_timeout(SOON, subscribe(headers)).await.expect("request");
        assert_eq!(res.status(), status, "{what}: {:?}", res.text().await);
    }
    // Cross-site WebSocket hijacking: the handshake is anonymous, so refused before the 101.
    assert_eq!(
        ws_with_headers(&server, "/sub/secret:a", &[("cookie", &cookie), ("origin", &evil)]).await,
        Err(401)
    );
    assert_eq!(
        ws_with_headers(&server, "/sub/secret:a", &[("cookie", &cookie), ("origin", &own)]).await,
        Ok(())
    );
    // CSRF: a form POST from another site publishes nothing.
    for (origin, status) in [(&evil, 401), (&own, 201)] {
        let res = client
            .post(server.url("/pub/secret:a"))
            .header("cookie", &cookie)
            .header("origin", origin)
            .body("from a page")
            .send();
        let res = recv_timeout(SOON, res).await.expect("request");
        assert_eq!(res.status(), status, "publish from {origin}: {:?}", res.text().await);
    }
    let info = get_json(&server, "/channels/secret:a").await;
    assert_eq!(
        info["last_id"].as_str().map(|id| id.ends_with("-1")),
        Some(true),
        "one publish: {info}"
    );
    crowd.finish().await;

    // A listed origin may use the cookie, as before.
    let server = start_server_with(Config {
        allowed_origins: vec!["https://app.example".into()],
        ..jwt_config()
    })
    .await;
    let res = client
        .get(server.url("/sub/secret:a?transport=poll"))
        .header("cookie", &cookie)
        .header("origin", "https://app.example")
        .send();
    assert_eq!(recv_timeout(SOON, res).await.expect("request").status(), 200);
}

/// Clients of other push servers number their requests: a numeric `ref` is taken on every
/// command and echoed back as it came (a number stays a number); a `ref` that is neither a
/// string nor a number is a clear error, and the socket stays open.
#[tokio::test]
async fn websocket_commands_take_numeric_refs() {
    let server = start_server_with(unlimited()).await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    let (mut ws, _) = recv_timeout(SOON, tokio_tungstenite::connect_async(server.ws_url("/ws")))
        .await
        .expect("a WebSocket");
    let mut send = async |command: Value| {
        recv_timeout(SOON, ws.send(WsMessage::text(command.to_string())))
            .await
            .expect("send");
        next_ws_json(&mut ws).await
    };
    let ack = send(json!({"type": "publish", "channel": "refs", "data": "x", "ref": 7})).await;
    assert_eq!((ack["type"].as_str(), &ack["ref"]), (Some("ack"), &json!(7)), "{ack}");
    let pong = send(json!({"type": "ping", "ref": 12.5})).await;
    assert_eq!(pong["ref"], json!(12.5), "{pong}");
    let error = send(json!({"type": "publish", "channel": "bad name!", "data": "x", "ref": 8})).await;
    assert_eq!(
        (error["type"].as_str(), &error["ref"]),
        (Some("error"), &json!(8)),
        "{error}"
    );
    let error = send(json!({"type": "ping", "ref": {"n": 1}})).await;
    assert_eq!(error["code"], "bad_request", "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("a string or a number")),
        "{error}"
    );
    let pong = send(json!({"type": "ping", "ref": "s"})).await;
    assert_eq!(pong["ref"], "s", "{pong}");
    crowd.finish().await;
}
