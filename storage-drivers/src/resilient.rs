//! A store that is slow, throttles and fails, made dependable: every object-store driver is
//! wrapped in this.
//!
//! - A failed request is tried again, with jittered backoff, until a time budget is spent
//!   (default long enough to ride out a 10 s outage); then the operation fails as
//!   [`StorageError::Unavailable`], which clients get as 503 with `Retry-After`.
//! - A conditional write that may have been applied before its answer was lost comes back as
//!   "already exists" or "precondition failed" when it is tried again (or when the client
//!   library retried it). It is reconciled: the object is read back, and if it holds exactly
//!   the bytes written, the write succeeded. A completed multipart write that reports the
//!   upload unknown is reconciled the same way, by the object's size.
//! - Streams are written part by part through the driver's multipart writes, each part held
//!   until it is stored, so that a failed part is sent again instead of failing the stream,
//!   and the next part is received while the last one uploads.
//! - Cleanup that fails after the work is done (the delete of a rename's source) is logged, not
//!   reported: the operation succeeded.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use registry_core::storage::{
    ByteStream, DanglingMultipart, GetResponse, Listing, MultipartHandle, ObjectInfo, PartPolicy,
    PartSlot, PutCondition, StorageDriver, StorageError, WrittenPart,
};

/// How long and how often requests are tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total time one operation may spend trying.
    pub budget: Duration,
    /// The first pause; each next one doubles, up to `max_backoff`.
    pub first_backoff: Duration,
    /// The longest pause.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            budget: Duration::from_secs(30),
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(3),
        }
    }
}

/// Whether an error may go away if the request is sent again.
fn transient(e: &StorageError) -> bool {
    matches!(e, StorageError::Backend(_))
}

/// A pause in `[d/2, d]`, so that replicas retrying together spread out.
fn jittered(d: Duration) -> Duration {
    let nanos = d.as_nanos() as u64;
    let random = uuid::Uuid::new_v4().as_u64_pair().0;
    Duration::from_nanos(nanos / 2 + random % (nanos / 2 + 1))
}

/// A driver whose requests are retried within a budget and whose ambiguous writes are
/// reconciled.
#[derive(Debug, Clone)]
pub struct Resilient {
    inner: Arc<dyn StorageDriver>,
    policy: RetryPolicy,
}

impl Resilient {
    /// `inner` under `policy`.
    pub fn new(inner: Arc<dyn StorageDriver>, policy: RetryPolicy) -> Resilient {
        Resilient { inner, policy }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the budget is spent.
    async fn retry<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StorageError>>,
    {
        let started = Instant::now();
        let mut backoff = self.policy.first_backoff;
        let mut tries = 0u32;
        loop {
            tries += 1;
            match attempt().await {
                Err(e) if transient(&e) => {
                    let pause = jittered(backoff);
                    if started.elapsed() + pause > self.policy.budget {
                        tracing::warn!(operation = what, tries, error = %e, "the store did not answer within the retry budget");
                        return Err(StorageError::Unavailable(format!(
                            "{what}: {tries} tries in {:.1} s: {e}",
                            started.elapsed().as_secs_f64()
                        )));
                    }
                    tracing::debug!(operation = what, tries, error = %e, "store request failed: trying again");
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(self.policy.max_backoff);
                }
                other => return other,
            }
        }
    }

    /// Whether `key` holds exactly `data` (after a conditional write reported a conflict).
    async fn holds(&self, key: &str, data: &Bytes) -> Option<ObjectInfo> {
        match self.retry("read back", || self.inner.read_small(key)).await {
            Ok((body, info)) if body == *data => Some(info),
            _ => None,
        }
    }

    /// Writes one part of a stream, trying again until the budget is spent.
    async fn stream_part(
        &self,
        key: &str,
        handle: &MultipartHandle,
        index: usize,
        offset: u64,
        data: Vec<Bytes>,
    ) -> Result<WrittenPart, StorageError> {
        let slot = PartSlot {
            index,
            offset,
            writer: 0,
        };
        self.retry("put part", || {
            self.inner.put_part(key, handle, slot, data.clone())
        })
        .await
    }
}

#[async_trait]
impl StorageDriver for Resilient {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn part_policy(&self) -> PartPolicy {
        self.inner.part_policy()
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetResponse, StorageError> {
        self.retry("get", || self.inner.get(key, range.clone()))
            .await
    }

