//! The storage trait: the one seam between the registry and its backends.
//!
//! Keys are relative, `/`-separated paths built by [`crate::layout`]; a driver maps them under
//! its own root. Bodies are streams so that no blob is ever held whole in memory.

use std::fmt::Debug;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

/// A stream of byte chunks from or to storage.
pub type ByteStream = BoxStream<'static, Result<Bytes, StorageError>>;

/// Errors every backend maps its failures into.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No object at that key.
    #[error("not found: {0}")]
    NotFound(String),
    /// A create-only put found an object already there.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A conditional put lost a race: the object changed since it was read.
    #[error("precondition failed: {0}")]
    Precondition(String),
    /// The requested byte range lies outside the object.
    #[error("range not satisfiable")]
    RangeNotSatisfiable {
        /// Size of the object.
        size: u64,
    },
    /// A key that a driver refuses (for example one that would leave the root).
    #[error("invalid key {0:?}")]
    InvalidKey(String),
    /// The store has no room left (a full disk or an exhausted quota).
    #[error("storage full: {0}")]
    Full(String),
    /// The store kept failing (or did not answer) until the retry budget was spent.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Anything else the backend reported.
    #[error("storage backend error: {0}")]
    Backend(String),
}

impl StorageError {
    /// Wraps any backend error.
    pub fn backend(e: impl std::fmt::Display) -> Self {
        StorageError::Backend(e.to_string())
    }
}

/// Identifies one version of an object, for update-if-unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObjectVersion {
    /// The backend's ETag, if it has one.
    pub e_tag: Option<String>,
    /// The backend's version id, if it has one.
    pub version: Option<String>,
}

impl ObjectVersion {
    /// Whether two versions name the same object version: by ETag where both have one (some
    /// stores report a version id on writes and not on reads), else by version id.
    pub fn matches(&self, other: &ObjectVersion) -> bool {
        match (&self.e_tag, &other.e_tag) {
            (Some(a), Some(b)) => a.trim_matches('"') == b.trim_matches('"'),
            _ => self.version.is_some() && self.version == other.version,
        }
    }
}

/// Metadata of a stored object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, when the backend reports one.
    pub last_modified: Option<SystemTime>,
    /// The version to use for a conditional update.
    pub version: ObjectVersion,
}

/// The body and metadata of a read.
pub struct GetResponse {
    /// Metadata of the whole object.
    pub info: ObjectInfo,
    /// The byte range being returned.
    pub range: Range<u64>,
    /// The bytes of that range.
    pub body: ByteStream,
}

/// The byte range a driver serves for `requested` of an object of `size` bytes: the whole object
/// when none was asked for, the end clamped to the size, and an error when the start is past it.
pub fn resolve_range(requested: Option<Range<u64>>, size: u64) -> Result<Range<u64>, StorageError> {
    match requested {
        None => Ok(0..size),
        Some(r) if r.start >= size || r.start >= r.end => {
            Err(StorageError::RangeNotSatisfiable { size })
        }
        Some(r) => Ok(r.start..r.end.min(size)),
    }
}

/// How a small put behaves when an object exists.
#[derive(Debug, Clone)]
pub enum PutCondition {
    /// Replace whatever is there.
    Overwrite,
    /// Fail with [`StorageError::AlreadyExists`] if anything is there.
    CreateOnly,
    /// Replace only if the current object is still this version, else [`StorageError::Precondition`].
    IfVersion(ObjectVersion),
}

/// One level of a listing.
#[derive(Debug, Default, Clone)]
pub struct Listing {
    /// Keys of objects directly under the prefix.
    pub objects: Vec<String>,
    /// Names (last path segment only) of sub-prefixes directly under the prefix.
    pub prefixes: Vec<String>,
}

/// A multipart write in progress; plain data so another process can continue it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultipartHandle {
    /// The backend's upload id.
    pub upload_id: String,
}

/// A multipart write found in the store (see [`StorageDriver::dangling_multiparts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DanglingMultipart {
    /// The key the write would complete to.
    pub key: String,
    /// Its handle, to abort it with.
    pub handle: MultipartHandle,
}

