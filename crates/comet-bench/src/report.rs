//! The result of one run: a JSON-serialisable [`Report`] and its table form.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::procstat::ProcSample;

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// Summarises a histogram recorded in microseconds.
    pub fn from_micros(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
        }
    }
}

/// The server's resource use over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerUse {
    /// Before any subscriber connected.
    pub before: Option<ProcSample>,
    /// Once every subscriber was connected (idle).
    pub connected: Option<ProcSample>,
    /// At the end of the publish phase (and drain).
    pub after: Option<ProcSample>,
    /// (connected − before) RSS / subscribers connected, bytes.
    pub rss_per_connection_bytes: Option<f64>,
    /// CPU seconds spent during the publish phase and drain.
    pub cpu_secs_publishing: Option<f64>,
    /// CPU seconds per million deliveries.
    pub cpu_secs_per_million: Option<f64>,
    /// Largest resident memory seen while publishing (read every 100 ms), KiB.
    pub rss_peak_kib: Option<u64>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Free-form label (scenario name).
    pub label: String,
    /// The adapter's name.
    pub server: String,
    /// The transport.
    pub transport: String,
    /// Subscribers asked for.
    pub subscribers: usize,
    /// Channels they were spread over.
    pub channels: usize,
    /// Generator processes used (each is bound by the per-process open-file limit).
    pub generator_processes: usize,
    /// The generator's open-file limit (soft, hard) after raising the soft one.
    pub fd_limit: (u64, u64),
    /// Subscribers that got to "subscribed".
    pub connected: usize,
    /// Connection errors by kind.
    pub connect_errors: BTreeMap<String, u64>,
    /// Seconds from the first connect to the last subscriber subscribed.
    pub connect_secs: f64,
    /// Subscribers subscribed per second.
    pub connects_per_sec: f64,
    /// Requested publish rate (messages/s); `None` means as fast as delivered.
    pub rate: Option<f64>,
    /// Publishes acknowledged.
    pub published: u64,
    /// Publishes that failed.
    pub publish_errors: u64,
    /// Publishes neither acknowledged nor failed by the end of the drain (a server that takes
    /// pipelined publishes slower than the rate). Their messages are not counted lost.
    pub publishes_unanswered: u64,
    /// Seconds of publishing.
    pub publish_secs: f64,
    /// Messages received by subscribers (each delivery counted once per subscriber).
    pub delivered: u64,
    /// Deliveries per second over publishing + drain.
    pub deliveries_per_sec: f64,
    /// Messages published on a subscriber's channel that it never got.
    pub lost: u64,
    /// Messages a subscriber got more than once (or out of order).
    pub duplicated: u64,
    /// Subscriber connections that broke during the run, by kind.
    pub run_errors: BTreeMap<String, u64>,
    /// Requests made by polling subscribers (long-poll, poll), per second.
    pub poll_requests_per_sec: Option<f64>,
    /// Publish → receive latency, ms.
    pub latency_ms: Percentiles,
    /// The resume storm (S6, `--resume-storm-at`): seconds from dropping every subscriber
    /// connection to the last one subscribed again with its `Last-Event-ID`.
    pub resume_secs: Option<f64>,
    /// Subscribers subscribed again after the storm.
    pub resumed: u64,
    /// Subscribers whose new connection after the storm failed.
    pub resume_failed: u64,
    /// The server's resource use (with `--server-pid`).
    pub server_use: ServerUse,
    /// Notes on how to read this run.
    pub notes: Vec<String>,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

impl Report {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(t, "  {k:<28} {v}");
        };
        row("run", format!("{} / {} / {}", self.label, self.server, self.transport));
        row(
            "subscribers",
            format!(
                "{} asked, {} connected, {} channels, {} generator process(es), fd limit {}/{}",
                self.subscribers,
                self.connected,
                self.channels,
                self.generator_processes,
                self.fd_limit.0,
                self.fd_limit.1
            ),
        );
        row(
            "connection setup",
            format!(
                "{:.2} s to all subscribed, {:.0} conn/s, errors {:?}",
                self.connect_secs, self.connects_per_sec, self.connect_errors
            ),
        );
        row(
            "published",
            format!(
                "{} in {:.1} s (rate {}), {} errors, {} unanswered at the end",
                self.published,
                self.publish_secs,
                self.rate.map_or("max".into(), |r| format!("{r}/s")),
                self.publish_errors,
                self.publishes_unanswered
            ),
        );
        row(
            "delivered",
            format!("{} ({:.0}/s)", self.delivered, self.deliveries_per_sec),
        );
        row(
            "lost / duplicated",
            format!("{} / {}   run errors {:?}", self.lost, self.duplicated, self.run_errors),
        );
        if let Some(r) = self.poll_requests_per_sec {
            row("poll requests", format!("{r:.0}/s"));
        }
        if self.resumed > 0 || self.resume_failed > 0 {
            row(
                "resume storm",
                format!(
                    "{} resumed, {} failed, all within {} s",
                    self.resumed,
                    self.resume_failed,
                    opt(self.resume_secs, 3)
                ),
            );
        }
        let l = &self.latency_ms;
        row(
            "latency ms",
            format!(
                "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n={})",
                l.p50, l.p90, l.p99, l.p999, l.max, l.count
            ),
        );
        let u = &self.server_use;
        if let Some(peak) = u.rss_peak_kib {
            row("server RSS peak KiB", format!("{peak} (while publishing)"));
        }
        if let (Some(b), Some(c)) = (u.before, u.connected) {
            row(
                "server RSS KiB",
                format!(
                    "before {} connected {} after {}  => {} B/connection",
                    b.rss_kib,
                    c.rss_kib,
                    u.after.map_or(0, |a| a.rss_kib),
                    opt(u.rss_per_connection_bytes, 0)
                ),
            );
            row(
                "server CPU",
                format!(
                    "{} s publishing, {} s per million deliveries",
                    opt(u.cpu_secs_publishing, 2),
                    opt(u.cpu_secs_per_million, 3)
                ),
            );
        }
        for n in &self.notes {
            row("note", n.clone());
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_ms() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).unwrap();
        for us in 1..=1000u64 {
            h.record(us * 10).unwrap();
        }
        let p = Percentiles::from_micros(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p99 - 9.9).abs() < 0.01, "{p:?}");
        assert!((p.max - 10.0).abs() < 0.01, "{p:?}");
        assert_eq!(
            Percentiles::from_micros(&Histogram::new(3).unwrap()),
            Percentiles::default()
        );
        let r = Report {
            label: "s".into(),
            latency_ms: p,
            ..Default::default()
        };
        assert!(r.table().contains("p99 9.9"));
        assert!(
            serde_json::to_value(&r).unwrap()["latency_ms"]["p999"]
                .as_f64()
                .unwrap()
                > 9.9
        );
    }
}
