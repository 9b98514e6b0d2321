//! One adapter from object_store's traits to Berth's storage trait, shared by every object store.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::{Method, Signer};
use object_store::{
    GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};
use registry_core::storage::{
    ByteStream, GetResponse, Listing, MultipartHandle, ObjectInfo, ObjectVersion, PartPolicy,
    PartSlot, PutCondition, StorageDriver, StorageError, WrittenPart, resolve_range,
};
use tokio::io::AsyncWriteExt;

/// How long an object store's answer may stall when the configuration does not say.
pub const DEFAULT_STALL: Duration = Duration::from_secs(30);

/// The HTTP client settings of every object-store backend: a request that cannot connect in 5 s,
/// or whose answer stalls for 30 s, is cut, and [`crate::resilient::Resilient`] sends it again;
/// nothing waits on a hung store for minutes. The client library's own retries are off, so
/// that one policy (with a time budget, and reconciliation of writes that may have been
/// applied) decides.
pub fn client_options(stall: Option<Duration>) -> object_store::ClientOptions {
    object_store::ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_read_timeout(stall.unwrap_or(DEFAULT_STALL))
        // A whole request: a 16 MiB part at 100 KiB/s still fits.
        .with_timeout(Duration::from_secs(300))
}

/// No retries inside the client library (see [`client_options`]).
pub fn no_retries() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 0,
        ..Default::default()
    }
}

/// A Berth storage driver over any object_store backend.
#[derive(Clone)]
pub struct ObjectStoreDriver {
    name: &'static str,
    store: Arc<dyn ObjectStore>,
    multipart: Arc<dyn MultipartStore>,
    signer: Option<Arc<dyn Signer>>,
    root: String,
    policy: PartPolicy,
    large_copy: Option<Arc<dyn LargeCopy>>,
    uploads: Option<Arc<dyn MultipartListing>>,
}

/// A backend's listing of open multipart writes, which object_store does not offer.
#[async_trait]
pub trait MultipartListing: Send + Sync + std::fmt::Debug {
    /// Open multipart writes whose keys start with `prefix` (a store path), started before
    /// `before`.
    async fn open_uploads(
        &self,
        prefix: &Path,
        before: std::time::SystemTime,
    ) -> Result<Vec<(Path, String)>, StorageError>;
}

/// A backend-specific server-side copy for objects too large for the store's plain copy.
#[async_trait]
pub trait LargeCopy: Send + Sync + std::fmt::Debug {
    /// Objects larger than this go through [`LargeCopy::copy`].
    fn threshold(&self) -> u64;
    /// Copies `from` (of `size` bytes) to `to` inside the store.
    async fn copy(&self, from: &Path, to: &Path, size: u64) -> Result<(), StorageError>;
    /// Copies the `len` bytes of `from` into part `index` of the multipart write `upload_id`
    /// to `to`; returns the part's id, or `None` when the store will not copy that source
    /// into a part (the caller sends the bytes instead).
    async fn copy_into_part(
        &self,
        from: &Path,
        to: &Path,
        upload_id: &str,
        index: usize,
        len: u64,
    ) -> Result<Option<String>, StorageError>;
}

impl std::fmt::Debug for ObjectStoreDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ObjectStoreDriver({}, {}, root={:?})",
            self.name, self.store, self.root
        )
    }
}

fn map_err(key: &str, e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound(key.to_owned()),
        object_store::Error::AlreadyExists { .. } => StorageError::AlreadyExists(key.to_owned()),
        object_store::Error::Precondition { .. } => StorageError::Precondition(key.to_owned()),
        other => StorageError::Backend(format!("{key}: {other}")),
    }
}

fn info_of(meta: &ObjectMeta) -> ObjectInfo {
    ObjectInfo {
        size: meta.size,
        last_modified: Some(meta.last_modified.into()),
        version: ObjectVersion {
            e_tag: meta.e_tag.clone(),
            version: meta.version.clone(),
        },
    }
}

impl ObjectStoreDriver {
    /// Wraps a store; `root` is a key prefix inside the bucket (may be empty).
    pub fn new(
        name: &'static str,
        store: Arc<dyn ObjectStore>,
        multipart: Arc<dyn MultipartStore>,
        signer: Option<Arc<dyn Signer>>,
        root: &str,
        policy: PartPolicy,
    ) -> Self {
        let root = root.trim_matches('/').to_owned();
        ObjectStoreDriver {
            name,
            store,
            multipart,
            signer,
            root,
            policy,
            large_copy: None,
            uploads: None,
        }
    }

    /// Uses `copier` for objects above its threshold.
    pub fn with_large_copy(mut self, copier: Arc<dyn LargeCopy>) -> Self {
        self.large_copy = Some(copier);
        self
    }

