//! Hostile clients against an in-process server over real sockets (raw TCP where the point is
//! the bytes, reqwest and tokio-tungstenite otherwise).
//!
//! Every case shows two things: the clear answer the hostile client gets (a status and a JSON
//! error code, a WebSocket close code and reason, or its connection closed), and that nothing
//! else broke. For the second, [`Bystanders`] subscribe to one channel on every transport (SSE,
//! stream, iframe, long poll and poll by cursor, WebSocket) while a publisher keeps publishing
//! there, each publish acknowledged with `201`; at the end every bystander must have received
//! every acknowledged message exactly once and in order.
//!
//! Not here: per-IP connection limits and request-rate limits (tested with their implementation).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use comet_server::Config;
use comet_server::auth::NamespaceRules;
use comet_server::transport::Kind;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{SOON, TestServer, recv_timeout, start_server_with};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Bystanders

/// How the subscribers that must not notice anything are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Sse,
    Stream,
    Iframe,
    LongPoll,
    Poll,
    Ws,
}

impl Via {
    const ALL: [Via; 6] = [Via::Sse, Via::Stream, Via::Iframe, Via::LongPoll, Via::Poll, Via::Ws];
}

/// The publisher's rhythm: `size` bytes of filler per message, one every `every`, at most `max`.
#[derive(Debug, Clone, Copy)]
struct Pace {
    size: usize,
    every: Duration,
    max: u64,
}

/// Small messages, 50 a second, for as long as the test runs.
const STEADY: Pace = Pace {
    size: 16,
    every: Duration::from_millis(20),
    max: 5_000,
};

/// The publisher stays at most this many messages ahead of the slowest bystander. A bystander
/// that falls behind the channel's history gets a gap notice, which the protocol allows but
/// which would hide a real loss here; the window keeps every bystander within history (at least
/// 32 messages in every test) whatever the machine's speed.
const WINDOW: u64 = 8;

/// At least this many messages are acknowledged before a test's final check, so it is never
/// vacuous.
const MIN_PUBLISHED: u64 = 20;

/// The last message: readers stop when they see it.
const END: &str = "end";

/// Bounds everything a bystander waits for.
const BYSTANDER_LIMIT: Duration = Duration::from_secs(60);

/// Message `seq` with `size` bytes of filler: `"<seq>:xxxx…"`.
fn payload(seq: u64, size: usize) -> String {
    format!("{seq}:") + &"x".repeat(size)
}

/// HTTP clients of the bystanders and the publisher. Idle pooled connections are given up after
/// 200 ms: the slowloris test runs the server with a 1 s header-read timeout, which closes idle
/// keep-alive connections too, and a request sent on a connection the server is closing fails.
fn bystander_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_millis(200))
        .build()
        .expect("client")
}

/// Subscribers on every transport plus a publisher, for one channel.
struct Bystanders {
    channel: String,
    pace: Pace,
    base: String,
    bearer: Option<String>,
    readers: Vec<(Via, JoinHandle<Vec<u64>>)>,
    publisher: JoinHandle<u64>,
    acked: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Bystanders {
    /// Subscribes on every transport (each one ready before the next starts), then starts
    /// publishing. `bearer` is the publisher's credential, if the server needs one.
    async fn start(server: &TestServer, channel: &str, pace: Pace, bearer: Option<&str>) -> Self {
        let progress: Arc<Vec<AtomicU64>> = Arc::new(Via::ALL.iter().map(|_| AtomicU64::new(0)).collect());
        let mut readers = Vec::new();
        for (index, via) in Via::ALL.into_iter().enumerate() {
            let (ready, started) = oneshot::channel();
            let reader = Reader {
                via,
                base: server.url(""),
                ws_base: server.ws_url(""),
                channel: channel.to_owned(),
                size: pace.size,
                progress: Arc::clone(&progress),
                index,
                ready: Some(ready),
                seen: Vec::new(),
                client: bystander_client(),
                deadline: Instant::now() + BYSTANDER_LIMIT,
            };
            readers.push((via, tokio::spawn(reader.run())));
            recv_timeout(SOON, started)
                .await
                .unwrap_or_else(|_| panic!("the {via:?} bystander failed to start (its panic is above)"));
        }
        let acked = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let publisher = tokio::spawn(publish_loop(
            bystander_client(),
            server.url(&format!("/pub/{channel}")),
            bearer.map(str::to_owned),
            pace,
            progress,
            Arc::clone(&acked),
            stop.clone(),
        ));
        Self {
            channel: channel.to_owned(),
            pace,
            base: server.url(""),
            bearer: bearer.map(str::to_owned),
            readers,
            publisher,
            acked,
            stop,
        }
    }

    /// Messages acknowledged so far.
    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until at least `n` messages were acknowledged.
    async fn wait_acked(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(40);
        while self.acked() < n && !self.publisher.is_finished() {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} messages acknowledged",
                self.acked()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops publishing, sends the end marker, and checks that every bystander received every
    /// acknowledged message exactly once, in order.
    async fn finish(self) {
        self.wait_acked(MIN_PUBLISHED.min(self.pace.max)).await;
        self.stop.cancel();
        let last = join("the publisher", Duration::from_secs(40), self.publisher).await;
        assert!(
            last >= MIN_PUBLISHED.min(self.pace.max),
            "only {last} messages were published"
        );
        let mut req = bystander_client()
            .post(format!("{}/pub/{}", self.base, self.channel))
            .body(END);
        if let Some(bearer) = &self.bearer {
            req = req.bearer_auth(bearer);
        }
        let res = recv_timeout(SOON, req.send()).await.expect("publish the end marker");
        assert_eq!(res.status(), 201, "the end marker was not acknowledged");
        for (via, reader) in self.readers {
            let seen = join(&format!("the {via:?} bystander"), Duration::from_secs(40), reader).await;
            check_sequence(via, &seen, last);
        }
    }
}

/// Asserts `seen` is exactly `1..=last`, describing the first difference.
fn check_sequence(via: Via, seen: &[u64], last: u64) {
    for (i, want) in (1..=last).enumerate() {
        match seen.get(i) {
            Some(got) if *got == want => {}
            Some(got) => panic!(
                "the {via:?} bystander's message #{} is {got}, expected {want} (it saw {} messages, {last} were \
                 acknowledged; around there: {:?})",
                i + 1,
                seen.len(),
                &seen[i.saturating_sub(3)..(i + 3).min(seen.len())]
            ),
            None => panic!(
                "the {via:?} bystander saw {} messages, {last} were acknowledged (the first missing is {want})",
                seen.len()
            ),
        }
    }
    assert_eq!(
        seen.len() as u64,
        last,
        "the {via:?} bystander saw more than was acknowledged"
    );
}

/// Awaits a task (bounded), re-raising its panic as is.
async fn join<T>(what: &str, limit: Duration, task: JoinHandle<T>) -> T {
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(value)) => value,
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => panic!("{what} was cancelled: {e}"),
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

async fn publish_loop(
    client: reqwest::Client,
    url: String,
    bearer: Option<String>,
    pace: Pace,
    progress: Arc<Vec<AtomicU64>>,
    acked: Arc<AtomicU64>,
    stop: CancellationToken,
) -> u64 {
    let mut seq = 0;
    while seq < pace.max && !stop.is_cancelled() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (slowest, at) = progress
                .iter()
                .map(|p| p.load(Ordering::Relaxed))
                .enumerate()
                .min_by_key(|&(_, at)| at)
                .expect("bystanders");
            if at + WINDOW > seq {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the {:?} bystander is stuck at message {at} of {seq}",
                Via::ALL[slowest]
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        seq += 1;
        let mut req = client.post(&url).body(payload(seq, pace.size));
        if let Some(bearer) = &bearer {
            req = req.bearer_auth(bearer);
        }
        let res = recv_timeout(Duration::from_secs(20), req.send())
            .await
            .unwrap_or_else(|e| panic!("publish {seq}: {e}"));
        assert_eq!(res.status(), 201, "publish {seq} was not acknowledged");
        acked.store(seq, Ordering::Relaxed);
        if !pace.every.is_zero() {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(pace.every) => {}
            }
        }
    }
    seq
}

/// One bystander: subscribes, says when it is ready, then records the sequence number of every
/// message until the end marker. Any gap notice fails it.
struct Reader {
    via: Via,
    base: String,
    ws_base: String,
    channel: String,
    size: usize,
    progress: Arc<Vec<AtomicU64>>,
    index: usize,
    ready: Option<oneshot::Sender<()>>,
    seen: Vec<u64>,
    client: reqwest::Client,
    deadline: Instant,
}

impl Reader {
    async fn run(self) -> Vec<u64> {
        match self.via {
            Via::Sse => self.sse().await,
            Via::Stream => self.stream().await,
            Via::Iframe => self.iframe().await,
            Via::LongPoll | Via::Poll => self.poll().await,
            Via::Ws => self.ws().await,
        }
    }

