//! The six transports (DESIGN §4), one file each: an encoder (pure, unit-tested) and a handler.
//! This module holds what they share: choosing the transport, parsing channels and cursors,
//! opening the subscription, and the streaming body that ends itself on shutdown.

pub(crate) mod envelope;
pub mod iframe;
pub mod long_poll;
pub mod poll;
pub mod sse;
pub mod stream;
pub mod websocket;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use comet_core::{ChannelName, Event, Position, Since, SubscriptionSet};
use http::HeaderMap;
use http_body::Frame;
use serde::Deserialize;

use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::auth::Identity;
use crate::error::ApiError;
use crate::gate::ReadGate;
use crate::metrics::SubscriberGuard;
use crate::state::AppState;

/// A push transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Short polling: answers at once.
    Poll,
    /// Long polling: holds the request until a message or a timeout.
    LongPoll,
    /// HTTP streaming: chunked NDJSON.
    Stream,
    /// Hidden-iframe (htmlfile) streaming.
    Iframe,
    /// Server-Sent Events.
    Sse,
    /// WebSocket (RFC 6455).
    WebSocket,
}

impl Kind {
    /// Every transport.
    pub const ALL: [Kind; 6] = [
        Kind::Poll,
        Kind::LongPoll,
        Kind::Stream,
        Kind::Iframe,
        Kind::Sse,
        Kind::WebSocket,
    ];

    /// The name used in `?transport=` and in metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Poll => "poll",
            Kind::LongPoll => "longpoll",
            Kind::Stream => "stream",
            Kind::Iframe => "iframe",
            Kind::Sse => "sse",
            Kind::WebSocket => "ws",
        }
    }

    fn parse(name: &str) -> Result<Self, ApiError> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name || (name == "websocket" && *k == Kind::WebSocket))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "bad_transport",
                    format!("unknown transport {name:?}; use one of poll, longpoll, stream, iframe, sse, ws"),
                )
            })
    }
}

/// The query string of `GET /sub/{channels}`. Unknown parameters (cache busters) are ignored.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SubQuery {
    pub(crate) transport: Option<String>,
    pub(crate) since: Option<String>,
    pub(crate) last_event_id: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) callback: Option<String>,
    pub(crate) envelope: Option<String>,
    pub(crate) prelude: Option<String>,
}

impl SubQuery {
    fn flag(value: Option<&String>) -> bool {
        matches!(value.map(String::as_str), Some("1" | "true" | "yes"))
    }
}

/// What every subscribe handler starts from.
#[derive(Debug)]
pub(crate) struct SubRequest {
    pub(crate) channels: Vec<ChannelName>,
    pub(crate) since: Vec<Since>,
    pub(crate) query: SubQuery,
    /// The client's address, for the per-IP limits (`None` if the accept loop gave none).
    pub(crate) client: Option<std::net::IpAddr>,
    /// How long the caller's credential stays valid (`None`: it does not expire). A long poll
    /// is held no longer.
    pub(crate) valid_for: Option<Duration>,
}

/// Splits and validates `a,b,c`: at least one, at most `max`, no repeats.
pub(crate) fn parse_channels(list: &str, max: usize) -> Result<Vec<ChannelName>, ApiError> {
    let count = list.split(',').count();
    if count > max {
        return Err(ApiError::bad_request(
            "too_many_channels",
            format!("{count} channels in one subscription; at most {max} are allowed"),
        ));
    }
    let mut channels: Vec<ChannelName> = Vec::with_capacity(count);
    let mut seen = std::collections::HashSet::with_capacity(count);
    for name in list.split(',') {
        let name = ChannelName::new(name)?;
        if !seen.insert(name.clone()) {
            return Err(ApiError::bad_request(
                "bad_channel",
                format!("channel {name} is listed twice"),
            ));
        }
        channels.push(name);
    }
    Ok(channels)
}

