//! One benchmark run: connect the subscribers, idle, publish, drain, tally.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::adapter::{Adapter, Transport};
use crate::error::BenchError;
use crate::procstat::{self, ProcSample};
use crate::publisher::{self, PubCtx};
use crate::report::{Percentiles, Report, ServerUse};
use crate::subscriber::{self, Shared, SubCtx};

/// File descriptors kept free for everything that is not a subscriber socket (publishers,
/// stdio, the runtime's own).
const FD_RESERVE: u64 = 64;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Free-form label for the report (scenario name).
    pub label: String,
    /// The server under test.
    pub adapter: Adapter,
    /// The subscribers' transport.
    pub transport: Transport,
    /// Subscribers to open. Defaults to 1,000.
    pub subscribers: usize,
    /// Channels; subscriber `i` is on channel `i % channels`. Defaults to 1.
    pub channels: usize,
    /// Prefix of channel names (made unique per run so no history from earlier runs leaks in).
    pub channel_prefix: String,
    /// Messages per second over all channels; `None`: as fast as subscribers keep up
    /// (at most `window` undelivered messages per channel).
    pub rate: Option<f64>,
    /// How long to publish. Zero: an idle run (connect, measure memory, disconnect).
    pub duration: Duration,
    /// How long to wait after publishing for the last deliveries. Defaults to 5 s.
    pub drain: Duration,
    /// Publisher connections. Defaults to 4.
    pub publishers: usize,
    /// See `rate`. Defaults to 8.
    pub window: u64,
    /// Connect attempts in flight at once. Defaults to 1,000.
    pub connect_concurrency: usize,
    /// Give up waiting for subscribers after this long. Defaults to 120 s.
    pub connect_timeout: Duration,
    /// Pause between "all subscribed" and the memory reading / first publish, so servers that
    /// subscribe asynchronously (Pushpin's origin round trip) are ready. Defaults to 2 s.
    pub settle: Duration,
    /// Client source addresses, used round-robin. Empty: the kernel's choice.
    pub sources: Vec<Ipv4Addr>,
    /// The server's process ids (their descendants are included) for RSS and CPU readings.
    pub server_pids: Vec<u32>,
    /// Payload padding beyond the marker, bytes. Defaults to 0.
    pub payload_pad: usize,
    /// Pause between two short polls. Defaults to 1 s.
    pub poll_interval: Duration,
    /// The resume storm (S6): this long into publishing, every subscriber (SSE only) drops its
    /// connection at once and reconnects with its `Last-Event-ID`. `None` (the default): no
    /// storm.
    pub resume_storm_at: Option<Duration>,
}

impl BenchConfig {
    /// Defaults for `adapter` and `transport`.
    pub fn new(adapter: Adapter, transport: Transport) -> Self {
        Self {
            label: "run".into(),
            adapter,
            transport,
            subscribers: 1000,
            channels: 1,
            channel_prefix: format!("bench{}x{}", std::process::id(), subscriber::now_ns() % 1_000_000_007),
            rate: Some(100.0),
            duration: Duration::from_secs(10),
            drain: Duration::from_secs(5),
            publishers: 4,
            window: 8,
            connect_concurrency: 1000,
            connect_timeout: Duration::from_secs(120),
            settle: Duration::from_secs(2),
            sources: Vec::new(),
            server_pids: Vec::new(),
            payload_pad: 0,
            poll_interval: Duration::from_secs(1),
            resume_storm_at: None,
        }
    }
}

fn raise_fd_limit() -> (u64, u64) {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((0, 0))
}

fn count(map: &mut BTreeMap<String, u64>, key: &str) {
    *map.entry(key.to_owned()).or_default() += 1;
}

