//! Expiry of what a pull-through cache fetched and nobody pulls any more.
//!
//! distribution drops cached content a week after fetching it, used or not. Here the clock is
//! the last pull: every pull of a cached tag or digest refreshes a marker, and a collection
//! removes the tags and manifest revisions whose marker is older than the cache's TTL. Their
//! blobs go with the same collection's sweep once nothing references them, and the next pull
//! fetches them again. A hot image never leaves the cache; a cold one does not stay forever.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::Registry;
use super::gc::GcReport;
use crate::error::Result;
use crate::layout;
use crate::names::{Reference, RepositoryName, Tag, under_prefix};
use crate::storage::{PutCondition, StorageError};

/// How long the content of the cached repositories under `prefix` lives without a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExpiry {
    /// Repositories under `prefix/`, or every repository when `None`.
    pub prefix: Option<String>,
    /// Time since the last pull after which a tag or revision is removed; `None`: never.
    pub ttl: Option<Duration>,
}

impl CacheExpiry {
    fn covers(&self, name: &str) -> bool {
        under_prefix(name, self.prefix.as_deref()).is_some()
    }
}

/// Whether a marker's time says "expired", "fresh", or that there is no marker yet.
enum LastUse {
    Before,
    Since,
    Unknown,
}

impl Registry {
    /// Records that a client pulled `reference` of `name` just now (cache expiry, retention).
    pub async fn note_pull(&self, name: &RepositoryName, reference: &Reference) -> Result<()> {
        self.store
            .put_bytes(
                &layout::pull_marker(name, reference),
                Bytes::new(),
                PutCondition::Overwrite,
            )
            .await?;
        Ok(())
    }

    async fn last_use(
        &self,
        name: &RepositoryName,
        reference: &Reference,
        cutoff: SystemTime,
    ) -> Result<LastUse> {
        match self.store.stat(&layout::pull_marker(name, reference)).await {
            Ok(info) if info.last_modified.is_some_and(|t| t < cutoff) => Ok(LastUse::Before),
            Ok(_) => Ok(LastUse::Since),
            Err(StorageError::NotFound(_)) => Ok(LastUse::Unknown),
            Err(e) => Err(e.into()),
        }
    }

    async fn forget_use(&self, name: &RepositoryName, reference: &Reference) -> Result<()> {
        self.store
            .delete(&layout::pull_marker(name, reference))
            .await?;
        Ok(())
    }

    /// Removes, from every repository a rule covers (the first that does; a rule without a
    /// TTL keeps its repositories), the tags and revisions not pulled within its TTL. Content
    /// with no marker (cached before markers existed) starts its clock now, except a revision
    /// only an expiring tag pointed at.
    pub(super) async fn expire_cached(
        &self,
        rules: &[CacheExpiry],
        now: SystemTime,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<()> {
        if rules.is_empty() {
            return Ok(());
        }
        for name in self.repositories_with("_manifests").await? {
            let Some(ttl) = rules
                .iter()
                .find(|r| r.covers(name.as_str()))
                .and_then(|r| r.ttl)
            else {
                continue;
            };
            let cutoff = now.checked_sub(ttl).unwrap_or(SystemTime::UNIX_EPOCH);
            let mut live = HashSet::new();
            let mut orphaned = HashSet::new();
            for tag in self.all_tags(&name).await? {
                let Ok(tag) = tag.parse::<Tag>() else {
                    continue;
                };
                let reference = Reference::Tag(tag.clone());
                let target = self.resolve(&name, &reference).await.ok();
                match self.last_use(&name, &reference, cutoff).await? {
                    LastUse::Before => {
                        if !dry_run {
                            self.drop_tag(&name, &tag).await?;
                            self.forget_use(&name, &reference).await?;
                        }
                        report.expired.push(format!("{name}:{tag}"));
                        orphaned.extend(target);
                        continue;
                    }
                    LastUse::Unknown if !dry_run => self.note_pull(&name, &reference).await?,
                    _ => {}
                }
                live.extend(target);
            }
            for d in self.revisions(&name).await? {
                if live.contains(&d) {
                    continue;
                }
                let reference = Reference::Digest(d.clone());
                let last_use = self.last_use(&name, &reference, cutoff).await?;
                let expired = match last_use {
                    LastUse::Before => true,
                    LastUse::Unknown => orphaned.contains(&d),
                    LastUse::Since => false,
                };
                if !expired {
                    if matches!(last_use, LastUse::Unknown) && !dry_run {
                        self.note_pull(&name, &reference).await?;
                    }
                    continue;
                }
                if !dry_run {
                    // Every tag that pointed here expired above: no need to look for them
                    // again among all the repository's tags.
                    self.unlink_revision(&name, &d, &[]).await?;
                    self.forget_use(&name, &reference).await?;
                }
                report.expired.push(format!("{name}@{d}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_cover_their_prefix_only() {
        let r = |p: Option<&str>| CacheExpiry {
            prefix: p.map(str::to_owned),
            ttl: Some(Duration::from_secs(1)),
        };
        assert!(r(None).covers("anything/at/all"));
        assert!(r(Some("hub")).covers("hub/library/alpine"));
        assert!(!r(Some("hub")).covers("hubx/app"));
        assert!(!r(Some("hub")).covers("hub"));
    }
}
