//! TLS on the listener over real sockets (conn/tls.rs, conn/connection.rs): HTTPS with ALPN `h2` and
//! `http/1.1`, SSE and WebSockets over HTTP/2 (RFC 8441 extended CONNECT), the handshake
//! timeout, refusals at the connection limit inside TLS, certificate reload, and bad settings.
//! Certificates come from a CA made at test time (comet-test-support `pki`); clients verify against it.

use comet_test_support as support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use comet_core::MemoryBroker;
use comet_server::{AppState, Config, Tls};
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use support::pki::Pki;
use support::{SOON, TestServer, recv_timeout};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const H2: &[&[u8]] = &[b"h2"];
const H1: &[&[u8]] = &[b"http/1.1"];

/// Starts a server speaking TLS with `tls` (`config.tls_*` are not read).
async fn start_tls(config: Config, tls: Tls) -> TestServer {
    // Bound as `comet serve` binds: TCP_DEFER_ACCEPT waits for the ClientHello.
    let listener = comet_server::bind(([127, 0, 0, 1], 0).into()).expect("bind");
    let broker = Arc::new(MemoryBroker::new(config.hub_config()));
    support::serve_tls_on(listener, AppState::new(broker, config), tls)
}

/// A server with a fresh leaf of `pki`, started through `Config` (as `comet serve` does).
async fn start_with_config(pki: &Pki, mut config: Config) -> TestServer {
    let (cert, key) = pki.write(&pki.leaf("server"));
    config.tls_cert_file = cert.display().to_string();
    config.tls_key_file = key.display().to_string();
    config.validate().expect("valid TLS config");
    support::start_server_with(config).await
}

async fn tls_connect(addr: SocketAddr, connector: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = recv_timeout(SOON, TcpStream::connect(addr)).await.expect("connect");
    let name = ServerName::try_from("localhost").unwrap();
    recv_timeout(SOON, connector.connect(name, tcp))
        .await
        .expect("TLS handshake")
}

fn peer_cert(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().expect("a server certificate")[0].clone()
}

type H2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;
type H1Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// An HTTP/2 connection (ALPN `h2`), checked with one request so the server's SETTINGS (which
/// enable extended CONNECT) have arrived.
async fn h2_connect(addr: SocketAddr, pki: &Pki) -> H2Sender {
    let tls = tls_connect(addr, &pki.connector(H2)).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN chose h2");
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let (parts, body) = request(&mut send, get(addr, "/healthz")).await;
    assert_eq!(
        (parts.status, parts.version, &body[..]),
        (StatusCode::OK, Version::HTTP_2, &b"ok\n"[..])
    );
    send
}

async fn h1_handshake(tls: TlsStream<TcpStream>) -> H1Sender {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http/1.1 handshake");
    tokio::spawn(conn);
    send
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("https://localhost:{}{path}", addr.port())
}

fn get(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::get(url(addr, path))
        .header("host", format!("localhost:{}", addr.port()))
        .body(Full::default())
        .unwrap()
}

