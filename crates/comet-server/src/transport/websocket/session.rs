//! One WebSocket connection's session, owned by its task: the subscriptions, keep-alive pings
//! (RFC 6455 §5.5.2) and the credential's expiry, and the batched writes of everything ready.
//! Its commands (docs/protocol.md "ws") are in commands.rs.

use std::future::poll_fn;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use comet_core::{ChannelSubscription, Event, SubscriptionSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::commands::SessionPresence;
use super::protocol::{gap_text, message_frame, message_text};
use super::socket::{DISCONNECTED, Ending, GOING_AWAY, Incoming, NO_PONG, POLICY, SLOW_CONSUMER, Socket};
use crate::auth::{AuthError, Identity};
use crate::io::gate::ReadGate;
use crate::io::hold::UserHold;
use crate::io::orders::Order;
use crate::kind::Kind;
use crate::metrics::SubscriberGuard;
use crate::state::AppState;
use crate::transport::ordered::Ordered;

/// The server's pings (RFC 6455 §5.5.2) and the deadline of their pongs.
#[derive(Debug)]
struct Keepalive {
    interval: Duration,
    timeout: Duration,
    next_ping: Instant,
    /// Set while a ping is unanswered.
    pong_due: Option<Instant>,
}

impl Keepalive {
    fn new(interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            next_ping: Instant::now() + interval,
            pong_due: None,
        }
    }

    /// When [`expired`](Self::expired) is next due.
    fn deadline(&self) -> Instant {
        self.pong_due.unwrap_or(self.next_ping)
    }

    /// The deadline passed: returns `true` if a ping went unanswered (give up), else starts
    /// the next ping's wait (the caller sends it).
    fn expired(&mut self, now: Instant) -> bool {
        if self.pong_due.is_some() {
            return true;
        }
        self.pong_due = Some(now + self.timeout);
        self.next_ping = now + self.interval;
        false
    }

    fn pong(&mut self) {
        self.pong_due = None;
    }
}

/// Which of the seldom-waking branches of [`Session::run`] fired.
enum SessionWake {
    Cancelled,
    /// The keepalive's deadline or the credential's expiry, whichever is sooner.
    Timer,
    Incoming(Incoming),
    Ordered(Vec<Order>),
}

/// When `identity`'s credential expires (with the leeway), if it does.
fn expiry_instant(identity: &Identity) -> Option<Instant> {
    identity.remaining().map(|left| Instant::now() + left)
}

/// One connection's state, owned by its task.
pub(super) struct Session {
    pub(super) state: AppState,
    /// Cancelled on shutdown or by `AppState::disconnect_all`: the connection ends with 1001.
    pub(super) token: CancellationToken,
    pub(super) socket: Socket,
    pub(super) set: SubscriptionSet,
    /// Events read from `set`, reused between reads.
    pub(super) events: Vec<Event>,
    keepalive: Keepalive,
    /// Who the peer is: checked on every `subscribe` and `publish`; replaced by `auth`.
    pub(super) identity: Identity,
    /// The session's place in `max_connections_per_user`, for `identity`'s subject.
    pub(super) user: Option<UserHold>,
    /// The peer's address, for the per-IP limits.
    pub(super) client: Option<std::net::IpAddr>,
    /// The session's client id and entries in presence (boxed: most sessions have none).
    pub(super) presence: Option<Box<SessionPresence>>,
    /// The server API's orders to the peer's user (boxed: anonymous sessions have none).
    pub(super) orders: Option<Box<Ordered>>,
    /// Counts the socket in `comet_subscribers_open{transport="ws"}` while it lives.
    pub(super) _guard: SubscriberGuard,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("channels", &self.set.len())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(super) fn new(
        state: AppState,
        token: CancellationToken,
        socket: Socket,
        identity: Identity,
        client: Option<std::net::IpAddr>,
    ) -> Self {
        let config = state.config.ws();
        let keepalive = Keepalive::new(config.ping_interval, config.pong_timeout);
        let orders = Ordered::register(&state, identity.subject());
        Self {
            _guard: state.metrics.subscriber(Kind::WebSocket),
            state,
            token,
            socket,
            set: SubscriptionSet::new(),
            events: Vec::new(),
            keepalive,
            identity,
            user: None,
            orders,
            client,
            presence: None,
        }
    }

