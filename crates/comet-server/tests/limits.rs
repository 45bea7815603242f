//! Per-client limits (limits.rs) against a real server: connections and held long polls per
//! address, subscriptions and publishes per second. Each refusal is checked for its status,
//! code, `Retry-After` and metric, and that other clients (another loopback address) and other
//! kinds of request are not affected.

use comet_test_support as support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use comet_server::Config;
use comet_server::auth::Secret;
use comet_server::limits::Limit;
use futures_util::{SinkExt, StreamExt};
use support::{SOON, recv_timeout, start_server_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// A second client address: Linux routes all of 127.0.0.0/8 to loopback.
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn client_from(addr: IpAddr) -> reqwest::Client {
    reqwest::Client::builder().local_address(addr).build().expect("client")
}

/// Only the limit under test is on, so the others cannot be what refuses.
fn unlimited() -> Config {
    Config {
        max_connections_per_ip: 0,
        max_longpolls_per_ip: 0,
        subscribes_per_sec_per_ip: 0,
        publishes_per_sec: 0,
        max_connections_per_user: 0,
        max_tickets_per_user: 0,
        ..Config::default()
    }
}

/// Sends a raw GET and reads the whole answer (the server closes refused connections).
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut answer = Vec::new();
    recv_timeout(SOON, stream.read_to_end(&mut answer)).await.expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

async fn assert_429(res: reqwest::Response, code: &str) -> u64 {
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "Retry-After {retry}");
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["retry_after"], retry, "{body}");
    retry
}

