//! [`Subscription`]: one transport-independent state machine over the transports' connections,
//! doing cursor tracking, de-duplication and reconnection.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Stream};
use tokio::time::Sleep;
use url::Url;

use crate::cursor::Tracker;
use crate::transport::{Conn, Frame, iframe, ndjson, poll, sse, ws};
use crate::{Client, Error, Event, Transport};

/// How long opening a streaming connection may take, up to its response head (or, for
/// WebSocket, up to the `subscribed` answers).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a short poll may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(30);
/// Margin over the long-poll hold time before a long-poll request is abandoned.
const LONGPOLL_MARGIN: Duration = Duration::from_secs(30);
/// The long-poll hold time assumed when the server picks it: the protocol's maximum.
const LONGPOLL_MAX_SECS: u32 = 120;
/// The `callback` asked of iframe documents (irrelevant here: the scripts call `p`).
const IFRAME_CALLBACK: &str = "cb";

/// Messages from one or several channels over one transport, as a [`Stream`] of
/// `Result<Event, Error>`.
///
/// - Messages come in each channel's order, and never twice: an id at or before the last one
///   delivered for its channel is dropped (after reconnects, or a server replaying an overlap).
/// - When the connection drops (or a poll fails), the subscription reconnects by itself from
///   [`Subscription::position`] following the client's [`Reconnect`](crate::Reconnect) policy;
///   when that gives up, the last error is yielded and the stream ends. Errors the server
///   declares final (HTTP 4xx, WebSocket close 1008, …) end it at once.
/// - Errors the server reports without ending the subscription (a WebSocket `error` frame, an
///   undecodable line) are yielded as `Err` items and the stream goes on.
/// - The stream ends (`None`) after a final error, or when the server closes a WebSocket
///   normally (1000).
///
/// # Cancel safety
/// [`Subscription::next`] is cancel safe: all state lives in the `Subscription`, so dropping
/// the future (e.g. in `tokio::select!`) loses nothing, and the next call resumes where it was.
/// Dropping the `Subscription` closes its connection at once.
pub struct Subscription {
    client: Client,
    channels: Vec<String>,
    transport: Transport,
    tracker: Tracker,
    /// The last cursor or position the server announced and nothing was delivered after: the
    /// exact `since` for the next request (the protocol wants the poll `cursor` echoed back).
    server_cursor: Option<String>,
    state: State,
    /// Consecutive failed connections (a drop counts as one); reset by a successful connection.
    failures: u32,
    /// Connections re-established after a drop or failure, for observers.
    reconnects: u64,
    /// Messages the server sent again (at or before a cursor already delivered), dropped here.
    duplicates: u64,
    /// SSE `retry:` (HTML Standard "reconnection time"), the backoff base when set.
    sse_retry: Option<Duration>,
    /// Set by [`Frame::Reopen`]: the connection ends by design; open the next after this.
    reopen: Option<Duration>,
}

enum State {
    Connecting(BoxFuture<'static, Result<Conn, Error>>),
    /// Boxed: a connection is large (parsers, buffers, a socket) and opened rarely.
    Open(Box<Conn>),
    Waiting(Pin<Box<Sleep>>),
    Done,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Connecting(_) => "connecting",
            State::Open(_) => "open",
            State::Waiting(_) => "waiting to reconnect",
            State::Done => "done",
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("base", &self.client.base_url().as_str())
            .field("channels", &self.channels)
            .field("transport", &self.transport)
            .field("position", &self.position())
            .field("state", &self.state.name())
            .field("reconnects", &self.reconnects)
            .finish()
    }
}

impl Subscription {
    pub(crate) async fn open(
        client: Client,
        channels: &[&str],
        transport: Transport,
        since: Option<&str>,
    ) -> Result<Self, Error> {
        let channels: Vec<String> = channels.iter().map(|c| (*c).to_owned()).collect();
        let mut sub = Subscription {
            tracker: Tracker::new(&channels, since),
            client,
            channels,
            transport,
            server_cursor: None,
            state: State::Done,
            failures: 0,
            reconnects: 0,
            duplicates: 0,
            sse_retry: None,
            reopen: None,
        };
        let conn = sub.connect(since.map(str::to_owned), true).await?;
        sub.state = State::Open(Box::new(conn));
        Ok(sub)
    }

