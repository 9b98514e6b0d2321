//! A cached repository: manifests, blobs and tags from the store when they were fetched for
//! it, else from the upstream (and kept).

use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use registry_core::registry::ManifestContent;
use registry_core::storage::StorageError;
use registry_core::{Digest, Reference, Registry, RegistryError, RepositoryName, Tag};
use reqwest::Method;

use super::verified::verified;
use super::{Blob, Content, ContentError, Tags, uses};
use crate::upstream::client::read_at_most;
use crate::upstream::{Remote, UpstreamError};

use registry_core::manifest::ACCEPT_ALL as MANIFEST_ACCEPT;

/// Chunks in flight between the upstream, the client and the store (bounded memory per pull).
const TEE_QUEUE: usize = 4;

/// How long the copy into the store waits for a client that takes nothing: after that the
/// client is cut off and the copy goes on, so that one stuck client cannot hold a blob's copy
/// (and every other pull of it, passed through meanwhile) forever.
const CLIENT_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// Largest tags list taken from an upstream in one answer (about 200,000 tags): held in memory
/// while it is rewritten, so an upstream cannot make it unbounded.
const MAX_TAGS_LIST_BYTES: usize = 16 << 20;

/// One cached repository and its counterpart upstream.
pub struct CachedRepository<'a> {
    pub(super) content: &'a Content,
    pub(super) remote: Remote<'a>,
    pub(super) name: &'a RepositoryName,
}

/// The upstream's answer when it exists (2xx), `None` for 404, an error otherwise.
fn found(resp: reqwest::Response) -> Result<Option<reqwest::Response>, UpstreamError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(Some(resp));
    }
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let what = format!(
        "{} answered {status}",
        resp.url().origin().ascii_serialization()
    );
    Err(if status.is_server_error() {
        UpstreamError::Unreachable(what)
    } else {
        UpstreamError::BadAnswer(what)
    })
}

