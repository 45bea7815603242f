//! The write-stall timeout (`write_stall_timeout_secs`) of connections served by hyper.
//!
//! A client that stops reading leaves the server's writes blocked: its socket buffer is full
//! and the connection's task waits. [`WriteStall`] wraps the connection and fails a write (or
//! flush) with `TimedOut` once it has been blocked for the limit without a byte going out;
//! hyper then closes the connection and drops the response body, and with it what the body
//! held. Streams written without hyper (conn/h1.rs) have the same limit around their writes.
//!
//! The clock starts when a write first returns `Pending` after progress, and stops at the next
//! write that takes bytes, so a client that reads slowly but steadily is not cut; an idle
//! connection (nothing to write) never starts it.
//!
//! It also closes connections lingering, as nginx does (`lingering_close`): a server that
//! answers before it has read the whole request (`413` past the body limit, `408`, hyper's
//! `431`) and then closes a socket with unread bytes makes the kernel send a reset, and the
//! client, still sending, loses the answer it has not read yet. So [`WriteStall`]'s shutdown
//! sends its FIN and then reads and discards what comes until the client closes too, for at most
//! [`LINGER_TIME`] and [`LINGER_IDLE`] between reads.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The longest a closing connection goes on reading what its client still sends (nginx's
/// `lingering_time` is 30 s; a client sends a body of many MiB in well under this on the
/// networks push servers meet, and a hostile one is not read for long).
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(5);

/// The longest a closing connection waits for the next bytes (or the client's FIN) before it
/// closes (nginx's `lingering_timeout` is 5 s).
pub(crate) const LINGER_IDLE: Duration = Duration::from_secs(1);

/// Reads per poll while lingering, before yielding to other tasks.
const LINGER_READS_PER_POLL: usize = 32;

/// A connection whose writes fail with [`io::ErrorKind::TimedOut`] after `limit` blocked.
#[derive(Debug)]
pub(crate) struct WriteStall<IO> {
    io: IO,
    limit: Duration,
    /// Set while writes are blocked: fires `limit` after the first blocked one. Boxed, and only
    /// then: every idle connection holds this struct.
    blocked: Option<Pin<Box<Sleep>>>,
    /// Set once the FIN is sent: the end of lingering, and the idle timer between reads.
    lingering: Option<(Instant, Pin<Box<Sleep>>)>,
}

impl<IO> WriteStall<IO> {
    /// `io`, with writes blocked for more than `limit` failing.
    pub(crate) fn new(io: IO, limit: Duration) -> Self {
        Self {
            io,
            limit,
            blocked: None,
            lingering: None,
        }
    }

    /// The connection, unwrapped.
    pub(crate) fn into_inner(self) -> IO {
        self.io
    }

    /// Passes `result` on: `Pending` starts (or goes on with) the clock, and fails once it has
    /// run out; anything that moved bytes (`progress`) stops it.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
        progress: fn(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => {
                let limit = self.limit;
                let blocked = self.blocked.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if blocked.as_mut().poll(cx).is_ready() {
                    self.blocked = None;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client took no bytes for {} s (write_stall_timeout_secs)",
                            limit.as_secs()
                        ),
                    )));
                }
                Poll::Pending
            }
            Poll::Ready(Ok(value)) => {
                if progress(&value) {
                    self.blocked = None;
                }
                Poll::Ready(Ok(value))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteStall<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WriteStall<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, result, |n| *n > 0)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, result, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, result, |()| true)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.lingering.is_none() {
            let result = Pin::new(&mut self.io).poll_shutdown(cx);
            match self.watch(cx, result, |()| true) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            let now = Instant::now();
            self.lingering = Some((now + LINGER_TIME, Box::pin(tokio::time::sleep_until(now + LINGER_IDLE))));
        }
        linger(&mut *self, cx)
    }
}

/// Reads and discards until the client's FIN, an error, or the end of lingering; always `Ok`
/// (the FIN is out: a client that keeps sending loses only what it sends after the answer).
fn linger<IO: AsyncRead + Unpin>(this: &mut WriteStall<IO>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    let Some((until, idle)) = this.lingering.as_mut() else {
        return Poll::Ready(Ok(()));
    };
    let mut scratch = [0u8; 4096];
    for _ in 0..LINGER_READS_PER_POLL {
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                let now = Instant::now();
                if now >= *until {
                    return Poll::Ready(Ok(()));
                }
                idle.as_mut().reset((now + LINGER_IDLE).min(*until));
            }
            // The client's FIN, or the connection is gone.
            Poll::Ready(_) => return Poll::Ready(Ok(())),
            Poll::Pending => {
                return match idle.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Ok(())),
                    Poll::Pending => Poll::Pending,
                };
            }
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A write into a pipe nobody reads fails after the limit; one the reader drains does not.
    #[tokio::test(start_paused = true)]
    async fn a_write_blocked_for_the_limit_fails_and_progress_resets_the_clock() {
        let (near, far) = tokio::io::duplex(1024);
        let limit = Duration::from_secs(1);
        let mut io = WriteStall::new(near, limit);
        let block = vec![b'x'; 4096];
        let started = tokio::time::Instant::now();
        let err = io.write_all(&block).await.expect_err("nobody reads");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= limit);

        // A reader that takes 1,024 bytes every 50 ms keeps it going: each read is progress,
        // although the whole write takes longer than a blocked one may.
        let (near, mut far2) = tokio::io::duplex(1024);
        let mut io = WriteStall::new(near, limit);
        let block = vec![b'x'; 24 * 1024];
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 1024];
            while got < 24 * 1024 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                got += far2.read(&mut buf).await.unwrap();
            }
            got
        });
        io.write_all(&block).await.expect("a slow but steady reader is not cut");
        assert_eq!(reader.await.unwrap(), 24 * 1024);
        drop(far);
    }

    /// Shutdown sends the FIN at once, then reads what the client still sends until it closes
    /// (here: it sends 64 KiB more, then closes), so the answer before it is not lost to a
    /// reset; a client that neither sends nor closes is let go after `LINGER_IDLE`.
    #[tokio::test(start_paused = true)]
    async fn shutdown_lingers_until_the_client_closes_or_idles() {
        let (near, mut far) = tokio::io::duplex(4096);
        let mut io = WriteStall::new(near, Duration::from_secs(5));
        io.write_all(b"HTTP/1.1 413 Payload Too Large\r\n\r\n").await.unwrap();
        let client = tokio::spawn(async move {
            let mut answer = vec![0u8; 64];
            let n = far.read(&mut answer).await.unwrap();
            far.write_all(&vec![b'x'; 64 * 1024])
                .await
                .expect("the server still reads");
            let mut rest = Vec::new();
            far.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
            answer.truncate(n);
            answer
        });
        tokio::time::timeout(LINGER_TIME, io.shutdown())
            .await
            .expect("done when the client closes")
            .unwrap();
        assert!(client.await.unwrap().starts_with(b"HTTP/1.1 413"));

        let (near, far) = tokio::io::duplex(4096);
        let mut io = WriteStall::new(near, Duration::from_secs(5));
        let started = Instant::now();
        io.shutdown().await.unwrap();
        let waited = started.elapsed();
        assert!(waited >= LINGER_IDLE && waited < LINGER_TIME, "{waited:?}");
        drop(far);
    }
}
