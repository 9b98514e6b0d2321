//! Blobs in a repository: existence, reads, redirects, links, mounts, deletes, upload completion.

use std::ops::Range;
use std::time::Duration;

use super::Registry;
use crate::digest::Digest;
use crate::error::{RegistryError, Result};
use crate::layout;
use crate::names::RepositoryName;
use crate::storage::{ByteStream, GetResponse, ObjectInfo, StorageError};
use crate::upload::ChunkRange;

/// What is known of bytes just stored: their size.
fn stored(size: u64) -> ObjectInfo {
    ObjectInfo {
        size,
        last_modified: None,
        version: Default::default(),
    }
}

impl Registry {
    /// Whether the repository links the blob (as a layer, or as a manifest revision).
    async fn is_linked(&self, name: &RepositoryName, digest: &Digest) -> Result<bool> {
        Ok(self.exists(&layout::layer_link(name, digest)).await?
            || self
                .exists(&layout::manifest_revision_link(name, digest))
                .await?)
    }

    /// Metadata of a blob the repository holds, else `BlobUnknown`.
    pub async fn stat_blob(&self, name: &RepositoryName, digest: &Digest) -> Result<ObjectInfo> {
        if !self.is_linked(name, digest).await? {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        }
        self.stored_blob_bytes(digest)
            .await?
            .ok_or_else(|| RegistryError::BlobUnknown(digest.clone()))
    }

    /// Reads a blob, or a range of it; the caller has already checked membership with `stat_blob`.
    pub async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<GetResponse> {
        match self.store.get(&layout::blob_data(digest), range).await {
            Ok(r) => Ok(r),
            Err(StorageError::NotFound(_)) => Err(RegistryError::BlobUnknown(digest.clone())),
            Err(StorageError::RangeNotSatisfiable { size }) => {
                Err(RegistryError::BlobRangeInvalid { size })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A presigned URL for the blob's bytes, where the backend can sign one.
    pub async fn presign_blob(
        &self,
        digest: &Digest,
        expires_in: Duration,
    ) -> Result<Option<String>> {
        Ok(self
            .store
            .presign_get(&layout::blob_data(digest), expires_in)
            .await?)
    }

    /// Makes a stored blob part of a repository.
    pub async fn link_blob(&self, name: &RepositoryName, digest: &Digest) -> Result<()> {
        self.touch([digest]).await?;
        self.write_link(&layout::layer_link(name, digest), digest)
            .await
    }

    /// Metadata of a blob's bytes if the store holds them, for whichever repository. This
    /// says nothing about who may read them: only a caller that knows the repository may
    /// have the blob (a cache whose upstream confirmed it) links them with `link_blob`.
    pub async fn stored_blob_bytes(&self, digest: &Digest) -> Result<Option<ObjectInfo>> {
        if let Some(info) = self.blob_sizes.get(digest) {
            return Ok(Some(info));
        }
        match self.store.stat(&layout::blob_data(digest)).await {
            Ok(info) => {
                self.blob_sizes.put(digest, &info);
                Ok(Some(info))
            }
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a blob from a repository (its bytes go when garbage collection finds them unused).
    pub async fn delete_blob(&self, name: &RepositoryName, digest: &Digest) -> Result<()> {
        self.require_delete()?;
        let link = layout::layer_link(name, digest);
        if !self.exists(&link).await? {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        }
        self.store.delete(&link).await?;
        Ok(())
    }

    /// Links a blob from another repository; `false` when `from` does not hold it.
    pub async fn mount_blob(
        &self,
        name: &RepositoryName,
        from: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool> {
        match self.stat_blob(from, digest).await {
            Ok(_) => {
                self.link_blob(name, digest).await?;
                Ok(true)
            }
            Err(RegistryError::BlobUnknown(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Finishes an upload session and links the blob; returns its size.
    pub async fn finish_upload(
        &self,
        name: &RepositoryName,
        id: &str,
        digest: &Digest,
        range: Option<ChunkRange>,
        body: ByteStream,
    ) -> Result<u64> {
        let size = self.uploads.finish(name, id, digest, range, body).await?;
        self.blob_sizes.put(digest, &stored(size));
        self.link_blob(name, digest).await?;
        Ok(size)
    }

    /// Stores a whole blob sent in one request and links it; returns its size.
    pub async fn put_blob(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<u64> {
        let size = self.uploads.monolithic(name, digest, body).await?;
        self.blob_sizes.put(digest, &stored(size));
        self.link_blob(name, digest).await?;
        Ok(size)
    }
}
