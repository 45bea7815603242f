//! Presence (docs/protocol.md "Presence") as the tests read it: listings, join and leave
//! notices, and subscribers that are members, on a server at `addr` (one node or any node of
//! several).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::ws::{self, Ws};
use crate::{BodyReader, SOON, recv_timeout};

/// `GET /channels/{channel}/presence` on `addr`, which must answer 200.
pub async fn presence(addr: SocketAddr, channel: &str) -> Value {
    let res = recv_timeout(SOON, reqwest::get(format!("http://{addr}/channels/{channel}/presence")))
        .await
        .expect("presence request");
    assert_eq!(res.status(), 200, "presence of {channel}");
    res.json().await.expect("presence JSON")
}

/// `(user, transport)` of each entry of a listing, sorted.
pub fn who(presence: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = presence["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .map(|c| {
            (
                c["user"].as_str().unwrap().to_owned(),
                c["transport"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Waits (bounded by [`SOON`]) until `channel`'s presence on `addr` has `n` entries; returns
/// the listing.
pub async fn wait_entries(addr: SocketAddr, channel: &str, n: usize) -> Value {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let now = presence(addr, channel).await;
        if now["clients"].as_array().map(Vec::len) == Some(n) {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{channel} never had {n} entries: {now}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The join and leave objects (`{"type":"join"|"leave",…}`) among `values`, as
/// `(type, user)`.
pub fn notices(values: &[Value]) -> Vec<(String, String)> {
    values
        .iter()
        .filter(|v| v["type"] == "join" || v["type"] == "leave")
        .map(|v| {
            (
                v["type"].as_str().unwrap().to_owned(),
                v["user"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A streaming subscriber of `path` on `addr` (with a bearer token, if given), read until its
/// first bytes.
pub async fn stream(addr: SocketAddr, path: &str, bearer: Option<&str>) -> BodyReader {
    let mut req = reqwest::Client::new().get(format!("http://{addr}{path}"));
    if let Some(bearer) = bearer {
        req = req.bearer_auth(bearer);
    }
    let res = recv_timeout(SOON, req.send()).await.expect("subscribe");
    assert_eq!(res.status(), 200, "{path}");
    let mut reader = BodyReader::new(res);
    reader.until("the first bytes", |buf| !buf.is_empty()).await;
    reader
}

/// A WebSocket to `path` on `addr`, subscribed to `channel` by command.
pub async fn ws_subscribed(addr: SocketAddr, path: &str, channel: &str) -> Ws {
    let mut socket = ws::connect(&format!("ws://{addr}{path}")).await;
    ws::send_json(&mut socket, &json!({"type": "subscribe", "channel": channel})).await;
    let frame = ws::until(&mut socket, "subscribed", |f| f["type"] == "subscribed").await;
    assert_eq!(frame["channel"], channel);
    socket
}
