//! [`ReadGate`]: polls a future only after that future's own wake, not after every wake of
//! the task.
//!
//! A subscriber's task wakes for every message published on its channels, and `select!` then
//! polls every branch again. The other branches (the socket's read, timers, shutdown) are almost
//! always `Pending`, yet each poll costs: tokio locks the socket's waiter list to store the
//! waker again, yawc polls the socket twice around its own waker, a cancellation token takes its
//! lock (S2 in bench/RESULTS.md, 10,000 WebSocket subscribers: together about 6% of the server's
//! CPU). Behind a gate they get their own waker, which opens the gate; while it is shut, a poll
//! registers the task's waker (one `AtomicWaker`) and returns `Pending`. Used for the read of
//! HTTP/1.1 streams (conn/h1.rs) and for a WebSocket session's seldom-waking branches.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::{ArcWake, AtomicWaker, waker_ref};

/// See the [module docs](self). One per connection. `Pending` from the inner poll must mean it
/// registered the waker it was given, as every `Future` and `AsyncRead` does.
#[derive(Debug)]
pub(crate) struct ReadGate {
    shared: Arc<Shared>,
    /// The waker last registered in `shared.task`. While the gate stays shut it is still there
    /// (only a wake takes it, and a wake opens the gate first), so a poll by the same task need
    /// not register again: a shut gate then costs one atomic load.
    registered: Option<std::task::Waker>,
}

#[derive(Debug)]
struct Shared {
    /// Set when the inner poll may make progress: by its waker, or after it returned `Ready`
    /// (it may hold more, with no wake to come).
    open: AtomicBool,
    /// The task polling the gate.
    task: AtomicWaker,
}

impl ArcWake for Shared {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.open.store(true, Ordering::Release);
        arc_self.task.wake();
    }
}

impl ReadGate {
    /// A gate that lets the first poll through.
    pub(crate) fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                open: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
            registered: None,
        }
    }

    /// Calls `read` with the gate's waker if the gate is open; else registers `cx`'s waker and
    /// returns `Pending` without calling `read`.
    pub(crate) fn poll<T>(&mut self, cx: &mut Context<'_>, read: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        let shared = &self.shared;
        let same_task = self.registered.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if same_task && !shared.open.load(Ordering::Acquire) {
            // Shut, and our waker is still registered; a wake racing with this load has woken
            // (or will wake) this task, and its poll then finds the gate open.
            return Poll::Pending;
        }
        // Registered before the check: a wake between the two is then not lost.
        shared.task.register(cx.waker());
        if !same_task {
            self.registered = Some(cx.waker().clone());
        }
        if !shared.open.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        // Shut before polling: a wake that comes during the poll opens it again. One that came
        // before is covered by this poll.
        shared.open.store(false, Ordering::Relaxed);
        let waker = waker_ref(shared);
        let polled = read(&mut Context::from_waker(&waker));
        if polled.is_ready() {
            shared.open.store(true, Ordering::Relaxed);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

    /// Counts how often the inner read is polled, over a real TCP pair.
    #[tokio::test]
    async fn reads_only_after_the_socket_woke_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut gate = ReadGate::new();
        let mut polls = 0;
        let mut buf = [0u8; 16];
        let mut read_once = |cx: &mut Context<'_>| {
            gate.poll(cx, |inner| {
                polls += 1;
                let mut rb = ReadBuf::new(&mut buf);
                std::pin::Pin::new(&mut server)
                    .poll_read(inner, &mut rb)
                    .map_ok(|()| rb.filled().to_vec())
            })
        };
        // Nothing sent: the first poll reaches the socket, later ones do not.
        for _ in 0..5 {
            assert!(poll_fn(|cx| Poll::Ready(read_once(cx))).await.is_pending());
        }
        client.write_all(b"hi").await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), poll_fn(&mut read_once))
            .await
            .expect("the socket's wake opens the gate")
            .unwrap();
        assert_eq!(got, b"hi");
        // One pending poll, then (after the wake) the one that read.
        assert_eq!(polls, 2);
        // After a ready read the gate stays open: the next poll reaches the socket again.
        let mut polls_after = 0;
        let pending = poll_fn(|cx| {
            Poll::Ready(gate.poll(cx, |inner| {
                polls_after += 1;
                let mut rb = ReadBuf::new(&mut buf);
                std::pin::Pin::new(&mut server).poll_read(inner, &mut rb)
            }))
        })
        .await;
        assert!(pending.is_pending());
        assert_eq!(polls_after, 1);
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
