//! Adapters: how to publish to and subscribe on a given server, as data (URL templates, request
//! headers, body templates and the framing of what comes back), so one generator drives Comet,
//! Nchan, Pushpin, or anything else described in a JSON file.
//!
//! Messages are identified in every framing by the payload [`Marker`](crate::parse::Marker)
//! (`#seq/ns#`), which the publisher puts in the body; servers pass it through untouched.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::BenchError;

/// A subscriber transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Server-Sent Events.
    Sse,
    /// WebSocket (RFC 6455).
    Websocket,
    /// HTTP streaming (chunked NDJSON or raw chunks).
    Stream,
    /// Long polling.
    Longpoll,
    /// Short polling.
    Poll,
}

impl Transport {
    /// Every transport.
    pub const ALL: [Transport; 5] = [
        Transport::Sse,
        Transport::Websocket,
        Transport::Stream,
        Transport::Longpoll,
        Transport::Poll,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sse => "sse",
            Self::Websocket => "websocket",
            Self::Stream => "stream",
            Self::Longpoll => "longpoll",
            Self::Poll => "poll",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Transport {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s || (s == "ws" && *t == Self::Websocket))
            .ok_or_else(|| BenchError::Config(format!("unknown transport {s:?}")))
    }
}

/// A text with `{ch}` (channel name), `{data}` (the payload) and `{cursor}` (a long-poll's resume
/// token, URL-safe) placeholders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Template(pub String);

impl Template {
    /// Fills in the placeholders. `cursor` replaces `{cursor}`; a `[...]` section containing
    /// `{cursor}` is dropped entirely when `cursor` is `None` (e.g. `/sub/{ch}?t=lp[&since={cursor}]`).
    pub fn render(&self, ch: &str, data: &str, cursor: Option<&str>) -> String {
        let mut text = self.0.clone();
        let mut from = 0;
        // Bounded: each turn moves `from` forward or removes a section.
        while let Some(open) = text[from..].find('[').map(|i| i + from) {
            let Some(close) = text[open..].find(']').map(|i| i + open) else {
                break;
            };
            let inner = &text[open + 1..close];
            if !inner.contains("{cursor}") {
                // An ordinary bracket (e.g. a JSON array in a body template).
                from = open + 1;
                continue;
            }
            let replacement = cursor.map_or_else(String::new, |c| inner.replace("{cursor}", c));
            text.replace_range(open..=close, &replacement);
            from = open + replacement.len();
        }
        text.replace("{ch}", ch)
            .replace("{data}", data)
            .replace("{cursor}", cursor.unwrap_or(""))
    }
}

/// How a publish request is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishSpec {
    /// Where publish requests go.
    pub addr: SocketAddr,
    /// Request path and query, e.g. `/pub/{ch}`.
    pub path: Template,
    /// Request body, e.g. `{data}`.
    pub body: Template,
    /// `Content-Type` of the body.
    pub content_type: String,
    /// Whether the server answers pipelined requests on one keep-alive connection in order
    /// (RFC 9112 §9.3.2). At a fixed rate the publisher then sends each publish when it is due
    /// without waiting for the previous answer; otherwise it waits for each answer. Defaults to
    /// `true`.
    #[serde(default = "pipelining_default")]
    pub pipelining: bool,
}

fn pipelining_default() -> bool {
    true
}

impl PublishSpec {
    /// The whole publish request (head and body) of `payload` to `channel`.
    pub fn request(&self, channel: &str, payload: &str) -> Vec<u8> {
        let path = self.path.render(channel, payload, None);
        let body = self.body.render(channel, payload, None);
        crate::net::post_request(self.addr, &path, &self.content_type, &body)
    }
}

/// How the resume point of a long poll is carried from one answer to the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resume {
    /// No resume point: every poll starts at the live edge (what arrives between polls is lost).
    None,
    /// The JSON body's `cursor` field goes into `{cursor}` (Comet).
    JsonCursor,
    /// `Last-Modified` / `Etag` go back as `If-Modified-Since` / `If-None-Match` (Nchan).
    HttpValidators,
}

/// How subscriber bytes are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// A `text/event-stream` body.
    Sse,
    /// A body of `\n`-terminated lines (NDJSON).
    Lines,
    /// Any streamed body; markers are found in the raw bytes.
    Raw,
    /// One answer per request, resumed as said.
    Polling(Resume),
    /// WebSocket text frames.
    Websocket,
}

