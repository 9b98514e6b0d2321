//! Quotas: how many bytes a repository's revisions name, each blob once, kept in a ledger in
//! the store so that every replica counts the same.
//!
//! A manifest put in a repository a quota covers reserves its revision in the ledger (a
//! conditional write; a replica that lost the race reads the ledger again and decides again)
//! before the revision is linked, and is refused with `QuotaExceeded` when the bytes it adds
//! would pass the limit. A revision removed leaves the ledger after it is unlinked. So a
//! crash can only over-count, which refuses early rather than lets a repository grow past
//! its limit; each collection reconciles the ledger with the layout (what was reserved and
//! never linked, older than the grace window, leaves it; what was linked without it, as
//! before the quota existed, joins it), and a missing ledger is rebuilt from the layout.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Registry;
use super::rules::Quota;
use crate::digest::Digest;
use crate::error::{RegistryError, Result};
use crate::layout;
use crate::names::RepositoryName;
use crate::storage::{ObjectVersion, PutCondition, StorageError};

/// One reserved revision: when, and every digest it names (itself included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    at: u64,
    names: Vec<Digest>,
}

/// A repository's ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Ledger {
    revisions: BTreeMap<Digest, Entry>,
    sizes: BTreeMap<Digest, u64>,
}

impl Ledger {
    /// Bytes the repository holds: each digest its revisions name, once.
    pub(super) fn bytes(&self) -> u64 {
        let named: HashSet<&Digest> = self
            .revisions
            .values()
            .flat_map(|e| e.names.iter())
            .collect();
        named
            .into_iter()
            .map(|d| self.sizes.get(d).copied().unwrap_or(0))
            .sum()
    }

    /// Bytes `names` would add.
    fn adds(&self, names: &[(Digest, u64)]) -> u64 {
        let held: HashSet<&Digest> = self
            .revisions
            .values()
            .flat_map(|e| e.names.iter())
            .collect();
        let mut seen = HashSet::new();
        names
            .iter()
            .filter(|(d, _)| !held.contains(d) && seen.insert(d))
            .map(|(_, s)| s)
            .sum()
    }

    fn holds(&self, d: &Digest) -> bool {
        self.revisions.values().any(|e| e.names.contains(d))
    }

    fn reserve(&mut self, revision: &Digest, names: &[(Digest, u64)]) {
        for (d, s) in names {
            self.sizes.insert(d.clone(), *s);
        }
        self.revisions.insert(
            revision.clone(),
            Entry {
                at: now_secs(),
                names: names.iter().map(|(d, _)| d.clone()).collect(),
            },
        );
    }

    fn release(&mut self, revision: &Digest) {
        self.revisions.remove(revision);
        let named: HashSet<Digest> = self
            .revisions
            .values()
            .flat_map(|e| e.names.iter().cloned())
            .collect();
        self.sizes.retain(|d, _| named.contains(d));
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Ledgers this process read or wrote, with their versions: a write conditioned on the
/// version needs no read first while this process is the only writer.
#[derive(Default)]
pub(super) struct Ledgers {
    known: Mutex<HashMap<RepositoryName, (Ledger, ObjectVersion)>>,
}

impl Ledgers {
    fn get(&self, name: &RepositoryName) -> Option<(Ledger, ObjectVersion)> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn put(&self, name: &RepositoryName, ledger: Ledger, version: ObjectVersion) {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.clone(), (ledger, version));
    }

    fn forget(&self, name: &RepositoryName) {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
    }
}

/// Conditional writes tried before a change gives up (each lost race re-reads the ledger).
const ATTEMPTS: usize = 8;

impl Registry {
    fn quota_of(&self, name: &RepositoryName) -> Option<Quota> {
        self.rules().and_then(|r| r.quota(name))
    }

