//! Retention: at each collection, the tags a repository's rule does not keep are untagged, and
//! the revisions only they reached are unlinked, so the same collection sweeps their blobs.
//!
//! A tag stays when any of the rule's criteria keeps it (newest N by push time, pulled or
//! pushed within a duration, the N highest semantic versions, a keep pattern), when an
//! immutable rule protects it, or when it was pushed within the collection's grace window.
//! Whatever a kept tag reaches stays with it: an index's children, the referrers of a kept
//! manifest (signatures, SBOMs) and a kept referrer's subject. Tags in the cosign style
//! (`sha256-<hex>.sig`) follow the manifest they name instead of counting as tags.
//!
//! A push may write a tag while a collection removes it. The collection writes a marker
//! before it looks at the tag a last time and removes it; a push covered by retention looks
//! for that marker after writing its tags, and writes them again once the marker is gone. So
//! either the collection sees the new tag (and keeps it), or the push sees the marker.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::Serialize;

use super::Registry;
use super::gc::GcReport;
use super::rules::Retention;
use crate::digest::Digest;
use crate::error::Result;
use crate::layout;
use crate::names::{RepositoryName, Tag, glob_match};
use crate::storage::{ObjectVersion, PutCondition, StorageError};

/// Something retention removed (or, in a dry run, would), with the rule and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionRemoval {
    /// The rule's name.
    pub rule: String,
    /// `repository:tag` or `repository@digest`.
    pub removed: String,
    /// Why the rule let it go.
    pub why: String,
}

/// How long a push waits for a collection to finish removing a tag it just wrote.
const OUTLAST: Duration = Duration::from_secs(10);
/// A retiring mark this old was not left by a removal under way (one takes a few requests).
const STALE_MARK: Duration = Duration::from_secs(60);

/// A semantic version, ordered as semver.org says (build metadata ignored).
#[derive(Debug, PartialEq, Eq)]
struct Version {
    core: [u64; 3],
    pre: Vec<String>,
}

impl Version {
    /// `v1.2.3`, `1.2`, `2.0.0-rc.1+build`: at least major and minor, an optional `v`.
    fn parse(tag: &str) -> Option<Version> {
        let s = tag.strip_prefix('v').unwrap_or(tag);
        let s = s.split_once('+').map_or(s, |(v, _)| v);
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, p.split('.').map(str::to_owned).collect()),
            None => (s, Vec::new()),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if !(2..=3).contains(&parts.len()) {
            return None;
        }
        let mut out = [0u64; 3];
        for (slot, p) in out.iter_mut().zip(&parts) {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *slot = p.parse().ok()?;
        }
        Some(Version { core: out, pre })
    }
}

fn compare_pre(a: &[String], b: &[String]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    for (x, y) in a.iter().zip(b) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.core
            .cmp(&other.core)
            .then_with(|| compare_pre(&self.pre, &other.pre))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The digest a cosign-style tag (`sha256-<hex>`, with or without a `.sig`-like suffix) names.
fn subject_of_tag(tag: &str) -> Option<Digest> {
    let (alg, rest) = tag.split_once('-')?;
    let hex = rest.split_once('.').map_or(rest, |(h, _)| h);
    format!("{alg}:{hex}").parse().ok()
}

/// One tag as retention weighs it.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub tag: String,
    /// When the tag was last written.
    pub pushed: SystemTime,
    /// The last pull of the tag or of what it names, when one was noted.
    pub pulled: Option<SystemTime>,
}

fn ago(now: SystemTime, t: SystemTime) -> String {
    let secs = now.duration_since(t).unwrap_or_default().as_secs();
    match secs {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s => format!("{}m", s / 60),
    }
}

