//! A request body that feeds every chunk to a [`HashFeed`] on its way to storage, so that the
//! driver pulls, the hashing thread hashes and the writer writes at the same time.

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::oneshot;

use crate::digest::DigestHasher;
use crate::storage::{ByteStream, StorageError};
use crate::upload::hash_feed::{HashFeed, HashThreadGone};

/// What the stream does when the body fails or runs past its announced length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnFailure {
    /// Yield the error: the driver must not make the object appear.
    Fail,
    /// End the stream: the driver keeps what arrived, so a client can resume after it.
    EndCleanly,
}

/// Why a body stopped early.
#[derive(Debug)]
pub(crate) enum BodyFailure {
    /// Reading the request body failed (the client went away).
    Body(StorageError),
    /// More bytes arrived than Content-Range announced.
    TooLong,
}

/// The hasher over exactly the bytes passed on to the driver, and how the body ended.
pub(crate) struct HashOutcome {
    /// The hasher after the bytes passed on.
    pub hasher: Result<DigestHasher, HashThreadGone>,
    /// Bytes passed on to the driver.
    pub passed: u64,
    /// Set when the body stopped early.
    pub failure: Option<BodyFailure>,
}

struct Tap {
    body: ByteStream,
    feed: Option<HashFeed>,
    done: Option<oneshot::Sender<HashOutcome>>,
    passed: u64,
    expected_len: Option<u64>,
    on_failure: OnFailure,
}

impl Tap {
    async fn report(&mut self, failure: Option<BodyFailure>) {
        if let (Some(feed), Some(done)) = (self.feed.take(), self.done.take()) {
            let _ = done.send(HashOutcome {
                hasher: feed.finish().await,
                passed: self.passed,
                failure,
            });
        }
    }

    /// The next item for the driver, or `None` at the end.
    async fn next(&mut self) -> Option<Result<Bytes, StorageError>> {
        self.feed.as_ref()?;
        let failure = match self.body.next().await {
            None => {
                self.report(None).await;
                return None;
            }
            Some(Err(e)) => BodyFailure::Body(e),
            Some(Ok(chunk)) => {
                let too_long = self
                    .expected_len
                    .is_some_and(|n| self.passed + chunk.len() as u64 > n);
                if too_long {
                    BodyFailure::TooLong
                } else {
                    match self.feed.as_mut()?.update(&chunk).await {
                        Ok(()) => {
                            self.passed += chunk.len() as u64;
                            return Some(Ok(chunk));
                        }
                        Err(e) => BodyFailure::Body(StorageError::backend(e)),
                    }
                }
            }
        };
        let error = match &failure {
            BodyFailure::Body(e) => StorageError::Backend(format!("request body: {e}")),
            BodyFailure::TooLong => StorageError::Backend("body longer than Content-Range".into()),
        };
        self.report(Some(failure)).await;
        match self.on_failure {
            OnFailure::Fail => Some(Err(error)),
            OnFailure::EndCleanly => None,
        }
    }
}

/// `body` with every chunk fed to `feed` before the driver gets it; `done` receives the outcome
/// when the body ends or fails.
pub(crate) fn hashed_body(
    body: ByteStream,
    feed: HashFeed,
    expected_len: Option<u64>,
    on_failure: OnFailure,
    done: oneshot::Sender<HashOutcome>,
) -> ByteStream {
    let tap = Tap {
        body,
        feed: Some(feed),
        done: Some(done),
        passed: 0,
        expected_len,
        on_failure,
    };
    futures::stream::unfold(tap, |mut tap| async move {
        let item = tap.next().await?;
        Some((item, tap))
    })
    .boxed()
}