#[tokio::test]
async fn connections_per_ip() {
    let server = start_server_with(Config {
        max_connections_per_ip: 3,
        ..unlimited()
    })
    .await;
    let limits = std::sync::Arc::clone(&server.state.limits);
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // Three connections, two of them held SSE streams: the address's whole allowance.
    let mut held = Vec::new();
    for _ in 0..2 {
        let res = client_from(local)
            .get(server.url("/sub/c?transport=sse"))
            .send()
            .await
            .expect("sse");
        assert_eq!(res.status(), 200);
        held.push(res);
    }
    // The third: an idle keep-alive connection.
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
    raw.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut head = [0u8; 64];
    let n = recv_timeout(SOON, raw.read(&mut head)).await.expect("read");
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );
    assert_eq!(limits.connections_of(local), 3);

    let answer = raw_get(server.addr, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{answer}");
    assert!(answer.contains("retry-after: 1\r\n"), "{answer}");
    assert!(answer.contains("\"code\":\"too_many_connections\""), "{answer}");
    assert_eq!(server.state.metrics.limit_refusals(Limit::ConnectionsPerIp), 1);

    // Another address has its own allowance, and sees the publish reach the held streams.
    let other = client_from(OTHER);
    let res = other
        .post(server.url("/pub/c"))
        .body("x")
        .send()
        .await
        .expect("publish");
    assert_eq!(res.status(), 201);
    let metrics = other
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("comet_limit_refusals_total{limit=\"max_connections_per_ip\"} 1"),
        "{metrics}"
    );
    let mut first = support::BodyReader::new(held.remove(0));
    first.until("the publish", |b| b.contains("data: x")).await;

    // Closing one gives its slot back.
    drop(raw);
    recv_timeout(SOON, async {
        while limits.connections_of(local) > 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let answer = raw_get(server.addr, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
}

#[tokio::test]
async fn subscribes_per_second() {
    let server = start_server_with(Config {
        subscribes_per_sec_per_ip: 1,
        ..unlimited()
    })
    .await;
    let client = reqwest::Client::new();
    let poll = server.url("/sub/c?transport=poll");
    // A burst of five seconds' worth passes; well before five more seconds go by, one is refused.
    for i in 0..5 {
        let res = client.get(&poll).send().await.unwrap();
        assert_eq!(res.status(), 200, "subscription {i} of the burst");
    }
    let mut refused = None;
    for _ in 0..20 {
        let res = client.get(&poll).send().await.unwrap();
        if res.status() == 429 {
            refused = Some(res);
            break;
        }
    }
    let refused = refused.expect("no subscription refused after the burst");
    assert_429(refused, "rate_limited").await;
    assert!(server.state.metrics.limit_refusals(Limit::Subscribes) >= 1);

    // A poll with a cursor continues its subscription: not charged.
    let cursor = server.publish("c", "one").await;
    for _ in 0..10 {
        let res = client
            .get(server.url(&format!("/sub/c?transport=poll&since={cursor}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    // Unless its channel is one this node does not hold (issue 16, point 2): a poll with any
    // cursor of a random channel name would otherwise create state at no charge.
    let res = client
        .get(server.url(&format!("/sub/never-published?transport=poll&since={cursor}")))
        .send()
        .await
        .unwrap();
    assert_429(res, "rate_limited").await;
    let res = client
        .get(server.url(&format!(
            "/sub/never-published-either?transport=longpoll&since={cursor}"
        )))
        .send()
        .await
        .unwrap();
    assert_429(res, "rate_limited").await;
    // Streams are charged like the rest.
    let res = client.get(server.url("/sub/c?transport=sse")).send().await.unwrap();
    assert_429(res, "rate_limited").await;
    // Another address is not.
    let res = client_from(OTHER).get(&poll).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn websocket_subscribe_commands_are_rate_limited() {
    let server = start_server_with(Config {
        subscribes_per_sec_per_ip: 1,
        ..unlimited()
    })
    .await;
    // The upgrade itself is one subscription; then commands until one is refused.
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url("/ws"))
        .await
        .expect("ws");
    let mut refusal = None;
    for i in 0..25 {
        let cmd = serde_json::json!({"type": "subscribe", "channel": format!("c{i}"), "id": format!("s{i}")});
        ws.send(Message::text(cmd.to_string())).await.unwrap();
        let reply = recv_timeout(SOON, ws.next()).await.expect("open").expect("frame");
        let reply: serde_json::Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
        if reply["type"] == "error" {
            refusal = Some((i, reply));
            break;
        }
        assert_eq!(reply["type"], "subscribed", "{reply}");
    }
    let (i, reply) = refusal.expect("no subscribe refused");
    assert!(i >= 4, "refused after {i}, inside the burst");
    assert_eq!(reply["code"], "rate_limited", "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("retry in"), "{reply}");
    // The socket stays open and keeps its subscriptions.
    server.publish("c0", "still here").await;
    let msg = recv_timeout(SOON, ws.next()).await.expect("open").expect("frame");
    assert!(msg.to_text().unwrap().contains("still here"), "{msg:?}");
}

#[tokio::test]
async fn publishes_per_second_by_address_token_and_key() {
    let server = start_server_with(Config {
        publishes_per_sec: 1,
        jwt_secret: Secret::from("a-test-secret-of-at-least-32-bytes!!"),
        publish_api_key: Secret::from("backend-key"),
        namespace: [(
            String::new(),
            comet_server::auth::NamespaceRules {
                anonymous_publish: Some(true),
                ..Default::default()
            },
        )]
        .into(),
        ..unlimited()
    })
    .await;
    let client = reqwest::Client::new();
    let publish = |c: &reqwest::Client, auth: Option<&str>| {
        let mut req = c.post(server.url("/pub/c")).body("m");
        if let Some(auth) = auth {
            req = req.bearer_auth(auth);
        }
        req.send()
    };
    for i in 0..5 {
        assert_eq!(publish(&client, None).await.unwrap().status(), 201, "publish {i}");
    }
    let mut refused = None;
    for _ in 0..20 {
        let res = publish(&client, None).await.unwrap();
        if res.status() == 429 {
            refused = Some(res);
            break;
        }
        assert_eq!(res.status(), 201);
    }
    assert_429(refused.expect("no publish refused"), "rate_limited").await;
    assert!(server.state.metrics.limit_refusals(Limit::Publishes) >= 1);

    // The back-end key is not limited; another address has its own allowance.
    for _ in 0..20 {
        assert_eq!(publish(&client, Some("backend-key")).await.unwrap().status(), 201);
    }
    assert_eq!(publish(&client_from(OTHER), None).await.unwrap().status(), 201);

    // A token holder is charged by subject, from this same exhausted address.
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "alice", "exp": 4_000_000_000u64, "comet": {"publish": ["*"]}}),
        &jsonwebtoken::EncodingKey::from_secret(b"a-test-secret-of-at-least-32-bytes!!"),
    )
    .unwrap();
    assert_eq!(publish(&client, Some(&token)).await.unwrap().status(), 201);

    // A batch: items past the allowance each say so; the answer is still 200.
    let batch: Vec<_> = (0..10)
        .map(|_| serde_json::json!({"channel": "c", "data": "b"}))
        .collect();
    let res = client_from(OTHER)
        .post(server.url("/pub"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert!(results[0]["id"].is_string(), "{body}");
    assert!(
        results.iter().any(|r| r["error"]["code"] == "rate_limited"),
        "no batch item refused: {body}"
    );

    // Over WebSocket: an error frame, the socket stays.
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url("/ws"))
        .await
        .expect("ws");
    let mut refused = false;
    for i in 0..10 {
        let cmd = serde_json::json!({"type": "publish", "channel": "c", "data": "w", "id": format!("p{i}")});
        ws.send(Message::text(cmd.to_string())).await.unwrap();
        let reply = recv_timeout(SOON, ws.next()).await.expect("open").expect("frame");
        let reply: serde_json::Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
        if reply["type"] == "error" {
            assert_eq!(reply["code"], "rate_limited", "{reply}");
            refused = true;
            break;
        }
    }
    assert!(refused, "the exhausted address published freely over WebSocket");
    ws.send(Message::text(r#"{"type":"ping","id":"after"}"#)).await.unwrap();
    let reply = recv_timeout(SOON, ws.next()).await.expect("open").expect("frame");
    assert!(reply.to_text().unwrap().contains("pong"), "{reply:?}");
}

#[tokio::test]
async fn longpolls_held_per_ip() {
    let server = start_server_with(Config {
        max_longpolls_per_ip: 2,
        ..unlimited()
    })
    .await;
    let cursor = server.publish("lp", "zero").await;
    let url = server.url(&format!("/sub/lp?transport=longpoll&timeout=30&since={cursor}"));
    let client = reqwest::Client::new();
    let waiting: Vec<_> = (0..2).map(|_| tokio::spawn(client.get(&url).send())).collect();
    // Both are held once the channel counts them.
    recv_timeout(SOON, async {
        loop {
            let info = support::get_json(&server.url("/channels/lp"), 200).await;
            if info["subscribers"] == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let res = client.get(&url).send().await.unwrap();
    assert_429(res, "too_many_longpolls").await;
    assert_eq!(server.state.metrics.limit_refusals(Limit::LongPollsPerIp), 1);
    // Polls that answer at once are not holds; another address may hold its own.
    let res = client.get(server.url("/sub/lp?transport=poll")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let other = tokio::spawn(client_from(OTHER).get(&url).send());

    server.publish("lp", "one").await;
    for w in waiting {
        let res = recv_timeout(SOON, w).await.unwrap().unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.text().await.unwrap().contains("one"));
    }
    let res = recv_timeout(SOON, other).await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    // Answered holds are given back.
    let res = client
        .get(server.url(&format!("/sub/lp?transport=longpoll&timeout=0&since={cursor}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[test]
fn limit_settings_from_the_environment() {
    let config = Config::load(
        None,
        [
            ("COMET_PUBLISHES_PER_SEC".to_owned(), "0".to_owned()),
            ("COMET_MAX_CONNECTIONS_PER_IP".to_owned(), "7".to_owned()),
        ],
    )
    .expect("config");
    assert_eq!(config.publishes_per_sec, 0);
    assert_eq!(config.max_connections_per_ip, 7);
    let err = Config::load(
        None,
        [("COMET_SUBSCRIBES_PER_SEC_PER_IP".to_owned(), "lots".to_owned())],
    )
    .unwrap_err();
    assert!(err.to_string().contains("subscribes_per_sec_per_ip"), "{err}");
}

/// A WebSocket outlives hyper's connection future (the upgrade ends it): its TCP connection
/// must stay counted until the session ends, or one address could open any number of them.
#[tokio::test]
async fn websockets_stay_counted_per_ip() {
    let server = start_server_with(Config {
        max_connections_per_ip: 2,
        ..unlimited()
    })
    .await;
    let limits = std::sync::Arc::clone(&server.state.limits);
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (first, _) = tokio_tungstenite::connect_async(server.ws_url("/ws"))
        .await
        .expect("ws 1");
    let (mut second, _) = tokio_tungstenite::connect_async(server.ws_url("/sub/c"))
        .await
        .expect("ws 2");
    let subscribed = recv_timeout(SOON, second.next()).await.unwrap().unwrap();
    assert!(subscribed.to_text().unwrap().contains("subscribed"), "{subscribed:?}");
    assert_eq!(limits.connections_of(local), 2);
    let refused = tokio_tungstenite::connect_async(server.ws_url("/ws")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 429),
        other => panic!("a third WebSocket from the address was not refused: {other:?}"),
    }
    drop(first);
    recv_timeout(SOON, async {
        while limits.connections_of(local) > 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (mut third, _) = tokio_tungstenite::connect_async(server.ws_url("/sub/c"))
        .await
        .expect("ws 3");
    let subscribed = recv_timeout(SOON, third.next()).await.unwrap().unwrap();
    assert!(subscribed.to_text().unwrap().contains("subscribed"), "{subscribed:?}");
}

const USER_SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!!";

fn user_token(sub: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": sub, "exp": 4_000_000_000u64, "comet": {"subscribe": ["*"]}}),
        &jsonwebtoken::EncodingKey::from_secret(USER_SECRET),
    )
    .unwrap()
}

/// Issue 16, point 6: one token subject holds at most `max_connections_per_user` subscriber
/// connections (2 here) wherever they come from: a third (SSE from another address, or a
/// WebSocket) is `429 too_many_connections`, polls are not counted, another subject is not
/// affected, and a place is given back when a stream ends. Tickets: at most
/// `max_tickets_per_user` (3) per `ticket_ttl_secs`, then `429 rate_limited`.
#[tokio::test]
async fn connections_and_tickets_per_user() {
    let server = start_server_with(Config {
        max_connections_per_user: 2,
        max_tickets_per_user: 3,
        jwt_secret: Secret::from(std::str::from_utf8(USER_SECRET).unwrap()),
        ..unlimited()
    })
    .await;
    let (alice, bob) = (user_token("alice"), user_token("bob"));
    let sse = |client: &reqwest::Client, token: &str| {
        client
            .get(server.url("/sub/news"))
            .header("accept", "text/event-stream")
            .bearer_auth(token)
            .send()
    };
    let client = reqwest::Client::new();
    let first = sse(&client, &alice).await.unwrap();
    let second = sse(&client_from(OTHER), &alice).await.unwrap();
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    assert_eq!(server.state.limits.connections_of_user("alice"), 2);
    assert_429(sse(&client_from(OTHER), &alice).await.unwrap(), "too_many_connections").await;
    let ws = tokio_tungstenite::connect_async(server.ws_url(&format!("/sub/news?token={alice}"))).await;
    match ws {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 429),
        other => panic!("a third connection as a WebSocket: {other:?}"),
    }
    // An anonymous upgrade that authenticates as alice by command is counted then.
    let (mut bare, _) = tokio_tungstenite::connect_async(server.ws_url("/ws"))
        .await
        .expect("a bare /ws");
    let auth = serde_json::json!({"type": "auth", "token": alice, "ref": "a"}).to_string();
    bare.send(Message::text(auth)).await.unwrap();
    let error = recv_timeout(SOON, bare.next())
        .await
        .expect("a frame")
        .expect("a frame");
    let error: serde_json::Value = serde_json::from_str(error.to_text().unwrap()).unwrap();
    assert_eq!(
        (error["code"].as_str(), error["ref"].as_str()),
        (Some("too_many_connections"), Some("a")),
        "{error}"
    );
    match recv_timeout(SOON, bare.next()).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1008, "{frame:?}"),
        other => panic!("expected a close 1008: {other:?}"),
    }
    assert!(server.state.metrics.limit_refusals(Limit::ConnectionsPerUser) >= 3);
    let poll = client
        .get(server.url("/sub/news?transport=poll"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), 200, "polls are not counted");
    assert_eq!(sse(&client, &bob).await.unwrap().status(), 200, "another subject");
    drop(first);
    let deadline = tokio::time::Instant::now() + SOON;
    while server.state.limits.connections_of_user("alice") > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ended stream's place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ws, _) = tokio_tungstenite::connect_async(server.ws_url(&format!("/sub/news?token={alice}")))
        .await
        .expect("a place again");
    assert_eq!(server.state.limits.connections_of_user("alice"), 2);
    drop((ws, second));

    let ticket = |token: &str| client.post(server.url("/tickets")).bearer_auth(token).send();
    for i in 0..3 {
        assert_eq!(ticket(&alice).await.unwrap().status(), 200, "ticket {i}");
    }
    assert_429(ticket(&alice).await.unwrap(), "rate_limited").await;
    assert!(server.state.metrics.limit_refusals(Limit::TicketsPerUser) >= 1);
    assert_eq!(ticket(&bob).await.unwrap().status(), 200, "another subject");
}
