//! What each repository holds: bytes (counted once per blob per repository), bytes no other
//! repository shares, tags, manifests, the last push; and the registry's total, each blob once.
//! Walked from the layout, so it is right whatever replica or crash wrote it.

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::Registry;
use crate::digest::Digest;
use crate::error::Result;
use crate::layout;
use crate::storage::StorageError;

/// One repository's usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepositoryUsage {
    /// Its name.
    pub name: String,
    /// Bytes of every blob and manifest its revisions name, each once.
    pub bytes: u64,
    /// Of those, the bytes no other repository's revisions name.
    pub unique_bytes: u64,
    /// Tags.
    pub tags: usize,
    /// Manifest revisions.
    pub manifests: usize,
    /// When its newest revision was pushed (unix seconds).
    pub last_push: Option<u64>,
    /// When a client last pulled a manifest from it (unix seconds; replicas write their
    /// pulls every few minutes).
    pub last_pull: Option<u64>,
    /// The quota that covers it, with what its ledger counts.
    pub quota: Option<QuotaUsage>,
}

/// A repository's quota and what counts against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaUsage {
    /// The quota's name.
    pub name: String,
    /// Its limit in bytes.
    pub limit: u64,
    /// Bytes its ledger counts.
    pub used: u64,
}

/// The registry's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// By repository, the biggest first.
    pub repositories: Vec<RepositoryUsage>,
    /// Bytes of every blob some repository names, each once.
    pub total_bytes: u64,
}

fn secs(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

impl Registry {
    /// Walks every repository and says what it holds.
    pub async fn usage(&self) -> Result<Usage> {
        let mut sizes: HashMap<Digest, u64> = HashMap::new();
        let mut held: Vec<(RepositoryUsage, HashSet<Digest>)> = Vec::new();
        let pulls = self.pull_times().await?;
        for name in self.repositories_with("_manifests").await? {
            let revisions = self.revisions(&name).await?;
            let mut digests: HashSet<Digest> = HashSet::new();
            let mut last_push = None;
            for d in &revisions {
                if let Ok(info) = self
                    .store
                    .stat(&layout::manifest_revision_link(&name, d))
                    .await
                {
                    last_push = last_push.max(secs(info.last_modified));
                }
                digests.insert(d.clone());
                digests.extend(self.references(d).await?);
            }
            for d in &digests {
                if sizes.contains_key(d) {
                    continue;
                }
                let size = match self.store.stat(&layout::blob_data(d)).await {
                    Ok(info) => info.size,
                    Err(StorageError::NotFound(_)) => 0,
                    Err(e) => return Err(e.into()),
                };
                sizes.insert(d.clone(), size);
            }
            let usage = RepositoryUsage {
                name: name.to_string(),
                bytes: digests.iter().map(|d| sizes[d]).sum(),
                unique_bytes: 0,
                tags: self.all_tags(&name).await?.len(),
                manifests: revisions.len(),
                last_push,
                last_pull: pulls.get(name.as_str()).copied(),
                quota: self.quota_usage(&name).await?.map(|(q, used)| QuotaUsage {
                    name: q.name,
                    limit: q.bytes,
                    used,
                }),
            };
            held.push((usage, digests));
        }
        let mut holders: HashMap<&Digest, usize> = HashMap::new();
        for (_, digests) in &held {
            for d in digests {
                *holders.entry(d).or_default() += 1;
            }
        }
        let unique: Vec<u64> = held
            .iter()
            .map(|(_, digests)| {
                digests
                    .iter()
                    .filter(|d| holders[d] == 1)
                    .map(|d| sizes[d])
                    .sum()
            })
            .collect();
        let total_bytes = holders.keys().map(|d| sizes[*d]).sum();
        let mut repositories: Vec<RepositoryUsage> = held
            .into_iter()
            .zip(unique)
            .map(|((mut u, _), unique_bytes)| {
                u.unique_bytes = unique_bytes;
                u
            })
            .collect();
        repositories.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
        Ok(Usage {
            repositories,
            total_bytes,
        })
    }
}
