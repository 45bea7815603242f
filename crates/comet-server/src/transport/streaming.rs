//! The toolkit of the streaming transports (stream, iframe, SSE): a [`Framer`] turns events
//! into bytes, and [`streaming_body`] is the response body that writes them, sends heartbeats
//! when idle, and ends itself on shutdown or when the caller's credential expires. Also the
//! coalescing of small pieces into one write, which poll answers use too ([`pieces_body`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use comet_core::{Event, SubscriptionSet};
use http::HeaderValue;
use http_body::Frame;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::ordered::Ordered;
use crate::io::gate::ReadGate;
use crate::io::orders::Order;
use crate::kind::Kind;
use crate::metrics::SubscriberGuard;
use crate::state::AppState;

/// How a streaming transport turns events into bytes.
pub(crate) trait Framer: Send + Unpin + 'static {
    /// Appends the bytes for `events` (read from `set`, whose position is already past them).
    fn frame(&mut self, events: &[Event], set: &SubscriptionSet, out: &mut Vec<Bytes>);
    /// The bytes of one heartbeat.
    fn heartbeat(&self) -> Bytes;
    /// The last bytes when the server shuts down (e.g. a reconnect hint), if any.
    fn closing(&mut self, set: &SubscriptionSet) -> Option<Bytes>;
    /// Whether the response should end now (the iframe's byte budget); `closing` is sent first.
    fn exhausted(&self) -> bool {
        false
    }

    /// The bytes of a server notice (docs/protocol.md "Server API"): `name` (`disconnect`,
    /// `unsubscribed`) with the JSON object `fields` (SSE: `event: comet.<name>`; the others an
    /// object with `"type": name` and the fields).
    fn notice(&mut self, name: &'static str, fields: &serde_json::Value) -> Bytes;
}

/// Pieces up to this size are copied together, so a batch of small messages goes out in one
/// write...
const JOIN_PIECE: usize = 16 * 1024;
/// ...into buffers of at most this size. A larger piece (a large message's shared encoding) is
/// written by reference: a subscriber that does not read holds a reference to it, not a copy.
const JOIN_MAX: usize = 64 * 1024;

/// Moves `chunks` to the back of `out`: runs of small pieces joined into one buffer of at most
/// [`JOIN_MAX`] bytes (a run of one passes through untouched), larger pieces as they are.
/// Empty pieces are dropped.
pub(crate) fn coalesce(chunks: &mut Vec<Bytes>, out: &mut VecDeque<Bytes>) {
    fn flush(run: &[Bytes], len: usize, out: &mut VecDeque<Bytes>) {
        match run {
            _ if len == 0 => {}
            [one] => out.push_back(one.clone()),
            _ => {
                let mut buf = BytesMut::with_capacity(len);
                for piece in run {
                    buf.extend_from_slice(piece);
                }
                out.push_back(buf.freeze());
            }
        }
    }
    let (mut start, mut len) = (0, 0);
    for i in 0..chunks.len() {
        let n = chunks[i].len();
        if n > JOIN_PIECE || len + n > JOIN_MAX {
            flush(&chunks[start..i], len, out);
            (start, len) = (i, 0);
            if n > JOIN_PIECE {
                out.push_back(chunks[i].clone());
                start = i + 1;
                continue;
            }
        }
        len += n;
    }
    flush(&chunks[start..], len, out);
    chunks.clear();
}

/// A response body of `pieces` (see [`coalesce`]), each written by reference, with its exact
/// length: a poll answer of large messages holds references to their shared envelopes while
/// the client reads, not a copy per request.
pub(crate) fn pieces_body(mut chunks: Vec<Bytes>) -> Body {
    let mut pieces = VecDeque::new();
    coalesce(&mut chunks, &mut pieces);
    match pieces.len() {
        0 => Body::empty(),
        1 => Body::from(pieces.pop_front().unwrap_or_default()),
        _ => {
            let remaining = pieces.iter().map(|p| p.len() as u64).sum();
            Body::new(Pieces { pieces, remaining })
        }
    }
}

