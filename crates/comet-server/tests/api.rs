//! The publish API, channel info, health, metrics and the demo pages; and every bad input
//! answered with a clear error while a bystander subscriber keeps receiving.

use comet_test_support as support;

use comet_server::Config;
use serde_json::{Value, json};
use support::*;

async fn post(url: String, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let res = reqwest::Client::new().post(url).body(body).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn publish_answers_201_with_the_cursor_and_channel_info_reflects_it() {
    let server = start_server().await;
    let (status, v) = post(server.url("/pub/news?event=headline"), "hello").await;
    assert_eq!(status, 201);
    assert_eq!(v["channel"], "news");
    let id = v["id"].as_str().unwrap();
    assert!(id.ends_with("-1"), "{id}");
    let info = get_json(&server.url("/channels/news"), 200).await;
    assert_eq!(
        info,
        json!({"channel": "news", "subscribers": 0, "last_id": id, "history_len": 1})
    );
    let none = get_json(&server.url("/channels/empty"), 200).await;
    assert_eq!(none["last_id"], Value::Null);
    let polled = get_json(&server.url("/sub/news?transport=poll&since=earliest"), 200).await;
    assert_eq!(polled["messages"][0]["event"], "headline");
}

#[tokio::test]
async fn batch_publishes_each_item_on_its_own() {
    let server = start_server().await;
    let body = json!([
        {"channel": "b1", "data": "one"},
        {"channel": "bad channel", "data": "x"},
        {"channel": "b2", "event": "comet.gap", "data": "x"},
        {"channel": "b1", "event": "e", "data": "two"},
        {"data": "no channel"}
    ]);
    let (status, v) = post(server.url("/pub"), body.to_string()).await;
    assert_eq!(status, 200);
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 5);
    assert!(r[0]["id"].as_str().unwrap().ends_with("-1"));
    assert_eq!(r[1]["error"]["code"], "bad_channel");
    assert_eq!(r[2]["error"]["code"], "bad_event");
    assert!(r[3]["id"].as_str().unwrap().ends_with("-2"));
    assert_eq!(r[4]["error"]["code"], "bad_body");
    let (status, v) = post(server.url("/pub"), "{not json").await;
    assert_eq!((status, v["error"]["code"].as_str().unwrap()), (400, "bad_body"));
}

