//! The repository catalog, served from an ordered, sharded index in the store
//! ([`super::sorted_index`]) instead of a walk of the whole store: a page reads the index's root
//! and the one or two shards it spans.
//!
//! Every manifest put records its repository in the index (creating the index, incomplete, if
//! there is none yet). A store written by distribution, or by a Berth before this index, is
//! walked once by the first catalog request (by delimiter listing, never touching blobs), which
//! adds what it found and marks the index complete. Writers add to the index before the walk
//! starts, so no repository pushed meanwhile is missed.

use std::collections::BTreeSet;

use super::Registry;
use super::sorted_index::SortedIndex;
use super::tags::Page;
use crate::error::Result;
use crate::layout;
use crate::names::RepositoryName;

/// What a rebuild of the catalog index found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CatalogRebuild {
    /// Repositories the layout holds.
    pub repositories: usize,
    /// Those the index lacked, now added.
    pub added: usize,
    /// Names the index held that the layout does not, now removed.
    pub removed: usize,
}

impl Registry {
    fn catalog_index(&self) -> SortedIndex<'_> {
        SortedIndex::new(&self.store, layout::catalog_index_prefix())
    }

    /// Records the repository in the index; names are removed only by a rebuild, so one this
    /// process wrote or found recently is not asked for again.
    pub(super) async fn add_to_catalog(&self, name: &RepositoryName) -> Result<()> {
        if self.catalogued.knows(name) {
            return Ok(());
        }
        let index = self.catalog_index();
        if !index.insert([name.to_string()]).await? {
            index.create(vec![name.to_string()]).await?;
        }
        self.catalogued.remember(name.clone());
        Ok(())
    }

    /// Whether the catalog index lists the repository (`None`: there is no index yet).
    pub(super) async fn catalog_lists(&self, name: &RepositoryName) -> Result<Option<bool>> {
        self.catalog_index().contains(name.as_str()).await
    }

    /// Repositories in lexical order, paginated.
    pub async fn list_catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        if let Some(page) = self.catalog_index().page(n, last).await? {
            return Ok(page);
        }
        self.fill_catalog(false).await?;
        match self.catalog_index().page(n, last).await? {
            Some(page) => Ok(page),
            None => Err(crate::storage::StorageError::Unavailable(
                "the catalog index was removed while it was being built".into(),
            )
            .into()),
        }
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

    /// Walks the layout and adds every repository to the catalog index, then marks it
    /// complete; with `prune`, also removes names the layout no longer holds (`berth index
    /// rebuild`: after the store was written by something else, or repositories were removed
    /// by hand).
    pub async fn fill_catalog(&self, prune: bool) -> Result<CatalogRebuild> {
        let index = self.catalog_index();
        // Before the walk: from here on every push adds its repository itself.
        index.create(Vec::new()).await?;
        let before: BTreeSet<String> = index.all().await?.unwrap_or_default().into_iter().collect();
        let walked: BTreeSet<String> = self
            .repositories_with("_manifests")
            .await?
            .iter()
            .map(|n| n.to_string())
            .collect();
        let mut add: BTreeSet<String> = walked.difference(&before).cloned().collect();
        if !prune {
            // The flat index of earlier versions also lists repositories whose manifests were
            // all deleted (as distribution's catalog does): carried over once.
            let legacy = self.store.list(&layout::legacy_catalog_prefix()).await?;
            add.extend(
                legacy
                    .objects
                    .iter()
                    .filter_map(|k| k.rsplit('/').next())
                    .map(layout::legacy_catalog_name_of)
                    .filter(|n| n.parse::<RepositoryName>().is_ok() && !before.contains(n)),
            );
        }
        let mut report = CatalogRebuild {
            repositories: walked.len(),
            added: add.len(),
            removed: 0,
        };
        index.insert(add).await?;
        if prune {
            let stale: Vec<String> = before.difference(&walked).cloned().collect();
            index.remove(stale.iter().cloned()).await?;
            // A push may have created one of them between the walk and the removal: it added
            // the name before the removal (so it went) and wrote the manifest before that, so
            // asking the layout again after the removal finds it.
            let mut back = Vec::new();
            for name in &stale {
                if let Ok(n) = name.parse::<RepositoryName>()
                    && self.has_manifests(&n).await?
                {
                    back.push(name.clone());
                }
            }
            report.removed = stale.len() - back.len();
            index.insert(back).await?;
        }
        index.mark_complete().await?;
        Ok(report)
    }

    /// Whether the layout holds anything under the repository's `_manifests`.
    async fn has_manifests(&self, name: &RepositoryName) -> Result<bool> {
        let listing = self
            .store
            .list(&layout::manifest_revisions_prefix(name))
            .await?;
        Ok(!listing.prefixes.is_empty() || !listing.objects.is_empty())
    }
}
