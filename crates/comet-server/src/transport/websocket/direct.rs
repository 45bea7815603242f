//! A plain TCP WebSocket written without yawc's buffer: the connection is shared between yawc,
//! which reads frames and writes pongs and closes through [`SharedTcp`], and the session, whose
//! message frames [`Direct`] writes itself, one encoding per message for every socket.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::io::joined::{JOIN_BELOW, with_joined};

/// A TCP connection that yawc reads and writes (pongs, closes) while the session writes its own
/// frames to it directly ([`Direct`]). Reads and writes wait for readiness and then try, as
/// tokio's own split halves do.
pub(super) struct SharedTcp(pub(super) Arc<TcpStream>);

impl AsyncRead for SharedTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale; `try_read` cleared it, so the next poll registers.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

/// The session's own writes to a plain TCP connection without compression: each message's frame
/// is encoded once and shared by every socket (socket.rs `text_frame`), and a batch goes out in one
/// vectored write, without a copy into yawc's buffer.
pub(super) struct Direct {
    pub(super) tcp: Arc<TcpStream>,
    /// Encoded frames not yet written; those before `written` are, and the one at `written` may
    /// have been in part (its written bytes are advanced past).
    pub(super) frames: Vec<Bytes>,
    pub(super) written: usize,
    /// yawc may hold bytes not yet written (a pong it queued while reading): they go first, so
    /// frames are never interleaved.
    pub(super) yawc_dirty: bool,
}

impl Direct {
    /// The most frames handed to one `writev`.
    const MAX_SLICES: usize = 64;

    /// Writes every frame in `frames`.
    pub(super) fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.frames.len() {
            let pending = &self.frames[self.written..];
            // Tried first: the socket is usually writable, and `try_*` checks its readiness.
            let tried = if let [frame] = pending {
                self.tcp.try_write(frame)
            } else if pending.iter().map(Bytes::len).sum::<usize>() <= JOIN_BELOW {
                with_joined(pending.iter().map(|f| &f[..]), |joined| self.tcp.try_write(joined))
            } else {
                let mut slices = [IoSlice::new(&[]); Self::MAX_SLICES];
                let count = pending.len().min(Self::MAX_SLICES);
                for (slice, frame) in slices.iter_mut().zip(pending) {
                    *slice = IoSlice::new(frame);
                }
                self.tcp.try_write_vectored(&slices[..count])
            };
            let mut n = match tried {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_write_ready(cx))?;
                    continue;
                }
                Err(e) => return Poll::Ready(Err(e)),
            };
            while n > 0 {
                let frame = &mut self.frames[self.written];
                if n < frame.len() {
                    frame.advance(n);
                    break;
                }
                n -= frame.len();
                self.written += 1;
            }
        }
        self.written = 0;
        // A burst's room is given back; the usual batch's is kept.
        if self.frames.capacity() > Self::MAX_SLICES {
            self.frames = Vec::new();
        } else {
            self.frames.clear();
        }
        Poll::Ready(Ok(()))
    }
}
