//! A storage driver decorator that times every operation and counts its errors: metrics at the
//! seam, so every backend is measured the same way without knowing it.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use registry_core::StorageDriver;
use registry_core::storage::{
    ByteStream, GetResponse, Listing, MultipartHandle, ObjectInfo, PartPolicy, PartSlot,
    PutCondition, StorageError, WrittenPart,
};

use super::Metrics;

/// Wraps a driver and records each call in [`Metrics`].
pub struct InstrumentedDriver {
    inner: Arc<dyn StorageDriver>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for InstrumentedDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Instrumented({:?})", self.inner)
    }
}

impl InstrumentedDriver {
    /// Instruments `inner`.
    pub fn new(inner: Arc<dyn StorageDriver>, metrics: Arc<Metrics>) -> Self {
        InstrumentedDriver { inner, metrics }
    }

    fn record<T>(
        &self,
        op: &'static str,
        start: Instant,
        r: &Result<T, StorageError>,
        span: &tracing::Span,
    ) {
        // A missing object is an answer, not a failure of the store.
        let failed = matches!(r, Err(e) if !matches!(e, StorageError::NotFound(_) | StorageError::AlreadyExists(_) | StorageError::Precondition(_) | StorageError::RangeNotSatisfiable { .. }));
        if failed {
            span.record("otel.status_code", "ERROR");
        }
        self.metrics
            .observe_storage(self.inner.name(), op, start.elapsed(), failed);
    }
}

/// Times the call, counts its failure, and wraps it in a span of the request's trace.
macro_rules! timed {
    ($self:ident, $op:literal, $call:expr) => {{
        let span = tracing::info_span!(
            target: super::trace_export::TRACE_TARGET,
            "store",
            otel.name = concat!("store ", $op),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            store.backend = $self.inner.name(),
            store.operation = $op,
        );
        let start = Instant::now();
        let r = tracing::Instrument::instrument($call, span.clone()).await;
        $self.record($op, start, &r, &span);
        r
    }};
}

#[async_trait]
impl StorageDriver for InstrumentedDriver {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn part_policy(&self) -> PartPolicy {
        self.inner.part_policy()
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetResponse, StorageError> {
        timed!(self, "get", self.inner.get(key, range))
    }

    async fn stat(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        timed!(self, "stat", self.inner.stat(key))
    }

    async fn read_small(&self, key: &str) -> Result<(Bytes, ObjectInfo), StorageError> {
        timed!(self, "read_small", self.inner.read_small(key))
    }

    async fn put_bytes(
        &self,
        key: &str,
        data: Bytes,
        condition: PutCondition,
    ) -> Result<ObjectInfo, StorageError> {
        timed!(
            self,
            "put_bytes",
            self.inner.put_bytes(key, data, condition)
        )
    }

    async fn put_stream(&self, key: &str, body: ByteStream) -> Result<u64, StorageError> {
        timed!(self, "put_stream", self.inner.put_stream(key, body))
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        timed!(self, "delete", self.inner.delete(key))
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        timed!(self, "delete_prefix", self.inner.delete_prefix(prefix))
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StorageError> {
        timed!(self, "list", self.inner.list(prefix))
    }

    fn list_recursive(&self, prefix: &str) -> BoxStream<'static, Result<String, StorageError>> {
        self.metrics
            .observe_storage(self.inner.name(), "list_recursive", Duration::ZERO, false);
        self.inner.list_recursive(prefix)
    }

    fn lists_with_info(&self) -> bool {
        self.inner.lists_with_info()
    }

    async fn list_with_info(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, ObjectInfo)>, StorageError> {
        timed!(self, "list", self.inner.list_with_info(prefix))
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), StorageError> {
        timed!(self, "copy", self.inner.copy(from, to))
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), StorageError> {
        timed!(self, "rename", self.inner.rename(from, to))
    }

    async fn presign_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<Option<String>, StorageError> {
        timed!(self, "presign_get", self.inner.presign_get(key, expires_in))
    }

    async fn create_multipart(&self, key: &str) -> Result<MultipartHandle, StorageError> {
        timed!(self, "create_multipart", self.inner.create_multipart(key))
    }

    async fn put_part(
        &self,
        key: &str,
        handle: &MultipartHandle,
        slot: PartSlot,
        data: Vec<Bytes>,
    ) -> Result<WrittenPart, StorageError> {
        timed!(
            self,
            "put_part",
            self.inner.put_part(key, handle, slot, data)
        )
    }

    async fn put_part_copy(
        &self,
        key: &str,
        handle: &MultipartHandle,
        slot: PartSlot,
        source: &str,
        len: u64,
    ) -> Result<WrittenPart, StorageError> {
        timed!(
            self,
            "put_part_copy",
            self.inner.put_part_copy(key, handle, slot, source, len)
        )
    }

    async fn put_part_stream(
        &self,
        key: &str,
        handle: &MultipartHandle,
        slot: PartSlot,
        body: ByteStream,
    ) -> Result<(WrittenPart, u64), StorageError> {
        timed!(
            self,
            "put_part",
            self.inner.put_part_stream(key, handle, slot, body)
        )
    }

    async fn complete_multipart(
        &self,
        key: &str,
        handle: &MultipartHandle,
        parts: &[WrittenPart],
        size: u64,
    ) -> Result<(), StorageError> {
        timed!(
            self,
            "complete_multipart",
            self.inner.complete_multipart(key, handle, parts, size)
        )
    }

    async fn publish(&self, from: &str, to: &str, size: u64) -> Result<(), StorageError> {
        timed!(self, "publish", self.inner.publish(from, to, size))
    }

    async fn delete_known(&self, prefix: &str, keys: &[String]) -> Result<(), StorageError> {
        timed!(self, "delete", self.inner.delete_known(prefix, keys))
    }

    async fn dangling_multiparts(
        &self,
        prefix: &str,
        before: std::time::SystemTime,
    ) -> Result<Vec<registry_core::storage::DanglingMultipart>, StorageError> {
        self.inner.dangling_multiparts(prefix, before).await
    }

    async fn abort_multipart(
        &self,
        key: &str,
        handle: &MultipartHandle,
    ) -> Result<(), StorageError> {
        timed!(
            self,
            "abort_multipart",
            self.inner.abort_multipart(key, handle)
        )
    }

    async fn settle(&self) {
        self.inner.settle().await
    }
}
