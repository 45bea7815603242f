//! `comet bench` end to end: the load generator against a real Comet server on 127.0.0.1, over
//! every transport it drives, at a fixed rate and as fast as acknowledged. Every message must
//! reach every subscriber exactly once, as the generator counts it. (Speed is measured in
//! bench/, never asserted here.)

use std::time::Duration;

use comet_bench::{Adapter, BenchConfig, Report, Transport};

const SUBSCRIBERS: usize = 12;

async fn run_against_comet(transport: Transport, rate: Option<f64>) -> Report {
    run_with(transport, rate, None).await
}

async fn run_with(transport: Transport, rate: Option<f64>, storm: Option<Duration>) -> Report {
    // One generator stands for many clients on one address.
    let mut server = comet_test_support::start_server_with(comet_test_support::unlimited()).await;
    let addr = server.addr;

    let mut cfg = BenchConfig::new(Adapter::comet(addr), transport);
    cfg.subscribers = SUBSCRIBERS;
    cfg.channels = 1;
    cfg.publishers = 1;
    cfg.rate = rate;
    cfg.duration = Duration::from_millis(1500);
    cfg.drain = Duration::from_secs(5);
    cfg.settle = Duration::from_millis(200);
    cfg.poll_interval = Duration::from_millis(100);
    cfg.connect_timeout = Duration::from_secs(20);
    cfg.resume_storm_at = storm;
    let report = tokio::time::timeout(Duration::from_secs(60), comet_bench::run(cfg))
        .await
        .expect("bench run finished in time")
        .expect("bench run");

    server.shutdown().await;
    report
}

fn assert_exact(report: &Report) {
    let what = format!("{} rate {:?}", report.transport, report.rate);
    assert_eq!(report.connected, SUBSCRIBERS, "{what}: {:?}", report.connect_errors);
    assert!(report.connect_errors.is_empty(), "{what}: {:?}", report.connect_errors);
    assert!(report.run_errors.is_empty(), "{what}: {:?}", report.run_errors);
    assert_eq!(report.publish_errors, 0, "{what}");
    assert!(report.published > 0, "{what}: nothing published");
    assert_eq!((report.lost, report.duplicated), (0, 0), "{what}");
    assert_eq!(report.delivered, report.published * SUBSCRIBERS as u64, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_delivers_every_message_once() {
    for transport in [
        Transport::Sse,
        Transport::Websocket,
        Transport::Stream,
        Transport::Longpoll,
        Transport::Poll,
    ] {
        let report = run_against_comet(transport, Some(40.0)).await;
        assert_exact(&report);
    }
}

/// As fast as acknowledged: several messages arrive in one read, which the generator records
/// as one batch (each transport's reader, WebSocket's included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_are_counted_exactly() {
    for transport in [Transport::Websocket, Transport::Sse] {
        let report = run_against_comet(transport, None).await;
        assert_exact(&report);
        assert!(
            report.published > 20,
            "{}: only {} published",
            report.transport,
            report.published
        );
    }
}

/// S6, the resume storm: mid-run every SSE subscriber drops its connection and reconnects with
/// its Last-Event-ID; every message still arrives exactly once, and the report says when all
/// were back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resume_storm_loses_and_doubles_nothing() {
    let report = run_with(Transport::Sse, Some(200.0), Some(Duration::from_millis(600))).await;
    assert_exact(&report);
    assert_eq!((report.resumed, report.resume_failed), (SUBSCRIBERS as u64, 0));
    assert!(report.resume_secs.is_some(), "{report:?}");
}

/// The storm reconnects with Last-Event-ID, so it is refused for other transports.
#[tokio::test]
async fn the_resume_storm_needs_sse() {
    let cfg = BenchConfig {
        resume_storm_at: Some(Duration::from_secs(1)),
        ..BenchConfig::new(Adapter::comet("127.0.0.1:9".parse().unwrap()), Transport::Websocket)
    };
    let err = comet_bench::run(cfg).await.unwrap_err().to_string();
    assert!(err.contains("needs --transport sse"), "{err}");
}