/// The client's resume point: `Last-Event-ID` (what a reconnecting EventSource sends, so it wins),
/// then `?last_event_id=`, then `?since=`.
fn cursor_text<'a>(headers: &'a HeaderMap, query: &'a SubQuery) -> Result<Option<&'a str>, ApiError> {
    if let Some(value) = headers.get("last-event-id") {
        let text = value
            .to_str()
            .map_err(|_| ApiError::bad_request("bad_cursor", "Last-Event-ID is not visible ASCII"))?;
        if !text.is_empty() {
            return Ok(Some(text));
        }
    }
    Ok(query.last_event_id.as_deref().or(query.since.as_deref()))
}

/// Opens one subscription per channel of `req`.
///
/// # Errors
/// The broker's error (e.g. `503` when its store is down).
pub(crate) async fn open(state: &AppState, req: &SubRequest) -> Result<SubscriptionSet, ApiError> {
    let mut set = SubscriptionSet::new();
    for (channel, since) in req.channels.iter().zip(&req.since) {
        set.insert(state.broker.subscribe(channel.clone(), *since).await?);
    }
    Ok(set)
}

/// The resume text of a set: the plain cursor for one channel, the position for several.
pub(crate) fn position_text(set: &SubscriptionSet) -> String {
    match set.members() {
        [one] => one.cursor().to_string(),
        _ => set.position().to_string(),
    }
}

/// When dropped (after the poll's subscriptions), tells the broker to forget those of
/// `channels` that hold nothing ([`comet_core::Broker::forget_if_unused`]): polls of channel
/// names nobody publishes to leave no state (issue 16, point 2).
pub(crate) struct ForgetUnused<'a>(pub(crate) &'a AppState, pub(crate) &'a [ChannelName]);

impl Drop for ForgetUnused<'_> {
    fn drop(&mut self) {
        for channel in self.1 {
            self.0.broker.forget_if_unused(channel);
        }
    }
}

/// `GET /sub/{channels}`: picks the transport and hands over.
pub(crate) async fn subscribe(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<SubQuery>, QueryRejection>,
    identity: Identity,
    req: Request,
) -> Response {
    let result = (|| {
        let Path(list) = path.map_err(|e| ApiError::bad_request("bad_channel", e.body_text()))?;
        let Query(query) = query.map_err(|e| ApiError::bad_request("bad_request", e.body_text()))?;
        let channels = parse_channels(&list, state.config.max_channels_per_connection)?;
        identity.authorize_all(&state.config, &channels, false)?;
        // Over HTTP/2 a WebSocket opens with an extended CONNECT (RFC 8441 §4; websocket.rs checks it).
        let kind = if req.method() == http::Method::CONNECT {
            Kind::WebSocket
        } else {
            choose(req.headers(), &query)?
        };
        let cursor = cursor_text(req.headers(), &query)?;
        let since = Position::resolve_at_most(cursor, &channels, state.config.max_channels_per_connection)?;
        let client = crate::limits::client_ip(req.extensions());
        // A poll with a cursor continues a subscription; anything else starts one, and so
        // does a poll of a channel this node does not hold (it may create state for it).
        if cursor.is_none()
            || !matches!(kind, Kind::Poll | Kind::LongPoll)
            || channels.iter().any(|c| !state.broker.holds(c))
        {
            state.limits.subscribe(client)?;
        }
        // A connection that stays open counts for its token's subject (a poll does not).
        let user_hold = if kind == Kind::Poll {
            None
        } else {
            state.limits.user_connection(&identity)?
        };
        let sub = SubRequest {
            channels,
            since,
            query,
            client,
            valid_for: identity.remaining(),
        };
        Ok::<_, ApiError>((kind, sub, user_hold))
    })();
    let (kind, sub, user_hold) = match result {
        Ok(ok) => ok,
        Err(e) => return e.into_response(),
    };
    let mut req = req;
    if kind == Kind::WebSocket
        && let Some(held) = user_hold
    {
        // The session keeps it (websocket.rs), as it keeps the TCP connection's.
        req.extensions_mut().insert(UserHold(Arc::new(held)));
        return websocket::handle(state, sub, identity, req).await;
    }
    let result = match kind {
        Kind::Poll => poll::handle(state, sub).await,
        Kind::LongPoll => long_poll::handle(state, sub).await,
        Kind::Stream => stream::handle(state, sub).await,
        Kind::Iframe => iframe::handle(state, sub).await,
        Kind::Sse => sse::handle(state, sub).await,
        Kind::WebSocket => return websocket::handle(state, sub, identity, req).await,
    };
    let response = result.unwrap_or_else(IntoResponse::into_response);
    // Streams end when the token does (the client reconnects, and needs a valid one then).
    let response = if matches!(kind, Kind::Stream | Kind::Iframe | Kind::Sse) {
        crate::auth::expiry::end_at_expiry(response, &identity)
    } else {
        response
    };
    // A stream's place in `max_connections_per_user` lasts as long as its body (a long poll's
    // ended with its answer).
    match user_hold {
        Some(held) if matches!(kind, Kind::Stream | Kind::Iframe | Kind::Sse) => {
            response.map(|body| crate::body::guarded(body, held))
        }
        _ => response,
    }
}

