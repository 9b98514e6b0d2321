//! Online garbage collection: safe while pushes go on.
//!
//! Mark: every blob a manifest revision of any repository refers to (config, layers, index
//! children) and the revisions themselves. Sweep: unmarked blobs, but only those whose bytes are
//! older than the grace window and whose "touched" marker (refreshed by every link and manifest
//! put that relies on the blob) is older than the collection's start minus the grace window. So a
//! blob uploaded, mounted or referenced while the collector runs is never removed. Removal itself
//! races with a push that relies on an old blob: its bytes are moved aside, the marker read
//! again, and put back if it appeared (`remove_unless_relied_on`). A lease object in the store
//! lets one process collect at a time; times are the store's own clock.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::Registry;
use crate::digest::Digest;
use crate::error::Result;
use crate::layout;
use crate::manifest::Manifest;
use crate::names::RepositoryName;
use crate::storage::StorageError;

/// How a collection runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Nothing younger than this is removed.
    pub grace: Duration,
    /// Report only.
    pub dry_run: bool,
    /// Who holds the lease (for operators reading it).
    pub holder: String,
    /// A lease older than this is taken over (its holder died).
    pub lease_ttl: Duration,
    /// Also remove manifest revisions no tag reaches (through an index or as a referrer).
    pub delete_untagged: bool,
    /// Pull-through caches whose tags and revisions expire when nobody pulls them (most
    /// specific prefix first).
    pub cache_expiry: Vec<super::CacheExpiry>,
    /// Look only at the blobs that changed since the last run (the candidates pushes and
    /// deletes recorded), deciding each from the reference index; untagged revisions,
    /// retention, cache expiry and quota ledgers are left to full runs. A full run that
    /// verifies the index happens instead while none has completed it.
    pub incremental: bool,
    /// A full run also checks the whole reference index against what it marked, mends it and
    /// records it complete (the periodic safety net of incremental runs: a walk of the whole
    /// index besides the mark).
    pub verify_references: bool,
}

/// What a collection found and did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct GcReport {
    /// Repositories walked.
    pub repositories: usize,
    /// Manifest revisions walked.
    pub manifests: usize,
    /// Blobs in use.
    pub marked: usize,
    /// Unused blobs spared because they are younger than the grace window or were just touched.
    pub spared: usize,
    /// Blobs removed (or, in a dry run, that would be).
    pub swept: Vec<String>,
    /// Untagged manifest revisions removed, as `repository@digest`.
    pub untagged: Vec<String>,
    /// Cached tags (`repository:tag`) and revisions (`repository@digest`) nobody pulled within
    /// their cache's TTL, removed.
    pub expired: Vec<String>,
    /// Bytes those blobs held.
    pub bytes: u64,
    /// Tags and revisions retention rules let go (or, in a dry run, would), each with its
    /// rule and why.
    pub retention: Vec<super::retention::RetentionRemoval>,
    /// `full` or `incremental` (a full run asked for as incremental says why).
    pub mode: String,
    /// Blobs an incremental run looked at (the candidates recorded since the last run).
    pub candidates: usize,
    /// What a full run mended in the reference index.
    pub references: Option<super::ReferenceRepair>,
}

/// How a collection tells whether a blob is in use: by what its mark found (full) or by the
/// reference index (incremental).
enum InUse {
    Marked(HashSet<Digest>),
    Indexed,
}

impl InUse {
    async fn holds(&self, r: &Registry, d: &Digest) -> Result<bool> {
        match self {
            InUse::Marked(m) => Ok(m.contains(d)),
            InUse::Indexed => r.is_referenced(d).await,
        }
    }
}

/// What a manifest refers to: config, layers, index children.
pub(super) fn references_of(m: Manifest) -> Vec<Digest> {
    m.config
        .map(|c| c.digest)
        .into_iter()
        .chain(m.layers.into_iter().map(|l| l.digest))
        .chain(m.manifests.into_iter().map(|c| c.digest))
        .collect()
}

fn older_than(t: Option<SystemTime>, cutoff: SystemTime) -> bool {
    t.is_some_and(|t| t < cutoff)
}

