//! A request body that fails when its client sends nothing for a while.
//!
//! The timer runs only while the handler waits for the next bytes: a handler that is busy
//! writing to a slow store does not count against the client. An upload whose body fails this
//! way keeps what it committed and can resume, as after any broken connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

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
