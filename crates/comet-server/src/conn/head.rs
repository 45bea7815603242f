//! The first request head of a connection, read by the connection layer itself within the
//! header-read timeout (slowloris; hyper's starts only with a request's first byte, and its
//! protocol detection has none). A request the router takes on a connection of its own (a
//! streaming subscription or a WebSocket upgrade on plain TCP, [`crate::http::takeover`]) is
//! served by h1.rs; anything else goes to hyper with the bytes read so far put back in front
//! (rewind.rs), so hyper sees the connection from its first byte.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, header};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::http::Takeover;

/// The largest request head read here; a larger one is handed to hyper, whose limits answer it.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// Most request header fields parsed here (more: hyper's turn).
const MAX_HEADERS: usize = 64;

/// What the first bytes of a connection turned out to be.
#[derive(Debug)]
pub(crate) enum Head {
    /// A complete request head for a streaming subscription, and nothing after it.
    Stream(Box<Request<Body>>),
    /// A complete `GET` head with `Upgrade: websocket`, and nothing after it (when asked for).
    Upgrade(Box<Request<Body>>),
    /// Anything else, for hyper: the bytes read so far.
    Other(Bytes),
    /// The client closed, failed, or did not finish its head within the timeout.
    Gone,
}

/// Reads the first request head of a connection, for at most `timeout` (slowloris). WebSocket
/// upgrades are [`Head::Upgrade`] when `upgrades`, else hyper's.
pub(crate) async fn read_head<IO: AsyncRead + Unpin>(io: &mut IO, timeout: Duration, upgrades: bool) -> Head {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        if buf.len() == buf.capacity() {
            if buf.len() >= MAX_HEAD {
                return Head::Other(buf.into());
            }
            buf.reserve(buf.len());
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Ok(Ok(0)) if buf.is_empty() => return Head::Gone,
            // A partial head then EOF: hyper answers or closes as it would have.
            Ok(Ok(0)) => return Head::Other(buf.into()),
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return Head::Gone,
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Partial) => {}
            Ok(httparse::Status::Complete(len)) if len == buf.len() => {
                let Some(fields) = Fields::of(&parsed, &buf) else {
                    return Head::Other(buf.into());
                };
                let buf = Bytes::from(buf);
                return match own_request(&fields, &buf, upgrades) {
                    Some((request, false)) => Head::Stream(Box::new(request)),
                    Some((request, true)) => Head::Upgrade(Box::new(request)),
                    None => Head::Other(buf),
                };
            }
            // Pipelined bytes after the head, or a head httparse refuses (HTTP/2's preface
            // among them): hyper's.
            Ok(httparse::Status::Complete(_)) | Err(_) => return Head::Other(buf.into()),
        }
    }
}

/// A parsed `GET` head of HTTP/1.1 as places in the bytes read: the request is then built
/// from one shared buffer (`Bytes::slice`), its URI and field values pointing into it rather than
/// each copied (S5 in bench/RESULTS.md: a connect storm counts every allocation).
struct Fields {
    path: std::ops::Range<usize>,
    headers: [(std::ops::Range<usize>, std::ops::Range<usize>); MAX_HEADERS],
    count: usize,
}

impl Fields {
    /// The places of `parsed`'s path and fields in `buf`, if it is an HTTP/1.1 `GET`.
    fn of(parsed: &httparse::Request<'_, '_>, buf: &[u8]) -> Option<Self> {
        if parsed.method? != "GET" || parsed.version? != 1 {
            return None;
        }
        let at = |piece: &[u8]| {
            let start = piece.as_ptr() as usize - buf.as_ptr() as usize;
            start..start + piece.len()
        };
        let mut fields = Self {
            path: at(parsed.path?.as_bytes()),
            headers: std::array::from_fn(|_| (0..0, 0..0)),
            count: parsed.headers.len(),
        };
        for (place, h) in fields.headers.iter_mut().zip(parsed.headers.iter()) {
            *place = (at(h.name.as_bytes()), at(h.value));
        }
        Some(fields)
    }
}

