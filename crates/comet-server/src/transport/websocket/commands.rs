//! A WebSocket session's commands (docs/protocol.md "ws"): `subscribe`, `unsubscribe`,
//! `publish`, `presence`, `ping` and `auth`, each answered on the socket; and the session's
//! entries in presence (docs/protocol.md "Presence").

use bytes::Bytes;
use comet_core::{ChannelName, ChannelSubscription, Event, Position};

use super::protocol::{Command, Ref, Reply, Request as ClientRequest};
use super::session::{Session, queue_event};
use super::socket::{Ending, POLICY};
use crate::auth::{Action, AuthError, Identity};
use crate::error::ApiError;
use crate::io::hold::UserHold;
use crate::kind::Kind;
use crate::publish::{Publisher, publish_one};
use crate::transport::hooked;
use crate::transport::presence::{self, PresenceHold};

/// A session's client id (made when first needed) and its entries in the presence of the
/// channels it subscribed to whose namespace tracks presence (docs/protocol.md "Presence").
#[derive(Debug, Default)]
pub(super) struct SessionPresence {
    pub(super) client: Option<std::sync::Arc<str>>,
    pub(super) holds: Vec<PresenceHold>,
}

impl SessionPresence {
    /// `Some` (boxed) when it holds anything.
    pub(super) fn boxed(self) -> Option<Box<Self>> {
        (self.client.is_some() || !self.holds.is_empty()).then(|| Box::new(self))
    }
}

impl Session {
    /// The session's client id for the back-end's hooks (made when first needed), where any
    /// hook is set.
    fn hook_client(&mut self) -> Option<std::sync::Arc<str>> {
        if !self.state.hooks.on() {
            return None;
        }
        let presence = self.presence.get_or_insert_with(Box::default);
        Some(std::sync::Arc::clone(
            presence.client.get_or_insert_with(crate::client_id::next),
        ))
    }

    /// Runs one text message; a bad one is answered with an error and the socket stays open,
    /// except for a bad `auth` token, which ends the connection as returned.
    pub(super) async fn command(&mut self, text: Bytes) -> Option<Ending> {
        let request = match ClientRequest::parse(&text) {
            Ok(request) => request,
            Err(e) => {
                self.error(e.reference.as_ref(), "bad_request", &e.message);
                return None;
            }
        };
        let reference = request.reference.as_ref();
        let result = match request.command {
            Command::Subscribe { channel, since } => self.subscribe(&channel, since.as_deref()).await,
            Command::Unsubscribe { channel } => ChannelName::new(&channel).map_err(ApiError::from).map(|name| {
                self.set.remove(&name);
                if let Some(presence) = &mut self.presence {
                    presence.holds.retain(|hold| hold.channel() != &name);
                }
                self.reply(&Reply::Unsubscribed { channel: name.as_str() });
            }),
            Command::Publish {
                channel,
                event,
                data,
                idempotency_key,
            } => {
                let client_id = self.hook_client();
                publish_one(
                    &self.state,
                    Publisher {
                        identity: &self.identity,
                        client: self.client,
                        websocket: true,
                        client_id: client_id.as_deref(),
                    },
                    &channel,
                    event.as_deref(),
                    Bytes::from(data),
                    idempotency_key.as_deref(),
                )
                .await
                .map(|outcome| {
                    self.reply(&Reply::Ack {
                        reference,
                        id: outcome.cursor.to_string(),
                        duplicate: outcome.duplicate,
                    });
                })
            }
            Command::Ping => {
                self.reply(&Reply::Pong { reference });
                Ok(())
            }
            Command::Presence { channel } => self.presence(&channel, reference).await,
            // Without a JWT key tokens mean nothing (as over HTTP): say so, keep the socket.
            Command::Auth { .. } if !self.state.auth.jwt_enabled() => Err(AuthError::JwtOff.into()),
            // Where the connect hook admits connections, it alone says who this one is (a
            // token must not replace the user, or the expiry, it gave).
            Command::Auth { .. } if self.state.hooks.connect_set() => Err(ApiError {
                status: http::StatusCode::FORBIDDEN,
                code: "forbidden",
                message: "the connect hook decides who this connection is: auth is not taken here".into(),
                retry_after: None,
            }),
            Command::Auth { token } => match self.state.auth.verify(token.expose()) {
                Ok(identity) => {
                    // A new subject takes a place in max_connections_per_user (a refresh for the
                    // same one keeps its place).
                    if self.user.is_none() || identity.subject() != self.identity.subject() {
                        match self.state.limits.user_connection(&identity) {
                            Ok(held) => self.user = held.map(UserHold::new),
                            Err(e) => {
                                self.error(reference, e.code, &e.message);
                                return Some(Ending::Close(POLICY, "max_connections_per_user".into()));
                            }
                        }
                    }
                    self.reauthenticate(identity, reference).await;
                    Ok(())
                }
                Err(e) => {
                    tracing::debug!(reason = %e, "websocket auth refused");
                    self.error(reference, e.code(), &e.to_string());
                    return Some(Ending::Close(POLICY, e.close_reason().into()));
                }
            },
        };
        if let Err(e) = result {
            self.error(reference, e.code, &e.message);
        }
        None
    }

