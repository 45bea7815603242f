//! The six transports (docs/protocol.md "Transports"), one file each, below one dispatcher.
//!
//! This file is the dispatcher: `choose` decides a request's transport, once, for the whole
//! server (the connection layer asks it too, through `http::takeover`, to know which requests
//! to serve without hyper), and `subscribe` checks the request and hands it to that
//! transport's handler. Below it: `request` (channels, cursors, opening the subscriptions),
//! `streaming` (the body of stream, iframe and SSE responses), `envelope` (the shared JSON
//! encodings), then one module per transport.

#[doc(hidden)]
pub mod encoders;
pub(crate) mod envelope;
pub(crate) mod hooked;
pub mod iframe;
pub mod long_poll;
pub(crate) mod ordered;
pub mod poll;
pub(crate) mod presence;
pub(crate) mod request;
pub mod sse;
pub mod stream;
pub(crate) mod streaming;
pub mod websocket;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use comet_core::Position;
use http::{HeaderMap, Method};

use self::request::{SubQuery, SubRequest, cursor_text, parse_channels};
use crate::auth::Identity;
use crate::error::ApiError;
use crate::io::hold::UserHold;
pub use crate::kind::Kind;
use crate::state::AppState;

/// The transport of a subscribe request: a WebSocket for an upgrade (RFC 6455 §4.1) or an
/// extended CONNECT (RFC 8441 §4; websocket/ checks its `:protocol`), else the one `?transport=`
/// names (`transport`, as sent), else SSE when `Accept` lists `text/event-stream`, else a long
/// poll.
///
/// # Errors
/// `400 bad_transport` for an unknown `?transport=`.
pub(crate) fn choose(method: &Method, headers: &HeaderMap, transport: Option<&str>) -> Result<Kind, ApiError> {
    if method == Method::CONNECT || is_websocket_upgrade(headers) {
        return Ok(Kind::WebSocket);
    }
    if let Some(name) = transport {
        return Kind::parse(name);
    }
    let wants_sse = headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    Ok(if wants_sse { Kind::Sse } else { Kind::LongPoll })
}

/// Whether `headers` ask for a WebSocket (`Upgrade: websocket`, RFC 6455 §4.2.1 item 3).
pub(crate) fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// `GET /sub/{channels}` (and an HTTP/2 extended CONNECT on it): checks the channels, the
/// caller's grants, the resume point and the limits, then hands over to the chosen transport.
pub(crate) async fn subscribe(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<SubQuery>, QueryRejection>,
    identity: Identity,
    req: Request,
) -> Response {
    let list = path.map(|Path(list)| list).map_err(|e| e.body_text());
    let query = query.map(|Query(query)| query).map_err(|e| e.body_text());
    subscribe_with(state, list, query, identity, req).await
}

/// The name of `GET /sub/{channels}`'s parameter, in [`subscribe_direct`]'s error text.
const CHANNELS_PARAM: &str = "channels";

/// [`subscribe`] without the router, for a streaming subscription the connection layer serves
/// on a connection of its own (conn/h1.rs): the same extractors in the same order and the same
/// answers, without the router's per-request work (its path match, URL parameters, request
/// extensions and boxed futures: 6,200 of a connect's 45,300 user-space instructions, and 11 of
/// its 42 allocations; S5 in bench/RESULTS.md).
/// `Err` gives `req` back when it is not exactly that route (another method, or a path that is
/// not `/sub/` and one non-empty segment), for the router to answer.
pub(crate) fn subscribe_direct(
    state: AppState,
    req: Box<Request>,
) -> Result<std::pin::Pin<Box<dyn Future<Output = Response> + Send>>, Box<Request>> {
    let segment = req
        .uri()
        .path()
        .strip_prefix("/sub/")
        .filter(|rest| !rest.is_empty() && !rest.contains('/'));
    if req.method() != Method::GET || segment.is_none() {
        return Err(req);
    }
    // Boxed, as the router boxes its handlers' futures: inline, this one would size the
    // connection's first step, which is moved whole into a box of its own (conn/connection.rs).
    Ok(Box::pin(async move {
        let (mut parts, body) = (*req).into_parts();
        let segment = parts.uri.path().strip_prefix("/sub/").unwrap_or_default();
        // As the router's `Path<String>`: percent-decoded, and UTF-8 or refused in its words.
        let list = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .map(std::borrow::Cow::into_owned)
            .map_err(|_| format!("Invalid URL: Invalid UTF-8 in `{CHANNELS_PARAM}`"));
        let query = Query::<SubQuery>::try_from_uri(&parts.uri)
            .map(|Query(query)| query)
            .map_err(|e| e.body_text());
        let identity =
            match <Identity as axum::extract::FromRequestParts<AppState>>::from_request_parts(&mut parts, &state).await
            {
                Ok(identity) => identity,
                Err(rejection) => return rejection.into_response(),
            };
        subscribe_with(state, list, query, identity, Request::from_parts(parts, body)).await
    }))
}