/// The request, if `fields` (of `buf`) is a `GET` without a body that the router takes on a
/// connection of its own ([`crate::http::takeover`]: a streaming subscription, or when
/// `upgrades` a WebSocket upgrade), and whether it is the upgrade.
fn own_request(fields: &Fields, buf: &Bytes, upgrades: bool) -> Option<(Request<Body>, bool)> {
    let mut headers = http::HeaderMap::with_capacity(fields.count);
    for (name, value) in &fields.headers[..fields.count] {
        let name = HeaderName::from_bytes(&buf[name.clone()]).ok()?;
        let value = HeaderValue::from_maybe_shared(buf.slice(value.clone())).ok()?;
        // Another upgrade (h2c), a body, or `Expect`: hyper's.
        if (name == header::UPGRADE && !value.as_bytes().eq_ignore_ascii_case(b"websocket"))
            || name == header::TRANSFER_ENCODING
            || name == header::EXPECT
            || (name == header::CONTENT_LENGTH && value != "0")
        {
            return None;
        }
        headers.append(name, value);
    }
    let mut request = Request::new(Body::empty());
    *request.method_mut() = http::Method::GET;
    *request.version_mut() = http::Version::HTTP_11;
    *request.uri_mut() = http::Uri::from_maybe_shared(buf.slice(fields.path.clone())).ok()?;
    *request.headers_mut() = headers;
    match crate::http::takeover(&request)? {
        Takeover::Stream => Some((request, false)),
        Takeover::Upgrade if upgrades => Some((request, true)),
        Takeover::Upgrade => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        head_with(text, false)
    }

    fn head_with(text: &str, upgrades: bool) -> Head {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut io = text.as_bytes();
            read_head(&mut io, Duration::from_secs(1), upgrades).await
        })
    }

    #[test]
    fn websocket_upgrades_are_taken_only_when_asked() {
        for text in [
            "GET /sub/a HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            "GET /ws?x=1 HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n",
            "GET /healthz HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
        ] {
            let Head::Upgrade(req) = head_with(text, true) else {
                panic!("not taken: {text:?}")
            };
            assert!(req.headers().contains_key(header::UPGRADE), "{text:?}");
            assert!(matches!(head_with(text, false), Head::Other(_)), "{text:?}");
        }
        for text in [
            "GET /sub/a?transport=sse HTTP/1.1\r\nupgrade: h2c\r\n\r\n",
            "POST /sub/a HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            "GET /sub/a HTTP/1.0\r\nupgrade: websocket\r\n\r\n",
            "GET /sub/a HTTP/1.1\r\nupgrade: websocket\r\ncontent-length: 3\r\n\r\n",
            "GET /sub/a HTTP/1.1\r\nupgrade: websocket\r\n\r\nearly frame bytes",
        ] {
            match head_with(text, true) {
                Head::Other(bytes) => assert_eq!(bytes, text.as_bytes(), "{text:?}"),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn streaming_subscriptions_are_taken() {
        for text in [
            "GET /sub/a?transport=sse HTTP/1.1\r\nhost: x\r\n\r\n",
            "GET /sub/a,b?since=now&transport=stream HTTP/1.1\r\nhost: x\r\n\r\n",
            "GET /sub/a?transport=iframe&callback=p HTTP/1.1\r\nhost: x\r\n\r\n",
            "GET /sub/a HTTP/1.1\r\naccept: text/event-stream\r\ncontent-length: 0\r\n\r\n",
        ] {
            let Head::Stream(req) = head(text) else {
                panic!("not taken: {text:?}")
            };
            assert!(req.uri().path().starts_with("/sub/"), "{text:?}");
        }
    }

    #[test]
    fn everything_else_goes_to_hyper_whole() {
        for text in [
            "GET /sub/a HTTP/1.1\r\nhost: x\r\n\r\n",
            "GET /sub/a?transport=poll HTTP/1.1\r\naccept: text/event-stream\r\n\r\n",
            "GET /sub/a?transport=sse HTTP/1.0\r\n\r\n",
            "POST /sub/a?transport=sse HTTP/1.1\r\ncontent-length: 1\r\n\r\nx",
            "GET /sub/a?transport=sse HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            "GET /sub/a?transport=sse HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            "GET /metrics HTTP/1.1\r\n\r\n",
            "GET /sub/a?transport=sse HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /sub/a?transport=sse HTTP/1.1\r\nhost",
            "garbage\r\n\r\n",
        ] {
            match head(text) {
                Head::Other(bytes) => assert_eq!(bytes, text.as_bytes(), "{text:?}"),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
        assert!(matches!(head(""), Head::Gone));
    }
}
