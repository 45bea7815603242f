//! Criterion micro-benchmarks of every per-message transport encoder, so a regression in the
//! bytes-per-message work shows without a full load run (`bench/compare`).
//!
//! Run: `cargo bench -p comet-server --bench encoders`. Each iteration encodes a *fresh* message
//! (encodings are cached per message, so re-encoding the same one would time a clone); the
//! `cached` case times exactly that clone, which is what every subscriber after the first pays.

#![allow(missing_docs)]

use std::hint::black_box;

use bytes::Bytes;
use comet_core::{ChannelName, Cursor, Event, Message};
use comet_server::transport::encoders;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

fn message(data: &'static str) -> Message {
    Message::new(
        ChannelName::new("bench:ticker").expect("valid channel name"),
        Cursor::new(0x9f2c_61d0_4ab3, 42),
        None,
        data.as_bytes(),
        1_795_435_237_123,
    )
    .expect("UTF-8 data")
}

const SMALL: &str = "#12345/1795435237123456789#";
const TEXT: &str = "line one with \"quotes\" and a tab\there\nline two </script> \u{2028} and some more text to \
                    make this about two hundred bytes long, which is a typical chat or ticker message size.";

fn encoders(c: &mut Criterion) {
    type Encoder = fn(&Message) -> Bytes;
    let cases: [(&str, Encoder); 5] = [
        ("envelope", encoders::envelope),
        ("stream_line", encoders::stream_line),
        ("iframe_chunk", encoders::iframe_chunk),
        ("sse_raw", encoders::sse_raw),
        ("sse_envelope", encoders::sse_envelope),
    ];
    let mut group = c.benchmark_group("encode");
    for (name, encode) in cases {
        for (size, data) in [("small", SMALL), ("text", TEXT)] {
            group.bench_function(format!("{name}/{size}"), |b| {
                b.iter_batched(|| message(data), |m| black_box(encode(&m)), BatchSize::SmallInput)
            });
        }
    }
    let shared = message(TEXT);
    group.bench_function("sse_raw/cached", |b| b.iter(|| black_box(encoders::sse_raw(&shared))));
    group.finish();

    let events: Vec<Event> = (0..16)
        .map(|_| Event::Message(std::sync::Arc::new(message(SMALL))))
        .collect();
    c.bench_function("poll_answer/16_messages", |b| {
        b.iter(|| black_box(encoders::poll_answer(&events, "9f2c61d04ab3-42")))
    });
}

criterion_group! {
    name = benches;
    // Short runs: these exist to catch regressions, not to publish numbers.
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = encoders
}
criterion_main!(benches);