fn post(addr: SocketAddr, path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(url(addr, path))
        .header("host", format!("localhost:{}", addr.port()))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// Either client's `send_request`, so one helper reads both.
trait Sender {
    fn send(&mut self, req: Request<Full<Bytes>>) -> impl Future<Output = hyper::Result<Response<Incoming>>>;
}

impl Sender for H2Sender {
    fn send(&mut self, req: Request<Full<Bytes>>) -> impl Future<Output = hyper::Result<Response<Incoming>>> {
        // HTTP/2 takes the authority from the URI; a `host` header would be a second one.
        let (mut parts, body) = req.into_parts();
        parts.headers.remove("host");
        self.send_request(Request::from_parts(parts, body))
    }
}

impl Sender for H1Sender {
    fn send(&mut self, req: Request<Full<Bytes>>) -> impl Future<Output = hyper::Result<Response<Incoming>>> {
        // HTTP/1.1 sends the path only.
        let (mut parts, body) = req.into_parts();
        parts.uri = parts.uri.path_and_query().unwrap().as_str().parse().unwrap();
        self.send_request(Request::from_parts(parts, body))
    }
}

/// Sends `req` and reads the whole answer (bounded).
async fn request(send: &mut impl Sender, req: Request<Full<Bytes>>) -> (http::response::Parts, Bytes) {
    recv_timeout(SOON, async {
        let res = send.send(req).await.expect("response");
        let (parts, body) = res.into_parts();
        (parts, body.collect().await.expect("body").to_bytes())
    })
    .await
}

async fn publish(send: &mut impl Sender, addr: SocketAddr, channel: &str, data: &str) -> (Version, String) {
    let (parts, body) = request(send, post(addr, &format!("/pub/{channel}"), data)).await;
    assert_eq!(parts.status, StatusCode::CREATED, "{body:?}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    (parts.version, v["id"].as_str().expect("id").to_owned())
}

/// The value of `comet_tcp_connections` in `/metrics` (which counts the asking connection).
async fn open_connections(send: &mut impl Sender, addr: SocketAddr) -> i64 {
    let (_, body) = request(send, get(addr, "/metrics")).await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("comet_tcp_connections "))
        .expect("comet_tcp_connections in /metrics")
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn publish_and_poll_over_https_with_http2() {
    let pki = Pki::new("h2-publish");
    let server = start_with_config(&pki, Config::default()).await;
    let mut h2 = h2_connect(server.addr, &pki).await;
    let (version, id) = publish(&mut h2, server.addr, "chat", "hello over h2").await;
    assert_eq!(version, Version::HTTP_2);
    let (parts, body) = request(&mut h2, get(server.addr, "/sub/chat?transport=poll&since=earliest")).await;
    assert_eq!((parts.status, parts.version), (StatusCode::OK, Version::HTTP_2));
    let v: Value = serde_json::from_slice(&body).unwrap();
    let messages = v["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{v}");
    assert_eq!(
        (messages[0]["id"].as_str(), messages[0]["data"].as_str()),
        (Some(&*id), Some("hello over h2"))
    );
}

#[tokio::test]
async fn sse_streams_over_http2() {
    let pki = Pki::new("h2-sse");
    let server = start_with_config(&pki, Config::default()).await;
    let mut h2 = h2_connect(server.addr, &pki).await;
    let (_, first) = publish(&mut h2, server.addr, "news", "tick-0").await;
    let req = Request::get(url(server.addr, "/sub/news?since=earliest"))
        .header("accept", "text/event-stream")
        .body(Full::default())
        .unwrap();
    let res = recv_timeout(SOON, h2.send_request(req)).await.expect("SSE response");
    assert_eq!((res.status(), res.version()), (StatusCode::OK, Version::HTTP_2));
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // Connection-specific fields are malformed in HTTP/2 (RFC 9113 §8.2.2).
    for name in ["connection", "keep-alive", "transfer-encoding", "upgrade"] {
        assert!(res.headers().get(name).is_none(), "{name} sent over h2");
    }
    let mut body = res.into_body();
    // Published on another stream of the same connection while the SSE stream is open.
    let (_, second) = publish(&mut h2, server.addr, "news", "tick-1").await;
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + SOON;
    while !text.contains("data: tick-1\n\n") {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no tick-1 in time; got {text:?}"))
            .expect("SSE body ended")
            .expect("SSE body error");
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    let zero = text.find(&format!("id: {first}\n")).expect("tick-0's id");
    let one = text.find(&format!("id: {second}\n")).expect("tick-1's id");
    assert!(zero < one && text.contains("data: tick-0\n\n"), "{text:?}");
}

#[tokio::test]
async fn http1_still_works_over_tls() {
    let pki = Pki::new("h1");
    let server = start_with_config(&pki, Config::default()).await;
    let tls = tls_connect(server.addr, &pki.connector(H1)).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut h1 = h1_handshake(tls).await;
    let (parts, body) = request(&mut h1, get(server.addr, "/healthz")).await;
    assert_eq!(
        (parts.status, parts.version, &body[..]),
        (StatusCode::OK, Version::HTTP_11, &b"ok\n"[..])
    );
    let (version, _) = publish(&mut h1, server.addr, "chat", "over http/1.1").await;
    assert_eq!(version, Version::HTTP_11);

    // A client offering no ALPN at all gets HTTP/1.1 too, and WebSockets by Upgrade (wss).
    let tls = tls_connect(server.addr, &pki.connector(&[])).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    let (mut ws, res) = recv_timeout(
        SOON,
        tokio_tungstenite::client_async(
            format!("wss://localhost:{}/sub/chat?since=earliest", server.addr.port()),
            tls,
        ),
    )
    .await
    .expect("wss handshake");
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    let subscribed = next_json(&mut ws).await;
    assert_eq!(
        (subscribed["type"].as_str(), subscribed["recovered"].as_bool()),
        (Some("subscribed"), Some(true))
    );
    assert_eq!(next_json(&mut ws).await["data"], "over http/1.1");
}

/// The next text frame as JSON (pings and pongs skipped).
async fn next_json<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match recv_timeout(SOON, ws.next())
            .await
            .expect("socket ended")
            .expect("websocket error")
        {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON text frame"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Reads until the close frame and returns its code.
async fn close_code<S>(ws: &mut WebSocketStream<S>) -> CloseCode
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match recv_timeout(SOON, ws.next())
            .await
            .expect("socket ended before a close")
        {
            Ok(Message::Close(Some(frame))) => return frame.code,
            Ok(Message::Close(None)) => panic!("close without a code"),
            Ok(_) => {}
            Err(e) => panic!("websocket error before a close: {e}"),
        }
    }
}

type H2Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Opens a WebSocket on a new stream of `h2` with an extended CONNECT (RFC 8441 §4).
async fn ws_over_h2(h2: &mut H2Sender, addr: SocketAddr, path: &str) -> H2Ws {
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(url(addr, path))
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "comet.v1")
        .body(Full::default())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut res = recv_timeout(SOON, h2.send_request(req))
        .await
        .expect("CONNECT answered");
    // RFC 8441 §5: 200, not 101, and no Sec-WebSocket-Accept.
    assert_eq!((res.status(), res.version()), (StatusCode::OK, Version::HTTP_2));
    assert!(res.headers().get("sec-websocket-accept").is_none());
    assert!(res.headers().get("upgrade").is_none() && res.headers().get("connection").is_none());
    assert_eq!(res.headers()["sec-websocket-protocol"], "comet.v1");
    let upgraded = recv_timeout(SOON, hyper::upgrade::on(&mut res))
        .await
        .expect("CONNECT stream");
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await
}

#[tokio::test]
async fn websocket_over_http2_extended_connect() {
    let pki = Pki::new("h2-ws");
    let server = start_with_config(&pki, Config::default()).await;
    let mut h2 = h2_connect(server.addr, &pki).await;

    // Two WebSockets and the publishes share one TCP connection.
    let mut ws = ws_over_h2(&mut h2, server.addr, "/sub/chat?since=earliest").await;
    let subscribed = next_json(&mut ws).await;
    assert_eq!(
        (subscribed["type"].as_str(), subscribed["channel"].as_str()),
        (Some("subscribed"), Some("chat"))
    );
    let mut bare = ws_over_h2(&mut h2, server.addr, "/ws").await;
    bare.send(Message::text(json!({"type":"subscribe","channel":"chat"}).to_string()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut bare).await["type"], "subscribed");

    let (_, id) = publish(&mut h2, server.addr, "chat", "hello h2 websocket").await;
    let msg = next_json(&mut ws).await;
    assert_eq!(
        (msg["type"].as_str(), msg["id"].as_str(), msg["data"].as_str()),
        (Some("message"), Some(&*id), Some("hello h2 websocket"))
    );
    assert_eq!(next_json(&mut bare).await["data"], "hello h2 websocket");

    // Commands work both ways: a publish from the socket reaches the other one.
    ws.send(Message::text(
        json!({"type":"publish","channel":"chat","data":"from ws","ref":"p1"}).to_string(),
    ))
    .await
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(next_json(&mut ws).await["type"].as_str().unwrap().to_owned());
    }
    seen.sort();
    assert_eq!(seen, ["ack", "message"]);
    assert_eq!(next_json(&mut bare).await["data"], "from ws");

    // The same limits and close codes as over HTTP/1.1: too big is 1009 …
    let too_big = "x".repeat(server.state.config.ws_max_message_size + 1);
    ws.send(Message::text(too_big)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, CloseCode::Size);
    // … and the other socket, still open on the same connection, gets 1001 on a disconnect.
    server.state.disconnect_all();
    assert_eq!(close_code(&mut bare).await, CloseCode::Away);
    // The HTTP/2 connection itself outlives its WebSocket streams.
    let (parts, _) = request(&mut h2, get(server.addr, "/healthz")).await;
    assert_eq!(parts.status, StatusCode::OK);
}

