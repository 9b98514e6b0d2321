//! The referrers index: per subject, the descriptors of manifests whose `subject` names it.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};

use super::Registry;
use crate::digest::Digest;
use crate::error::Result;
use crate::layout;
use crate::manifest::Descriptor;
use crate::names::RepositoryName;
use crate::storage::{PutCondition, StorageError};

impl Registry {
    pub(super) async fn add_referrer(
        &self,
        name: &RepositoryName,
        subject: &Digest,
        desc: &Descriptor,
    ) -> Result<()> {
        let json = serde_json::to_vec(desc)
            .map_err(|e| crate::RegistryError::ManifestInvalid(e.to_string()))?;
        self.store
            .put_bytes(
                &layout::referrer_entry(name, subject, &desc.digest),
                Bytes::from(json),
                PutCondition::Overwrite,
            )
            .await?;
        Ok(())
    }

    pub(super) async fn remove_referrer(
        &self,
        name: &RepositoryName,
        subject: &Digest,
        referrer: &Digest,
    ) -> Result<()> {
        self.store
            .delete(&layout::referrer_entry(name, subject, referrer))
            .await?;
        Ok(())
    }

    /// Descriptors of the manifests that refer to `subject`, optionally only of one artifact type.
    pub async fn list_referrers(
        &self,
        name: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        let listing = self
            .store
            .list(&layout::referrers_prefix(name, subject))
            .await?;
        let store = self.store.clone();
        let mut found: Vec<Descriptor> = stream::iter(listing.objects)
            .map(|key| {
                let store = store.clone();
                async move {
                    match store.read_small(&key).await {
                        Ok((body, _)) => Ok(serde_json::from_slice::<Descriptor>(&body).ok()),
                        // Deleted between list and read.
                        Err(StorageError::NotFound(_)) => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffer_unordered(16)
            .try_filter_map(|d| async move { Ok(d) })
            .try_collect()
            .await?;
        // Still a referrer only while the manifest revision exists in the repository.
        let mut kept = Vec::with_capacity(found.len());
        for d in found.drain(..) {
            let wanted = artifact_type.is_none_or(|t| d.artifact_type.as_deref() == Some(t));
            if wanted
                && self
                    .exists(&layout::manifest_revision_link(name, &d.digest))
                    .await?
            {
                kept.push(d);
            }
        }
        kept.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(kept)
    }
}
