//! A WebSocket client speaking Comet's JSON (docs/protocol.md "ws"), over tokio-tungstenite.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::wait::{SOON, recv_timeout};

/// A client WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `url` (`ws://…`); panics if the handshake fails or takes longer than [`SOON`].
pub async fn connect(url: &str) -> Ws {
    recv_timeout(SOON, tokio_tungstenite::connect_async(url))
        .await
        .unwrap_or_else(|e| panic!("WebSocket handshake with {url}: {e}"))
        .0
}

/// The next text frame as JSON (pings and pongs skipped); a close frame is returned as
/// `{"close": code, "reason": …}`. Panics after [`SOON`] or on anything else.
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match recv_timeout(SOON, ws.next()).await {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).expect("a JSON frame"),
            Some(Ok(Message::Close(Some(frame)))) => {
                return json!({"close": u16::from(frame.code), "reason": frame.reason.as_str()});
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

/// Sends `value` as a text frame.
pub async fn send_json(ws: &mut Ws, value: &Value) {
    recv_timeout(SOON, ws.send(Message::text(value.to_string())))
        .await
        .expect("send");
}

/// Reads frames until one satisfies `done` (at most 50), returning it.
pub async fn until(ws: &mut Ws, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..50 {
        let frame = next_json(ws).await;
        if done(&frame) {
            return frame;
        }
    }
    panic!("no {what} within 50 frames");
}

/// Opens `url` (`ws://…`) with extra request `headers` (a cookie, an `Origin`); panics if the
/// handshake fails or takes longer than [`SOON`].
pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("a WebSocket URL");
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            value.parse().expect("a header value"),
        );
    }
    recv_timeout(SOON, tokio_tungstenite::connect_async(request))
        .await
        .unwrap_or_else(|e| panic!("WebSocket handshake with {url}: {e}"))
        .0
}
