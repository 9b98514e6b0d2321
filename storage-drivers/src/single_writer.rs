//! Conditional writes for a store that ignores them, kept within one process.
//!
//! Berth's replicas arbitrate through the store: a create-only put and a replace-if-unchanged
//! put decide who claims an upload offset, holds a lease, or changes an index shard. A store
//! that takes `If-None-Match` / `If-Match` and ignores them (Garage, older MinIO, Ceph RGW)
//! lets two writers both win. With this wrapper, a process checks each condition itself
//! (a stat, then an unconditional put) while holding a lock on the key, so its own requests
//! never both win; another process writing the same store is not seen, which is why this is
//! single-writer mode (the server watches for a second writer, see `store_mode`).

use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use registry_core::storage::{
    ByteStream, DanglingMultipart, GetResponse, Listing, MultipartHandle, ObjectInfo, PartPolicy,
    PartSlot, PutCondition, StorageDriver, StorageError, WrittenPart,
};
use tokio::sync::Mutex;

/// Locks keys hash onto; two keys sharing one only wait for each other's small write.
const STRIPES: usize = 256;

/// A driver whose conditional puts are decided in this process.
#[derive(Debug)]
pub struct SingleWriter {
    inner: Arc<dyn StorageDriver>,
    stripes: Vec<Mutex<()>>,
}

impl SingleWriter {
    /// `inner`, whose own conditional writes are not trusted.
    pub fn new(inner: Arc<dyn StorageDriver>) -> SingleWriter {
        SingleWriter {
            inner,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    fn stripe(&self, key: &str) -> &Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.stripes[(h.finish() as usize) % STRIPES]
    }
}

#[async_trait]
impl StorageDriver for SingleWriter {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn part_policy(&self) -> PartPolicy {
        self.inner.part_policy()
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetResponse, StorageError> {
        self.inner.get(key, range).await
    }

    async fn stat(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        self.inner.stat(key).await
    }

    async fn read_small(&self, key: &str) -> Result<(Bytes, ObjectInfo), StorageError> {
        self.inner.read_small(key).await
    }

    async fn put_bytes(
        &self,
        key: &str,
        data: Bytes,
        condition: PutCondition,
    ) -> Result<ObjectInfo, StorageError> {
        // Unconditional puts take the lock too: one landing between a conditional put's check
        // and its write would be overwritten, where the store would have refused the write.
        let _held = self.stripe(key).lock().await;
        match &condition {
            PutCondition::Overwrite => {}
            PutCondition::CreateOnly => match self.inner.stat(key).await {
                Ok(_) => return Err(StorageError::AlreadyExists(key.to_owned())),
                Err(StorageError::NotFound(_)) => {}
                Err(e) => return Err(e),
            },
            PutCondition::IfVersion(expected) => match self.inner.stat(key).await {
                Ok(info) if info.version.matches(expected) => {}
                Ok(_) | Err(StorageError::NotFound(_)) => {
                    return Err(StorageError::Precondition(key.to_owned()));
                }
                Err(e) => return Err(e),
            },
        }
        self.inner
            .put_bytes(key, data, PutCondition::Overwrite)
            .await
    }

    async fn put_stream(&self, key: &str, body: ByteStream) -> Result<u64, StorageError> {
        self.inner.put_stream(key, body).await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let _held = self.stripe(key).lock().await;
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

    fn lists_with_info(&self) -> bool {
        self.inner.lists_with_info()
    }

    async fn list_with_info(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, ObjectInfo)>, StorageError> {
        self.inner.list_with_info(prefix).await
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), StorageError> {
        self.inner.copy(from, to).await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), StorageError> {
        self.inner.rename(from, to).await
    }

    async fn publish(&self, from: &str, to: &str, size: u64) -> Result<(), StorageError> {
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

    async fn put_part_copy(
        &self,
        key: &str,
        handle: &MultipartHandle,
        slot: PartSlot,
        source: &str,
        len: u64,
    ) -> Result<WrittenPart, StorageError> {
        self.inner
            .put_part_copy(key, handle, slot, source, len)
            .await
    }

    async fn put_part_stream(
        &self,
        key: &str,
        handle: &MultipartHandle,
        slot: PartSlot,
        body: ByteStream,
    ) -> Result<(WrittenPart, u64), StorageError> {
        self.inner.put_part_stream(key, handle, slot, body).await
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

    async fn settle(&self) {
        self.inner.settle().await
    }
}