/// Where a part goes and which request writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartSlot {
    /// The part's number, from 0.
    pub index: usize,
    /// The byte of the final object the part starts at.
    pub offset: u64,
    /// The writing request's claim on the session; it grows with every request. A driver
    /// whose parts share one file (local disk) refuses, with [`StorageError::Precondition`], a
    /// part from a writer older than one it has seen, so a request that lost its claim can never
    /// overwrite bytes a newer one has written. Object stores keep parts apart and ignore it:
    /// there the part list committed with the state decides.
    pub writer: u64,
}

/// A part that has been written, as the backend needs it at completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenPart {
    /// The backend's id for the part (S3 ETag, Azure block id); empty where unused.
    pub content_id: String,
}

/// How a backend wants multipart data cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPolicy {
    /// Size of every part but the last.
    pub part_size: u64,
    /// Whether parts below `part_size` are refused (object stores) or fine (local disk).
    pub fixed_size: bool,
}

/// The storage port: every backend implements this, and the registry knows nothing else.
#[async_trait]
pub trait StorageDriver: Send + Sync + Debug + 'static {
    /// Short backend name for logs and metrics.
    fn name(&self) -> &'static str;

    /// How uploads must cut their data into parts.
    fn part_policy(&self) -> PartPolicy;

    /// Reads an object, or a byte range of it.
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetResponse, StorageError>;

    /// Metadata of an object.
    async fn stat(&self, key: &str) -> Result<ObjectInfo, StorageError>;

    /// Reads a small object (links, state, manifests) whole.
    async fn read_small(&self, key: &str) -> Result<(Bytes, ObjectInfo), StorageError> {
        use futures::TryStreamExt;
        let resp = self.get(key, None).await?;
        let chunks: Vec<Bytes> = resp.body.try_collect().await?;
        Ok((chunks.concat().into(), resp.info))
    }

    /// Writes a small object in one request, honouring `condition`.
    async fn put_bytes(
        &self,
        key: &str,
        data: Bytes,
        condition: PutCondition,
    ) -> Result<ObjectInfo, StorageError>;

    /// Streams an object of unknown length; it becomes visible only once complete.
    async fn put_stream(&self, key: &str, body: ByteStream) -> Result<u64, StorageError>;

    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// Deletes every object under `prefix` (which ends with `/`).
    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError>;

    /// Lists one level under `prefix` (which ends with `/`); a missing prefix lists empty.
    async fn list(&self, prefix: &str) -> Result<Listing, StorageError>;

    /// Streams every object key under `prefix`, at any depth.
    fn list_recursive(&self, prefix: &str) -> BoxStream<'static, Result<String, StorageError>>;

    /// Whether [`StorageDriver::list_with_info`] answers from the listing alone (object
    /// stores), rather than with a stat per key: then a listing beats a stat per object.
    fn lists_with_info(&self) -> bool {
        false
    }

    /// Every object under `prefix`, at any depth, with its size and time. Stores whose listing
    /// carries both (S3, Azure, GCS) answer from the listing alone; the default stats each key.
    async fn list_with_info(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, ObjectInfo)>, StorageError> {
        use futures::{StreamExt, TryStreamExt};
        let keys: Vec<String> = self.list_recursive(prefix).try_collect().await?;
        let found: Vec<Option<(String, ObjectInfo)>> = futures::stream::iter(keys)
            .map(|key| async move {
                match self.stat(&key).await {
                    Ok(info) => Ok(Some((key, info))),
                    // Deleted between the listing and the stat.
                    Err(StorageError::NotFound(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffered(32)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Copies an object inside the store without passing its bytes through this process.
    async fn copy(&self, from: &str, to: &str) -> Result<(), StorageError>;

    /// Moves an object; atomic where the backend can (local rename), else copy then delete.
    async fn rename(&self, from: &str, to: &str) -> Result<(), StorageError> {
        self.copy(from, to).await?;
        self.delete(from).await
    }

    /// Makes `from`'s object available at `to` for a caller that removes what is left under
    /// `from`'s prefix right after (with [`StorageDriver::delete_known`]): local disk moves the
    /// file, object stores copy it and leave the source to that removal, sparing a request.
    /// `size` is the object's length, for stores that copy large objects another way.
    async fn publish(&self, from: &str, to: &str, size: u64) -> Result<(), StorageError> {
        let _ = size;
        self.rename(from, to).await
    }

    /// Deletes `keys`, which the caller knows to be everything under `prefix` (ending with
    /// `/`): object stores delete just those, in one batch, without listing; local disk
    /// removes the prefix's directory. A key that is already gone is no error.
    async fn delete_known(&self, prefix: &str, keys: &[String]) -> Result<(), StorageError> {
        let _ = keys;
        self.delete_prefix(prefix).await
    }

    /// A URL a client can GET the object from directly, or `None` if the backend cannot sign.
    async fn presign_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<Option<String>, StorageError>;

    /// Starts a multipart write to `key`.
    async fn create_multipart(&self, key: &str) -> Result<MultipartHandle, StorageError>;

    /// Writes the part `slot` names.
    async fn put_part(
        &self,
        key: &str,
        handle: &MultipartHandle,
        slot: PartSlot,
        data: Vec<Bytes>,
    ) -> Result<WrittenPart, StorageError>;

    /// Writes the part `slot` names with the `len` bytes of the object `source`. Stores that
    /// can copy into a part (S3's UploadPartCopy) do it inside the store, so the bytes are not
    /// sent again; this default reads them back and writes them as a part.
    async fn put_part_copy(
        &self,
        key: &str,
        handle: &MultipartHandle,
        slot: PartSlot,
        source: &str,
        len: u64,
    ) -> Result<WrittenPart, StorageError> {
        let (bytes, _) = self.read_small(source).await?;
        if bytes.len() as u64 != len {
            return Err(StorageError::Backend(format!(
                "{source} holds {} bytes, not {len}",
                bytes.len()
            )));
        }
        self.put_part(key, handle, slot, vec![bytes]).await
    }

    /// Writes the part `slot` names from a stream and returns it with the bytes written. Asked
    /// only of drivers with loose parts (`fixed_size: false`), which stream a whole request into
    /// one part; this default gathers the part in memory first.
    async fn put_part_stream(
        &self,
        key: &str,
        handle: &MultipartHandle,
        slot: PartSlot,
        body: ByteStream,
    ) -> Result<(WrittenPart, u64), StorageError> {
        use futures::TryStreamExt;
        let data: Vec<Bytes> = body.try_collect().await?;
        let n = data.iter().map(|b| b.len() as u64).sum();
        Ok((self.put_part(key, handle, slot, data).await?, n))
    }

    /// Completes a multipart write; `size` is the total length written.
    async fn complete_multipart(
        &self,
        key: &str,
        handle: &MultipartHandle,
        parts: &[WrittenPart],
        size: u64,
    ) -> Result<(), StorageError>;

    /// Abandons a multipart write and frees what it stored.
    async fn abort_multipart(
        &self,
        key: &str,
        handle: &MultipartHandle,
    ) -> Result<(), StorageError>;

    /// Multipart writes under `prefix` started before `before` that are still open. A crash
    /// between starting one and recording it in an upload's state leaves one that no state
    /// names; the purge aborts them. Stores that drop open writes by themselves (Azure's
    /// uncommitted blocks, GCS's parts, which are objects under the session) and local disk
    /// answer none.
    async fn dangling_multiparts(
        &self,
        prefix: &str,
        before: std::time::SystemTime,
    ) -> Result<Vec<DanglingMultipart>, StorageError>;

    /// Waits until what earlier deletes removed is actually freed, for a process about to exit
    /// (local disk frees large files in the background; elsewhere there is nothing to wait for).
    async fn settle(&self) {}
}

pub mod guarantees;
pub mod suite;