#[tokio::test]
async fn connect_without_the_websocket_protocol_is_refused() {
    let pki = Pki::new("h2-connect");
    let server = start_with_config(&pki, Config::default()).await;
    let mut h2 = h2_connect(server.addr, &pki).await;
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(url(server.addr, "/sub/chat"))
        .header("sec-websocket-version", "13")
        .body(Full::default())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("not-websocket"));
    let res = recv_timeout(SOON, h2.send_request(req)).await.expect("answered");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body = recv_timeout(SOON, res.into_body().collect()).await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "bad_transport", "{v}");
}

#[tokio::test]
async fn an_unfinished_handshake_is_dropped_after_the_timeout() {
    let pki = Pki::new("slow");
    let config = Config {
        header_read_timeout_secs: 2,
        ..Config::default()
    };
    let server = start_with_config(&pki, config).await;
    let started = Instant::now();
    // One says nothing; one sends a record header promising a ClientHello it never sends.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8]).await.unwrap();

    // Meanwhile others are served: the handshakes do not hold up the accept loop. (Were they in
    // it, this client would be accepted only after both stalled ones had timed out and gone.)
    // The silent one may not be accepted yet: the listener waits for a connection's first bytes
    // (TCP_DEFER_ACCEPT, `comet_server::DEFER_ACCEPT`), and takes a silent one about a second
    // late, so it is counted or not depending on how long the h2 client took. `partial` and the
    // h2 client itself must be.
    let mut h2 = h2_connect(server.addr, &pki).await;
    let open = open_connections(&mut h2, server.addr).await;
    let expected = if cfg!(target_os = "linux") { 2..=3 } else { 3..=3 };
    assert!(
        expected.contains(&open),
        "served while the stalled ones are still open (and counted once accepted): {open} open"
    );

    for (name, stream) in [("silent", &mut silent), ("partial", &mut partial)] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("the {name} client was not dropped"));
        // EOF, or a reset if the server closed with bytes unread: either way it hung up, saying
        // nothing (no TLS record: the handshake never got as far as an answer).
        assert!(matches!(read, Ok(0) | Err(_)), "{name}: {read:?}");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "dropped after {waited:?}, before the timeout"
    );
    // Dropped connections leave the count.
    let deadline = Instant::now() + SOON;
    while open_connections(&mut h2, server.addr).await != 1 {
        assert!(Instant::now() < deadline, "the stalled connections are still counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn over_the_connection_limit_tls_clients_get_503_inside_tls() {
    let pki = Pki::new("limit");
    let config = Config {
        max_connections: 1,
        ..Config::default()
    };
    let server = start_with_config(&pki, config).await;
    let tls = tls_connect(server.addr, &pki.connector(H1)).await;
    let mut held = h1_handshake(tls).await;
    let (parts, _) = request(&mut held, get(server.addr, "/healthz")).await;
    assert_eq!(parts.status, StatusCode::OK);

    // HTTP/1.1 …
    let tls = tls_connect(server.addr, &pki.connector(H1)).await;
    let mut refused = h1_handshake(tls).await;
    let (parts, body) = request(&mut refused, get(server.addr, "/healthz")).await;
    assert_eq!(
        (parts.status, parts.version),
        (StatusCode::SERVICE_UNAVAILABLE, Version::HTTP_11)
    );
    assert_eq!(parts.headers["retry-after"], "1");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "unavailable", "{v}");

    // … and HTTP/2.
    let tls = tls_connect(server.addr, &pki.connector(H2)).await;
    let (mut refused, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let (parts, body) = request(&mut refused, get(server.addr, "/healthz")).await;
    assert_eq!(
        (parts.status, parts.version),
        (StatusCode::SERVICE_UNAVAILABLE, Version::HTTP_2)
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "unavailable", "{v}");

    // The held connection is still served; once it is gone, a new one is too.
    let (parts, _) = request(&mut held, get(server.addr, "/healthz")).await;
    assert_eq!(parts.status, StatusCode::OK);
    drop(held);
    let deadline = Instant::now() + SOON;
    loop {
        let tls = tls_connect(server.addr, &pki.connector(H1)).await;
        let mut next = h1_handshake(tls).await;
        let (parts, _) = request(&mut next, get(server.addr, "/healthz")).await;
        if parts.status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after the held connection closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn over_the_per_address_limit_tls_clients_get_429_inside_tls() {
    let pki = Pki::new("per-ip");
    let config = Config {
        max_connections_per_ip: 1,
        ..Config::default()
    };
    let server = start_with_config(&pki, config).await;
    let mut held = h2_connect(server.addr, &pki).await;
    let tls = tls_connect(server.addr, &pki.connector(H1)).await;
    let mut refused = h1_handshake(tls).await;
    let (parts, body) = request(&mut refused, get(server.addr, "/healthz")).await;
    assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(parts.headers["retry-after"], "1");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "too_many_connections", "{v}");
    let (parts, _) = request(&mut held, get(server.addr, "/healthz")).await;
    assert_eq!(parts.status, StatusCode::OK);
}

#[tokio::test]
async fn reload_swaps_the_certificate_for_new_connections_only() {
    let pki = Pki::new("reload");
    let (a, b) = (pki.leaf("a"), pki.leaf("b"));
    let (cert, key) = pki.write(&a);
    let tls = Tls::load(&cert, &key).expect("load A");
    assert_eq!(tls.certificate(), a.der);
    let server = start_tls(Config::default(), tls.clone()).await;
    let connector = pki.connector(H1);
    let first = tls_connect(server.addr, &connector).await;
    assert_eq!(peer_cert(&first), a.der, "served A");
    let mut first = h1_handshake(first).await;

    pki.write(&b);
    tls.reload().expect("reload B");
    assert_eq!(tls.certificate(), b.der);
    let second = tls_connect(server.addr, &connector).await;
    assert_eq!(peer_cert(&second), b.der, "a new connection gets B");
    // The connection made with A goes on.
    let (parts, _) = request(&mut first, get(server.addr, "/healthz")).await;
    assert_eq!(parts.status, StatusCode::OK);

    // Bad files: an error, and B stays.
    std::fs::write(&cert, "garbage").unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(
        err.contains("tls_cert_file") && err.contains("no CERTIFICATE block"),
        "{err}"
    );
    std::fs::write(&cert, &a.cert_pem).unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.contains("does not match"), "{err}");
    assert_eq!(tls.certificate(), b.der);
    let third = tls_connect(server.addr, &connector).await;
    assert_eq!(peer_cert(&third), b.der, "still B after failed reloads");
    let mut third = h1_handshake(third).await;
    let (parts, _) = request(&mut third, get(server.addr, "/healthz")).await;
    assert_eq!(parts.status, StatusCode::OK);
}

fn load_error(env: &[(&str, &std::path::Path)]) -> String {
    let env = env.iter().map(|(k, v)| ((*k).to_owned(), v.display().to_string()));
    Config::load(None, env).unwrap_err().to_string()
}

#[tokio::test]
async fn bad_tls_settings_are_clear_errors() {
    let pki = Pki::new("bad");
    let (a, b) = (pki.leaf("a"), pki.leaf("b"));
    let (cert, key) = pki.write(&a);
    let ok = [
        ("COMET_TLS_CERT_FILE".to_owned(), cert.display().to_string()),
        ("COMET_TLS_KEY_FILE".to_owned(), key.display().to_string()),
    ];
    let config = Config::load(None, ok).expect("cert and key load");
    assert_eq!(config.tls_cert_file, cert.display().to_string());

    let err = load_error(&[("COMET_TLS_CERT_FILE", &cert)]);
    assert!(err.contains("tls_cert_file is set but tls_key_file is not"), "{err}");
    let err = load_error(&[("COMET_TLS_KEY_FILE", &key)]);
    assert!(err.contains("tls_key_file is set but tls_cert_file is not"), "{err}");

    let missing = pki.path("missing.pem");
    let err = load_error(&[("COMET_TLS_CERT_FILE", &cert), ("COMET_TLS_KEY_FILE", &missing)]);
    assert!(
        err.contains("cannot read tls_key_file") && err.contains("missing.pem"),
        "{err}"
    );

    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "not PEM at all\n").unwrap();
    let err = load_error(&[("COMET_TLS_CERT_FILE", &garbage), ("COMET_TLS_KEY_FILE", &key)]);
    assert!(
        err.contains("tls_cert_file") && err.contains("garbage.pem") && err.contains("no CERTIFICATE block"),
        "{err}"
    );
    let err = load_error(&[("COMET_TLS_CERT_FILE", &cert), ("COMET_TLS_KEY_FILE", &garbage)]);
    assert!(err.contains("tls_key_file") && err.contains("no PRIVATE KEY"), "{err}");

    let truncated = pki.path("truncated.pem");
    std::fs::write(&truncated, &a.cert_pem[..a.cert_pem.len() / 2]).unwrap();
    let err = load_error(&[("COMET_TLS_CERT_FILE", &truncated), ("COMET_TLS_KEY_FILE", &key)]);
    assert!(err.contains("truncated.pem") && err.contains("not usable PEM"), "{err}");

    let bad_der = pki.path("bad-der.pem");
    std::fs::write(
        &bad_der,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = load_error(&[("COMET_TLS_CERT_FILE", &bad_der), ("COMET_TLS_KEY_FILE", &key)]);
    assert!(
        err.contains("cannot use tls_cert_file") && err.contains("bad-der.pem"),
        "{err}"
    );

    let other_key = pki.path("other-key.pem");
    std::fs::write(&other_key, &b.key_pem).unwrap();
    let err = load_error(&[("COMET_TLS_CERT_FILE", &cert), ("COMET_TLS_KEY_FILE", &other_key)]);
    assert!(err.contains("does not match"), "{err}");

    // `serve` loads the files itself, so a config that skipped `validate` fails there.
    let config = Config {
        tls_cert_file: garbage.display().to_string(),
        tls_key_file: key.display().to_string(),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let state = AppState::new(Arc::new(MemoryBroker::new(config.hub_config())), config);
    let err = recv_timeout(SOON, comet_server::serve(listener, state))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("no CERTIFICATE block"), "{err}");
}

/// After the handshake, a client that says nothing more is dropped at the header-read timeout:
/// ALPN picks the protocol, so no detection step without a timeout sits in between.
#[tokio::test]
async fn a_silent_client_after_the_handshake_is_dropped_at_the_header_timeout() {
    let pki = Pki::new("quiet");
    let config = Config {
        header_read_timeout_secs: 1,
        ..Config::default()
    };
    let server = start_with_config(&pki, config).await;
    for alpn in [H1, H2, &[][..]] {
        let mut tls = tls_connect(server.addr, &pki.connector(alpn)).await;
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(8), tls.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("a silent client (ALPN {alpn:?}) was kept open"));
        // EOF (with or without close_notify): hung up, having said nothing.
        assert!(matches!(read, Ok(0) | Err(_)), "ALPN {alpn:?}: {read:?}");
    }
    // Issue 16, point 6: an HTTP/2 client that sends its preface and SETTINGS, then no request,
    // is dropped at the same timeout (the server's SETTINGS come first, then EOF).
    let mut tls = tls_connect(server.addr, &pki.connector(H2)).await;
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(8), tls.read(&mut buf))
            .await
            .expect("an HTTP/2 connection with no request was kept open");
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

