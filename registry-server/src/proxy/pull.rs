//! Serving a cached repository: manifests, blobs and tags from the store, or from the upstream
//! the first time (and kept).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use registry_core::registry::ManifestContent;
use registry_core::storage::StorageError;
use registry_core::{Digest, Reference, Registry, RegistryError, RepositoryName, Tag};
use reqwest::Method;

use super::{Remote, UpstreamError};
use crate::api::App;
use crate::api::error::{ApiError, ApiResult};

/// Every manifest kind Berth stores, asked of the upstream in its order of preference.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Chunks in flight between the upstream, the client and the store (bounded memory per pull).
const TEE_QUEUE: usize = 4;

/// How long the copy into the store waits for a client that takes nothing: after that the
/// client is cut off and the copy goes on, so that one stuck client cannot hold a blob's copy
/// (and every other pull of it, passed through meanwhile) forever.
const CLIENT_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// Largest tags list taken from an upstream in one answer (about 200,000 tags): held in memory
/// while it is rewritten, so an upstream cannot make it unbounded.
const MAX_TAGS_LIST_BYTES: usize = 16 << 20;

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

/// A manifest of a cached repository. By tag, the upstream says which digest the tag names
/// now (a HEAD, which Docker Hub does not count against pull limits) and the bytes are fetched
/// only when the store lacks them; when the upstream is down, the last cached tag is served.
pub(crate) async fn manifest(
    registry: &Registry,
    remote: &Remote<'_>,
    name: &RepositoryName,
    reference: &Reference,
) -> Result<ManifestContent, ApiError> {
    let tag = match reference {
        Reference::Digest(d) => {
            return match registry.get_manifest(name, reference).await {
                Err(RegistryError::ManifestUnknown(_)) => {
                    fetch_manifest(registry, remote, name, &d.to_string(), Some(d), None).await
                }
                other => Ok(other?),
            };
        }
        Reference::Tag(t) => t,
    };
    let path = format!("/v2/{}/manifests/{}", remote.name, tag.as_str());
    // Pulls of this tag arriving while the upstream is being asked share its answer.
    let asked = remote
        .upstream
        .tag_answers
        .run(&path, || async {
            remote
                .upstream
                .client()
                .send(
                    Method::HEAD,
                    &path,
                    &remote.name,
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
                .map_err(|_| ApiError::from(e));
        }
        Err(e) => return Err(e.into()),
    };
    let Some(digest) = digest else {
        // An upstream that names no digest on HEAD: the GET's bytes say it.
        return fetch_manifest(registry, remote, name, tag.as_str(), None, Some(tag)).await;
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
            fetch_manifest(
                registry,
                remote,
                name,
                &digest.to_string(),
                Some(&digest),
                Some(tag),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// GETs a manifest from the upstream and stores it (under `tag`, when given).
async fn fetch_manifest(
    registry: &Registry,
    remote: &Remote<'_>,
    name: &RepositoryName,
    reference: &str,
    expected: Option<&Digest>,
    tag: Option<&Tag>,
) -> Result<ManifestContent, ApiError> {
    let path = format!("/v2/{}/manifests/{reference}", remote.name);
    let resp = remote
        .upstream
        .client()
        .send(Method::GET, &path, &remote.name, Some(MANIFEST_ACCEPT), &[])
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
    match registry.cache_manifest(name, &digest, body, tag).await {
        // Bytes that are not their digest are the upstream's fault, not the client's: a 502.
        Err(RegistryError::DigestInvalid(why)) => Err(UpstreamError::BadAnswer(why).into()),
        other => Ok(other?),
    }
}

/// A body, refused once it passes `limit` bytes (whatever Content-Length said).
async fn read_at_most(resp: reqwest::Response, limit: usize) -> Result<Bytes, UpstreamError> {
    let too_large = || UpstreamError::BadAnswer(format!("an answer larger than {limit} bytes"));
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(super::client::unreachable)?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A blob the store lacks: answered from the upstream. A whole GET is streamed to the client
/// and into the store at once (verified against its digest before it is kept), unless another
/// request of this process is copying the same blob already; a HEAD or a range is passed
/// through without caching.
pub(crate) async fn blob(
    app: &Arc<App>,
    remote: &Remote<'_>,
    name: &RepositoryName,
    digest: &Digest,
    head: bool,
    range: Option<&str>,
) -> ApiResult {
    let path = format!("/v2/{}/blobs/{digest}", remote.name);
    let method = if head { Method::HEAD } else { Method::GET };
    let headers: Vec<(&str, &str)> = range.map(|r| ("range", r)).into_iter().collect();
    let resp = remote
        .upstream
        .client()
        .send(method, &path, &remote.name, None, &headers)
        .await
        .and_then(found)?
        .ok_or_else(|| RegistryError::BlobUnknown(digest.clone()))?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::OK);
    let mut out = Response::builder().status(status);
    for h in ["content-length", "content-range"] {
        if let Some(v) = resp.headers().get(h) {
            out = out.header(h, v.as_bytes());
        }
    }
    let out = out
        .header("content-type", "application/octet-stream")
        .header("docker-content-digest", digest.to_string())
        .header("etag", format!("\"{digest}\""));
    let claim = (!head && range.is_none() && status == StatusCode::OK)
        .then(|| app.proxies.copies.claim(digest))
        .flatten();
    let body = match claim {
        _ if head => Body::empty(),
        Some(claim) => Body::from_stream(tee_into_store(
            app.clone(),
            name.clone(),
            digest.clone(),
            resp,
            claim,
        )),
        None => Body::from_stream(resp.bytes_stream()),
    };
    out.body(body)
        .map_err(|e| ApiError::from(UpstreamError::BadAnswer(e.to_string())))
}

/// The upstream body for the client, while the same chunks go into the store. The copy keeps
/// going if the client leaves or stalls, so that the next pull finds the blob; it is kept only
/// if the bytes hash to `digest`. `claim` is held until the copy has ended.
fn tee_into_store(
    app: Arc<App>,
    name: RepositoryName,
    digest: Digest,
    resp: reqwest::Response,
    claim: super::copies::CopyClaim,
) -> futures::channel::mpsc::Receiver<Result<Bytes, std::io::Error>> {
    let (mut to_client, for_client) = futures::channel::mpsc::channel(TEE_QUEUE);
    let (mut to_store, for_store) = futures::channel::mpsc::channel(TEE_QUEUE);
    let store_app = app.clone();
    let (store_name, store_digest) = (name.clone(), digest.clone());
    let stored = tokio::spawn(async move {
        store_app
            .registry
            .put_blob(&store_name, &store_digest, Box::pin(for_store))
            .await
    });
    tokio::spawn(async move {
        let (mut client_open, mut store_open) = (true, true);
        let mut upstream = resp.bytes_stream();
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
                    if store_open && to_store.send(Ok(b)).await.is_err() {
                        store_open = false;
                    }
                    if !client_open && !store_open {
                        break;
                    }
                }
                Err(e) => {
                    let msg = format!("upstream body: {e}");
                    let _ = to_client
                        .send(Err(std::io::Error::other(msg.clone())))
                        .await;
                    let _ = to_store.send(Err(StorageError::Backend(msg))).await;
                    break;
                }
            }
        }
        drop(to_store);
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

/// The tags list as the upstream has it (its `n`/`last` paging passed through), or `None`
/// when the upstream is unavailable and the cached tags should answer.
pub(crate) async fn tags(
    remote: &Remote<'_>,
    name: &RepositoryName,
    query: Option<&str>,
) -> Result<Option<Response>, ApiError> {
    let path = match query {
        Some(q) if !q.is_empty() => format!("/v2/{}/tags/list?{q}", remote.name),
        _ => format!("/v2/{}/tags/list", remote.name),
    };
    let resp = match remote
        .upstream
        .client()
        .send(Method::GET, &path, &remote.name, None, &[])
        .await
        .and_then(found)
    {
        Ok(Some(r)) => r,
        Ok(None) => return Err(RegistryError::NameUnknown(name.to_string()).into()),
        Err(e) if e.may_serve_cached() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let link = resp
        .headers()
        .get("link")
        .and_then(|v| v.to_str().ok())
        .map(|l| relink(l, &remote.name, name.as_str()));
    #[derive(serde::Deserialize)]
    struct TagList {
        tags: Option<Vec<String>>,
    }
    let body = read_at_most(resp, MAX_TAGS_LIST_BYTES).await?;
    let list: TagList = serde_json::from_slice(&body)
        .map_err(|e| UpstreamError::BadAnswer(format!("tags list: {e}")))?;
    let mut out = axum::Json(serde_json::json!({
        "name": name.as_str(),
        "tags": list.tags.unwrap_or_default(),
    }))
    .into_response();
    if let Some(v) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        out.headers_mut().insert("link", v);
    }
    Ok(Some(out))
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
