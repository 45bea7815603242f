//! The opening handshake (RFC 6455 §4.2; RFC 8441 over HTTP/2): the request checked, the
//! permessage-deflate terms agreed (RFC 7692 §7.1), and the answer, by yawc through hyper or here
//! for a connection the connection layer read itself (`Sec-WebSocket-Accept`, §4.2.2). Yields an
//! [`Accepted`] upgrade, which socket.rs opens into a socket once the answer is written.

use std::num::NonZeroUsize;
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::Response;
use base64::Engine as _;
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, UPGRADE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};
use sha1::{Digest as _, Sha1};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use yawc::{DeflatePool, IncomingUpgrade, Options};

use super::config::WsConfig;
use super::socket::{Accepted, Opening};
use crate::error::ApiError;
use crate::io::upgrade::DirectUpgrade;

/// Messages below this many bytes go out uncompressed: deflate would not pay for itself.
const COMPRESSION_THRESHOLD: usize = 128;

/// Socket buffers start this small, so idle sockets stay cheap (S1 in bench/RESULTS.md: they were
/// a quarter of an idle WebSocket's memory at 256 and 1,024 bytes). Clients send little
/// (commands, pongs), and yawc gives a read buffer that grew for a larger frame back at once.
/// The write buffer grows to fit the first larger batch and keeps that size up to the 8 KiB
/// backpressure boundary, so a busy socket pays for growing once, not per message.
const READ_BUFFER_CAPACITY: usize = 128;
const WRITE_BUFFER_CAPACITY: usize = 256;

/// Deflate state shared by every compressed connection of the process. Both directions run
/// without context takeover, so a connection needs deflate state only while a message is being
/// (de)compressed, and idle ones cost a few KiB instead of hundreds. Sized for the messages
/// (de)compressed at the same moment: one per core (yawc keeps that many of each kind).
fn deflate_pool() -> DeflatePool {
    static POOL: OnceLock<DeflatePool> = OnceLock::new();
    POOL.get_or_init(|| DeflatePool::new(std::thread::available_parallelism().map_or(4, NonZeroUsize::get)))
        .clone()
}

/// The permessage-deflate terms this server agrees to (RFC 7692 §7.1): no context takeover in
/// either direction (§7.1.1.1 and §7.1.1.2 let a server add both to any offer); the window is
/// the default unless the offer asks for a smaller one ([`agree_deflate`]).
const AGREED_DEFLATE: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The GUID of RFC 6455 §1.3 that `Sec-WebSocket-Accept` hashes with the key.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A valid upgrade request (RFC 6455 §4.2.1), not answered yet.
pub(super) struct Handshake {
    how: How,
    /// The permessage-deflate terms agreed, if compression is enabled and an offer acceptable.
    compress: Option<Agreed>,
}

/// Who answers the handshake and hands over the connection.
enum How {
    /// hyper (HTTP/2, TLS, or a connection hyper served first): yawc answers and upgrades.
    Hyper(IncomingUpgrade),
    /// the connection layer read the request itself on a plain TCP connection: answered here, and the
    /// connection arrives on `connection` once the `101` is written.
    Direct {
        accept: HeaderValue,
        connection: oneshot::Receiver<TcpStream>,
    },
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("direct", &matches!(self.how, How::Direct { .. }))
            .field("compress", &self.compress.as_ref().map(|a| &a.answer))
            .finish_non_exhaustive()
    }
}

/// `400 bad_transport` for a request that is not a WebSocket handshake.
fn not_a_handshake() -> ApiError {
    ApiError::bad_request(
        "bad_transport",
        "not a WebSocket handshake: an HTTP/1.1 GET with Upgrade: websocket, Connection: Upgrade and \
         Sec-WebSocket-Key (RFC 6455 §4.2.1), or an HTTP/2 CONNECT with :protocol = websocket (RFC 8441 §4)",
    )
}

