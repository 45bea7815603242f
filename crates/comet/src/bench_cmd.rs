//! `comet bench`: the load generator (crate `comet-bench`) on the command line. Prints a table
//! and, with `--json FILE` (or `-` for stdout), the report as JSON.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use comet_bench::{Adapter, BenchConfig, Transport};

/// Options of `comet bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Server under test: comet, nchan or pushpin (built-in adapters).
    #[arg(long, default_value = "comet")]
    server: String,
    /// A custom adapter as JSON (URL/body templates and framing); overrides --server.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Address subscribers connect to (pushpin: its client port; its control API is port 5561).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Transport: sse, websocket, stream, longpoll or poll.
    #[arg(long, default_value = "sse")]
    transport: String,
    /// Subscribers to open.
    #[arg(long, short = 'n', default_value_t = 1000)]
    subscribers: usize,
    /// Channels the subscribers are spread over (subscriber i is on channel i % channels).
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Messages per second over all channels, or `max` (as fast as subscribers keep up). At a
    /// fixed rate each message is sent and stamped when it is due, pipelined on the publisher's
    /// connection without waiting for earlier answers (unless the adapter says the server does
    /// not take pipelined requests), so a server slower than the rate shows it in latency.
    #[arg(long, default_value = "100")]
    rate: String,
    /// Seconds of publishing; 0 for an idle run (connect, measure memory, disconnect).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to wait for the last deliveries after publishing.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Publisher connections.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// With --rate max: undelivered messages allowed per channel.
    #[arg(long, default_value_t = 8)]
    window: u64,
    /// Connect attempts in flight at once.
    #[arg(long, default_value_t = 1000)]
    connect_concurrency: usize,
    /// Seconds to wait for all subscribers.
    #[arg(long, default_value_t = 120.0)]
    connect_timeout: f64,
    /// Seconds between "all subscribed" and the first publish / memory reading.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// S6, the resume storm: this many seconds into publishing, every subscriber (SSE) drops
    /// its connection at once and reconnects with its Last-Event-ID; the report says how long
    /// until all were subscribed again, and lost/duplicated covers the seam.
    #[arg(long)]
    resume_storm_at: Option<f64>,
    /// Client source addresses (127.0.0.0/8), used round-robin; "none" for the kernel's choice.
    #[arg(long, default_value = "127.0.0.2-127.0.0.50")]
    source_ips: String,
    /// The server's process id (repeatable; descendants included) for RSS and CPU readings.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Payload bytes beyond the `#seq/ns#` marker.
    #[arg(long, default_value_t = 0)]
    payload_pad: usize,
    /// Label of the run in the report.
    #[arg(long, default_value = "run")]
    label: String,
    /// Write the JSON report to this file (`-`: stdout).
    #[arg(long)]
    json: Option<PathBuf>,
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let adapter = match &args.adapter {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str::<Adapter>(&text).with_context(|| format!("bad adapter {}", path.display()))?
        }
        None => Adapter::builtin(&args.server, args.addr)?,
    };
    let transport: Transport = args.transport.parse()?;
    let mut cfg = BenchConfig::new(adapter, transport);
    cfg.label = args.label.clone();
    cfg.subscribers = args.subscribers;
    cfg.channels = args.channels;
    cfg.rate = match args.rate.as_str() {
        "max" => None,
        r => Some(r.parse::<f64>().context("--rate is a number or max")?),
    };
    cfg.duration = Duration::from_secs_f64(args.duration);
    cfg.drain = Duration::from_secs_f64(args.drain);
    cfg.publishers = args.publishers;
    cfg.window = args.window;
    cfg.connect_concurrency = args.connect_concurrency;
    cfg.connect_timeout = Duration::from_secs_f64(args.connect_timeout);
    cfg.settle = Duration::from_secs_f64(args.settle);
    cfg.resume_storm_at = args.resume_storm_at.map(Duration::from_secs_f64);
    cfg.sources = if args.source_ips == "none" {
        Vec::new()
    } else {
        comet_bench::net::parse_source_range(&args.source_ips)?
    };
    cfg.server_pids = args.server_pids.clone();
    cfg.payload_pad = args.payload_pad;
    let report = comet_bench::run(cfg).await?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        if path.as_os_str() == "-" {
            println!("{json}");
        } else {
            std::fs::write(path, json + "\n").with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}
