//! One subscriber connection per task, for every framing: it connects, reports "subscribed",
//! then reads until told to stop, checking each message's sequence number and latency.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf as _, BytesMut};
use futures_util::{FutureExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::adapter::{Framing, Resume, SubscribeSpec};
use crate::error::BenchError;
use crate::net::{connect, get_request, read_head, read_response};
use crate::parse::{BodyKind, ChunkedDecoder, LineSplitter, Marker, MarkerScanner, SseParser, find_markers};

/// Latency histogram shards: subscribers record into `index % SHARDS`, so a lock is rarely
/// contended and memory does not grow with the number of subscribers.
const SHARDS: usize = 32;

/// Now, in nanoseconds since the Unix epoch (the clock the publisher stamps messages with).
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What all subscriber tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Deliveries so far (all subscribers).
    pub(crate) delivered: AtomicU64,
    /// Requests completed by polling subscribers.
    pub(crate) poll_requests: AtomicU64,
    /// Publish → receive latency, microseconds.
    pub(crate) latency: Vec<Mutex<Histogram<u64>>>,
    /// Ends every subscriber.
    pub(crate) stop: CancellationToken,
    /// The resume storm (S6): every SSE subscriber drops its connection at once and opens a
    /// new one with the `Last-Event-ID` it holds (HTML Standard §9.2.4, "last event ID").
    pub(crate) storm: CancellationToken,
    /// Subscribers subscribed again after the storm.
    pub(crate) resumed: AtomicU64,
    /// Subscribers whose new connection after the storm failed.
    pub(crate) resume_failed: AtomicU64,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            delivered: AtomicU64::new(0),
            poll_requests: AtomicU64::new(0),
            latency: (0..SHARDS)
                .map(|_| {
                    // 1 µs to 1 h at 3 significant digits: bounds are constants, so this cannot fail.
                    Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"))
                })
                .collect(),
            stop: CancellationToken::new(),
            storm: CancellationToken::new(),
            resumed: AtomicU64::new(0),
            resume_failed: AtomicU64::new(0),
        }
    }

    /// All shards merged.
    pub(crate) fn merged_latency(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        for shard in &self.latency {
            let h = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = all.add(&*h);
        }
        all
    }
}

/// One subscriber's view of its channel's sequence: what it got, missed and got twice.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tracker {
    /// Index of the subscriber's channel.
    pub(crate) channel: usize,
    /// The next sequence number expected (sequences start at 1).
    pub(crate) next: u64,
    /// Sequence numbers skipped over (a later one arrived first).
    pub(crate) skipped: u64,
    /// Sequence numbers seen again (or late, after a later one).
    pub(crate) duplicated: u64,
    /// Messages received.
    pub(crate) received: u64,
}

impl Tracker {
    pub(crate) fn new(channel: usize) -> Self {
        Self {
            channel,
            next: 1,
            skipped: 0,
            duplicated: 0,
            received: 0,
        }
    }

    /// Accounts for message `seq`.
    pub(crate) fn on_seq(&mut self, seq: u64) {
        self.received += 1;
        if seq == self.next {
            self.next += 1;
        } else if seq > self.next {
            self.skipped += seq - self.next;
            self.next = seq + 1;
        } else {
            self.duplicated += 1;
        }
    }

    /// Messages lost, given the highest sequence number published on the channel and how many
    /// publishes of it were not taken: failed, or never answered (their numbers are skipped, not
    /// lost; so when one never answered was delivered anyway, a loss elsewhere can be hidden).
    pub(crate) fn lost(&self, published_seq: u64, not_taken: u64) -> u64 {
        let tail = published_seq.saturating_sub(self.next - 1);
        (self.skipped + tail).saturating_sub(not_taken)
    }
}

/// How one subscriber ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) tracker: Tracker,
    /// Set when the subscriber never got subscribed.
    pub(crate) connect_error: Option<&'static str>,
    /// Set when the connection broke after it was subscribed.
    pub(crate) run_error: Option<&'static str>,
}