/// A subscriber connection's place in `max_connections_per_user`, in a WebSocket upgrade's
/// extensions: the session keeps it.
#[derive(Debug, Clone)]
pub(crate) struct UserHold(#[allow(dead_code)] pub(crate) Arc<crate::limits::Held>);

/// `GET /ws`: a WebSocket with no channel yet (the client subscribes by command).
pub(crate) async fn ws_bare(
    State(state): State<AppState>,
    query: Result<Query<SubQuery>, QueryRejection>,
    identity: Identity,
    req: Request,
) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => return ApiError::bad_request("bad_request", e.body_text()).into_response(),
    };
    let client = crate::limits::client_ip(req.extensions());
    if let Err(e) = state.limits.subscribe(client) {
        return e.into_response();
    }
    let mut req = req;
    match state.limits.user_connection(&identity) {
        Ok(Some(held)) => {
            req.extensions_mut().insert(UserHold(Arc::new(held)));
        }
        Ok(None) => {}
        Err(e) => return e.into_response(),
    }
    websocket::handle(
        state,
        SubRequest {
            channels: Vec::new(),
            since: Vec::new(),
            query,
            client,
            valid_for: identity.remaining(),
        },
        identity,
        req,
    )
    .await
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn choose(headers: &HeaderMap, query: &SubQuery) -> Result<Kind, ApiError> {
    if is_websocket_upgrade(headers) {
        return Ok(Kind::WebSocket);
    }
    if let Some(name) = &query.transport {
        return Kind::parse(name);
    }
    let wants_sse = headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    Ok(if wants_sse { Kind::Sse } else { Kind::LongPoll })
}

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
    done: bool,
    _guard: SubscriberGuard,
}

/// A response body that writes `first`, then every event of `set` through `framer`, heartbeats
/// when idle, and ends itself on shutdown (with `framer.closing`) or when `framer` is exhausted.
/// Dropping the body (the client went away) unsubscribes.
pub(crate) fn streaming_body<F: Framer>(
    state: &AppState,
    kind: Kind,
    set: SubscriptionSet,
    framer: F,
    first: Option<Bytes>,
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
        done: false,
        _guard: state.metrics.subscriber(kind),
    };
    Body::new(streaming)
}

