//! The write-stall timeout (`write_stall_timeout_secs`) of connections served by hyper.
//!
//! A client that stops reading leaves the server's writes blocked: its socket buffer is full
//! and the connection's task waits. [`WriteStall`] wraps the connection and fails a write (or
//! flush) with `TimedOut` once it has been blocked for the limit without a byte going out;
//! hyper then closes the connection and drops the response body, and with it what the body
//! held. Streams written without hyper (h1_stream.rs) have the same limit around their writes.
//!
//! The clock starts when a write first returns `Pending` after progress, and stops at the next
//! write that takes bytes, so a client that reads slowly but steadily is not cut; an idle
//! connection (nothing to write) never starts it.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A connection whose writes fail with [`io::ErrorKind::TimedOut`] after `limit` blocked.
#[derive(Debug)]
pub(crate) struct WriteStall<IO> {
    io: IO,
    limit: Duration,
    /// Set while writes are blocked: fires `limit` after the first blocked one. Boxed, and only
    /// then: every idle connection holds this struct.
    blocked: Option<Pin<Box<Sleep>>>,
}

impl<IO> WriteStall<IO> {
    /// `io`, with writes blocked for more than `limit` failing.
    pub(crate) fn new(io: IO, limit: Duration) -> Self {
        Self {
            io,
            limit,
            blocked: None,
        }
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

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteStall<IO> {
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
        let result = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, result, |()| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A write into a pipe nobody reads fails after the limit; one the reader drains does not.
    #[tokio::test]
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
}