/// [`subscribe`]'s work once its parameters are extracted: `list` is the path's channel list
/// (percent-decoded) and `query` the query string, each or the text of why it could not be read.
async fn subscribe_with(
    state: AppState,
    list: Result<String, String>,
    query: Result<SubQuery, String>,
    identity: Identity,
    req: Request,
) -> Response {
    let hooks_on = state.hooks.on();
    // In parts while the checks run: the body is not `Sync`, so a future holding `&Request`
    // across the hooks' awaits would not be `Send`.
    let (parts, body) = req.into_parts();
    let result = async {
        let list = list.map_err(|text| ApiError::bad_request("bad_channel", text))?;
        let query = query.map_err(|text| ApiError::bad_request("bad_request", text))?;
        let channels = parse_channels(&list, state.config.max_channels_per_connection)?;
        if !hooks_on {
            identity.authorize_all(state.auth.config(), &channels, false)?;
        }
        let kind = choose(&parts.method, &parts.headers, query.transport.as_deref())?;
        // Checked before the subscription joins presence: a refused request was never a member.
        if kind == Kind::Iframe {
            iframe::validate_callback(query.callback.as_deref().unwrap_or("comet"))?;
        }
        let cursor = cursor_text(&parts.headers, &query)?;
        let since = Position::resolve_at_most(cursor, &channels, state.config.max_channels_per_connection)?;
        let client = crate::limits::client_ip(&parts.extensions);
        // A poll with a cursor continues a subscription; anything else starts one, and so
        // does a poll of a channel this node does not hold (it may create state for it).
        // With hooks, every request is charged: each asks the back-end.
        if hooks_on
            || cursor.is_none()
            || !matches!(kind, Kind::Poll | Kind::LongPoll)
            || channels.iter().any(|c| !state.broker.holds(c))
        {
            state.limits.subscribe(client)?;
        }
        // The back-end's hooks, after the limits (a flood does not reach the back-end).
        let mut hooked = None;
        let identity = if hooks_on {
            let id = hooked::client_for(kind, query.client.as_deref());
            let identity = match hooked::connect(
                &state,
                (&parts.headers, &parts.uri, &parts.extensions),
                identity,
                &id,
                kind,
            )
            .await
            {
                Ok(identity) => identity,
                Err(e) => return Err(Refused::Connect(kind, e)),
            };
            for channel in &channels {
                hooked::may_subscribe(&state, &identity, &id, channel, kind).await?;
            }
            hooked = Some(id);
            identity
        } else {
            identity
        };
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
            expires: expiry(&identity),
            poller: None,
            member: None,
            user: identity.subject().map(std::sync::Arc::from),
            hooked,
        };
        Ok::<_, Refused>((kind, sub, user_hold.map(UserHold::new), identity))
    };
    let outcome = result.await;
    let mut req = Request::from_parts(parts, body);
    let (kind, mut sub, user_hold, identity) = match outcome {
        Ok(ok) => ok,
        // A WebSocket the connect hook refuses is closed with 4403 (1013 when the hook
        // failed), so that a browser sees why (it is not shown an HTTP status).
        Err(Refused::Connect(Kind::WebSocket, e)) => return websocket::refuse(state, req, &e).await,
        Err(Refused::Connect(_, e) | Refused::Other(e)) => return e.into_response(),
    };
    // A poller is a member of presence channels while its requests keep coming.
    if matches!(kind, Kind::Poll | Kind::LongPoll) {
        let hold_for = match kind {
            Kind::LongPoll => request::longpoll_timeout(&state, sub.query.timeout.as_deref()).unwrap_or_default(),
            _ => std::time::Duration::ZERO,
        };
        let asked = sub.query.client.as_deref();
        match presence::poll_member(&state, &sub.channels, asked, &identity, kind, hold_for).await {
            Ok(poller) => {
                sub.member.clone_from(&poller);
                sub.poller = poller;
            }
            Err(e) => return e.into_response(),
        }
    }
    // A stream is in the presence of its channels that track it for as long as its body lasts
    // (a WebSocket session keeps its own; polls are not counted yet).
    let presence = if kind.is_streaming() {
        sub.member.clone_from(&sub.hooked);
        match presence::join_all(&state, &sub.channels, &mut sub.member, &identity, kind).await {
            Ok(holds) => holds,
            Err(e) => return e.into_response(),
        }
    } else {
        Vec::new()
    };
    let result = match kind {
        Kind::Poll => poll::handle(state, sub).await,
        Kind::LongPoll => long_poll::handle(state, sub).await,
        Kind::Stream => stream::handle(state, sub).await,
        Kind::Iframe => iframe::handle(state, sub).await,
        Kind::Sse => sse::handle(state, sub).await,
        Kind::WebSocket => {
            // The session keeps the place, as it keeps the TCP connection's.
            if let Some(held) = user_hold {
                req.extensions_mut().insert(held);
            }
            return websocket::handle(state, sub, identity, req).await;
        }
    };
    let response = result.unwrap_or_else(IntoResponse::into_response);
    // A stream's place in `max_connections_per_user` lasts as long as its body (a long poll's
    // ended with its answer).
    let response = match user_hold {
        Some(held) if kind.is_streaming() => response.map(|body| crate::io::body::guarded(body, held)),
        _ => response,
    };
    if presence.is_empty() {
        response
    } else {
        response.map(|body| crate::io::body::guarded(body, presence))
    }
}

