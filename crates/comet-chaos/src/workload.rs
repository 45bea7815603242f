//! Publishers that retry with idempotency keys, and subscribers on every transport that move
//! between nodes with their position; both write what happened for the checker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use comet_client::{Client, Event, Reconnect, Transport};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::check::{Ack, Entry, Log};

/// The six transports, as the client names them; a short poll asks five times a second.
pub fn transports() -> [Transport; 6] {
    [
        Transport::Poll {
            interval: Duration::from_millis(200),
        },
        Transport::LongPoll { timeout_secs: None },
        Transport::Stream,
        Transport::Iframe,
        Transport::Sse { envelope: true },
        Transport::WebSocket,
    ]
}

/// What every task of a scenario shares.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set to stop the publishers (subscribers have their own flag: they read on).
    pub stop_publishing: AtomicBool,
    /// Set to stop the subscribers.
    pub stop_subscribing: AtomicBool,
    /// Acknowledged messages by channel.
    pub acks: Mutex<HashMap<String, Vec<Ack>>>,
    /// Publishes given up on with no acknowledgement (their outcome is unknown).
    pub unacknowledged: AtomicU64,
    /// Publishes refused with an error that retrying cannot help (a bug, reported).
    pub refused: Mutex<Vec<String>>,
}

fn client(url: &str) -> Client {
    Client::new(url)
        .expect("a node URL")
        .with_reconnect(Reconnect {
            max_attempts: 0,
            ..Reconnect::default()
        })
        .with_idle_timeout(Some(Duration::from_secs(20)))
}

/// Publishes to `channels` through random nodes, one message per `interval`, each with its own
/// idempotency key, retrying a failure (through any node) for up to 20 s.
pub async fn publisher(
    id: usize,
    seed: u64,
    urls: Vec<String>,
    channels: Vec<String>,
    interval: Duration,
    shared: Arc<Shared>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let clients: Vec<Client> = urls.iter().map(|u| client(u)).collect();
    let mut seq = 0u64;
    while !shared.stop_publishing.load(Ordering::Relaxed) {
        seq += 1;
        let channel = &channels[rng.random_range(0..channels.len())];
        let data = format!("p{id}-{seq}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let node = &clients[rng.random_range(0..clients.len())];
            let attempt = tokio::time::timeout(
                Duration::from_secs(8),
                node.publish_once(channel, &data, None, Some(&data)),
            )
            .await;
            match attempt {
                Ok(Ok(published)) => {
                    let ack = Ack {
                        data: data.clone(),
                        cursor: published.id,
                        at: Instant::now(),
                    };
                    shared
                        .acks
                        .lock()
                        .unwrap()
                        .entry(channel.clone())
                        .or_default()
                        .push(ack);
                    break;
                }
                Ok(Err(e)) if !e.is_transient() => {
                    shared.refused.lock().unwrap().push(format!("{data} on {channel}: {e}"));
                    break;
                }
                _ if Instant::now() >= deadline => {
                    shared.unacknowledged.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Follows `channels` over `transport` from the start of history (`earliest`), on a random
/// node, moving to another node every 2–6 s (or when its connection fails) with its position.
pub async fn subscriber(
    seed: u64,
    urls: Vec<String>,
    channels: Vec<String>,
    transport: Transport,
    shared: Arc<Shared>,
    log: Arc<Mutex<Log>>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let names: Vec<&str> = channels.iter().map(String::as_str).collect();
    let mut position = "earliest".to_owned();
    while !shared.stop_subscribing.load(Ordering::Relaxed) {
        let url = &urls[rng.random_range(0..urls.len())];
        let node = client(url);
        let opened = tokio::time::timeout(
            Duration::from_secs(5),
            node.subscribe(&names, transport, Some(&position)),
        )
        .await;
        let Ok(Ok(mut sub)) = opened else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if std::env::var_os("COMET_CHAOS_DUMP").is_some() {
            let note = format!("connect {url} since {position}");
            log.lock()
                .unwrap()
                .entries
                .push((Instant::now(), Entry::Gap { channel: note }));
        }
        let moves_at = tokio::time::Instant::now() + Duration::from_millis(rng.random_range(2_000..6_000));
        loop {
            if shared.stop_subscribing.load(Ordering::Relaxed) {
                break;
            }
            let next = tokio::time::timeout_at(
                moves_at.min(tokio::time::Instant::now() + Duration::from_millis(500)),
                sub.next(),
            );
            match next.await {
                Err(_) if tokio::time::Instant::now() >= moves_at => break,
                Err(_) => {}
                Ok(Some(Ok(Event::Message(env)))) => log.lock().unwrap().entries.push((
                    Instant::now(),
                    Entry::Message {
                        channel: env.channel,
                        data: env.data,
                        cursor: env.id,
                    },
                )),
                Ok(Some(Ok(Event::Gap { channel }))) => {
                    log.lock()
                        .unwrap()
                        .entries
                        .push((Instant::now(), Entry::Gap { channel }));
                }
                Ok(Some(Ok(_))) => {} // a kind of event this checker does not know
                Ok(Some(Err(_)) | None) => break,
            }
        }
        if let Some(p) = sub.position() {
            position = p;
        }
        log.lock().unwrap().duplicates_dropped += sub.duplicates_dropped();
    }
}

/// Whether every subscriber has the newest acknowledged message of each of its channels.
pub fn caught_up(shared: &Shared, logs: &[Arc<Mutex<Log>>]) -> bool {
    let acks = shared.acks.lock().unwrap();
    logs.iter().all(|log| {
        let log = log.lock().unwrap();
        log.channels.iter().all(|channel| {
            let Some(last) = acks.get(channel).and_then(|a| a.iter().max_by_key(|a| a.at)) else {
                return true;
            };
            log.entries
                .iter()
                .any(|(_, e)| matches!(e, Entry::Message { data, .. } if *data == last.data))
        })
    })
}
