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
use crate::upload::session::FinishedBlob;

/// What is known of bytes just stored: their size.
fn stored(size: u64) -> ObjectInfo {
    ObjectInfo {
        size,
        last_modified: None,
        version: Default::default(),
    }
}

impl Registry {
    /// Whether the repository links the blob; says nothing about whether its bytes are still
    /// stored. Manifests are not blobs here (as in distribution): a manifest is read through
    /// the manifests endpoint, and a blob check that misses costs one store request, not two.
    pub async fn links_blob(&self, name: &RepositoryName, digest: &Digest) -> Result<bool> {
        self.has_layer(name, digest).await
    }

    /// Whether the repository links the blob as a layer (seen within the last minute, or asked).
    pub(super) async fn has_layer(&self, name: &RepositoryName, digest: &Digest) -> Result<bool> {
        if self.links.knows(&(name.clone(), digest.clone())) {
            return Ok(true);
        }
        let linked = self.exists(&layout::layer_link(name, digest)).await?;
        if linked {
            self.links.remember((name.clone(), digest.clone()));
        }
        Ok(linked)
    }

    /// Like [`Registry::stat_blob`], for a client asking whether it must upload the blob (a
    /// `HEAD`): a miss is remembered for two seconds, as clients ask twice in a row (skopeo
    /// does). A blob linked meanwhile by another replica is only uploaded once more.
    pub async fn stat_blob_to_push(
        &self,
        name: &RepositoryName,
        digest: &Digest,
    ) -> Result<ObjectInfo> {
        let key = (name.clone(), digest.clone());
        if self.missing.knows(&key) {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        }
        let found = self.stat_blob(name, digest).await;
        if let Err(RegistryError::BlobUnknown(_)) = &found {
            self.missing.remember(key);
        }
        found
    }

    /// Metadata of a blob the repository holds, else `BlobUnknown`.
    pub async fn stat_blob(&self, name: &RepositoryName, digest: &Digest) -> Result<ObjectInfo> {
        if !self.has_layer(name, digest).await? {
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

    /// Makes a stored blob part of a repository; `false` when the store no longer holds its
    /// bytes. Marked first, then asked of the store (not of memory): a collection on another
    /// replica may have removed the bytes, and none that begins after the marker will.
    pub async fn link_blob(&self, name: &RepositoryName, digest: &Digest) -> Result<bool> {
        self.touch([digest]).await?;
        if self.blob_bytes_in_store(digest).await?.is_none() {
            return Ok(false);
        }
        self.write_link(&layout::layer_link(name, digest), digest)
            .await?;
        self.note_linked(name, digest);
        Ok(true)
    }

    /// Remembers that `name` links `digest` now (and forgets a miss remembered before).
    fn note_linked(&self, name: &RepositoryName, digest: &Digest) {
        self.links.remember((name.clone(), digest.clone()));
        self.missing.forget(&(name.clone(), digest.clone()));
    }

    /// Metadata of a blob's bytes if the store holds them, for whichever repository. This
    /// says nothing about who may read them: only a caller that knows the repository may
    /// have the blob (a cache whose upstream confirmed it) links them with `link_blob`.
    pub async fn stored_blob_bytes(&self, digest: &Digest) -> Result<Option<ObjectInfo>> {
        if let Some(info) = self.blob_sizes.get(digest) {
            return Ok(Some(info));
        }
        self.blob_bytes_in_store(digest).await
    }

    /// Like [`Registry::stored_blob_bytes`], asked of the store whatever this process
    /// remembers (what a push relies on: another replica's collector may have removed them),
    /// and remembered or forgotten by the answer.
    pub(super) async fn blob_bytes_in_store(&self, digest: &Digest) -> Result<Option<ObjectInfo>> {
        match self.store.stat(&layout::blob_data(digest)).await {
            Ok(info) => {
                self.blob_sizes.put(digest, &info);
                Ok(Some(info))
            }
            Err(StorageError::NotFound(_)) => {
                self.blob_sizes.forget(digest);
                Ok(None)
            }
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
        self.links.forget(&(name.clone(), digest.clone()));
        self.store.delete(&link).await?;
        self.links.forget(&(name.clone(), digest.clone()));
        Ok(())
    }

    /// Links a blob from another repository; `false` when `from` does not hold it.
    pub async fn mount_blob(
        &self,
        name: &RepositoryName,
        from: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool> {
        if !self.has_layer(from, digest).await? {
            return Ok(false);
        }
        self.link_blob(name, digest).await
    }

    /// Finishes an upload session and links the blob; returns its size. `fresh`: the request
    /// was made with the URL the session's start gave.
    pub async fn finish_upload(
        &self,
        name: &RepositoryName,
        id: &str,
        url: impl Into<crate::upload::session::SessionUrl>,
        digest: &Digest,
        range: Option<ChunkRange>,
        body: ByteStream,
    ) -> Result<u64> {
        let key = layout::layer_link(name, digest);
        let link = self.write_link(&key, digest);
        let blob = self
            .uploads
            .finish(name, id, url, digest, range, body, Box::pin(link))
            .await?;
        Ok(self.linked_after_upload(name, digest, blob))
    }

    /// Stores a whole blob sent in one request and links it; returns its size.
    pub async fn put_blob(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<u64> {
        let key = layout::layer_link(name, digest);
        let link = self.write_link(&key, digest);
        let blob = self
            .uploads
            .monolithic(name, digest, body, Box::pin(link))
            .await?;
        Ok(self.linked_after_upload(name, digest, blob))
    }

    /// Remembers a blob an upload stored and linked: its link is written beside the publish,
    /// once the bytes are verified (a link before would show the digest's bytes, which may be
    /// another repository's, to this one's readers). A publish that then fails leaves a link
    /// to nothing, which every reader and manifest check sees as missing. Bytes written just
    /// now need no GC marker besides themselves: a collection spares fresh bytes, and the
    /// manifest that will rely on them writes markers and checks the bytes are still stored.
    fn linked_after_upload(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        blob: FinishedBlob,
    ) -> u64 {
        self.blob_sizes.put(digest, &stored(blob.size));
        self.note_linked(name, digest);
        blob.size
    }
}