    /// The next event, `None` once the subscription has ended.
    ///
    /// # Cancel safety
    /// Cancel safe; see [`Subscription`].
    pub async fn next(&mut self) -> Option<Result<Event, Error>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Where to resume this subscription: the last delivered cursor for a single channel, or
    /// `chan=cursor,…` for several (channels without a cursor yet are left out, so a resume
    /// starts them at the live edge); before anything is known, the `since` it was opened with.
    /// Positions the server announces (poll `cursor`, SSE `id:`, `reconnect` cursors) are
    /// merged in once everything before them has been delivered.
    pub fn position(&self) -> Option<String> {
        self.tracker.position()
    }

    /// The subscribed channels, in the order given.
    pub fn channels(&self) -> &[String] {
        &self.channels
    }

    /// The transport in use.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// How many times the connection was re-established after a drop or a failed request
    /// (not counting the routine re-requests of polling or the iframe byte budget).
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// How many messages the server sent that this subscription had delivered already (at or
    /// before a cursor it holds, in the same epoch), and dropped: 0 from a server that keeps
    /// the delivery promise (docs/protocol.md "Delivery"), for observers such as a chaos test.
    pub fn duplicates_dropped(&self) -> u64 {
        self.duplicates
    }

    /// `/sub/{channels}` with the given query.
    fn sub_url(&self, query: &[(&str, &str)]) -> Url {
        let mut url = self.client.endpoint(&["sub", &self.channels.join(",")]);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// The future of the next connection, resuming from `since`. `first` is the connection
    /// opened by `subscribe`.
    fn connect(&self, since: Option<String>, first: bool) -> BoxFuture<'static, Result<Conn, Error>> {
        let http = self.client.http.clone();
        let idle = self.client.idle_timeout;
        let mut query: Vec<(&str, &str)> = Vec::with_capacity(4);
        match self.transport {
            Transport::Poll { interval } => {
                query.push(("transport", "poll"));
                push_since(&mut query, since.as_deref());
                let url = self.sub_url(&query);
                poll::request(http, url, POLL_TIMEOUT, self.channels.clone(), interval).boxed()
            }
            // The first request is a short poll, answered at once, so `subscribe` returns
            // with the live edge fixed instead of waiting for a first message.
            Transport::LongPoll { .. } if first => {
                query.push(("transport", "poll"));
                push_since(&mut query, since.as_deref());
                let url = self.sub_url(&query);
                poll::request(http, url, POLL_TIMEOUT, self.channels.clone(), Duration::ZERO).boxed()
            }
            Transport::LongPoll { timeout_secs } => {
                let secs = timeout_secs.map(|s| s.to_string());
                query.push(("transport", "longpoll"));
                if let Some(secs) = &secs {
                    query.push(("timeout", secs));
                }
                push_since(&mut query, since.as_deref());
                let url = self.sub_url(&query);
                let hold = Duration::from_secs(timeout_secs.unwrap_or(LONGPOLL_MAX_SECS).into());
                poll::request(http, url, hold + LONGPOLL_MARGIN, self.channels.clone(), Duration::ZERO).boxed()
            }
            Transport::Stream => {
                query.push(("transport", "stream"));
                push_since(&mut query, since.as_deref());
                ndjson::connect(http, self.sub_url(&query), HEAD_TIMEOUT, idle).boxed()
            }
            Transport::Iframe => {
                query.push(("transport", "iframe"));
                query.push(("callback", IFRAME_CALLBACK));
                push_since(&mut query, since.as_deref());
                iframe::connect(http, self.sub_url(&query), HEAD_TIMEOUT).boxed()
            }
            Transport::Sse { envelope } => {
                if envelope {
                    query.push(("envelope", "1"));
                }
                // The first connection names its cursor in the URL; reconnections send
                // `Last-Event-ID` as an EventSource does.
                let last_event_id = if first {
                    push_since(&mut query, since.as_deref());
                    None
                } else {
                    since
                };
                let raw_channel = match self.channels.as_slice() {
                    [only] if !envelope => Some(only.clone()),
                    _ => None,
                };
                let url = self.sub_url(&query);
                sse::connect(http, url, last_event_id, raw_channel, HEAD_TIMEOUT, idle).boxed()
            }
            Transport::WebSocket => {
                push_since(&mut query, since.as_deref());
                let mut url = self.sub_url(&query);
                let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
                // http→ws and https→wss are always allowed by `Url::set_scheme`.
                let _ = url.set_scheme(scheme);
                ws::connect(url, self.channels.clone(), HEAD_TIMEOUT, idle).boxed()
            }
        }
    }

