//! The bystander check: subscribers to one channel on every transport (SSE, stream, iframe, long
//! poll and poll by cursor, WebSocket) while a publisher keeps publishing there, each publish
//! acknowledged with `201`. At the end every bystander must have received every acknowledged
//! message exactly once and in order: whatever a test did to the server, nothing else broke.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use crate::server::TestServer;
use crate::wait::{SOON, recv_timeout};

/// How the subscribers that must not notice anything are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Server-Sent Events.
    Sse,
    /// HTTP streaming.
    Stream,
    /// Hidden-iframe streaming.
    Iframe,
    /// Long polling by cursor.
    LongPoll,
    /// Short polling by cursor.
    Poll,
    /// WebSocket.
    Ws,
}

impl Via {
    /// Every transport.
    pub const ALL: [Via; 6] = [Via::Sse, Via::Stream, Via::Iframe, Via::LongPoll, Via::Poll, Via::Ws];
}

/// The publisher's rhythm: `size` bytes of filler per message, one every `every`, at most `max`.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Bytes of filler per message.
    pub size: usize,
    /// Time between two publishes (zero: as fast as the window allows).
    pub every: Duration,
    /// Most messages published.
    pub max: u64,
}

/// Small messages, 50 a second, for as long as the test runs.
pub const STEADY: Pace = Pace {
    size: 16,
    every: Duration::from_millis(20),
    max: 5_000,
};

/// The publisher stays at most this many messages ahead of the slowest bystander. A bystander
/// that falls behind the channel's history gets a gap notice, which the protocol allows but
/// which would hide a real loss here; the window keeps every bystander within history (at least
/// 32 messages in every test) whatever the machine's speed.
pub const WINDOW: u64 = 8;

/// At least this many messages are acknowledged before a test's final check, so it is never
/// vacuous.
pub const MIN_PUBLISHED: u64 = 20;

/// The last message: readers stop when they see it.
pub const END: &str = "end";

/// Bounds everything a bystander waits for.
pub const BYSTANDER_LIMIT: Duration = Duration::from_secs(60);

/// Message `seq` with `size` bytes of filler: `"<seq>:xxxx…"`.
pub fn payload(seq: u64, size: usize) -> String {
    format!("{seq}:") + &"x".repeat(size)
}

/// HTTP clients of the bystanders and the publisher. Idle pooled connections are given up after
/// 200 ms: the slowloris test runs the server with a 1 s header-read timeout, which closes idle
/// keep-alive connections too, and a request sent on a connection the server is closing fails.
pub fn bystander_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_millis(200))
        .build()
        .expect("client")
}

/// Subscribers on every transport plus a publisher, for one channel.
#[derive(Debug)]
pub struct Bystanders {
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
    pub async fn start(server: &TestServer, channel: &str, pace: Pace, bearer: Option<&str>) -> Self {
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

    /// Whether the publisher has stopped (it published its `max`, or failed).
    pub fn publisher_done(&self) -> bool {
        self.publisher.is_finished()
    }

    /// Messages acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until at least `n` messages were acknowledged.
    pub async fn wait_acked(&self, n: u64) {
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
    pub async fn finish(self) {
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
pub fn check_sequence(via: Via, seen: &[u64], last: u64) {
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
pub async fn join<T>(what: &str, limit: Duration, task: JoinHandle<T>) -> T {
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
pub fn cut(text: &str) -> String {
    text.chars().take(200).collect()
}
