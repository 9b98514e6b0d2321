//! Copies one manifest of this registry, with everything it names, to a downstream registry
//! over the distribution API: blobs first (streamed from the store, never held whole), then
//! index children, then the manifest, then the manifests that refer to it. What the
//! downstream already has is not sent again.

use futures::{StreamExt, TryStreamExt};
use registry_core::manifest::Manifest;
use registry_core::{Digest, Reference, Registry, RegistryError, RepositoryName};
use reqwest::{Method, StatusCode};

use crate::upstream::UpstreamClient;
use crate::upstream::UpstreamError;
use crate::upstream::client::Request;

/// Blobs of one manifest sent at once.
const BLOBS_AT_ONCE: usize = 4;

/// Deepest nesting of indexes followed (an index of indexes of images is 2).
const MAX_DEPTH: usize = 8;

/// Why a copy did not finish.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CopyError {
    /// Worth trying again later: the downstream is down, busy or refused our credentials,
    /// or our own store failed.
    #[error("{0}")]
    Transient(String),
    /// Trying again will not help: the downstream refused the content itself, or it is no
    /// longer here.
    #[error("{0}")]
    Refused(String),
}

impl From<UpstreamError> for CopyError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::BadAnswer(m) => CopyError::Refused(m),
            other => CopyError::Transient(other.to_string()),
        }
    }
}

/// A failure of this registry's own store is worth retrying; anything else it says is final.
pub(super) fn local(e: RegistryError) -> CopyError {
    match e {
        RegistryError::Storage(_) => CopyError::Transient(e.to_string()),
        other => CopyError::Refused(other.to_string()),
    }
}

/// What a copy did, for reports and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Copied {
    /// Blobs sent.
    pub(crate) blobs: usize,
    /// Bytes of those blobs.
    pub(crate) bytes: u64,
    /// Manifests sent.
    pub(crate) manifests: usize,
}

/// A copy from one repository here to its counterpart downstream.
pub(crate) struct ImageCopy<'a> {
    /// This registry.
    pub(crate) registry: &'a Registry,
    /// The downstream.
    pub(crate) client: &'a UpstreamClient,
    /// The repository here.
    pub(crate) repository: &'a RepositoryName,
    /// What was sent so far.
    pub(crate) copied: Copied,
}

impl<'a> ImageCopy<'a> {
    /// A copy of `repository` to `client`.
    pub(crate) fn new(
        registry: &'a Registry,
        client: &'a UpstreamClient,
        repository: &'a RepositoryName,
    ) -> Self {
        ImageCopy {
            registry,
            client,
            repository,
            copied: Copied::default(),
        }
    }

    fn name(&self) -> &str {
        self.repository.as_str()
    }

    /// Sends the manifest `digest` and what it names, then points `tag` at it downstream.
    pub(crate) async fn tag(&mut self, tag: &str, digest: &Digest) -> Result<(), CopyError> {
        self.manifest(digest, 0, Some(tag)).await
    }

    /// Sends the manifest `digest` and what it names (and what refers to it).
    pub(crate) async fn digest(&mut self, digest: &Digest) -> Result<(), CopyError> {
        self.manifest(digest, 0, None).await
    }

    /// The digest `tag` names downstream, if it is there.
    pub(crate) async fn remote_tag(&self, tag: &str) -> Result<Option<Digest>, CopyError> {
        Ok(self
            .client
            .tag_digest(self.name(), tag, "pull,push")
            .await?)
    }