impl Registry {
    pub(super) async fn revisions(&self, name: &RepositoryName) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        let prefix = layout::manifest_revisions_prefix(name);
        for alg in self.store.list(&prefix).await?.prefixes {
            for hex in self.store.list(&format!("{prefix}{alg}/")).await?.prefixes {
                if let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// A stored manifest, parsed; `None` when its bytes are gone or are not a manifest.
    pub(super) async fn stored_manifest(&self, d: &Digest) -> Result<Option<Manifest>> {
        let body = match self.store.read_small(&layout::blob_data(d)).await {
            Ok((b, _)) => b,
            Err(StorageError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(Manifest::parse(&body, None).ok())
    }

    /// The references of a stored manifest: config, layers, index children.
    pub(super) async fn references(&self, d: &Digest) -> Result<Vec<Digest>> {
        Ok(self
            .stored_manifest(d)
            .await?
            .map(references_of)
            .unwrap_or_default())
    }

    /// Removes the revisions of `name` that no tag reaches and that are older than `cutoff`;
    /// returns the revisions that stay.
    async fn drop_untagged(
        &self,
        name: &RepositoryName,
        revisions: Vec<Digest>,
        cutoff: SystemTime,
        o: &GcOptions,
        report: &mut GcReport,
    ) -> Result<Vec<Digest>> {
        let mut keep: HashSet<Digest> = HashSet::new();
        let mut queue: Vec<Digest> = Vec::new();
        for tag in self.all_tags(name).await? {
            if let Ok(t) = tag.parse()
                && let Ok(d) = self.resolve(name, &crate::names::Reference::Tag(t)).await
            {
                queue.push(d);
            }
        }
        while let Some(d) = queue.pop() {
            if !keep.insert(d.clone()) {
                continue;
            }
            queue.extend(
                self.references(&d)
                    .await?
                    .into_iter()
                    .filter(|c| revisions.contains(c)),
            );
            queue.extend(
                self.list_referrers(name, &d, None)
                    .await?
                    .into_iter()
                    .map(|r| r.digest),
            );
        }
        let mut stay = Vec::new();
        for d in revisions {
            let link = layout::manifest_revision_link(name, &d);
            let recent = match self.store.stat(&link).await {
                Ok(info) => !older_than(info.last_modified, cutoff),
                Err(StorageError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            if keep.contains(&d) || recent || self.touched_since(&d, cutoff).await? {
                stay.push(d);
                continue;
            }
            if !o.dry_run {
                self.delete_revision(name, &d).await?;
                // An index pushed meanwhile may name it: it marks its children before it
                // checks their revisions, so a marker now means it may have seen this one (and
                // one that cannot be read is taken as one that appeared).
                let relied_on = self.touched_since(&d, cutoff).await;
                if !matches!(relied_on, Ok(false)) {
                    tracing::info!(repository = %name, digest = %d, "an untagged revision being removed may have been relied on meanwhile: put back");
                    self.relink_revision(name, &d).await?;
                    relied_on?;
                    stay.push(d);
                    continue;
                }
            }
            report.untagged.push(format!("{name}@{d}"));
        }
        Ok(stay)
    }

    /// Puts back a revision a collection removed: its reference entries, then its link.
    async fn relink_revision(&self, name: &RepositoryName, d: &Digest) -> Result<()> {
        let references = self.revision_references(d).await?;
        self.add_references(name, d, &references).await?;
        self.write_link(&layout::manifest_revision_link(name, d), d)
            .await
    }

    /// Removes revision `d` of `name` unless it was linked or relied on since `cutoff` (an
    /// index or a tag pushed meanwhile); returns whether it went. Relied on during the
    /// removal, it is put back.
    pub(super) async fn unlink_unless_relied_on(
        &self,
        name: &RepositoryName,
        d: &Digest,
        cutoff: SystemTime,
    ) -> Result<bool> {
        let link = layout::manifest_revision_link(name, d);
        match self.store.stat(&link).await {
            Ok(info) if older_than(info.last_modified, cutoff) => {}
            Ok(_) | Err(StorageError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        if self.touched_since(d, cutoff).await? {
            return Ok(false);
        }
        self.delete_revision(name, d).await?;
        let relied_on = self.touched_since(d, cutoff).await;
        if !matches!(relied_on, Ok(false)) {
            tracing::info!(repository = %name, digest = %d, "a revision being removed may have been relied on meanwhile: put back");
            self.relink_revision(name, d).await?;
            relied_on?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Every blob a revision refers to, and the reference entries those revisions call for.
    async fn mark(
        &self,
        o: &GcOptions,
        cutoff: SystemTime,
        report: &mut GcReport,
        mut check: Option<&mut super::references::ReferenceCheck>,
    ) -> Result<HashSet<Digest>> {
        let mut marked = HashSet::new();
        // What each revision refers to, kept only for a run that checks the index (a digest
        // shared by several repositories calls for entries in each).
        let mut refs_of: HashMap<Digest, Vec<Digest>> = HashMap::new();
        let walked = self.repositories_with("_manifests").await?;
        if !o.dry_run {
            // Ledgers of repositories with no revision left: nothing is linked there.
            let ledgers = self.keys_under(&layout::quota_ledgers_prefix()).await?;
            for name in ledgers
                .iter()
                .filter_map(|k| layout::repository_of_quota_ledger(k))
            {
                if !walked.contains(&name) {
                    self.reconcile_quota(&name, &[], cutoff).await?;
                }
            }
        }
        for name in walked {
            report.repositories += 1;
            let mut revisions = self.revisions(&name).await?;
            if o.delete_untagged {
                revisions = self
                    .drop_untagged(&name, revisions, cutoff, o, report)
                    .await?;
            }
            if !o.dry_run {
                self.reconcile_quota(&name, &revisions, cutoff).await?;
            }
            for d in revisions {
                report.manifests += 1;
                let Some(check) = check.as_deref_mut() else {
                    if marked.insert(d.clone()) {
                        marked.extend(self.references(&d).await?);
                    }
                    continue;
                };
                if !refs_of.contains_key(&d) {
                    let refs = self.revision_references(&d).await?;
                    marked.extend(refs.iter().cloned());
                    refs_of.insert(d.clone(), refs);
                }
                self.want_references(check, &name, &d, &refs_of[&d]).await?;
            }
        }
        report.marked = marked.len();
        Ok(marked)
    }

    async fn touched_since(&self, d: &Digest, cutoff: SystemTime) -> Result<bool> {
        match self.store.stat(&layout::touched_marker(d)).await {
            Ok(info) => Ok(!older_than(info.last_modified, cutoff)),
            Err(StorageError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a blob's bytes unless something comes to rely on them while they go. A
    /// manifest or mount that relies on a blob writes its marker and only then checks the
    /// bytes, so the bytes are moved aside first, the marker read again, and the bytes put
    /// back if it appeared: whoever checked in between saw them (and keeps them) or saw them
    /// gone (and refused). Returns whether they were removed.
    async fn remove_unless_relied_on(
        &self,
        d: &Digest,
        key: &str,
        size: u64,
        cutoff: SystemTime,
    ) -> Result<bool> {
        let held = layout::gc_quarantine(d);
        self.store.publish(key, &held, size).await?;
        // Once the bytes may be gone from their key, a marker that cannot be read counts as
        // one that appeared: they go back (and the error stops the collection after).
        let relied_on = match self.store.delete(key).await {
            Ok(()) => self.touched_since(d, cutoff).await,
            Err(e) => Err(e.into()),
        };
        if !matches!(relied_on, Ok(false)) {
            if matches!(relied_on, Ok(true)) {
                tracing::info!(digest = %d, "a blob being removed was relied on meanwhile: put back");
            }
            self.store.publish(&held, key, size).await?;
            self.store.delete(&held).await?;
            return relied_on.map(|_| false);
        }
        self.store.delete(&held).await?;
        Ok(true)
    }

    /// Bytes a collection that died left moved aside (older than a lease, so no live one
    /// holds them): put back when anything marks or touches them now, removed otherwise.
    async fn settle_quarantine(
        &self,
        in_use: &InUse,
        cutoff: SystemTime,
        abandoned_before: SystemTime,
    ) -> Result<()> {
        let held = self.keys_under(&layout::gc_quarantine_prefix()).await?;
        for key in held {
            let Some(d) = layout::digest_of_quarantine_key(&key) else {
                continue;
            };
            let info = match self.store.stat(&key).await {
                Ok(i) => i,
                Err(StorageError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            if !older_than(info.last_modified, abandoned_before) {
                continue;
            }
            if (in_use.holds(self, &d).await? || self.touched_since(&d, cutoff).await?)
                && !self.exists(&layout::blob_data(&d)).await?
            {
                tracing::warn!(digest = %d, "bytes a failed collection held are relied on: put back");
                self.store
                    .publish(&key, &layout::blob_data(&d), info.size)
                    .await?;
            }
            self.store.delete(&key).await?;
        }
        Ok(())
    }

    /// Runs one collection; `None` when another process holds the lease.
    pub async fn collect_garbage(&self, o: &GcOptions) -> Result<Option<GcReport>> {
        let lease = super::StoreLease {
            key: layout::gc_lease(),
            holder: o.holder.clone(),
            ttl: o.lease_ttl,
        };
        let Some((start, result)) = lease
            .run(&self.store, async |held| {
                (held.taken_at, self.collect(o, held.taken_at).await)
            })
            .await?
        else {
            return Ok(None);
        };
        if let Ok(report) = &result
            && !o.dry_run
        {
            self.record_collection(start, report).await;
        }
        result.map(Some)
    }

    async fn collect(&self, o: &GcOptions, start: SystemTime) -> Result<GcReport> {
        let cutoff = start.checked_sub(o.grace).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut report = GcReport::default();
        if o.incremental {
            if self.references_complete_since().await?.is_some() {
                report.mode = "incremental".into();
                self.collect_candidates(o, start, cutoff, &mut report)
                    .await?;
                self.forget_old_markers(o, cutoff).await?;
                return Ok(report);
            }
            report.mode = "full (no full run has completed the reference index yet)".into();
        } else {
            report.mode = "full".into();
        }
        let verify = o.verify_references || o.incremental;
        // First, so that what expires is swept in this same collection.
        self.expire_cached(&o.cache_expiry, start, o.dry_run, &mut report)
            .await?;
        self.apply_retention(start, cutoff, o.dry_run, &mut report)
            .await?;
        let mut check = match verify {
            true => Some(self.begin_reference_check(o.dry_run).await?),
            false => None,
        };
        let marked = self.mark(o, cutoff, &mut report, check.as_mut()).await?;
        let blobs = self.keys_under(&layout::blobs_prefix()).await?;
        let in_use = InUse::Marked(marked);
        if !o.dry_run {
            let abandoned_before = start.checked_sub(o.lease_ttl).unwrap_or(start);
            self.settle_quarantine(&in_use, cutoff, abandoned_before)
                .await?;
        }
        for key in blobs {
            let Some(d) = layout::digest_of_blob_key(&key) else {
                continue;
            };
            self.sweep_unless_in_use(&d, &in_use, cutoff, o.dry_run, &mut report)
                .await?;
        }
        if let Some(check) = check {
            report.references = Some(self.finish_reference_check(check, cutoff).await?);
        }
        if !o.dry_run {
            // Candidates this run decided (in use, or gone); the spared wait for a later one.
            let InUse::Marked(marked) = &in_use else {
                unreachable!("a full run marks")
            };
            let swept: HashSet<&str> = report.swept.iter().map(String::as_str).collect();
            let candidates = self.keys_under(&layout::gc_candidates_prefix()).await?;
            for key in candidates {
                if let Some(d) = layout::digest_of_candidate_key(&key)
                    && (marked.contains(&d) || swept.contains(d.to_string().as_str()))
                {
                    self.store.delete(&key).await?;
                }
            }
        }
        self.forget_old_markers(o, cutoff).await?;
        Ok(report)
    }

    /// An incremental run: each candidate recorded since the last run, decided from the
    /// reference index; a candidate stays until it is in use or gone.
    async fn collect_candidates(
        &self,
        o: &GcOptions,
        start: SystemTime,
        cutoff: SystemTime,
        report: &mut GcReport,
    ) -> Result<()> {
        let in_use = InUse::Indexed;
        if !o.dry_run {
            let abandoned_before = start.checked_sub(o.lease_ttl).unwrap_or(start);
            self.settle_quarantine(&in_use, cutoff, abandoned_before)
                .await?;
        }
        let candidates = self.keys_under(&layout::gc_candidates_prefix()).await?;
        for key in candidates {
            let Some(d) = layout::digest_of_candidate_key(&key) else {
                continue;
            };
            report.candidates += 1;
            let decided = self
                .sweep_unless_in_use(&d, &in_use, cutoff, o.dry_run, report)
                .await?;
            if decided && !o.dry_run {
                self.store.delete(&key).await?;
            }
        }
        Ok(())
    }

    /// Removes blob `d` unless it is in use, touched since `cutoff`, or younger; returns
    /// whether it is decided (in use, gone, or removed now) rather than spared for later.
    async fn sweep_unless_in_use(
        &self,
        d: &Digest,
        in_use: &InUse,
        cutoff: SystemTime,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<bool> {
        if in_use.holds(self, d).await? {
            return Ok(true);
        }
        // The marker before the bytes: bytes written again after it was read are seen new.
        if self.touched_since(d, cutoff).await? {
            report.spared += 1;
            return Ok(false);
        }
        let key = layout::blob_data(d);
        let info = match self.store.stat(&key).await {
            Ok(i) => i,
            Err(StorageError::NotFound(_)) => return Ok(true),
            Err(e) => return Err(e.into()),
        };
        if !older_than(info.last_modified, cutoff) {
            report.spared += 1;
            return Ok(false);
        }
        if !dry_run {
            if !self
                .remove_unless_relied_on(d, &key, info.size, cutoff)
                .await?
            {
                report.spared += 1;
                return Ok(false);
            }
            self.blob_sizes.forget(d);
        }
        report.bytes += info.size;
        report.swept.push(d.to_string());
        Ok(true)
    }

    /// After a run: pull times folded, touched markers older than the run's cutoff removed.
    async fn forget_old_markers(&self, o: &GcOptions, cutoff: SystemTime) -> Result<()> {
        if o.dry_run {
            return Ok(());
        }
        self.fold_pull_times().await?;
        let markers = self.keys_under(&layout::touched_prefix()).await?;
        for key in markers {
            if let Ok(info) = self.store.stat(&key).await
                && older_than(info.last_modified, cutoff)
            {
                let _ = self.store.delete(&key).await;
            }
        }
        Ok(())
    }
}