/// Which of the seldom-ready branches of [`Streaming::poll_chunk`] fired.
enum StreamWake {
    Cancelled,
    Heartbeat,
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
            let (cancelled, heartbeat) = (&mut self.cancelled, &mut self.heartbeat);
            let rare = self.rare.poll(cx, |cx| {
                if cancelled.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(StreamWake::Cancelled);
                }
                heartbeat.poll_tick(cx).map(|_| StreamWake::Heartbeat)
            });
            match rare {
                Poll::Ready(StreamWake::Cancelled) => {
                    self.done = true;
                    return Poll::Ready(self.framer.closing(&self.set));
                }
                Poll::Ready(StreamWake::Heartbeat) => {
                    if !std::mem::take(&mut self.wrote) {
                        return Poll::Ready(Some(self.framer.heartbeat()));
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

impl<F: Framer> http_body::Body for Streaming<F> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .poll_chunk(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// Builds a streaming response with `content_type` and no caching or proxy buffering.
pub(crate) fn streaming_response(content_type: &'static str, body: Body) -> Response {
    Response::builder()
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CACHE_CONTROL, "no-cache, no-store")
        .header("x-accel-buffering", "no")
        .body(body)
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// Upper bound of a long-poll's `?timeout=`, as a duration.
pub(crate) fn longpoll_timeout(state: &AppState, text: Option<&str>) -> Result<Duration, ApiError> {
    let max = state.config.longpoll_max_timeout_secs;
    let secs = match text {
        None => state.config.longpoll_timeout_secs,
        Some(t) => t.parse::<u64>().map_err(|_| {
            ApiError::bad_request(
                "bad_timeout",
                format!("timeout must be whole seconds from 0 to {max}, got {t:?}"),
            )
        })?,
    };
    Ok(Duration::from_secs(secs.min(max)))
}

/// The per-message encoders, public only so that the criterion benchmarks
/// (`benches/encoders.rs`) can time them; not a stable API. Each call returns the message's shared
/// encoding, made on the first call for that message and cloned (a reference count) after.
#[doc(hidden)]
pub mod encoders {
    use bytes::Bytes;
    use comet_core::{Event, Message};

    /// The JSON envelope (poll, long-poll, and the base of the others).
    pub fn envelope(msg: &Message) -> Bytes {
        super::envelope::envelope(msg)
    }

    /// One NDJSON line (stream).
    pub fn stream_line(msg: &Message) -> Bytes {
        super::stream::line(msg)
    }

    /// One `<script>p(…)</script>` chunk (iframe).
    pub fn iframe_chunk(msg: &Message) -> Bytes {
        super::iframe::chunk(msg)
    }

    /// One single-channel SSE event with the raw data.
    pub fn sse_raw(msg: &Message) -> Bytes {
        super::sse::event_raw(msg)
    }

    /// One single-channel SSE event with the envelope as data.
    pub fn sse_envelope(msg: &Message) -> Bytes {
        super::sse::event_envelope(msg)
    }

    /// A whole poll / long-poll answer body for `events`.
    pub fn poll_answer(events: &[Event], cursor: &str) -> Bytes {
        super::poll::encode_answer(events, cursor, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn channel_lists() {
        assert_eq!(parse_channels("a,b:c", 4).unwrap().len(), 2);
        assert_eq!(parse_channels("a,b,c", 2).unwrap_err().code, "too_many_channels");
        assert_eq!(parse_channels("a,,b", 4).unwrap_err().code, "bad_channel");
        assert!(parse_channels("a,a", 4).unwrap_err().message.contains("listed twice"));
        assert!(
            parse_channels("a b", 4)
                .unwrap_err()
                .message
                .contains("invalid byte 0x20")
        );
    }

    #[test]
    fn transport_choice() {
        let mut h = HeaderMap::new();
        let q = SubQuery::default();
        assert_eq!(choose(&h, &q).unwrap(), Kind::LongPoll);
        h.insert(http::header::ACCEPT, "text/event-stream".parse().unwrap());
        assert_eq!(choose(&h, &q).unwrap(), Kind::Sse);
        let q = SubQuery {
            transport: Some("stream".into()),
            ..Default::default()
        };
        assert_eq!(choose(&h, &q).unwrap(), Kind::Stream);
        h.insert(http::header::UPGRADE, "WebSocket".parse().unwrap());
        assert_eq!(choose(&h, &q).unwrap(), Kind::WebSocket);
        let q = SubQuery {
            transport: Some("carrier-pigeon".into()),
            ..Default::default()
        };
        assert_eq!(choose(&HeaderMap::new(), &q).unwrap_err().code, "bad_transport");
    }
}