impl Handshake {
    /// Validates the upgrade request in `parts`: an HTTP/1.1 upgrade (RFC 6455 §4.2.1) or an
    /// HTTP/2 extended CONNECT (RFC 8441 §4; yawc's `http2` feature tells them apart). The
    /// version was checked before: yawc would answer a wrong one with `400` instead of `426`.
    ///
    /// # Errors
    /// `400 bad_transport` when the request is not a WebSocket handshake.
    pub(super) async fn from_parts(parts: &mut Parts, config: &WsConfig) -> Result<Self, ApiError> {
        let compress = if config.compression {
            agree_deflate(&parts.headers)
        } else {
            None
        };
        if let Some(direct) = parts.extensions.get::<DirectUpgrade>() {
            let accept = accept_value(handshake_key(&parts.headers).ok_or_else(not_a_handshake)?);
            let connection = direct.take().ok_or_else(not_a_handshake)?;
            return Ok(Self {
                how: How::Direct { accept, connection },
                compress,
            });
        }
        // yawc checks only that a key is there; an HTTP/1.1 upgrade is held to §4.2.1 here too.
        if parts.method == http::Method::GET && handshake_key(&parts.headers).is_none() {
            return Err(not_a_handshake());
        }
        // yawc reads one offer and merges it with our options: it is shown only the offer agreed
        // to, in the words of the answer, or none.
        match &compress {
            Some(agreed) => {
                let offer = HeaderValue::from_str(&agreed.answer).map_err(|_| not_a_handshake())?;
                parts.headers.insert(SEC_WEBSOCKET_EXTENSIONS, offer);
            }
            None => {
                parts.headers.remove(SEC_WEBSOCKET_EXTENSIONS);
            }
        }
        let upgrade = IncomingUpgrade::from_request_parts(parts, &())
            .await
            .map_err(|_| not_a_handshake())?;
        Ok(Self {
            how: How::Hyper(upgrade),
            compress,
        })
    }

    /// Answers `101 Switching Protocols`, or `200` to an HTTP/2 extended CONNECT (RFC 8441 §5),
    /// with permessage-deflate when offered and enabled; the socket is ready once the response
    /// has been sent.
    ///
    /// # Errors
    /// `500 internal` if yawc cannot set up the negotiated compression.
    pub(super) fn accept(self, config: &WsConfig) -> Result<(Response, Accepted), ApiError> {
        let mut options = Options::default()
            // yawc's bound is exclusive; ours is inclusive.
            .with_max_payload_read(config.max_message_size.saturating_add(1))
            .with_read_buffer_capacity(READ_BUFFER_CAPACITY)
            .with_write_buffer_capacity(WRITE_BUFFER_CAPACITY);
        if let Some(agreed) = &self.compress {
            options = options
                .with_low_latency_compression()
                .server_no_context_takeover()
                .client_no_context_takeover()
                .with_deflate_pool(deflate_pool())
                .with_compression_threshold(COMPRESSION_THRESHOLD);
            if let Some(bits) = agreed.server_max_window_bits {
                options = options.with_server_max_window_bits(bits);
            }
        }
        let max_message = config.max_message_size;
        match self.how {
            How::Hyper(upgrade) => {
                let (response, upgrade) = upgrade.upgrade(options).map_err(|e| ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    code: "internal",
                    message: format!("websocket handshake failed: {e}"),
                    retry_after: None,
                })?;
                Ok((
                    response.map(Body::new),
                    Accepted {
                        how: Opening::Hyper(upgrade),
                        max_message,
                    },
                ))
            }
            How::Direct { accept, connection } => {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let headers = response.headers_mut();
                headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
                headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
                let agreed = self.compress.map(|agreed| agreed.answer);
                if let Some(answer) = &agreed {
                    let answer = HeaderValue::from_str(answer).map_err(|_| not_a_handshake())?;
                    headers.insert(SEC_WEBSOCKET_EXTENSIONS, answer);
                }
                Ok((
                    response,
                    Accepted {
                        how: Opening::Direct {
                            connection,
                            options: Box::new(options),
                            compress: agreed,
                        },
                        max_message,
                    },
                ))
            }
        }
    }
}

