//! Poll, long-poll, stream, iframe and SSE against a real listener with real clients (reqwest):
//! receive, resume with exactly the missed messages, gap notices, shutdown.

use comet_test_support as support;

use std::time::Duration;

use comet_server::Config;
use serde_json::Value;
use support::*;

fn small_history(n: usize) -> Config {
    Config {
        history_size: n,
        ..Config::default()
    }
}

fn data(msgs: &Value) -> Vec<String> {
    msgs.as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn poll_answers_at_once_and_resumes_from_its_cursor() {
    let server = start_server().await;
    let first = get_json(&server.url("/sub/p?transport=poll"), 200).await;
    assert_eq!(first["messages"], serde_json::json!([]));
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    for i in 1..=3 {
        server.publish("p", &format!("m{i}")).await;
    }
    let next = get_json(&server.url(&format!("/sub/p?transport=poll&since={cursor}")), 200).await;
    assert_eq!(data(&next["messages"]), ["m1", "m2", "m3"]);
    let m = &next["messages"][0];
    assert_eq!(m["channel"], "p");
    assert_eq!(m["event"], "message");
    assert!(m["time"].as_u64().unwrap() > 1_700_000_000_000);
    let cursor = next["cursor"].as_str().unwrap();
    assert_eq!(cursor, next["messages"][2]["id"]);
    let again = get_json(&server.url(&format!("/sub/p?transport=poll&since={cursor}")), 200).await;
    assert_eq!(again["messages"], serde_json::json!([]));
    assert_eq!(again["cursor"], cursor);
    assert!(again.get("gap").is_none());
}

/// A poll answer stops at `max_batch_bytes` of message data (the message that reaches it
/// included) and says `"more": true`; polling on from its cursor gets the rest, each message
/// once and in order, and a long poll is cut the same way.
#[tokio::test]
async fn poll_answers_stop_at_max_batch_bytes_and_say_more() {
    let server = start_server_with(Config {
        max_batch_bytes: 100_000,
        publishes_per_sec: 0,
        ..Config::default()
    })
    .await;
    for i in 0..10 {
        server.publish("big", &format!("{i}:{}", "x".repeat(30_000))).await;
    }
    let mut cursor = "earliest".to_owned();
    let mut seen = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..10 {
        let v = get_json(&server.url(&format!("/sub/big?transport=poll&since={cursor}")), 200).await;
        let got = data(&v["messages"]);
        answers.push((got.len(), v.get("more").is_some()));
        seen.extend(got.iter().map(|d| d.split(':').next().unwrap().to_owned()));
        cursor = v["cursor"].as_str().unwrap().to_owned();
        if got.is_empty() {
            break;
        }
    }
    assert_eq!(
        answers,
        [(4, true), (4, true), (2, false), (0, false)],
        "four messages of 30 kB reach 100,000 bytes"
    );
    assert_eq!(seen, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    let held = get_json(&server.url("/sub/big?transport=longpoll&since=earliest"), 200).await;
    assert_eq!(data(&held["messages"]).len(), 4);
    assert_eq!(held["more"], true);
}

#[tokio::test]
async fn poll_reports_a_gap_when_history_no_longer_reaches_the_cursor() {
    let server = start_server_with(small_history(2)).await;
    let first = server.publish("g", "1").await;
    for i in 2..=5 {
        server.publish("g", &i.to_string()).await;
    }
    let answer = get_json(&server.url(&format!("/sub/g?transport=poll&since={first}")), 200).await;
    assert_eq!(answer["gap"], true);
    assert_eq!(answer["gaps"], serde_json::json!(["g"]));
    assert_eq!(data(&answer["messages"]), ["4", "5"]);
    let all = get_json(&server.url("/sub/g?transport=poll&since=earliest"), 200).await;
    assert_eq!(data(&all["messages"]), ["4", "5"]);
}

#[tokio::test]
async fn longpoll_holds_until_a_message_arrives() {
    let server = start_server().await;
    let cursor = get_json(&server.url("/sub/lp?transport=poll"), 200).await["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = server.url(&format!("/sub/lp?since={cursor}")); // longpoll is the default transport
    let held = tokio::spawn(async move { reqwest::get(url).await.unwrap().json::<Value>().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "a long-poll with nothing new must wait");
    server.publish("lp", "wake").await;
    let answer = recv_timeout(SOON, held).await.unwrap();
    assert_eq!(data(&answer["messages"]), ["wake"]);
}

#[tokio::test]
async fn longpoll_returns_what_arrived_between_polls_together_in_order() {
    let server = start_server().await;
    let first = server.publish("lp2", "a").await;
    server.publish("lp2", "b").await;
    server.publish("lp2", "c").await;
    let answer = get_json(&server.url(&format!("/sub/lp2?transport=longpoll&since={first}")), 200).await;
    assert_eq!(data(&answer["messages"]), ["b", "c"]);
}

#[tokio::test]
async fn longpoll_times_out_with_an_empty_answer_and_rejects_bad_timeouts() {
    let server = start_server().await;
    let started = std::time::Instant::now();
    let answer = recv_timeout(
        SOON,
        get_json(&server.url("/sub/lp3?transport=longpoll&timeout=1"), 200),
    )
    .await;
    assert_eq!(answer["messages"], serde_json::json!([]));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "answered before the timeout"
    );
    let err = get_json(&server.url("/sub/lp3?transport=longpoll&timeout=soon"), 400).await;
    assert_eq!(err["error"]["code"], "bad_timeout");
}

#[tokio::test]
async fn stream_delivers_ndjson_and_resumes_with_exactly_the_missed_messages() {
    let server = start_server().await;
    let res = reqwest::get(server.url("/sub/s?transport=stream")).await.unwrap();
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let mut body = BodyReader::new(res);
    server.publish("s", "one").await;
    server.publish("s", "two\nlines").await;
    body.until("two lines", |b| b.matches('\n').count() >= 2).await;
    let lines = body.json_lines();
    assert_eq!(lines[1]["data"], "two\nlines");
    let last = lines[1]["id"].as_str().unwrap().to_owned();
    drop(body);
    server.publish("s", "three").await;
    server.publish("s", "four").await;
    let res = reqwest::get(server.url(&format!("/sub/s?transport=stream&since={last}")))
        .await
        .unwrap();
    let mut body = BodyReader::new(res);
    body.until("the missed two", |b| b.matches('\n').count() >= 2).await;
    let got: Vec<Value> = body.json_lines().iter().map(|l| l["data"].clone()).collect();
    assert_eq!(got, ["three", "four"]);
}

#[tokio::test]
async fn stream_sends_a_gap_line_and_an_optional_prelude() {
    let server = start_server_with(small_history(1)).await;
    let first = server.publish("sg", "1").await;
    server.publish("sg", "2").await;
    server.publish("sg", "3").await;
    let res = reqwest::get(server.url(&format!("/sub/sg?transport=stream&prelude=1&since={first}")))
        .await
        .unwrap();
    let mut body = BodyReader::new(res);
    body.until("gap and message", |b| b.matches('\n').count() >= 3).await;
    assert!(body.buf.starts_with(&" ".repeat(2048)));
    let lines = body.json_lines();
    assert_eq!(
        (lines[0]["type"].as_str(), lines[0]["channel"].as_str()),
        (Some("gap"), Some("sg"))
    );
    let resumed = lines[0]["cursor"].as_str().unwrap();
    assert!(resumed.ends_with("-2"), "delivery resumes after offset 2: {resumed}");
    assert_eq!(lines[1]["data"], "3");
}

#[tokio::test]
async fn iframe_streams_escaped_script_chunks_and_rejects_bad_callbacks() {
    let server = start_server().await;
    let res = reqwest::get(server.url("/sub/f?transport=iframe&callback=app.onMsg"))
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    let mut body = BodyReader::new(res);
    body.until("prelude", |b| b.contains("-->")).await;
    assert!(body.buf.len() > 1024, "prelude must pad past 1 KiB");
    let evil = "</script><script>alert(1)</script>\u{2028}";
    server.publish("f", evil).await;
    body.until("the chunk", |b| b.contains(")</script>")).await;
    assert_eq!(
        body.buf.matches("</script>").count(),
        2,
        "only the prelude's and the chunk's own end tags"
    );
    assert!(!body.buf.contains('\u{2028}'));
    assert_eq!(body.iframe_calls()[0]["data"], evil);
    for bad in ["alert(1)", "1x", "a-b", ""] {
        let url = server.url(&format!("/sub/f?transport=iframe&callback={}", urlencode(bad)));
        let err = get_json(&url, 400).await;
        assert_eq!(err["error"]["code"], "bad_callback", "{bad:?}");
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn iframe_ends_after_its_byte_budget_and_resumes_from_the_reconnect_cursor() {
    let server = start_server_with(Config {
        iframe_budget: 600,
        ..Config::default()
    })
    .await;
    let res = reqwest::get(server.url("/sub/fb?transport=iframe")).await.unwrap();
    let mut body = BodyReader::new(res);
    body.until("prelude", |b| b.contains("-->")).await;
    for i in 0..8 {
        server.publish("fb", &format!("{i:0>100}")).await;
    }
    body.read_to_end().await;
    assert!(body.buf.ends_with("</body></html>\n"));
    let calls = body.iframe_calls();
    let reconnect = calls.last().unwrap();
    assert_eq!(reconnect["type"], "reconnect");
    let got = calls.len() - 1;
    assert!(got < 8, "the budget must end the document early");
    let cursor = reconnect["cursor"].as_str().unwrap();
    let res = reqwest::get(server.url(&format!("/sub/fb?transport=iframe&since={cursor}")))
        .await
        .unwrap();
    let mut more = BodyReader::new(res);
    more.until("the rest", |b| b.matches(")</script>").count() >= 8 - got)
        .await;
    let mut all: Vec<Value> = calls[..got].iter().map(|c| c["data"].clone()).collect();
    all.extend(more.iframe_calls().iter().take(8 - got).map(|c| c["data"].clone()));
    let expected: Vec<String> = (0..8).map(|i| format!("{i:0>100}")).collect();
    assert_eq!(all, expected, "nothing lost or doubled across the reopen");
}

#[tokio::test]
async fn sse_headers_retry_and_raw_multiline_data() {
    let server = start_server().await;
    let res = reqwest::Client::new()
        .get(server.url("/sub/e"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream; charset=utf-8");
    assert!(res.headers()["cache-control"].to_str().unwrap().contains("no-cache"));
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    let mut body = BodyReader::new(res);
    body.until("retry", |b| b.contains("\n\n")).await;
    assert!(body.buf.starts_with("retry: 3000\nid: "), "{:?}", body.buf);
    reqwest::Client::new()
        .post(server.url("/pub/e?event=update"))
        .body("line1\r\nline2\rline3\nline4")
        .send()
        .await
        .unwrap();
    body.until("event", |b| b.contains("line4")).await;
    body.until("event end", |b| b.ends_with("\n\n")).await;
    let events = body.sse_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1, "update");
    assert_eq!(events[0].2, "line1\nline2\nline3\nline4");
    assert!(
        body.buf
            .contains("data: line1\ndata: line2\ndata: line3\ndata: line4\n\n")
    );
}

#[tokio::test]
async fn sse_resumes_from_last_event_id_with_exactly_the_missed_messages() {
    let server = start_server().await;
    let client = reqwest::Client::new();
    let sse = |extra: Option<&str>, query: &str| {
        let mut req = client
            .get(server.url(&format!("/sub/r{query}")))
            .header("accept", "text/event-stream");
        if let Some(id) = extra {
            req = req.header("last-event-id", id);
        }
        req.send()
    };
    let mut body = BodyReader::new(sse(None, "").await.unwrap());
    body.until("start", |b| b.contains("\n\n")).await;
    server.publish("r", "1").await;
    body.until("1", |b| b.contains("data: 1\n\n")).await;
    let last = body.sse_events()[0].0.clone();
    drop(body);
    server.publish("r", "2").await;
    server.publish("r", "3").await;
    // Header (what EventSource sends), then the query parameter; the header wins over `since`.
    for (header, query) in [
        (Some(last.as_str()), "?since=earliest".to_owned()),
        (None, format!("?last_event_id={last}")),
    ] {
        let mut body = BodyReader::new(sse(header, &query).await.unwrap());
        body.until("2 and 3", |b| b.contains("data: 3\n\n")).await;
        let got: Vec<String> = body.sse_events().into_iter().map(|e| e.2).collect();
        assert_eq!(got, ["2", "3"], "{query}");
    }
}

#[tokio::test]
async fn sse_gap_event_and_composite_ids_for_several_channels() {
    let server = start_server_with(small_history(1)).await;
    let old = server.publish("x", "x1").await;
    server.publish("x", "x2").await;
    server.publish("x", "x3").await;
    let client = reqwest::Client::new();
    let res = client
        .get(server.url(&format!("/sub/x,y?since=x%3D{old}")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut body = BodyReader::new(res);
    body.until("gap + x3", |b| b.contains("x3")).await;
    body.until("end of event", |b| b.ends_with("\n\n")).await;
    let events = body.sse_events();
    assert_eq!(events[0].1, "comet.gap");
    assert_eq!(events[0].2, "x");
    let env: Value = serde_json::from_str(&events[1].2).unwrap();
    assert_eq!(env["data"], "x3");
    assert_eq!(env["channel"], "x");
    let position = events[1].0.clone();
    assert!(position.starts_with("x=") && position.contains(",y="), "{position}");
    drop(body);
    server.publish("y", "y1").await;
    server.publish("x", "x4").await;
    let res = client
        .get(server.url("/sub/x,y"))
        .header("accept", "text/event-stream")
        .header("last-event-id", position)
        .send()
        .await
        .unwrap();
    let mut body = BodyReader::new(res);
    body.until("both", |b| b.contains("y1") && b.contains("x4")).await;
    body.until("end of event", |b| b.ends_with("\n\n")).await;
    let got: Vec<String> = body
        .sse_events()
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(&e.2).unwrap()["data"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted, ["x4", "y1"], "exactly the two missed, no gap: {got:?}");
}

#[tokio::test]
async fn shutdown_ends_every_long_lived_response() {
    let mut server = start_server().await;
    let client = reqwest::Client::new();
    let mut sse = BodyReader::new(
        client
            .get(server.url("/sub/z"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap(),
    );
    let mut stream = BodyReader::new(client.get(server.url("/sub/z?transport=stream")).send().await.unwrap());
    let mut iframe = BodyReader::new(client.get(server.url("/sub/z?transport=iframe")).send().await.unwrap());
    let held = tokio::spawn(client.get(server.url("/sub/z?transport=longpoll&timeout=60")).send());
    sse.until("start", |b| b.contains("\n\n")).await;
    iframe.until("prelude", |b| b.contains("-->")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown().await;
    sse.read_to_end().await;
    assert!(sse.buf.ends_with("retry: 3000\n\n"), "{:?}", sse.buf);
    stream.read_to_end().await;
    assert_eq!(stream.json_lines().last().unwrap()["type"], "reconnect");
    iframe.read_to_end().await;
    assert_eq!(iframe.iframe_calls().last().unwrap()["type"], "reconnect");
    let answer: Value = recv_timeout(SOON, held).await.unwrap().unwrap().json().await.unwrap();
    assert_eq!(answer["messages"], serde_json::json!([]));
}

#[tokio::test]
async fn admin_disconnect_ends_subscribers_who_then_resume_without_loss() {
    let off = start_server().await;
    let res = reqwest::Client::new()
        .post(off.url("/admin/disconnect"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "the admin API is off by default");

    let server = start_server_with(Config {
        admin_api: true,
        ..Config::default()
    })
    .await;
    let client = reqwest::Client::new();
    let mut sse = BodyReader::new(
        client
            .get(server.url("/sub/k"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap(),
    );
    let mut stream = BodyReader::new(client.get(server.url("/sub/k?transport=stream")).send().await.unwrap());
    sse.until("start", |b| b.contains("\n\n")).await;
    server.publish("k", "before").await;
    stream.until("before", |b| b.contains("before")).await;
    let res = client.post(server.url("/admin/disconnect")).send().await.unwrap();
    assert_eq!(res.status(), 202);
    sse.read_to_end().await;
    stream.read_to_end().await;
    let cursor = stream.json_lines().last().unwrap()["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    server.publish("k", "after").await;
    let again = get_json(&server.url(&format!("/sub/k?transport=poll&since={cursor}")), 200).await;
    assert_eq!(
        data(&again["messages"]),
        ["after"],
        "resumed exactly after the last message seen"
    );
}

#[tokio::test]
async fn idle_streams_get_heartbeats_and_busy_ones_do_not() {
    let server = start_server_with(Config {
        heartbeat_secs: 1,
        ..Config::default()
    })
    .await;
    let client = reqwest::Client::new();
    let mut sse = BodyReader::new(
        client
            .get(server.url("/sub/hb"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap(),
    );
    let mut stream = BodyReader::new(client.get(server.url("/sub/hb?transport=stream")).send().await.unwrap());
    // Idle: a heartbeat within two periods.
    sse.until("an SSE heartbeat comment", |b| b.contains(": heartbeat\n\n"))
        .await;
    stream
        .until("an empty heartbeat line", |b| b.contains("\n\n") || b.starts_with('\n'))
        .await;
    // Busy: a message every 300 ms for 2.5 s leaves no room for a heartbeat.
    let before = sse.buf.matches(": heartbeat").count();
    for i in 0..8 {
        server.publish("hb", &i.to_string()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    sse.until("the last message", |b| b.contains("data: 7\n\n")).await;
    let during = sse.buf.matches(": heartbeat").count() - before;
    assert!(during <= 1, "{during} heartbeats while messages flowed every 300 ms");
}

/// Streams written outside hyper (conn/h1.rs) watch their socket between messages: a client
/// that closes is unsubscribed at once, not at the next heartbeat (15 s by default). Also checks
/// the HTTP/1.1 framing of that path byte for byte: head, chunked body, `Connection: close`.
#[tokio::test]
async fn streams_notice_a_client_that_goes_away_and_frame_chunks() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start_server().await;
    for transport in ["sse", "stream", "iframe"] {
        let channel = format!("gone-{transport}");
        let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let request = format!("GET /sub/{channel}?transport={transport} HTTP/1.1\r\nhost: x\r\n\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        server.publish(&channel, "hello").await;
        let mut got = Vec::new();
        recv_timeout(SOON, async {
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&got).contains("hello") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "{transport}: closed early");
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        let text = String::from_utf8_lossy(&got).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{transport}: {head}");
        assert!(head.contains("\r\nconnection: close"), "{transport}: {head}");
        assert!(head.contains("\r\ntransfer-encoding: chunked"), "{transport}: {head}");
        assert!(head.contains("\r\ndate: "), "{transport}: {head}");
        // Every chunk: hex size, CRLF, exactly that many bytes, CRLF.
        let mut rest = body.as_bytes();
        while let Some(at) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..at]).unwrap(), 16).unwrap();
            if rest.len() < at + 2 + size + 2 {
                break; // a chunk still arriving
            }
            assert_eq!(
                &rest[at + 2 + size..at + 4 + size],
                b"\r\n",
                "{transport}: chunk framing"
            );
            rest = &rest[at + 4 + size..];
        }
        assert!(rest.is_empty(), "{transport}: trailing bytes {rest:?}");

        let info = get_json(&server.url(&format!("/channels/{channel}")), 200).await;
        assert_eq!(info["subscribers"], 1, "{transport}");
        drop(socket);
        recv_timeout(SOON, async {
            loop {
                let info = get_json(&server.url(&format!("/channels/{channel}")), 200).await;
                if info["subscribers"] == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
}
