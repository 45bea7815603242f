//! Publish bodies: too large, slow, not UTF-8, bad batches.

use crate::prelude::*;

// ---------------------------------------------------------------------------------------------
// Publish bodies

/// A body of `len` bytes sent chunked (no `Content-Length`), 64 KiB at a time.
pub(crate) fn chunked_body(len: usize) -> reqwest::Body {
    let chunks = (0..len.div_ceil(64 * 1024)).map(move |i| {
        let n = (len - i * 64 * 1024).min(64 * 1024);
        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'a'; n]))
    });
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

/// Bodies far over the limits get `413 too_large` with the JSON error (with or without a
/// `Content-Length`), and malformed batches `400 bad_body`: JSON garbage, the wrong shape, text
/// that is not UTF-8, nesting deeper than the parser allows. Nothing is published.
#[tokio::test]
async fn huge_and_malformed_publish_bodies_get_413_and_400() {
    let server = start_server_with(unlimited()).await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    let client = reqwest::Client::new();
    const TEN_MIB: usize = 10 * 1024 * 1024;
    for (path, limit) in [("/pub/big", "65536"), ("/pub", "1048576")] {
        for chunked in [false, true] {
            let body = if chunked {
                chunked_body(TEN_MIB)
            } else {
                reqwest::Body::from(vec![b'a'; TEN_MIB])
            };
            let what = format!("{path}, 10 MiB, chunked: {chunked}");
            let res = recv_timeout(Duration::from_secs(10), client.post(server.url(path)).body(body).send())
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let message = expect_error(res, 413, "too_large", &what).await;
            assert!(message.contains(limit), "{what}: {message}");
        }
    }
    let deep = "[".repeat(100_000);
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"{not json".to_vec()),
        ("truncated", br#"[{"channel":"big","data":"x"}"#.to_vec()),
        ("an object", br#"{"channel":"big","data":"x"}"#.to_vec()),
        ("a string", br#""big""#.to_vec()),
        ("null", b"null".to_vec()),
        ("empty", Vec::new()),
        ("not UTF-8", vec![b'[', b'"', 0xff, 0xfe, b'"', b']']),
        ("a lone surrogate", br#"[{"channel":"big","data":"\ud800"}]"#.to_vec()),
        ("nested 100,000 deep", deep.into_bytes()),
        ("trailing garbage", br#"[{"channel":"big","data":"x"}] ]"#.to_vec()),
    ];
    for (what, body) in garbage {
        let res = recv_timeout(SOON, client.post(server.url("/pub")).body(body).send())
            .await
            .expect("request");
        expect_error(res, 400, "bad_body", what).await;
    }
    // Half a million items of two bytes each: more than a 1 MiB body holds valid ones (at least
    // 26 bytes each), refused whole rather than answered with an error object for each
    // (that answer was 56 MB).
    let mut zeros = b"[0".to_vec();
    while zeros.len() < 1024 * 1024 - 3 {
        zeros.extend_from_slice(b",0");
    }
    zeros.push(b']');
    let res = recv_timeout(
        Duration::from_secs(10),
        client.post(server.url("/pub")).body(zeros).send(),
    )
    .await
    .expect("request");
    let message = expect_error(res, 413, "too_large", "half a million items").await;
    assert!(message.contains("524287 items"), "{message}");
    // A batch whose items are each wrong: one error each, in order, and the rest published.
    let batch = json!([
        {"channel": "big", "data": 5},
        {"channel": "big", "data": "x", "extra": true},
        {"channel": "bad channel", "data": "x"},
        {"channel": "big", "data": "a".repeat(70_000)},
        7,
    ]);
    let res = recv_timeout(SOON, client.post(server.url("/pub")).body(batch.to_string()).send())
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.expect("JSON");
    let codes: Vec<&str> = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["error"]["code"].as_str().unwrap_or("published"))
        .collect();
    assert_eq!(codes, ["bad_body", "bad_body", "bad_channel", "too_large", "bad_body"]);
    assert_eq!(get_json(&server, "/channels/big").await["last_id"], Value::Null);
    crowd.finish().await;
}

/// The JSON error code of a raw answer's body.
pub(crate) fn raw_error_code(answer: &Answer) -> String {
    let text = answer.text();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", cut(&text)));
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

/// Sends `head` and then all of `body` before reading anything, as Python's httpx does (it
/// writes the whole request first, and gives up with a write error if the connection is reset
/// meanwhile); then reads the answer. Returns the answer and whether every byte was written.
pub(crate) async fn send_all_then_read(addr: SocketAddr, head: Vec<u8>, body: &[u8]) -> (Answer, bool) {
    let mut stream = connect(addr).await;
    let mut wrote_all = stream.write_all(&head).await.is_ok();
    for chunk in body.chunks(256 * 1024) {
        if !wrote_all {
            break;
        }
        wrote_all = matches!(tokio::time::timeout(SOON, stream.write_all(chunk)).await, Ok(Ok(())));
    }
    (read_until_closed(&mut stream, SOON).await, wrote_all)
}

/// Point 5 of issue 16. A publish body sent a byte every 200 ms is answered `408 body_timeout`
/// at `body_read_timeout_secs` (1 s here) and its connection closed, although every byte came
/// well within the header-read timeout of the last. A client that writes a whole 16 MiB body
/// before it reads (past the 64 KiB message limit, and the 1 MiB batch limit), or a request body
/// on a connection refused at `max_connections_per_ip`, still reads its `413` or `429`: the
/// server closes lingering instead of resetting the connection under unread bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_get_408_and_clients_still_sending_read_their_413_or_429() {
    let server = start_server_with(Config {
        body_read_timeout_secs: 1,
        ..unlimited()
    })
    .await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;

    let (mut rd, mut wr) = connect(server.addr).await.into_split();
    let trickle = tokio::spawn(async move {
        let _ = wr.write_all(&head("POST", "/pub/slow", &["Content-Length: 100"])).await;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(b"x").await.is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let answer = read_until_closed(&mut rd, Duration::from_secs(8)).await;
    let took = started.elapsed();
    trickle.abort();
    assert_eq!(answer.status(), Some(408), "{:?}", cut(&answer.text()));
    assert_eq!(raw_error_code(&answer), "body_timeout");
    assert!(answer.closed, "the connection of a timed-out body stays open");
    assert!(took < Duration::from_secs(6), "answered after {took:?}");
    assert_eq!(get_json(&server, "/channels/slow").await["last_id"], Value::Null);

    let body = vec![b'a'; 16 * 1024 * 1024];
    for path in ["/pub/big", "/pub"] {
        let request = head("POST", path, &[&format!("Content-Length: {}", body.len())]);
        let (answer, wrote_all) = send_all_then_read(server.addr, request, &body).await;
        assert!(wrote_all, "{path}: the connection was reset under the client's body");
        assert_eq!(answer.status(), Some(413), "{path}: {:?}", cut(&answer.text()));
        assert_eq!(raw_error_code(&answer), "too_large", "{path}");
        assert!(answer.closed, "{path}");
    }
    crowd.finish().await;

    let refusing = start_server_with(Config {
        max_connections_per_ip: 1,
        ..unlimited()
    })
    .await;
    // The held connection sends its request: a listener accepts a connection once its first
    // bytes are in (TCP_DEFER_ACCEPT), so until then it holds no place.
    let mut held = connect(refusing.addr).await;
    held.write_all(&head("GET", "/sub/held?transport=sse", &["Accept: text/event-stream"]))
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let request = head("POST", "/pub/x", &[&format!("Content-Length: {}", body.len())]);
    let (answer, wrote_all) = send_all_then_read(refusing.addr, request, &body).await;
    assert!(wrote_all, "the refused connection was reset under the client's body");
    assert_eq!(answer.status(), Some(429), "{:?}", cut(&answer.text()));
    assert_eq!(raw_error_code(&answer), "too_many_connections");
    drop(held);
}

/// Point 2 of issue 16. Polls and long polls with a cursor (here the cursor of a real channel,
/// so they pass the cursor check) of 2,000 channel names nobody publishes to: each is answered,
/// and none leaves state behind (the node holds none of them, without waiting for a sweep), so
/// a flood of them cannot grow the server. That such polls count against
/// `subscribes_per_sec_per_ip` is tested in limits.rs (`subscribes_per_second`); memory is
/// measured by `bench/hostile-memory polls`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_of_channels_nobody_publishes_to_leave_no_state() {
    let server = start_server_with(unlimited()).await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    let cursor = server.publish("real", "x").await;
    let client = bystander_client();
    for i in 0..2_000 {
        let transport = if i % 10 == 0 { "longpoll&timeout=0" } else { "poll" };
        let url = server.url(&format!("/sub/random-{i}?transport={transport}&since={cursor}"));
        let res = recv_timeout(SOON, client.get(url).send()).await.expect("poll");
        assert_eq!(res.status(), 200, "poll {i}");
        let v: Value = res.json().await.expect("poll answer");
        assert_eq!(v["messages"], json!([]), "poll {i}: {v}");
    }
    let held: Vec<String> = (0..2_000)
        .map(|i| format!("random-{i}"))
        .filter(|name| server.state.broker.holds(&comet_core::ChannelName::new(name).unwrap()))
        .collect();
    assert!(
        held.is_empty(),
        "state left for {} channels: {:?}",
        held.len(),
        &held[..held.len().min(5)]
    );
    assert!(
        server
            .state
            .broker
            .holds(&comet_core::ChannelName::new("real").unwrap())
    );
    crowd.finish().await;
}
