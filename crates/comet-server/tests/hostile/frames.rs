//! WebSocket frames that `tests/websocket.rs` does not cover already: garbage JSON, binary, fragments, control frames.

use crate::prelude::*;

// ---------------------------------------------------------------------------------------------
// WebSocket frames (what tests/websocket.rs does not cover already: garbage JSON, binary,
// unmasked frames, orphan continuations, invalid UTF-8 and oversize messages are there)

/// Reads server frames (opcode, payload) until `stop` says so or the connection ends.
pub(crate) async fn ws_frames(stream: &mut TcpStream, stop: impl Fn(u8, &[u8]) -> bool) -> Vec<(u8, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + SOON;
    loop {
        while buf.len() >= 2 {
            let short = usize::from(buf[1] & 0x7f);
            let (len, start) = match short {
                126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                127 if buf.len() >= 10 => (
                    usize::try_from(u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"))).expect("length"),
                    10,
                ),
                126 | 127 => break,
                n => (n, 2),
            };
            if buf.len() < start + len {
                break;
            }
            let opcode = buf[0] & 0x0f;
            let payload = buf[start..start + len].to_vec();
            buf.drain(..start + len);
            let done = stop(opcode, &payload);
            frames.push((opcode, payload));
            if done {
                return frames;
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => return frames,
            Err(_) => panic!("no more frames within {SOON:?}; got {} so far", frames.len()),
        }
    }
}

/// The close frame's code and reason among `frames`.
pub(crate) fn close_of(frames: &[(u8, Vec<u8>)]) -> Option<(u16, String)> {
    frames.iter().find(|(op, _)| *op == 0x8).map(|(_, p)| {
        (
            u16::from_be_bytes([p[0], p[1]]),
            String::from_utf8_lossy(&p[2..]).into_owned(),
        )
    })
}

/// Frames RFC 6455 forbids: close with a code saying which rule (1002 protocol error, 1003 an
/// opcode it does not know, 1007 invalid UTF-8, 1009 too big), and the connection ends. A frame
/// header announcing 8 EiB is refused from its header alone (nothing is allocated for it).
#[tokio::test]
async fn forbidden_websocket_frames_close_with_the_rules_code() {
    let server = start_server_with(unlimited()).await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    let mut huge_header = vec![0x81, 0x80 | 127];
    huge_header.extend_from_slice(&(i64::MAX as u64).to_be_bytes());
    huge_header.extend_from_slice(&[1, 2, 3, 4]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a ping with 126 bytes", client_frame(0x9, &[b'p'; 126]), 1002),
        ("a fragmented ping", client_frame_with(0x09, b"ping"), 1002),
        ("RSV2 set", client_frame_with(0x80 | 0x20 | 0x1, b"{}"), 1002),
        (
            "RSV1 without deflate",
            client_frame_with(0x80 | 0x40 | 0x1, b"{}"),
            1002,
        ),
        // Reserved opcodes fail the connection (RFC 6455 §5.2, §7.1.7): 1002, not 1003.
        ("opcode 0x3", client_frame(0x3, b"?"), 1002),
        ("opcode 0xB", client_frame(0xB, b"?"), 1002),
        // Every control frame is at most 125 bytes (§5.5), the close frame too (Autobahn 7.3.6).
        ("a close with 126 bytes", client_frame(0x8, &[b'c'; 126]), 1002),
        ("an 8 EiB frame", huge_header, 1009),
        ("a close with one byte", client_frame(0x8, &[3]), 1002),
        ("a close with code 999", client_frame(0x8, &999u16.to_be_bytes()), 1002),
        (
            "a close with code 1005",
            client_frame(0x8, &1005u16.to_be_bytes()),
            1002,
        ),
        (
            "a close whose reason is not UTF-8",
            client_frame(0x8, &[0x03, 0xe8, 0xff, 0xfe]),
            1007,
        ),
    ];
    for (what, frame, code) in cases {
        let mut stream = raw_ws(server.addr, "/sub/frames").await;
        stream.write_all(&frame).await.expect("write");
        let frames = ws_frames(&mut stream, |op, _| op == 0x8).await;
        let (got, reason) = close_of(&frames).unwrap_or_else(|| panic!("{what}: no close frame in {frames:?}"));
        assert_eq!(got, code, "{what}: closed {got} {reason:?}");
        let end = read_until_closed(&mut stream, SOON).await;
        assert!(end.closed, "{what}: the connection stayed open");
    }
    wait_subscribers(&server, "frames", 0, "the failed sockets unsubscribed").await;
    crowd.finish().await;
}

/// 10,000 pings from a client that reads: 10,000 pongs with the same payloads, in order, and
/// then a command is still answered.
#[tokio::test]
async fn many_pings_get_as_many_pongs() {
    let server = start_server_with(unlimited()).await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    let mut stream = raw_ws(server.addr, "/ws").await;
    let pings: Vec<u8> = (0..10_000u32)
        .flat_map(|i| client_frame(0x9, i.to_string().as_bytes()))
        .collect();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        wr.write_all(&pings).await.expect("write the pings");
        wr.write_all(&client_frame(0x1, br#"{"type":"ping","ref":"after"}"#))
            .await
            .expect("write");
        wr
    });
    let mut joined = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut others, mut expect) = (Vec::new(), 0u32);
    while expect < 10_000 || !others.iter().any(|(op, _): &(u8, Vec<u8>)| *op == 0x1) {
        let n = tokio::time::timeout_at(deadline, rd.read(&mut chunk))
            .await
            .expect("the pongs in time")
            .expect("read");
        assert!(n > 0, "closed after {expect} pongs");
        joined.extend_from_slice(&chunk[..n]);
        while joined.len() >= 2 && joined.len() >= 2 + usize::from(joined[1] & 0x7f) {
            let len = usize::from(joined[1] & 0x7f);
            assert!(len < 126, "a short frame");
            let frame: (u8, Vec<u8>) = (joined[0] & 0x0f, joined[2..2 + len].to_vec());
            joined.drain(..2 + len);
            if frame.0 == 0xA {
                assert_eq!(frame.1, expect.to_string().as_bytes(), "pong #{expect}");
                expect += 1;
            } else {
                others.push(frame);
            }
        }
    }
    let text = others.iter().find(|(op, _)| *op == 0x1).expect("the answer").1.clone();
    assert_eq!(
        serde_json::from_slice::<Value>(&text).expect("JSON"),
        json!({"type": "pong", "ref": "after"})
    );
    stream = join("the ping writer", SOON, writer)
        .await
        .reunite(rd)
        .expect("the same socket");
    drop(stream);
    crowd.finish().await;
}