    /// The next connection after the current one, from the best cursor known.
    fn reconnect(&self) -> BoxFuture<'static, Result<Conn, Error>> {
        let since = self.server_cursor.clone().or_else(|| self.tracker.position());
        self.connect(since, false)
    }

    /// Handles a frame; `Some` is what to yield.
    fn on_frame(&mut self, frame: Frame) -> Option<Result<Event, Error>> {
        match frame {
            Frame::Message(env) => {
                if !self.tracker.accept(&env) {
                    self.duplicates += 1;
                    return None;
                }
                self.server_cursor = None;
                Some(Ok(Event::Message(env)))
            }
            Frame::Gap(channel) => Some(Ok(Event::Gap { channel })),
            Frame::Subscribed {
                channel,
                recovered,
                cursor,
            } => {
                if let Some(cursor) = cursor {
                    self.tracker.merge_channel(&channel, &cursor);
                }
                (!recovered).then_some(Ok(Event::Gap { channel }))
            }
            Frame::Reconnect(cursor) => {
                if let Some(cursor) = cursor {
                    self.tracker.merge(&cursor);
                    self.server_cursor = Some(cursor);
                }
                None
            }
            Frame::Cursor(cursor) => {
                self.tracker.merge(&cursor);
                self.server_cursor = Some(cursor);
                None
            }
            Frame::Retry(retry) => {
                self.sse_retry = Some(retry);
                None
            }
            Frame::Reopen(delay) => {
                self.reopen = Some(delay);
                None
            }
            Frame::Error(e) => Some(Err(e)),
        }
    }

    /// Handles a failed connection: schedules a reconnection, or ends the subscription and
    /// returns the error to yield.
    fn on_failure(&mut self, error: Error) -> Option<Error> {
        self.reopen = None;
        self.failures += 1;
        if !error.is_transient() || self.failures > self.client.reconnect.max_attempts {
            self.state = State::Done;
            return Some(error);
        }
        let delay = self.client.reconnect.delay(self.failures, self.sse_retry);
        self.state = State::Waiting(Box::pin(tokio::time::sleep(delay)));
        None
    }
}

fn push_since<'a>(query: &mut Vec<(&'a str, &'a str)>, since: Option<&'a str>) {
    if let Some(since) = since {
        query.push(("since", since));
    }
}

impl Stream for Subscription {
    type Item = Result<Event, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Waiting(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state = State::Connecting(this.reconnect());
                }
                State::Connecting(connecting) => match ready!(connecting.as_mut().poll(cx)) {
                    Ok(conn) => {
                        if this.failures > 0 {
                            this.reconnects += 1;
                        }
                        this.failures = 0;
                        this.state = State::Open(Box::new(conn));
                    }
                    Err(e) => {
                        if let Some(e) = this.on_failure(e) {
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                },
                State::Open(conn) => match ready!(conn.poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Some(item) = this.on_frame(frame) {
                            return Poll::Ready(Some(item));
                        }
                    }
                    Some(Err(e)) => {
                        if let Some(e) = this.on_failure(e) {
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                    None => match this.reopen.take() {
                        Some(delay) if delay.is_zero() => {
                            this.state = State::Connecting(this.reconnect());
                        }
                        Some(delay) => {
                            this.state = State::Waiting(Box::pin(tokio::time::sleep(delay)));
                        }
                        None => this.state = State::Done,
                    },
                },
            }
        }
    }
}
