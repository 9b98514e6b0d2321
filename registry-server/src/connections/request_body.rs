//! Request bodies at the connection: an idle limit, and what is left of a body its handler
//! did not read.
//!
//! The idle timer runs only while the handler waits for the next bytes: a handler that is busy
//! writing to a slow store does not count against the client. An upload whose body fails this
//! way keeps what it committed and can resume, as after any broken connection.
//!
//! A handler may answer before it has read the body: 416 for a chunk at the wrong offset, 401,
//! 507. Closing the connection then, with the client still sending (a 16 MiB chunk), resets it,
//! and the client sees `write: broken pipe` instead of the answer. So the connection reads and
//! discards the rest first when it is announced and small ([`DRAIN_LIMIT`]), which also keeps
//! the connection alive; a larger or unannounced rest closes the connection after the answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// The body error when the client went quiet.
#[derive(Debug, thiserror::Error)]
#[error("the client sent nothing for {0:?}")]
pub struct BodyIdle(pub Duration);

/// `inner` with an idle timeout between its frames.
pub struct IdleLimitedBody<B> {
    inner: B,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    on_expiry: Arc<dyn Fn() + Send + Sync>,
}

impl<B> IdleLimitedBody<B> {
    /// Fails `inner` after `idle` without a frame, reporting it to `on_expiry`.
    pub fn new(inner: B, idle: Duration, on_expiry: Arc<dyn Fn() + Send + Sync>) -> Self {
        IdleLimitedBody {
            inner,
            idle,
            timer: None,
            on_expiry,
        }
    }
}

impl<B> Body for IdleLimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.timer = None;
                    (this.on_expiry)();
                    return Poll::Ready(Some(Err(Box::new(BodyIdle(idle)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The most of an unread body that is read and discarded before the answer goes out: a
/// chunk as large as clients send with Berth's advertised chunk size, and then some.
pub const DRAIN_LIMIT: u64 = 64 << 20;

/// A request body shared by its handler (which reads it through one handle) and the
/// connection (which drains what the handler left, through another).
pub struct SharedBody<B>(Arc<Mutex<Tracked<B>>>);

struct Tracked<B> {
    body: B,
    ended: bool,
}

impl<B> SharedBody<B> {
    /// Two handles on `body`.
    pub fn new(body: B) -> (SharedBody<B>, SharedBody<B>) {
        let shared = Arc::new(Mutex::new(Tracked { body, ended: false }));
        (SharedBody(shared.clone()), SharedBody(shared))
    }
}

impl<B> Body for SharedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut t = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if t.ended {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut t.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            t.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let t = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        t.ended || t.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .body
            .size_hint()
    }
}

impl<B> SharedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// Reads and discards what is left of the body when its length is known and at most
    /// `limit` bytes; returns whether the body has been read to its end.
    pub async fn drain(&mut self, limit: u64) -> bool {
        if self.is_end_stream() {
            return true;
        }
        if self.size_hint().upper().is_none_or(|rest| rest > limit) {
            return false;
        }
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await;
            match frame {
                None => return true,
                Some(Ok(_)) => continue,
                Some(Err(_)) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn what_a_handler_leaves_is_drained_when_small() {
        let full = http_body_util::Full::new(Bytes::from(vec![7u8; 1000]));
        let (mut handler, mut connection) = SharedBody::new(full);
        assert!(!connection.is_end_stream());
        assert!(
            !connection.drain(100).await,
            "more than the limit is left alone"
        );
        assert!(connection.drain(1000).await);
        assert!(handler.frame().await.is_none(), "the handler sees the end");
        let (handler, mut connection) =
            SharedBody::new(http_body_util::Full::new(Bytes::from_static(b"x")));
        drop(handler);
        assert!(connection.drain(10).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_client_fails_its_body_and_a_steady_one_does_not() {
        let (mut tx, rx) =
            futures::channel::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let inner = http_body_util::StreamBody::new(rx);
        let mut body = IdleLimitedBody::new(inner, Duration::from_secs(1), Arc::new(|| {}));
        let feeder = tokio::spawn(async move {
            use futures::SinkExt;
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(900)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .unwrap();
            }
            // Then silence, with the body still open.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        for _ in 0..5 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"x"));
        }
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("sent nothing"), "{err}");
        feeder.abort();
    }
}
