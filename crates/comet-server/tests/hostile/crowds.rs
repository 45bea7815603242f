//! Many hostile clients at once.

use crate::prelude::*;

// ---------------------------------------------------------------------------------------------
// Many at once

/// One bad request of kind `kind`, checked for its clear error.
pub(crate) async fn one_bad_request(server_addr: SocketAddr, base: String, kind: usize) {
    let client = reqwest::Client::new();
    match kind {
        0 => {
            // A head never finished: closed at the header-read timeout, no answer.
            let answer = exchange(server_addr, b"GET /sub/calm?transport=sse HTTP/1.1\r\nHost: x\r\n").await;
            assert!(answer.closed && answer.bytes.is_empty(), "{answer:?}");
        }
        1 => {
            // Binary garbage, a TLS ClientHello on the plain port, an HTTP/2 preface then junk.
            for junk in [
                &b"\x00\x01\x02\xff\xfe\r\n\r\n\x80\x81"[..],
                b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            ] {
                let answer = exchange(server_addr, junk).await;
                assert!(answer.closed, "{junk:?} left open");
                assert!(matches!(answer.status(), None | Some(400)), "{junk:?}: {answer:?}");
            }
        }
        2 => {
            let list: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
            let res = client
                .get(format!("{base}/sub/{}?transport=sse", list.join(",")))
                .send()
                .await
                .expect("request");
            expect_error(res, 400, "too_many_channels", "10,000 channels").await;
        }
        3 => {
            let res = client
                .get(format!("{base}/sub/calm?transport=stream&since=not-a-cursor"))
                .send()
                .await
                .expect("request");
            expect_error(res, 400, "bad_cursor", "bad cursor").await;
        }
        4 => {
            let mut request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: ".to_vec();
            request.resize(request.len() + 600 * 1024, b'a');
            request.extend_from_slice(b"\r\n\r\n");
            let answer = exchange_large(server_addr, request).await;
            assert_eq!(answer.status(), Some(431), "{:?}", cut(&answer.text()));
        }
        5 => {
            let mut stream = raw_ws(server_addr, "/sub/calm").await;
            stream
                .write_all(&client_frame_with(0x80 | 0x20 | 0x1, b"{}"))
                .await
                .expect("write");
            let frames = ws_frames(&mut stream, |op, _| op == 0x8).await;
            assert_eq!(close_of(&frames).map(|c| c.0), Some(1002));
        }
        6 => {
            let res = client
                .post(format!("{base}/pub"))
                .body("[{\"channel\":")
                .send()
                .await
                .expect("request");
            expect_error(res, 400, "bad_body", "garbage batch").await;
        }
        _ => {
            let res = client
                .post(format!("{base}/pub/calm"))
                .body(vec![b'a'; 2 * 1024 * 1024])
                .send()
                .await
                .expect("request");
            expect_error(res, 413, "too_large", "2 MiB message").await;
        }
    }
}

/// Forty clients sending bad requests of every kind above at once (three each), while good
/// clients poll and publish: every bad request gets its clear error, every good one succeeds,
/// and the bystanders receive everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_bad_requests_do_not_stop_good_ones() {
    let server = start_server_with(Config {
        header_read_timeout_secs: 1,
        ..unlimited()
    })
    .await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    let mut bad = Vec::new();
    for i in 0..40 {
        let (addr, base) = (server.addr, server.url(""));
        bad.push(tokio::spawn(async move {
            for round in 0..3 {
                one_bad_request(addr, base.clone(), (i + round) % 8).await;
            }
        }));
    }
    let mut good = Vec::new();
    for i in 0..4 {
        let base = server.url("");
        good.push(tokio::spawn(async move {
            let client = bystander_client();
            let channel = format!("good{i}");
            let mut cursor = None::<String>;
            for n in 0..20 {
                let res = client
                    .post(format!("{base}/pub/{channel}"))
                    .body(n.to_string())
                    .send()
                    .await
                    .expect("a good publish");
                assert_eq!(res.status(), 201, "a good publish");
                let since = cursor.as_deref().map_or(String::new(), |c| format!("&since={c}"));
                let res = client
                    .get(format!("{base}/sub/{channel}?transport=poll{since}"))
                    .send()
                    .await
                    .expect("a good poll");
                assert_eq!(res.status(), 200, "a good poll");
                let v: Value = res.json().await.expect("JSON");
                if cursor.is_some() {
                    let data: Vec<&str> = v["messages"]
                        .as_array()
                        .expect("messages")
                        .iter()
                        .filter_map(|m| m["data"].as_str())
                        .collect();
                    assert_eq!(data, [n.to_string()], "poll {n} of {channel}");
                }
                cursor = Some(v["cursor"].as_str().expect("cursor").to_owned());
            }
        }));
    }
    for task in good {
        join("a good client", Duration::from_secs(40), task).await;
    }
    for task in bad {
        join("a bad client", Duration::from_secs(40), task).await;
    }
    crowd.finish().await;
}
