//! An upstream's blob bytes, checked as they pass.
//!
//! The bytes are hashed on the way and the last chunk is held back until the upstream's body
//! has ended and hashed to the digest: on a mismatch the stream ends with an error instead, so
//! a client's transfer fails before it completes (its Content-Length is never met) and never
//! looks like a successful one. The stream also ends with an error once it passes the length
//! the upstream announced or, without one, the configured maximum, so an endless body cannot
//! fill the store.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use registry_core::Digest;
use registry_core::digest::DigestHasher;

/// Why the upstream's bytes were refused.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Refused {
    /// More bytes than the limit.
    #[error("the upstream sent more than {0} bytes for the blob")]
    TooLong(u64),
    /// Fewer bytes than announced.
    #[error("the upstream's body ended after {got} of {announced} bytes")]
    TooShort {
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        announced: u64,
    },
    /// The bytes are not the digest.
    #[error("the upstream's bytes hash to {0}, not the digest asked for")]
    Mismatch(Digest),
    /// The upstream's body failed.
    #[error("the upstream's body failed: {0}")]
    Body(String),
}

/// The checking stream over an upstream body.
pub(crate) struct Verified<S> {
    inner: S,
    hasher: Option<DigestHasher>,
    expected: Digest,
    announced: Option<u64>,
    limit: u64,
    seen: u64,
    held: Option<Bytes>,
    done: bool,
}

/// Checks `inner`, the body of blob `expected`, announced as `announced` bytes (if at all),
/// allowing at most `max` bytes.
pub(crate) fn verified<S>(
    inner: S,
    expected: &Digest,
    announced: Option<u64>,
    max: u64,
) -> Verified<S> {
    Verified {
        inner,
        hasher: Some(DigestHasher::new(expected.algorithm())),
        expected: expected.clone(),
        announced,
        limit: announced.map_or(max, |a| a.min(max)),
        seen: 0,
        held: None,
        done: false,
    }
}

impl<S, E> Stream for Verified<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, Refused>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(Refused::Body(e.to_string()))));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    this.seen += chunk.len() as u64;
                    if this.seen > this.limit {
                        this.done = true;
                        return Poll::Ready(Some(Err(Refused::TooLong(this.limit))));
                    }
                    if let Some(h) = &mut this.hasher {
                        h.update(&chunk);
                    }
                    // The previous chunk may go now: it is not the last.
                    if let Some(out) = this.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if let Some(announced) = this.announced
                        && this.seen < announced
                    {
                        return Poll::Ready(Some(Err(Refused::TooShort {
                            got: this.seen,
                            announced,
                        })));
                    }
                    let Some(hasher) = this.hasher.take() else {
                        return Poll::Ready(None);
                    };
                    let got = hasher.finish();
                    if got != this.expected {
                        return Poll::Ready(Some(Err(Refused::Mismatch(got))));
                    }
                    return Poll::Ready(this.held.take().map(Ok));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use registry_core::digest::Algorithm;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    async fn run(
        parts: &[&'static [u8]],
        digest: &Digest,
        announced: Option<u64>,
        max: u64,
    ) -> (Vec<u8>, Option<Refused>) {
        let mut s = verified(chunks(parts), digest, announced, max);
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn the_right_bytes_pass_whole() {
        let d = Digest::of(Algorithm::Sha256, b"hello world");
        let (got, err) = run(&[b"hello", b" ", b"world"], &d, Some(11), 100).await;
        assert_eq!(got, b"hello world");
        assert!(err.is_none());
        let d512 = Digest::of(Algorithm::Sha512, b"hello world");
        assert!(run(&[b"hello world"], &d512, None, 100).await.1.is_none());
    }

    #[tokio::test]
    async fn wrong_bytes_never_arrive_whole() {
        let d = Digest::of(Algorithm::Sha256, b"hello world");
        let (got, err) = run(&[b"hello", b" ", b"w0rld"], &d, Some(11), 100).await;
        assert!(matches!(err, Some(Refused::Mismatch(_))));
        assert!(got.len() < 11, "the last chunk was held back");
        // One chunk only: nothing at all reaches the client.
        let (got, err) = run(&[b"hello w0rld"], &d, Some(11), 100).await;
        assert!(got.is_empty() && err.is_some());
    }

    #[tokio::test]
    async fn lengths_are_bounded() {
        let d = Digest::of(Algorithm::Sha256, b"hello world");
        let (_, err) = run(&[b"hello", b" world", b"!!!"], &d, Some(11), 100).await;
        assert!(matches!(err, Some(Refused::TooLong(11))));
        let (_, err) = run(&[b"hello", b" world"], &d, None, 8).await;
        assert!(matches!(err, Some(Refused::TooLong(8))));
        let (_, err) = run(&[b"hello"], &d, Some(11), 100).await;
        assert!(matches!(
            err,
            Some(Refused::TooShort {
                got: 5,
                announced: 11
            })
        ));
    }
}
