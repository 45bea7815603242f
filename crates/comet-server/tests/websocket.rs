//! The `ws` transport over real sockets (docs/protocol.md "ws"): tokio-tungstenite as the
//! client, and raw TCP bytes where the point is the wire (handshake headers, masking, close
//! codes, keep-alive).

use comet_test_support as support;

use std::net::SocketAddr;
use std::time::Duration;

use comet_core::{ChannelName, Publish};
use comet_server::Config;
use comet_server::transport::Kind;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{SOON, TestServer, recv_timeout, start_server, start_server_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(server: &TestServer, path: &str) -> Ws {
    recv_timeout(SOON, tokio_tungstenite::connect_async(server.ws_url(path)))
        .await
        .expect("websocket connect")
        .0
}

/// The next text frame as JSON (pings and pongs are skipped).
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match recv_timeout(SOON, ws.next())
            .await
            .expect("socket ended")
            .expect("websocket error")
        {
            WsMessage::Text(text) => {
                let mut v: Value = serde_json::from_str(&text).expect("text frame is JSON");
                // `subscribed` carries the start cursor; checked here, compared by the tests
                // that care (`subscribed_cursor_resumes_a_quiet_channel_exactly`).
                if v["type"] == "subscribed" {
                    let cursor = v
                        .as_object_mut()
                        .unwrap()
                        .remove("cursor")
                        .expect("subscribed has a cursor");
                    let cursor = cursor.as_str().expect("cursor is a string");
                    assert!(comet_core::Cursor::parse(cursor).is_ok(), "bad cursor {cursor:?}");
                }
                return v;
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn send_json(ws: &mut Ws, value: Value) {
    recv_timeout(SOON, ws.send(WsMessage::text(value.to_string())))
        .await
        .expect("send");
}

/// Sends a `ping` command and expects the `pong` next: proves nothing else was queued before.
async fn assert_quiet(ws: &mut Ws) {
    send_json(ws, json!({"type":"ping","ref":"quiet?"})).await;
    assert_eq!(next_json(ws).await, json!({"type":"pong","ref":"quiet?"}));
}

/// A client subscribed to `bystander`, to show that one bad peer disturbs nobody else.
async fn bystander(server: &TestServer) -> Ws {
    let mut ws = connect(server, "/sub/bystander").await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type":"subscribed","channel":"bystander","recovered":true})
    );
    ws
}

async fn assert_still_served(server: &TestServer, ws: &mut Ws, data: &str) {
    let id = server.publish("bystander", data).await;
    let msg = next_json(ws).await;
    assert_eq!(
        (msg["type"].as_str(), msg["id"].as_str(), msg["data"].as_str()),
        (Some("message"), Some(&*id), Some(data))
    );
}

/// A client that speaks bytes: the handshake by hand, frames by hand.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The first byte (FIN, RSV1–3, opcode) of the last frame read.
    last_head: u8,
}

impl Raw {
    /// Sends a handshake for `path` with the usual headers plus `extra` (full lines), and
    /// returns the client and the response head.
    async fn handshake(addr: SocketAddr, path: &str, version: &str, extra: &[&str]) -> (Raw, String) {
        let mut stream = recv_timeout(SOON, TcpStream::connect(addr)).await.expect("connect");
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n"
        );
        for line in extra {
            req.push_str(line);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.expect("write handshake");
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
            last_head: 0,
        };
        let head = loop {
            if let Some(end) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(raw.buf.drain(..end + 4).collect()).expect("ASCII head");
                break head;
            }
            assert!(raw.fill().await > 0, "connection closed during the handshake");
        };
        (raw, head)
    }

    /// An accepted handshake on `path`.
    async fn open(addr: SocketAddr, path: &str) -> Raw {
        let (raw, head) = Raw::handshake(addr, path, "13", &[]).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        raw
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = recv_timeout(SOON, self.stream.read(&mut chunk)).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Writes one client frame; `mask: false` breaks RFC 6455 §5.3 on purpose.
    async fn send(&mut self, fin: bool, opcode: u8, payload: &[u8], mask: bool) {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        let mask_bit = if mask { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [0x11, 0x22, 0x33, 0x44];
        if mask {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        // The server may already have hung up (that is what some tests provoke).
        let _ = self.stream.write_all(&frame).await;
    }

    /// The next server frame (opcode, payload), or `None` at EOF or a reset.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let (opcode, short) = (self.buf[0] & 0x0f, usize::from(self.buf[1] & 0x7f));
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are never masked (RFC 6455 §5.1)");
                let (len, start) = match short {
                    126 if self.buf.len() >= 4 => (usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])), 4),
                    127 if self.buf.len() >= 10 => {
                        (u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n, 2),
                };
                if len != usize::MAX && self.buf.len() >= start + len {
                    self.last_head = self.buf[0];
                    let payload = self.buf[start..start + len].to_vec();
                    self.buf.drain(..start + len);
                    return Some((opcode, payload));
                }
            }
            if self.fill().await == 0 {
                return None;
            }
        }
    }

    /// Reads until a close frame and returns its code; `None` if the connection ended without one.
    async fn close_code(&mut self) -> Option<u16> {
        while let Some((opcode, payload)) = self.frame().await {
            if opcode == 0x8 {
                return Some(u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
        None
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn sub_url_subscribes_its_channels_and_selects_the_subprotocol() {
    let server = start_server().await;
    let mut request = server.ws_url("/sub/a,b").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "chat, comet.v1".parse().unwrap());
    let (mut ws, response) = recv_timeout(SOON, tokio_tungstenite::connect_async(request))
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "comet.v1");
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type":"subscribed","channel":"a","recovered":true})
    );
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type":"subscribed","channel":"b","recovered":true})
    );
    let id = server.publish("b", "hello \"b\"\n").await;
    let msg = next_json(&mut ws).await;
    assert!(msg["time"].as_u64().is_some(), "{msg}");
    assert_eq!(
        msg,
        json!({"type":"message","channel":"b","id":id,"event":"message","data":"hello \"b\"\n","time":msg["time"]})
    );
}