/// The body of [`pieces_body`].
struct Pieces {
    pieces: VecDeque<Bytes>,
    remaining: u64,
}

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let piece = self.pieces.pop_front();
        if let Some(piece) = &piece {
            self.remaining -= piece.len() as u64;
        }
        Poll::Ready(piece.map(|piece| Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// The body of a stream: implements `http_body::Body` itself, so a chunk is one poll of this
/// struct (no stream adapters, no future made per chunk).
struct Streaming<F> {
    /// Written before anything else (the SSE retry line, the iframe's prelude).
    first: Option<Bytes>,
    set: SubscriptionSet,
    framer: F,
    state: AppState,
    events: Vec<Event>,
    chunks: Vec<Bytes>,
    /// Framed and coalesced, not yet handed to the connection: at most one batch (`max_batch`
    /// messages, `max_batch_bytes` of data), mostly references to shared encodings.
    pending: VecDeque<Bytes>,
    heartbeat: tokio::time::Interval,
    /// Whether anything was written since the last heartbeat tick: then the tick sends nothing.
    /// (Cheaper than resetting the timer on every write, which showed in profiles at 10,000
    /// subscribers.) A heartbeat therefore goes out after one to two idle periods.
    wrote: bool,
    /// Shutdown or `disconnect_all`, waited for once for the whole response. Every subscriber
    /// shares the token, and a fresh wait per chunk took its two locks (its state, its waiter
    /// list) twice for every message: 13 % of an SSE delivery's instructions (bench/RESULTS.md).
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    /// `heartbeat` and `cancelled` are polled only after one of them woke the task (gate.rs):
    /// the task wakes for every message, and they almost never have anything.
    rare: ReadGate,
    /// The server API's orders to the caller's connections (boxed: anonymous callers have none).
    orders: Option<Box<Ordered>>,
    /// When the caller's credential expires (`exp` plus `jwt_leeway_secs`), if it does: the
    /// body then ends between two chunks, and the client reconnects, needing a valid credential
    /// (an `EventSource` given a non-200 answer then stops reconnecting: HTML Standard §9.2.3).
    expires: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
    _guard: SubscriberGuard,
}

/// A response body that writes `first`, then every event of `set` through `framer`, heartbeats
/// when idle, and ends itself on shutdown (with `framer.closing`), when `framer` is exhausted
/// (the same), or at `expires` (the caller's credential expired; nothing more is written).
/// Dropping the body (the client went away) unsubscribes.
pub(crate) fn streaming_body<F: Framer>(
    state: &AppState,
    kind: Kind,
    set: SubscriptionSet,
    framer: F,
    first: Option<Bytes>,
    expires: Option<tokio::time::Instant>,
    user: Option<&str>,
) -> Body {
    let period = state.config.heartbeat();
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let streaming = Streaming {
        first: first.filter(|b| !b.is_empty()),
        set,
        framer,
        state: state.clone(),
        events: Vec::new(),
        chunks: Vec::new(),
        pending: VecDeque::new(),
        heartbeat,
        wrote: false,
        cancelled: Box::pin(state.connection_token().cancelled_owned()),
        rare: ReadGate::new(),
        orders: Ordered::register(state, user),
        expires: expires.map(|at| Box::pin(tokio::time::sleep_until(at))),
        done: false,
        _guard: state.metrics.subscriber(kind),
    };
    Body::new(streaming)
}

/// Which of the seldom-ready branches of [`Streaming::poll_chunk`] fired.
enum StreamWake {
    Cancelled,
    Expired,
    Heartbeat,
    Ordered(Vec<Order>),
}

impl<F: Framer> Streaming<F> {
    /// The next chunk: `first`, then what the subscriptions have (framed and coalesced, one
    /// piece at a time), a heartbeat when idle, or the framer's closing bytes on shutdown;
    /// `None` when done.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        if let Some(piece) = self.pending.pop_front() {
            return Poll::Ready(Some(piece));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let max = self.state.config.max_batch;
        loop {
            // The seldom-ready branches first, as a biased `select!` would.
            let (cancelled, expires, heartbeat) = (&mut self.cancelled, &mut self.expires, &mut self.heartbeat);
            let orders = &mut self.orders;
            let rare = self.rare.poll(cx, |cx| {
                if cancelled.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(StreamWake::Cancelled);
                }
                if let Some(orders) = orders
                    && let Poll::Ready(taken) = orders.poll_orders(cx)
                {
                    return Poll::Ready(StreamWake::Ordered(taken));
                }
                if expires.as_mut().is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready()) {
                    return Poll::Ready(StreamWake::Expired);
                }
                heartbeat.poll_tick(cx).map(|_| StreamWake::Heartbeat)
            });
            match rare {
                Poll::Ready(StreamWake::Cancelled) => {
                    self.done = true;
                    return Poll::Ready(self.framer.closing(&self.set));
                }
                Poll::Ready(StreamWake::Expired) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(StreamWake::Heartbeat) => {
                    if !std::mem::take(&mut self.wrote) {
                        return Poll::Ready(Some(self.framer.heartbeat()));
                    }
                    continue;
                }
                Poll::Ready(StreamWake::Ordered(taken)) => {
                    self.obey(taken);
                    coalesce(&mut self.chunks, &mut self.pending);
                    if let Some(piece) = self.pending.pop_front() {
                        self.wrote = true;
                        return Poll::Ready(Some(piece));
                    }
                    if self.done {
                        return Poll::Ready(None);
                    }
                    continue;
                }
                Poll::Pending => {}
            }
            if self.set.poll_recv(cx, &mut self.events, max).is_pending() {
                return Poll::Pending;
            }
            self.framer.frame(&self.events, &self.set, &mut self.chunks);
            self.events.clear();
            if self.framer.exhausted() {
                self.done = true;
                self.chunks.extend(self.framer.closing(&self.set));
            }
            coalesce(&mut self.chunks, &mut self.pending);
            if let Some(piece) = self.pending.pop_front() {
                self.wrote = true;
                return Poll::Ready(Some(piece));
            }
        }
    }
}

