//! Hashing a streamed blob on its own thread, so that receiving, hashing and writing overlap.
//!
//! A single SHA-256 stream runs at about one core's worth of bytes; done on the request task it
//! caps an upload at that rate minus the cost of receiving. Small bodies (configs, tiny layers)
//! are hashed inline: a thread only pays off once a body is large.

use bytes::Bytes;
use futures::SinkExt;
use futures::channel::{mpsc, oneshot};

use crate::digest::DigestHasher;

/// Bytes hashed inline before the rest moves to a hashing thread.
const INLINE_LIMIT: u64 = 1 << 20;
/// Chunks queued for the hashing thread (bounded: memory per upload).
const QUEUE: usize = 2;

/// Feeds a blob's bytes to a hasher, inline at first and then on a dedicated thread.
pub(crate) struct HashFeed {
    inline: Option<DigestHasher>,
    seen: u64,
    worker: Option<(mpsc::Sender<Bytes>, oneshot::Receiver<DigestHasher>)>,
}

impl HashFeed {
    /// A feed continuing `hasher` (a session's saved state); `expected_len`, when the request
    /// announced one, starts the thread at once for a large body.
    pub(crate) fn resume(hasher: DigestHasher, expected_len: Option<u64>) -> Self {
        let mut feed = HashFeed {
            inline: Some(hasher),
            seen: 0,
            worker: None,
        };
        if expected_len.is_some_and(|n| n >= INLINE_LIMIT)
            && let Some(h) = feed.inline.take()
        {
            match spawn(h.clone()) {
                Ok(worker) => feed.worker = Some(worker),
                Err(_) => feed.inline = Some(h),
            }
        }
        feed
    }

    /// Adds the next chunk; waits only when the hashing thread is a full queue behind.
    pub(crate) async fn update(&mut self, chunk: &Bytes) -> Result<(), HashThreadGone> {
        self.seen += chunk.len() as u64;
        if let Some(h) = self.inline.as_mut() {
            h.update(chunk);
            if self.seen >= INLINE_LIMIT
                && let Some(h) = self.inline.take()
            {
                self.worker = Some(spawn(h)?);
            }
            return Ok(());
        }
        match self.worker.as_mut() {
            Some((tx, _)) => tx.send(chunk.clone()).await.map_err(|_| HashThreadGone),
            None => Err(HashThreadGone),
        }
    }

    /// The hasher after everything fed (to save, or to finish into a digest).
    pub(crate) async fn finish(self) -> Result<DigestHasher, HashThreadGone> {
        if let Some(h) = self.inline {
            return Ok(h);
        }
        let Some((tx, done)) = self.worker else {
            return Err(HashThreadGone);
        };
        // Closing the queue ends the thread once it has drained it; it hands the hasher back.
        drop(tx);
        done.await.map_err(|_| HashThreadGone)
    }
}

fn spawn(
    mut hasher: DigestHasher,
) -> Result<(mpsc::Sender<Bytes>, oneshot::Receiver<DigestHasher>), HashThreadGone> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("berth-hash".into())
        .spawn(move || {
            futures::executor::block_on(async {
                use futures::StreamExt;
                while let Some(chunk) = rx.next().await {
                    hasher.update(&chunk);
                }
            });
            let _ = done_tx.send(hasher);
        })
        .map_err(|_| HashThreadGone)?;
    Ok((tx, done_rx))
}

/// The hashing thread could not be started or died.
#[derive(Debug, thiserror::Error)]
#[error("the hashing thread stopped")]
pub(crate) struct HashThreadGone;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    #[test]
    fn inline_and_threaded_digests_match_one_pass_hashing() {
        futures::executor::block_on(async {
            for (algorithm, sizes) in [
                (Algorithm::Sha256, vec![0usize]),
                (Algorithm::Sha256, vec![10, 20]),
                (Algorithm::Sha256, vec![700_000, 700_000, 3, 5_000_000]),
                (Algorithm::Sha512, vec![1 << 20, 1, 2 << 20]),
            ] {
                let chunks: Vec<Bytes> = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, n)| Bytes::from(vec![i as u8 + 7; *n]))
                    .collect();
                let mut feed = HashFeed::resume(DigestHasher::new(algorithm), None);
                let mut one_pass = DigestHasher::new(algorithm);
                for c in &chunks {
                    feed.update(c).await.unwrap();
                    one_pass.update(c);
                }
                let threaded = feed.worker.is_some();
                assert_eq!(threaded, sizes.iter().sum::<usize>() as u64 >= INLINE_LIMIT);
                assert_eq!(
                    feed.finish().await.unwrap().finish(),
                    one_pass.finish(),
                    "{sizes:?}"
                );
            }
        });
    }
}