/// For each candidate, `None` when `rule` keeps it, or why it goes. `protected` candidates
/// (immutable, or pushed within the grace window) always stay.
pub(super) fn judge(
    rule: &Retention,
    candidates: &[Candidate],
    protected: &[bool],
    now: SystemTime,
) -> Vec<Option<String>> {
    let mut keep = vec![false; candidates.len()];
    for (k, p) in keep.iter_mut().zip(protected) {
        *k |= *p;
    }
    for (i, c) in candidates.iter().enumerate() {
        keep[i] |= rule.always.iter().any(|g| glob_match(g, &c.tag));
    }
    if let Some(n) = rule.newest {
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by(|&a, &b| {
            candidates[b]
                .pushed
                .cmp(&candidates[a].pushed)
                .then_with(|| candidates[a].tag.cmp(&candidates[b].tag))
        });
        for &i in order.iter().take(n) {
            keep[i] = true;
        }
    }
    if let Some(n) = rule.semver {
        let mut versions: Vec<(Version, usize)> = candidates
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Version::parse(&c.tag).map(|v| (v, i)))
            .collect();
        versions.sort_by(|a, b| b.0.cmp(&a.0));
        for (_, i) in versions.into_iter().take(n) {
            keep[i] = true;
        }
    }
    if let Some(within) = rule.pulled_within {
        let since = now.checked_sub(within).unwrap_or(SystemTime::UNIX_EPOCH);
        for (i, c) in candidates.iter().enumerate() {
            keep[i] |= c.pulled.unwrap_or(c.pushed).max(c.pushed) >= since;
        }
    }
    candidates
        .iter()
        .zip(keep)
        .map(|(c, kept)| {
            if kept {
                return None;
            }
            let mut why = Vec::new();
            if let Some(n) = rule.newest {
                why.push(format!("not among the newest {n}"));
            }
            if let Some(within) = rule.pulled_within {
                let last = c.pulled.unwrap_or(c.pushed).max(c.pushed);
                why.push(format!(
                    "last pulled or pushed {} ago (keeps {}d)",
                    ago(now, last),
                    within.as_secs() / 86_400
                ));
            }
            if let Some(n) = rule.semver {
                why.push(format!("not among the {n} highest versions"));
            }
            if !rule.always.is_empty() {
                why.push("matches no keep pattern".to_owned());
            }
            Some(why.join("; "))
        })
        .collect()
}

/// A tag of a repository as the collection found it.
struct Found {
    tag: Tag,
    target: Digest,
    version: ObjectVersion,
    pushed: SystemTime,
}