    async fn stat(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        self.retry("stat", || self.inner.stat(key)).await
    }

    async fn read_small(&self, key: &str) -> Result<(Bytes, ObjectInfo), StorageError> {
        self.retry("read", || self.inner.read_small(key)).await
    }

    async fn put_bytes(
        &self,
        key: &str,
        data: Bytes,
        condition: PutCondition,
    ) -> Result<ObjectInfo, StorageError> {
        let conditional = !matches!(condition, PutCondition::Overwrite);
        let result = self
            .retry("put", || {
                self.inner.put_bytes(key, data.clone(), condition.clone())
            })
            .await;
        match result {
            Err(e @ (StorageError::AlreadyExists(_) | StorageError::Precondition(_)))
                if conditional =>
            {
                // Maybe this very write, applied before its answer was lost.
                match self.holds(key, &data).await {
                    Some(info) => {
                        tracing::info!(
                            key,
                            "a conditional write reported a conflict but had been applied: reconciled"
                        );
                        Ok(info)
                    }
                    None => Err(e),
                }
            }
            other => other,
        }
    }

    async fn put_stream(&self, key: &str, mut body: ByteStream) -> Result<u64, StorageError> {
        let part_size = self.inner.part_policy().part_size.max(1);
        let mut buf: Vec<Bytes> = Vec::new();
        let mut buf_len = 0u64;
        let mut total = 0u64;
        let mut handle: Option<MultipartHandle> = None;
        let mut parts: Vec<WrittenPart> = Vec::new();
        // One part uploads while the next is received.
        let mut in_flight: Option<
            std::pin::Pin<
                Box<
                    dyn std::future::Future<Output = Result<WrittenPart, StorageError>> + Send + '_,
                >,
            >,
        > = None;
        let outcome: Result<(), StorageError> = async {
            while let Some(chunk) = body.next().await {
                let mut chunk = chunk?;
                total += chunk.len() as u64;
                while !chunk.is_empty() {
                    let take = ((part_size - buf_len) as usize).min(chunk.len());
                    buf.push(chunk.split_to(take));
                    buf_len += take as u64;
                    if buf_len == part_size {
                        if handle.is_none() {
                            handle = Some(
                                self.retry("create multipart", || self.inner.create_multipart(key))
                                    .await?,
                            );
                        }
                        if let Some(f) = in_flight.take() {
                            parts.push(f.await?);
                        }
                        let data = std::mem::take(&mut buf);
                        let (index, offset) = (parts.len(), parts.len() as u64 * part_size);
                        let h = handle
                            .clone()
                            .ok_or(StorageError::Backend("no upload".into()))?;
                        in_flight = Some(Box::pin(async move {
                            self.stream_part(key, &h, index, offset, data).await
                        }));
                        buf_len = 0;
                    }
                }
            }
            if let Some(f) = in_flight.take() {
                parts.push(f.await?);
            }
            Ok(())
        }
        .await;
        // A part in flight when the body failed must still end before the upload is aborted.
        if let Some(f) = in_flight.take() {
            let _ = f.await;
        }
        if let Err(e) = outcome {
            if let Some(h) = &handle {
                let _ = self.inner.abort_multipart(key, h).await;
            }
            return Err(e);
        }
        match handle {
            None => {
                let data = Bytes::from(buf.concat());
                self.put_bytes(key, data, PutCondition::Overwrite).await?;
            }
            Some(h) => {
                if buf_len > 0 {
                    let offset = parts.len() as u64 * part_size;
                    let part = self
                        .stream_part(key, &h, parts.len(), offset, std::mem::take(&mut buf))
                        .await;
                    match part {
                        Ok(p) => parts.push(p),
                        Err(e) => {
                            let _ = self.inner.abort_multipart(key, &h).await;
                            return Err(e);
                        }
                    }
                }
                if let Err(e) = self.complete_multipart(key, &h, &parts, total).await {
                    let _ = self.inner.abort_multipart(key, &h).await;
                    return Err(e);
                }
            }
        }
        Ok(total)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.retry("delete", || self.inner.delete(key)).await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        self.retry("delete prefix", || self.inner.delete_prefix(prefix))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StorageError> {
        self.retry("list", || self.inner.list(prefix)).await
    }

    fn list_recursive(&self, prefix: &str) -> BoxStream<'static, Result<String, StorageError>> {
        // A listing that fails part-way is not resumable here; its callers (GC, purge) run
        // again later.
        self.inner.list_recursive(prefix)
    }