fn digest_header(resp: &reqwest::Response) -> Option<Digest> {
    resp.headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The `Content-Length` an answer announces (for a HEAD too, whose body is empty).
fn announced_length(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

impl CachedRepository<'_> {
    fn registry(&self) -> &Registry {
        &self.content.registry
    }

    /// A manifest, noted as pulled for expiry.
    pub(super) async fn manifest(
        &self,
        reference: &Reference,
    ) -> Result<ManifestContent, ContentError> {
        let m = self.find_manifest(reference).await?;
        self.note_use(reference);
        Ok(m)
    }

    /// By tag, the upstream says which digest the tag names now (a HEAD, which Docker Hub does
    /// not count against pull limits) and the bytes are fetched only when the repository lacks
    /// them; when the upstream is down, the last cached tag is served.
    async fn find_manifest(&self, reference: &Reference) -> Result<ManifestContent, ContentError> {
        let (registry, name) = (self.registry(), self.name);
        let tag = match reference {
            Reference::Digest(d) => {
                return match registry.get_manifest(name, reference).await {
                    Err(RegistryError::ManifestUnknown(_)) => {
                        self.fetch_manifest(&d.to_string(), Some(d), None).await
                    }
                    other => Ok(other?),
                };
            }
            Reference::Tag(t) => t,
        };
        let path = format!("/v2/{}/manifests/{}", self.remote.name, tag.as_str());
        let upstream = self.remote.upstream;
        // Pulls of this tag arriving while the upstream is being asked share its answer.
        let asked = upstream
            .tag_digest(&path, || async {
                upstream
                    .client()
                    .send(
                        Method::HEAD,
                        &path,
                        &self.remote.name,
                        Some(MANIFEST_ACCEPT),
                        &[],
                    )
                    .await
                    .and_then(found)
                    .map(|resp| resp.map(|r| digest_header(&r)))
            })
            .await;
        let digest = match asked {
            Ok(Some(digest)) => digest,
            Ok(None) => return Err(RegistryError::ManifestUnknown(tag.to_string()).into()),
            Err(e) if e.may_serve_cached() => {
                tracing::warn!(error = %e, repository = %name, tag = tag.as_str(), "upstream unavailable: serving the cached tag");
                return registry
                    .get_manifest(name, reference)
                    .await
                    .map_err(|_| ContentError::from(e));
            }
            Err(e) => return Err(e.into()),
        };
        let Some(digest) = digest else {
            // An upstream that names no digest on HEAD: the GET's bytes say it.
            return self.fetch_manifest(tag.as_str(), None, Some(tag)).await;
        };
        let by_digest = Reference::Digest(digest.clone());
        match registry.get_manifest(name, &by_digest).await {
            Ok(m) => {
                if registry.resolve(name, reference).await.ok().as_ref() != Some(&digest) {
                    registry.point_tag(name, tag, &digest).await?;
                }
                Ok(m)
            }
            Err(RegistryError::ManifestUnknown(_)) => {
                self.fetch_manifest(&digest.to_string(), Some(&digest), Some(tag))
                    .await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// GETs a manifest from the upstream and stores it (under `tag`, when given).
    async fn fetch_manifest(
        &self,
        reference: &str,
        expected: Option<&Digest>,
        tag: Option<&Tag>,
    ) -> Result<ManifestContent, ContentError> {
        let registry = self.registry();
        let path = format!("/v2/{}/manifests/{reference}", self.remote.name);
        let resp = self
            .remote
            .upstream
            .client()
            .send(
                Method::GET,
                &path,
                &self.remote.name,
                Some(MANIFEST_ACCEPT),
                &[],
            )
            .await
            .and_then(found)?
            .ok_or_else(|| RegistryError::ManifestUnknown(reference.to_owned()))?;
        let named = digest_header(&resp);
        let body = read_at_most(resp, registry.settings().max_manifest_bytes).await?;
        // What the client asked for, else what the upstream named, else the bytes' SHA-256.
        let digest = match (expected, named) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => d,
            (None, None) => Digest::of(registry_core::digest::Algorithm::Sha256, &body),
        };
        match registry.cache_manifest(self.name, &digest, body, tag).await {
            // Bytes that are not their digest are the upstream's fault, not the client's: a 502.
            Err(RegistryError::DigestInvalid(why)) => Err(UpstreamError::BadAnswer(why).into()),
            other => Ok(other?),
        }
    }

    /// A blob of the repository. Bytes in the store that were not fetched for it may belong
    /// to any repository, private ones included: they become this repository's only when the
    /// upstream confirms that it serves them for it. Either way the upstream is asked once,
    /// so the answer's timing does not tell whether the store holds the digest.
    pub(super) async fn blob(&self, digest: &Digest, head: bool) -> Result<Blob, ContentError> {
        let (registry, name) = (self.registry(), self.name);
        match registry.stat_blob(name, digest).await {
            Ok(info) => return Ok(Blob::Stored(info)),
            Err(RegistryError::BlobUnknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let Some(info) = registry.stored_blob_bytes(digest).await? else {
            return self.fetch_blob(digest, head).await;
        };
        match self.ask_blob(Method::HEAD, digest).await? {
            Some(_) if registry.link_blob(name, digest).await? => Ok(Blob::Stored(info)),
            // Collected since it was seen: fetched again like any blob not stored.
            Some(_) => self.fetch_blob(digest, head).await,
            None => Err(RegistryError::BlobUnknown(digest.clone()).into()),
        }
    }

    /// The upstream's answer for the blob, `None` when it does not have it.
    async fn ask_blob(
        &self,
        method: Method,
        digest: &Digest,
    ) -> Result<Option<reqwest::Response>, UpstreamError> {
        let path = format!("/v2/{}/blobs/{digest}", self.remote.name);
        self.remote
            .upstream
            .client()
            .send(method, &path, &self.remote.name, None, &[])
            .await
            .and_then(found)
    }

    /// A blob the store lacks, from the upstream. A GET is streamed to the client and into
    /// the store at once (kept once verified), unless another request of this process is
    /// copying it already; a HEAD is answered with the upstream's length. A range is never
    /// passed on: it could not be verified, so the whole blob is served (as HTTP allows).
    async fn fetch_blob(&self, digest: &Digest, head: bool) -> Result<Blob, ContentError> {
        let method = if head { Method::HEAD } else { Method::GET };
        let resp = self
            .ask_blob(method, digest)
            .await?
            .ok_or_else(|| RegistryError::BlobUnknown(digest.clone()))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(UpstreamError::BadAnswer(format!(
                "a blob GET answered {} instead of 200",
                resp.status()
            ))
            .into());
        }
        let max = self.remote.upstream.max_blob_bytes;
        let length = announced_length(&resp);
        if let Some(n) = length
            && n > max
        {
            return Err(UpstreamError::BadAnswer(format!(
                "blob {digest} is {n} bytes, more than the {max} this cache takes (maxblobsize)"
            ))
            .into());
        }
        if head {
            return Ok(Blob::Fetched { length, body: None });
        }
        let checked = verified(resp.bytes_stream(), digest, length, max).map(|r| {
            r.map_err(|e| {
                tracing::warn!(error = %e, "blob from the upstream refused");
                StorageError::Backend(e.to_string())
            })
        });
        let body: registry_core::storage::ByteStream = match self.content.copies.claim(digest) {
            Some(claim) => Box::pin(tee_into_store(
                self.content.registry.clone(),
                self.name.clone(),
                digest.clone(),
                Box::pin(checked),
                length.is_some(),
                claim,
            )),
            None => Box::pin(checked),
        };
        Ok(Blob::Fetched {
            length,
            body: Some(body),
        })
    }

    /// The tags list as the upstream has it (its `n`/`last` paging passed through via
    /// `query`), or this repository's own page when the upstream is unavailable.
    pub(super) async fn tags(
        &self,
        n: Option<usize>,
        last: Option<&str>,
        query: &str,
    ) -> Result<Tags, ContentError> {
        let remote = &self.remote;
        let path = match query {
            "" => format!("/v2/{}/tags/list", remote.name),
            q => format!("/v2/{}/tags/list?{q}", remote.name),
        };
        let resp = match remote
            .upstream
            .client()
            .send(Method::GET, &path, &remote.name, None, &[])
            .await
            .and_then(found)
        {
            Ok(Some(r)) => r,
            Ok(None) => return Err(RegistryError::NameUnknown(self.name.to_string()).into()),
            Err(e) if e.may_serve_cached() => {
                return Ok(Tags::Local(
                    self.registry().list_tags(self.name, n, last).await?,
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let link = resp
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .map(|l| relink(l, &remote.name, self.name.as_str()));
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let body = read_at_most(resp, MAX_TAGS_LIST_BYTES).await?;
        let list: TagList = serde_json::from_slice(&body)
            .map_err(|e| UpstreamError::BadAnswer(format!("tags list: {e}")))?;
        Ok(Tags::Upstream {
            tags: list.tags.unwrap_or_default(),
            link,
        })
    }

    /// Notes, off the request, that a client pulled `reference` (for expiry; nothing to note
    /// when the cache keeps content forever).
    fn note_use(&self, reference: &Reference) {
        let Some(ttl) = self.remote.upstream.ttl else {
            return;
        };
        let key = format!("{}\0{reference}", self.name);
        if !self.content.uses.due(&key, uses::refresh_every(ttl)) {
            return;
        }
        let registry = self.content.registry.clone();
        let (name, reference) = (self.name.clone(), reference.clone());
        tokio::spawn(async move {
            if let Err(e) = registry.note_pull(&name, &reference).await {
                tracing::warn!(repository = %name, %reference, error = %e, "could not note a pull of cached content");
            }
        });
    }
}

/// The verified upstream body for the client, while the same chunks go into the store. The
/// copy outlives a client that leaves or stalls, so that the next pull finds the blob, when
/// the upstream announced a length (the copy has a known end); without one, it stops with its
/// last client. It is kept only if the bytes hash to `digest`. `claim` is held until the copy
/// has ended.
fn tee_into_store(
    registry: Arc<Registry>,
    name: RepositoryName,
    digest: Digest,
    mut upstream: registry_core::storage::ByteStream,
    bounded: bool,
    claim: super::copies::CopyClaim,
) -> futures::channel::mpsc::Receiver<Result<Bytes, StorageError>> {
    let (mut to_client, for_client) = futures::channel::mpsc::channel(TEE_QUEUE);
    let (mut to_store, for_store) = futures::channel::mpsc::channel(TEE_QUEUE);
    let (store_name, store_digest, store_registry) = (name.clone(), digest.clone(), registry);
    let stored = tokio::spawn(async move {
        store_registry
            .put_blob(&store_name, &store_digest, Box::pin(for_store))
            .await
    });
    tokio::spawn(async move {
        let (mut client_open, mut store_open) = (true, true);
        while let Some(chunk) = upstream.next().await {
            match chunk {
                Ok(b) => {
                    if client_open {
                        match tokio::time::timeout(CLIENT_STALL, to_client.send(Ok(b.clone())))
                            .await
                        {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => client_open = false,
                            Err(_) => {
                                tracing::warn!(%digest, "a client took nothing for {CLIENT_STALL:?}: cut off, the blob's copy into the store goes on");
                                client_open = false;
                                to_client.close_channel();
                            }
                        }
                    }
                    if !client_open && !bounded {
                        tracing::info!(%digest, "the last client left a blob of unannounced length: its copy stops");
                        let _ = to_store
                            .send(Err(StorageError::Backend(
                                "the copy was stopped with its last client".into(),
                            )))
                            .await;
                        break;
                    }
                    if store_open && to_store.send(Ok(b)).await.is_err() {
                        store_open = false;
                    }
                    if !client_open && !store_open {
                        break;
                    }
                }
                Err(e) => {
                    let _ = to_client
                        .send(Err(StorageError::Backend(e.to_string())))
                        .await;
                    let _ = to_store.send(Err(e)).await;
                    break;
                }
            }
        }
        drop(to_store);
        drop(to_client);
        match stored.await {
            Ok(Ok(size)) => {
                tracing::info!(repository = %name, %digest, size, "cached a blob from the upstream")
            }
            Ok(Err(e)) => {
                tracing::warn!(repository = %name, %digest, error = %e, "blob from the upstream not cached")
            }
            Err(e) => tracing::warn!(error = %e, "blob caching task failed"),
        }
        drop(claim);
    });
    for_client
}

/// The upstream's `Link: </v2/<remote>/tags/list?...>` pointed at the local repository.
fn relink(link: &str, remote: &str, local: &str) -> String {
    let from = format!("/v2/{remote}/tags/list");
    let to = format!("/v2/{local}/tags/list");
    match link.find(&from) {
        // Only the path and query are kept: the next page is asked of this registry.
        Some(at) => {
            let rest = &link[at + from.len()..];
            format!("<{to}{rest}")
        }
        None => link.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tag_list_links_point_at_the_local_repository() {
        assert_eq!(
            super::relink(
                "</v2/library/alpine/tags/list?last=3.19&n=2>; rel=\"next\"",
                "library/alpine",
                "hub/library/alpine"
            ),
            "</v2/hub/library/alpine/tags/list?last=3.19&n=2>; rel=\"next\""
        );
        assert_eq!(
            super::relink(
                "<https://r.example/v2/o/r/tags/list?n=1&last=a>; rel=\"next\"",
                "o/r",
                "ghcr/o/r"
            ),
            "</v2/ghcr/o/r/tags/list?n=1&last=a>; rel=\"next\""
        );
    }
}
