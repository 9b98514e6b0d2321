//! Registry operations (blobs, uploads, manifests, tags, referrers, catalog) over a storage driver.

mod blob_sizes;
mod blobs;
mod cache_expiry;
mod catalog;
mod collections;
pub mod gc;
pub mod index_suite;
mod lease;
mod manifest_cache;
mod manifests;
mod pull_times;
mod quota;
mod recently_seen;
mod references;
mod referrers;
mod replication_queue;
mod retention;
mod rules;
pub mod sorted_index;
mod tag_cache;
mod tag_index;
mod tags;
mod usage;

use std::sync::Arc;

use bytes::Bytes;

use crate::error::{RegistryError, Result};
use crate::storage::{PutCondition, StorageDriver, StorageError};
use crate::upload::UploadSessions;

pub use cache_expiry::CacheExpiry;
pub use catalog::CatalogRebuild;
pub use collections::CollectionRecord;
pub use lease::{HeldLease, StoreLease};
pub use manifests::{ManifestContent, PutManifestOutcome};
pub use references::ReferenceRepair;
pub use replication_queue::{QueuedEvent, ReplicationAction, ReplicationEvent};
pub use retention::RetentionRemoval;
pub use rules::{Quota, RepositoryRules, Retention};
pub use sorted_index::SortedIndex;
pub use tag_index::TAG_INDEX_AFTER;
pub use tags::Page;
pub use usage::{QuotaUsage, RepositoryUsage, Usage};

/// Behaviour switches that come from configuration.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Whether deletes of blobs, manifests and tags are allowed.
    pub delete_enabled: bool,
    /// Largest manifest body accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// How long this process trusts what a tag named (zero: every lookup asks the store).
    pub tag_cache_ttl: std::time::Duration,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            delete_enabled: true,
            max_manifest_bytes: 4 << 20,
            tag_cache_ttl: std::time::Duration::ZERO,
        }
    }
}

/// The registry: every operation the HTTP API exposes, independent of HTTP.
pub struct Registry {
    store: Arc<dyn StorageDriver>,
    uploads: UploadSessions,
    settings: RegistrySettings,
    manifests: manifest_cache::ManifestCache,
    blob_sizes: blob_sizes::BlobSizes,
    links: recently_seen::RecentLinks,
    missing: recently_seen::RecentLinks,
    warmed: recently_seen::RecentLinks,
    catalogued: recently_seen::RecentlySeen<crate::names::RepositoryName>,
    tags: tag_cache::TagCache,
    /// The repository policy (immutable tags, retention, quotas), when configured.
    rules: std::sync::OnceLock<Arc<dyn RepositoryRules>>,
    ledgers: quota::Ledgers,
    pull_times: pull_times::PullTimes,
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn StorageDriver>, settings: RegistrySettings) -> Self {
        let tags = tag_cache::TagCache::new(settings.tag_cache_ttl);
        Registry {
            uploads: UploadSessions::new(store.clone()),
            store,
            settings,
            manifests: manifest_cache::ManifestCache::new(64 << 20),
            blob_sizes: Default::default(),
            links: recently_seen::RecentlySeen::new(std::time::Duration::from_secs(60)),
            missing: recently_seen::RecentlySeen::new(std::time::Duration::from_secs(2)),
            // Manifests whose blobs were taken as linked: once in ten minutes, so that after the
            // links' minute the store is asked again.
            warmed: recently_seen::RecentlySeen::new(std::time::Duration::from_secs(600)),
            catalogued: recently_seen::RecentlySeen::new(std::time::Duration::from_secs(600)),
            tags,
            rules: std::sync::OnceLock::new(),
            ledgers: Default::default(),
            pull_times: Default::default(),
        }
    }

    /// Follows `rules`: immutable tags refuse moves and deletes (`TagImmutable`), retention
    /// untags at each collection, quotas refuse pushes past their limit. Set once, when the
    /// registry is built.
    pub fn set_rules(&self, rules: Arc<dyn RepositoryRules>) {
        let _ = self.rules.set(rules);
    }

    /// The repository policy, when one was set.
    pub fn rules(&self) -> Option<&Arc<dyn RepositoryRules>> {
        self.rules.get()
    }

    /// `TagImmutable` if a rule protects `tag` of `name`.
    fn check_mutable(
        &self,
        name: &crate::names::RepositoryName,
        tag: &crate::names::Tag,
    ) -> Result<()> {
        match self.rules().and_then(|r| r.immutable(name, tag)) {
            Some(rule) => Err(RegistryError::TagImmutable {
                tag: tag.to_string(),
                rule,
            }),
            None => Ok(()),
        }
    }

    /// The storage driver.
    pub fn store(&self) -> &Arc<dyn StorageDriver> {
        &self.store
    }

    /// Upload session operations.
    pub fn uploads(&self) -> &UploadSessions {
        &self.uploads
    }

    /// The settings in force.
    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    /// Removes upload sessions older than `age` in every repository; returns how many.
    pub async fn purge_uploads(&self, age: std::time::Duration, dry_run: bool) -> Result<usize> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let cutoff = now.saturating_sub(age.as_secs());
        let mut n = 0;
        for name in self.repositories_with("_uploads").await? {
            let ids = self
                .uploads
                .purge_older_than(&name, cutoff, dry_run)
                .await?;
            for id in &ids {
                tracing::info!(repository = %name, upload = %id, dry_run, "purging abandoned upload");
            }
            n += ids.len();
        }
        // Multipart writes that no session names: a crash between starting one and recording
        // it, or a monolithic push that never finished. Only the store knows them.
        let before = std::time::UNIX_EPOCH + std::time::Duration::from_secs(cutoff);
        for d in self
            .store
            .dangling_multiparts(&crate::layout::repositories_prefix(), before)
            .await?
        {
            let Some((name, id)) = crate::layout::parse_upload_data(&d.key) else {
                continue;
            };
            if self.uploads.names_multipart(&name, &id, &d.handle).await {
                continue;
            }
            tracing::info!(repository = %name, upload = %id, dry_run, "aborting a multipart upload no session names");
            if !dry_run {
                self.store.abort_multipart(&d.key, &d.handle).await?;
            }
            n += 1;
        }
        Ok(n)
    }

    fn require_delete(&self) -> Result<()> {
        if self.settings.delete_enabled {
            Ok(())
        } else {
            Err(RegistryError::Unsupported(
                "deletes are disabled (storage.delete.enabled)".into(),
            ))
        }
    }

    /// Every key under `prefix`, at any depth.
    async fn keys_under(&self, prefix: &str) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        Ok(self.store.list_recursive(prefix).try_collect().await?)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        match self.store.stat(key).await {
            Ok(_) => Ok(true),
            Err(StorageError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Refreshes the GC markers of digests a write now relies on.
    async fn touch(&self, digests: impl IntoIterator<Item = &crate::Digest>) -> Result<()> {
        let writes = digests.into_iter().map(|d| async move {
            let key = crate::layout::touched_marker(d);
            self.store
                .put_bytes(&key, Bytes::new(), PutCondition::Overwrite)
                .await
        });
        futures::future::try_join_all(writes).await?;
        Ok(())
    }

    async fn write_link(&self, key: &str, target: &crate::Digest) -> Result<()> {
        self.store
            .put_bytes(
                key,
                Bytes::from(target.to_string()),
                PutCondition::Overwrite,
            )
            .await?;
        Ok(())
    }
}
