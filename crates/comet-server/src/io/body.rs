//! The body-read timeout (`body_read_timeout_secs`): a request body must be in whole within the
//! limit of its headers' arrival, however slowly its bytes trickle in (a body sent a byte every
//! few seconds would otherwise hold its connection, and the handler's task, forever).
//!
//! [`layer`] wraps every request body in a [`Deadline`]; a handler's read of a body past it fails
//! with a [`BodyTimedOut`] in its error's source chain, which [`timed_out`] finds so the handler
//! can answer `408 body_timeout`. Bodies that are empty are not wrapped, and the timer is only
//! armed once a read has to wait.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn StdError + Send + Sync>;

/// The error a [`Deadline`] body gives once its time is up.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("not in whole within {} s of its headers (body_read_timeout_secs)", .limit.as_secs())]
pub(crate) struct BodyTimedOut {
    /// The limit that ran out.
    pub(crate) limit: Duration,
}

/// A body that fails with [`BodyTimedOut`] once `limit` has passed since it was wrapped.
pub(crate) struct Deadline<B> {
    body: B,
    until: Instant,
    limit: Duration,
    /// Armed at the first read that has to wait. Boxed: most bodies never wait.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> Deadline<B> {
    pub(crate) fn new(body: B, limit: Duration) -> Self {
        Self {
            body,
            until: Instant::now() + limit,
            limit,
            sleep: None,
        }
    }
}

impl<B> http_body::Body for Deadline<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let until = this.until;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(BodyTimedOut { limit: this.limit }))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Wraps `body` in a [`Deadline`] of `limit`, unless it is already over.
pub(crate) fn with_deadline(body: Body, limit: Duration) -> Body {
    use http_body::Body as _;
    if body.is_end_stream() {
        body
    } else {
        Body::new(Deadline::new(body, limit))
    }
}

/// A response body that holds `guard` until it is done or dropped (a place in a limit that
/// lasts as long as the response, such as an HTTP/2 stream's place in
/// `max_connections_per_ip`).
pub(crate) struct Guarded<G> {
    body: Body,
    _guard: G,
}

/// `body`, holding `guard` while it lives.
pub(crate) fn guarded<G: Send + Sync + Unpin + 'static>(body: Body, guard: G) -> Body {
    Body::new(Guarded { body, _guard: guard })
}

impl<G: Unpin> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Whether `error`, or an error in its source chain, is a [`BodyTimedOut`].
pub(crate) fn timed_out(error: &(dyn StdError + 'static)) -> Option<BodyTimedOut> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<BodyTimedOut>() {
            return Some(*t);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body whose bytes trickle in is cut at the limit although each piece came in time; one
    /// that is in whole reads as it is.
    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_fails_at_the_limit_and_a_whole_one_reads() {
        let trickle = futures_util::stream::unfold(0, |sent| async move {
            if sent == 20 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), sent + 1))
        });
        let body = Body::from_stream(trickle);
        let started = Instant::now();
        let err = with_deadline(body, Duration::from_millis(500))
            .collect()
            .await
            .expect_err("the body takes 2 s");
        assert!(started.elapsed() >= Duration::from_millis(500));
        let timed = timed_out(&err).expect("a BodyTimedOut in the chain");
        assert_eq!(timed.limit, Duration::from_millis(500));

        let whole = with_deadline(Body::from("hello"), Duration::from_millis(1));
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(whole.collect().await.unwrap().to_bytes(), "hello");
    }
}