/// The `Sec-WebSocket-Key` of an HTTP/1.1 handshake (RFC 6455 §4.2.1), or `None` if it is not
/// one: `Upgrade` must name `websocket` and `Connection` must list `Upgrade` (case-insensitive
/// tokens), and the key must be the base64 of 16 bytes.
fn handshake_key(headers: &HeaderMap) -> Option<&[u8]> {
    let has_token = |name, token: &str| list_items(headers, name).any(|t| t.eq_ignore_ascii_case(token));
    if !has_token(UPGRADE, "websocket") || !has_token(CONNECTION, "upgrade") {
        return None;
    }
    let key = headers.get(SEC_WEBSOCKET_KEY)?.as_bytes();
    let nonce = base64::engine::general_purpose::STANDARD.decode(key).ok()?;
    (nonce.len() == 16).then_some(key)
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2 item 5.4): base64 of the SHA-1 of the key
/// and the GUID.
fn accept_value(key: &[u8]) -> HeaderValue {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(ACCEPT_GUID);
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.finalize());
    // Base64 is visible ASCII.
    HeaderValue::from_str(&accept).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The items of a comma-separated header field, trimmed, over every line of it (RFC 9110 §5.6.1,
/// §5.3); lines that are not visible ASCII are skipped.
pub(super) fn list_items<'a>(
    headers: &'a HeaderMap,
    name: http::header::HeaderName,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// The permessage-deflate terms agreed with a client (RFC 7692 §5, §7.1): the first offer in
/// `Sec-WebSocket-Extensions` whose parameters this server supports, answered as
/// [`AGREED_DEFLATE`] plus the `server_max_window_bits` the offer asked for, if any. `None` when
/// no offer is acceptable; the connection then runs uncompressed.
///
/// An offer is declined (§5: "the server MUST decline ... an extension parameter not defined
/// for use in an offer, ... an invalid value, ... more than one of the same name") when a
/// parameter is unknown, repeated or badly formed, and when it asks for a server window of
/// 8 bits, which the deflate implementation cannot produce (it supports 9–15). A
/// `client_max_window_bits` offer is taken and not answered: the client keeps its window of up
/// to 15 bits (§7.1.2.2), which this server always inflates with.
fn agree_deflate(headers: &HeaderMap) -> Option<Agreed> {
    list_items(headers, SEC_WEBSOCKET_EXTENSIONS).find_map(acceptable_offer)
}

/// The agreed `Sec-WebSocket-Extensions` answer and the server's window, in bits.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Agreed {
    answer: String,
    server_max_window_bits: Option<u8>,
}

/// One offer of [`agree_deflate`], or `None` if it is declined.
fn acceptable_offer(offer: &str) -> Option<Agreed> {
    let mut params = offer.split(';').map(str::trim);
    if !params.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen = [false; 4];
    let mut server_bits = None;
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param, None),
        };
        let index = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            "server_max_window_bits" => {
                server_bits = Some(window_bits(value?)?);
                2
            }
            "client_max_window_bits" => {
                if let Some(value) = value {
                    window_bits(value)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
    }
    if server_bits == Some(8) {
        return None;
    }
    let answer = match server_bits {
        Some(bits) => format!("{AGREED_DEFLATE}; server_max_window_bits={bits}"),
        None => AGREED_DEFLATE.to_owned(),
    };
    Some(Agreed {
        answer,
        server_max_window_bits: server_bits,
    })
}

/// A window size of RFC 7692 §7.1.2: an integer 8–15 without leading zeros.
fn window_bits(value: &str) -> Option<u8> {
    let bits: u8 = value.parse().ok()?;
    ((8..=15).contains(&bits) && !value.starts_with('0') && value.len() <= 2).then_some(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreed(offers: &[&str]) -> Option<String> {
        let mut headers = HeaderMap::new();
        for offer in offers {
            headers.append(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_str(offer).unwrap());
        }
        agree_deflate(&headers).map(|a| a.answer)
    }

    #[test]
    fn the_first_acceptable_deflate_offer_is_agreed() {
        let plain = Some(AGREED_DEFLATE.to_owned());
        assert_eq!(agreed(&["permessage-deflate"]), plain);
        assert_eq!(agreed(&["permessage-deflate; client_max_window_bits"]), plain);
        assert_eq!(agreed(&["permessage-deflate; client_max_window_bits=10"]), plain);
        assert_eq!(
            agreed(&["permessage-deflate; server_no_context_takeover; server_max_window_bits=9"]),
            Some(format!("{AGREED_DEFLATE}; server_max_window_bits=9"))
        );
        assert_eq!(
            agreed(&["permessage-deflate; server_max_window_bits=\"12\""]),
            Some(format!("{AGREED_DEFLATE}; server_max_window_bits=12"))
        );
        // RFC 7692 §5: the first offer the server supports, in one header line or several.
        assert_eq!(agreed(&["x-webkit-deflate-frame, permessage-deflate"]), plain);
        assert_eq!(
            agreed(&[
                "permessage-deflate; server_max_window_bits=8",
                "permessage-deflate; server_max_window_bits=11"
            ]),
            Some(format!("{AGREED_DEFLATE}; server_max_window_bits=11"))
        );
        assert_eq!(
            agreed(&["permessage-deflate; server_max_window_bits=8, permessage-deflate; client_no_context_takeover"]),
            plain
        );
    }

    #[test]
    fn offers_with_unknown_repeated_or_bad_parameters_are_declined() {
        for offer in [
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; server_max_window_bits=ten",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
        ] {
            assert_eq!(agreed(&[offer]), None, "{offer}");
        }
        assert_eq!(agreed(&[]), None);
    }
}