    fn ready(&mut self) {
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
    }

    /// Records one message's data; `true` at the end marker.
    fn data(&mut self, data: &str) -> bool {
        if data == END {
            return true;
        }
        let via = self.via;
        let (seq, filler) = data
            .split_once(':')
            .unwrap_or_else(|| panic!("the {via:?} bystander got foreign data {:?}", cut(data)));
        let seq: u64 = seq.parse().unwrap_or_else(|_| panic!("bad sequence number {seq:?}"));
        assert_eq!(
            filler.len(),
            self.size,
            "the {via:?} bystander got message {seq} altered"
        );
        self.seen.push(seq);
        self.progress[self.index].store(seq, Ordering::Relaxed);
        false
    }

    async fn get(&self, path_and_query: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.client.get(format!("{}{path_and_query}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = tokio::time::timeout_at(self.deadline, req.send())
            .await
            .unwrap_or_else(|_| panic!("the {:?} bystander's request timed out", self.via))
            .unwrap_or_else(|e| panic!("the {:?} bystander's request failed: {e}", self.via));
        assert_eq!(res.status(), 200, "the {:?} bystander's request", self.via);
        res
    }

    /// The next chunk of a streaming body; `None` when it ends.
    async fn chunk(&self, res: &mut reqwest::Response) -> Option<bytes::Bytes> {
        tokio::time::timeout_at(self.deadline, res.chunk())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the {:?} bystander timed out; last seen {:?}",
                    self.via,
                    self.seen.last()
                )
            })
            .unwrap_or_else(|e| panic!("the {:?} bystander's body failed: {e}", self.via))
    }

    async fn sse(mut self) -> Vec<u64> {
        let mut res = self
            .get(&format!("/sub/{}", self.channel), &[("accept", "text/event-stream")])
            .await;
        let mut buf = Buf::default();
        loop {
            while let Some(block) = buf.take_through(b"\n\n") {
                // The first block (`retry:` and the start `id:`) says the stream is open.
                self.ready();
                let text = String::from_utf8(block).expect("UTF-8 event stream");
                let mut data = None;
                for line in text.split('\n') {
                    if let Some(event) = line.strip_prefix("event: ") {
                        assert_ne!(event, "comet.gap", "the Sse bystander got a gap notice");
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        assert!(data.is_none(), "one data line per message");
                        data = Some(value);
                    }
                }
                if let Some(data) = data
                    && self.data(data)
                {
                    return self.seen;
                }
            }
            let chunk = self.chunk(&mut res).await.expect("the Sse bystander's stream ended");
            buf.extend(&chunk);
        }
    }

    async fn stream(mut self) -> Vec<u64> {
        let mut res = self
            .get(&format!("/sub/{}?transport=stream&prelude=1", self.channel), &[])
            .await;
        let mut buf = Buf::default();
        loop {
            while let Some(line) = buf.take_through(b"\n") {
                if line.iter().all(u8::is_ascii_whitespace) {
                    self.ready(); // the prelude (or a heartbeat)
                    continue;
                }
                let v: Value = serde_json::from_slice(&line).expect("an NDJSON line");
                assert!(
                    v.get("type").is_none(),
                    "the Stream bystander got {}",
                    cut(&v.to_string())
                );
                if self.data(v["data"].as_str().expect("data")) {
                    return self.seen;
                }
            }
            let chunk = self.chunk(&mut res).await.expect("the Stream bystander's stream ended");
            buf.extend(&chunk);
        }
    }

