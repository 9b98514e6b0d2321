//! Copies one tag of an upstream registry into a repository here, as a push would store it:
//! blobs first (streamed into the store and verified against their digests, never held
//! whole), then index children by digest, then the manifest by its tag. Blobs the store
//! already holds are linked, not fetched again.

use futures::{StreamExt, TryStreamExt};
use registry_core::manifest::{ACCEPT_ALL, Manifest};
use registry_core::{Algorithm, Digest, Reference, Registry, RegistryError, RepositoryName, Tag};
use reqwest::{Method, StatusCode};

use super::image_copy::{CopyError, local};
use crate::upstream::UpstreamClient;
use crate::upstream::client::{Request, read_at_most};

/// Blobs of one manifest fetched at once.
const BLOBS_AT_ONCE: usize = 4;
/// Deepest nesting of indexes followed.
const MAX_DEPTH: usize = 8;

/// A copy from a repository upstream into one here.
pub(crate) struct ImageFetch<'a> {
    pub(crate) registry: &'a Registry,
    pub(crate) client: &'a UpstreamClient,
    /// Its name upstream.
    pub(crate) from: &'a str,
    /// Its name here.
    pub(crate) to: &'a RepositoryName,
    /// Largest blob taken.
    pub(crate) max_blob_bytes: u64,
    /// Blobs fetched, and their bytes.
    pub(crate) fetched: (usize, u64),
}

impl ImageFetch<'_> {
    /// The digest `tag` names upstream, if it is there.
    pub(crate) async fn remote_tag(&self, tag: &str) -> Result<Option<Digest>, CopyError> {
        Ok(self.client.tag_digest(self.from, tag, "pull").await?)
    }

    /// Copies `tag`: what it names upstream becomes what it names here.
    pub(crate) async fn tag(&mut self, tag: &Tag) -> Result<Digest, CopyError> {
        self.manifest(&Reference::Tag(tag.clone()), 0).await
    }

    async fn manifest(&mut self, reference: &Reference, depth: usize) -> Result<Digest, CopyError> {
        if depth > MAX_DEPTH {
            return Err(CopyError::Refused(format!(
                "indexes nested deeper than {MAX_DEPTH}"
            )));
        }
        let resp = self
            .get(
                Method::GET,
                &format!("/v2/{}/manifests/{reference}", self.from),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(status_error("a manifest GET", resp.status()));
        }
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_at_most(resp, self.registry.settings().max_manifest_bytes).await?;
        // By digest, the bytes must be those; by tag, the digest is what they hash to.
        let digest = match reference {
            Reference::Digest(d) => {
                if Digest::of(d.algorithm(), &body) != *d {
                    return Err(CopyError::Refused(format!(
                        "the upstream's manifest {d} does not match its digest"
                    )));
                }
                d.clone()
            }
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, &body),
        };
        let parsed = Manifest::parse(&body, media_type.as_deref())
            .map_err(|e| CopyError::Refused(format!("{reference}: {e}")))?;
        for child in &parsed.manifests {
            Box::pin(self.manifest(&Reference::Digest(child.digest.clone()), depth + 1)).await?;
        }
        let fetches: Vec<_> = parsed
            .config
            .iter()
            .chain(&parsed.layers)
            .filter(|b| b.urls.as_ref().is_none_or(|u| u.is_empty()))
            .map(|b| self.blob(&b.digest))
            .collect();
        let fetched: Vec<Option<u64>> = futures::stream::iter(fetches)
            .buffer_unordered(BLOBS_AT_ONCE)
            .try_collect()
            .await?;
        for size in fetched.into_iter().flatten() {
            self.fetched.0 += 1;
            self.fetched.1 += size;
        }
        self.registry
            .put_manifest(self.to, reference, body, media_type.as_deref(), &[])
            .await
            .map_err(local)?;
        Ok(digest)
    }

    /// Makes the blob part of the repository here; its size when it had to be fetched.
    async fn blob(&self, digest: &Digest) -> Result<Option<u64>, CopyError> {
        match self.registry.stat_blob(self.to, digest).await {
            Ok(_) => return Ok(None),
            Err(RegistryError::BlobUnknown(_)) => {}
            Err(e) => return Err(local(e)),
        }
        // Bytes another repository brought are linked, not fetched (unless collected since).
        let stored = self
            .registry
            .stored_blob_bytes(digest)
            .await
            .map_err(local)?
            .is_some();
        if stored
            && self
                .registry
                .link_blob(self.to, digest)
                .await
                .map_err(local)?
        {
            return Ok(None);
        }
        let resp = self
            .get(Method::GET, &format!("/v2/{}/blobs/{digest}", self.from))
            .await?;
        if !resp.status().is_success() {
            return Err(status_error("a blob GET", resp.status()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_blob_bytes)
        {
            return Err(CopyError::Refused(format!(
                "blob {digest} is larger than {} bytes",
                self.max_blob_bytes
            )));
        }
        let limit = self.max_blob_bytes;
        let mut seen = 0u64;
        let body = resp
            .bytes_stream()
            .map(move |chunk| {
                let chunk = chunk.map_err(registry_core::storage::StorageError::backend)?;
                seen += chunk.len() as u64;
                if seen > limit {
                    return Err(registry_core::storage::StorageError::Backend(format!(
                        "a blob over {limit} bytes"
                    )));
                }
                Ok(chunk)
            })
            .boxed();
        // Verified against its digest while it is stored; other bytes are never kept.
        let size = self
            .registry
            .put_blob(self.to, digest, body)
            .await
            .map_err(|e| match e {
                RegistryError::DigestInvalid(_) => CopyError::Refused(format!(
                    "the upstream's blob {digest} does not match its digest"
                )),
                other => CopyError::Transient(other.to_string()),
            })?;
        Ok(Some(size))
    }

    async fn get(&self, method: Method, path: &str) -> Result<reqwest::Response, CopyError> {
        Ok(self
            .client
            .request(Request {
                method,
                target: path,
                repository: self.from,
                actions: "pull",
                accept: Some(ACCEPT_ALL),
                headers: &[],
                body: None,
            })
            .await?)
    }
}

fn status_error(what: &str, s: StatusCode) -> CopyError {
    super::image_copy::peer_status_error("upstream", what, s)
}