#[tokio::test]
async fn bad_inputs_get_clear_errors_and_disturb_no_one() {
    let server = start_server_with(Config {
        max_message_size: 1024,
        max_channels_per_connection: 4,
        ..Config::default()
    })
    .await;
    // A bystander: an SSE subscriber that must keep receiving throughout.
    let res = reqwest::Client::new()
        .get(server.url("/sub/calm"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut bystander = BodyReader::new(res);
    bystander.until("start", |b| b.contains("\n\n")).await;

    /// (url, POST body or GET, status, error code, text the message must contain)
    type Case = (String, Option<Vec<u8>>, u16, &'static str, &'static str);
    let cases: Vec<Case> = vec![
        (
            server.url("/pub/bad%20name"),
            Some(b"x".to_vec()),
            400,
            "bad_channel",
            "invalid byte 0x20",
        ),
        (
            server.url("/pub/ok"),
            Some(vec![0xff, 0xfe]),
            400,
            "not_utf8",
            "not valid UTF-8",
        ),
        (
            server.url("/pub/ok"),
            Some(vec![b'a'; 1025]),
            413,
            "too_large",
            "at most 1024",
        ),
        (
            server.url("/pub/ok?event=bad%0Aevent"),
            Some(b"x".to_vec()),
            400,
            "bad_event",
            "invalid byte 0x0a",
        ),
        (
            server.url("/pub/ok?event=comet.gap"),
            Some(b"x".to_vec()),
            400,
            "bad_event",
            "reserved",
        ),
        (
            server.url(&format!("/pub/{}", "c".repeat(256))),
            Some(b"x".to_vec()),
            400,
            "bad_channel",
            "at most 255",
        ),
        (
            server.url("/sub/ok?transport=poll&since=nonsense"),
            None,
            400,
            "bad_cursor",
            "invalid cursor",
        ),
        (
            server.url("/sub/ok?transport=poll&since=ABC-1"),
            None,
            400,
            "bad_cursor",
            "lowercase hex",
        ),
        (
            server.url("/sub/a,b?transport=poll&since=1-1"),
            None,
            400,
            "bad_cursor",
            "several channels",
        ),
        (
            server.url("/sub/a,b,c,d,e?transport=poll"),
            None,
            400,
            "too_many_channels",
            "at most 4",
        ),
        (
            server.url("/sub/a,a?transport=poll"),
            None,
            400,
            "bad_channel",
            "listed twice",
        ),
        (
            server.url("/sub/ok?transport=smoke"),
            None,
            400,
            "bad_transport",
            "unknown transport",
        ),
        (
            server.url("/sub/ok?transport=iframe&callback=x%3Balert(1)"),
            None,
            400,
            "bad_callback",
            "invalid callback",
        ),
        (server.url("/sub/%FF?transport=poll"), None, 400, "bad_channel", ""),
        (server.url("/nowhere"), None, 404, "not_found", "no such route"),
    ];
    let client = reqwest::Client::new();
    for (url, body, status, code, text) in cases {
        let res = match body {
            Some(b) => client.post(&url).body(b).send().await.unwrap(),
            None => client.get(&url).send().await.unwrap(),
        };
        assert_eq!(res.status(), status, "{url}");
        let v: Value = res.json().await.unwrap_or_else(|e| panic!("{url}: not JSON: {e}"));
        assert_eq!(v["error"]["code"], code, "{url}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(text), "{url}: {message:?} should mention {text:?}");
    }
    let res = client
        .get(server.url("/sub/ok?transport=poll"))
        .header("last-event-id", "not-a-cursor")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    server.publish("calm", "still here").await;
    bystander
        .until("the bystander's message", |b| b.contains("data: still here\n\n"))
        .await;
    assert_eq!(
        get_json(&server.url("/channels/ok"), 200).await["last_id"],
        Value::Null,
        "nothing was published"
    );
}

#[tokio::test]
async fn health_readiness_metrics_and_demo_pages() {
    let server = start_server().await;
    assert_eq!(
        reqwest::get(server.url("/healthz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok\n"
    );
    assert_eq!(reqwest::get(server.url("/readyz")).await.unwrap().status(), 200);
    let res = reqwest::Client::new()
        .get(server.url("/sub/m"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut sse = BodyReader::new(res);
    sse.until("start", |b| b.contains("\n\n")).await;
    server.publish("m", "x").await;
    sse.until("message", |b| b.contains("data: x")).await;
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "comet_messages_published_total 1",
        "comet_messages_delivered_total 1",
        "comet_subscribers_open{transport=\"sse\"} 1",
        "comet_connections_open{transport=\"sse\"} 1",
        "comet_publish_duration_seconds_count 1",
        "comet_gaps_total 0",
        "comet_subscribers_lagged_total 0",
        "comet_tcp_connections ",
    ] {
        assert!(text.contains(needle), "metrics lack {needle:?}:\n{text}");
    }
    let page = reqwest::get(server.url("/")).await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.text().await.unwrap().contains("/demo/demo.js"));
    let js = reqwest::get(server.url("/demo/demo.js")).await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.text().await.unwrap().contains("EventSource"));
    assert_eq!(reqwest::get(server.url("/demo/demo.css")).await.unwrap().status(), 200);
}

#[tokio::test]
async fn over_max_connections_new_clients_get_a_polite_503() {
    let server = start_server_with(Config {
        max_connections: 2,
        ..Config::default()
    })
    .await;
    let client = reqwest::Client::new();
    let a = BodyReader::new(client.get(server.url("/sub/c?transport=stream")).send().await.unwrap());
    let b = BodyReader::new(client.get(server.url("/sub/c?transport=stream")).send().await.unwrap());
    let fresh = reqwest::Client::new();
    let res = fresh.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unavailable");
    drop((a, b));
    drop(client);
    // Once the two are gone the server serves again.
    let mut ok = false;
    for _ in 0..50 {
        if reqwest::Client::new()
            .get(server.url("/healthz"))
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "the server did not recover after connections closed");
}

/// `[namespace."x"] history_size / history_ttl_secs`: each namespace keeps its own history, a
/// namespace without a table follows `[namespace.""]`, one with a table but no history settings
/// keeps the global ones; and a zero is refused at start.
#[tokio::test]
async fn namespaces_keep_their_own_history() {
    let config: Config = toml::from_str(
        "history_size = 5\n\
         [namespace.\"\"]\nhistory_size = 3\n\
         [namespace.short]\nhistory_size = 2\n\
         [namespace.brief]\nhistory_ttl_secs = 1\n\
         [namespace.chat]\nclient_publish = true\n",
    )
    .unwrap();
    config.validate().unwrap();
    let server = start_server_with(config).await;
    for channel in ["short:a", "plain", "other:a", "chat:a", "brief:a"] {
        for i in 0..6 {
            server.publish(channel, &format!("m{i}")).await;
        }
    }
    let kept = |channel: &'static str| {
        let url = server.url(&format!("/sub/{channel}?transport=poll&since=earliest"));
        async move {
            let v = get_json(&url, 200).await;
            v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["data"].is_string())
                .count()
        }
    };
    assert_eq!(kept("short:a").await, 2, "its own history_size");
    assert_eq!(kept("plain").await, 3, "no namespace: the \"\" table");
    assert_eq!(kept("other:a").await, 3, "no table of its own: the \"\" table");
    assert_eq!(
        kept("chat:a").await,
        5,
        "a table without history settings: the global ones"
    );
    assert_eq!(kept("brief:a").await, 5, "young messages are kept");
    recv_timeout(SOON, async {
        while kept("brief:a").await > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(kept("chat:a").await, 5, "other namespaces keep theirs");

    for bad in ["history_size = 0", "history_ttl_secs = 0"] {
        let config: Config = toml::from_str(&format!("[namespace.x]\n{bad}\n")).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("namespace \"x\"") && err.contains("must be at least 1"),
            "{err}"
        );
    }
}

/// Idempotent publishing over HTTP (docs/protocol.md "Idempotent publishing"): a repeated
/// `Idempotency-Key` answers the first cursor with `"duplicate":true` and
/// `Idempotent-Replayed: true` and publishes nothing; batch items carry `"idempotency_key"`;
/// a bad key is a clear `400` and publishes nothing; a subscriber sees each message once.
#[tokio::test]
async fn an_idempotency_key_publishes_once_and_a_bad_one_is_refused() {
    let server = start_server().await;
    let mut sub = BodyReader::new(reqwest::get(server.url("/sub/idem?transport=stream")).await.unwrap());
    let send = |key: Option<&'static str>, body: &'static str| {
        let mut req = reqwest::Client::new().post(server.url("/pub/idem")).body(body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let replayed = res.headers().get("idempotent-replayed").is_some();
            (status, replayed, res.json::<Value>().await.unwrap())
        }
    };
    let (status, replayed, first) = send(Some("order-17"), "one").await;
    assert_eq!((status, replayed), (201, false));
    assert_eq!(first.get("duplicate"), None);
    let (status, replayed, again) = send(Some("order-17"), "one").await;
    assert_eq!((status, replayed), (201, true));
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["duplicate"], true);
    for (key, why) in [("", "1 to 128 bytes"), ("a b", "printable ASCII")] {
        let res = reqwest::Client::new()
            .post(server.url("/pub/idem"))
            .header("Idempotency-Key", key)
            .body("never")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{key:?}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["code"], "bad_idempotency_key");
        assert!(v["error"]["message"].as_str().unwrap().contains(why), "{v}");
    }
    let batch = json!([
        {"channel": "idem", "data": "two", "idempotency_key": "order-18"},
        {"channel": "idem", "data": "two", "idempotency_key": "order-18"},
        {"channel": "idem", "data": "one", "idempotency_key": "order-17"},
        {"channel": "idem", "data": "bad", "idempotency_key": ""},
    ]);
    let (status, v) = post(server.url("/pub"), batch.to_string()).await;
    assert_eq!(status, 200);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results[0].get("duplicate"), None);
    assert_eq!(
        (&results[1]["id"], &results[1]["duplicate"]),
        (&results[0]["id"], &json!(true))
    );
    assert_eq!(
        (&results[2]["id"], &results[2]["duplicate"]),
        (&first["id"], &json!(true))
    );
    assert_eq!(results[3]["error"]["code"], "bad_idempotency_key");
    let (_, _, plain) = send(None, "three").await;
    sub.until("three", |body| body.contains("\"three\"")).await;
    let data: Vec<String> = sub
        .json_lines()
        .iter()
        .filter_map(|v| v["data"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(data, ["one", "two", "three"], "each message once");
    let info = get_json(&server.url("/channels/idem"), 200).await;
    assert_eq!(info["last_id"], plain["id"]);
}