impl<F: Framer> Streaming<F> {
    /// Carries out the server API's orders: a disconnect ends the response after its notice;
    /// an unsubscribe of one of its channels too, after an `unsubscribed` notice (the response's
    /// presence entries go with it; the client reconnects without the channel, resuming the
    /// others by cursor).
    fn obey(&mut self, orders: Vec<Order>) {
        for order in orders {
            let (name, fields) = match order {
                Order::Disconnect { reconnect } => ("disconnect", serde_json::json!({"reconnect": reconnect})),
                Order::Unsubscribe(channel) if self.set.contains(&channel) => {
                    ("unsubscribed", serde_json::json!({"channel": channel.as_str()}))
                }
                Order::Unsubscribe(_) => continue,
            };
            self.chunks.push(self.framer.notice(name, &fields));
            self.done = true;
            return;
        }
    }
}

impl<F: Framer> http_body::Body for Streaming<F> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .poll_chunk(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// Builds a streaming response with `content_type` and no caching or proxy buffering. Its
/// header map has room for the CORS fields too, so that no field added later grows it (S5 in
/// bench/RESULTS.md: every allocation counts in a connect storm).
pub(crate) fn streaming_response(content_type: &'static str, body: Body) -> Response {
    let mut headers = http::HeaderMap::with_capacity(8);
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    headers.insert(
        http::HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    let mut response = Response::new(body);
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use comet_core::{ChannelName, MemoryBroker, Publish, Since};
    use http_body_util::BodyExt;

    use super::*;
    use crate::config::Config;

    /// Frames a message as its data; a heartbeat is a newline; shutdown says `bye`.
    struct Data;

    impl Framer for Data {
        fn frame(&mut self, events: &[Event], _set: &SubscriptionSet, out: &mut Vec<Bytes>) {
            for event in events {
                if let Event::Message(msg) = event {
                    out.push(msg.data_bytes().clone());
                }
            }
        }

        fn heartbeat(&self) -> Bytes {
            Bytes::from_static(b"\n")
        }

        fn notice(&mut self, name: &'static str, _fields: &serde_json::Value) -> Bytes {
            Bytes::from(name)
        }

        fn closing(&mut self, _set: &SubscriptionSet) -> Option<Bytes> {
            Some(Bytes::from_static(b"bye"))
        }
    }

    async fn body(state: &AppState, valid_for: Option<Duration>) -> Body {
        let expires = valid_for.map(|left| tokio::time::Instant::now() + left);
        let mut set = SubscriptionSet::new();
        let channel = ChannelName::new("a").unwrap();
        set.insert(state.broker.subscribe(channel, Since::Live).await.unwrap());
        streaming_body(
            state,
            Kind::Stream,
            set,
            Data,
            Some(Bytes::from_static(b"first")),
            expires,
            None,
        )
    }

    async fn next(body: &mut Body) -> Option<Bytes> {
        body.frame().await.map(|frame| frame.unwrap().into_data().unwrap())
    }

    async fn publish(state: &AppState, data: &'static str) {
        let msg = Publish {
            channel: ChannelName::new("a").unwrap(),
            event: None,
            data: Bytes::from_static(data.as_bytes()),
        };
        state.broker.publish(msg).await.unwrap();
    }

    fn state() -> AppState {
        let config = Config::default(); // heartbeat_secs = 15
        AppState::new(Arc::new(MemoryBroker::new(config.hub_config())), config)
    }

    /// In paused time: the first bytes at once, a heartbeat after 15 idle seconds, none in a
    /// period that wrote a message, and the end (no closing bytes) at the credential's expiry.
    #[tokio::test(start_paused = true)]
    async fn a_stream_beats_when_idle_and_ends_when_its_credential_expires() {
        let state = state();
        let started = tokio::time::Instant::now();
        let mut body = body(&state, Some(Duration::from_secs(40))).await;
        assert_eq!(next(&mut body).await.unwrap(), "first");
        assert_eq!(next(&mut body).await.unwrap(), "\n");
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        publish(&state, "m1").await;
        assert_eq!(next(&mut body).await.unwrap(), "m1");
        // The tick at 30 s finds a write since the last one; the next would be at 45 s.
        assert_eq!(next(&mut body).await, None, "ended at the expiry");
        assert_eq!(started.elapsed(), Duration::from_secs(40));
    }

    /// Shutdown (or `disconnect_all`) ends the stream with the framer's closing bytes; a
    /// credential that does not expire never ends it.
    #[tokio::test(start_paused = true)]
    async fn a_stream_ends_with_its_closing_bytes_on_disconnect() {
        let state = state();
        let mut body = body(&state, None).await;
        assert_eq!(next(&mut body).await.unwrap(), "first");
        for _ in 0..3 {
            assert_eq!(next(&mut body).await.unwrap(), "\n");
        }
        state.disconnect_all();
        assert_eq!(next(&mut body).await.unwrap(), "bye");
        assert_eq!(next(&mut body).await, None);
    }

    /// Small pieces are joined (up to JOIN_MAX a buffer); a large one passes by reference.
    #[test]
    fn coalesce_joins_small_pieces_and_passes_large_ones_by_reference() {
        let large = Bytes::from(vec![b'L'; JOIN_PIECE + 1]);
        let mut chunks = vec![
            Bytes::from_static(b"ab"),
            Bytes::from_static(b""),
            Bytes::from_static(b"cd"),
            large.clone(),
            Bytes::from_static(b"ef"),
        ];
        let mut out = VecDeque::new();
        coalesce(&mut chunks, &mut out);
        assert!(chunks.is_empty());
        let out: Vec<Bytes> = out.into();
        assert_eq!(out.len(), 3);
        assert_eq!(&out[0][..], b"abcd");
        assert_eq!(out[1].as_ptr(), large.as_ptr(), "the large piece is not copied");
        assert_eq!(&out[2][..], b"ef");

        let mut chunks: Vec<Bytes> = (0..9).map(|_| Bytes::from(vec![b's'; JOIN_PIECE])).collect();
        let mut out = VecDeque::new();
        coalesce(&mut chunks, &mut out);
        let lens: Vec<usize> = out.iter().map(Bytes::len).collect();
        assert_eq!(
            lens,
            [JOIN_MAX, JOIN_MAX, JOIN_PIECE],
            "joined buffers stop at JOIN_MAX"
        );
    }
}
