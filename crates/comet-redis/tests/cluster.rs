//! Comet nodes on a real Redis Cluster (`redis+cluster://`, three masters with a replica each,
//! started here with `redis-cli --cluster create` on free ports, stopped by PID): channels spread
//! over the shards, notifications by sharded pub/sub, every transport across nodes, a cursor
//! carried between nodes, the channel listing over every master, and a master killed (its
//! replica takes over: honest gap notices, then every new message).

mod support;

use std::time::{Duration, Instant};

use comet_chaos::procs::RedisCluster;
use comet_client::{Event, Transport};
use serde_json::Value;
use support::{Node, SOON, next_event, next_message, node_config};

/// One cluster at a time: six servers each, on ports found free a moment before (two at once
/// could take each other's), and two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn all_transports() -> Vec<Transport> {
    ["poll", "longpoll", "stream", "iframe", "sse", "ws"]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect()
}

/// Channel names whose slots belong to every master (so every shard carries some).
fn spread(cluster: &RedisCluster, prefix: &str) -> Vec<String> {
    let mut masters = std::collections::BTreeMap::new();
    for i in 0..200 {
        let name = format!("{prefix}{i}");
        let master = cluster.master_of(&format!("comet:{{{name}}}:m")).expect("a master");
        masters.entry(master).or_insert(name);
        if masters.len() == 3 {
            break;
        }
    }
    assert_eq!(masters.len(), 3, "channels on every master");
    masters.into_values().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_one_node_reaches_the_others_on_every_transport_over_every_shard() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::start(3, 1);
    let url = cluster.url();
    let nodes = [
        Node::start_at(&url, node_config()).await,
        Node::start_at(&url, node_config()).await,
        Node::start_at(&url, node_config()).await,
    ];
    let channels = spread(&cluster, "fan");
    let mut subs = Vec::new();
    for transport in all_transports() {
        for (n, node) in nodes[1..].iter().enumerate() {
            for channel in &channels {
                let sub = node
                    .client()
                    .subscribe(&[channel.as_str()], transport, None)
                    .await
                    .expect("subscribe");
                subs.push((
                    format!("{transport:?} on node {} to {channel}", n + 1),
                    channel.clone(),
                    sub,
                ));
            }
        }
    }
    let mut ids = std::collections::HashMap::new();
    for channel in &channels {
        for i in 0..3 {
            let id = nodes[0].publish(channel, &format!("{channel} m{i}")).await;
            ids.entry(channel.clone()).or_insert_with(Vec::new).push(id);
        }
    }
    for (name, channel, sub) in &mut subs {
        for (i, id) in ids[channel.as_str()].iter().enumerate() {
            let env = next_message(sub).await;
            assert_eq!(
                (env.data.as_str(), env.id.as_str()),
                (format!("{channel} m{i}").as_str(), id.as_str()),
                "{name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_moves_between_nodes_with_its_cursor_and_misses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::start(3, 1);
    let url = cluster.url();
    let (a, b) = (
        Node::start_at(&url, node_config()).await,
        Node::start_at(&url, node_config()).await,
    );
    for channel in spread(&cluster, "move") {
        let mut sub = a
            .client()
            .subscribe(&[channel.as_str()], Transport::Sse { envelope: true }, None)
            .await
            .unwrap();
        a.publish(&channel, "1").await;
        b.publish(&channel, "2").await;
        assert_eq!(next_message(&mut sub).await.data, "1");
        assert_eq!(next_message(&mut sub).await.data, "2");
        let position = sub.position().unwrap();
        drop(sub);
        for i in 3..=5 {
            a.publish(&channel, &i.to_string()).await;
        }
        for transport in all_transports() {
            let mut sub = b
                .client()
                .subscribe(&[channel.as_str()], transport, Some(&position))
                .await
                .unwrap();
            for i in 3..=5 {
                assert_eq!(
                    next_message(&mut sub).await.data,
                    i.to_string(),
                    "{transport:?} on {channel}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_of_every_shard_are_listed() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::start(3, 1);
    let url = cluster.url();
    let key = "cluster-test-admin-key-0123456789";
    let config = || comet_server::Config {
        admin_api_key: key.into(),
        ..node_config()
    };
    let (a, b) = (
        Node::start_at(&url, config()).await,
        Node::start_at(&url, config()).await,
    );
    let channels = spread(&cluster, "listed");
    let mut subs = Vec::new();
    for (i, channel) in channels.iter().enumerate() {
        let node = if i % 2 == 0 { &a } else { &b };
        subs.push(
            node.client()
                .subscribe(&[channel.as_str()], Transport::Sse { envelope: true }, None)
                .await
                .unwrap(),
        );
    }
    // Each node writes its counts every second.
    let deadline = Instant::now() + SOON;
    loop {
        let listed: Value = reqwest::Client::new()
            .get(format!("{}/channels?prefix=listed", a.url()))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let names: Vec<&str> = listed["channels"]
            .as_array()
            .map(|l| l.iter().filter_map(|c| c["channel"].as_str()).collect())
            .unwrap_or_default();
        if channels.iter().all(|c| names.contains(&c.as_str())) {
            break;
        }
        assert!(Instant::now() < deadline, "not every shard's channel listed: {listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(subs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_is_replaced_by_its_replica_with_honest_gaps_and_nothing_lost_after() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = RedisCluster::start(3, 1);
    let url = cluster.url();
    let (a, b) = (
        Node::start_at(&url, node_config()).await,
        Node::start_at(&url, node_config()).await,
    );
    let channel = "failover";
    let mut sse = b
        .client()
        .subscribe(&[channel], Transport::Sse { envelope: true }, None)
        .await
        .unwrap();
    let mut ws = a
        .client()
        .subscribe(&[channel], "ws".parse().unwrap(), None)
        .await
        .unwrap();
    let before = a.publish(channel, "before").await;
    assert_eq!(next_message(&mut sse).await.data, "before");
    assert_eq!(next_message(&mut ws).await.data, "before");
    let old = cluster
        .master_of(&format!("comet:{{{channel}}}:m"))
        .expect("its master");
    cluster.servers[old].kill();
    let new = cluster.wait_failover(&format!("comet:{{{channel}}}:m"), old, Duration::from_secs(30));
    assert_ne!(new, old);
    let after = a.publish_retrying(channel, "after the failover").await;
    assert_ne!(
        after.split('-').next(),
        before.split('-').next(),
        "a new life of the shard is a new epoch: {after} after {before}"
    );
    for (name, sub) in [("sse", &mut sse), ("ws", &mut ws)] {
        match next_event(sub).await {
            Event::Gap { channel: c } => assert_eq!(c, channel, "{name}"),
            other => panic!("{name}: expected a gap notice, got {other:?}"),
        }
        assert_eq!(next_message(sub).await.data, "after the failover", "{name}");
    }
    for i in 0..3 {
        b.publish_retrying(channel, &format!("n{i}")).await;
        assert_eq!(next_message(&mut sse).await.data, format!("n{i}"));
        assert_eq!(next_message(&mut ws).await.data, format!("n{i}"));
    }
    // The other shards never stopped.
    for other in spread(&cluster, "untouched") {
        a.publish_retrying(&other, "fine").await;
    }
}

#[tokio::test]
async fn a_bad_cluster_url_is_a_clear_error() {
    for url in [
        "redis+cluster://",
        "redis+cluster://127.0.0.1",
        "redis+cluster://127.0.0.1:x",
    ] {
        let err = comet_redis::RedisBroker::connect(comet_redis::RedisConfig::new(url, Default::default()))
            .await
            .expect_err(url);
        assert!(err.to_string().contains("invalid broker URL"), "{url}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_crosses_nodes_by_sharded_notices() {
    use comet_server::auth::NamespaceRules;
    use comet_test_support::jwt::{SECRET, claims, hs256};
    use comet_test_support::presence::{stream, wait_entries, who, ws_subscribed};
    use comet_test_support::ws;

    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::start(3, 1);
    let config = || comet_server::Config {
        jwt_secret: SECRET.into(),
        presence_ttl_secs: 3,
        namespace: std::collections::BTreeMap::from([(
            "room".to_owned(),
            NamespaceRules {
                anonymous_subscribe: Some(true),
                presence: Some(true),
                join_leave: Some(true),
                ..NamespaceRules::default()
            },
        )]),
        ..node_config()
    };
    let (a, b) = (
        Node::start_at(&cluster.url(), config()).await,
        Node::start_at(&cluster.url(), config()).await,
    );
    for channel in spread(&cluster, "room:") {
        let mut watcher = ws_subscribed(b.addr, "/ws", &channel).await;
        let carol = stream(
            a.addr,
            &format!("/sub/{channel}?transport=sse"),
            Some(&hs256(SECRET, &claims("carol", 600, &["*"], &[]))),
        )
        .await;
        let join = ws::until(&mut watcher, "carol's join", |f| {
            f["type"] == "join" && f["user"] == "carol"
        })
        .await;
        assert_eq!(join["channel"], channel.as_str());
        let listed = wait_entries(b.addr, &channel, 2).await;
        assert!(
            who(&listed).iter().any(|(user, _)| user == "carol"),
            "{channel}: carol is not listed from the other node: {listed}"
        );
        drop(carol);
        ws::until(&mut watcher, "carol's leave", |f| {
            f["type"] == "leave" && f["user"] == "carol"
        })
        .await;
    }
}
