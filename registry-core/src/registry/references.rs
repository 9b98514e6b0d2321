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

/// What revision `d`, whose manifest is `manifest` (`None`: unreadable), refers to, itself
/// included: the blobs its reference entries name.
pub(super) fn with_itself(manifest: Option<crate::manifest::Manifest>, d: &Digest) -> Vec<Digest> {
    let mut refs = manifest.map(super::gc::references_of).unwrap_or_default();
    refs.push(d.clone());
    refs
}

/// A verifying full run's check of the index. Entries are held as 128-bit hashes of their keys
/// (about a fifth of the memory of the keys: 1,100,000 entries at 100,000 repositories), the
/// index is listed before the mark and again after it.
pub(super) struct ReferenceCheck {
    present: HashSet<u128>,
    wanted: HashSet<u128>,
    missing: Vec<(String, Bytes)>,
    dry_run: bool,
    added: usize,
}

fn entry_hash(key: &str) -> u128 {
    use sha2::Digest as _;
    let sum = sha2::Sha256::digest(key.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&sum[..16]);
    u128::from_le_bytes(first)
}

/// The index entries of revision `d` of `name`, which refers to `refs`.
fn entries(name: &RepositoryName, d: &Digest, refs: &[Digest]) -> Vec<String> {
    refs.iter()
        .map(|b| layout::reference_entry(b, name, d))
        .collect()
}

/// The entries of `entries`, each with the body that names its revision.
fn with_bodies(keys: Vec<String>, name: &RepositoryName, d: &Digest) -> Vec<(String, Bytes)> {
    let body = Bytes::from(layout::reference_body(name, d));
    keys.into_iter().map(|k| (k, body.clone())).collect()
}

impl Registry {
    /// Writes the entries of revision `d` of `name`, which refers to `refs` (itself among them).
    pub(super) async fn add_references(
        &self,
        name: &RepositoryName,
        d: &Digest,
        refs: &[Digest],
    ) -> Result<()> {
        self.put_all(with_bodies(entries(name, d, refs), name, d))
            .await
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
        let keys = blobs
            .iter()
            .map(|b| (layout::gc_candidate(b), Bytes::new()));
        self.put_all(keys.collect()).await
    }

    async fn put_all(&self, objects: Vec<(String, Bytes)>) -> Result<()> {
        let store = self.store.clone();
        stream::iter(objects)
            .map(move |(key, body)| {
                let store = store.clone();
                async move { store.put_bytes(&key, body, PutCondition::Overwrite).await }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// What revision `d` refers to, itself included (its manifest's references when its bytes
    /// are stored and parse).
    pub(super) async fn revision_references(&self, d: &Digest) -> Result<Vec<Digest>> {
        Ok(with_itself(self.stored_manifest(d).await?, d))
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

    /// Starts a verifying full run's check: the entries the index holds now, as hashes.
    pub(super) async fn begin_reference_check(&self, dry_run: bool) -> Result<ReferenceCheck> {
        let mut present = HashSet::new();
        let mut listing = self.store.list_recursive(&layout::references_prefix());
        while let Some(key) = listing.try_next().await? {
            present.insert(entry_hash(&key));
        }
        Ok(ReferenceCheck {
            present,
            wanted: HashSet::new(),
            missing: Vec::new(),
            dry_run,
            added: 0,
        })
    }

    /// Records that revision `d` of `name`, which refers to `refs`, calls for its entries;
    /// those the index lacks are written (in batches, as the mark goes).
    pub(super) async fn want_references(
        &self,
        check: &mut ReferenceCheck,
        name: &RepositoryName,
        d: &Digest,
        refs: &[Digest],
    ) -> Result<()> {
        for (key, body) in with_bodies(entries(name, d, refs), name, d) {
            let h = entry_hash(&key);
            if check.wanted.insert(h) && !check.present.contains(&h) {
                check.added += 1;
                check.missing.push((key, body));
            }
        }
        if check.missing.len() >= 1000 {
            self.write_missing(check).await?;
        }
        Ok(())
    }

    async fn write_missing(&self, check: &mut ReferenceCheck) -> Result<()> {
        let missing = std::mem::take(&mut check.missing);
        if !check.dry_run {
            self.put_all(missing).await?;
        }
        Ok(())
    }

    /// Ends the check: writes what is still missing, removes entries older than `cutoff`
    /// that no walked revision called for and whose revision link is gone (younger ones may
    /// be a push's, written before its link), and records the index complete. A dry run
    /// counts without changing anything.
    pub(super) async fn finish_reference_check(
        &self,
        mut check: ReferenceCheck,
        cutoff: SystemTime,
    ) -> Result<ReferenceRepair> {
        self.write_missing(&mut check).await?;
        let mut repair = ReferenceRepair {
            added: check.added,
            removed: 0,
        };
        let mut unwanted = Vec::new();
        let mut listing = self.store.list_recursive(&layout::references_prefix());
        while let Some(key) = listing.try_next().await? {
            if !check.wanted.contains(&entry_hash(&key)) {
                unwanted.push(key);
            }
        }
        for key in unwanted {
            let (body, info) = match self.store.read_small(&key).await {
                Ok(read) => read,
                Err(StorageError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let Some((name, revision)) = layout::parse_reference_body(&body) else {
                continue;
            };
            if info.last_modified.is_none_or(|t| t >= cutoff)
                || self
                    .exists(&layout::manifest_revision_link(&name, &revision))
                    .await?
            {
                continue;
            }
            repair.removed += 1;
            if !check.dry_run {
                self.store.delete(&key).await?;
            }
        }
        if !check.dry_run {
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
