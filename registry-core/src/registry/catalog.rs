//! The repository catalog, served from Berth's index instead of a walk of the whole store.
//!
//! Every manifest put records its repository in the index. A store written by distribution has no
//! index, so the first catalog request walks the repository tree once (by delimiter listing, never
//! touching blobs) and marks the index complete.

use bytes::Bytes;

use super::Registry;
use super::tags::{Page, paginate};
use crate::error::Result;
use crate::layout;
use crate::names::RepositoryName;
use crate::storage::{PutCondition, StorageError};

impl Registry {
    /// Records the repository in the index; entries are never removed, so one this process
    /// wrote or found recently is not asked for again.
    pub(super) async fn add_to_catalog(&self, name: &RepositoryName) -> Result<()> {
        if self.catalogued.knows(name) {
            return Ok(());
        }
        let key = layout::catalog_entry(name);
        match self
            .store
            .put_bytes(&key, Bytes::new(), PutCondition::CreateOnly)
            .await
        {
            Ok(_) | Err(StorageError::AlreadyExists(_)) | Err(StorageError::Precondition(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.catalogued.remember(name.clone());
        Ok(())
    }

    /// Repositories in lexical order, paginated.
    pub async fn list_catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        if !self.exists(&layout::catalog_complete_marker()).await? {
            self.rebuild_catalog().await?;
        }
        let listing = self.store.list(&layout::catalog_prefix()).await?;
        let names = listing
            .objects
            .iter()
            .filter_map(|k| k.rsplit('/').next())
            .map(layout::catalog_name_of)
            .collect();
        Ok(paginate(names, n, last))
    }

    /// Every repository directory holding a `marker` folder (`_manifests`, `_uploads`, ...),
    /// found by delimiter listing of the repository tree (never of blobs or links).
    pub async fn repositories_with(&self, marker: &str) -> Result<Vec<RepositoryName>> {
        let root = layout::repositories_prefix();
        let mut pending = vec![String::new()];
        let mut found = Vec::new();
        while let Some(rel) = pending.pop() {
            let listing = self.store.list(&format!("{root}{rel}")).await?;
            for child in listing.prefixes {
                if child == marker {
                    if let Ok(name) = rel.trim_end_matches('/').parse::<RepositoryName>() {
                        found.push(name);
                    }
                } else if !child.starts_with('_') {
                    pending.push(format!("{rel}{child}/"));
                }
            }
        }
        Ok(found)
    }

    /// Finds every repository in the layout and records it in the catalog index.
    pub async fn rebuild_catalog(&self) -> Result<usize> {
        let repos = self.repositories_with("_manifests").await?;
        let found = repos.len();
        for name in &repos {
            self.add_to_catalog(name).await?;
        }
        self.store
            .put_bytes(
                &layout::catalog_complete_marker(),
                Bytes::new(),
                PutCondition::Overwrite,
            )
            .await?;
        Ok(found)
    }
}
