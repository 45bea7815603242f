//! Criterion micro-benchmarks of the broker's publish and fan-out path: `Hub::publish` (history
//! append + wake-up) and the subscribers' reads of the shared log, at several fan-out widths;
//! and `Hub::sweep` over 320,000 channels that each hold a message (nothing to forget: the walk
//! itself), which takes each of its 128 shard locks for about a 128th of the time measured.
//!
//! Run: `cargo bench -p comet-core --bench fanout`.

#![allow(missing_docs)]

use std::hint::black_box;

use bytes::Bytes;
use comet_core::{ChannelName, Event, Hub, HubConfig, Since};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn publish(c: &mut Criterion) {
    let hub = Hub::new(HubConfig::default());
    let ch = ChannelName::new("bench:a").expect("valid channel name");
    let data = Bytes::from_static(b"#12345/1795435237123456789#");
    c.bench_function("publish/no_subscriber", |b| {
        b.iter(|| black_box(hub.publish(&ch, None, &data).expect("UTF-8")))
    });
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_and_fan_out");
    for width in [1usize, 100, 1000] {
        let hub = Hub::new(HubConfig::default());
        let ch = ChannelName::new("bench:fan").expect("valid channel name");
        let mut subs: Vec<_> = (0..width).map(|_| hub.subscribe(&ch, Since::Live)).collect();
        let data = Bytes::from_static(b"#12345/1795435237123456789#");
        let mut out: Vec<Event> = Vec::with_capacity(4);
        group.throughput(Throughput::Elements(width as u64));
        group.bench_with_input(BenchmarkId::from_parameter(width), &width, |b, _| {
            b.iter(|| {
                hub.publish(&ch, None, &data).expect("UTF-8");
                for sub in &mut subs {
                    sub.try_read(&mut out, 64);
                    out.clear();
                }
            })
        });
    }
    group.finish();
}

fn sweep(c: &mut Criterion) {
    let hub = Hub::new(HubConfig::default());
    for i in 0..320_000 {
        let ch = ChannelName::new(&format!("bench:{i}")).expect("valid channel name");
        hub.publish(&ch, None, b"x").expect("UTF-8");
    }
    c.bench_function("sweep/320000_channels", |b| b.iter(|| black_box(hub.sweep())));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = publish, fanout, sweep
}
criterion_main!(benches);
