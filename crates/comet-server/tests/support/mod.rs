//! Shared helpers for the real-socket tests: a server on 127.0.0.1:0 and bounded waits, so a
//! missing message fails fast instead of hanging.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use comet_core::MemoryBroker;
use comet_server::{AppState, Config};
use tokio::task::JoinHandle;

/// A running server; shuts down when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Cancels the shutdown token and waits (bounded) for the accept loop to finish draining.
    pub async fn shutdown(&mut self) {
        self.state.shutdown.cancel();
        if let Some(task) = self.task.take() {
            recv_timeout(Duration::from_secs(15), task)
                .await
                .expect("server task panicked")
                .expect("serve failed");
        }
    }

    /// Publishes through the HTTP API and returns the cursor.
    pub async fn publish(&self, channel: &str, data: &str) -> String {
        let res = reqwest::Client::new()
            .post(self.url(&format!("/pub/{channel}")))
            .body(data.to_owned())
            .send()
            .await
            .expect("publish request");
        assert_eq!(res.status(), 201, "publish answered {}", res.status());
        let v: serde_json::Value = res.json().await.expect("publish json");
        v["id"].as_str().expect("id").to_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
    }
}

/// Starts a server with the default config on a free loopback port.
pub async fn start_server() -> TestServer {
    start_server_with(Config::default()).await
}

/// Starts a server with `config` (its `listen` is ignored) on a free loopback port.
pub async fn start_server_with(config: Config) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let broker = Arc::new(MemoryBroker::new(config.hub_config()));
    let state = AppState::new(broker, config);
    let task = tokio::spawn(comet_server::serve(listener, state.clone()));
    TestServer {
        addr,
        state,
        task: Some(task),
    }
}

/// Awaits `fut` for at most `limit`, panicking with a clear message otherwise.
pub async fn recv_timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?}"))
}

/// Five seconds: the bound for anything that should arrive "at once".
pub const SOON: Duration = Duration::from_secs(5);

/// Reads a streaming response chunk by chunk into a text buffer, bounded in time.
pub struct BodyReader {
    pub res: reqwest::Response,
    pub buf: String,
}

impl BodyReader {
    pub fn new(res: reqwest::Response) -> Self {
        Self {
            res,
            buf: String::new(),
        }
    }

    /// Reads until `done(&buf)` holds; panics after [`SOON`] or if the body ends first.
    pub async fn until(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + SOON;
        while !done(&self.buf) {
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; got so far: {:?}", self.buf))
                .expect("body error");
            match chunk {
                Some(bytes) => self.buf.push_str(std::str::from_utf8(&bytes).expect("utf-8 body")),
                None => panic!("body ended while waiting for {what}; got: {:?}", self.buf),
            }
        }
    }

    /// Reads to the end of the body (bounded).
    pub async fn read_to_end(&mut self) {
        let deadline = tokio::time::Instant::now() + SOON;
        loop {
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk())
                .await
                .unwrap_or_else(|_| panic!("body did not end; got: {:?}", self.buf))
                .expect("body error");
            match chunk {
                Some(bytes) => self.buf.push_str(std::str::from_utf8(&bytes).expect("utf-8 body")),
                None => return,
            }
        }
    }

    /// Complete SSE events (blocks ending in a blank line) as `(id, event, data)`; comments and
    /// data-less blocks (retry / id only) are skipped.
    pub fn sse_events(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let (mut id, mut event, mut data): (String, String, Option<String>) = (String::new(), String::new(), None);
        let complete = match self.buf.rfind("\n\n") {
            Some(i) => &self.buf[..i + 2],
            None => return out,
        };
        for line in complete.split('\n') {
            if line.is_empty() {
                if let Some(d) = data.take() {
                    let ty = if event.is_empty() {
                        "message".to_owned()
                    } else {
                        event.clone()
                    };
                    out.push((id.clone(), ty, d));
                }
                event.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(": ").unwrap_or((line.trim_end_matches(':'), ""));
            match field {
                "id" => id = value.to_owned(),
                "event" => event = value.to_owned(),
                "data" => {
                    data = Some(match data.take() {
                        Some(prev) => prev + "\n" + value,
                        None => value.to_owned(),
                    })
                }
                _ => {}
            }
        }
        out
    }

    /// Complete NDJSON lines, parsed; empty (heartbeat) lines skipped.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        let complete = match self.buf.rfind('\n') {
            Some(i) => &self.buf[..i],
            None => return Vec::new(),
        };
        complete
            .split('\n')
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
            .collect()
    }

    /// The JSON arguments of every complete `<script>p(…)</script>` chunk.
    pub fn iframe_calls(&self) -> Vec<serde_json::Value> {
        self.buf
            .split("<script>p(")
            .skip(1)
            .filter_map(|s| s.split_once(")</script>"))
            .map(|(json, _)| serde_json::from_str(json).unwrap_or_else(|e| panic!("bad call {json:?}: {e}")))
            .collect()
    }
}

/// GET `url` and assert the status, returning the JSON body.
pub async fn get_json(url: &str, status: u16) -> serde_json::Value {
    let res = reqwest::get(url).await.expect("request");
    assert_eq!(res.status(), status, "GET {url}");
    res.json().await.expect("json body")
}