    /// The ledger of `name` as the store has it, rebuilt from the layout when there is none.
    async fn read_ledger(&self, name: &RepositoryName) -> Result<(Ledger, ObjectVersion)> {
        let key = layout::quota_ledger(name);
        match self.store.read_small(&key).await {
            Ok((body, info)) => {
                let ledger = serde_json::from_slice(&body).unwrap_or_default();
                self.ledgers
                    .put(name, Ledger::clone(&ledger), info.version.clone());
                Ok((ledger, info.version))
            }
            Err(StorageError::NotFound(_)) => {
                let ledger = self.ledger_from_layout(name).await?;
                match self
                    .store
                    .put_bytes(&key, to_bytes(&ledger), PutCondition::CreateOnly)
                    .await
                {
                    Ok(info) => {
                        self.ledgers.put(name, ledger.clone(), info.version.clone());
                        Ok((ledger, info.version))
                    }
                    // Another replica built it first: take theirs.
                    Err(StorageError::AlreadyExists(_) | StorageError::Precondition(_)) => {
                        Box::pin(self.read_ledger(name)).await
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The ledger this process knows, or the store's.
    async fn ledger(&self, name: &RepositoryName) -> Result<(Ledger, ObjectVersion)> {
        match self.ledgers.get(name) {
            Some(known) => Ok(known),
            None => self.read_ledger(name).await,
        }
    }

    /// Walks the repository's revisions: what each names and the stored sizes.
    async fn ledger_from_layout(&self, name: &RepositoryName) -> Result<Ledger> {
        let mut ledger = Ledger::default();
        for d in self.revisions(name).await? {
            let names = self.sized_names(&d, self.references(&d).await?).await?;
            ledger.reserve(&d, &names);
        }
        Ok(ledger)
    }

    /// `revision` and `references` with their stored sizes (0 for what is not stored).
    async fn sized_names(
        &self,
        revision: &Digest,
        references: Vec<Digest>,
    ) -> Result<Vec<(Digest, u64)>> {
        let mut out = Vec::with_capacity(references.len() + 1);
        for d in std::iter::once(revision.clone()).chain(references) {
            let size = match self.blob_sizes.get(&d) {
                Some(info) => info.size,
                None => self.blob_bytes_in_store(&d).await?.map_or(0, |i| i.size),
            };
            out.push((d, size));
        }
        Ok(out)
    }

    /// Changes the ledger of `name` with `change` (which may refuse), conditionally on the
    /// version it read, reading again after a lost race.
    async fn change_ledger(
        &self,
        name: &RepositoryName,
        change: impl Fn(&mut Ledger) -> Result<bool>,
    ) -> Result<()> {
        let key = layout::quota_ledger(name);
        let mut fresh = self.ledgers.get(name).is_none();
        let (mut ledger, mut version) = self.ledger(name).await?;
        for _ in 0..ATTEMPTS {
            let mut next = ledger.clone();
            match change(&mut next) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                // Refused by what this process remembered: another replica may have freed
                // room since. Only the store's ledger refuses.
                Err(_) if !fresh => {
                    (ledger, version) = self.read_ledger(name).await?;
                    fresh = true;
                    continue;
                }
                Err(e) => return Err(e),
            }
            match self
                .store
                .put_bytes(
                    &key,
                    to_bytes(&next),
                    PutCondition::IfVersion(version.clone()),
                )
                .await
            {
                Ok(info) => {
                    self.ledgers.put(name, next, info.version);
                    return Ok(());
                }
                Err(StorageError::Precondition(_) | StorageError::NotFound(_)) => {
                    (ledger, version) = self.read_ledger(name).await?;
                }
                Err(e) => {
                    self.ledgers.forget(name);
                    return Err(e.into());
                }
            }
        }
        Err(RegistryError::Storage(StorageError::backend(format!(
            "the quota ledger of {name} kept changing under {ATTEMPTS} writes"
        ))))
    }

    /// Before a revision is linked: reserves what it names in the quota ledger, or refuses
    /// when that passes the quota. Nothing to do where no quota applies.
    pub(super) async fn reserve_quota(
        &self,
        name: &RepositoryName,
        revision: &Digest,
        references: Vec<Digest>,
    ) -> Result<()> {
        let Some(quota) = self.quota_of(name) else {
            return Ok(());
        };
        let names = self.sized_names(revision, references).await?;
        self.change_ledger(name, |ledger| {
            if ledger.revisions.contains_key(revision) {
                return Ok(false);
            }
            let (usage, adds) = (ledger.bytes(), ledger.adds(&names));
            if adds > 0 && usage + adds > quota.bytes {
                return Err(RegistryError::QuotaExceeded {
                    rule: quota.name.clone(),
                    limit: quota.bytes,
                    usage,
                    adds,
                });
            }
            ledger.reserve(revision, &names);
            Ok(true)
        })
        .await
    }

    /// After a revision was unlinked: it leaves the ledger (a failure only over-counts until
    /// the next collection reconciles).
    pub(super) async fn release_quota(&self, name: &RepositoryName, revision: &Digest) {
        if self.quota_of(name).is_none() {
            return;
        }
        let released = self
            .change_ledger(name, |ledger| {
                let held = ledger.revisions.contains_key(revision);
                ledger.release(revision);
                Ok(held)
            })
            .await;
        if let Err(e) = released {
            tracing::warn!(repository = %name, digest = %revision, error = %e, "the quota ledger still counts a removed revision until the next collection");
        }
    }

    /// Refuses a blob of `size` bytes (`digest`, when known) that alone would take `name`
    /// past its quota: an upload refused before its bytes are sent.
    pub async fn check_blob_quota(
        &self,
        name: &RepositoryName,
        digest: Option<&Digest>,
        size: u64,
    ) -> Result<()> {
        let Some(quota) = self.quota_of(name) else {
            return Ok(());
        };
        let fits = |ledger: &Ledger| {
            digest.is_some_and(|d| ledger.holds(d)) || ledger.bytes() + size <= quota.bytes
        };
        if self.ledgers.get(name).is_some_and(|(l, _)| fits(&l)) {
            return Ok(());
        }
        // Refused only by the store's ledger: another replica may have freed room.
        let (ledger, _) = self.read_ledger(name).await?;
        let usage = ledger.bytes();
        if !fits(&ledger) {
            return Err(RegistryError::QuotaExceeded {
                rule: quota.name,
                limit: quota.bytes,
                usage,
                adds: size,
            });
        }
        Ok(())
    }

    /// Bytes the ledger of `name` counts (for usage reports), when a quota covers it.
    pub async fn quota_usage(&self, name: &RepositoryName) -> Result<Option<(Quota, u64)>> {
        let Some(quota) = self.quota_of(name) else {
            return Ok(None);
        };
        let (ledger, _) = self.read_ledger(name).await?;
        Ok(Some((quota, ledger.bytes())))
    }

    /// Makes the ledger of `name` agree with the layout: revisions linked join it,
    /// reservations older than `cutoff` that were never linked (or were removed) leave it.
    pub(super) async fn reconcile_quota(
        &self,
        name: &RepositoryName,
        linked: &[Digest],
        cutoff: SystemTime,
    ) -> Result<()> {
        if self.quota_of(name).is_none() {
            return Ok(());
        }
        let (ledger, _) = self.read_ledger(name).await?;
        let cutoff = cutoff
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let linked_set: HashSet<&Digest> = linked.iter().collect();
        let mut joining = Vec::new();
        for d in linked {
            if !ledger.revisions.contains_key(d) {
                joining.push((
                    d.clone(),
                    self.sized_names(d, self.references(d).await?).await?,
                ));
            }
        }
        let leaving: Vec<Digest> = ledger
            .revisions
            .iter()
            .filter(|(d, e)| !linked_set.contains(d) && e.at < cutoff)
            .map(|(d, _)| d.clone())
            .collect();
        if joining.is_empty() && leaving.is_empty() {
            return Ok(());
        }
        tracing::info!(repository = %name, joining = joining.len(), leaving = leaving.len(), "quota ledger reconciled with the layout");
        self.change_ledger(name, |ledger| {
            for (d, names) in &joining {
                if !ledger.revisions.contains_key(d) {
                    ledger.reserve(d, names);
                }
            }
            for d in &leaving {
                ledger.release(d);
            }
            Ok(true)
        })
        .await
    }

    /// Rebuilds the ledger of every repository a quota covers from the layout (`berth usage
    /// --rebuild`); returns the repositories and their bytes.
    pub async fn rebuild_quotas(&self) -> Result<Vec<(RepositoryName, u64)>> {
        let mut out = Vec::new();
        for name in self.repositories_with("_manifests").await? {
            if self.quota_of(&name).is_none() {
                continue;
            }
            let ledger = self.ledger_from_layout(&name).await?;
            let info = self
                .store
                .put_bytes(
                    &layout::quota_ledger(&name),
                    to_bytes(&ledger),
                    PutCondition::Overwrite,
                )
                .await?;
            out.push((name.clone(), ledger.bytes()));
            self.ledgers.put(&name, ledger, info.version);
        }
        Ok(out)
    }
}

fn to_bytes(ledger: &Ledger) -> Bytes {
    Bytes::from(serde_json::to_vec(ledger).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    fn d(s: &str) -> Digest {
        Digest::of(Algorithm::Sha256, s.as_bytes())
    }

    #[test]
    fn blobs_count_once_and_leave_with_their_last_revision() {
        let mut l = Ledger::default();
        let (m1, m2, shared, a, b) = (d("m1"), d("m2"), d("base"), d("a"), d("b"));
        l.reserve(
            &m1,
            &[(m1.clone(), 1), (shared.clone(), 100), (a.clone(), 10)],
        );
        assert_eq!(l.bytes(), 111);
        let second = [(m2.clone(), 1), (shared.clone(), 100), (b.clone(), 20)];
        assert_eq!(l.adds(&second), 21, "the shared base is held already");
        l.reserve(&m2, &second);
        assert_eq!(l.bytes(), 132);
        l.release(&m1);
        assert_eq!(l.bytes(), 121);
        assert!(l.holds(&shared) && !l.holds(&a));
        l.release(&m2);
        assert_eq!(l, Ledger::default());
    }
}
