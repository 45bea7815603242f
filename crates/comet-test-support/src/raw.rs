//! Raw HTTP/1.1 and WebSocket over TCP, for tests where the point is the bytes: request heads,
//! masked client frames (RFC 6455 §5.3), a hand-made handshake, and reading until the server
//! closes.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::wait::{SOON, recv_timeout};

/// What a raw connection received before the server closed it (or the deadline passed).
#[derive(Debug)]
pub struct Answer {
    /// Everything received.
    pub bytes: Vec<u8>,
    /// The server closed the connection (EOF or reset) before the deadline.
    pub closed: bool,
}

impl Answer {
    /// The status code of the first response, if one came.
    pub fn status(&self) -> Option<u16> {
        let text = std::str::from_utf8(self.bytes.get(..12)?).ok()?;
        text.strip_prefix("HTTP/1.1 ")?.parse().ok()
    }

    /// The bytes as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Reads until the peer closes, at most `limit`.
pub async fn read_until_closed(reader: &mut (impl AsyncRead + Unpin), limit: Duration) -> Answer {
    let deadline = Instant::now() + limit;
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, reader.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => return Answer { bytes, closed: true },
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
            Err(_) => return Answer { bytes, closed: false },
        }
    }
}

/// A TCP connection to `addr` (bounded).
pub async fn connect(addr: SocketAddr) -> TcpStream {
    recv_timeout(SOON, TcpStream::connect(addr)).await.expect("connect")
}

/// Sends `request` on a fresh connection and reads until the server closes it.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = connect(addr).await;
    // The server may answer and close before reading everything (that is what some cases
    // provoke), so a failed write is not an error here.
    let _ = stream.write_all(request).await;
    read_until_closed(&mut stream, SOON).await
}

/// A request head for `target` with `Connection: close` plus `extra` header lines.
pub fn head(method: &str, target: &str, extra: &[&str]) -> Vec<u8> {
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for line in extra {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// A WebSocket handshake request for `target`.
pub fn ws_head(target: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// A masked client frame (RFC 6455 §5.3) with FIN set.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    client_frame_with(0x80 | opcode, payload)
}

/// A masked client frame whose first byte (FIN, RSV1–3, opcode) is `first`.
pub fn client_frame_with(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![first];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let key = [0x5a, 0x17, 0xc3, 0x88];
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// Opens a WebSocket on `target` by hand and reads the `101` (and nothing more).
pub async fn raw_ws(addr: SocketAddr, target: &str) -> TcpStream {
    let mut stream = connect(addr).await;
    stream.write_all(&ws_head(target)).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = recv_timeout(SOON, stream.read(&mut byte)).await.expect("read the 101");
        assert_eq!(
            n,
            1,
            "closed during the handshake: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    stream
}

/// Sends pings (125-byte payloads, the most a control frame may carry) as fast as the server
/// takes them, never reading the pongs, until it stops taking them for a second or `max_bytes`
/// went out. Returns the bytes sent.
pub async fn ping_flood(stream: &mut TcpStream, max_bytes: usize) -> usize {
    let batch: Vec<u8> = (0..500).flat_map(|_| client_frame(0x9, &[b'p'; 125])).collect();
    let mut sent = 0;
    while sent < max_bytes {
        match tokio::time::timeout(Duration::from_secs(1), stream.write_all(&batch)).await {
            Ok(Ok(())) => sent += batch.len(),
            _ => break,
        }
    }
    sent
}

/// A connection with a small fixed receive buffer. On loopback, autotuning grows a receive buffer
/// up to `tcp_rmem`'s maximum (tens of MiB), where the kernel would keep what a never-reading
/// client is sent; with this one, what the client does not take has to wait in the server.
pub async fn connect_small(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    recv_timeout(SOON, socket.connect(addr)).await.expect("connect")
}