impl Registry {
    /// Untags, in every repository a retention rule covers, what the rule does not keep, and
    /// unlinks the revisions only those tags reached. Before the mark, so that the same
    /// collection sweeps their blobs.
    pub(super) async fn apply_retention(
        &self,
        now: SystemTime,
        cutoff: SystemTime,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<()> {
        let Some(rules) = self.rules().cloned() else {
            return Ok(());
        };
        for name in self.repositories_with("_manifests").await? {
            if let Some(rule) = rules.retention(&name) {
                self.retain(&name, &rule, now, cutoff, dry_run, report)
                    .await?;
            }
        }
        Ok(())
    }

    async fn found_tags(&self, name: &RepositoryName) -> Result<Vec<Found>> {
        let mut out = Vec::new();
        for raw in self.all_tags(name).await? {
            let Ok(tag) = raw.parse::<Tag>() else {
                continue;
            };
            let (body, info) = match self
                .store
                .read_small(&layout::tag_current_link(name, &tag))
                .await
            {
                Ok(v) => v,
                Err(StorageError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let Some(target) = layout::parse_link(&body) else {
                continue;
            };
            out.push(Found {
                tag,
                target,
                pushed: info.last_modified.unwrap_or_else(SystemTime::now),
                version: info.version,
            });
        }
        Ok(out)
    }

    async fn last_pull(
        &self,
        name: &RepositoryName,
        reference: crate::names::Reference,
    ) -> Result<Option<SystemTime>> {
        match self
            .store
            .stat(&layout::pull_marker(name, &reference))
            .await
        {
            Ok(info) => Ok(info.last_modified),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// What keeping `d` keeps with it: an index's children among `revisions`, its
    /// referrers, and its subject.
    async fn needs(
        &self,
        name: &RepositoryName,
        d: &Digest,
        revisions: &HashSet<Digest>,
    ) -> Result<Vec<Digest>> {
        // One read of the manifest for what it refers to and its subject.
        let manifest = self.stored_manifest(d).await?;
        let subject = manifest
            .as_ref()
            .and_then(|m| m.subject.as_ref())
            .map(|s| s.digest.clone())
            .filter(|s| revisions.contains(s));
        let mut out: Vec<Digest> = manifest
            .map(super::gc::references_of)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| revisions.contains(c))
            .collect();
        out.extend(
            self.list_referrers(name, d, None)
                .await?
                .into_iter()
                .map(|r| r.digest),
        );
        out.extend(subject);
        Ok(out)
    }

    async fn closure(
        &self,
        name: &RepositoryName,
        roots: impl IntoIterator<Item = Digest>,
        revisions: &HashSet<Digest>,
    ) -> Result<HashSet<Digest>> {
        let mut seen = HashSet::new();
        let mut queue: Vec<Digest> = roots.into_iter().collect();
        while let Some(d) = queue.pop() {
            if seen.insert(d.clone()) {
                queue.extend(self.needs(name, &d, revisions).await?);
            }
        }
        Ok(seen)
    }

    async fn retain(
        &self,
        name: &RepositoryName,
        rule: &Retention,
        now: SystemTime,
        cutoff: SystemTime,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<()> {
        let found = self.found_tags(name).await?;
        let revisions: HashSet<Digest> = self.revisions(name).await?.into_iter().collect();
        // Cosign-style tags follow what they name; the rest are judged.
        let (followers, judged): (Vec<&Found>, Vec<&Found>) = found
            .iter()
            .partition(|f| subject_of_tag(f.tag.as_str()).is_some());
        let mut candidates = Vec::with_capacity(judged.len());
        let mut protected = Vec::with_capacity(judged.len());
        for f in &judged {
            let pulled = if rule.pulled_within.is_some() {
                let by_tag = self
                    .last_pull(name, crate::names::Reference::Tag(f.tag.clone()))
                    .await?;
                let by_digest = self
                    .last_pull(name, crate::names::Reference::Digest(f.target.clone()))
                    .await?;
                by_tag.max(by_digest)
            } else {
                None
            };
            candidates.push(Candidate {
                tag: f.tag.to_string(),
                pushed: f.pushed,
                pulled,
            });
            protected.push(f.pushed >= cutoff || self.check_mutable(name, &f.tag).is_err());
        }
        let verdicts = judge(rule, &candidates, &protected, now);
        let kept_roots = judged
            .iter()
            .zip(&verdicts)
            .filter(|(_, v)| v.is_none())
            .map(|(f, _)| f.target.clone());
        let mut kept = self.closure(name, kept_roots, &revisions).await?;
        let mut going: Vec<(&Found, String)> = judged
            .iter()
            .zip(verdicts)
            .filter_map(|(f, v)| v.map(|why| (*f, why)))
            .collect();
        let going_roots: Vec<Digest> = going.iter().map(|(f, _)| f.target.clone()).collect();
        let mut orphaned = self.closure(name, going_roots, &revisions).await?;
        orphaned.retain(|d| !kept.contains(d));
        for f in &followers {
            let subject = subject_of_tag(f.tag.as_str());
            let follows_removed = subject.is_some_and(|s| orphaned.contains(&s));
            let stays =
                !follows_removed || f.pushed >= cutoff || self.check_mutable(name, &f.tag).is_err();
            if stays {
                kept.extend(self.closure(name, [f.target.clone()], &revisions).await?);
            } else {
                going.push((*f, "names a manifest retention removes".to_owned()));
            }
        }
        let mut spared = Vec::new();
        for (f, why) in going {
            if !dry_run && !self.retire_tag(name, f).await? {
                spared.push(f.target.clone());
                continue;
            }
            report.retention.push(RetentionRemoval {
                rule: rule.name.clone(),
                removed: format!("{name}:{}", f.tag),
                why,
            });
        }
        // A tag a push rewrote meanwhile keeps what it names. `orphaned` is already closed
        // over what its revisions need: only what is kept now comes out of it.
        kept.extend(self.closure(name, spared, &revisions).await?);
        let mut orphaned: Vec<Digest> = orphaned
            .into_iter()
            .filter(|d| !kept.contains(d) && revisions.contains(d))
            .collect();
        orphaned.sort();
        for d in orphaned {
            if dry_run || self.unlink_unless_relied_on(name, &d, cutoff).await? {
                report.retention.push(RetentionRemoval {
                    rule: rule.name.clone(),
                    removed: format!("{name}@{d}"),
                    why: "only tags retention removed reached it".to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Removes a tag retention let go, unless it changed since it was found; returns whether
    /// it went. The marker tells a push that wrote it meanwhile to write it again.
    async fn retire_tag(&self, name: &RepositoryName, f: &Found) -> Result<bool> {
        let marker = layout::retiring_marker(name, &f.tag);
        self.store
            .put_bytes(&marker, Bytes::new(), PutCondition::Overwrite)
            .await?;
        let removed = async {
            match self
                .store
                .stat(&layout::tag_current_link(name, &f.tag))
                .await
            {
                Ok(info)
                    if info.version == f.version
                        && info.last_modified.is_none_or(|t| t <= f.pushed) =>
                {
                    self.drop_tag(name, &f.tag).await?;
                    Ok(true)
                }
                Ok(_) | Err(StorageError::NotFound(_)) => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
        .await;
        self.store.delete(&marker).await?;
        removed
    }

    /// After a push wrote `tags` in a repository retention covers: if a collection is
    /// removing one of them now, waits for it to finish and writes the tag again.
    pub(super) async fn outlast_retirement(
        &self,
        name: &RepositoryName,
        tags: &[&Tag],
        digest: &Digest,
    ) -> Result<()> {
        let each = tags.iter().map(|t| async move {
            let marker = layout::retiring_marker(name, t);
            let deadline = tokio::time::Instant::now() + OUTLAST;
            let mut seen = false;
            loop {
                match self.store.stat(&marker).await {
                    // A mark older than any removal takes was left by a collection that died
                    // or could not remove it: nothing to wait for, the tag is written again.
                    Ok(info)
                        if info
                            .last_modified
                            .and_then(|t| t.elapsed().ok())
                            .is_some_and(|age| age > STALE_MARK) =>
                    {
                        seen = true;
                        break;
                    }
                    Ok(_) if tokio::time::Instant::now() < deadline => {
                        seen = true;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Ok(_) => {
                        seen = true;
                        break;
                    }
                    Err(StorageError::NotFound(_)) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            if seen {
                tracing::info!(repository = %name, tag = %t, "a collection was removing a tag this push wrote: written again");
                self.point_tag(name, t, digest).await?;
            }
            Ok::<(), crate::error::RegistryError>(())
        });
        futures::future::try_join_all(each).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn c(tag: &str, pushed: u64, pulled: Option<u64>) -> Candidate {
        Candidate {
            tag: tag.into(),
            pushed: at(pushed),
            pulled: pulled.map(at),
        }
    }

    fn kept(rule: &Retention, cs: &[Candidate]) -> Vec<String> {
        judge(rule, cs, &vec![false; cs.len()], at(100 * 86_400))
            .into_iter()
            .zip(cs)
            .filter(|(v, _)| v.is_none())
            .map(|(_, c)| c.tag.clone())
            .collect()
    }

    #[test]
    fn versions_order_as_semver() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("v1.10.0") > v("v1.9.3"));
        assert!(v("2.0.0") > v("2.0.0-rc.2"));
        assert!(v("2.0.0-rc.10") > v("2.0.0-rc.2"));
        assert!(v("2.0.0-rc.1") > v("2.0.0-beta"));
        assert!(v("2.0.0-alpha.beta") > v("2.0.0-alpha.1"));
        assert_eq!(v("1.2"), v("1.2.0"));
        assert_eq!(v("1.2.3+build.5"), v("1.2.3"));
        for not in ["latest", "42", "v1", "1.2.3.4", "1..2", "a.b", "1.x"] {
            assert!(Version::parse(not).is_none(), "{not}");
        }
    }

    #[test]
    fn each_criterion_keeps_what_it_names() {
        let cs = [
            c("build-1", 10, None),
            c("build-2", 20, None),
            c("build-3", 30, None),
            c("v1.2.0", 5, None),
            c("v1.10.0", 6, None),
            c("latest", 1, None),
            c("hot", 2, Some(99 * 86_400)),
        ];
        let rule = |f: fn(&mut Retention)| {
            let mut r = Retention::default();
            f(&mut r);
            r
        };
        assert_eq!(
            kept(&rule(|r| r.newest = Some(2)), &cs),
            ["build-2", "build-3"]
        );
        assert_eq!(kept(&rule(|r| r.semver = Some(1)), &cs), ["v1.10.0"]);
        assert_eq!(
            kept(&rule(|r| r.always = vec!["lat*".into()]), &cs),
            ["latest"]
        );
        assert_eq!(
            kept(
                &rule(|r| r.pulled_within = Some(Duration::from_secs(7 * 86_400))),
                &cs
            ),
            ["hot"]
        );
        // A tag pushed within the window counts as used, pulled or not.
        let fresh = [c("new", 98 * 86_400, None), c("old", 1, Some(2))];
        assert_eq!(
            kept(
                &rule(|r| r.pulled_within = Some(Duration::from_secs(7 * 86_400))),
                &fresh
            ),
            ["new"]
        );
    }

    #[test]
    fn protected_tags_stay_and_reasons_name_every_criterion() {
        let r = Retention {
            name: "ci".into(),
            newest: Some(1),
            semver: Some(1),
            always: vec!["keep-*".into()],
            pulled_within: Some(Duration::from_secs(30 * 86_400)),
        };
        let cs = [c("a", 1, None), c("b", 2, None), c("c", 3, None)];
        let v = judge(&r, &cs, &[true, false, false], at(100 * 86_400));
        assert_eq!(v[0], None);
        assert_eq!(v[2], None);
        let why = v[1].as_deref().unwrap();
        for part in [
            "newest 1",
            "99d ago (keeps 30d)",
            "1 highest versions",
            "keep pattern",
        ] {
            assert!(why.contains(part), "{why}");
        }
    }

    #[test]
    fn cosign_tags_name_their_subject() {
        let d = Digest::of(crate::digest::Algorithm::Sha256, b"x");
        let tag = format!("sha256-{}.sig", d.hex());
        assert_eq!(subject_of_tag(&tag), Some(d.clone()));
        assert_eq!(subject_of_tag(&format!("sha256-{}", d.hex())), Some(d));
        assert_eq!(subject_of_tag("build-12"), None);
        assert_eq!(subject_of_tag("latest"), None);
    }
}