/// What a subscriber task needs.
#[derive(Debug)]
pub(crate) struct SubCtx {
    pub(crate) spec: SubscribeSpec,
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) channels: Vec<String>,
    pub(crate) sources: Vec<Ipv4Addr>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) connect_limit: Arc<Semaphore>,
    pub(crate) poll_interval: Duration,
}

/// Feeds received messages into the tracker, the counters and the latency histogram.
struct Sink<'a> {
    ctx: &'a SubCtx,
    idx: usize,
    tracker: Tracker,
    batch: Vec<Marker>,
}

impl Sink<'_> {
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let now = now_ns();
        {
            let mut h = self.ctx.shared.latency[self.idx % SHARDS]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for m in &self.batch {
                h.saturating_record(now.saturating_sub(m.sent_ns) / 1000);
            }
        }
        for m in &self.batch {
            self.tracker.on_seq(m.seq);
        }
        self.ctx
            .shared
            .delivered
            .fetch_add(self.batch.len() as u64, Ordering::Relaxed);
        self.batch.clear();
    }
}

/// Runs subscriber `idx` until `ctx.shared.stop`; sends `Ok` or the error on `ready` once.
pub(crate) async fn run(
    ctx: Arc<SubCtx>,
    idx: usize,
    ready: mpsc::UnboundedSender<Result<(), &'static str>>,
) -> Outcome {
    let channel = idx % ctx.channels.len();
    let mut sink = Sink {
        ctx: &ctx,
        idx,
        tracker: Tracker::new(channel),
        batch: Vec::new(),
    };
    let mut signal = Ready { tx: ready, sent: false };
    let result = match ctx.spec.framing {
        Framing::Websocket => websocket(&ctx, idx, &mut sink, &mut signal).await,
        Framing::Polling(resume) => polling(&ctx, idx, resume, &mut sink, &mut signal).await,
        _ => streaming(&ctx, idx, &mut sink, &mut signal).await,
    };
    let signalled = signal.sent;
    sink.flush();
    let tracker = sink.tracker;
    match result {
        Ok(()) => Outcome {
            tracker,
            connect_error: None,
            run_error: None,
        },
        Err(e) if !signalled => {
            signal.send(Err(e.kind()));
            Outcome {
                tracker,
                connect_error: Some(e.kind()),
                run_error: None,
            }
        }
        Err(e) => Outcome {
            tracker,
            connect_error: None,
            run_error: Some(e.kind()),
        },
    }
}

/// Tells the orchestrator, once, whether the subscriber got subscribed.
struct Ready {
    tx: mpsc::UnboundedSender<Result<(), &'static str>>,
    sent: bool,
}

impl Ready {
    fn send(&mut self, r: Result<(), &'static str>) {
        if !self.sent {
            self.sent = true;
            let _ = self.tx.send(r);
        }
    }
}

fn source(ctx: &SubCtx, idx: usize) -> Option<Ipv4Addr> {
    (!ctx.sources.is_empty()).then(|| ctx.sources[idx % ctx.sources.len()])
}

/// Opens the long response of a streaming subscriber: its stream and whether it is chunked.
/// `last_event_id` is sent as `Last-Event-ID` (a resume).
async fn open_stream(
    ctx: &SubCtx,
    idx: usize,
    channel: &str,
    last_event_id: Option<&[u8]>,
    buf: &mut BytesMut,
) -> Result<(tokio::net::TcpStream, bool), BenchError> {
    let _permit = ctx.connect_limit.acquire().await;
    let mut stream = connect(ctx.addr, source(ctx, idx)).await?;
    let path = ctx.spec.path.render(channel, "", None);
    let mut headers = ctx.spec.headers.clone();
    if let Some(id) = last_event_id {
        headers.push(("Last-Event-ID".to_owned(), String::from_utf8_lossy(id).into_owned()));
    }
    stream.write_all(&get_request(ctx.addr, &path, &headers)).await?;
    let head = read_head(&mut stream, buf).await?;
    if head.status != 200 {
        return Err(BenchError::Status {
            status: head.status,
            what: "subscribe",
        });
    }
    Ok((stream, head.body_kind() == BodyKind::Chunked))
}

