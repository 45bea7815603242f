//! Oversized request heads, bad channel lists, percent-encoding and callbacks.

use crate::prelude::*;

// ---------------------------------------------------------------------------------------------
// Oversized request heads

/// Writes `request` while reading the answer, until the server closes the connection. The
/// server may answer and close before it has read everything; the write then fails, and the
/// answer is still read.
pub(crate) async fn exchange_large(addr: SocketAddr, request: Vec<u8>) -> Answer {
    let (mut rd, mut wr) = connect(addr).await.into_split();
    let writer = tokio::spawn(async move {
        for chunk in request.chunks(64 * 1024) {
            match tokio::time::timeout(SOON, wr.write_all(chunk)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    });
    let answer = read_until_closed(&mut rd, Duration::from_secs(10)).await;
    writer.abort();
    answer
}

/// 10 MiB of request headers get hyper's `431 Request Header Fields Too Large` (hyper stops
/// reading at its buffer limit, about 400 KiB, answers and closes), as do more header fields
/// than hyper parses (100); a request target over 64 KiB gets `414 URI Too Long`. These answers
/// come from hyper before any handler runs, so they have no JSON body. The server serves on.
#[tokio::test]
async fn oversized_request_heads_get_431_or_414_and_the_server_serves_on() {
    let server = start_server_with(unlimited()).await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    for target in ["/healthz", "/sub/big?transport=sse", "/sub/big?transport=poll"] {
        let mut request = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: ").into_bytes();
        request.resize(request.len() + 10 * 1024 * 1024, b'a');
        request.extend_from_slice(b"\r\n\r\n");
        let answer = exchange_large(server.addr, request).await;
        assert!(answer.closed, "{target}: the connection was left open");
        assert_eq!(answer.status(), Some(431), "{target}: {:?}", cut(&answer.text()));

        let mut request = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
        for i in 0..1000 {
            request.extend_from_slice(format!("X-Field-{i}: {i}\r\n").as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        let answer = exchange_large(server.addr, request).await;
        assert!(answer.closed, "{target}: the connection was left open");
        assert_eq!(answer.status(), Some(431), "{target}: {:?}", cut(&answer.text()));
    }
    // A request target of 70,000 bytes (hyper's limit is 65,534).
    let target = format!("/sub/calm?transport=poll&pad={}", "p".repeat(70_000));
    let answer = exchange_large(server.addr, head("GET", &target, &[])).await;
    assert!(answer.closed);
    assert_eq!(answer.status(), Some(414), "{:?}", cut(&answer.text()));
    assert_eq!(subscribers(&server, "big").await, 0);
    crowd.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Bad channel lists, percent-encoding and callbacks

/// The transports of a subscribe request by URL, as `?transport=` values; the WebSocket is
/// asked for with an upgrade (see [`ws_refused`]).
pub(crate) const HTTP_TRANSPORTS: [&str; 5] = ["poll", "longpoll", "stream", "iframe", "sse"];

/// A WebSocket handshake on `path` that must be refused before the `101`: its status and body.
pub(crate) async fn ws_refused(server: &TestServer, path: &str) -> (u16, String) {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match recv_timeout(SOON, tokio_tungstenite::connect_async(server.ws_url(path))).await {
        Err(WsError::Http(res)) => {
            let body = res.body().clone().unwrap_or_default();
            (res.status().as_u16(), String::from_utf8_lossy(&body).into_owned())
        }
        Ok(_) => panic!("the handshake to {} was accepted", cut(path)),
        Err(e) => panic!("the handshake to {}: {e}", cut(path)),
    }
}

/// Checks a JSON error body; returns the message.
pub(crate) fn error_body(body: &str, code: &str, what: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", cut(body)));
    assert_eq!(v["error"]["code"], code, "{what}: {v}");
    v["error"]["message"].as_str().expect("message").to_owned()
}

/// A GET on every transport (and a WebSocket upgrade) of `path_and_query` (which already has a
/// `?`) must fail with `status` and `code`; returns the messages.
pub(crate) async fn refused_everywhere(
    server: &TestServer,
    path_and_query: &str,
    status: u16,
    code: &str,
) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut messages = Vec::new();
    for transport in HTTP_TRANSPORTS {
        let url = server.url(&format!("{path_and_query}&transport={transport}"));
        let res = recv_timeout(SOON, client.get(&url).send()).await.expect("request");
        messages.push(expect_error(res, status, code, &format!("{transport}: {}", cut(path_and_query))).await);
    }
    let (got, body) = ws_refused(server, path_and_query).await;
    assert_eq!(got, status, "ws: {}", cut(path_and_query));
    messages.push(error_body(&body, code, &format!("ws: {}", cut(path_and_query))));
    messages
}

/// 10,000 channels in one subscription URL: `400 too_many_channels` saying how many are
/// allowed, on every transport, without a subscription being opened.
#[tokio::test]
async fn ten_thousand_channels_in_one_url_are_a_clear_400() {
    let server = start_server_with(unlimited()).await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    let list: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
    let path = format!("/sub/{}?x=1", list.join(","));
    for message in refused_everywhere(&server, &path, 400, "too_many_channels").await {
        assert!(
            message.contains("10000 channels") && message.contains("at most 64"),
            "{message}"
        );
    }
    for channel in ["c0", "c9999"] {
        assert_eq!(subscribers(&server, channel).await, 0, "{channel}");
    }
    crowd.finish().await;
}

/// Invalid percent-encoding (bytes that are not UTF-8 once decoded, `%` without two hex digits,
/// control characters) in the channel path and in query values: `400` with the code of the part
/// that is wrong, on every transport; and on the publish and channel-info routes.
#[tokio::test]
async fn invalid_percent_encoding_is_a_clear_400() {
    let server = start_server_with(unlimited()).await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    for (path, code) in [
        ("/sub/%FF?x=1", "bad_channel"),
        ("/sub/%C3%28?x=1", "bad_channel"),
        ("/sub/%ZZ?x=1", "bad_channel"),
        ("/sub/ok%?x=1", "bad_channel"),
        ("/sub/%00?x=1", "bad_channel"),
        ("/sub/a%0Ab?x=1", "bad_channel"),
        ("/sub/ok?since=%FF", "bad_cursor"),
        ("/sub/ok?since=%ZZ", "bad_cursor"),
        ("/sub/ok?since=1-%00", "bad_cursor"),
        ("/sub/ok?last_event_id=%E0%80", "bad_cursor"),
    ] {
        refused_everywhere(&server, path, 400, code).await;
    }
    let client = reqwest::Client::new();
    for (method, path, code) in [
        ("GET", "/sub/ok?transport=%FF", "bad_transport"),
        ("GET", "/sub/ok?transport=%ZZ", "bad_transport"),
        ("GET", "/sub/ok?transport=longpoll&timeout=%FF", "bad_timeout"),
        ("GET", "/sub/ok?transport=iframe&callback=%FF", "bad_callback"),
        ("GET", "/sub/ok?transport=iframe&callback=%ZZ", "bad_callback"),
        ("POST", "/pub/%FF", "bad_channel"),
        ("POST", "/pub/%ZZ", "bad_channel"),
        ("POST", "/pub/ok?event=%FF", "bad_event"),
        ("POST", "/pub/ok?event=%0A", "bad_event"),
        ("GET", "/channels/%FF", "bad_channel"),
        ("GET", "/channels/%ZZ", "bad_channel"),
    ] {
        let req = match method {
            "POST" => client.post(server.url(path)).body("x"),
            _ => client.get(server.url(path)),
        };
        let res = recv_timeout(SOON, req.send()).await.expect("request");
        expect_error(res, 400, code, &format!("{method} {path}")).await;
    }
    // A raw byte that is not ASCII in the request target is refused by hyper's parser (400, no
    // handler runs, so no JSON body).
    for target in [&b"/sub/\xff?transport=poll"[..], b"/sub/ok?transport=sse&since=\xff"] {
        let mut request = b"GET ".to_vec();
        request.extend_from_slice(target);
        request.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let answer = exchange(server.addr, &request).await;
        assert!(answer.closed);
        assert_eq!(answer.status(), Some(400), "{:?}", answer.text());
    }
    assert_eq!(
        get_json(&server, "/channels/ok").await["last_id"],
        Value::Null,
        "nothing was published"
    );
    crowd.finish().await;
}

pub(crate) async fn get_json(server: &TestServer, path: &str) -> Value {
    let res = recv_timeout(SOON, reqwest::get(server.url(path)))
        .await
        .expect("request");
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.expect("JSON")
}

/// `callback` values that try to run script or break out of the `<script>`: `400 bad_callback`,
/// and the answer repeats none of it (it is an error page an iframe may show).
#[tokio::test]
async fn callback_injection_on_the_iframe_transport_is_refused_and_not_reflected() {
    let server = start_server_with(unlimited()).await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    let client = reqwest::Client::new();
    for evil in [
        "alert(1)//",
        "</script><script>alert(1)</script>",
        "x\"};alert(1);//",
        "a.b(document.cookie)",
        "cb\nalert(1)",
        "a;alert(1)",
        "<img src=x onerror=alert(1)>",
        "\u{2028}alert(1)",
        "ａlert",
        &format!("a{}", "b".repeat(64)),
    ] {
        let res = recv_timeout(
            SOON,
            client
                .get(server.url("/sub/victim"))
                .query(&[("transport", "iframe"), ("callback", evil)])
                .send(),
        )
        .await
        .expect("request");
        assert_eq!(
            res.headers()["content-type"],
            "application/json",
            "{evil:?}: the error is not a page"
        );
        let body = res.text().await.expect("body");
        error_body(&body, "bad_callback", evil);
        assert!(
            !body.contains(evil) && !body.contains("alert") && !body.contains('<'),
            "{evil:?} is reflected: {body}"
        );
    }
    // Given twice, the second one cannot slip past the first.
    let res = recv_timeout(
        SOON,
        client
            .get(server.url("/sub/victim?transport=iframe&callback=ok&callback=alert(1)"))
            .send(),
    )
    .await
    .expect("request");
    let message = expect_error(res, 400, "bad_request", "callback twice").await;
    assert!(!message.contains("alert"), "{message}");
    assert_eq!(subscribers(&server, "victim").await, 0);
    crowd.finish().await;
}
