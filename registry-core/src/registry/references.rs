//! The reference index: under each blob, one entry per manifest revision (repository and
//! digest) that refers to it, or is it. An incremental collection decides about one blob with
//! one listing instead of walking every repository's manifests.
//!
//! A revision's entries are written before its link and removed after it, so no revision ever
//! exists without them (a crash between leaves an extra entry, which only keeps a blob). A
//! removal also marks the blobs as candidates of the next incremental collection, as a
//! finished upload marks its bytes. Full collections check the whole index against what they
//! marked and mend it.

use std::collections::HashSet;
use std::time::SystemTime;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};

use super::Registry;
use crate::digest::Digest;
use crate::error::Result;
use crate::layout;
use crate::names::RepositoryName;
use crate::storage::{PutCondition, StorageError};

/// What a full collection changed in the reference index.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReferenceRepair {
    /// Entries the layout called for and the index lacked (a store written before the index,
    /// or by distribution), written.
    pub added: usize,
    /// Entries of revisions that no longer exist, removed.
    pub removed: usize,
}

/// The index entries of revision `d` of `name`, which refers to `refs`.
fn entries(name: &RepositoryName, d: &Digest, refs: &[Digest]) -> Vec<String> {
    refs.iter()
        .map(|b| layout::reference_entry(b, name, d))
        .collect()
}

impl Registry {
    /// Writes the entries of revision `d` of `name`, which refers to `refs` (itself among them).
    pub(super) async fn add_references(
        &self,
        name: &RepositoryName,
        d: &Digest,
        refs: &[Digest],
    ) -> Result<()> {
        self.put_empty_all(entries(name, d, refs)).await
    }

    /// Removes the entries of a revision whose link was just removed, and marks what it
    /// referred to as candidates.
    pub(super) async fn drop_references(
        &self,
        name: &RepositoryName,
        d: &Digest,
        refs: &[Digest],
    ) -> Result<()> {
        let store = self.store.clone();
        stream::iter(entries(name, d, refs))
            .map(move |key| {
                let store = store.clone();
                async move { store.delete(&key).await }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        self.mark_candidates(refs).await
    }

    /// Marks blobs for the next incremental collection to look at.
    pub(super) async fn mark_candidates(&self, blobs: &[Digest]) -> Result<()> {
        self.put_empty_all(blobs.iter().map(layout::gc_candidate).collect())
            .await
    }

    async fn put_empty_all(&self, keys: Vec<String>) -> Result<()> {
        let store = self.store.clone();
        stream::iter(keys)
            .map(move |key| {
                let store = store.clone();
                async move {
                    store
                        .put_bytes(&key, Bytes::new(), PutCondition::Overwrite)
                        .await
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// What revision `d` refers to, itself included (its manifest's references when its bytes
    /// are stored and parse).
    pub(super) async fn revision_references(&self, d: &Digest) -> Result<Vec<Digest>> {
        let mut refs = self.references(d).await?;
        refs.push(d.clone());
        Ok(refs)
    }

    /// Whether any revision refers to blob `d`: one listing.
    pub(super) async fn is_referenced(&self, d: &Digest) -> Result<bool> {
        let mut entries = self.store.list_recursive(&layout::references_of(d));
        Ok(entries.try_next().await?.is_some())
    }

    /// When the last full collection left the index matching the layout; `None`: never, so
    /// an incremental collection cannot be trusted yet.
    pub async fn references_complete_since(&self) -> Result<Option<SystemTime>> {
        match self.store.stat(&layout::references_complete_marker()).await {
            Ok(info) => Ok(Some(info.last_modified.unwrap_or(SystemTime::UNIX_EPOCH))),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Mends the index against `wanted` (every entry the revisions a full collection walked
    /// call for): writes the missing ones, removes entries older than `cutoff` whose revision
    /// link is gone (younger ones may be a push's, written before its link), and marks the
    /// index complete. `dry_run` counts without changing anything.
    pub(super) async fn repair_references(
        &self,
        mut wanted: HashSet<String>,
        cutoff: SystemTime,
        dry_run: bool,
    ) -> Result<ReferenceRepair> {
        let mut repair = ReferenceRepair::default();
        let mut present = self.store.list_recursive(&layout::references_prefix());
        let mut unwanted = Vec::new();
        while let Some(key) = present.try_next().await? {
            if !wanted.remove(&key) {
                unwanted.push(key);
            }
        }
        repair.added = wanted.len();
        if !dry_run {
            self.put_empty_all(wanted.into_iter().collect()).await?;
        }
        for key in unwanted {
            let Some((_, name, revision)) = layout::parse_reference_entry(&key) else {
                continue;
            };
            let info = match self.store.stat(&key).await {
                Ok(i) => i,
                Err(StorageError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            if info.last_modified.is_none_or(|t| t >= cutoff)
                || self
                    .exists(&layout::manifest_revision_link(&name, &revision))
                    .await?
            {
                continue;
            }
            repair.removed += 1;
            if !dry_run {
                self.store.delete(&key).await?;
            }
        }
        if !dry_run {
            self.store
                .put_bytes(
                    &layout::references_complete_marker(),
                    Bytes::new(),
                    PutCondition::Overwrite,
                )
                .await?;
        }
        Ok(repair)
    }
}
