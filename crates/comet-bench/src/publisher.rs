//! Publishers: each owns the channels `c` with `c % publishers == its index`, so a channel's
//! messages leave in sequence order over one keep-alive connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::adapter::PublishSpec;
use crate::error::BenchError;
use crate::net::{connect, post_request, read_response};
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
    /// Publishes sent (all publishers).
    pub(crate) sent_total: AtomicU64,
    pub(crate) shared: Arc<Shared>,
}

/// What one publisher did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PubOutcome {
    pub(crate) acked: u64,
    pub(crate) errors: u64,
}

async fn reconnect(addr: SocketAddr) -> Option<TcpStream> {
    connect(addr, None).await.ok()
}

/// Publisher `p` of `ctx.publishers`, until `ctx.duration` has passed.
pub(crate) async fn run(ctx: Arc<PubCtx>, p: usize) -> PubOutcome {
    let mine: Vec<usize> = (p..ctx.channels.len()).step_by(ctx.publishers).collect();
    let mut out = PubOutcome::default();
    if mine.is_empty() {
        return out;
    }
    let active = ctx.publishers.min(ctx.channels.len()) as f64;
    let interval = ctx.rate.map(|r| Duration::from_secs_f64(active / r));
    let start = Instant::now();
    let end = start + ctx.duration;
    let mut stream = reconnect(ctx.spec.addr).await;
    let mut buf = BytesMut::with_capacity(1024);
    let mut payload = String::new();
    // Bounded by `end` (and by the stop token).
    for n in 0u64.. {
        let now = Instant::now();
        if now >= end || ctx.shared.stop.is_cancelled() {
            break;
        }
        match interval {
            Some(i) => {
                let due = start + i.mul_f64(n as f64);
                if due > now {
                    tokio::time::sleep_until(due.min(end)).await;
                    if Instant::now() >= end {
                        break;
                    }
                }
            }
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
            }
        }
        let c = mine[(n as usize) % mine.len()];
        let seq = ctx.sent[c].load(Ordering::Relaxed) + 1;
        ctx.sent[c].store(seq, Ordering::Relaxed);
        ctx.sent_total.fetch_add(1, Ordering::Relaxed);
        payload.clear();
        Marker { seq, sent_ns: now_ns() }.write(&mut payload, ctx.payload_pad);
        let ok = match stream.as_mut() {
            Some(io) => publish_one(io, &mut buf, &ctx.spec, &ctx.channels[c], &payload).await,
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

/// Publishes one message; `Ok(false)` when the server closes the connection after answering.
async fn publish_one(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    spec: &PublishSpec,
    channel: &str,
    payload: &str,
) -> Result<bool, BenchError> {
    let path = spec.path.render(channel, payload, None);
    let body = spec.body.render(channel, payload, None);
    io.write_all(&post_request(spec.addr, &path, &spec.content_type, &body))
        .await?;
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
