//! Sockets and plain HTTP/1.1 exchanges: connecting from a chosen 127.0.0.x source address,
//! writing a request, and reading one whole response.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::error::BenchError;
use crate::parse::{BodyKind, ChunkedDecoder, ResponseHead};

/// Connects to `target` from `source` (port chosen by the kernel). Spreading sockets over
/// several loopback source addresses lifts the ~28 k ephemeral-port limit of one address.
///
/// # Errors
/// The socket's I/O error.
pub async fn connect(target: SocketAddr, source: Option<Ipv4Addr>) -> Result<TcpStream, BenchError> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let (Some(src), true) = (source, target.is_ipv4()) {
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
    }
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Parses `127.0.0.2-127.0.0.50` (or one address) into the list of addresses.
///
/// # Errors
/// [`BenchError::Config`] when the text is not such a range or leaves 127.0.0.0/8.
pub fn parse_source_range(text: &str) -> Result<Vec<Ipv4Addr>, BenchError> {
    let bad = || BenchError::Config(format!("bad source address range {text:?} (e.g. 127.0.0.2-127.0.0.50)"));
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    let a: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
    let b: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
    let (lo, hi) = (u32::from(a), u32::from(b));
    if lo > hi || !a.is_loopback() || !b.is_loopback() || hi - lo > 65_535 {
        return Err(bad());
    }
    Ok((lo..=hi).map(Ipv4Addr::from).collect())
}

/// A `GET` request with `headers`.
pub fn get_request(host: SocketAddr, path: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        req.push_str(k);
        req.push_str(": ");
        req.push_str(v);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// A `POST` request with a body.
pub fn post_request(host: SocketAddr, path: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads until a response head is in `buf`, then removes and returns it.
///
/// # Errors
/// I/O errors, a malformed head, or [`BenchError::Closed`].
pub async fn read_head<R: AsyncRead + Unpin>(io: &mut R, buf: &mut BytesMut) -> Result<ResponseHead, BenchError> {
    loop {
        if let Some(head) = ResponseHead::parse(buf)? {
            buf.advance(head.len);
            return Ok(head);
        }
        if buf.len() > 64 * 1024 {
            return Err(BenchError::Parse(crate::error::ParseError::Http(
                "head over 64 KiB".into(),
            )));
        }
        if io.read_buf(buf).await? == 0 {
            return Err(BenchError::Closed);
        }
    }
}

/// Reads one whole response (head and body); bytes after it stay in `buf`.
///
/// # Errors
/// I/O errors, a malformed response, or [`BenchError::Closed`].
pub async fn read_response<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
) -> Result<(ResponseHead, Vec<u8>), BenchError> {
    let head = read_head(io, buf).await?;
    let mut body = Vec::new();
    match head.body_kind() {
        BodyKind::Length(n) => {
            while buf.len() < n {
                if io.read_buf(buf).await? == 0 {
                    return Err(BenchError::Closed);
                }
            }
            body.extend_from_slice(&buf.split_to(n));
        }
        BodyKind::Chunked => {
            let mut dec = ChunkedDecoder::default();
            while !dec.decode(buf, &mut body)? {
                if io.read_buf(buf).await? == 0 {
                    return Err(BenchError::Closed);
                }
            }
        }
        BodyKind::Close => {
            while io.read_buf(buf).await? != 0 {}
            body.extend_from_slice(&buf.split());
        }
    }
    Ok((head, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges() {
        let r = parse_source_range("127.0.0.2-127.0.0.5").unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(r[3], Ipv4Addr::new(127, 0, 0, 5));
        assert_eq!(parse_source_range("127.0.0.9").unwrap().len(), 1);
        assert!(parse_source_range("10.0.0.1-10.0.0.2").is_err());
        assert!(parse_source_range("127.0.0.5-127.0.0.2").is_err());
    }

    #[tokio::test]
    async fn reads_length_and_chunked_responses() {
        let wire: &[u8] = b"HTTP/1.1 201 Created\r\ncontent-length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
        let mut io = wire;
        let mut buf = BytesMut::new();
        let (h, b) = read_response(&mut io, &mut buf).await.unwrap();
        assert_eq!((h.status, &b[..]), (201, &b"abc"[..]));
        let (h, b) = read_response(&mut io, &mut buf).await.unwrap();
        assert_eq!((h.status, &b[..]), (200, &b"hi"[..]));
        assert!(matches!(
            read_response(&mut io, &mut buf).await,
            Err(BenchError::Closed)
        ));
    }
}