    /// Removes `reference` (a tag or a digest) downstream, if it is there. A downstream that
    /// cannot delete tags (distribution before 3.0) is refused for good, with a reason that
    /// says so.
    pub(crate) async fn delete(&self, reference: &str) -> Result<(), CopyError> {
        let is_tag = !reference.contains(':');
        // Asked first: a tag that never got there (pushed and deleted while the downstream
        // was down) needs nothing, also of a downstream that cannot delete tags.
        if is_tag && self.remote_tag(reference).await?.is_none() {
            return Ok(());
        }
        let resp = self
            .request(
                Method::DELETE,
                &format!("/v2/{}/manifests/{reference}", self.name()),
                None,
                None,
            )
            .await?;
        match resp.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            s if s.is_server_error() => Err(status_error("a delete", s)),
            s if is_tag => Err(CopyError::Refused(format!(
                "the downstream cannot delete tags (it answered {s}; distribution before 3.0 \
                 does not): {}:{reference} stays there until its manifest is deleted there",
                self.name()
            ))),
            _ => Err(refusal(resp, &format!("to delete {}@{reference}", self.name())).await),
        }
    }

    /// Sends the manifest `digest` unless the downstream has it, after what it names; with
    /// `tag`, puts it by that tag (one request for both, where the manifest is new).
    async fn manifest(
        &mut self,
        digest: &Digest,
        depth: usize,
        tag: Option<&str>,
    ) -> Result<(), CopyError> {
        if depth > MAX_DEPTH {
            return Err(CopyError::Refused(format!(
                "{digest}: indexes nested deeper than {MAX_DEPTH}"
            )));
        }
        let there = self
            .send(
                Method::HEAD,
                &format!("/v2/{}/manifests/{digest}", self.name()),
            )
            .await?;
        let known = match there.status() {
            s if s.is_success() => true,
            StatusCode::NOT_FOUND => false,
            s => return Err(status_error("HEAD of a manifest", s)),
        };
        // Read from the store only when it is to be sent (or tagged).
        let read = || async {
            self.registry
                .get_manifest(self.repository, &Reference::Digest(digest.clone()))
                .await
                .map_err(local)
        };
        if !known {
            let m = read().await?;
            let parsed = Manifest::parse(&m.body, Some(&m.media_type))
                .map_err(|e| CopyError::Refused(format!("{digest}: {e}")))?;
            for child in &parsed.manifests {
                Box::pin(self.manifest(&child.digest, depth + 1, None)).await?;
            }
            // A few at a time: each is a few round trips, and a layer's bytes stream
            // without being held.
            // (The futures are made first: a closure in the stream would not be Send.)
            let sends: Vec<_> = parsed
                .config
                .iter()
                .chain(&parsed.layers)
                .map(|b| self.blob(&b.digest, b.urls.as_ref().is_some_and(|u| !u.is_empty())))
                .collect();
            let sent: Vec<Option<u64>> = futures::stream::iter(sends)
                .buffer_unordered(BLOBS_AT_ONCE)
                .try_collect()
                .await?;
            for size in sent.into_iter().flatten() {
                self.copied.blobs += 1;
                self.copied.bytes += size;
            }
            self.put_manifest(tag.unwrap_or(&digest.to_string()), &m)
                .await?;
        } else if let Some(t) = tag {
            let m = read().await?;
            self.put_manifest(t, &m).await?;
        }
        // Referrers are new manifests of their own, each sent by its own push event; the
        // top of a copy looks for them too, for a copy that was not sent by events.
        if depth == 0 {
            let referrers = self
                .registry
                .list_referrers(self.repository, digest, None)
                .await
                .map_err(local)?;
            for r in referrers {
                Box::pin(self.manifest(&r.digest, depth + 1, None)).await?;
            }
        }
        Ok(())
    }

    async fn put_manifest(
        &mut self,
        reference: &str,
        m: &registry_core::registry::ManifestContent,
    ) -> Result<(), CopyError> {
        let path = format!("/v2/{}/manifests/{reference}", self.name());
        let resp = self
            .request(
                Method::PUT,
                &path,
                Some(&[("content-type", m.media_type.as_str())]),
                Some(m.body.clone()),
            )
            .await?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::OK | StatusCode::ACCEPTED => {
                self.copied.manifests += 1;
                Ok(())
            }
            s if s.is_server_error() => Err(status_error("a manifest PUT", s)),
            _ => Err(refusal(resp, &format!("{}:{reference}", self.name())).await),
        }
    }

    /// Sends one blob unless the downstream has it; its size when it was sent. `foreign`: a
    /// layer that names URLs of its own (Windows base layers), which a registry need not hold.
    async fn blob(&self, digest: &Digest, foreign: bool) -> Result<Option<u64>, CopyError> {
        let head = self
            .send(Method::HEAD, &format!("/v2/{}/blobs/{digest}", self.name()))
            .await?;
        match head.status() {
            s if s.is_success() => return Ok(None),
            StatusCode::NOT_FOUND => {}
            s => return Err(status_error("HEAD of a blob", s)),
        }
        let info = match self.registry.stat_blob(self.repository, digest).await {
            Ok(info) => info,
            Err(RegistryError::BlobUnknown(_)) if foreign => return Ok(None),
            Err(e) => return Err(local(e)),
        };
        let start = self
            .request(
                Method::POST,
                &format!("/v2/{}/blobs/uploads/", self.name()),
                None,
                None,
            )
            .await?;
        if start.status() != StatusCode::ACCEPTED {
            return Err(status_error("starting an upload", start.status()));
        }
        let location = start
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| CopyError::Refused("an upload without a Location".into()))?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let target = format!("{location}{sep}digest={digest}");
        let got = self.registry.read_blob(digest, None).await.map_err(local)?;
        let body = reqwest::Body::wrap_stream(got.body.map_err(std::io::Error::other));
        let resp = self
            .client
            .request_streaming(
                Request {
                    method: Method::PUT,
                    target: &target,
                    repository: self.name(),
                    actions: "pull,push",
                    accept: None,
                    headers: &[("content-type", "application/octet-stream")],
                    body: None,
                },
                body,
                info.size,
            )
            .await?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => Ok(Some(info.size)),
            s if s.is_server_error() => Err(status_error("a blob upload", s)),
            s => Err(CopyError::Refused(format!(
                "the downstream refused blob {digest} ({s})"
            ))),
        }
    }

    async fn send(&self, method: Method, path: &str) -> Result<reqwest::Response, CopyError> {
        self.request(method, path, None, None).await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        headers: Option<&[(&str, &str)]>,
        body: Option<bytes::Bytes>,
    ) -> Result<reqwest::Response, CopyError> {
        Ok(self
            .client
            .request(Request {
                method,
                target: path,
                repository: self.name(),
                actions: "pull,push",
                accept: Some(registry_core::manifest::ACCEPT_ALL),
                headers: headers.unwrap_or(&[]),
                body,
            })
            .await?)
    }
}

/// Most of a refusal's body read for its message: a downstream that answers with more is
/// not read further.
const REFUSAL_BYTES: usize = 64 << 10;

/// A refusal for good, with the start of what the downstream said (its OCI error).
async fn refusal(resp: reqwest::Response, what: &str) -> CopyError {
    let s = resp.status();
    let body = crate::upstream::client::read_at_most(resp, REFUSAL_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    CopyError::Refused(format!(
        "the downstream refused {what} ({s}): {}",
        body.chars().take(300).collect::<String>()
    ))
}

fn status_error(what: &str, s: StatusCode) -> CopyError {
    peer_status_error("downstream", what, s)
}

/// A status another registry (`peer`: upstream, downstream) answered: a 5xx or a timeout is
/// worth retrying, anything else is final.
pub(super) fn peer_status_error(peer: &str, what: &str, s: StatusCode) -> CopyError {
    let text = format!("the {peer} answered {s} to {what}");
    if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT {
        CopyError::Transient(text)
    } else {
        CopyError::Refused(text)
    }
}
