//! Manifests: validated puts, reads by tag or digest, deletes.

use bytes::Bytes;
use futures::future::try_join_all;

use super::Registry;
use crate::digest::{Algorithm, Digest};
use crate::error::{RegistryError, Result};
use crate::layout;
use crate::manifest::{Manifest, Requirement, sniff_media_type};
use crate::names::{Reference, RepositoryName, Tag};
use crate::storage::{PutCondition, StorageError};

/// What a manifest put produced.
#[derive(Debug, Clone)]
pub struct PutManifestOutcome {
    /// Digest of the stored bytes.
    pub digest: Digest,
    /// The subject, when the manifest has one (answered as `OCI-Subject`).
    pub subject: Option<Digest>,
    /// Tags that named another manifest before, with what they named (for the audit log).
    pub moved: Vec<(Tag, Digest)>,
}

/// A stored manifest as served.
#[derive(Debug, Clone)]
pub struct ManifestContent {
    /// The exact bytes that were pushed.
    pub body: Bytes,
    /// Its media type.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
}

impl Registry {
    /// Stores a manifest under `reference` and any extra `tags`.
    pub async fn put_manifest(
        &self,
        name: &RepositoryName,
        reference: &Reference,
        body: Bytes,
        content_type: Option<&str>,
        tags: &[Tag],
    ) -> Result<PutManifestOutcome> {
        if body.len() > self.settings.max_manifest_bytes {
            return Err(RegistryError::ManifestTooLarge {
                limit: self.settings.max_manifest_bytes,
            });
        }
        let digest = match reference {
            Reference::Digest(d) => {
                let computed = Digest::of(d.algorithm(), &body);
                if &computed != d {
                    return Err(RegistryError::DigestInvalid(format!(
                        "manifest digest is {computed}"
                    )));
                }
                computed
            }
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, &body),
        };
        let manifest = Manifest::parse(&body, content_type)?;
        let mut all_tags: Vec<&Tag> = tags.iter().collect();
        if let Reference::Tag(t) = reference {
            all_tags.push(t);
        }
        // What the tags name now (for the audit log, and to see a re-push).
        let previous = try_join_all(all_tags.iter().map(|t| self.current_tag(name, t))).await?;
        // Every tag names this manifest already: a re-push (an idempotent retry, a CI job run
        // twice). What the first push wrote is there, and the tags keep it from garbage
        // collection, so nothing is written again.
        if !all_tags.is_empty()
            && previous.iter().all(|p| p.as_ref() == Some(&digest))
            && self
                .exists(&layout::manifest_revision_link(name, &digest))
                .await?
        {
            // Unless the first push failed after its tags were written and before the
            // listing indexes took them: a retry is what puts them there.
            let tagged = try_join_all(all_tags.iter().map(|t| self.index_tag(name, t)));
            futures::try_join!(tagged, self.add_to_catalog(name))?;
            return Ok(PutManifestOutcome {
                subject: manifest.subject.as_ref().map(|s| s.digest.clone()),
                digest,
                moved: Vec::new(),
            });
        }
        let checks = manifest.requirements().into_iter().map(|req| async move {
            let (linked, d) = match &req {
                Requirement::Blob(d) => (self.has_layer(name, d).await?, d),
                Requirement::Manifest(d) => (
                    self.exists(&layout::manifest_revision_link(name, d))
                        .await?,
                    d,
                ),
            };
            if linked {
                Ok(())
            } else {
                Err(RegistryError::ManifestBlobUnknown(d.clone()))
            }
        });
        let moved: Vec<(Tag, Digest)> = all_tags
            .iter()
            .zip(previous)
            .filter_map(|(t, p)| p.filter(|p| *p != digest).map(|p| ((*t).clone(), p)))
            .collect();
        // Before anything is written: an immutable tag may be pushed again with what it names,
        // never moved.
        for (t, _) in &moved {
            self.check_mutable(name, t)?;
        }
        // Before anything points at them: a collection running now must spare what this
        // manifest relies on, its own bytes included (a collection that looked at old bytes
        // of this digest before they were written again would otherwise remove them). Beside
        // the checks that the repository links them: a manifest refused leaves markers only.
        let relied_on: Vec<Digest> = manifest
            .requirements()
            .into_iter()
            .map(|r| match r {
                Requirement::Blob(d) | Requirement::Manifest(d) => d,
            })
            .chain(std::iter::once(digest.clone()))
            .collect();
        // Whether the revision was there before: a refused push leaves it as it found it.
        let revision_key = layout::manifest_revision_link(name, &digest);
        // Its reference entries before its revision link (see `references`).
        let references = super::references::with_itself(Some(manifest.clone()), &digest);
        let (_, (), had_revision, ()) = futures::try_join!(
            try_join_all(checks),
            self.touch(&relied_on),
            self.exists(&revision_key),
            self.add_references(name, &digest, &references)
        )?;
        // Counted before it is linked: a crash after this over-counts, never under-counts.
        let names: Vec<Digest> = manifest
            .requirements()
            .into_iter()
            .map(|r| match r {
                Requirement::Blob(d) | Requirement::Manifest(d) => d,
            })
            .collect();
        self.reserve_quota(name, &digest, body.len() as u64, names)
            .await?;
        // Beside the check that what it relies on is still stored: the manifest's own bytes,
        // written without asking first, even when this process saw them stored (a manifest is
        // small, the same bytes again are harmless, and another replica's collection may have
        // removed them), and its revision. The revision before the tags (collections find
        // what to keep through revisions); refused, the push takes back a revision it added,
        // and the bytes are garbage nothing links.
        let bytes_key = layout::blob_data(&digest);
        let (written, stored, linked) = futures::join!(
            self.store
                .put_bytes(&bytes_key, body.clone(), PutCondition::Overwrite),
            self.still_stored(name, &manifest),
            self.write_link(&revision_key, &digest)
        );
        let outcome = match (written, stored, linked) {
            (Ok(info), Ok(()), Ok(())) => Ok(info),
            (Err(e), _, _) => Err(RegistryError::from(e)),
            (_, Err(e), _) | (_, _, Err(e)) => Err(e),
        };
        let info = match outcome {
            Ok(info) => info,
            // Refused because a blob it names is not stored: no push of this manifest can
            // succeed now, so the revision this one added goes. On a store failure it stays:
            // the same manifest pushed at the same time may have succeeded and rely on it,
            // and an untagged revision is harmless (collections remove it).
            Err(e @ RegistryError::ManifestBlobUnknown(_)) => {
                if !had_revision {
                    match self.store.delete(&revision_key).await {
                        Ok(()) => {
                            if let Err(undo) =
                                self.drop_references(name, &digest, &references).await
                            {
                                tracing::warn!(repository = %name, digest = %digest, error = %undo, "a refused manifest's reference entries stay (they only keep its blobs until a full collection)");
                            }
                        }
                        Err(undo) => {
                            tracing::warn!(repository = %name, digest = %digest, error = %undo, "a refused manifest's revision link stays (untagged)");
                        }
                    }
                    self.release_quota(name, &digest).await;
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.blob_sizes.put(&digest, &info);
        // Once the revision exists, what names it is written together: one round trip.
        let subject = manifest.subject.as_ref().map(|s| s.digest.clone());
        let tags = try_join_all(all_tags.iter().map(|t| self.point_tag(name, t, &digest)));
        let referrer = async {
            match &subject {
                Some(s) => {
                    let desc = manifest.referrer_descriptor(digest.clone(), body.len() as u64);
                    self.add_referrer(name, s, &desc).await
                }
                None => Ok(()),
            }
        };
        futures::try_join!(tags, referrer, self.add_to_catalog(name))?;
        if !all_tags.is_empty() && self.rules().is_some_and(|r| r.retention(name).is_some()) {
            self.outlast_retirement(name, &all_tags, &digest).await?;
        }
        self.remember(digest.clone(), body);
        Ok(PutManifestOutcome {
            digest,
            subject,
            moved,
        })
    }

    /// Checks, after their markers were written, that what a manifest relies on is stored:
    /// bytes for blobs, revisions for child manifests. Asked of the store, not of memory: a
    /// collection on another replica may have removed them, and only a removal that began
    /// before the markers is possible (it sees them, or undoes itself when it does; see
    /// `gc`), so a check after them cannot be overtaken.
    async fn still_stored(&self, name: &RepositoryName, manifest: &Manifest) -> Result<()> {
        let checks = manifest.requirements().into_iter().map(|req| async move {
            let (stored, d) = match &req {
                Requirement::Blob(d) => (self.blob_bytes_in_store(d).await?.is_some(), d),
                Requirement::Manifest(d) => (
                    self.exists(&layout::manifest_revision_link(name, d))
                        .await?,
                    d,
                ),
            };
            if stored {
                Ok(())
            } else {
                Err(RegistryError::ManifestBlobUnknown(d.clone()))
            }
        });
        try_join_all(checks).await?;
        Ok(())
    }

    /// Stores a manifest fetched from an upstream registry, under `tag` if given.
    ///
    /// Unlike a push, the blobs it names need not be here yet: a pull-through cache fetches
    /// them when a client asks. The digest is the one the client asked for or the upstream
    /// named, and the bytes must hash to it.
    pub async fn cache_manifest(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        body: Bytes,
        tag: Option<&Tag>,
    ) -> Result<ManifestContent> {
        if body.len() > self.settings.max_manifest_bytes {
            return Err(RegistryError::ManifestTooLarge {
                limit: self.settings.max_manifest_bytes,
            });
        }
        let computed = Digest::of(digest.algorithm(), &body);
        if &computed != digest {
            return Err(RegistryError::DigestInvalid(format!(
                "the upstream's manifest hashes to {computed}, not {digest}"
            )));
        }
        self.touch([digest]).await?;
        let blob_key = layout::blob_data(digest);
        if !self.exists(&blob_key).await? {
            self.store
                .put_bytes(&blob_key, body.clone(), PutCondition::Overwrite)
                .await?;
        }
        let references = super::references::with_itself(Manifest::parse(&body, None).ok(), digest);
        self.add_references(name, digest, &references).await?;
        self.write_link(&layout::manifest_revision_link(name, digest), digest)
            .await?;
        if let Some(t) = tag {
            self.point_tag(name, t, digest).await?;
        }
        self.add_to_catalog(name).await?;
        Ok(self.remember(digest.clone(), body))
    }

    /// Removes a tag (its current link and its index of past targets).
    pub(super) async fn drop_tag(&self, name: &RepositoryName, tag: &Tag) -> Result<()> {
        self.tags.forget(name, tag);
        self.store
            .delete_prefix(&layout::tag_prefix(name, tag))
            .await?;
        self.unindex_tag(name, tag).await
    }

    /// Points `tag` at a manifest revision the repository holds (a cache following its upstream).
    pub async fn point_tag(&self, name: &RepositoryName, tag: &Tag, digest: &Digest) -> Result<()> {
        // The index of past targets (distribution's layout) is history, not a precondition.
        let (index, current) = (
            layout::tag_index_link(name, tag, digest),
            layout::tag_current_link(name, tag),
        );
        futures::try_join!(
            self.write_link(&index, digest),
            self.write_link(&current, digest),
        )?;
        self.tags.put(name, tag, digest);
        // After the link: an index being filled lists the layout after it exists.
        self.index_tag(name, tag).await
    }

    /// The digest `tag` names now, `None` when it names nothing.
    /// Asked of the store, never the tag cache: a write decides by it.
    async fn current_tag(&self, name: &RepositoryName, tag: &Tag) -> Result<Option<Digest>> {
        match self.tag_target(name, tag).await {
            Ok((d, _)) => Ok(Some(d)),
            Err(RegistryError::ManifestUnknown(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The digest a reference currently names in the repository.
    pub async fn resolve(&self, name: &RepositoryName, reference: &Reference) -> Result<Digest> {
        match reference {
            Reference::Digest(d) => {
                if self
                    .exists(&layout::manifest_revision_link(name, d))
                    .await?
                {
                    Ok(d.clone())
                } else {
                    Err(RegistryError::ManifestUnknown(d.to_string()))
                }
            }
            Reference::Tag(t) => match self.tags.get(name, t) {
                Some(d) => Ok(d),
                None => self.tag_target(name, t).await.map(|(d, _)| d),
            },
        }
    }

    /// What the tag's link names in the store, and when it was written (the tag's last push),
    /// from one read. `ManifestUnknown` when there is no such tag or its link is corrupt.
    pub async fn tag_target(
        &self,
        name: &RepositoryName,
        t: &Tag,
    ) -> Result<(Digest, Option<std::time::SystemTime>)> {
        match self
            .store
            .read_small(&layout::tag_current_link(name, t))
            .await
        {
            Ok((body, info)) => {
                let d = layout::parse_link(&body).ok_or_else(|| {
                    RegistryError::ManifestUnknown(format!("tag {t} has a corrupt link"))
                })?;
                self.tags.put(name, t, &d);
                Ok((d, info.last_modified))
            }
            Err(StorageError::NotFound(_)) => Err(RegistryError::ManifestUnknown(t.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a manifest by tag or digest.
    pub async fn get_manifest(
        &self,
        name: &RepositoryName,
        reference: &Reference,
    ) -> Result<ManifestContent> {
        let digest = self.resolve(name, reference).await?;
        // Membership was just checked by resolve; the bytes of a digest never change.
        if let Some((body, media_type)) = self.manifests.get(&digest) {
            return Ok(ManifestContent {
                body,
                media_type,
                digest,
            });
        }
        let body = match self.store.read_small(&layout::blob_data(&digest)).await {
            Ok((b, _)) => b,
            Err(StorageError::NotFound(_)) => {
                return Err(RegistryError::ManifestUnknown(digest.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(self.remember(digest, body))
    }

    /// Takes the blobs a manifest of this repository names as linked here, without asking the
    /// store: a revision is stored only once every blob it names was linked (its push checked
    /// them, here as in distribution), and links go only by a blob delete, which this replica
    /// sees at once and others within the minute links are trusted. A pull then costs no
    /// request per layer. Only for repositories whose revisions were pushed: a pull-through
    /// cache stores manifests before their blobs.
    pub fn trust_links_of(&self, name: &RepositoryName, m: &ManifestContent) {
        let key = (name.clone(), m.digest.clone());
        if self.warmed.knows(&key) {
            return;
        }
        let Ok(manifest) = Manifest::parse(&m.body, Some(&m.media_type)) else {
            return;
        };
        for r in manifest.requirements() {
            if let Requirement::Blob(d) = r {
                self.links.remember((name.clone(), d));
            }
        }
        self.warmed.remember(key);
    }

    /// Keeps a manifest's bytes in the in-memory cache (they never change for a digest).
    fn remember(&self, digest: Digest, body: Bytes) -> ManifestContent {
        let media_type = sniff_media_type(&body);
        self.manifests
            .put(digest.clone(), body.clone(), media_type.clone());
        ManifestContent {
            media_type,
            body,
            digest,
        }
    }

    /// Deletes a tag (by tag reference) or a manifest revision and the tags that point at it.
    pub async fn delete_manifest(
        &self,
        name: &RepositoryName,
        reference: &Reference,
    ) -> Result<()> {
        self.require_delete()?;
        match reference {
            Reference::Tag(t) => {
                if !self.exists(&layout::tag_current_link(name, t)).await? {
                    return Err(RegistryError::ManifestUnknown(t.to_string()));
                }
                self.check_mutable(name, t)?;
                self.drop_tag(name, t).await?;
            }
            Reference::Digest(d) => self.delete_revision(name, d).await?,
        }
        Ok(())
    }

    /// Removes a manifest revision from a repository, with the tags pointing at it and its entry
    /// in its subject's referrers. `ManifestUnknown` if the repository lacks it,
    /// `TagImmutable` if an immutable tag names it.
    pub(super) async fn delete_revision(&self, name: &RepositoryName, d: &Digest) -> Result<()> {
        let mut pointing = Vec::new();
        for tag in self.all_tags(name).await? {
            if let Ok(t) = tag.parse::<Tag>()
                && self
                    .resolve(name, &Reference::Tag(t.clone()))
                    .await
                    .ok()
                    .as_ref()
                    == Some(d)
            {
                self.check_mutable(name, &t)?;
                pointing.push(t);
            }
        }
        self.unlink_revision(name, d, &pointing).await
    }

    /// Removes a manifest revision, its entry in its subject's referrers and `tags` (those
    /// pointing at it, for a caller that knows them). `ManifestUnknown` if the repository lacks
    /// it, before anything is removed.
    pub(super) async fn unlink_revision(
        &self,
        name: &RepositoryName,
        d: &Digest,
        tags: &[Tag],
    ) -> Result<()> {
        let content = self
            .get_manifest(name, &Reference::Digest(d.clone()))
            .await?;
        let parsed = Manifest::parse(&content.body, None).ok();
        if let Some(s) = parsed.as_ref().and_then(|m| m.subject.as_ref()) {
            self.remove_referrer(name, &s.digest, d).await?;
        }
        for t in tags {
            self.drop_tag(name, t).await?;
        }
        self.store
            .delete(&layout::manifest_revision_link(name, d))
            .await?;
        let references = super::references::with_itself(parsed, d);
        self.drop_references(name, d, &references).await?;
        self.release_quota(name, d).await;
        Ok(())
    }
}
