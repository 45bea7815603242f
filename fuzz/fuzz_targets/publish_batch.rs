//! `POST /pub` (the JSON batch) through the real router of an in-memory server with small limits:
//! it never panics and never answers outside the protocol. A body that is not a JSON array is
//! `400 bad_body` (or `413` past `max_batch_body`); an array gets one result per item, in order,
//! and an item is published only if it is within every limit (a valid channel and event name,
//! data within `max_message_size`, no unknown field). Well-formed batches of arbitrary items get
//! exactly the result the protocol says for each.

#![no_main]

use std::cell::RefCell;
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use axum::Router;
use axum::body::Body;
use comet_core::{ChannelName, Cursor, EventName, MemoryBroker};
use comet_server::{AppState, Config, app};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Small limits, so that the fuzzer reaches them.
const MAX_MESSAGE: usize = 16;
const MAX_BODY: usize = 4096;

/// The error codes of docs/protocol.md "Errors" a batch item may get.
const ITEM_CODES: &[&str] = &["bad_body", "bad_channel", "bad_event", "too_large", "not_utf8"];

/// Requests served by one server before it is replaced by a fresh one, which bounds the memory
/// its channels take.
const REQUESTS_PER_SERVER: usize = 10_000;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    static SERVER: RefCell<(Option<Router>, usize)> = const { RefCell::new((None, 0)) };
}

/// An in-memory server with small limits and no rate limit.
fn server() -> Router {
    let config = Config {
        max_message_size: MAX_MESSAGE,
        max_batch_body: MAX_BODY,
        publishes_per_sec: 0,
        history_size: 1,
        ..Config::default()
    };
    let broker = Arc::new(MemoryBroker::new(config.hub_config()));
    app(AppState::new(broker, config))
}

/// Posts `body` to `/pub`: (status, JSON body or `Null`).
fn post(body: Vec<u8>) -> (u16, Value) {
    let router = SERVER.with_borrow_mut(|(router, served)| {
        *served += 1;
        if *served > REQUESTS_PER_SERVER {
            *router = None;
            *served = 1;
        }
        router.get_or_insert_with(server).clone()
    });
    RUNTIME.with(|rt| {
        rt.block_on(async move {
            let request = http::Request::post("/pub")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            let response = router.oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
        })
    })
}

fn is_channel(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|s| ChannelName::new(s).is_ok())
}

fn is_event(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(v) => v.as_str().is_some_and(|s| EventName::new(s).is_ok()),
    }
}

/// Checks one result against its item: a success only for an item within every limit.
fn check_result(item: &Value, result: &Value) {
    if let Some(error) = result.get("error") {
        let code = error["code"].as_str().expect("an error has a code");
        assert!(ITEM_CODES.contains(&code), "code {code:?} for {item}");
        assert!(error["message"].is_string());
        return;
    }
    let object = item.as_object().expect("published a non-object");
    assert!(
        object
            .keys()
            .all(|k| ["channel", "event", "data"].contains(&k.as_str())),
        "{item}"
    );
    assert!(is_channel(object.get("channel")), "published {item}");
    assert!(is_event(object.get("event")), "published {item}");
    let data = object
        .get("data")
        .and_then(Value::as_str)
        .expect("published without data");
    assert!(data.len() <= MAX_MESSAGE, "published {} bytes", data.len());
    assert_eq!(result["channel"], object["channel"]);
    let id = result["id"].as_str().expect("a result has an id");
    Cursor::parse(id).expect("the id is a cursor");
}

/// One item of a well-formed batch.
#[derive(Debug, Arbitrary)]
struct Item {
    channel: String,
    event: Option<String>,
    data: String,
}

impl Item {
    /// The error code the protocol gives this item, in the order publishing checks, or `None`.
    fn expected_error(&self) -> Option<&'static str> {
        if ChannelName::new(&self.channel).is_err() {
            Some("bad_channel")
        } else if self.event.as_deref().is_some_and(|e| EventName::new(e).is_err()) {
            Some("bad_event")
        } else if self.data.len() > MAX_MESSAGE {
            Some("too_large")
        } else {
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // 1. Arbitrary bytes as the body.
    let (status, answer) = post(data.to_vec());
    match serde_json::from_slice::<Vec<Value>>(data) {
        _ if data.len() > MAX_BODY => assert_eq!(status, 413, "{answer}"),
        Ok(items) => {
            assert_eq!(status, 200, "{answer}");
            let results = answer["results"].as_array().expect("results");
            assert_eq!(results.len(), items.len());
            for (item, result) in items.iter().zip(results) {
                check_result(item, result);
            }
        }
        Err(_) => {
            assert_eq!(status, 400, "{answer}");
            assert_eq!(answer["error"]["code"], "bad_body");
        }
    }

    // 2. A well-formed batch of arbitrary items: exactly the protocol's result for each.
    let Ok(items) = Vec::<Item>::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let body: Vec<Value> = items
        .iter()
        .map(|i| json!({"channel": i.channel, "event": i.event, "data": i.data}))
        .collect();
    let body = serde_json::to_vec(&body).unwrap();
    if body.len() > MAX_BODY {
        return;
    }
    let (status, answer) = post(body);
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), items.len());
    for (item, result) in items.iter().zip(results) {
        match item.expected_error() {
            Some(code) => assert_eq!(result["error"]["code"], code, "{item:?}: {result}"),
            None => {
                assert_eq!(result["channel"], item.channel.as_str(), "{item:?}: {result}");
                Cursor::parse(result["id"].as_str().unwrap()).expect("the id is a cursor");
            }
        }
    }
});
