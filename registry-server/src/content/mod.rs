//! Where a repository's content comes from: the layer the API asks for manifests, blobs and
//! tags, per repository.
//!
//! An ordinary repository's content is what was pushed to it, in the store. A cached
//! repository (under a pull-through prefix) serves only what its upstream serves for that
//! repository: what was fetched for it, or what the upstream confirms it has. Content pushed
//! to ordinary repositories is never readable, nor detectable, through a cached one, though
//! the bytes may sit in the same store. Access rules are applied once, in front of every
//! source, by the API; nothing here knows about requests or who sent them.

mod cached;
mod copies;
mod uses;
mod verified;

use std::sync::Arc;

use registry_core::registry::{ManifestContent, Page};
use registry_core::storage::{ByteStream, ObjectInfo};
use registry_core::{Digest, Reference, Registry, RegistryError, RepositoryName};

use crate::config::UpstreamSettings;
use crate::upstream::{UpstreamError, Upstreams};

/// Why content could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The registry (and its store) said no.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The upstream of a cached repository failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A write to a cached repository, which only its upstream fills.
    #[error("this repository is a pull-through cache: push to its upstream registry")]
    CachedRepository,
}

/// A blob as a source has it.
pub enum Blob {
    /// In the store and part of the repository: read it (or redirect to it) from there.
    Stored(ObjectInfo),
    /// Streamed from the upstream; the body fails before its end when the bytes are not
    /// the digest, so a client never sees a complete wrong blob.
    Fetched {
        /// The length the upstream announced.
        length: Option<u64>,
        /// The bytes (`None` for a HEAD).
        body: Option<ByteStream>,
    },
}

/// A page of a repository's tags.
pub enum Tags {
    /// The repository's own tags.
    Local(Page),
    /// The upstream's list, as it paged it.
    Upstream {
        /// The tags of this page.
        tags: Vec<String>,
        /// The upstream's `Link` to the next page, pointed at this registry.
        link: Option<String>,
    },
}

/// Every repository's source: the store, and the upstreams of cached repositories.
pub struct Content {
    registry: Arc<Registry>,
    upstreams: Upstreams,
    copies: copies::BlobCopies,
    uses: uses::RecentUses,
}

/// The source of one repository's content.
pub enum Source<'a> {
    /// An ordinary repository: what was pushed to it.
    Local {
        /// The store's registry.
        registry: &'a Registry,
        /// The repository.
        name: &'a RepositoryName,
    },
    /// A pull-through cache of an upstream's repository.
    Cached(cached::CachedRepository<'a>),
}

impl Content {
    /// Sources over `registry`, caching the upstreams of `settings`.
    pub fn new(
        registry: Arc<Registry>,
        settings: &[UpstreamSettings],
    ) -> Result<Content, UpstreamError> {
        Ok(Content {
            registry,
            upstreams: Upstreams::new(settings)?,
            copies: Default::default(),
            uses: Default::default(),
        })
    }

    /// Notes, off the request, that a client pulled `reference` of `name`, where a retention
    /// rule keeps tags by their pulls: at most once an hour per reference in each process
    /// (a cached repository notes its own pulls, for expiry).
    pub fn note_pull(&self, name: &RepositoryName, reference: &Reference) {
        if self.upstreams.remote_of(name.as_str()).is_some()
            || self
                .registry
                .rules()
                .and_then(|r| r.retention(name))
                .is_none_or(|r| r.pulled_within.is_none())
        {
            return;
        }
        let key = format!("{name}\0{reference}");
        if !self.uses.due(&key, std::time::Duration::from_secs(3600)) {
            return;
        }
        let registry = self.registry.clone();
        let (name, reference) = (name.clone(), reference.clone());
        tokio::spawn(async move {
            if let Err(e) = registry.note_pull(&name, &reference).await {
                tracing::warn!(repository = %name, %reference, error = %e, "could not note a pull");
            }
        });
    }

    /// The source of repository `name`.
    pub fn source<'a>(&'a self, name: &'a RepositoryName) -> Source<'a> {
        match self.upstreams.remote_of(name.as_str()) {
            Some(remote) => Source::Cached(cached::CachedRepository {
                content: self,
                remote,
                name,
            }),
            None => Source::Local {
                registry: &self.registry,
                name,
            },
        }
    }

    /// Refuses writes to a cached repository (named as the request has it, before validation).
    pub fn check_writable(&self, name: &str) -> Result<(), ContentError> {
        match self.upstreams.remote_of(name) {
            Some(_) => Err(ContentError::CachedRepository),
            None => Ok(()),
        }
    }
}

impl Source<'_> {
    /// A manifest by tag or digest.
    pub async fn manifest(&self, reference: &Reference) -> Result<ManifestContent, ContentError> {
        match self {
            Source::Local { registry, name } => {
                let m = registry.get_manifest(name, reference).await?;
                registry.trust_links_of(name, &m);
                Ok(m)
            }
            Source::Cached(c) => c.manifest(reference).await,
        }
    }

    /// Whether the repository links the blob, asked of a local repository only (a cached one
    /// may have to fetch it first: `false`). Enough to redirect a GET to the bytes without
    /// looking at them; should they be gone, the store's URL answers 404 itself.
    pub async fn links_locally(&self, digest: &Digest) -> Result<bool, ContentError> {
        match self {
            Source::Local { registry, name } => Ok(registry.links_blob(name, digest).await?),
            Source::Cached(_) => Ok(false),
        }
    }

    /// A blob of the repository (`head`: its size only).
    pub async fn blob(&self, digest: &Digest, head: bool) -> Result<Blob, ContentError> {
        match self {
            Source::Local { registry, name } if head => Ok(Blob::Stored(
                registry.stat_blob_to_push(name, digest).await?,
            )),
            Source::Local { registry, name } => {
                Ok(Blob::Stored(registry.stat_blob(name, digest).await?))
            }
            Source::Cached(c) => c.blob(digest, head).await,
        }
    }

    /// A page of at most `n` tags after `last`; `query` is the request's own, passed on to an
    /// upstream that pages its list itself.
    pub async fn tags(
        &self,
        n: Option<usize>,
        last: Option<&str>,
        query: &str,
    ) -> Result<Tags, ContentError> {
        match self {
            Source::Local { registry, name } => {
                Ok(Tags::Local(registry.list_tags(name, n, last).await?))
            }
            Source::Cached(c) => c.tags(n, last, query).await,
        }
    }
}
