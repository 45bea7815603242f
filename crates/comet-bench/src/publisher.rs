//! Publishers: each owns the channels `c` with `c % publishers == its index`, so a channel's
//! messages leave in sequence order over one keep-alive connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::adapter::PublishSpec;
use crate::error::BenchError;
use crate::net::{connect, read_response};
use crate::parse::Marker;
use crate::subscriber::{Shared, now_ns};

/// What the publishers share.
#[derive(Debug)]
pub(crate) struct PubCtx {
    pub(crate) spec: PublishSpec,
    pub(crate) channels: Vec<String>,
    pub(crate) publishers: usize,
    /// Messages per second over all publishers; `None`: as fast as subscribers keep up.
    pub(crate) rate: Option<f64>,
    pub(crate) duration: Duration,
    /// With `rate: None`: at most this many messages per channel published and not yet delivered.
    pub(crate) window: u64,
    /// Subscribers per channel, for the window.
    pub(crate) subs_per_channel: f64,
    pub(crate) payload_pad: usize,
    /// Highest sequence number sent, per channel.
    pub(crate) sent: Vec<AtomicU64>,
    /// Failed publishes, per channel.
    pub(crate) failed: Vec<AtomicU64>,
    /// Publishes written and not answered yet (neither acknowledged nor failed), per channel;
    /// at the end, those the server never answered.
    pub(crate) unanswered: Vec<AtomicU64>,
    /// Publishes sent (all publishers).
    pub(crate) sent_total: AtomicU64,
    /// How long a pipelining publisher waits for its last answers after `duration`.
    pub(crate) ack_grace: Duration,
    pub(crate) shared: Arc<Shared>,
}

/// What one publisher did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PubOutcome {
    pub(crate) acked: u64,
    pub(crate) errors: u64,
}

impl PubOutcome {
    fn add(&mut self, other: Self) {
        self.acked += other.acked;
        self.errors += other.errors;
    }
}

/// A pipelined connection's answers so far, kept where an aborted reader leaves them.
#[derive(Debug, Default)]
struct Answers {
    acked: AtomicU64,
    errors: AtomicU64,
}

async fn reconnect(addr: SocketAddr) -> Option<TcpStream> {
    connect(addr, None).await.ok()
}

/// Pipelined publishes in flight on one connection at most; past it the publisher waits.
const PIPELINE_DEPTH: usize = 1024;

/// Publisher `p` of `ctx.publishers`, until `ctx.duration` has passed.
///
/// At a fixed rate each message is stamped with the time it was due, not the time it could be
/// written, so a server that falls behind the rate shows it in latency rather than hiding it
/// by slowing the publisher ("coordinated omission"). With a server that takes pipelined
/// requests the publisher also does not wait for one answer before the next publish.
pub(crate) async fn run(ctx: Arc<PubCtx>, p: usize) -> PubOutcome {
    let mine: Vec<usize> = (p..ctx.channels.len()).step_by(ctx.publishers).collect();
    if mine.is_empty() {
        return PubOutcome::default();
    }
    let active = ctx.publishers.min(ctx.channels.len()) as f64;
    match ctx.rate.map(|r| Duration::from_secs_f64(active / r)) {
        Some(interval) if ctx.spec.pipelining => open_loop(&ctx, &mine, interval).await,
        interval => closed_loop(&ctx, &mine, interval).await,
    }
}

/// Assigns message `n`'s channel and sequence number and writes its payload, stamped `late`
/// before now. Returns the channel's index and the sequence number.
fn next_message(ctx: &PubCtx, mine: &[usize], n: u64, late: Duration, payload: &mut String) -> (usize, u64) {
    let c = mine[(n as usize) % mine.len()];
    let seq = ctx.sent[c].load(Ordering::Relaxed) + 1;
    ctx.sent[c].store(seq, Ordering::Relaxed);
    ctx.sent_total.fetch_add(1, Ordering::Relaxed);
    payload.clear();
    let late_ns = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX);
    Marker {
        seq,
        sent_ns: now_ns().saturating_sub(late_ns),
    }
    .write(payload, ctx.payload_pad);
    (c, seq)
}

/// Waits until message `n` of a fixed-rate schedule is due; `None` once `end` has come. Returns
/// how late it is.
async fn due(start: Instant, end: Instant, interval: Duration, n: u64) -> Option<Duration> {
    let due = start + interval.mul_f64(n as f64);
    if due >= end {
        return None;
    }
    tokio::time::sleep_until(due).await;
    Some(Instant::now().saturating_duration_since(due))
}