/// How a subscriber of one transport connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeSpec {
    /// The transport.
    pub transport: Transport,
    /// Request path and query, e.g. `/sub/{ch}`.
    pub path: Template,
    /// Extra request headers.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// How the answer is framed.
    pub framing: Framing,
    /// A publish request for this transport when it differs from the adapter's default
    /// (Pushpin publishes a different format per transport).
    #[serde(default)]
    pub publish: Option<PublishSpec>,
}

/// One server's way of publishing and subscribing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adapter {
    /// Its name in reports.
    pub name: String,
    /// Where subscribers connect.
    pub addr: SocketAddr,
    /// The default publish request.
    pub publish: PublishSpec,
    /// One entry per supported transport.
    pub subscribe: Vec<SubscribeSpec>,
}

/// A subscribe spec that publishes through the adapter's own publish spec.
fn spec(transport: Transport, path: &str, headers: Vec<(String, String)>, framing: Framing) -> SubscribeSpec {
    SubscribeSpec {
        transport,
        path: Template(path.into()),
        headers,
        framing,
        publish: None,
    }
}

impl Adapter {
    /// The subscriber spec and the publish spec to use for `transport`.
    ///
    /// # Errors
    /// [`BenchError::NoTransport`] when the adapter has no such transport.
    pub fn for_transport(&self, transport: Transport) -> Result<(&SubscribeSpec, &PublishSpec), BenchError> {
        let sub = self
            .subscribe
            .iter()
            .find(|s| s.transport == transport)
            .ok_or_else(|| BenchError::NoTransport {
                adapter: self.name.clone(),
                transport: transport.to_string(),
            })?;
        Ok((sub, sub.publish.as_ref().unwrap_or(&self.publish)))
    }

    /// Comet (`comet serve`) at `addr`: `POST /pub/{ch}`, `GET /sub/{ch}` per transport.
    pub fn comet(addr: SocketAddr) -> Self {
        Self {
            name: "comet".into(),
            addr,
            publish: PublishSpec {
                addr,
                path: Template("/pub/{ch}".into()),
                body: Template("{data}".into()),
                content_type: "text/plain".into(),
                pipelining: true,
            },
            subscribe: vec![
                spec(
                    Transport::Sse,
                    "/sub/{ch}",
                    vec![("Accept".into(), "text/event-stream".into())],
                    Framing::Sse,
                ),
                spec(Transport::Websocket, "/sub/{ch}", Vec::new(), Framing::Websocket),
                spec(
                    Transport::Stream,
                    "/sub/{ch}?transport=stream",
                    Vec::new(),
                    Framing::Lines,
                ),
                spec(
                    Transport::Longpoll,
                    "/sub/{ch}?transport=longpoll[&since={cursor}]",
                    Vec::new(),
                    Framing::Polling(Resume::JsonCursor),
                ),
                spec(
                    Transport::Poll,
                    "/sub/{ch}?transport=poll[&since={cursor}]",
                    Vec::new(),
                    Framing::Polling(Resume::JsonCursor),
                ),
            ],
        }
    }

    /// Nchan (nginx module, `bench/peers/nchan.conf`) at `addr`: `POST /pub?id={ch}`, one
    /// subscriber URL `/sub?id={ch}` with the transport chosen by request headers.
    pub fn nchan(addr: SocketAddr) -> Self {
        Self {
            name: "nchan".into(),
            addr,
            publish: PublishSpec {
                addr,
                path: Template("/pub?id={ch}".into()),
                body: Template("{data}".into()),
                content_type: "text/plain".into(),
                pipelining: true,
            },
            subscribe: vec![
                spec(
                    Transport::Sse,
                    "/sub?id={ch}",
                    vec![("Accept".into(), "text/event-stream".into())],
                    Framing::Sse,
                ),
                spec(Transport::Websocket, "/sub?id={ch}", Vec::new(), Framing::Websocket),
                spec(
                    Transport::Stream,
                    "/sub?id={ch}",
                    vec![("TE".into(), "chunked".into())],
                    Framing::Raw,
                ),
                spec(
                    Transport::Longpoll,
                    "/sub?id={ch}",
                    Vec::new(),
                    Framing::Polling(Resume::HttpValidators),
                ),
            ],
        }
    }