    /// Takes `identity` for the rest of the session (a refresh may narrow the grant): channels
    /// it may not subscribe to are dropped, each with an `error` and an `unsubscribed` frame.
    async fn reauthenticate(&mut self, identity: Identity, reference: Option<&Ref>) {
        let auth = std::sync::Arc::clone(&self.state.auth);
        let refused: Vec<(ChannelName, AuthError)> = self
            .set
            .members()
            .iter()
            .filter_map(|sub| {
                let channel = sub.channel();
                // A channel the subscribe hook allowed stays: the hook is not asked again.
                if self.state.hooks.subscribe_on(auth.config(), channel, &identity) {
                    return None;
                }
                let refused = identity
                    .authorize(auth.config(), Action::Subscribe, channel, true)
                    .err()?;
                Some((channel.clone(), refused))
            })
            .collect();
        for (channel, why) in refused {
            self.set.remove(&channel);
            if let Some(presence) = &mut self.presence {
                presence.holds.retain(|hold| hold.channel() != &channel);
            }
            self.error(None, why.code(), &why.to_string());
            self.reply(&Reply::Unsubscribed {
                channel: channel.as_str(),
            });
        }
        let answer = Reply::Authenticated {
            reference,
            sub: identity.subject().unwrap_or(""),
            expires_at: identity.expires_at(),
        }
        .encode();
        self.socket.queue_text(answer);
        self.identity = identity;
        // The entries now show the new user (and info).
        if let Some(presence) = &self.presence {
            for hold in &presence.holds {
                if let Err(e) = hold.renew(&self.identity, Kind::WebSocket).await {
                    tracing::warn!(channel = %hold.channel(), error = %e, "presence renewal failed");
                }
            }
        }
    }

    /// Answers a `presence` command: the channel's entries, for a peer that may subscribe to it.
    async fn presence(&mut self, channel: &str, reference: Option<&Ref>) -> Result<(), ApiError> {
        let channel = ChannelName::new(channel)?;
        // Who may subscribe may see who is there: the subscribe hook decides, where it is on.
        let id = self.hook_client().unwrap_or_else(|| std::sync::Arc::from(""));
        hooked::may_subscribe(&self.state, &self.identity, &id, &channel, Kind::WebSocket).await?;
        let clients = presence::list(&self.state, &channel).await?;
        self.reply(&Reply::Presence {
            reference,
            channel: channel.as_str(),
            clients: &clients,
        });
        Ok(())
    }

    /// Enters the session in `channel`'s presence (once), if its namespace tracks it.
    async fn join_presence(&mut self, channel: &ChannelName) -> Result<(), ApiError> {
        if !crate::auth::policy::presence(self.state.auth.config(), channel) {
            return Ok(());
        }
        let presence = self.presence.get_or_insert_with(Box::default);
        if presence.holds.iter().any(|hold| hold.channel() == channel) {
            return Ok(());
        }
        let joined = PresenceHold::join(
            &self.state,
            channel,
            &mut presence.client,
            &self.identity,
            Kind::WebSocket,
        )
        .await?;
        presence.holds.extend(joined);
        Ok(())
    }

    /// Subscribes to `channel` from `since`, replacing a subscription to it.
    async fn subscribe(&mut self, channel: &str, since: Option<&str>) -> Result<(), ApiError> {
        let channel = ChannelName::new(channel)?;
        let since = Position::resolve_at_most(
            since,
            std::slice::from_ref(&channel),
            self.state.config.max_channels_per_connection,
        )?;
        let max = self.state.config.max_channels_per_connection;
        if !self.set.contains(&channel) && self.set.len() >= max {
            return Err(ApiError::bad_request(
                "too_many_channels",
                format!("a connection may subscribe to at most {max} channels"),
            ));
        }
        self.state.limits.subscribe(self.client)?;
        // Asked after the rate limit, so a flood of commands does not reach the back-end.
        let id = self.hook_client().unwrap_or_else(|| std::sync::Arc::from(""));
        hooked::may_subscribe(&self.state, &self.identity, &id, &channel, Kind::WebSocket).await?;
        // Joined first, so the session does not get its own join.
        self.join_presence(&channel).await?;
        let mut sub = match self.state.broker.subscribe(channel.clone(), since[0]).await {
            Ok(sub) => sub,
            Err(e) => {
                // Not subscribed: not a member either (unless it was subscribed before).
                if !self.set.contains(&channel)
                    && let Some(presence) = &mut self.presence
                {
                    presence.holds.retain(|hold| hold.channel() != &channel);
                }
                return Err(e.into());
            }
        };
        if let Some(client) = self.presence.as_ref().and_then(|p| p.client.as_ref()) {
            sub.ignore_notices_of(std::sync::Arc::clone(client));
        }
        self.add(sub);
        Ok(())
    }

    /// Adds `sub` to the set after answering `subscribed`: the first read decides `recovered`
    /// (a gap notice first means history no longer reached `since`) and its messages follow.
    pub(super) fn add(&mut self, mut sub: ChannelSubscription) {
        // Where delivery starts (after a gap: where it resumes), so a client can resume this
        // channel exactly even if no message arrives before it reconnects.
        let start = sub.cursor().to_string();
        self.events.clear();
        sub.try_read(&mut self.events, self.state.config.max_batch);
        let recovered = !matches!(self.events.first(), Some(Event::Gap(_)));
        self.reply(&Reply::Subscribed {
            channel: sub.channel().as_str(),
            recovered,
            cursor: &start,
        });
        // The notice is in `subscribed`: skip it, and leave nothing behind (the buffer is
        // reused by the next read, which would send a notice left in it again).
        for event in self.events.drain(..).skip(usize::from(!recovered)) {
            queue_event(&mut self.socket, &event);
        }
        self.set.insert(sub);
    }

    pub(super) fn reply(&mut self, reply: &Reply<'_>) {
        self.socket.queue_text(reply.encode());
    }

    pub(super) fn error(&mut self, reference: Option<&Ref>, code: &str, message: &str) {
        self.reply(&Reply::Error {
            reference,
            code,
            message,
        });
    }
}