/// One publish after the other on one connection, each after the previous answer.
async fn closed_loop(ctx: &PubCtx, mine: &[usize], interval: Option<Duration>) -> PubOutcome {
    let mut out = PubOutcome::default();
    let start = Instant::now();
    let end = start + ctx.duration;
    let mut stream = reconnect(ctx.spec.addr).await;
    let mut buf = BytesMut::with_capacity(1024);
    let mut payload = String::new();
    // Bounded by `end` (and by the stop token).
    for n in 0u64.. {
        if Instant::now() >= end || ctx.shared.stop.is_cancelled() {
            break;
        }
        let late = match interval {
            Some(i) => match due(start, end, i, n).await {
                Some(late) => late,
                None => break,
            },
            None => {
                // Closed loop: wait while too much is published and not yet delivered.
                while Instant::now() < end {
                    let sent = ctx.sent_total.load(Ordering::Relaxed) as f64;
                    let delivered = ctx.shared.delivered.load(Ordering::Relaxed) as f64;
                    if sent * ctx.subs_per_channel - delivered < (ctx.window as f64) * ctx.subs_per_channel {
                        break;
                    }
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
                Duration::ZERO
            }
        };
        let (c, _) = next_message(ctx, mine, n, late, &mut payload);
        let ok = match stream.as_mut() {
            Some(io) => tokio::time::timeout_at(
                end + ctx.ack_grace,
                publish_one(io, &mut buf, &ctx.spec, &ctx.channels[c], &payload),
            )
            .await
            .unwrap_or(Err(BenchError::Closed)),
            None => Err(BenchError::Closed),
        };
        match ok {
            Ok(keep_alive) => {
                out.acked += 1;
                if !keep_alive {
                    buf.clear();
                    stream = reconnect(ctx.spec.addr).await;
                }
            }
            Err(_) => {
                out.errors += 1;
                ctx.failed[c].fetch_add(1, Ordering::Relaxed);
                buf.clear();
                stream = reconnect(ctx.spec.addr).await;
                if stream.is_none() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    out
}

/// Publishes on schedule over a pipelined connection; a reader task takes the answers.
async fn open_loop(ctx: &Arc<PubCtx>, mine: &[usize], interval: Duration) -> PubOutcome {
    let mut out = PubOutcome::default();
    let start = Instant::now();
    let end = start + ctx.duration;
    let mut conn: Option<Pipeline> = None;
    let mut payload = String::new();
    // Bounded by `end` (and by the stop token).
    for n in 0u64.. {
        if Instant::now() >= end || ctx.shared.stop.is_cancelled() {
            break;
        }
        let Some(late) = due(start, end, interval, n).await else {
            break;
        };
        let (c, _) = next_message(ctx, mine, n, late, &mut payload);
        if conn.is_none() {
            conn = Pipeline::open(ctx).await;
        }
        let sent = match conn.as_mut() {
            Some(pl) => {
                pl.send(ctx, c, &ctx.spec.request(&ctx.channels[c], &payload), end)
                    .await
            }
            None => Sent::Refused,
        };
        if sent != Sent::Queued {
            if sent == Sent::Refused {
                out.errors += 1;
                ctx.failed[c].fetch_add(1, Ordering::Relaxed);
            }
            match conn.take() {
                Some(pl) => out.add(pl.finish(Instant::now() + Duration::from_secs(1)).await),
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
    if let Some(pl) = conn {
        out.add(pl.finish(Instant::now() + ctx.ack_grace).await);
    }
    out
}

/// What became of a publish handed to [`Pipeline::send`].
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    /// Written; the reader counts its answer (or its failure).
    Queued,
    /// Not written: the connection had failed, or still had [`PIPELINE_DEPTH`] publishes
    /// unanswered when publishing ended. The caller counts it.
    Refused,
    /// Handed to the reader but the write failed (or was not done when publishing ended); the
    /// reader counts it as failed if the connection breaks, else it stays unanswered.
    Broken,
}

/// A keep-alive connection with publishes in flight: this side writes them, a reader task
/// reads the answers in order (RFC 9112 §9.3.2).
struct Pipeline {
    write: OwnedWriteHalf,
    /// The channel of each publish written and not yet answered, in order.
    in_flight: mpsc::Sender<usize>,
    reader: JoinHandle<()>,
    answers: Arc<Answers>,
}

impl Pipeline {
    async fn open(ctx: &Arc<PubCtx>) -> Option<Self> {
        let (read, write) = reconnect(ctx.spec.addr).await?.into_split();
        let (in_flight, rx) = mpsc::channel(PIPELINE_DEPTH);
        let answers = Arc::new(Answers::default());
        let reader = tokio::spawn(read_answers(Arc::clone(ctx), read, rx, Arc::clone(&answers)));
        Some(Self {
            write,
            in_flight,
            reader,
            answers,
        })
    }

    /// Queues and writes one publish, waiting at most until `until` (a server that neither
    /// answers nor reads would otherwise hold the publisher for ever).
    async fn send(&mut self, ctx: &PubCtx, channel: usize, request: &[u8], until: Instant) -> Sent {
        // Counted before the reader can see it, so its answer never finds the count at zero.
        ctx.unanswered[channel].fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout_at(until, self.in_flight.send(channel)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => {
                ctx.unanswered[channel].fetch_sub(1, Ordering::Relaxed);
                return Sent::Refused;
            }
        }
        match tokio::time::timeout_at(until, self.write.write_all(request)).await {
            Ok(Ok(())) => Sent::Queued,
            Ok(Err(_)) | Err(_) => Sent::Broken,
        }
    }

    /// Waits for the answers still in flight until `until`; those not in by then are counted
    /// neither acknowledged nor failed (the server may still publish them).
    async fn finish(self, until: Instant) -> PubOutcome {
        let Self {
            write,
            in_flight,
            mut reader,
            answers,
        } = self;
        drop(in_flight);
        if tokio::time::timeout_at(until, &mut reader).await.is_err() {
            reader.abort();
        }
        // Closing the write side only now: a server may drop pipelined requests it has not
        // answered when it reads the end of the stream.
        drop(write);
        PubOutcome {
            acked: answers.acked.load(Ordering::Relaxed),
            errors: answers.errors.load(Ordering::Relaxed),
        }
    }
}

/// Reads one answer per publish in flight. On a broken connection the publish being answered
/// and all those behind it count as failed.
async fn read_answers(
    ctx: Arc<PubCtx>,
    mut read: OwnedReadHalf,
    mut in_flight: mpsc::Receiver<usize>,
    answers: Arc<Answers>,
) {
    let mut buf = BytesMut::with_capacity(4096);
    let fail = |c: usize| {
        ctx.unanswered[c].fetch_sub(1, Ordering::Relaxed);
        answers.errors.fetch_add(1, Ordering::Relaxed);
        ctx.failed[c].fetch_add(1, Ordering::Relaxed);
    };
    // Bounded by the publishes sent: ends when the writer drops its sender.
    while let Some(c) = in_flight.recv().await {
        match read_response(&mut read, &mut buf).await {
            Ok((head, _)) if (200..300).contains(&head.status) => {
                ctx.unanswered[c].fetch_sub(1, Ordering::Relaxed);
                answers.acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => fail(c),
            Err(_) => {
                fail(c);
                in_flight.close();
                while let Some(next) = in_flight.recv().await {
                    fail(next);
                }
            }
        }
    }
}

/// Publishes one message; `Ok(false)` when the server closes the connection after answering.
async fn publish_one(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    spec: &PublishSpec,
    channel: &str,
    payload: &str,
) -> Result<bool, BenchError> {
    io.write_all(&spec.request(channel, payload)).await?;
    let (head, _) = read_response(io, buf).await?;
    if !(200..300).contains(&head.status) {
        return Err(BenchError::Status {
            status: head.status,
            what: "publish",
        });
    }
    // Pushpin's control API closes after every answer: publish again on a new connection.
    Ok(!head
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::Adapter;
    use crate::parse::find_markers;
    use tokio::io::AsyncReadExt as _;
    use tokio::net::TcpListener;

    /// How the test's origin answers publishes.
    #[derive(Clone, Copy)]
    enum Origin {
        /// Once it has read `n + 3` requests on a connection, answers the first `n` with `200`,
        /// the last of them with `Connection: close`, and closes it, dropping the 3 others
        /// (nginx's `keepalive_requests` under pipelining).
        CloseAfter(u64),
        /// Reads every request and answers none.
        Silent,
    }

    /// A plain HTTP/1.1 listener on 127.0.0.1 that counts the publishes it answers.
    async fn origin(kind: Origin) -> (SocketAddr, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answered = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&answered);
        tokio::spawn(async move {
            // Bounded by the test's runtime, which ends with the test.
            while let Ok((mut io, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut read = 0u64;
                    let mut chunk = [0u8; 4096];
                    while let Ok(n @ 1..) = io.read(&mut chunk).await {
                        buf.extend_from_slice(&chunk[..n]);
                        // Each request: a head ending in a blank line, then Content-Length bytes.
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if buf.len() < end + 4 + len {
                                break;
                            }
                            buf.drain(..end + 4 + len);
                            read += 1;
                            let Origin::CloseAfter(limit) = kind else { continue };
                            if read < limit + 3 {
                                continue;
                            }
                            let mut answers = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".repeat(limit as usize - 1);
                            answers.push_str("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                            if io.write_all(answers.as_bytes()).await.is_ok() {
                                count.fetch_add(limit, Ordering::Relaxed);
                            }
                            return;
                        }
                    }
                });
            }
        });
        (addr, answered)
    }

    fn ctx(addr: SocketAddr, rate: f64, duration: Duration) -> Arc<PubCtx> {
        Arc::new(PubCtx {
            spec: Adapter::comet(addr).publish,
            channels: vec!["a".into(), "b".into()],
            publishers: 1,
            rate: Some(rate),
            duration,
            window: 8,
            subs_per_channel: 1.0,
            payload_pad: 0,
            sent: (0..2).map(|_| AtomicU64::new(0)).collect(),
            failed: (0..2).map(|_| AtomicU64::new(0)).collect(),
            unanswered: (0..2).map(|_| AtomicU64::new(0)).collect(),
            sent_total: AtomicU64::new(0),
            ack_grace: Duration::from_millis(500),
            shared: Arc::new(Shared::new()),
        })
    }

    #[tokio::test]
    async fn a_pipelined_publisher_counts_every_answer_across_closed_connections() {
        let (addr, answered) = origin(Origin::CloseAfter(7)).await;
        let ctx = ctx(addr, 400.0, Duration::from_millis(300));
        let out = run(Arc::clone(&ctx), 0).await;
        let sent = ctx.sent_total.load(Ordering::Relaxed);
        assert!(sent >= 100, "{sent} publishes at 400/s for 0.3 s");
        // The origin closed a connection after every 7 answers, with 3 more publishes in
        // flight: the publisher counted those failed and reconnected each time.
        assert!(answered.load(Ordering::Relaxed) >= 50, "{out:?}");
        assert!(out.errors >= 3 * (out.acked / 7), "{out:?}");
        assert_eq!(out.acked, answered.load(Ordering::Relaxed), "every answer counted once");
        let failed: u64 = ctx.failed.iter().map(|f| f.load(Ordering::Relaxed)).sum();
        assert_eq!(failed, out.errors);
        // Only the last connection's publishes can be left unanswered (fewer than 7 + 3).
        let unanswered: u64 = ctx.unanswered.iter().map(|u| u.load(Ordering::Relaxed)).sum();
        assert!(unanswered < 10, "{unanswered}");
        assert_eq!(out.acked + out.errors + unanswered, sent, "every publish counted once");
    }

    #[tokio::test]
    async fn publishes_a_server_never_answers_are_unanswered_not_failed() {
        let (addr, answered) = origin(Origin::Silent).await;
        let ctx = ctx(addr, 200.0, Duration::from_millis(200));
        let began = Instant::now();
        let out = run(Arc::clone(&ctx), 0).await;
        // Bounded: the run's duration, then the grace for answers.
        assert!(began.elapsed() < Duration::from_secs(5));
        assert!(ctx.sent_total.load(Ordering::Relaxed) >= 20);
        assert_eq!((out.acked, out.errors, answered.load(Ordering::Relaxed)), (0, 0, 0));
        let unanswered: u64 = ctx.unanswered.iter().map(|u| u.load(Ordering::Relaxed)).sum();
        assert_eq!(unanswered, ctx.sent_total.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_publisher_whose_pipeline_fills_stops_when_publishing_ends() {
        // More publishes than PIPELINE_DEPTH to a server that reads and never answers.
        let (addr, _) = origin(Origin::Silent).await;
        let ctx = ctx(addr, 4000.0, Duration::from_millis(400));
        let out = tokio::time::timeout(Duration::from_secs(5), run(Arc::clone(&ctx), 0))
            .await
            .expect("bounded by the run and its grace, not by the server");
        let sent = ctx.sent_total.load(Ordering::Relaxed);
        assert!(sent > PIPELINE_DEPTH as u64, "{sent}");
        // The publishes that found the pipeline full were not sent: failed, not lost.
        assert_eq!(out.acked, 0);
        assert!(out.errors >= 1, "{out:?}");
        let unanswered: u64 = ctx.unanswered.iter().map(|u| u.load(Ordering::Relaxed)).sum();
        // The queue's PIPELINE_DEPTH, and the one whose answer the reader waits for.
        assert_eq!(unanswered, PIPELINE_DEPTH as u64 + 1, "the full pipeline");
        assert_eq!(out.errors + unanswered, sent, "every publish counted once");
    }

    #[test]
    fn a_late_message_is_stamped_with_the_time_it_was_due() {
        let ctx = ctx("127.0.0.1:9".parse().unwrap(), 10.0, Duration::ZERO);
        let mut payload = String::new();
        let (c, seq) = next_message(&ctx, &[1], 0, Duration::from_secs(2), &mut payload);
        assert_eq!((c, seq), (1, 1));
        let mut stamps = Vec::new();
        find_markers(payload.as_bytes(), |m| stamps.push(m.sent_ns));
        let behind = now_ns() - stamps[0];
        assert!(
            (2_000_000_000..3_000_000_000).contains(&behind),
            "stamped {behind} ns ago"
        );
    }
}
