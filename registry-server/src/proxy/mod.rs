//! Pull-through caching: repositories whose manifests and blobs come from an upstream registry
//! the first time a client asks, and from the store after that.
//!
//! distribution caches one upstream and turns the whole registry read-only; here any number of
//! upstreams each serve the repositories under a prefix (`dockerhub/...`, `ghcr/...`), and
//! repositories outside every prefix stay ordinary, pushable ones. Nothing is kept in process
//! memory but bearer tokens and which blobs are being copied now: every replica serves every
//! cached object from the shared store.

mod challenge;
mod client;
mod copies;
mod joined;
mod pull;
mod uses;

pub(crate) use pull::{blob, manifest, tags};

use std::sync::Arc;

use registry_core::registry::CacheExpiry;
use registry_core::{Reference, RepositoryName};

use crate::api::App;
use crate::config::UpstreamSettings;
use client::UpstreamClient;

/// Why the upstream could not provide what a client asked for.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No connection, a timeout, or a 5xx.
    #[error("the upstream registry is unreachable: {0}")]
    Unreachable(String),
    /// It refused Berth's credentials (or wants some and none are configured).
    #[error("the upstream registry {0} refused the configured credentials")]
    Refused(String),
    /// It asks Berth to slow down.
    #[error("the upstream registry {0} is rate-limiting this registry")]
    RateLimited(String),
    /// It answered something that is not what the distribution API says.
    #[error("the upstream registry answered unexpectedly: {0}")]
    BadAnswer(String),
}

impl UpstreamError {
    /// Whether a stale cached copy may be served instead (the upstream is down or busy, not
    /// saying the content is gone).
    pub(crate) fn may_serve_cached(&self) -> bool {
        matches!(
            self,
            UpstreamError::Unreachable(_) | UpstreamError::RateLimited(_)
        )
    }
}

/// One configured upstream.
pub(crate) struct Upstream {
    prefix: Option<String>,
    client: UpstreamClient,
    ttl: Option<std::time::Duration>,
    /// The digest a tag names upstream (`None`: no such tag; `Some(None)`: the upstream did
    /// not say), for HEADs in flight.
    tag_answers: joined::Joined<Result<Option<Option<registry_core::Digest>>, UpstreamError>>,
}

/// A local repository's counterpart at its upstream.
pub(crate) struct Remote<'a> {
    /// The client of the upstream.
    pub(crate) upstream: &'a Upstream,
    /// The repository's name there (the local name without the prefix).
    pub(crate) name: String,
}

impl Upstream {
    pub(crate) fn client(&self) -> &UpstreamClient {
        &self.client
    }
}

/// Every configured upstream, most specific prefix first.
#[derive(Default)]
pub struct Proxies {
    upstreams: Vec<Upstream>,
    copies: copies::BlobCopies,
    uses: uses::RecentUses,
}

impl Proxies {
    /// Clients for `settings` (already ordered by the configuration).
    pub fn new(settings: &[UpstreamSettings]) -> Result<Arc<Self>, UpstreamError> {
        let upstreams = settings
            .iter()
            .map(|s| {
                Ok(Upstream {
                    prefix: s.prefix.clone(),
                    client: UpstreamClient::new(s.clone())?,
                    ttl: s.ttl,
                    tag_answers: Default::default(),
                })
            })
            .collect::<Result<_, UpstreamError>>()?;
        Ok(Arc::new(Proxies {
            upstreams,
            ..Proxies::default()
        }))
    }

    /// The upstream serving local repository `name`, if any.
    pub(crate) fn remote_of(&self, name: &str) -> Option<Remote<'_>> {
        self.upstreams.iter().find_map(|u| {
            let remote = registry_core::names::under_prefix(name, u.prefix.as_deref())?;
            Some(Remote {
                upstream: u,
                name: upstream_name(u.client.origin(), remote),
            })
        })
    }
}