/// Issue 16, point 6: over HTTP/2, each request in flight past a connection's first takes a
/// place in `max_connections_per_ip` (3 here), as it would on a connection of its own: a third
/// SSE stream on one connection is refused `429 too_many_connections`, and once one ends another
/// fits.
#[tokio::test]
async fn http2_streams_count_against_the_per_address_limit() {
    let pki = Pki::new("h2-streams");
    let config = Config {
        max_connections_per_ip: 3,
        ..Config::default()
    };
    let server = start_with_config(&pki, config).await;
    let mut h2 = h2_connect(server.addr, &pki).await;
    let sse = |h2: &mut H2Sender| {
        let req = Request::get(url(server.addr, "/sub/news"))
            .header("accept", "text/event-stream")
            .body(Full::default())
            .unwrap();
        h2.send_request(req)
    };
    let first = recv_timeout(SOON, sse(&mut h2)).await.expect("first SSE");
    let second = recv_timeout(SOON, sse(&mut h2)).await.expect("second SSE");
    assert_eq!((first.status(), second.status()), (StatusCode::OK, StatusCode::OK));
    // The connection, plus one place for the second stream: 2 of 3. A third stream takes the
    // last; a fourth is over.
    let third = recv_timeout(SOON, sse(&mut h2)).await.expect("third SSE");
    assert_eq!(third.status(), StatusCode::OK);
    let refused = recv_timeout(SOON, sse(&mut h2)).await.expect("fourth SSE");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body = recv_timeout(SOON, refused.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "too_many_connections", "{v}");
    drop(third);
    let deadline = Instant::now() + SOON;
    loop {
        let again = recv_timeout(SOON, sse(&mut h2)).await.expect("SSE again");
        if again.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the ended stream's place was not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((first, second));
}
