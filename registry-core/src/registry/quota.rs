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

/// A repository's ledger, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StoredLedger {
    revisions: BTreeMap<Digest, Entry>,
    sizes: BTreeMap<Digest, u64>,
}

/// A ledger with, beside it, how many revisions name each digest and the bytes they hold: a
/// push asks and changes those without walking every revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Ledger {
    stored: StoredLedger,
    named: HashMap<Digest, u32>,
    bytes: u64,
}

impl From<StoredLedger> for Ledger {
    fn from(stored: StoredLedger) -> Ledger {
        let mut named: HashMap<Digest, u32> = HashMap::new();
        for e in stored.revisions.values() {
            for d in &e.names {
                *named.entry(d.clone()).or_default() += 1;
            }
        }
        let bytes = named
            .keys()
            .map(|d| stored.sizes.get(d).copied().unwrap_or(0))
            .sum();
        Ledger {
            stored,
            named,
            bytes,
        }
    }
}

impl Ledger {
    /// Bytes the repository holds: each digest its revisions name, once.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes `names` would add.
    fn adds(&self, names: &[(Digest, u64)]) -> u64 {
        let mut seen = HashSet::new();
        names
            .iter()
            .filter(|(d, _)| !self.named.contains_key(d) && seen.insert(d))
            .map(|(_, s)| s)
            .sum()
    }

    fn holds(&self, d: &Digest) -> bool {
        self.named.contains_key(d)
    }

    fn has_revision(&self, d: &Digest) -> bool {
        self.stored.revisions.contains_key(d)
    }

    fn reserve(&mut self, revision: &Digest, names: &[(Digest, u64)]) {
        if self.has_revision(revision) {
            return;
        }
        let mut distinct: Vec<Digest> = Vec::with_capacity(names.len());
        for (d, s) in names {
            if distinct.contains(d) {
                continue;
            }
            distinct.push(d.clone());
            let count = self.named.entry(d.clone()).or_default();
            if *count == 0 {
                self.stored.sizes.insert(d.clone(), *s);
                self.bytes += s;
            }
            *count += 1;
        }
        self.stored.revisions.insert(
            revision.clone(),
            Entry {
                at: now_secs(),
                names: distinct,
            },
        );
    }

    fn release(&mut self, revision: &Digest) {
        let Some(entry) = self.stored.revisions.remove(revision) else {
            return;
        };
        for d in entry.names {
            if let Some(count) = self.named.get_mut(&d) {
                *count -= 1;
                if *count == 0 {
                    self.named.remove(&d);
                    self.bytes -= self.stored.sizes.remove(&d).unwrap_or(0);
                }
            }
        }
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
    /// Takes the ledger out (a change puts it back once written): no copy of it is made.
    fn take(&self, name: &RepositoryName) -> Option<(Ledger, ObjectVersion)> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name)
    }

    /// What `f` says of the ledger this process knows, if it knows one.
    fn ask<T>(&self, name: &RepositoryName, f: impl FnOnce(&Ledger) -> T) -> Option<T> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .map(|(l, _)| f(l))
    }

    fn put(&self, name: &RepositoryName, ledger: Ledger, version: ObjectVersion) {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.clone(), (ledger, version));
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
                let stored: StoredLedger = serde_json::from_slice(&body).unwrap_or_default();
                Ok((Ledger::from(stored), info.version))
            }
            Err(StorageError::NotFound(_)) => {
                let ledger = self.ledger_from_layout(name).await?;
                match self
                    .store
                    .put_bytes(&key, to_bytes(&ledger), PutCondition::CreateOnly)
                    .await
                {
                    Ok(info) => Ok((ledger, info.version)),
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

    /// Walks the repository's revisions: what each names and the stored sizes.
    async fn ledger_from_layout(&self, name: &RepositoryName) -> Result<Ledger> {
        let mut ledger = Ledger::default();
        for d in self.revisions(name).await? {
            let names = self
                .sized_names(&d, None, self.references(&d).await?)
                .await?;
            ledger.reserve(&d, &names);
        }
        Ok(ledger)
    }

    /// `revision` (of `revision_size` bytes, when known) and `references` with their
    /// stored sizes (0 for what is not stored).
    async fn sized_names(
        &self,
        revision: &Digest,
        revision_size: Option<u64>,
        references: Vec<Digest>,
    ) -> Result<Vec<(Digest, u64)>> {
        let mut out = Vec::with_capacity(references.len() + 1);
        if let Some(size) = revision_size {
            out.push((revision.clone(), size));
        }
        let first = revision_size.is_none().then(|| revision.clone());
        for d in first.into_iter().chain(references) {
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
        let (mut ledger, mut version, mut fresh) = match self.ledgers.take(name) {
            Some((l, v)) => (l, v, false),
            None => {
                let (l, v) = self.read_ledger(name).await?;
                (l, v, true)
            }
        };
        for _ in 0..ATTEMPTS {
            // `change` refuses before it changes anything.
            match change(&mut ledger) {
                Ok(true) => {}
                Ok(false) => {
                    self.ledgers.put(name, ledger, version);
                    return Ok(());
                }
                // Refused by what this process remembered: another replica may have freed
                // room since. Only the store's ledger refuses.
                Err(_) if !fresh => {
                    (ledger, version) = self.read_ledger(name).await?;
                    fresh = true;
                    continue;
                }
                Err(e) => {
                    self.ledgers.put(name, ledger, version);
                    return Err(e);
                }
            }
            match self
                .store
                .put_bytes(
                    &key,
                    to_bytes(&ledger),
                    PutCondition::IfVersion(version.clone()),
                )
                .await
            {
                Ok(info) => {
                    self.ledgers.put(name, ledger, info.version);
                    return Ok(());
                }
                Err(StorageError::Precondition(_) | StorageError::NotFound(_)) => {
                    (ledger, version) = self.read_ledger(name).await?;
                    fresh = true;
                }
                Err(e) => return Err(e.into()),
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
        revision_size: u64,
        references: Vec<Digest>,
    ) -> Result<()> {
        let Some(quota) = self.quota_of(name) else {
            return Ok(());
        };
        let names = self
            .sized_names(revision, Some(revision_size), references)
            .await?;
        self.change_ledger(name, |ledger| {
            if ledger.has_revision(revision) {
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
                let held = ledger.has_revision(revision);
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
        if self.ledgers.ask(name, fits) == Some(true) {
            return Ok(());
        }
        // Refused only by the store's ledger: another replica may have freed room.
        let (ledger, version) = self.read_ledger(name).await?;
        let (usage, fits) = (ledger.bytes(), fits(&ledger));
        self.ledgers.put(name, ledger, version);
        if !fits {
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
            if !ledger.has_revision(d) {
                joining.push((
                    d.clone(),
                    self.sized_names(d, None, self.references(d).await?).await?,
                ));
            }
        }
        let leaving: Vec<Digest> = ledger
            .stored
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
                ledger.reserve(d, names);
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
    Bytes::from(serde_json::to_vec(&ledger.stored).unwrap_or_default())
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
        let mut again = Ledger::default();
        again.reserve(
            &m1,
            &[
                (m1.clone(), 1),
                (shared.clone(), 100),
                (shared.clone(), 100),
            ],
        );
        let read_back = Ledger::from(again.stored.clone());
        assert_eq!(
            read_back, again,
            "the counts are rebuilt from what is stored"
        );
        assert_eq!(read_back.bytes(), 101, "a digest named twice counts once");
    }
}
