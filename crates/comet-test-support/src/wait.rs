//! Bounded waits, so a missing message fails fast instead of hanging, and readers of streaming
//! bodies (SSE events, NDJSON lines, iframe calls) and JSON answers.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

/// Awaits `fut` for at most `limit`, panicking with a clear message otherwise.
pub async fn recv_timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?}"))
}

/// Five seconds: the bound for anything that should arrive "at once".
pub const SOON: Duration = Duration::from_secs(5);

/// Reads a streaming response chunk by chunk into a text buffer, bounded in time.
#[derive(Debug)]
pub struct BodyReader {
    /// The response being read.
    pub res: reqwest::Response,
    /// What arrived so far.
    pub buf: String,
}

impl BodyReader {
    /// A reader of `res`'s body.
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

/// The status and JSON error body of an answer, checked against `status` and `code`; returns the
/// message.
pub async fn expect_error(res: reqwest::Response, status: u16, code: &str, what: &str) -> String {
    assert_eq!(res.status(), status, "{what}");
    let body = res.text().await.expect("body");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body:?}"));
    assert_eq!(v["error"]["code"], code, "{what}: {v}");
    v["error"]["message"].as_str().expect("message").to_owned()
}
