//! Redis high availability: nodes on `redis+sentinel://…` follow the master that a real
//! `redis-sentinel` quorum names. A failover to a replica that lacks the last writes turns them
//! into honest gap notices; everything published after it is delivered.

mod support;

use std::time::{Duration, Instant};

use comet_client::{Event, Transport};
use support::proxy::FaultProxy;
use support::{Node, Persistence, Redis, SOON, Sentinels, next_event, next_message, node_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_lagging_replica_is_followed_with_honest_gaps() {
    // Every write fsynced on the master: a restart of it would lose nothing, a failover still
    // can (replication is asynchronous).
    let mut master = Redis::with(Persistence::AofAlways);
    // The replica reaches its master through a proxy, so its replication can be made to lag.
    let link = FaultProxy::start(master.addr()).await;
    let replica = Redis::replica_of(link.addr);
    let deadline = Instant::now() + SOON;
    while !replica
        .cli(&["INFO", "replication"])
        .is_some_and(|info| info.contains("master_link_status:up"))
    {
        assert!(Instant::now() < deadline, "the replica never synced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sentinels = Sentinels::start(3, &master);
    // The sentinels learn of the replica from the master's INFO.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sentinels.knows_replica(replica.port) {
        assert!(Instant::now() < deadline, "the sentinels never saw the replica");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (a, b) = (
        Node::start_at(&sentinels.url(), node_config()).await,
        Node::start_at(&sentinels.url(), node_config()).await,
    );
    let mut sse = b
        .client()
        .subscribe(&["ha"], Transport::Sse { envelope: true }, None)
        .await
        .unwrap();
    a.publish("ha", "replicated").await;
    assert_eq!(next_message(&mut sse).await.data, "replicated");
    let synced = master.cli(&["WAIT", "1", "2000"]).unwrap_or_default();
    assert_eq!(synced.trim(), "1", "the replica has the first message");
    link.blackhole_existing(); // the replica stops hearing from its master
    let lost = a.publish("ha", "lost in the failover").await;
    assert_eq!(next_message(&mut sse).await.data, "lost in the failover");
    master.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sentinels.master_port() != Some(replica.port) {
        assert!(Instant::now() < deadline, "the sentinels never failed over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = a.publish_retrying("ha", "after the failover").await;
    assert_ne!(
        after.split('-').next(),
        lost.split('-').next(),
        "a new epoch: {after} after {lost}"
    );
    match next_event(&mut sse).await {
        Event::Gap { channel } => assert_eq!(channel, "ha"),
        other => panic!("expected a gap notice, got {other:?}"),
    }
    assert_eq!(next_message(&mut sse).await.data, "after the failover");
    let (_, polled) = b.status(&format!("/sub/ha?transport=poll&since={lost}")).await;
    assert_eq!(polled["gap"], true, "{polled}");
    assert_eq!(polled["messages"][0]["data"], "after the failover", "{polled}");
    b.wait_ready(200, SOON).await;
    for i in 0..3 {
        b.publish_retrying("ha", &format!("n{i}")).await;
        assert_eq!(next_message(&mut sse).await.data, format!("n{i}"));
    }
}

/// A URL that is not `redis+sentinel://HOST:PORT[,…]/MASTER_NAME` is a clear error at start.
#[tokio::test]
async fn a_bad_sentinel_url_is_a_clear_error() {
    for (url, why) in [
        ("redis+sentinel://127.0.0.1:1", "MASTER_NAME"),
        ("redis+sentinel://127.0.0.1:1/", "master's name is missing"),
        ("redis+sentinel://127.0.0.1/m", "HOST:PORT"),
        ("redis+sentinel://127.0.0.1:x/m", "port must be a number"),
    ] {
        let err = comet_redis::RedisBroker::connect(comet_redis::RedisConfig::new(url, Default::default()))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{url}: {err}");
    }
}