    /// Pushpin (`bench/peers/pushpin.conf` + origin) with clients at `addr` and the HTTP control
    /// API at `control`: one publish format per transport (`http-stream`, `http-response`,
    /// `ws-message`).
    pub fn pushpin(addr: SocketAddr, control: SocketAddr) -> Self {
        let publish = |format: &str| PublishSpec {
            addr: control,
            path: Template("/publish/".into()),
            body: Template(format!(
                r#"{{"items":[{{"channel":"{{ch}}","formats":{{{format}}}}}]}}"#
            )),
            content_type: "application/json".into(),
            // Its control API closes the connection after every answer.
            pipelining: false,
        };
        let spec = |transport, path: &str, framing, format: &str| SubscribeSpec {
            transport,
            path: Template(path.into()),
            headers: Vec::new(),
            framing,
            publish: Some(publish(format)),
        };
        Self {
            name: "pushpin".into(),
            addr,
            publish: publish(r#""http-stream":{"content":"{data}\n"}"#),
            subscribe: vec![
                spec(
                    Transport::Sse,
                    "/sse?ch={ch}",
                    Framing::Sse,
                    r#""http-stream":{"content":"data: {data}\n\n"}"#,
                ),
                spec(
                    Transport::Websocket,
                    "/ws?ch={ch}",
                    Framing::Websocket,
                    r#""ws-message":{"content":"{data}"}"#,
                ),
                spec(
                    Transport::Stream,
                    "/stream?ch={ch}",
                    Framing::Lines,
                    r#""http-stream":{"content":"{data}\n"}"#,
                ),
                spec(
                    Transport::Longpoll,
                    "/lp?ch={ch}",
                    Framing::Polling(Resume::None),
                    r#""http-response":{"body":"{data}\n"}"#,
                ),
            ],
        }
    }

    /// A built-in adapter by name: `comet`, `nchan` or `pushpin` (whose control API is taken to
    /// be on port 5561 of the same host).
    ///
    /// # Errors
    /// [`BenchError::Config`] for an unknown name.
    pub fn builtin(name: &str, addr: SocketAddr) -> Result<Self, BenchError> {
        match name {
            "comet" => Ok(Self::comet(addr)),
            "nchan" => Ok(Self::nchan(addr)),
            "pushpin" => Ok(Self::pushpin(addr, SocketAddr::new(addr.ip(), 5561))),
            other => Err(BenchError::Config(format!(
                "unknown server {other:?}: use comet, nchan, pushpin or --adapter FILE.json"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_placeholders_and_optional_sections() {
        let t = Template("/sub/{ch}?transport=longpoll[&since={cursor}]".into());
        assert_eq!(t.render("a", "", None), "/sub/a?transport=longpoll");
        assert_eq!(t.render("a", "", Some("ff-3")), "/sub/a?transport=longpoll&since=ff-3");
        assert_eq!(Template("[{data}]".into()).render("c", "x", None), "[x]");
        let a = Adapter::pushpin("127.0.0.1:7999".parse().unwrap(), "127.0.0.1:5561".parse().unwrap());
        let (sub, publish) = a.for_transport(Transport::Sse).unwrap();
        assert_eq!(sub.path.render("c1", "", None), "/sse?ch=c1");
        let body = publish.body.render("c1", "#1/2#", None);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["items"][0]["channel"], "c1");
        assert_eq!(v["items"][0]["formats"]["http-stream"]["content"], "data: #1/2#\n\n");
        assert_eq!(publish.addr.port(), 5561);
    }

    #[test]
    fn adapters_are_data() {
        let a = Adapter::nchan("127.0.0.1:8090".parse().unwrap());
        let json = serde_json::to_string(&a).unwrap();
        let back: Adapter = serde_json::from_str(&json).unwrap();
        assert_eq!(a, back);
        assert!(matches!(
            back.for_transport(Transport::Poll),
            Err(BenchError::NoTransport { .. })
        ));
        assert_eq!("ws".parse::<Transport>().unwrap(), Transport::Websocket);
        assert!(Adapter::builtin("nope", "127.0.0.1:1".parse().unwrap()).is_err());
    }
}