    fn lists_with_info(&self) -> bool {
        self.inner.lists_with_info()
    }

    async fn list_with_info(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, ObjectInfo)>, StorageError> {
        self.retry("list", || self.inner.list_with_info(prefix))
            .await
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), StorageError> {
        self.retry("copy", || self.inner.copy(from, to)).await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), StorageError> {
        self.copy(from, to).await?;
        if let Err(e) = self.delete(from).await {
            // The object is in place: what is left at `from` is garbage for the purge.
            tracing::warn!(from, to, error = %e, "renamed, but the source could not be removed");
        }
        Ok(())
    }

    async fn publish(&self, from: &str, to: &str, size: u64) -> Result<(), StorageError> {
        // Every store behind this publishes by a copy, which is safe to try again (a move, a
        // copy then a delete that may fail after it was applied, would not be).
        self.retry("publish", || self.inner.publish(from, to, size))
            .await
    }

    async fn delete_known(&self, prefix: &str, keys: &[String]) -> Result<(), StorageError> {
        self.retry("delete", || self.inner.delete_known(prefix, keys))
            .await
    }

    async fn presign_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<Option<String>, StorageError> {
        self.retry("presign", || self.inner.presign_get(key, expires_in))
            .await
    }

    async fn create_multipart(&self, key: &str) -> Result<MultipartHandle, StorageError> {
        self.retry("create multipart", || self.inner.create_multipart(key))
            .await
    }

    async fn put_part(
        &self,
        key: &str,
        handle: &MultipartHandle,
        slot: PartSlot,
        data: Vec<Bytes>,
    ) -> Result<WrittenPart, StorageError> {
        self.retry("put part", || {
            self.inner.put_part(key, handle, slot, data.clone())
        })
        .await
    }

    async fn put_part_copy(
        &self,
        key: &str,
        handle: &MultipartHandle,
        slot: PartSlot,
        source: &str,
        len: u64,
    ) -> Result<WrittenPart, StorageError> {
        self.retry("copy part", || {
            self.inner.put_part_copy(key, handle, slot, source, len)
        })
        .await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        handle: &MultipartHandle,
        parts: &[WrittenPart],
        size: u64,
    ) -> Result<(), StorageError> {
        let result = self
            .retry("complete multipart", || {
                self.inner.complete_multipart(key, handle, parts, size)
            })
            .await;
        match result {
            Ok(()) => Ok(()),
            // A completion applied before its answer was lost leaves the upload unknown to
            // the next try: the object itself says whether it happened.
            Err(e) => match self.stat(key).await {
                Ok(info) if info.size == size => {
                    tracing::info!(
                        key,
                        "a multipart completion reported a failure but had been applied: reconciled"
                    );
                    Ok(())
                }
                _ => Err(e),
            },
        }
    }

    async fn abort_multipart(
        &self,
        key: &str,
        handle: &MultipartHandle,
    ) -> Result<(), StorageError> {
        match self
            .retry("abort multipart", || {
                self.inner.abort_multipart(key, handle)
            })
            .await
        {
            Err(StorageError::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    async fn dangling_multiparts(
        &self,
        prefix: &str,
        before: std::time::SystemTime,
    ) -> Result<Vec<DanglingMultipart>, StorageError> {
        self.retry("list multipart uploads", || {
            self.inner.dangling_multiparts(prefix, before)
        })
        .await
    }

    async fn settle(&self) {
        self.inner.settle().await
    }
}