#[tokio::test]
async fn bare_ws_starts_without_channels_and_no_subprotocol_unless_offered() {
    let server = start_server().await;
    let (mut ws, response) = recv_timeout(SOON, tokio_tungstenite::connect_async(server.ws_url("/ws")))
        .await
        .unwrap();
    assert!(response.headers().get("sec-websocket-protocol").is_none());
    assert_quiet(&mut ws).await;
    send_json(&mut ws, json!({"type":"subscribe","channel":"late"})).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type":"subscribed","channel":"late","recovered":true})
    );
    server.publish("late", "x").await;
    assert_eq!(next_json(&mut ws).await["data"], "x");
    send_json(&mut ws, json!({"type":"ping"})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type":"pong"}));
}

#[tokio::test]
async fn since_replays_and_recovered_false_is_the_gap_notice() {
    let server = start_server_with(Config {
        history_size: 2,
        ..Config::default()
    })
    .await;
    let mut ids = Vec::new();
    for i in 1..=5 {
        ids.push(server.publish("h", &format!("m{i}")).await);
    }
    // History holds m4 and m5 only: resuming after m1 has a gap.
    let mut ws = connect(&server, &format!("/sub/h?since={}", ids[0])).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type":"subscribed","channel":"h","recovered":false})
    );
    assert_eq!(next_json(&mut ws).await["data"], "m4");
    assert_eq!(next_json(&mut ws).await["data"], "m5");
    assert_quiet(&mut ws).await;
    // Resuming after m4 is exact.
    let mut ws = connect(&server, &format!("/sub/h?since={}", ids[3])).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type":"subscribed","channel":"h","recovered":true})
    );
    assert_eq!(next_json(&mut ws).await["data"], "m5");
    assert_quiet(&mut ws).await;
    // The same by command, and `earliest`.
    let mut ws = connect(&server, "/ws").await;
    send_json(&mut ws, json!({"type":"subscribe","channel":"h","since":ids[1]})).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type":"subscribed","channel":"h","recovered":false})
    );
    assert_eq!(next_json(&mut ws).await["data"], "m4");
    assert_eq!(next_json(&mut ws).await["data"], "m5");
    send_json(&mut ws, json!({"type":"subscribe","channel":"h","since":"earliest"})).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type":"subscribed","channel":"h","recovered":true})
    );
    assert_eq!(next_json(&mut ws).await["data"], "m4");
    assert_eq!(next_json(&mut ws).await["data"], "m5");
    send_json(
        &mut ws,
        json!({"type":"subscribe","channel":"h","since":"not-a-cursor","ref":"c"}),
    )
    .await;
    let err = next_json(&mut ws).await;
    assert_eq!(
        (err["type"].as_str(), err["code"].as_str(), err["ref"].as_str()),
        (Some("error"), Some("bad_cursor"), Some("c"))
    );
}

