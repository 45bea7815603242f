//! Occupancy webhooks (docs/protocol.md "Webhooks") against a real HTTP receiver on 127.0.0.1:
//! one event per transition, in order, signed with HMAC-SHA256, retried with the same `id` when
//! the receiver fails.

use std::collections::BTreeMap;
use std::time::Duration;

use comet_server::Config;
use comet_server::auth::NamespaceRules;
use comet_test_support::jwt::{SECRET, hs256};
use comet_test_support::ws;
use comet_test_support::{BodyReader, SOON, TestServer, WebhookReceiver, recv_timeout, start_server_with, unlimited};
use serde_json::{Value, json};

const HOOK_SECRET: &str = "webhook-test-secret";

fn config(url: &str) -> Config {
    Config {
        jwt_secret: SECRET.into(),
        webhook_url: url.to_owned(),
        webhook_secret: HOOK_SECRET.into(),
        namespace: BTreeMap::from([(
            "room".to_owned(),
            NamespaceRules {
                anonymous_subscribe: Some(true),
                presence: Some(true),
                ..NamespaceRules::default()
            },
        )]),
        ..unlimited()
    }
}

fn token(sub: &str) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    hs256(SECRET, &json!({"sub": sub, "exp": exp, "comet": {"subscribe": ["*"]}}))
}

async fn sse(server: &TestServer, bearer: &str) -> BodyReader {
    let res = reqwest::Client::new()
        .get(server.url("/sub/room:1?transport=sse"))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut reader = BodyReader::new(res);
    reader.until("the retry field", |b| b.contains("retry:")).await;
    reader
}

async fn wait_members(server: &TestServer, n: usize) {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let v: Value = reqwest::get(server.url("/channels/room:1/presence"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["clients"].as_array().unwrap().len() == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {n} members: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn one_signed_event_per_transition_in_order() {
    let got = WebhookReceiver::start(0).await;
    let server = start_server_with(config(&got.url)).await;
    let alice_sse = sse(&server, &token("alice")).await;
    let alice_ws = {
        let mut socket = ws::connect(&server.ws_url(&format!("/ws?token={}", token("alice")))).await;
        ws::send_json(&mut socket, &json!({"type": "subscribe", "channel": "room:1"})).await;
        ws::until(&mut socket, "subscribed", |f| f["type"] == "subscribed").await;
        socket
    };
    let bob = sse(&server, &token("bob")).await;
    wait_members(&server, 3).await;
    assert_eq!(
        got.wait_events(3).await,
        [
            "channel_occupied room:1 -",
            "member_added room:1 alice",
            "member_added room:1 bob"
        ],
        "alice's second connection adds no member"
    );
    drop(alice_sse);
    wait_members(&server, 2).await;
    drop(alice_ws);
    wait_members(&server, 1).await;
    drop(bob);
    let all = got.wait_events(6).await;
    assert_eq!(
        all[3..],
        [
            "member_removed room:1 alice",
            "member_removed room:1 bob",
            "channel_vacated room:1 -"
        ]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(got.events().len(), 6, "nothing more: {:?}", got.events());

    got.assert_signed(HOOK_SECRET);
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("comet_webhook_events_total 6"), "{metrics}");
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_post_again_until_it_answers() {
    let got = WebhookReceiver::start(2).await;
    let server = start_server_with(config(&got.url)).await;
    let carol = sse(&server, &token("carol")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.posts().len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no third attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let posts = got.posts();
    assert_eq!(posts[0], posts[1], "a retry is the same POST, same id and signature");
    assert_eq!(posts[1], posts[2]);
    let metrics = recv_timeout(SOON, reqwest::get(server.url("/metrics")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("comet_webhook_failures_total 2"), "{metrics}");
    assert!(metrics.contains("comet_webhook_deliveries_total 1"), "{metrics}");
    drop(carol);
}

#[test]
fn webhooks_need_an_http_url_and_a_secret() {
    let load = |url: &str, secret: &str| {
        let env = [
            ("COMET_WEBHOOK_URL".to_owned(), url.to_owned()),
            ("COMET_WEBHOOK_SECRET".to_owned(), secret.to_owned()),
        ];
        Config::load(None, env).map(drop).map_err(|e| e.to_string())
    };
    assert!(
        load("https://hooks.example/comet", "s")
            .unwrap_err()
            .contains("must be an http:// URL")
    );
    assert!(
        load("http://127.0.0.1:9/hook", "")
            .unwrap_err()
            .contains("webhook_secret must be set")
    );
    assert!(load("http://127.0.0.1:9/hook", "s").is_ok());
}