    /// Reopens the document with the reconnect cursor each time the byte budget ends it, as the
    /// page would.
    async fn iframe(mut self) -> Vec<u64> {
        let mut since = String::new();
        for _document in 0..100_000 {
            let mut res = self
                .get(
                    &format!("/sub/{}?transport=iframe&callback=bystander{since}", self.channel),
                    &[],
                )
                .await;
            let mut buf = Buf::default();
            while buf.take_through(b"-->\n").is_none() {
                let chunk = self.chunk(&mut res).await.expect("the iframe prelude");
                buf.extend(&chunk);
            }
            self.ready();
            'document: loop {
                while let Some(chunk) = buf.take_through(b")</script>\n") {
                    let start = find(&chunk, b"<script>p(").expect("a script chunk") + b"<script>p(".len();
                    let v: Value = serde_json::from_slice(&chunk[start..]).expect("JSON in the chunk");
                    match v["type"].as_str() {
                        None => {
                            if self.data(v["data"].as_str().expect("data")) {
                                return self.seen;
                            }
                        }
                        Some("reconnect") => {
                            since = format!("&since={}", v["cursor"].as_str().expect("cursor"));
                            break 'document;
                        }
                        Some(_) => panic!("the Iframe bystander got {v}"),
                    }
                }
                let chunk = self
                    .chunk(&mut res)
                    .await
                    .expect("the Iframe document ended without a reconnect");
                buf.extend(&chunk);
            }
        }
        panic!("the Iframe bystander reconnected too often")
    }

    async fn poll(mut self) -> Vec<u64> {
        let first: Value = self
            .get(&format!("/sub/{}?transport=poll", self.channel), &[])
            .await
            .json()
            .await
            .expect("poll JSON");
        let mut cursor = first["cursor"].as_str().expect("cursor").to_owned();
        self.ready();
        let transport = if self.via == Via::Poll {
            "poll"
        } else {
            "longpoll&timeout=5"
        };
        for _round in 0..1_000_000 {
            let answer: Value = self
                .get(
                    &format!("/sub/{}?transport={transport}&since={cursor}", self.channel),
                    &[],
                )
                .await
                .json()
                .await
                .expect("poll JSON");
            assert!(answer.get("gap").is_none(), "the {:?} bystander got a gap", self.via);
            let messages = answer["messages"].as_array().expect("messages");
            for m in messages {
                if self.data(m["data"].as_str().expect("data")) {
                    return self.seen;
                }
            }
            cursor = answer["cursor"].as_str().expect("cursor").to_owned();
            if messages.is_empty() && self.via == Via::Poll {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(Instant::now() < self.deadline, "the {:?} bystander timed out", self.via);
        }
        panic!("the {:?} bystander polled too often", self.via)
    }

    async fn ws(mut self) -> Vec<u64> {
        let url = format!("{}/sub/{}", self.ws_base, self.channel);
        let (mut ws, _) = recv_timeout(SOON, tokio_tungstenite::connect_async(url))
            .await
            .expect("the Ws bystander's handshake");
        loop {
            let frame = tokio::time::timeout_at(self.deadline, ws.next())
                .await
                .expect("the Ws bystander timed out")
                .expect("the Ws bystander's socket ended")
                .expect("the Ws bystander's socket failed");
            let text = match frame {
                WsMessage::Text(text) => text,
                WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                other => panic!("the Ws bystander got {other:?}"),
            };
            let v: Value = serde_json::from_str(&text).expect("JSON frame");
            match v["type"].as_str() {
                Some("subscribed") => {
                    assert_eq!(v["recovered"], true);
                    self.ready();
                }
                Some("message") => {
                    if self.data(v["data"].as_str().expect("data")) {
                        return self.seen;
                    }
                }
                _ => panic!("the Ws bystander got {}", cut(&text)),
            }
        }
    }
}

/// Received bytes not yet parsed. Searches only what it has not searched before, so a large
/// message arriving in many chunks costs one pass (this runs unoptimized, in the test profile).
#[derive(Debug, Default)]
struct Buf {
    data: Vec<u8>,
    /// Bytes already known not to start a delimiter.
    scanned: usize,
}

impl Buf {
    fn extend(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }

    /// Removes and returns the bytes before the first `delim` (and `delim` itself).
    fn take_through(&mut self, delim: &[u8]) -> Option<Vec<u8>> {
        let from = self.scanned;
        match find(&self.data[from..], delim) {
            Some(at) => {
                let at = from + at;
                let item = self.data[..at].to_vec();
                self.data.drain(..at + delim.len());
                self.scanned = 0;
                Some(item)
            }
            None => {
                self.scanned = self.data.len().saturating_sub(delim.len() - 1);
                None
            }
        }
    }
}