/// Runs one benchmark.
///
/// # Errors
/// [`BenchError::Config`] for settings out of range (including more subscribers than this
/// process may open files) and [`BenchError::NoTransport`]. Connection failures are counted in
/// the report, not returned.
pub async fn run(cfg: BenchConfig) -> Result<Report, BenchError> {
    if cfg.subscribers == 0 || cfg.channels == 0 || cfg.publishers == 0 {
        return Err(BenchError::Config(
            "subscribers, channels and publishers must be at least 1".into(),
        ));
    }
    let (spec, publish) = cfg.adapter.for_transport(cfg.transport)?;
    if cfg.resume_storm_at.is_some() && spec.framing != crate::adapter::Framing::Sse {
        return Err(BenchError::Config(
            "the resume storm reconnects with Last-Event-ID: it needs --transport sse".into(),
        ));
    }
    let fd_limit = raise_fd_limit();
    let need = cfg.subscribers as u64 + cfg.publishers as u64 + FD_RESERVE;
    if fd_limit.1 > 0 && need > fd_limit.1 {
        return Err(BenchError::Config(format!(
            "{} subscribers need about {need} open files but one process may have {}: \
             split them over several `comet bench` processes run side by side (each on its own channels)",
            cfg.subscribers, fd_limit.1
        )));
    }
    let mut report = Report {
        label: cfg.label.clone(),
        server: cfg.adapter.name.clone(),
        transport: cfg.transport.to_string(),
        subscribers: cfg.subscribers,
        channels: cfg.channels,
        generator_processes: 1,
        fd_limit,
        rate: cfg.rate,
        ..Report::default()
    };
    report.notes.push(format!(
        "1 generator process: its open-file hard limit ({}) caps it at about {} subscribers; \
         past that, run several processes",
        fd_limit.1,
        fd_limit.1.saturating_sub(FD_RESERVE)
    ));
    let channels: Vec<String> = (0..cfg.channels)
        .map(|i| format!("{}-{i}", cfg.channel_prefix))
        .collect();
    let shared = Arc::new(Shared::new());
    let sample = || procstat::sample(&cfg.server_pids);
    let before = sample();

    // Connect.
    let ctx = Arc::new(SubCtx {
        spec: spec.clone(),
        addr: cfg.adapter.addr,
        channels: channels.clone(),
        sources: cfg.sources.clone(),
        shared: Arc::clone(&shared),
        connect_limit: Arc::new(Semaphore::new(cfg.connect_concurrency.max(1))),
        poll_interval: cfg.poll_interval,
    });
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let tasks: Vec<_> = (0..cfg.subscribers)
        .map(|i| tokio::spawn(subscriber::run(Arc::clone(&ctx), i, ready_tx.clone())))
        .collect();
    drop(ready_tx);
    let deadline = started + cfg.connect_timeout;
    let mut reported = 0;
    let mut last_ok = started;
    while reported < cfg.subscribers {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {
                report.connected += 1;
                last_ok = Instant::now();
            }
            Ok(Some(Err(kind))) => count(&mut report.connect_errors, kind),
            Ok(None) => break,
            Err(_) => {
                report
                    .connect_errors
                    .insert("not_subscribed_in_time".into(), (cfg.subscribers - reported) as u64);
                break;
            }
        }
        reported += 1;
    }
    report.connect_secs = (last_ok - started).as_secs_f64();
    report.connects_per_sec = report.connected as f64 / report.connect_secs.max(1e-9);
    tokio::time::sleep(cfg.settle).await;
    let connected = sample();

    // Publish.
    let pub_ctx = Arc::new(PubCtx {
        spec: publish.clone(),
        channels: channels.clone(),
        publishers: cfg.publishers,
        rate: cfg.rate,
        duration: cfg.duration,
        window: cfg.window.max(1),
        subs_per_channel: (report.connected as f64 / cfg.channels as f64).max(1.0),
        payload_pad: cfg.payload_pad,
        sent: (0..cfg.channels).map(|_| AtomicU64::new(0)).collect(),
        failed: (0..cfg.channels).map(|_| AtomicU64::new(0)).collect(),
        unanswered: (0..cfg.channels).map(|_| AtomicU64::new(0)).collect(),
        sent_total: AtomicU64::new(0),
        ack_grace: cfg.drain,
        shared: Arc::clone(&shared),
    });
    let publishing = Instant::now();
    let delivered_at_start = shared.delivered.load(Ordering::Relaxed);
    let polls_at_start = shared.poll_requests.load(Ordering::Relaxed);
    let mut active_secs = 0.0;
    // The server's peak memory while publishing, and the resume storm.
    let peak = {
        let pids = cfg.server_pids.clone();
        let stop = shared.stop.clone();
        tokio::spawn(async move {
            let mut peak: Option<u64> = None;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    () = stop.cancelled() => return peak,
                    _ = tick.tick() => {}
                }
                let pids = pids.clone();
                if let Ok(Some(s)) = tokio::task::spawn_blocking(move || procstat::sample(&pids)).await {
                    peak = Some(peak.map_or(s.rss_kib, |p| p.max(s.rss_kib)));
                }
            }
        })
    };
    let storm = cfg.resume_storm_at.map(|at| {
        let shared = Arc::clone(&shared);
        let connected = report.connected as u64;
        tokio::spawn(async move {
            tokio::time::sleep(at).await;
            let started = Instant::now();
            shared.storm.cancel();
            // Bounded by the run's stop.
            loop {
                let done = shared.resumed.load(Ordering::Relaxed) + shared.resume_failed.load(Ordering::Relaxed);
                if done >= connected {
                    return Some(started.elapsed().as_secs_f64());
                }
                tokio::select! {
                    () = shared.stop.cancelled() => return None,
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
        })
    });
    if !cfg.duration.is_zero() {
        let pubs: Vec<_> = (0..cfg.publishers)
            .map(|p| tokio::spawn(publisher::run(Arc::clone(&pub_ctx), p)))
            .collect();
        for p in pubs {
            if let Ok(o) = p.await {
                report.published += o.acked;
                report.publish_errors += o.errors;
            }
        }
        report.publish_secs = publishing.elapsed().as_secs_f64();
        // Drain: every subscriber should get every message of its channel.
        let per_channel: Vec<u64> = pub_ctx.sent.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        let expected: u64 = (0..report.connected).map(|i| per_channel[i % cfg.channels]).sum();
        let drain_end = Instant::now() + cfg.drain;
        // Bounded by `drain_end`.
        while Instant::now() < drain_end && shared.delivered.load(Ordering::Relaxed) - delivered_at_start < expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        active_secs = publishing.elapsed().as_secs_f64();
    }
    let after = sample();
    let polls = shared.poll_requests.load(Ordering::Relaxed) - polls_at_start;

    // Tally.
    shared.stop.cancel();
    let rss_peak_kib = peak.await.ok().flatten();
    if let Some(storm) = storm {
        report.resume_secs = storm.await.ok().flatten();
        report.resumed = shared.resumed.load(Ordering::Relaxed);
        report.resume_failed = shared.resume_failed.load(Ordering::Relaxed);
    }
    let per_channel: Vec<u64> = pub_ctx.sent.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    let failed: Vec<u64> = pub_ctx.failed.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    let unanswered: Vec<u64> = pub_ctx.unanswered.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    report.publishes_unanswered = unanswered.iter().sum();
    for t in tasks {
        let Ok(o) = t.await else { continue };
        if o.connect_error.is_some() {
            continue;
        }
        if let Some(kind) = o.run_error {
            count(&mut report.run_errors, kind);
        }
        let c = o.tracker.channel;
        report.lost += o.tracker.lost(per_channel[c], failed[c] + unanswered[c]);
        report.duplicated += o.tracker.duplicated;
        report.delivered += o.tracker.received;
    }
    report.deliveries_per_sec = if active_secs > 0.0 {
        report.delivered as f64 / active_secs
    } else {
        0.0
    };
    if matches!(cfg.transport, Transport::Longpoll | Transport::Poll) && active_secs > 0.0 {
        report.poll_requests_per_sec = Some(polls as f64 / active_secs);
    }
    report.latency_ms = Percentiles::from_micros(&shared.merged_latency());
    report.server_use = server_use(before, connected, after, report.connected, report.delivered);
    report.server_use.rss_peak_kib = rss_peak_kib;
    Ok(report)
}

fn server_use(
    before: Option<ProcSample>,
    connected: Option<ProcSample>,
    after: Option<ProcSample>,
    n: usize,
    delivered: u64,
) -> ServerUse {
    let mut u = ServerUse {
        before,
        connected,
        after,
        ..ServerUse::default()
    };
    if let (Some(b), Some(c)) = (before, connected) {
        if n > 0 {
            u.rss_per_connection_bytes = Some((c.rss_kib as f64 - b.rss_kib as f64) * 1024.0 / n as f64);
        }
        if let Some(a) = after {
            let cpu = a.cpu_secs - c.cpu_secs;
            u.cpu_secs_publishing = Some(cpu);
            if delivered > 0 {
                u.cpu_secs_per_million = Some(cpu * 1e6 / delivered as f64);
            }
        }
    }
    u
}