#[tokio::test]
async fn subscribing_again_replaces_the_subscription() {
    let server = start_server().await;
    server.publish("r", "old").await;
    let mut ws = connect(&server, "/ws").await;
    send_json(&mut ws, json!({"type":"subscribe","channel":"r","since":"earliest"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "subscribed");
    assert_eq!(next_json(&mut ws).await["data"], "old");
    send_json(&mut ws, json!({"type":"subscribe","channel":"r"})).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type":"subscribed","channel":"r","recovered":true})
    );
    server.publish("r", "new").await;
    assert_eq!(next_json(&mut ws).await["data"], "new");
    assert_quiet(&mut ws).await; // one subscription, so one copy
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let server = start_server().await;
    let mut ws = connect(&server, "/sub/u1,u2").await;
    next_json(&mut ws).await;
    next_json(&mut ws).await;
    send_json(&mut ws, json!({"type":"unsubscribe","channel":"u1"})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type":"unsubscribed","channel":"u1"}));
    server.publish("u1", "gone").await;
    server.publish("u2", "kept").await;
    assert_eq!(next_json(&mut ws).await["data"], "kept");
}

#[tokio::test]
async fn publish_command_acks_and_reports_api_errors() {
    let server = start_server_with(Config {
        max_message_size: 16,
        ..Config::default()
    })
    .await;
    let mut ws = connect(&server, "/sub/p").await;
    next_json(&mut ws).await;
    send_json(
        &mut ws,
        json!({"type":"publish","channel":"p","event":"greet","data":"hi","ref":"r1"}),
    )
    .await;
    let ack = next_json(&mut ws).await;
    assert_eq!((ack["type"].as_str(), ack["ref"].as_str()), (Some("ack"), Some("r1")));
    let msg = next_json(&mut ws).await;
    assert_eq!(
        (msg["id"].clone(), msg["event"].as_str(), msg["data"].as_str()),
        (ack["id"].clone(), Some("greet"), Some("hi"))
    );
    send_json(&mut ws, json!({"type":"publish","channel":"p","data":"no ref"})).await;
    assert_eq!(
        next_json(&mut ws).await.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["id", "type"]
    );
    next_json(&mut ws).await;
    for (command, code) in [
        (
            json!({"type":"publish","channel":"bad channel","data":"x","ref":"e1"}),
            "bad_channel",
        ),
        (
            json!({"type":"publish","channel":"p","event":"comet.fake","data":"x","ref":"e1"}),
            "bad_event",
        ),
        (
            json!({"type":"publish","channel":"p","data":"seventeen bytes!!","ref":"e1"}),
            "too_large",
        ),
    ] {
        send_json(&mut ws, command).await;
        let err = next_json(&mut ws).await;
        assert_eq!(
            (err["type"].as_str(), err["ref"].as_str(), err["code"].as_str()),
            (Some("error"), Some("e1"), Some(code))
        );
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_quiet(&mut ws).await;
}

#[tokio::test]
async fn garbage_and_binary_frames_get_errors_and_the_socket_stays_usable() {
    let server = start_server().await;
    let mut ws = connect(&server, "/ws").await;
    for (text, reference) in [
        ("this is not json", None),
        (r#"{"type":"dance","ref":"d"}"#, Some("d")),
        (r#"{"type":"subscribe"}"#, None),
        (r#"{"type":"publish","channel":"g"}"#, None),
    ] {
        ws.send(WsMessage::text(text)).await.unwrap();
        let err = next_json(&mut ws).await;
        assert_eq!(
            (err["type"].as_str(), err["code"].as_str()),
            (Some("error"), Some("bad_request")),
            "{text}"
        );
        assert_eq!(err["ref"].as_str(), reference, "{text}");
    }
    ws.send(WsMessage::binary(vec![1, 2, 3])).await.unwrap();
    let err = next_json(&mut ws).await;
    assert_eq!(
        (err["type"].as_str(), err["code"].as_str()),
        (Some("error"), Some("bad_request"))
    );
    send_json(&mut ws, json!({"type":"subscribe","channel":"g"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "subscribed");
    server.publish("g", "after garbage").await;
    assert_eq!(next_json(&mut ws).await["data"], "after garbage");
}

#[tokio::test]
async fn channel_limit_is_too_many_channels() {
    let server = start_server_with(Config {
        max_channels_per_connection: 2,
        ..Config::default()
    })
    .await;
    let mut ws = connect(&server, "/sub/l1,l2").await;
    next_json(&mut ws).await;
    next_json(&mut ws).await;
    send_json(&mut ws, json!({"type":"subscribe","channel":"l3","ref":"three"})).await;
    let err = next_json(&mut ws).await;
    assert_eq!(
        (err["code"].as_str(), err["ref"].as_str()),
        (Some("too_many_channels"), Some("three"))
    );
    // Replacing one does not count as another.
    send_json(&mut ws, json!({"type":"subscribe","channel":"l1"})).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type":"subscribed","channel":"l1","recovered":true})
    );
    send_json(&mut ws, json!({"type":"unsubscribe","channel":"l2"})).await;
    next_json(&mut ws).await;
    send_json(&mut ws, json!({"type":"subscribe","channel":"l3"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "subscribed");
}

#[tokio::test]
async fn a_burst_arrives_complete_and_in_order() {
    let server = start_server().await;
    let mut ws = connect(&server, "/sub/o").await;
    next_json(&mut ws).await;
    let channel = ChannelName::new("o").unwrap();
    for i in 0..200 {
        let msg = Publish {
            channel: channel.clone(),
            event: None,
            data: format!("{i}").into(),
        };
        server.state.broker.publish(msg).await.unwrap();
    }
    for i in 0..200 {
        assert_eq!(next_json(&mut ws).await["data"], format!("{i}"));
    }
}

/// A socket whose subscriber falls out of history while live gets a `gap` frame, then what
/// history still holds. (The test runtime has one thread: the burst is published before the
/// socket's task runs again.)
#[tokio::test]
async fn falling_behind_history_sends_a_gap_frame() {
    let server = start_server_with(Config {
        history_size: 4,
        ..Config::default()
    })
    .await;
    let mut ws = connect(&server, "/sub/slow").await;
    next_json(&mut ws).await;
    let channel = ChannelName::new("slow").unwrap();
    for i in 1..=20 {
        let msg = Publish {
            channel: channel.clone(),
            event: None,
            data: format!("{i}").into(),
        };
        server.state.broker.publish(msg).await.unwrap();
    }
    let gap = next_json(&mut ws).await;
    assert_eq!(
        (gap["type"].as_str(), gap["channel"].as_str()),
        (Some("gap"), Some("slow"))
    );
    assert!(gap["cursor"].as_str().unwrap().ends_with("-16"), "{gap}");
    for i in 17..=20 {
        assert_eq!(next_json(&mut ws).await["data"], format!("{i}"));
    }
}

#[tokio::test]
async fn permessage_deflate_is_negotiated_when_offered_and_enabled() {
    let server = start_server().await;
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits";
    let (mut raw, head) = Raw::handshake(server.addr, "/sub/d", "13", &[offer]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let ext = header(&head, "sec-websocket-extensions").unwrap_or_else(|| panic!("no extension in {head}"));
    assert!(ext.starts_with("permessage-deflate"), "{ext}");
    // Small frames go out plain; a large message is compressed (RSV1 set, RFC 7692 §6).
    let (_, subscribed) = raw.frame().await.expect("subscribed");
    assert_eq!(raw.last_head, 0x81, "FIN + text, no RSV1");
    let subscribed: Value = serde_json::from_slice(&subscribed).expect("plain JSON");
    assert_eq!(subscribed["type"], "subscribed");
    server.publish("d", &"squeeze ".repeat(100)).await;
    let (_, compressed) = raw.frame().await.expect("message");
    assert_eq!(raw.last_head, 0xc1, "FIN + RSV1 + text");
    assert!(compressed.len() < 200, "{} bytes", compressed.len());
    // Not offered: not used (the tungstenite clients of every other test rely on it).
    let (_raw, head) = Raw::handshake(server.addr, "/ws", "13", &[]).await;
    assert_eq!(header(&head, "sec-websocket-extensions"), None, "{head}");
    // A smaller server window is agreed to (RFC 7692 §7.1.2.1); 8 bits, which deflate cannot
    // produce, is declined, not broken, and the next offer of the header taken (RFC 7692 §5).
    let narrow = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10";
    let (_raw, head) = Raw::handshake(server.addr, "/ws", "13", &[narrow]).await;
    let ext = header(&head, "sec-websocket-extensions").unwrap_or_else(|| panic!("no extension in {head}"));
    assert!(ext.ends_with("server_max_window_bits=10"), "{ext}");
    let eight = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8";
    let (_raw, head) = Raw::handshake(server.addr, "/ws", "13", &[eight]).await;
    assert!(
        head.starts_with("HTTP/1.1 101") && header(&head, "sec-websocket-extensions").is_none(),
        "{head}"
    );
    let fallback = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8, permessage-deflate";
    let (_raw, head) = Raw::handshake(server.addr, "/ws", "13", &[fallback]).await;
    let ext = header(&head, "sec-websocket-extensions").unwrap_or_else(|| panic!("no extension in {head}"));
    assert!(!ext.contains("window_bits"), "{ext}");

    let off = start_server_with(Config {
        ws_compression: false,
        ..Config::default()
    })
    .await;
    let (_raw, head) = Raw::handshake(off.addr, "/ws", "13", &[offer]).await;
    assert!(
        head.starts_with("HTTP/1.1 101") && header(&head, "sec-websocket-extensions").is_none(),
        "{head}"
    );
}

#[tokio::test]
async fn compressed_frames_round_trip_with_a_deflate_client() {
    let server = start_server().await;
    let options = yawc::Options::default().with_low_latency_compression();
    let url = server.ws_url("/sub/z").parse().unwrap();
    let mut ws = recv_timeout(SOON, yawc::WebSocket::connect(url).with_options(options))
        .await
        .expect("yawc connect");
    assert_eq!(yawc_json(&mut ws).await["type"], "subscribed");
    let data = "compress me ".repeat(200);
    let command = json!({"type":"publish","channel":"z","data":data,"ref":"big"});
    recv_timeout(SOON, ws.send(yawc::Frame::text(command.to_string())))
        .await
        .unwrap();
    assert_eq!(yawc_json(&mut ws).await["ref"], "big");
    assert_eq!(yawc_json(&mut ws).await["data"], data.as_str());

    // A client that inflates with a 9-bit window (512 bytes): a message that repeats a block of
    // 2,000 bytes reaches it whole only if the server compressed within that window.
    let options = yawc::Options::default()
        .with_low_latency_compression()
        .with_server_max_window_bits(9);
    let url = server.ws_url("/sub/narrow").parse().unwrap();
    let mut narrow = recv_timeout(SOON, yawc::WebSocket::connect(url).with_options(options))
        .await
        .expect("yawc connect with server_max_window_bits=9");
    assert_eq!(yawc_json(&mut narrow).await["type"], "subscribed");
    let mut seed = 7u32;
    let block: String = (0..2000)
        .map(|_| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            char::from(b'a' + ((seed >> 16) % 26) as u8)
        })
        .collect();
    let data = block.repeat(2);
    server.publish("narrow", &data).await;
    assert_eq!(yawc_json(&mut narrow).await["data"], data.as_str());
}

async fn yawc_json(ws: &mut yawc::TcpWebSocket) -> Value {
    let frame = recv_timeout(SOON, ws.next_frame()).await.expect("frame");
    serde_json::from_slice(frame.payload()).expect("JSON")
}

#[tokio::test]
async fn server_pings_and_closes_a_peer_that_never_pongs() {
    let server = start_server_with(Config {
        ws_ping_interval_secs: 1,
        ws_pong_timeout_secs: 1,
        ..Config::default()
    })
    .await;
    let started = tokio::time::Instant::now();
    let mut raw = Raw::open(server.addr, "/ws").await;
    let (opcode, _) = raw.frame().await.expect("a ping");
    assert_eq!(opcode, 0x9, "the first frame is a ping");
    // Never answered: a close (4001 no pong) or EOF follows.
    match raw.frame().await {
        Some((0x8, payload)) => assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4001),
        None => {}
        Some(other) => panic!("expected a close, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_peer_that_pongs_stays_connected() {
    let server = start_server_with(Config {
        ws_ping_interval_secs: 1,
        ws_pong_timeout_secs: 1,
        ..Config::default()
    })
    .await;
    let mut ws = connect(&server, "/sub/alive").await;
    next_json(&mut ws).await;
    let (mut pings, until) = (0, tokio::time::Instant::now() + Duration::from_millis(3500));
    while let Ok(frame) = tokio::time::timeout_at(until, ws.next()).await {
        match frame.expect("open").expect("no error") {
            WsMessage::Ping(_) => pings += 1, // tungstenite answers it
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 2, "{pings} pings");
    server.publish("alive", "still").await;
    assert_eq!(next_json(&mut ws).await["data"], "still");
}

/// Writes `request` on a new connection and reads the whole answer, until the server closes.
async fn answer_of(addr: SocketAddr, request: &str) -> String {
    let mut stream = recv_timeout(SOON, TcpStream::connect(addr)).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    recv_timeout(SOON, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes after an error");
    String::from_utf8(answer).expect("ASCII answer")
}

#[tokio::test]
async fn the_handshake_is_answered_as_rfc_6455_says_and_a_bad_one_gets_a_clear_400() {
    let server = start_server().await;
    let (mut raw, head) = Raw::handshake(server.addr, "/sub/h", "13", &[]).await;
    assert!(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{head}");
    // RFC 6455 §1.3's own example key and answer.
    assert_eq!(
        header(&head, "sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    assert_eq!(header(&head, "upgrade"), Some("websocket"), "{head}");
    assert_eq!(header(&head, "connection"), Some("upgrade"), "{head}");
    let (opcode, subscribed) = raw.frame().await.expect("subscribed");
    assert_eq!((opcode, raw.last_head), (0x1, 0x81), "one whole text frame");
    assert_eq!(
        serde_json::from_slice::<Value>(&subscribed).unwrap()["type"],
        "subscribed"
    );

    let ask = |key: &str, connection: &str| {
        format!(
            "GET /sub/h HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: {connection}\r\n{key}\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    for (what, request) in [
        ("a key of 5 bytes", ask("Sec-WebSocket-Key: c2hvcnQ=\r\n", "Upgrade")),
        (
            "a key that is not base64",
            ask("Sec-WebSocket-Key: not*base64*at*all!!!!!==\r\n", "Upgrade"),
        ),
        ("no key", ask("", "Upgrade")),
        (
            "no Connection: Upgrade",
            ask("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "keep-alive"),
        ),
    ] {
        let answer = answer_of(server.addr, &request).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{what}: {answer}");
        let body: Value = serde_json::from_str(answer.split_once("\r\n\r\n").expect("a body").1)
            .unwrap_or_else(|e| panic!("{what}: the body is not JSON ({e}): {answer}"));
        assert_eq!(body["error"]["code"], "bad_transport", "{what}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("Sec-WebSocket-Key"),
            "{what}: {body}"
        );
    }
    // The good socket was not disturbed.
    let id = server.publish("h", "after").await;
    let (_, message) = raw.frame().await.expect("message");
    assert_eq!(serde_json::from_slice::<Value>(&message).unwrap()["id"], id.as_str());
}

/// The accept loop reads only a connection's first request head itself; an upgrade that comes
/// after another request on the same connection is hyper's to hand over, and is checked and
/// served the same.
#[tokio::test]
async fn an_upgrade_after_another_request_on_the_same_connection_works_too() {
    let server = start_server().await;
    let mut stream = recv_timeout(SOON, TcpStream::connect(server.addr))
        .await
        .expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Raw {
        stream,
        buf: Vec::new(),
        last_head: 0,
    };
    while !raw.buf.ends_with(b"\r\n\r\nok\n") {
        assert!(raw.fill().await > 0, "connection closed after /healthz");
    }
    raw.buf.clear();
    // The same checks as on a first request: a key that is not 16 bytes is a 400.
    raw.stream
        .write_all(
            b"GET /sub/k HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let refused = loop {
        let text = String::from_utf8_lossy(&raw.buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = header(head, "content-length").expect("content-length").parse().unwrap();
            if body.len() >= len {
                raw.buf.clear();
                break text;
            }
        }
        assert!(raw.fill().await > 0, "connection closed after the refused upgrade");
    };
    assert!(refused.starts_with("HTTP/1.1 400 "), "{refused}");
    assert!(refused.contains("bad_transport"), "{refused}");
    raw.stream
        .write_all(
            b"GET /sub/k HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let head = loop {
        if let Some(end) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break String::from_utf8(raw.buf.drain(..end + 4).collect()).unwrap();
        }
        assert!(raw.fill().await > 0, "connection closed during the handshake");
    };
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(
        header(&head, "sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    let (_, subscribed) = raw.frame().await.expect("subscribed");
    assert_eq!(
        serde_json::from_slice::<Value>(&subscribed).unwrap()["type"],
        "subscribed"
    );
    for i in 0..3 {
        let id = server.publish("k", &format!("m{i}")).await;
        let (_, message) = raw.frame().await.expect("message");
        assert_eq!(serde_json::from_slice::<Value>(&message).unwrap()["id"], id.as_str());
    }
}

#[tokio::test]
async fn client_pings_get_pongs() {
    let server = start_server().await;
    let mut ws = connect(&server, "/ws").await;
    ws.send(WsMessage::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    match recv_timeout(SOON, ws.next()).await.unwrap().unwrap() {
        WsMessage::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
}

#[tokio::test]
async fn protocol_errors_close_1002() {
    let server = start_server().await;
    let mut other = bystander(&server).await;
    // An unmasked client frame (RFC 6455 §5.1).
    let mut raw = Raw::open(server.addr, "/ws").await;
    raw.send(true, 0x1, br#"{"type":"ping"}"#, false).await;
    assert_eq!(raw.close_code().await, Some(1002));
    // A continuation frame with no message to continue (§5.4).
    let mut raw = Raw::open(server.addr, "/ws").await;
    raw.send(true, 0x0, b"orphan", true).await;
    assert_eq!(raw.close_code().await, Some(1002));
    assert_still_served(&server, &mut other, "after 1002").await;
}

#[tokio::test]
async fn invalid_utf8_closes_1007() {
    let server = start_server().await;
    let mut other = bystander(&server).await;
    let mut raw = Raw::open(server.addr, "/ws").await;
    raw.send(true, 0x1, &[b'{', 0xc3, 0x28, b'}'], true).await;
    assert_eq!(raw.close_code().await, Some(1007));
    // Split over fragments, too.
    let mut raw = Raw::open(server.addr, "/ws").await;
    raw.send(false, 0x1, b"{\"a\":\"", true).await;
    raw.send(true, 0x0, &[0xff, b'"', b'}'], true).await;
    assert_eq!(raw.close_code().await, Some(1007));
    assert_still_served(&server, &mut other, "after 1007").await;
}

#[tokio::test]
async fn messages_over_the_limit_close_1009() {
    let server = start_server_with(Config {
        ws_max_message_size: 1024,
        ..Config::default()
    })
    .await;
    let mut other = bystander(&server).await;
    // Exactly the limit is fine.
    let mut raw = Raw::open(server.addr, "/ws").await;
    let mut command = br#"{"type":"ping","ref":"edge"}"#.to_vec();
    command.resize(1024, b' ');
    raw.send(true, 0x1, &command, true).await;
    let (opcode, payload) = raw.frame().await.unwrap();
    assert_eq!(
        (opcode, serde_json::from_slice::<Value>(&payload).unwrap()),
        (0x1, json!({"type":"pong","ref":"edge"}))
    );
    // One frame over it.
    command.push(b' ');
    raw.send(true, 0x1, &command, true).await;
    assert_eq!(raw.close_code().await, Some(1009));
    // Fragments adding up to more.
    let mut raw = Raw::open(server.addr, "/ws").await;
    raw.send(false, 0x1, &[b' '; 600], true).await;
    raw.send(true, 0x0, &[b' '; 600], true).await;
    assert_eq!(raw.close_code().await, Some(1009));
    assert_still_served(&server, &mut other, "after 1009").await;
}

#[tokio::test]
async fn shutdown_closes_1001() {
    let mut server = start_server().await;
    let mut ws = connect(&server, "/sub/s").await;
    next_json(&mut ws).await;
    let mut other = bystander(&server).await;
    assert_still_served(&server, &mut other, "before shutdown").await;
    server.state.shutdown.cancel();
    for client in [&mut ws, &mut other] {
        loop {
            match recv_timeout(SOON, client.next())
                .await
                .expect("a close frame")
                .expect("no error")
            {
                WsMessage::Close(Some(frame)) => {
                    assert_eq!(u16::from(frame.code), 1001);
                    break;
                }
                WsMessage::Ping(_) | WsMessage::Pong(_) => {}
                other => panic!("expected a close, got {other:?}"),
            }
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn disconnect_all_closes_1001_and_the_server_keeps_serving() {
    let server = start_server().await;
    let mut ws = connect(&server, "/sub/dc").await;
    next_json(&mut ws).await;
    server.state.disconnect_all();
    match recv_timeout(SOON, ws.next())
        .await
        .expect("a close frame")
        .expect("no error")
    {
        WsMessage::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close, got {other:?}"),
    }
    let mut again = connect(&server, "/sub/dc").await;
    next_json(&mut again).await;
    server.publish("dc", "back").await;
    assert_eq!(next_json(&mut again).await["data"], "back");
}

#[tokio::test]
async fn other_versions_get_426_with_the_supported_version() {
    let server = start_server().await;
    let mut other = bystander(&server).await;
    for path in ["/ws", "/sub/v"] {
        let (_raw, head) = Raw::handshake(server.addr, path, "8", &[]).await;
        assert!(head.starts_with("HTTP/1.1 426"), "{head}");
        assert_eq!(header(&head, "sec-websocket-version"), Some("13"), "{head}");
    }
    assert_still_served(&server, &mut other, "after 426").await;
}

#[tokio::test]
async fn open_sockets_are_counted_in_metrics() {
    let server = start_server().await;
    let open = || server.state.metrics.open_subscribers(Kind::WebSocket);
    let mut a = connect(&server, "/ws").await;
    let mut b = connect(&server, "/sub/m").await;
    assert_quiet(&mut a).await;
    next_json(&mut b).await;
    assert_eq!(open(), 2);
    a.close(None).await.unwrap();
    drop(b);
    recv_timeout(SOON, async {
        while open() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Regression: a channel that got no message before the socket dropped used to restart at the
/// live edge on reconnect (the `subscribed` frame carried no cursor), losing what was published
/// meanwhile.
#[tokio::test]
async fn subscribed_cursor_resumes_a_quiet_channel_exactly() {
    let server = start_server().await;
    let mut ws = connect(&server, "/sub/quiet").await;
    let frame = recv_timeout(SOON, ws.next()).await.unwrap().unwrap();
    let WsMessage::Text(text) = frame else {
        panic!("expected text, got {frame:?}")
    };
    let subscribed: Value = serde_json::from_str(&text).unwrap();
    let cursor = subscribed["cursor"].as_str().unwrap().to_owned();
    assert!(cursor.ends_with("-0"), "{cursor}");
    drop(ws);
    server.publish("quiet", "while away").await;
    let mut ws = connect(&server, &format!("/sub/quiet?since={cursor}")).await;
    assert_eq!(next_json(&mut ws).await["recovered"], true);
    assert_eq!(next_json(&mut ws).await["data"], "while away");
}

/// Regression: with the default settings, publishing a message of exactly `max_message_size`
/// over the WebSocket closed the socket with 1009, because the JSON command around the data made
/// the frame larger than `ws_max_message_size`.
#[tokio::test]
async fn a_message_of_the_largest_allowed_size_can_be_published_over_websocket_by_default() {
    let server = start_server().await;
    let mut ws = connect(&server, "/ws").await;
    let data = "a".repeat(Config::default().max_message_size);
    send_json(
        &mut ws,
        json!({"type":"publish","channel":"big","data":data,"ref":"big"}),
    )
    .await;
    let ack = next_json(&mut ws).await;
    assert_eq!(
        (ack["type"].as_str(), ack["ref"].as_str()),
        (Some("ack"), Some("big")),
        "{ack}"
    );
}

/// The close code the server sends next (frames before it are skipped).
async fn close_code_of(ws: &mut Ws) -> u16 {
    loop {
        match recv_timeout(SOON, ws.next()).await {
            Some(Ok(WsMessage::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(WsMessage::Close(None))) => return 1005,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// `--ws-echo /echo` (for the Autobahn fuzzing client): off by default; when on, text, binary
/// and fragmented messages come back whole, and the subscriber sockets' limits and close codes
/// apply (1007 bad UTF-8, 1009 too big, 1000 echoed).
#[tokio::test]
async fn ws_echo_route_echoes_through_the_same_socket_code() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    let off = start_server().await;
    let res = reqwest::get(off.url("/echo")).await.unwrap();
    assert_eq!(res.status(), 404, "no echo route unless configured");

    let server = start_server_with(Config {
        ws_echo: "/echo".into(),
        max_message_size: 1024,
        ws_max_message_size: 4096,
        ..Config::default()
    })
    .await;
    let mut ws = connect(&server, "/echo").await;
    ws.send(WsMessage::text("héllo")).await.unwrap();
    assert_eq!(
        recv_timeout(SOON, ws.next()).await.unwrap().unwrap(),
        WsMessage::text("héllo")
    );
    let binary = bytes::Bytes::from_static(&[0, 159, 146, 150, 255]);
    ws.send(WsMessage::Binary(binary.clone())).await.unwrap();
    assert_eq!(
        recv_timeout(SOON, ws.next()).await.unwrap().unwrap(),
        WsMessage::Binary(binary)
    );
    // A text message in three fragments, with a ping between them (RFC 6455 §5.4, §5.5).
    for (part, opcode, fin) in [
        ("frag", OpCode::Data(Data::Text), false),
        ("men", OpCode::Data(Data::Continue), false),
        ("ted", OpCode::Data(Data::Continue), true),
    ] {
        ws.send(WsMessage::Frame(Frame::message(part.as_bytes().to_vec(), opcode, fin)))
            .await
            .unwrap();
        if !fin {
            ws.send(WsMessage::Ping("p".into())).await.unwrap();
        }
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(recv_timeout(SOON, ws.next()).await.unwrap().unwrap());
    }
    assert!(got.contains(&WsMessage::text("fragmented")), "{got:?}");
    assert_eq!(
        got.iter().filter(|m| matches!(m, WsMessage::Pong(_))).count(),
        2,
        "{got:?}"
    );
    // A normal close is answered with the same code.
    ws.send(WsMessage::Close(None)).await.unwrap();
    assert_eq!(close_code_of(&mut ws).await, 1005);

    let mut ws = connect(&server, "/echo").await;
    ws.send(WsMessage::Frame(Frame::message(
        vec![0xff, 0xfe],
        OpCode::Data(Data::Text),
        true,
    )))
    .await
    .unwrap();
    assert_eq!(close_code_of(&mut ws).await, 1007, "invalid UTF-8");

    let mut ws = connect(&server, "/echo").await;
    ws.send(WsMessage::Binary(vec![7u8; 5000].into())).await.unwrap();
    assert_eq!(close_code_of(&mut ws).await, 1009, "over ws_max_message_size");

    // The limits did not disturb the route: a new socket still echoes.
    let mut ws = connect(&server, "/echo").await;
    ws.send(WsMessage::text("again")).await.unwrap();
    assert_eq!(
        recv_timeout(SOON, ws.next()).await.unwrap().unwrap(),
        WsMessage::text("again")
    );
}

#[test]
fn ws_echo_must_be_a_path_of_its_own() {
    for bad in ["echo", "/", "/sub/x", "/ws", "/metrics", "/e{x}", "/e cho"] {
        let config = Config {
            ws_echo: bad.into(),
            ..Config::default()
        };
        let err = config.validate().expect_err(bad).to_string();
        assert!(err.contains("ws_echo must be a path of its own"), "{bad}: {err}");
    }
    for good in ["/echo", "/test/echo", "/autobahn-1"] {
        let config = Config {
            ws_echo: good.into(),
            ..Config::default()
        };
        config.validate().expect(good);
    }
}

/// The WebSocket `publish` command takes `"idempotency_key"`: a repeat is acked with the first
/// cursor and `"duplicate":true` and publishes nothing; a bad key is an `error` frame
/// (`bad_idempotency_key`) and the socket stays open.
#[tokio::test]
async fn a_websocket_publish_with_an_idempotency_key_is_published_once() {
    let server = start_server().await;
    let mut ws = connect(&server, "/sub/wsidem").await;
    assert_eq!(next_json(&mut ws).await["type"], "subscribed");
    let publish =
        |r: &str, key: &str| json!({"type":"publish","channel":"wsidem","data":"x","ref":r,"idempotency_key":key});
    send_json(&mut ws, publish("1", "k")).await;
    let mut frames = [next_json(&mut ws).await, next_json(&mut ws).await];
    frames.sort_by_key(|f| f["type"].as_str().unwrap().to_owned());
    let (ack, msg) = (&frames[0], &frames[1]);
    assert_eq!(
        (&ack["type"], &ack["ref"], ack.get("duplicate")),
        (&json!("ack"), &json!("1"), None)
    );
    assert_eq!((&msg["type"], &msg["id"]), (&json!("message"), &ack["id"]));
    send_json(&mut ws, publish("2", "k")).await;
    let again = next_json(&mut ws).await;
    assert_eq!(
        again,
        json!({"type":"ack","ref":"2","id":ack["id"],"duplicate":true}),
        "a repeat: acked, not delivered again"
    );
    send_json(&mut ws, publish("3", "")).await;
    let err = next_json(&mut ws).await;
    assert_eq!(
        (&err["type"], &err["ref"], &err["code"]),
        (&json!("error"), &json!("3"), &json!("bad_idempotency_key"))
    );
    assert_quiet(&mut ws).await;
}

/// A cursor of another epoch (a restarted node): one gap notice, folded into `subscribed`
/// (`recovered:false`), then what history holds, then live messages with no second notice.
#[tokio::test]
async fn a_cursor_of_another_epoch_gets_one_gap_notice_then_history_then_live() {
    let server = start_server().await;
    let first = server.publish("epochs", "held").await;
    let stale = format!(
        "{:x}-9",
        u64::from_str_radix(first.split('-').next().unwrap(), 16).unwrap() ^ 1
    );
    let mut ws = connect(&server, &format!("/sub/epochs?since={stale}")).await;
    let subscribed = next_json(&mut ws).await;
    assert_eq!(
        (&subscribed["type"], &subscribed["recovered"]),
        (&json!("subscribed"), &json!(false))
    );
    assert_eq!(next_json(&mut ws).await["data"], "held");
    server.publish("epochs", "live").await;
    let next = next_json(&mut ws).await;
    assert_eq!(
        (&next["type"], &next["data"]),
        (&json!("message"), &json!("live")),
        "{next}"
    );
}