    /// Lists open multipart writes with `lister` (stores without it answer none).
    pub fn with_multipart_listing(mut self, lister: Arc<dyn MultipartListing>) -> Self {
        self.uploads = Some(lister);
        self
    }

    fn path(&self, key: &str) -> Path {
        let key = key.trim_end_matches('/');
        if self.root.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.root))
        }
    }

    /// Turns a store location back into a Berth key.
    fn key_of(&self, location: &Path) -> String {
        let s = location.as_ref();
        if self.root.is_empty() {
            s.to_owned()
        } else {
            s.strip_prefix(&self.root)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(s)
                .to_owned()
        }
    }
}

#[async_trait]
impl StorageDriver for ObjectStoreDriver {
    fn name(&self) -> &'static str {
        self.name
    }

    fn part_policy(&self) -> PartPolicy {
        self.policy
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetResponse, StorageError> {
        let path = self.path(key);
        let mut opts = GetOptions::default();
        if let Some(r) = &range {
            // Validate against the real size first: stores differ in how they report a bad range.
            let size = self.stat(key).await?.size;
            opts.range = Some(GetRange::Bounded(resolve_range(Some(r.clone()), size)?));
        }
        let res = self
            .store
            .get_opts(&path, opts)
            .await
            .map_err(|e| map_err(key, e))?;
        let info = info_of(&res.meta);
        let range = res.range.clone();
        let owned_key = key.to_owned();
        let body = res
            .into_stream()
            .map_err(move |e| map_err(&owned_key, e))
            .boxed();
        Ok(GetResponse { info, range, body })
    }

    async fn stat(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        let meta = self
            .store
            .head(&self.path(key))
            .await
            .map_err(|e| map_err(key, e))?;
        Ok(info_of(&meta))
    }

    async fn put_bytes(
        &self,
        key: &str,
        data: Bytes,
        condition: PutCondition,
    ) -> Result<ObjectInfo, StorageError> {
        let size = data.len() as u64;
        let mode = match condition {
            PutCondition::Overwrite => PutMode::Overwrite,
            PutCondition::CreateOnly => PutMode::Create,
            PutCondition::IfVersion(v) => PutMode::Update(UpdateVersion {
                e_tag: v.e_tag,
                version: v.version,
            }),
        };
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        let res = self
            .store
            .put_opts(&self.path(key), PutPayload::from(data), opts)
            .await
            .map_err(|e| map_err(key, e))?;
        Ok(ObjectInfo {
            size,
            last_modified: None,
            version: ObjectVersion {
                e_tag: res.e_tag,
                version: res.version,
            },
        })
    }

    async fn put_stream(&self, key: &str, mut body: ByteStream) -> Result<u64, StorageError> {
        let mut writer = BufWriter::with_capacity(
            self.store.clone(),
            self.path(key),
            self.policy.part_size as usize,
        )
        .with_max_concurrency(2);
        let mut n = 0u64;
        let result: Result<(), StorageError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                n += chunk.len() as u64;
                writer.put(chunk).await.map_err(|e| map_err(key, e))?;
            }
            writer
                .shutdown()
                .await
                .map_err(|e| StorageError::Backend(format!("{key}: {e}")))
        }
        .await;
        if let Err(e) = result {
            let _ = writer.abort().await;
            return Err(e);
        }
        Ok(n)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(key, e)),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        let locations = self
            .store
            .list(Some(&self.path(prefix)))
            .map_ok(|m| m.location)
            .boxed();
        self.store
            .delete_stream(locations)
            .try_for_each(|_| async { Ok(()) })
            .await
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(()),
                e => Err(map_err(prefix, e)),
            })
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StorageError> {
        let res = self
            .store
            .list_with_delimiter(Some(&self.path(prefix)))
            .await
            .map_err(|e| map_err(prefix, e))?;
        Ok(Listing {
            objects: res
                .objects
                .iter()
                .map(|m| self.key_of(&m.location))
                .collect(),
            prefixes: res
                .common_prefixes
                .iter()
                .filter_map(|p| p.filename().map(str::to_owned))
                .collect(),
        })
    }

    fn list_recursive(&self, prefix: &str) -> BoxStream<'static, Result<String, StorageError>> {
        let this = self.clone();
        let owned_prefix = prefix.to_owned();
        self.store
            .list(Some(&self.path(prefix)))
            .map(move |r| {
                r.map(|m| this.key_of(&m.location))
                    .map_err(|e| map_err(&owned_prefix, e))
            })
            .boxed()
    }

    fn lists_with_info(&self) -> bool {
        true
    }

    async fn list_with_info(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, ObjectInfo)>, StorageError> {
        self.store
            .list(Some(&self.path(prefix)))
            .map(|r| {
                r.map(|m| (self.key_of(&m.location), info_of(&m)))
                    .map_err(|e| map_err(prefix, e))
            })
            .try_collect()
            .await
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), StorageError> {
        self.store
            .copy(&self.path(from), &self.path(to))
            .await
            .map_err(|e| map_err(from, e))
    }

    async fn publish(&self, from: &str, to: &str, size: u64) -> Result<(), StorageError> {
        // The source goes with the session's delete_known right after. A store's single copy
        // has a limit (S3: 5 GiB); above the copier's threshold, the copy goes part by part.
        match &self.large_copy {
            Some(copier) if size > copier.threshold() => {
                copier.copy(&self.path(from), &self.path(to), size).await
            }
            _ => self.copy(from, to).await,
        }
    }

    async fn delete_known(&self, _prefix: &str, keys: &[String]) -> Result<(), StorageError> {
        let paths: Vec<object_store::Result<Path>> =
            keys.iter().map(|k| Ok(self.path(k))).collect();
        self.store
            .delete_stream(futures::stream::iter(paths).boxed())
            .try_for_each(|_| async { Ok(()) })
            .await
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(()),
                e => Err(map_err(keys.first().map_or("", String::as_str), e)),
            })
    }

    async fn presign_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<Option<String>, StorageError> {
        match &self.signer {
            None => Ok(None),
            Some(s) => {
                let url = s
                    .signed_url(Method::GET, &self.path(key), expires_in)
                    .await
                    .map_err(|e| map_err(key, e))?;
                Ok(Some(url.to_string()))
            }
        }
    }

    async fn create_multipart(&self, key: &str) -> Result<MultipartHandle, StorageError> {
        let id = self
            .multipart
            .create_multipart(&self.path(key))
            .await
            .map_err(|e| map_err(key, e))?;
        Ok(MultipartHandle { upload_id: id })
    }

    async fn put_part(
        &self,
        key: &str,
        handle: &MultipartHandle,
        slot: PartSlot,
        data: Vec<Bytes>,
    ) -> Result<WrittenPart, StorageError> {
        let index = slot.index;
        let part = self
            .multipart
            .put_part(
                &self.path(key),
                &handle.upload_id,
                index,
                PutPayload::from_iter(data),
            )
            .await
            .map_err(|e| map_err(key, e))?;
        Ok(WrittenPart {
            content_id: part.content_id,
        })
    }

    async fn put_part_copy(
        &self,
        key: &str,
        handle: &MultipartHandle,
        slot: PartSlot,
        source: &str,
        len: u64,
    ) -> Result<WrittenPart, StorageError> {
        let copied = match &self.large_copy {
            Some(copier) => {
                copier
                    .copy_into_part(
                        &self.path(source),
                        &self.path(key),
                        &handle.upload_id,
                        slot.index,
                        len,
                    )
                    .await?
            }
            None => None,
        };
        match copied {
            Some(content_id) => Ok(WrittenPart { content_id }),
            // No copy inside the store: a short source is at most a part, and its bytes pass
            // through here.
            None => {
                let (bytes, _) = self.read_small(source).await?;
                self.put_part(key, handle, slot, vec![bytes]).await
            }
        }
    }

    async fn complete_multipart(
        &self,
        key: &str,
        handle: &MultipartHandle,
        parts: &[WrittenPart],
        _size: u64,
    ) -> Result<(), StorageError> {
        let parts = parts
            .iter()
            .map(|p| PartId {
                content_id: p.content_id.clone(),
            })
            .collect();
        self.multipart
            .complete_multipart(&self.path(key), &handle.upload_id, parts)
            .await
            .map_err(|e| map_err(key, e))?;
        Ok(())
    }

    async fn dangling_multiparts(
        &self,
        prefix: &str,
        before: std::time::SystemTime,
    ) -> Result<Vec<registry_core::storage::DanglingMultipart>, StorageError> {
        let Some(lister) = &self.uploads else {
            return Ok(Vec::new());
        };
        let found = lister.open_uploads(&self.path(prefix), before).await?;
        Ok(found
            .into_iter()
            .map(
                |(path, upload_id)| registry_core::storage::DanglingMultipart {
                    key: self.key_of(&path),
                    handle: MultipartHandle { upload_id },
                },
            )
            .collect())
    }

    async fn abort_multipart(
        &self,
        key: &str,
        handle: &MultipartHandle,
    ) -> Result<(), StorageError> {
        self.multipart
            .abort_multipart(&self.path(key), &handle.upload_id)
            .await
            .map_err(|e| map_err(key, e))
    }
}
