//! Several comet nodes on one real `redis-server` (started here on a free port, stopped by PID):
//! fan-out across nodes on every transport, moving between nodes, Redis and node failures.

mod support;

use std::time::{Duration, Instant};

use comet_client::{Event, Transport};
use comet_core::HubConfig;
use comet_redis::{RedisBroker, RedisConfig};
use serde_json::Value;
use support::{Node, Redis, SOON, next_event, next_message};

fn all_transports() -> Vec<Transport> {
    ["poll", "longpoll", "stream", "iframe", "sse", "ws"]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_one_node_reaches_the_others_on_every_transport_in_order() {
    let redis = Redis::start(false);
    let nodes = [
        Node::start(&redis).await,
        Node::start(&redis).await,
        Node::start(&redis).await,
    ];
    let mut subs = Vec::new();
    for (i, transport) in all_transports().into_iter().enumerate() {
        for node in &nodes[1..] {
            let sub = node
                .client()
                .subscribe(&["fan"], transport, None)
                .await
                .expect("subscribe");
            subs.push((format!("{transport:?} on node {i}"), sub));
        }
    }
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(nodes[0].publish("fan", &format!("m{i}")).await);
    }
    for (name, sub) in &mut subs {
        for (i, id) in ids.iter().enumerate() {
            let env = next_message(sub).await;
            assert_eq!(
                (env.data.as_str(), env.id.as_str()),
                (format!("m{i}").as_str(), id.as_str()),
                "{name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_moves_between_nodes_with_its_cursor_and_misses_nothing() {
    let redis = Redis::start(false);
    let (a, b) = (Node::start(&redis).await, Node::start(&redis).await);
    let mut sub = a
        .client()
        .subscribe(&["move"], Transport::Sse { envelope: true }, None)
        .await
        .unwrap();
    a.publish("move", "1").await;
    b.publish("move", "2").await;
    assert_eq!(next_message(&mut sub).await.data, "1");
    assert_eq!(next_message(&mut sub).await.data, "2");
    let position = sub.position().unwrap();
    drop(sub);
    for i in 3..=5 {
        a.publish("move", &i.to_string()).await;
    }
    for transport in all_transports() {
        let mut sub = b
            .client()
            .subscribe(&["move"], transport, Some(&position))
            .await
            .unwrap();
        for i in 3..=5 {
            assert_eq!(next_message(&mut sub).await.data, i.to_string(), "{transport:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_with_its_data_loses_nothing_acknowledged() {
    let mut redis = Redis::start(true);
    let (a, b) = (Node::start(&redis).await, Node::start(&redis).await);
    let mut stream = b.client().subscribe(&["crash"], Transport::Stream, None).await.unwrap();
    let mut ws = b
        .client()
        .subscribe(&["crash"], Transport::WebSocket, None)
        .await
        .unwrap();
    for i in 1..=3 {
        a.publish("crash", &i.to_string()).await;
    }
    redis.kill();
    // While Redis is down: publishes fail clearly, readiness fails, subscribers stay connected.
    let res = reqwest::Client::new()
        .post(format!("{}/pub/crash", a.url()))
        .body("lost?")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unavailable");
    assert_eq!(a.status("/readyz").await.0, 503);
    assert_eq!(a.status("/healthz").await.0, 200);
    redis.restart();
    let deadline = Instant::now() + SOON;
    while a.status("/readyz").await.0 != 200 || b.status("/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "nodes did not become ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 4..=6 {
        // The first publishes after the restart may race the node's reconnection; retry 503s.
        let mut tries = 0;
        loop {
            match a.client().publish("crash", &i.to_string(), None).await {
                Ok(_) => break,
                Err(e) if e.code() == Some("unavailable") && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("publish {i}: {e}"),
            }
        }
    }
    for (name, sub) in [("stream", &mut stream), ("ws", &mut ws)] {
        let mut got = Vec::new();
        while got.len() < 6 {
            match next_event(sub).await {
                Event::Message(env) => got.push(env.data),
                other => panic!("{name}: unexpected {other:?} after {got:?}"),
            }
        }
        assert_eq!(got, ["1", "2", "3", "4", "5", "6"], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_gives_gap_notices_never_silent_loss() {
    let mut redis = Redis::start(false);
    let (a, b) = (Node::start(&redis).await, Node::start(&redis).await);
    let mut sse = b
        .client()
        .subscribe(&["amnesia"], Transport::Sse { envelope: true }, None)
        .await
        .unwrap();
    let old = a.publish("amnesia", "before").await;
    assert_eq!(next_message(&mut sse).await.data, "before");
    redis.restart();
    let deadline = Instant::now() + SOON;
    let after = loop {
        match a.client().publish("amnesia", "after", None).await {
            Ok(p) => break p.id,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("publish after restart: {e}"),
        }
    };
    assert_ne!(after.split('-').next(), old.split('-').next(), "a new epoch");
    match next_event(&mut sse).await {
        Event::Gap { channel } => assert_eq!(channel, "amnesia"),
        other => panic!("expected a gap notice first, got {other:?}"),
    }
    assert_eq!(next_message(&mut sse).await.data, "after");
    let (status, polled) = b.status(&format!("/sub/amnesia?transport=poll&since={old}")).await;
    assert_eq!(status, 200);
    assert_eq!(polled["gap"], true);
    assert_eq!(polled["messages"][0]["data"], "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_is_survived_by_resuming_on_another() {
    let redis = Redis::start(false);
    let (a, b, c) = (
        Node::start(&redis).await,
        Node::start(&redis).await,
        Node::start(&redis).await,
    );
    let mut sub = a.client().subscribe(&["node"], Transport::Stream, None).await.unwrap();
    c.publish("node", "1").await;
    assert_eq!(next_message(&mut sub).await.data, "1");
    let position = sub.position().unwrap();
    a.state.shutdown.cancel();
    drop(sub);
    c.publish("node", "2").await;
    c.publish("node", "3").await;
    let mut sub = b
        .client()
        .subscribe(&["node"], Transport::Stream, Some(&position))
        .await
        .unwrap();
    assert_eq!(next_message(&mut sub).await.data, "2");
    assert_eq!(next_message(&mut sub).await.data, "3");
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_across_nodes_get_every_message_once_in_order() {
    const SUBSCRIBERS: usize = 1000;
    const MESSAGES: usize = 20;
    let redis = Redis::start(false);
    let nodes = [
        Node::start(&redis).await,
        Node::start(&redis).await,
        Node::start(&redis).await,
    ];
    let mut subs = Vec::with_capacity(SUBSCRIBERS);
    for i in 0..SUBSCRIBERS {
        let node = &nodes[i % nodes.len()];
        subs.push(
            node.client()
                .subscribe(&["crowd"], Transport::Stream, None)
                .await
                .expect("subscribe"),
        );
    }
    for i in 0..MESSAGES {
        nodes[i % nodes.len()].publish("crowd", &i.to_string()).await;
    }
    let expected: Vec<String> = (0..MESSAGES).map(|i| i.to_string()).collect();
    let mut tasks = Vec::new();
    for mut sub in subs {
        let expected = expected.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::with_capacity(MESSAGES);
            while got.len() < MESSAGES {
                got.push(next_message(&mut sub).await.data);
            }
            assert_eq!(got, expected);
        }));
    }
    for t in tasks {
        t.await.expect("a subscriber saw a gap, a duplicate or a reordering");
    }
    let info: Value = nodes[0].status("/channels/crowd").await.1;
    assert_eq!(info["last_id"].as_str().unwrap().rsplit('-').next(), Some("20"));
}

#[tokio::test]
async fn unreachable_redis_at_start_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = RedisBroker::connect(RedisConfig::new(
        format!("redis://127.0.0.1:{port}"),
        HubConfig::default(),
    ))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("broker unavailable: redis"), "{err}");
}

/// `/tickets` behind a load balancer: a ticket issued by one node is good on another (kept in
/// Redis), and still only once, on any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_from_one_node_is_good_once_on_any_node() {
    let redis = Redis::start(false);
    let config = || comet_server::Config {
        publish_api_key: "backend-key".into(),
        ..support::node_config()
    };
    let (a, b) = (
        Node::start_at(&redis.url(), config()).await,
        Node::start_at(&redis.url(), config()).await,
    );
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{}/tickets", a.url()))
        .bearer_auth("backend-key")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ticket: Value = res.json().await.unwrap();
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    let publish = |node: &Node, ticket: &str| {
        http.post(format!("{}/pub/tickets?ticket={ticket}", node.url()))
            .body("with a ticket")
            .send()
    };
    let anonymous = http
        .post(format!("{}/pub/tickets", b.url()))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "the ticket is what lets the publish in");
    assert_eq!(
        publish(&b, &ticket).await.unwrap().status(),
        201,
        "issued by A, used on B"
    );
    for node in [&a, &b] {
        let again = publish(node, &ticket).await.unwrap();
        assert_eq!(again.status(), 401, "a used ticket is used up on every node");
        let v: Value = again.json().await.unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("ticket"), "{v}");
    }
    assert_eq!(publish(&a, "not-a-ticket").await.unwrap().status(), 401);
}