/// The expiry rule of each upstream, in the order repositories are matched to upstreams.
pub(crate) fn expiry_rules(settings: &[UpstreamSettings]) -> Vec<CacheExpiry> {
    settings
        .iter()
        .map(|s| CacheExpiry {
            prefix: s.prefix.clone(),
            ttl: s.ttl,
        })
        .collect()
}

/// Notes, off the request, that a client pulled `reference` of the cached repository `name`
/// (for expiry; nothing to note when the cache keeps content forever).
pub(crate) fn note_use(
    app: &Arc<App>,
    remote: &Remote<'_>,
    name: &RepositoryName,
    reference: &Reference,
) {
    let Some(ttl) = remote.upstream.ttl else {
        return;
    };
    if !app
        .proxies
        .uses
        .due(&format!("{name}\0{reference}"), uses::refresh_every(ttl))
    {
        return;
    }
    let (app, name, reference) = (app.clone(), name.clone(), reference.clone());
    tokio::spawn(async move {
        if let Err(e) = app.registry.note_cache_use(&name, &reference).await {
            tracing::warn!(repository = %name, %reference, error = %e, "could not note a pull of cached content");
        }
    });
}

/// Docker Hub keeps its official images under `library/`, and docker adds that for
/// `docker.io/alpine`; a cache reached as `cache/dockerhub/alpine` does the same, so that both
/// spellings work (as they do with docker against Docker Hub itself).
fn upstream_name(origin: &url::Url, name: &str) -> String {
    let docker_hub = matches!(
        origin.host_str(),
        Some("registry-1.docker.io" | "docker.io" | "index.docker.io" | "registry.hub.docker.com")
    );
    if docker_hub && !name.contains('/') {
        format!("library/{name}")
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(prefix: Option<&str>, port: u16) -> UpstreamSettings {
        UpstreamSettings {
            prefix: prefix.map(str::to_owned),
            url: format!("http://127.0.0.1:{port}").parse().unwrap(),
            credentials: None,
            ttl: None,
        }
    }

    #[test]
    fn repositories_map_to_the_most_specific_upstream() {
        let p = Proxies::new(&[
            settings(Some("hub/team"), 1),
            settings(Some("hub"), 2),
            settings(None, 3),
        ])
        .unwrap();
        let pick = |n: &str| {
            p.remote_of(n)
                .map(|r| (r.upstream.client.origin().port(), r.name))
        };
        assert_eq!(pick("hub/team/app"), Some((Some(1), "app".into())));
        assert_eq!(
            pick("hub/library/alpine"),
            Some((Some(2), "library/alpine".into()))
        );
        assert_eq!(pick("hubx/app"), Some((Some(3), "hubx/app".into())));
        assert_eq!(pick("hub"), Some((Some(3), "hub".into())));
        let hub = Proxies::new(&[UpstreamSettings {
            prefix: Some("dockerhub".into()),
            url: "https://registry-1.docker.io".parse().unwrap(),
            credentials: None,
            ttl: None,
        }])
        .unwrap();
        let hub_name = |n: &str| hub.remote_of(n).map(|r| r.name);
        assert_eq!(hub_name("dockerhub/alpine"), Some("library/alpine".into()));
        assert_eq!(
            hub_name("dockerhub/library/alpine"),
            Some("library/alpine".into())
        );
        assert_eq!(
            hub_name("dockerhub/bitnami/redis"),
            Some("bitnami/redis".into())
        );
        // Elsewhere a one-part name is what it is.
        assert_eq!(pick("hubx"), Some((Some(3), "hubx".into())));
        let only_prefixed = Proxies::new(&[settings(Some("ghcr"), 4)]).unwrap();
        assert!(only_prefixed.remote_of("mine/app").is_none());
        assert_eq!(
            only_prefixed.remote_of("ghcr/o/r").map(|r| r.name),
            Some("o/r".into())
        );
    }
}