/// SSE, NDJSON lines or raw chunks over one long response. SSE subscribers take part in the
/// resume storm: at [`Shared::storm`] they drop the connection and resume with the last event
/// ID they got.
async fn streaming(ctx: &SubCtx, idx: usize, sink: &mut Sink<'_>, signal: &mut Ready) -> Result<(), BenchError> {
    let channel = &ctx.channels[sink.tracker.channel];
    let mut buf = BytesMut::with_capacity(4096);
    let (mut stream, mut chunked) = open_stream(ctx, idx, channel, None, &mut buf).await?;
    signal.send(Ok(()));
    let mut decoder = ChunkedDecoder::default();
    let mut body = Vec::with_capacity(1024);
    let mut sse = SseParser::default();
    let mut lines = LineSplitter::default();
    let mut raw = MarkerScanner::default();
    let mut last_id: Vec<u8> = Vec::new();
    let mut stormed = ctx.spec.framing != Framing::Sse;
    loop {
        let bytes: &[u8] = if chunked {
            if decoder.decode(&mut buf, &mut body)? {
                return Err(BenchError::Closed);
            }
            &body
        } else {
            &buf
        };
        let batch = &mut sink.batch;
        match ctx.spec.framing {
            Framing::Sse => sse.feed(bytes, |e| {
                if !e.id.is_empty() {
                    last_id.clear();
                    last_id.extend_from_slice(e.id);
                }
                find_markers(e.data, |m| batch.push(m));
            }),
            Framing::Lines => lines.feed(bytes, |l| find_markers(l, |m| batch.push(m))),
            _ => raw.feed(bytes, |m| batch.push(m)),
        }
        if chunked {
            body.clear();
        } else {
            buf.clear();
        }
        sink.flush();
        tokio::select! {
            () = ctx.shared.stop.cancelled() => return Ok(()),
            () = ctx.shared.storm.cancelled(), if !stormed => {
                stormed = true;
                drop(stream);
                buf.clear();
                // What was read of the old response is gone with it: a new parser, the same ID.
                (decoder, sse) = (ChunkedDecoder::default(), SseParser::default());
                let id = (!last_id.is_empty()).then_some(last_id.as_slice());
                match open_stream(ctx, idx, channel, id, &mut buf).await {
                    Ok((s, c)) => {
                        ctx.shared.resumed.fetch_add(1, Ordering::Relaxed);
                        (stream, chunked) = (s, c);
                    }
                    Err(e) => {
                        ctx.shared.resume_failed.fetch_add(1, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            n = stream.read_buf(&mut buf) => if n? == 0 { return Err(BenchError::Closed) },
        }
    }
}

/// WebSocket text (or binary) frames.
async fn websocket(ctx: &SubCtx, idx: usize, sink: &mut Sink<'_>, signal: &mut Ready) -> Result<(), BenchError> {
    let channel = &ctx.channels[sink.tracker.channel];
    let mut ws = {
        let _permit = ctx.connect_limit.acquire().await;
        let stream = connect(ctx.addr, source(ctx, idx)).await?;
        let path = ctx.spec.path.render(channel, "", None);
        let mut request = format!("ws://{}{path}", ctx.addr).into_client_request()?;
        for (k, v) in &ctx.spec.headers {
            if let (Ok(k), Ok(v)) = (
                http_name(k),
                tokio_tungstenite::tungstenite::http::HeaderValue::from_str(v),
            ) {
                request.headers_mut().insert(k, v);
            }
        }
        // Small buffers: thousands of these live in one process.
        let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
        let (ws, _resp) = tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
        signal.send(Ok(()));
        ws
    };
    loop {
        let mut msg = tokio::select! {
            () = ctx.shared.stop.cancelled() => return Ok(()),
            msg = ws.next() => msg,
        };
        // The messages already read are taken without waiting and recorded as one batch, as the
        // other transports record each read: one clock read and one histogram lock per batch
        // instead of per message, so the generator is not what limits a fast server.
        for _ in 0..MAX_WS_BATCH {
            let ended = match msg {
                Some(Ok(WsMessage::Text(t))) => {
                    find_markers(t.as_bytes(), |m| sink.batch.push(m));
                    None
                }
                Some(Ok(WsMessage::Binary(b))) => {
                    find_markers(&b, |m| sink.batch.push(m));
                    None
                }
                Some(Ok(WsMessage::Close(_))) | None => Some(Err(BenchError::Closed)),
                Some(Ok(_)) => None,
                Some(Err(e)) => Some(Err(e.into())),
            };
            if let Some(ended) = ended {
                sink.flush();
                return ended;
            }
            match ws.next().now_or_never() {
                Some(next) => msg = next,
                None => break,
            }
        }
        sink.flush();
    }
}

/// Most WebSocket messages recorded as one batch (see [`websocket`]).
const MAX_WS_BATCH: usize = 256;

fn http_name(k: &str) -> Result<tokio_tungstenite::tungstenite::http::HeaderName, BenchError> {
    tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
        .map_err(|_| BenchError::Config(format!("bad header name {k:?}")))
}

#[derive(serde::Deserialize)]
struct CursorBody {
    cursor: Option<String>,
}

/// Long polling and short polling: one request after another on a keep-alive connection.
async fn polling(
    ctx: &SubCtx,
    idx: usize,
    resume: Resume,
    sink: &mut Sink<'_>,
    signal: &mut Ready,
) -> Result<(), BenchError> {
    let channel = ctx.channels[sink.tracker.channel].clone();
    let short = ctx.spec.transport == crate::adapter::Transport::Poll;
    let mut cursor: Option<String> = None;
    let mut validators: Vec<(String, String)> = Vec::new();
    let mut buf = BytesMut::with_capacity(4096);
    let mut stream = None;
    // Bounded by the stop token; each turn is one request.
    loop {
        if stream.is_none() {
            let _permit = ctx.connect_limit.acquire().await;
            stream = Some(connect(ctx.addr, source(ctx, idx)).await?);
            buf.clear();
        }
        let Some(io) = stream.as_mut() else { continue };
        let path = ctx.spec.path.render(&channel, "", cursor.as_deref());
        let mut headers = ctx.spec.headers.clone();
        headers.extend(validators.iter().cloned());
        io.write_all(&get_request(ctx.addr, &path, &headers)).await?;
        signal.send(Ok(()));
        let (head, body) = tokio::select! {
            () = ctx.shared.stop.cancelled() => return Ok(()),
            r = read_response(io, &mut buf) => r?,
        };
        ctx.shared.poll_requests.fetch_add(1, Ordering::Relaxed);
        match head.status {
            200 => find_markers(&body, |m| sink.batch.push(m)),
            304 | 408 => {}
            status => return Err(BenchError::Status { status, what: "poll" }),
        }
        sink.flush();
        match resume {
            Resume::None => {}
            Resume::JsonCursor => {
                if let Ok(CursorBody { cursor: Some(c) }) = serde_json::from_slice::<CursorBody>(&body) {
                    cursor = Some(c);
                }
            }
            Resume::HttpValidators => {
                if head.status == 200 {
                    validators.clear();
                    if let Some(v) = head.header("last-modified") {
                        validators.push(("If-Modified-Since".into(), v.to_owned()));
                    }
                    if let Some(v) = head.header("etag") {
                        validators.push(("If-None-Match".into(), v.to_owned()));
                    }
                }
            }
        }
        if head
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            stream = None;
        }
        if short {
            tokio::select! {
                () = ctx.shared.stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(ctx.poll_interval) => {}
            }
        }
        // Leftover bytes belong to no request: drop them.
        let left = buf.len();
        buf.advance(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_counts_losses_and_duplicates() {
        let mut t = Tracker::new(0);
        for s in [1, 2, 4, 4, 3, 5] {
            t.on_seq(s);
        }
        assert_eq!((t.skipped, t.duplicated, t.received), (1, 2, 6));
        // 7 published: 6 and 7 never came, 3 was "skipped" then came late (counted as a duplicate).
        assert_eq!(t.lost(7, 0), 3);
        let mut clean = Tracker::new(0);
        (1..=10).for_each(|s| clean.on_seq(s));
        assert_eq!((clean.lost(10, 0), clean.duplicated), (0, 0));
        assert_eq!(Tracker::new(0).lost(5, 5), 0);
    }
}