    /// Serves the connection until it ends, and says how to end it: pass that to
    /// [`finish`](Self::finish).
    pub(super) async fn run(&mut self, initial: Vec<ChannelSubscription>) -> Ending {
        for sub in initial {
            self.add(sub);
        }
        let max = self.state.config.max_batch;
        // Made once and polled in place: re-created on every pass, the timer and the
        // cancellation token's waiter were registered and removed again for every message.
        // One timer serves both the keepalive and the credential's expiry (the sooner of the two).
        let cancelled = self.token.clone().cancelled_owned();
        let mut expires = expiry_instant(&self.identity);
        // On a server with tokens, an anonymous socket with nothing it may read must send an
        // `auth` (or subscribe to a channel open to anonymous clients) within
        // `ws_auth_timeout_secs`, counted from the upgrade (commands do not move it).
        let mut auth_due = (self.state.auth.jwt_enabled() && self.needs_auth())
            .then(|| Instant::now() + self.state.config.ws().auth_timeout);
        let timer = tokio::time::sleep_until(self.keepalive.deadline());
        tokio::pin!(cancelled, timer);
        // The task wakes for every message on its channels; the branches that seldom fire (the
        // peer's frames, timers, shutdown) are polled only after one of them woke it (gate.rs).
        let mut rare_gate = ReadGate::new();
        let ending = loop {
            if let Err(ending) = self.flush().await {
                break ending;
            }
            let due = [expires, auth_due]
                .into_iter()
                .flatten()
                .fold(self.keepalive.deadline(), Instant::min);
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            let socket = &mut self.socket;
            let orders = &mut self.orders;
            let rare = async {
                let mut recv = pin!(socket.recv());
                poll_fn(|cx| {
                    rare_gate.poll(cx, |cx| {
                        if cancelled.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(SessionWake::Cancelled);
                        }
                        if let Some(orders) = orders
                            && let Poll::Ready(taken) = orders.poll_orders(cx)
                        {
                            return Poll::Ready(SessionWake::Ordered(taken));
                        }
                        if timer.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(SessionWake::Timer);
                        }
                        recv.as_mut().poll(cx).map(SessionWake::Incoming)
                    })
                })
                .await
            };
            // Every branch is cancel-safe (see `Socket::recv`, `SubscriptionSet::recv`). The
            // handlers do not wait: what must (a command) is done after the `select!`, so that
            // nothing of it takes room in this future while the connection idles.
            let text = tokio::select! {
                biased;
                rare = rare => match rare {
                    SessionWake::Cancelled => break Ending::Close(GOING_AWAY, "server going away".into()),
                    SessionWake::Timer => {
                        if expires.is_some_and(|at| at <= due) {
                            break Ending::Close(POLICY, AuthError::Expired.close_reason().into());
                        }
                        if auth_due.is_some_and(|at| at <= due) {
                            break Ending::Close(POLICY, "no auth within ws_auth_timeout_secs".into());
                        }
                        if self.keepalive.deadline() <= due {
                            if self.keepalive.expired(Instant::now()) {
                                break Ending::Close(NO_PONG, "no pong within ws_pong_timeout".into());
                            }
                            self.socket.queue_ping();
                        }
                        continue;
                    }
                    SessionWake::Incoming(Incoming::Text(text)) => text,
                    SessionWake::Incoming(Incoming::Binary(_)) => {
                        self.error(None, "bad_request", "binary frames are not supported; send text");
                        continue;
                    }
                    SessionWake::Incoming(Incoming::Pong) => {
                        self.keepalive.pong();
                        continue;
                    }
                    SessionWake::Incoming(Incoming::End(ending)) => break ending,
                    SessionWake::Ordered(taken) => match self.obey(taken) {
                        Some(ending) => {
                            // The `disconnect` frame saying why goes out before the close.
                            let _ = self.flush().await;
                            break ending;
                        }
                        None => continue,
                    },
                },
                _ = self.set.recv(&mut self.events, max) => {
                    for event in self.events.drain(..) {
                        queue_event(&mut self.socket, &event);
                    }
                    continue;
                }
            };
            // Boxed: commands are rare, and their futures (publish, subscribe) would otherwise
            // size every idle connection's task.
            if let Some(ending) = Box::pin(self.command(text)).await {
                // The `error` frame saying why goes out before the close.
                let _ = self.flush().await;
                break ending;
            }
            // An `auth` command may have replaced the identity and its expiry, and its user.
            expires = expiry_instant(&self.identity);
            if self.orders.as_ref().map(|o| o.user()) != self.identity.subject().map(Some) {
                self.orders = Ordered::register(&self.state, self.identity.subject());
            }
            if auth_due.is_some() && !self.needs_auth() {
                auth_due = None;
            }
        };
        tracing::debug!(?ending, "websocket closing");
        // Closing: no more orders (the close handshake may still take a while).
        self.orders = None;
        ending
    }

    /// Carries out the server API's orders (docs/protocol.md "Server API"): a disconnect sends
    /// `{"type":"disconnect","reconnect"}` and ends the session with 4010; an unsubscribe drops
    /// the channel (and its presence entry) with an `unsubscribed` frame.
    fn obey(&mut self, orders: Vec<Order>) -> Option<Ending> {
        for order in orders {
            match order {
                Order::Disconnect { reconnect } => {
                    let fields = serde_json::json!({"reconnect": reconnect});
                    let frame = crate::transport::ordered::notice_object("disconnect", &fields);
                    self.socket.queue_text(bytes::Bytes::from(frame));
                    return Some(Ending::Close(DISCONNECTED, "disconnected by the server".into()));
                }
                Order::Unsubscribe(channel) if self.set.contains(&channel) => {
                    self.set.remove(&channel);
                    if let Some(presence) = &mut self.presence {
                        presence.holds.retain(|hold| hold.channel() != &channel);
                    }
                    self.reply(&super::protocol::Reply::Unsubscribed {
                        channel: channel.as_str(),
                    });
                }
                Order::Unsubscribe(_) => {}
            }
        }
        None
    }

    /// Whether the peer is anonymous and subscribed to nothing (see `ws_auth_timeout_secs`).
    fn needs_auth(&self) -> bool {
        self.identity.is_anonymous() && self.set.is_empty()
    }

    /// Ends the connection as `ending` says (see [`Socket::finish`]), waiting at most a pong
    /// timeout for the peer. Dropping the session then unsubscribes everything.
    pub(super) async fn finish(self, ending: Ending) {
        let linger = self.state.config.ws().pong_timeout;
        self.socket.finish(ending, linger).await;
    }

    /// Writes what is queued, unless shutdown (or `disconnect_all`) comes first or the peer takes
    /// nothing for a ping interval plus a pong timeout (a slow consumer).
    async fn flush(&mut self) -> Result<(), Ending> {
        if !self.socket.has_queued() {
            return Ok(());
        }
        let mut write = pin!(self.socket.flush());
        // Once without waiting: the socket usually takes it all at once, and then neither the
        // token's waiter nor a timer is registered, and this future stays small in every
        // connection's task.
        if let Poll::Ready(written) = poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
            return written.map_err(|_| Ending::Answered);
        }
        // The peer is behind. Boxed: only backed-up sockets pay for the timer's room.
        let stall = self.state.config.ws().stall();
        let token = &self.token;
        Box::pin(async move {
            tokio::select! {
                biased;
                () = token.cancelled() => Err(Ending::Close(GOING_AWAY, "server going away".into())),
                written = write => written.map_err(|_| Ending::Answered),
                () = tokio::time::sleep(stall) => Err(Ending::Close(SLOW_CONSUMER, "slow consumer".into())),
            }
        })
        .await
    }
}

pub(super) fn queue_event(socket: &mut Socket, event: &Event) {
    match event {
        Event::Message(msg) if socket.takes_encoded() => socket.queue_encoded(message_frame(msg)),
        Event::Message(msg) => socket.queue_text(message_text(msg)),
        Event::Gap(gap) => socket.queue_text(gap_text(gap)),
        Event::Presence(notice) => socket.queue_text(bytes::Bytes::from(crate::transport::envelope::presence_object(
            notice, true,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_pings_then_gives_up() {
        let mut k = Keepalive::new(Duration::from_secs(25), Duration::from_secs(10));
        let start = k.deadline();
        assert!(!k.expired(start));
        assert_eq!(k.deadline(), start + Duration::from_secs(10));
        k.pong();
        assert_eq!(k.deadline(), start + Duration::from_secs(25));
        assert!(!k.expired(k.deadline()));
        assert!(k.expired(k.deadline()));
    }
}