/// Why a subscribe request was refused: by the connect hook (a WebSocket is then closed
/// rather than answered), or anything else.
enum Refused {
    Connect(Kind, ApiError),
    Other(ApiError),
}

impl<E: Into<ApiError>> From<E> for Refused {
    fn from(e: E) -> Self {
        Refused::Other(e.into())
    }
}

/// When `identity`'s credential expires, as a deadline (`None` if it does not).
fn expiry(identity: &Identity) -> Option<tokio::time::Instant> {
    identity.remaining().map(|left| tokio::time::Instant::now() + left)
}

/// `GET /ws`: a WebSocket with no channel yet (the client subscribes by command).
pub(crate) async fn ws_bare(
    State(state): State<AppState>,
    query: Result<Query<SubQuery>, QueryRejection>,
    identity: Identity,
    mut req: Request,
) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => return ApiError::bad_request("bad_request", e.body_text()).into_response(),
    };
    let client = crate::limits::client_ip(req.extensions());
    if let Err(e) = state.limits.subscribe(client) {
        return e.into_response();
    }
    let mut hooked = None;
    let identity = if state.hooks.connect_on(&identity) {
        let id = crate::client_id::next();
        match hooked::connect(
            &state,
            (req.headers(), req.uri(), req.extensions()),
            identity,
            &id,
            Kind::WebSocket,
        )
        .await
        {
            Ok(identity) => {
                hooked = Some(id);
                identity
            }
            Err(e) => return websocket::refuse(state, req, &e).await,
        }
    } else {
        identity
    };
    match state.limits.user_connection(&identity) {
        Ok(Some(held)) => {
            req.extensions_mut().insert(UserHold::new(held));
        }
        Ok(None) => {}
        Err(e) => return e.into_response(),
    }
    let sub = SubRequest {
        channels: Vec::new(),
        since: Vec::new(),
        query,
        client,
        expires: expiry(&identity),
        poller: None,
        member: None,
        user: identity.subject().map(std::sync::Arc::from),
        hooked,
    };
    websocket::handle(state, sub, identity, req).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;

    fn request(target: &str, headers: &[(&str, &str)]) -> Request {
        let mut req = http::Request::get(target);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                9,
            ))));
        req
    }

    /// Status, headers, and the body's first frame (a stream's first bytes, an error's JSON).
    async fn answer(response: Response) -> (http::StatusCode, HeaderMap, String) {
        let (mut parts, mut body) = response.into_parts();
        // The router adds a known length's field; h1.rs `response_head` writes its own instead
        // (from the body's size) whether or not one is there.
        parts.headers.remove(http::header::CONTENT_LENGTH);
        // A stream with nothing to say yet (no `retry:` field, no replay) writes nothing.
        let first = match tokio::time::timeout(std::time::Duration::from_millis(300), body.frame()).await {
            Ok(Some(Ok(frame))) => frame
                .into_data()
                .map(|d| String::from_utf8_lossy(&d).into_owned())
                .unwrap_or_default(),
            Ok(other) => panic!("no first frame: {other:?}"),
            Err(_) => "(nothing yet)".to_owned(),
        };
        (parts.status, parts.headers, first)
    }

    /// conn/h1.rs serves `GET /sub/{channels}` through `subscribe_direct`, without the router:
    /// every answer, good or bad, must be the router's (`crate::http::stream_app`), byte for byte.
    #[tokio::test]
    async fn the_direct_path_answers_as_the_router_does() {
        let open = Config::default();
        let open = AppState::new(Arc::new(comet_core::MemoryBroker::new(open.hub_config())), open);
        let tokens = Config {
            jwt_secret: "a secret of enough length for HS256 tokens".into(),
            ..Config::default()
        };
        let tokens = AppState::new(Arc::new(comet_core::MemoryBroker::new(tokens.hub_config())), tokens);
        let sse = ("accept", "text/event-stream");
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("/sub/a?transport=sse", &[sse]),
            ("/sub/a,b%2Cc?transport=stream", &[]),
            ("/sub/a?transport=iframe&callback=cb", &[]),
            ("/sub/a?transport=sse&since=0-1", &[sse]),
            ("/sub/%FF?transport=sse", &[sse]),
            ("/sub/%C3%28?transport=sse", &[sse]),
            ("/sub/ok%?transport=sse", &[sse]),
            ("/sub/a?transport=sse&since=nope", &[sse]),
            ("/sub/a?transport=sse&transport=stream", &[sse]),
            ("/sub/a?transport=iframe&callback=%3Cscript%3E", &[]),
            ("/sub/a?transport=sse", &[sse, ("last-event-id", "garbage")]),
            ("/sub/a?transport=sse", &[sse, ("authorization", "Bearer not-a-token")]),
            ("/sub/a?transport=sse&token=nope", &[sse]),
        ];
        let mut statuses = std::collections::BTreeSet::new();
        for state in [&open, &tokens] {
            let router = crate::http::stream_app(state.clone());
            for (target, headers) in cases {
                let direct = subscribe_direct(state.clone(), Box::new(request(target, headers)))
                    .unwrap_or_else(|_| panic!("{target}: not taken"));
                let direct = answer(direct.await).await;
                let routed = answer(router.clone().oneshot(request(target, headers)).await.unwrap()).await;
                assert_eq!(direct, routed, "{target} {headers:?}");
                statuses.insert(direct.0.as_u16());
            }
        }
        // The cases reach the streams, the handler's refusals and the extractor's.
        assert!(statuses.is_superset(&[200, 400, 401].into()), "{statuses:?}");
        let state = open;
        // What is not exactly the route goes back to the router.
        for (method, target) in [
            (Method::GET, "/sub/"),
            (Method::GET, "/sub/a/b?transport=sse"),
            (Method::GET, "/subscribe/a?transport=sse"),
            (Method::HEAD, "/sub/a?transport=sse"),
            (Method::POST, "/sub/a?transport=sse"),
        ] {
            let mut req = request(target, &[sse]);
            *req.method_mut() = method.clone();
            let back = subscribe_direct(state.clone(), Box::new(req));
            assert!(back.is_err(), "{method} {target} was taken");
        }
    }

    #[test]
    fn transport_choice() {
        let get = Method::GET;
        let mut h = HeaderMap::new();
        assert_eq!(choose(&get, &h, None).unwrap(), Kind::LongPoll);
        h.insert(http::header::ACCEPT, "text/event-stream".parse().unwrap());
        assert_eq!(choose(&get, &h, None).unwrap(), Kind::Sse);
        assert_eq!(choose(&get, &h, Some("stream")).unwrap(), Kind::Stream);
        assert_eq!(choose(&Method::CONNECT, &h, Some("stream")).unwrap(), Kind::WebSocket);
        h.insert(http::header::UPGRADE, "WebSocket".parse().unwrap());
        assert_eq!(choose(&get, &h, Some("stream")).unwrap(), Kind::WebSocket);
        let unknown = choose(&get, &HeaderMap::new(), Some("carrier-pigeon"));
        assert_eq!(unknown.unwrap_err().code, "bad_transport");
    }
}
