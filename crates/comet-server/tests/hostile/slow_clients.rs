//! Slow and vanishing clients: request heads sent byte by byte or never finished (the header-read timeout), subscribers that go away without a word.

use crate::prelude::*;

// ---------------------------------------------------------------------------------------------
// Slowloris

/// A request head sent byte by byte, a head never finished, a connection that sends nothing, and
/// a keep-alive connection whose second head never ends: each is closed once
/// `header_read_timeout_secs` (1 s here) passes without a complete head, with no answer.
#[tokio::test]
async fn slow_or_unfinished_request_heads_are_closed_at_the_header_read_timeout() {
    let server = start_server_with(Config {
        header_read_timeout_secs: 1,
        ..unlimited()
    })
    .await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;

    // Byte by byte, 100 ms apart: the whole head would take 9 s.
    let request = head("GET", "/sub/slow?transport=sse", &["Accept: text/event-stream"]);
    assert!(request.len() > 90);
    let (mut rd, mut wr) = connect(server.addr).await.into_split();
    let reader = tokio::spawn(async move { read_until_closed(&mut rd, Duration::from_secs(20)).await });
    let mut sent = 0;
    for byte in &request {
        if reader.is_finished() || wr.write_all(std::slice::from_ref(byte)).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = join("the slow reader", Duration::from_secs(25), reader).await;
    assert!(answer.closed, "the slow head was not cut off: {:?}", answer.text());
    assert!(
        sent < request.len(),
        "the server waited for the whole slow head ({sent} bytes)"
    );
    assert_eq!(answer.text(), "", "no answer to a head that never completed");
    assert_eq!(subscribers(&server, "slow").await, 0);

    // Unfinished heads, an idle connection, and a keep-alive connection's second head.
    let mut clients = Vec::new();
    for partial in [
        &b"GET /sub/slow?transport=stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"[..],
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Never: ends",
        b"",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    ] {
        clients.push(tokio::spawn({
            let addr = server.addr;
            async move {
                let mut stream = connect(addr).await;
                stream.write_all(partial).await.expect("write");
                (partial, read_until_closed(&mut stream, Duration::from_secs(10)).await)
            }
        }));
    }
    for client in clients {
        let (partial, answer) = join("an unfinished head", Duration::from_secs(15), client).await;
        let what = String::from_utf8_lossy(partial);
        assert!(answer.closed, "{what:?} was left open");
        if partial.ends_with(b"\r\n\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n") {
            assert_eq!(answer.status(), Some(200), "the complete first request is answered");
            assert_eq!(answer.text().matches("HTTP/1.1").count(), 1, "{:?}", answer.text());
        } else {
            assert_eq!(answer.text(), "", "{what:?} got an answer");
        }
    }

    // Forty slow clients at once do not hold up anyone else.
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut stream = connect(server.addr).await;
        stream.write_all(b"GET /healthz HTTP/1.1\r\n").await.expect("write");
        slow.push(tokio::spawn(async move {
            read_until_closed(&mut stream, Duration::from_secs(10)).await
        }));
    }
    let res = recv_timeout(SOON, reqwest::get(server.url("/healthz")))
        .await
        .expect("healthz");
    assert_eq!(res.status(), 200);
    for client in slow {
        let answer = join("a slow client", Duration::from_secs(15), client).await;
        assert!(answer.closed && answer.bytes.is_empty(), "{answer:?}");
    }
    crowd.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Abandoned connections

/// A subscriber that sends its request and then vanishes without reading a byte (dropped, or
/// half-closed with `shutdown(Write)` and left unread) is cleaned up by the server: the channel's
/// subscriber count and the transport's open-subscriber gauge go back down. Heartbeats are 15 s
/// apart (the default), longer than the wait, so the server notices the end of the connection
/// itself rather than a failed heartbeat write.
#[tokio::test]
async fn abandoned_subscribers_are_cleaned_up() {
    let server = start_server_with(unlimited()).await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    let transports = [
        (Kind::Sse, "sse"),
        (Kind::Stream, "stream"),
        (Kind::Iframe, "iframe"),
        (Kind::LongPoll, "longpoll&timeout=120"),
        (Kind::WebSocket, "ws"),
    ];
    for (kind, transport) in transports {
        for half_close in [false, true] {
            let channel = format!("gone-{}-{}", kind.name(), if half_close { "half" } else { "drop" });
            let before = server.state.metrics.open_subscribers(kind);
            let request = if kind == Kind::WebSocket {
                ws_head(&format!("/sub/{channel}"))
            } else {
                head("GET", &format!("/sub/{channel}?transport={transport}"), &[])
            };
            let mut stream = connect(server.addr).await;
            stream.write_all(&request).await.expect("write");
            wait_subscribers(&server, &channel, 1, "the subscription opens").await;
            if half_close {
                stream.shutdown().await.expect("shutdown(Write)");
                wait_subscribers(&server, &channel, 0, "a half-closed subscriber is cleaned up").await;
                drop(stream);
            } else {
                drop(stream);
                wait_subscribers(&server, &channel, 0, "a vanished subscriber is cleaned up").await;
            }
            // The gauge is exact only where the bystander of that transport holds one steady
            // connection (the iframe one reconnects after its byte budget, long polls come and go).
            let steady = matches!(kind, Kind::Sse | Kind::Stream | Kind::WebSocket);
            let deadline = Instant::now() + Duration::from_secs(10);
            while steady && server.state.metrics.open_subscribers(kind) > before {
                assert!(
                    Instant::now() < deadline,
                    "{channel}: the open-subscriber gauge stays up"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    crowd.finish().await;
}