/// The first `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while let Some(i) = haystack[from..].iter().position(|&b| b == first) {
        let at = from + i;
        let end = at + needle.len();
        if end > haystack.len() {
            return None;
        }
        if &haystack[at + 1..end] == rest {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// At most 200 characters of `text`, for messages.
fn cut(text: &str) -> String {
    text.chars().take(200).collect()
}

// ---------------------------------------------------------------------------------------------
// Raw connections

/// What a raw connection received before the server closed it (or the deadline passed).
#[derive(Debug)]
struct Answer {
    bytes: Vec<u8>,
    /// The server closed the connection (EOF or reset) before the deadline.
    closed: bool,
}

impl Answer {
    /// The status code of the first response, if one came.
    fn status(&self) -> Option<u16> {
        let text = std::str::from_utf8(self.bytes.get(..12)?).ok()?;
        text.strip_prefix("HTTP/1.1 ")?.parse().ok()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Reads until the peer closes, at most `limit`.
async fn read_until_closed(reader: &mut (impl AsyncRead + Unpin), limit: Duration) -> Answer {
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

async fn connect(addr: SocketAddr) -> TcpStream {
    recv_timeout(SOON, TcpStream::connect(addr)).await.expect("connect")
}

/// Sends `request` on a fresh connection and reads until the server closes it.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = connect(addr).await;
    // The server may answer and close before reading everything (that is what some cases
    // provoke), so a failed write is not an error here.
    let _ = stream.write_all(request).await;
    read_until_closed(&mut stream, SOON).await
}

/// A request head for `target` with `Connection: close` plus `extra` header lines.
fn head(method: &str, target: &str, extra: &[&str]) -> Vec<u8> {
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for line in extra {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// A WebSocket handshake request for `target`.
fn ws_head(target: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Subscribers of `channel` as `/channels/{channel}` reports them.
async fn subscribers(server: &TestServer, channel: &str) -> u64 {
    let res = recv_timeout(SOON, reqwest::get(server.url(&format!("/channels/{channel}"))))
        .await
        .expect("channel info");
    let v: Value = res.json().await.expect("channel info JSON");
    v["subscribers"].as_u64().expect("subscribers")
}

/// Waits (bounded) until `channel` has `n` subscribers.
async fn wait_subscribers(server: &TestServer, channel: &str, n: u64, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = subscribers(server, channel).await;
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{why}: {channel} still has {now} subscribers, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The status and JSON error body of an answer, checked against `status` and `code`; returns the
/// message.
async fn expect_error(res: reqwest::Response, status: u16, code: &str, what: &str) -> String {
    assert_eq!(res.status(), status, "{what}");
    let body = res.text().await.expect("body");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body:?}"));
    assert_eq!(v["error"]["code"], code, "{what}: {v}");
    v["error"]["message"].as_str().expect("message").to_owned()
}

/// Runs the ignored test `name` of this binary in a process of its own and checks that it
/// passed. For the tests that measure RSS: the tests of one binary share a process, and the
/// allocator keeps (and hands out again) what earlier tests freed, which would hide growth.
fn run_alone(name: &str) {
    let exe = std::env::current_exe().expect("the test binary");
    let log = std::env::temp_dir().join(format!("comet-hostile-{name}-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).expect("log file");
    let mut child = std::process::Command::new(exe)
        .args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .expect("start the test binary");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the test binary") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    eprintln!("{output}");
    assert!(status.success(), "{name} failed in its own process:\n{output}");
    assert!(output.contains("1 passed"), "{name} did not run:\n{output}");
}

/// The resident set size of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}

const MIB: u64 = 1024 * 1024;

/// The defaults without the per-address limits (`max_connections_per_ip` and the rates): every
/// client here is 127.0.0.1, and those limits have tests of their own.
fn base_config() -> Config {
    Config {
        max_connections_per_ip: 0,
        max_longpolls_per_ip: 0,
        subscribes_per_sec_per_ip: 0,
        publishes_per_sec: 0,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The harness on its own

/// The bystanders on a quiet server: the baseline every other test compares with.
#[tokio::test]
async fn bystanders_on_every_transport_receive_every_acknowledged_message() {
    let server = start_server_with(base_config()).await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    crowd.wait_acked(MIN_PUBLISHED).await;
    crowd.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Slowloris

/// A request head sent byte by byte, a head never finished, a connection that sends nothing, and
/// a keep-alive connection whose second head never ends: each is closed once
/// `header_read_timeout_secs` (1 s here) passes without a complete head, with no answer.
#[tokio::test]
async fn slow_or_unfinished_request_heads_are_closed_at_the_header_read_timeout() {
    let server = start_server_with(Config {
        header_read_timeout_secs: 1,
        ..base_config()
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
    let server = start_server_with(base_config()).await;
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

// ---------------------------------------------------------------------------------------------
// Clients that never read

/// A masked client frame (RFC 6455 §5.3) with FIN set.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    client_frame_with(0x80 | opcode, payload)
}

/// A masked client frame whose first byte (FIN, RSV1–3, opcode) is `first`.
fn client_frame_with(first: u8, payload: &[u8]) -> Vec<u8> {
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
async fn raw_ws(addr: SocketAddr, target: &str) -> TcpStream {
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
async fn ping_flood(stream: &mut TcpStream, max_bytes: usize) -> usize {
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
async fn connect_small(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    recv_timeout(SOON, socket.connect(addr)).await.expect("connect")
}

/// An SSE subscriber and a WebSocket subscriber whose sockets are never read while 22 MiB are
/// published to their channel: the server's memory stays flat, and the bystanders still receive
/// everything.
///
/// The bound: the first 6 MiB warm the server up (history fills: 32 messages of 32 KiB with up to
/// six cached encodings each, about 6 MiB; the never-readers' socket send buffers fill, up to
/// `tcp_wmem`'s 4 MiB each, kernel memory). From then on a server that sends only what a client
/// takes holds nothing more, while one that queued what it cannot send would grow by the next
/// 16 MiB for each never-reading subscriber (their encodings differ). RSS is measured after the
/// warm-up and its growth during the next 16 MiB must stay under 8 MiB, room for allocator slack
/// and the bystanders' buffers in this same process (about 2 MiB was measured).
#[test]
fn subscribers_that_never_read_do_not_grow_the_servers_memory() {
    run_alone("alone_subscribers_that_never_read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a process of its own by subscribers_that_never_read_do_not_grow_the_servers_memory"]
async fn alone_subscribers_that_never_read() {
    const SIZE: usize = 32 * 1024;
    const WARM_UP: u64 = 6 * MIB / SIZE as u64;
    const MEASURED: u64 = 16 * MIB / SIZE as u64;
    let server = start_server_with(Config {
        history_size: 32,
        ..base_config()
    })
    .await;
    let mut sse = connect_small(server.addr).await;
    sse.write_all(&head("GET", "/sub/calm", &["Accept: text/event-stream"]))
        .await
        .expect("write");
    let mut ws = connect_small(server.addr).await;
    ws.write_all(&ws_head("/sub/calm")).await.expect("write");
    wait_subscribers(&server, "calm", 2, "the never-readers subscribe").await;

    let pace = Pace {
        size: SIZE,
        every: Duration::ZERO,
        max: WARM_UP + MEASURED,
    };
    let started = Instant::now();
    let crowd = Bystanders::start(&server, "calm", pace, None).await;
    crowd.wait_acked(WARM_UP).await;
    let settled = rss();
    let mut peak = settled;
    let deadline = Instant::now() + Duration::from_secs(60);
    while crowd.acked() < pace.max && !crowd.publisher.is_finished() {
        assert!(Instant::now() < deadline, "publishing took too long");
        peak = peak.max(rss());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crowd.finish().await;
    peak = peak.max(rss());
    let growth = peak.saturating_sub(settled);
    eprintln!(
        "never-reading subscribers: RSS {} MiB after the warm-up, peak {} MiB (+{} KiB), {:?} in all",
        settled / MIB,
        peak / MIB,
        growth / 1024,
        started.elapsed()
    );
    assert!(
        growth < 8 * MIB,
        "RSS grew by {} MiB while 16 MiB were published to subscribers that never read",
        growth / MIB
    );
    drop((sse, ws));
}

/// Issue 16, point 1: clients that ask for a large replay and never read it. The channel holds
/// 100 messages of 30,000 control characters, each envelope 180,000 bytes (JSON writes a
/// control character as `\u00XX`). Eight streams, six SSE (`envelope=1`) and two iframes ask
/// for it all (`since=earliest`), and three polls too; none reads a byte.
///
/// The bound: RSS is measured once one reader has taken the whole replay (the shared encodings
/// exist then, 18 MB per form) and must grow by less than 8 MiB while the nineteen never-readers
/// are held. Writing the shared encodings by reference, 1.4 MiB was measured; copying each
/// batch into a buffer per subscriber, 23 MiB with batches capped at `max_batch_bytes` (and a
/// batch of 100 messages, 18 MB, each without that cap). Then `write_stall_timeout_secs` (2 s here) closes every one of them, the channel
/// has no subscriber left, and a bystander on every transport received everything meanwhile.
#[test]
fn stalled_readers_of_a_large_replay_hold_no_copies_and_are_closed_at_the_write_stall_timeout() {
    run_alone("alone_stalled_readers_of_a_large_replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a process of its own by stalled_readers_of_a_large_replay_hold_no_copies_and_are_closed_at_the_write_stall_timeout"]
async fn alone_stalled_readers_of_a_large_replay() {
    let server = start_server_with(Config {
        history_size: 128,
        write_stall_timeout_secs: 2,
        ..base_config()
    })
    .await;
    let client = bystander_client();
    let data = "\u{1}".repeat(30_000);
    for _ in 0..100 {
        let res = recv_timeout(SOON, client.post(server.url("/pub/big")).body(data.clone()).send())
            .await
            .expect("publish");
        assert_eq!(res.status(), 201);
    }
    // One reader takes the whole replay on each transport, so the shared encodings exist (an
    // iframe document ends at `iframe_budget`: its first batch).
    let mut iframe = connect(server.addr).await;
    iframe
        .write_all(&head("GET", "/sub/big?transport=iframe&since=earliest", &[]))
        .await
        .expect("write");
    let document = read_until_closed(&mut iframe, SOON).await;
    assert!(
        document.closed && document.bytes.len() > 180_000,
        "the iframe document ends after its budget"
    );
    // SSE with the envelope as data: 180,000 bytes a message too (raw data, 3 MB in all, would
    // fit in the kernel's socket buffers).
    for transport in ["stream", "sse&envelope=1"] {
        let mut stream = connect(server.addr).await;
        let target = format!("/sub/big?transport={transport}&since=earliest");
        stream.write_all(&head("GET", &target, &[])).await.expect("write");
        let mut got = 0usize;
        let mut chunk = vec![0u8; 64 * 1024];
        while got < 100 * 180_000 {
            let n = tokio::time::timeout(SOON, stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("{transport}: the replay stopped after {got} bytes"))
                .expect("read");
            assert!(n > 0, "{transport}: the replay ended after {got} bytes");
            got += n;
        }
    }
    let settled = rss();

    let mut stalled = Vec::new();
    let transports = std::iter::repeat_n("stream", 8)
        .chain(std::iter::repeat_n("sse&envelope=1", 6))
        .chain(std::iter::repeat_n("iframe", 2));
    for transport in transports {
        let mut stream = connect_small(server.addr).await;
        let target = format!("/sub/big?transport={transport}&since=earliest");
        stream.write_all(&head("GET", &target, &[])).await.expect("write");
        stalled.push(stream);
    }
    for _ in 0..3 {
        let mut stream = connect_small(server.addr).await;
        stream
            .write_all(&head("GET", "/sub/big?transport=poll&since=earliest", &[]))
            .await
            .expect("write");
        stalled.push(stream);
    }
    // The iframes' documents (their first batch, 1.6 MB) fit in the kernel's socket buffers:
    // they end by themselves. The streams and SSE wait with 16 MB still to send.
    wait_subscribers(&server, "big", 14, "the streaming never-readers subscribe").await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    let mut peak = settled;
    let held = Instant::now();
    while held.elapsed() < Duration::from_millis(1500) {
        peak = peak.max(rss());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let growth = peak.saturating_sub(settled);
    eprintln!(
        "stalled replays: RSS {} MiB with the encodings made, peak {} MiB while 19 never-readers were held (+{} KiB)",
        settled / MIB,
        peak / MIB,
        growth / 1024
    );
    assert!(
        growth < 8 * MIB,
        "RSS grew by {} MiB while 19 clients held a replay of 18 MB they never read",
        growth / MIB
    );

    // The write-stall timeout closes them: the streaming ones leave the channel, and every
    // socket reaches its end once read (what the kernel had buffered, then EOF), short of the
    // whole replay.
    crowd.wait_acked(MIN_PUBLISHED).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = subscribers(&server, "big").await;
        if now == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{now} subscribers 20 s after the never-readers stalled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, mut stream) in stalled.into_iter().enumerate() {
        let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        assert!(answer.closed, "never-reader {i} is still open");
        assert!(
            answer.bytes.len() < 100 * 180_000,
            "never-reader {i} was sent the whole replay ({} bytes) although it read nothing",
            answer.bytes.len()
        );
    }
    crowd.finish().await;
}

/// A WebSocket client floods pings and never reads the pongs. The server answers each ping with a
/// pong (RFC 6455 §5.5.2); once it cannot send them it must stop reading more pings rather than
/// queue pongs without end. The flood is then held up by TCP, the server's memory stays bounded,
/// and the bystanders (a WebSocket among them) still receive everything.
///
/// The bound: the flood is 64 MiB; a server that kept reading would queue a pong (and keep the
/// ping's bytes) for each ping, about as much memory as the flood. One that stops reading holds
/// at most its read and write buffers; 16 MiB leaves room for allocator slack and the bystanders.
#[test]
fn a_ping_flood_that_never_reads_the_pongs_is_held_up_by_tcp() {
    run_alone("alone_ping_flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a process of its own by a_ping_flood_that_never_reads_the_pongs_is_held_up_by_tcp"]
async fn alone_ping_flood() {
    const FLOOD: usize = 64 * 1024 * 1024;
    let server = start_server_with(base_config()).await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    let mut flooder = raw_ws(server.addr, "/ws").await;
    let before = rss();
    let flood = tokio::spawn(async move {
        let sent = ping_flood(&mut flooder, FLOOD).await;
        (flooder, sent)
    });
    let mut peak = before;
    while !flood.is_finished() {
        peak = peak.max(rss());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (flooder, sent) = join("the ping flood", SOON, flood).await;
    peak = peak.max(rss());
    let growth = peak.saturating_sub(before);
    eprintln!(
        "ping flood: {} MiB sent; RSS {} MiB before, peak {} MiB (+{} MiB)",
        sent / (1024 * 1024),
        before / MIB,
        peak / MIB,
        growth / MIB
    );
    assert!(
        sent < FLOOD,
        "the server kept reading pings whose pongs it could not send ({} MiB)",
        sent / (1024 * 1024)
    );
    assert!(
        growth < 16 * MIB,
        "RSS grew by {} MiB during a ping flood",
        growth / MIB
    );
    crowd.finish().await;
    drop(flooder);
}

// ---------------------------------------------------------------------------------------------
// Oversized request heads

/// Writes `request` while reading the answer, until the server closes the connection. The
/// server may answer and close before it has read everything; the write then fails, and the
/// answer is still read.
async fn exchange_large(addr: SocketAddr, request: Vec<u8>) -> Answer {
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
    let server = start_server_with(base_config()).await;
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
const HTTP_TRANSPORTS: [&str; 5] = ["poll", "longpoll", "stream", "iframe", "sse"];

/// A WebSocket handshake on `path` that must be refused before the `101`: its status and body.
async fn ws_refused(server: &TestServer, path: &str) -> (u16, String) {
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
fn error_body(body: &str, code: &str, what: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", cut(body)));
    assert_eq!(v["error"]["code"], code, "{what}: {v}");
    v["error"]["message"].as_str().expect("message").to_owned()
}

/// A GET on every transport (and a WebSocket upgrade) of `path_and_query` (which already has a
/// `?`) must fail with `status` and `code`; returns the messages.
async fn refused_everywhere(server: &TestServer, path_and_query: &str, status: u16, code: &str) -> Vec<String> {
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
    let server = start_server_with(base_config()).await;
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
    let server = start_server_with(base_config()).await;
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

async fn get_json(server: &TestServer, path: &str) -> Value {
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
    let server = start_server_with(base_config()).await;
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

// ---------------------------------------------------------------------------------------------
// Bad tokens

const SECRET: &str = "hostile-test-secret-of-32-bytes-at-least";
const API_KEY: &str = "hostile-backend-key";

/// Tokens required (HS256 with [`SECRET`], audience `comet`), except in `public:`, which anyone
/// may read; the back-end publishes with [`API_KEY`].
fn jwt_config() -> Config {
    let mut namespace = std::collections::BTreeMap::new();
    namespace.insert(
        "public".to_owned(),
        NamespaceRules {
            anonymous_subscribe: Some(true),
            ..NamespaceRules::default()
        },
    );
    Config {
        jwt_secret: SECRET.into(),
        jwt_audience: "comet".into(),
        publish_api_key: API_KEY.into(),
        namespace,
        ..base_config()
    }
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("token")
}

/// base64url without padding (RFC 7515 §2), by hand: for the forged `alg: none` token.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Five bad tokens (garbage last), each with the reason the `401` must give and the WebSocket close reason.
fn bad_tokens() -> Vec<(&'static str, String, &'static str, &'static str)> {
    let now = jsonwebtoken::get_current_timestamp();
    let grant = json!({"subscribe": ["*"], "publish": ["*"]});
    let claims = json!({"sub": "mallory", "exp": now + 60, "aud": "comet", "comet": grant});
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    );
    vec![
        ("alg none", none, "\"none\"", "invalid token"),
        (
            "another audience",
            hs256(
                &json!({"sub": "alice", "exp": now + 60, "aud": "billing", "comet": grant}),
                SECRET.as_bytes(),
            ),
            "another audience",
            "invalid token",
        ),
        (
            "expired",
            hs256(
                &json!({"sub": "alice", "exp": now - 30, "aud": "comet", "comet": grant}),
                SECRET.as_bytes(),
            ),
            "token expired",
            "token expired",
        ),
        (
            "not valid yet",
            hs256(
                &json!({"sub": "alice", "exp": now + 600, "nbf": now + 300, "aud": "comet", "comet": grant}),
                SECRET.as_bytes(),
            ),
            "not valid yet (nbf)",
            "invalid token",
        ),
        (
            "garbage",
            "eyJnYXJiYWdl.%%%.\u{1F4A3}".to_owned(),
            "malformed token",
            "invalid token",
        ),
    ]
}

/// A server with a JWT secret and an audience. `alg: none`, a token for another audience, an
/// expired token, garbage, and a token whose `nbf` is five minutes ahead (RFC 7519 §4.1.5): `401 unauthorized` saying why (and never repeating the token) on
/// every transport and on publish, whether the token comes by `?token=` or `Authorization`; a
/// WebSocket upgrade carrying one is refused before the `101`; one sent in an `auth` command gets
/// an `error` frame and then close 1008 with a reason.
#[tokio::test]
async fn bad_tokens_get_401_on_http_and_close_1008_on_websocket() {
    let server = start_server_with(jwt_config()).await;
    let crowd = Bystanders::start(&server, "public:calm", STEADY, Some(API_KEY)).await;
    let client = reqwest::Client::new();
    for (what, token, reason, close) in bad_tokens() {
        let check = |message: &str, how: &str| {
            assert!(
                message.contains(reason),
                "{what} {how}: {message:?} should say {reason:?}"
            );
            assert!(!message.contains(&token), "{what} {how}: the message repeats the token");
        };
        for transport in HTTP_TRANSPORTS {
            for channel in ["secret:x", "public:calm"] {
                let res = client
                    .get(server.url(&format!("/sub/{channel}")))
                    .query(&[("transport", transport), ("token", &token)])
                    .send();
                let res = recv_timeout(SOON, res).await.expect("request");
                check(&expect_error(res, 401, "unauthorized", what).await, transport);
            }
            let res = client
                .get(server.url(&format!("/sub/secret:x?transport={transport}")))
                .bearer_auth(&token)
                .send();
            let res = recv_timeout(SOON, res).await.expect("request");
            check(&expect_error(res, 401, "unauthorized", what).await, transport);
        }
        let res = client
            .post(server.url("/pub/secret:x"))
            .bearer_auth(&token)
            .body("forged")
            .send();
        let res = recv_timeout(SOON, res).await.expect("request");
        check(&expect_error(res, 401, "unauthorized", what).await, "publish");

        let query = token_param(&token);
        let (status, body) = ws_refused(&server, &format!("/sub/secret:x?{query}")).await;
        assert_eq!(status, 401, "{what}: ws upgrade");
        check(&error_body(&body, "unauthorized", what), "ws upgrade");

        let (mut ws, _) = recv_timeout(SOON, tokio_tungstenite::connect_async(server.ws_url("/ws")))
            .await
            .expect("an anonymous WebSocket");
        let command = json!({"type": "auth", "token": token, "ref": "a"}).to_string();
        recv_timeout(SOON, ws.send(WsMessage::text(command)))
            .await
            .expect("send");
        let error = next_ws_json(&mut ws).await;
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str(), error["ref"].as_str()),
            (Some("error"), Some("unauthorized"), Some("a")),
            "{what}: {error}"
        );
        check(error["message"].as_str().expect("message"), "ws auth");
        let (code, why) = ws_close(&mut ws).await;
        assert_eq!((code, why.as_str()), (1008, close), "{what}: ws auth");
    }
    // A credential is given, though odd, so it is checked (not taken for no credential, which
    // `public:` would let through): bytes that are not ASCII in `Authorization` or the cookie,
    // and `?token=` given twice.
    let (_, garbage, reason, _) = bad_tokens().pop().expect("the garbage token");
    let odd = http::HeaderValue::from_bytes(b"Bearer \xff\xfe").expect("obs-text header");
    let odd_cookie = http::HeaderValue::from_bytes(b"theme=\xff; comet_token=x.y.z").expect("obs-text header");
    let twice = format!(
        "/sub/public:calm?transport=poll&{}&{}",
        token_param(&garbage),
        token_param(&garbage)
    );
    for (what, req) in [
        (
            "Authorization not ASCII",
            client
                .get(server.url("/sub/public:calm?transport=poll"))
                .header("authorization", odd),
        ),
        (
            "cookie not ASCII",
            client
                .get(server.url("/sub/public:calm?transport=sse"))
                .header("cookie", odd_cookie),
        ),
        ("token twice", client.get(server.url(&twice))),
    ] {
        let res = recv_timeout(SOON, req.send()).await.expect("request");
        let message = expect_error(res, 401, "unauthorized", what).await;
        assert!(message.contains(reason), "{what}: {message}");
    }
    let published = get_json(&server, "/channels/secret:x").await;
    assert_eq!(published["last_id"], Value::Null, "nothing was published");
    crowd.finish().await;
}

/// `token=<token>` for a query string.
fn token_param(token: &str) -> String {
    let mut out = String::from("token=");
    for b in token.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// The next text frame as JSON (pings and pongs skipped).
async fn next_ws_json(ws: &mut Ws) -> Value {
    loop {
        match recv_timeout(SOON, ws.next()).await {
            Some(Ok(WsMessage::Text(text))) => return serde_json::from_str(&text).expect("JSON"),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Reads until the close frame: its code and reason.
async fn ws_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match recv_timeout(SOON, ws.next()).await {
            Some(Ok(WsMessage::Close(Some(frame)))) => return (u16::from(frame.code), frame.reason.to_string()),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket frames (what tests/websocket.rs does not cover already: garbage JSON, binary,
// unmasked frames, orphan continuations, invalid UTF-8 and oversize messages are there)

/// Reads server frames (opcode, payload) until `stop` says so or the connection ends.
async fn ws_frames(stream: &mut TcpStream, stop: impl Fn(u8, &[u8]) -> bool) -> Vec<(u8, Vec<u8>)> {
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
fn close_of(frames: &[(u8, Vec<u8>)]) -> Option<(u16, String)> {
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
    let server = start_server_with(base_config()).await;
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
    let server = start_server_with(base_config()).await;
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

// ---------------------------------------------------------------------------------------------
// Publish bodies

/// A body of `len` bytes sent chunked (no `Content-Length`), 64 KiB at a time.
fn chunked_body(len: usize) -> reqwest::Body {
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
    let server = start_server_with(base_config()).await;
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
fn raw_error_code(answer: &Answer) -> String {
    let text = answer.text();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", cut(&text)));
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

/// Sends `head` and then all of `body` before reading anything, as Python's httpx does (it
/// writes the whole request first, and gives up with a write error if the connection is reset
/// meanwhile); then reads the answer. Returns the answer and whether every byte was written.
async fn send_all_then_read(addr: SocketAddr, head: Vec<u8>, body: &[u8]) -> (Answer, bool) {
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
        ..base_config()
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
        ..base_config()
    })
    .await;
    let held = connect(refusing.addr).await;
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
    let server = start_server_with(base_config()).await;
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

// ---------------------------------------------------------------------------------------------
// Many at once

/// One bad request of kind `kind`, checked for its clear error.
async fn one_bad_request(server_addr: SocketAddr, base: String, kind: usize) {
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
        ..base_config()
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

// ---------------------------------------------------------------------------------------------
// Resume positions, cookies from other sites, numeric refs (issue 16, points 3, 4 and 8)

/// A resume position naming 20,000 channels (a `Last-Event-ID` of 200 KB): `400 bad_cursor`
/// saying how many are allowed, on every transport and for the WebSocket `subscribe` command,
/// parsed in linear time (the cap is checked before any entry is read); a position of the
/// allowed size still resumes.
#[tokio::test]
async fn a_resume_position_of_twenty_thousand_channels_is_a_clear_400() {
    let server = start_server_with(base_config()).await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    let position: Vec<String> = (0..20_000).map(|i| format!("c{i}=0-0")).collect();
    let position = position.join(",");
    let client = reqwest::Client::new();
    for transport in HTTP_TRANSPORTS {
        let res = client
            .get(server.url(&format!("/sub/c1,c2?transport={transport}")))
            .header("last-event-id", &position)
            .send();
        let res = recv_timeout(SOON, res).await.expect("request");
        let message = expect_error(res, 400, "bad_cursor", transport).await;
        assert!(
            message.contains("20000 channels") && message.contains("at most 64"),
            "{transport}: {message}"
        );
        assert!(
            message.len() < 400,
            "{transport}: the answer quotes the position in full"
        );
    }
    let (mut ws, _) = recv_timeout(SOON, tokio_tungstenite::connect_async(server.ws_url("/ws")))
        .await
        .expect("a WebSocket");
    // Over WebSocket a command is bounded by ws_max_message_size: 100 entries are over the cap.
    let hundred: Vec<String> = (0..100).map(|i| format!("c{i}=0-0")).collect();
    let command = json!({"type": "subscribe", "channel": "c1", "since": hundred.join(","), "ref": "big"});
    recv_timeout(SOON, ws.send(WsMessage::text(command.to_string())))
        .await
        .expect("send");
    let error = next_ws_json(&mut ws).await;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str(), error["ref"].as_str()),
        (Some("error"), Some("bad_cursor"), Some("big")),
        "{error}"
    );
    // The socket stays usable.
    let ping = json!({"type": "ping", "ref": "after"}).to_string();
    recv_timeout(SOON, ws.send(WsMessage::text(ping))).await.expect("send");
    assert_eq!(next_ws_json(&mut ws).await["type"], "pong");
    // 64 entries (the default max_channels_per_connection) are a position, not an attack.
    let cursor = get_json(&server, "/sub/c1?transport=poll").await["cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    let mut allowed: Vec<String> = (2..65).map(|i| format!("c{i}={cursor}")).collect();
    allowed.push(format!("c1={cursor}"));
    let res = client
        .get(server.url("/sub/c1?transport=poll"))
        .header("last-event-id", allowed.join(","))
        .send();
    let res = recv_timeout(SOON, res).await.expect("request");
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    crowd.finish().await;
}

/// A grant for `secret:*` (publish and subscribe), valid for a minute.
fn cookie_token() -> String {
    let now = jsonwebtoken::get_current_timestamp();
    hs256(
        &json!({"sub": "alice", "exp": now + 60, "aud": "comet", "comet": {"subscribe": ["secret:*"], "publish": ["secret:*"]}}),
        SECRET.as_bytes(),
    )
}

/// A WebSocket handshake on `path` with these extra headers: `Ok` when it was accepted, else
/// its status.
async fn ws_with_headers(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> Result<(), u16> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = server.ws_url(path).into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    match recv_timeout(SOON, tokio_tungstenite::connect_async(request)).await {
        Ok(_) => Ok(()),
        Err(WsError::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("the handshake to {path}: {e}"),
    }
}

/// With a JWT key and `allowed_origins` left empty (the defaults), the `comet_token` cookie
/// counts only on same-origin requests: a page of another site that makes the browser open a
/// WebSocket, subscribe or POST a publish with the victim's cookie is anonymous (`401` where
/// tokens are required). Its own origin, requests without `Origin` (no browser, or a browser's
/// own navigation), listed origins, and tokens given explicitly from anywhere work as before.
#[tokio::test]
async fn cookies_sent_by_pages_of_other_sites_are_not_credentials() {
    let server = start_server_with(jwt_config()).await;
    let crowd = Bystanders::start(&server, "public:calm", STEADY, Some(API_KEY)).await;
    let cookie = format!("comet_token={}", cookie_token());
    let own = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let subscribe = |headers: Vec<(&'static str, String)>| {
        let mut req = client.get(server.url("/sub/secret:a?transport=poll"));
        for (name, value) in headers {
            req = req.header(name, value);
        }
        req.send()
    };
    let evil = "https://evil.example".to_owned();
    for (what, headers, status) in [
        (
            "cross-site",
            vec![("cookie", cookie.clone()), ("origin", evil.clone())],
            401,
        ),
        (
            "cross-site, no Origin",
            vec![("cookie", cookie.clone()), ("sec-fetch-site", "cross-site".into())],
            401,
        ),
        (
            "same origin",
            vec![("cookie", cookie.clone()), ("origin", own.clone())],
            200,
        ),
        ("no Origin", vec![("cookie", cookie.clone())], 200),
        (
            "same origin by Fetch Metadata",
            vec![("cookie", cookie.clone()), ("sec-fetch-site", "same-origin".into())],
            200,
        ),
        (
            "a bearer token from another site",
            vec![
                ("authorization", format!("Bearer {}", cookie_token())),
                ("origin", evil.clone()),
            ],
            200,
        ),
    ] {
        let res = recv_timeout(SOON, subscribe(headers)).await.expect("request");
        assert_eq!(res.status(), status, "{what}: {:?}", res.text().await);
    }
    // Cross-site WebSocket hijacking: the handshake is anonymous, so refused before the 101.
    assert_eq!(
        ws_with_headers(&server, "/sub/secret:a", &[("cookie", &cookie), ("origin", &evil)]).await,
        Err(401)
    );
    assert_eq!(
        ws_with_headers(&server, "/sub/secret:a", &[("cookie", &cookie), ("origin", &own)]).await,
        Ok(())
    );
    // CSRF: a form POST from another site publishes nothing.
    for (origin, status) in [(&evil, 401), (&own, 201)] {
        let res = client
            .post(server.url("/pub/secret:a"))
            .header("cookie", &cookie)
            .header("origin", origin)
            .body("from a page")
            .send();
        let res = recv_timeout(SOON, res).await.expect("request");
        assert_eq!(res.status(), status, "publish from {origin}: {:?}", res.text().await);
    }
    let info = get_json(&server, "/channels/secret:a").await;
    assert_eq!(
        info["last_id"].as_str().map(|id| id.ends_with("-1")),
        Some(true),
        "one publish: {info}"
    );
    crowd.finish().await;

    // A listed origin may use the cookie, as before.
    let server = start_server_with(Config {
        allowed_origins: vec!["https://app.example".into()],
        ..jwt_config()
    })
    .await;
    let res = client
        .get(server.url("/sub/secret:a?transport=poll"))
        .header("cookie", &cookie)
        .header("origin", "https://app.example")
        .send();
    assert_eq!(recv_timeout(SOON, res).await.expect("request").status(), 200);
}

/// Clients of other push servers number their requests: a numeric `ref` is taken on every
/// command and echoed back as it came (a number stays a number); a `ref` that is neither a
/// string nor a number is a clear error, and the socket stays open.
#[tokio::test]
async fn websocket_commands_take_numeric_refs() {
    let server = start_server_with(base_config()).await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    let (mut ws, _) = recv_timeout(SOON, tokio_tungstenite::connect_async(server.ws_url("/ws")))
        .await
        .expect("a WebSocket");
    let mut send = async |command: Value| {
        recv_timeout(SOON, ws.send(WsMessage::text(command.to_string())))
            .await
            .expect("send");
        next_ws_json(&mut ws).await
    };
    let ack = send(json!({"type": "publish", "channel": "refs", "data": "x", "ref": 7})).await;
    assert_eq!((ack["type"].as_str(), &ack["ref"]), (Some("ack"), &json!(7)), "{ack}");
    let pong = send(json!({"type": "ping", "ref": 12.5})).await;
    assert_eq!(pong["ref"], json!(12.5), "{pong}");
    let error = send(json!({"type": "publish", "channel": "bad name!", "data": "x", "ref": 8})).await;
    assert_eq!(
        (error["type"].as_str(), &error["ref"]),
        (Some("error"), &json!(8)),
        "{error}"
    );
    let error = send(json!({"type": "ping", "ref": {"n": 1}})).await;
    assert_eq!(error["code"], "bad_request", "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("a string or a number")),
        "{error}"
    );
    let pong = send(json!({"type": "ping", "ref": "s"})).await;
    assert_eq!(pong["ref"], "s", "{pong}");
    crowd.finish().await;
}
