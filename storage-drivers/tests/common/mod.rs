//! A store wrapper for tests that need another replica's request at an exact moment, or a
//! store that fails chosen writes.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use registry_core::StorageDriver;
use registry_core::storage::{
    ByteStream, DanglingMultipart, GetResponse, Listing, MultipartHandle, ObjectInfo, PartPolicy,
    PartSlot, PutCondition, StorageError, WrittenPart,
};

/// Something another replica does, run once when the collector's store is asked to do what
/// `trigger` matches (before it is done).
pub type Interjection = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A store that runs an interjection right before a chosen move or delete, and fails the
/// small writes and stats chosen.
#[derive(Clone)]
pub struct Interposed {
    /// The store underneath.
    pub inner: Arc<dyn StorageDriver>,
    /// Matches the key a publish goes to, or a delete removes.
    pub trigger: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// What runs then, once.
    pub interjection: Arc<Mutex<Option<Interjection>>>,
    /// Matches the keys whose `put_bytes` fail.
    pub failing: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// Matches the keys whose `stat` fails.
    pub failing_stats: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// Matches the keys whose small reads answer only after a millisecond (so that writers
    /// racing on them interleave).
    pub slow_reads: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// Takes every conditional put as a plain overwrite, as Garage does.
    pub ignores_conditions: bool,
}

impl Interposed {
    /// `inner`, with nothing interposed yet.
    pub fn over(inner: Arc<dyn StorageDriver>) -> Interposed {
        Interposed {
            inner,
            trigger: Arc::new(|_| false),
            interjection: Arc::new(Mutex::new(None)),
            failing: Arc::new(|_| false),
            failing_stats: Arc::new(|_| false),
            slow_reads: Arc::new(|_| false),
            ignores_conditions: false,
        }
    }

    /// Takes conditional puts and ignores their conditions, as some S3-compatible stores do.
    pub fn ignoring_conditions(mut self) -> Interposed {
        self.ignores_conditions = true;
        self
    }

    /// Delays every small read of a key `slow` matches by a millisecond.
    pub fn slow_reads(mut self, slow: impl Fn(&str) -> bool + Send + Sync + 'static) -> Interposed {
        self.slow_reads = Arc::new(slow);
        self
    }

    /// Runs `interjection` once, right before a publish to or delete of a key `trigger` matches.
    pub fn interjecting(
        mut self,
        trigger: impl Fn(&str) -> bool + Send + Sync + 'static,
        interjection: Interjection,
    ) -> Interposed {
        self.trigger = Arc::new(trigger);
        self.interjection = Arc::new(Mutex::new(Some(interjection)));
        self
    }

    /// Fails every small write to a key `failing` matches.
    pub fn failing(mut self, failing: impl Fn(&str) -> bool + Send + Sync + 'static) -> Interposed {
        self.failing = Arc::new(failing);
        self
    }

    /// Fails every `stat` of a key `failing` matches (it may count calls).
    pub fn failing_stats(
        mut self,
        failing: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Interposed {
        self.failing_stats = Arc::new(failing);
        self
    }
}

impl std::fmt::Debug for Interposed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interposed")
    }
}

impl Interposed {
    async fn interject_at(&self, key: &str) {
        if !(self.trigger)(key) {
            return;
        }
        let once = self.interjection.lock().unwrap().take();
        if let Some(run) = once {
            run().await;
        }
    }
}

#[async_trait]
impl StorageDriver for Interposed {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn part_policy(&self) -> PartPolicy {
        self.inner.part_policy()
    }
    async fn get(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<GetResponse, StorageError> {
        self.inner.get(key, range).await
    }
    async fn stat(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        if (self.failing_stats)(key) {
            return Err(StorageError::Backend(format!("{key}: failing on purpose")));
        }
        self.inner.stat(key).await
    }
    async fn read_small(&self, key: &str) -> Result<(Bytes, ObjectInfo), StorageError> {
        let read = self.inner.read_small(key).await;
        if (self.slow_reads)(key) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        read
    }
    async fn put_bytes(
        &self,
        key: &str,
        data: Bytes,
        condition: PutCondition,
    ) -> Result<ObjectInfo, StorageError> {
        if (self.failing)(key) {
            return Err(StorageError::Backend(format!("{key}: failing on purpose")));
        }
        let condition = if self.ignores_conditions {
            PutCondition::Overwrite
        } else {
            condition
        };
        self.inner.put_bytes(key, data, condition).await
    }
    async fn put_stream(&self, key: &str, body: ByteStream) -> Result<u64, StorageError> {
        self.inner.put_stream(key, body).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.interject_at(key).await;
        self.inner.delete(key).await
    }
    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        self.inner.delete_prefix(prefix).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing, StorageError> {
        self.inner.list(prefix).await
    }
    fn list_recursive(&self, prefix: &str) -> BoxStream<'static, Result<String, StorageError>> {
        self.inner.list_recursive(prefix)
    }
    async fn copy(&self, from: &str, to: &str) -> Result<(), StorageError> {
        self.inner.copy(from, to).await
    }
    async fn rename(&self, from: &str, to: &str) -> Result<(), StorageError> {
        self.inner.rename(from, to).await
    }
    async fn publish(&self, from: &str, to: &str, size: u64) -> Result<(), StorageError> {
        self.interject_at(to).await;
        self.inner.publish(from, to, size).await
    }
    async fn delete_known(&self, prefix: &str, keys: &[String]) -> Result<(), StorageError> {
        self.inner.delete_known(prefix, keys).await
    }
    async fn presign_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<Option<String>, StorageError> {
        self.inner.presign_get(key, expires_in).await
    }
    async fn create_multipart(&self, key: &str) -> Result<MultipartHandle, StorageError> {
        self.inner.create_multipart(key).await
    }
    async fn put_part(
        &self,
        key: &str,
        handle: &MultipartHandle,
        slot: PartSlot,
        data: Vec<Bytes>,
    ) -> Result<WrittenPart, StorageError> {
        self.inner.put_part(key, handle, slot, data).await
    }
    async fn complete_multipart(
        &self,
        key: &str,
        handle: &MultipartHandle,
        parts: &[WrittenPart],
        size: u64,
    ) -> Result<(), StorageError> {
        self.inner
            .complete_multipart(key, handle, parts, size)
            .await
    }
    async fn abort_multipart(
        &self,
        key: &str,
        handle: &MultipartHandle,
    ) -> Result<(), StorageError> {
        self.inner.abort_multipart(key, handle).await
    }
    async fn dangling_multiparts(
        &self,
        prefix: &str,
        before: std::time::SystemTime,
    ) -> Result<Vec<DanglingMultipart>, StorageError> {
        self.inner.dangling_multiparts(prefix, before).await
    }
}
